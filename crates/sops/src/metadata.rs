//! The `sops` metadata block: master keys, key groups, selection rules, MAC and timestamp.
//!
//! YAML and JSON files carry it as a nested map; dotenv and INI files carry it flattened
//! into keys like `age__list_0__map_enc` (with `\n` escaped), which [`unflatten`] rebuilds.

use regex::Regex;

use crate::error::{Error, Result};
use crate::tree::{Item, Value};

/// Master key types other than age, in the order sops writes them.
pub(crate) const OTHER_KEY_TYPES: [&str; 5] = ["pgp", "kms", "gcp_kms", "azure_kv", "hc_vault"];

/// One age master key: its recipient and the armored, encrypted data key (or share).
pub(crate) struct AgeKey {
    pub(crate) recipient: String,
    pub(crate) enc: String,
}

/// One key group: the age keys and the names of other (unsupported) key types present.
#[derive(Default)]
pub(crate) struct KeyGroup {
    pub(crate) age: Vec<AgeKey>,
    pub(crate) other: Vec<&'static str>,
}

/// Which values are encrypted (sops allows at most one rule per file).
pub(crate) enum Rule {
    UnencryptedSuffix(String),
    EncryptedSuffix(String),
    UnencryptedRegex(Regex),
    EncryptedRegex(Regex),
    UnencryptedCommentRegex(Regex),
    EncryptedCommentRegex(Regex),
}

/// The parsed metadata.
pub(crate) struct Metadata {
    /// `lastmodified` re-formatted as Go's `time.RFC3339` does: the MAC's additional data.
    pub(crate) last_modified: String,
    pub(crate) mac: String,
    pub(crate) rule: Rule,
    pub(crate) mac_only_encrypted: bool,
    pub(crate) groups: Vec<KeyGroup>,
    pub(crate) threshold: usize,
}

impl Metadata {
    /// Reads the metadata map.
    pub(crate) fn from_value(meta: &Value) -> Result<Metadata> {
        if !matches!(meta, Value::Map(_)) {
            return Err(Error::InvalidMetadata("`sops` is not a map".into()));
        }
        let text = |name: &str| -> Result<Option<String>> {
            match meta.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Str(_)) => {
                    Ok(meta.get(name).and_then(Value::as_str).map(str::to_string))
                }
                Some(Value::Time(t)) => Ok(Some(t.clone())),
                Some(_) => Err(Error::InvalidMetadata(format!("`{name}` is not a string"))),
            }
        };
        let last_modified_raw = text("lastmodified")?
            .ok_or_else(|| Error::InvalidMetadata("no `lastmodified`".into()))?;
        let last_modified = canonical_rfc3339(&last_modified_raw).ok_or_else(|| {
            Error::InvalidMetadata("`lastmodified` is not an RFC 3339 time".into())
        })?;
        let mac = text("mac")?.unwrap_or_default();

        let mut rules = Vec::new();
        let regex = |name: &str, s: String| {
            Regex::new(&s)
                .map_err(|_| Error::InvalidMetadata(format!("`{name}` is not a valid regex")))
        };
        if let Some(s) = text("unencrypted_suffix")?.filter(|s| !s.is_empty()) {
            rules.push(Rule::UnencryptedSuffix(s));
        }
        if let Some(s) = text("encrypted_suffix")?.filter(|s| !s.is_empty()) {
            rules.push(Rule::EncryptedSuffix(s));
        }
        if let Some(s) = text("unencrypted_regex")?.filter(|s| !s.is_empty()) {
            rules.push(Rule::UnencryptedRegex(regex("unencrypted_regex", s)?));
        }
        if let Some(s) = text("encrypted_regex")?.filter(|s| !s.is_empty()) {
            rules.push(Rule::EncryptedRegex(regex("encrypted_regex", s)?));
        }
        if let Some(s) = text("unencrypted_comment_regex")?.filter(|s| !s.is_empty()) {
            rules.push(Rule::UnencryptedCommentRegex(regex(
                "unencrypted_comment_regex",
                s,
            )?));
        }
        if let Some(s) = text("encrypted_comment_regex")?.filter(|s| !s.is_empty()) {
            rules.push(Rule::EncryptedCommentRegex(regex(
                "encrypted_comment_regex",
                s,
            )?));
        }
        if rules.len() > 1 {
            return Err(Error::InvalidMetadata(
                "more than one encryption rule (suffix/regex)".into(),
            ));
        }
        let rule = rules
            .pop()
            .unwrap_or_else(|| Rule::UnencryptedSuffix("_unencrypted".into()));

        let mac_only_encrypted = match meta.get("mac_only_encrypted") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => match v.as_str() {
                Some(s) => parse_go_bool(s).ok_or_else(|| {
                    Error::InvalidMetadata("`mac_only_encrypted` is not a bool".into())
                })?,
                None => {
                    return Err(Error::InvalidMetadata(
                        "`mac_only_encrypted` is not a bool".into(),
                    ));
                }
            },
        };

        let mut groups = Vec::new();
        match meta.get("key_groups") {
            Some(Value::Seq(list)) if !list.is_empty() => {
                for group in list {
                    groups.push(key_group(group)?);
                }
            }
            _ => groups.push(key_group(meta)?),
        }
        let threshold = match meta.get("shamir_threshold") {
            None | Some(Value::Null) => 0,
            Some(Value::Int(n)) if *n >= 0 => *n as usize,
            Some(Value::Float(f)) if *f >= 0.0 && f.fract() == 0.0 => *f as usize,
            Some(v) => v.as_str().and_then(|s| s.parse().ok()).ok_or_else(|| {
                Error::InvalidMetadata("`shamir_threshold` is not a number".into())
            })?,
        };
        let threshold = if threshold == 0 {
            groups.len()
        } else {
            threshold
        };
        Ok(Metadata {
            last_modified,
            mac,
            rule,
            mac_only_encrypted,
            groups,
            threshold,
        })
    }

    /// All age recipients, in file order.
    pub(crate) fn recipients(&self) -> Vec<String> {
        self.groups
            .iter()
            .flat_map(|g| g.age.iter().map(|k| k.recipient.clone()))
            .collect()
    }

    /// Names of the other key types present, without duplicates.
    pub(crate) fn other_key_types(&self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = Vec::new();
        for name in self.groups.iter().flat_map(|g| g.other.iter()) {
            if !out.contains(name) {
                out.push(name);
            }
        }
        out
    }
}

fn key_group(group: &Value) -> Result<KeyGroup> {
    let mut out = KeyGroup::default();
    if let Some(Value::Seq(keys)) = group.get("age") {
        for key in keys {
            let field = |name: &str| key.get(name).and_then(Value::as_str).map(str::to_string);
            match (field("recipient"), field("enc")) {
                (Some(recipient), Some(enc)) => out.age.push(AgeKey { recipient, enc }),
                _ => {
                    return Err(Error::InvalidMetadata(
                        "an age key lacks `recipient` or `enc`".into(),
                    ));
                }
            }
        }
    }
    for name in OTHER_KEY_TYPES {
        if matches!(group.get(name), Some(Value::Seq(list)) if !list.is_empty()) {
            out.other.push(name);
        }
    }
    Ok(out)
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Parses an RFC 3339 timestamp and prints it as Go's `Format(time.RFC3339)` would:
/// fractional seconds dropped, a zero offset written `Z`.
pub(crate) fn canonical_rfc3339(s: &str) -> Option<String> {
    let (base, frac, zone) = split_rfc3339(s)?;
    let _ = frac;
    Some(format!("{base}{zone}"))
}

/// Like [`canonical_rfc3339`] but keeps the fraction without trailing zeros
/// (Go's `time.RFC3339Nano`, used by `MarshalText`).
pub(crate) fn canonical_rfc3339_nano(s: &str) -> Option<String> {
    let (base, frac, zone) = split_rfc3339(s)?;
    let frac = frac.trim_end_matches('0');
    let dot = if frac.is_empty() { "" } else { "." };
    Some(format!("{base}{dot}{frac}{zone}"))
}

/// Splits `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)` into base, fraction digits and zone.
fn split_rfc3339(s: &str) -> Option<(&str, &str, String)> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let shape = digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !shape {
        return None;
    }
    let mut i = 19;
    let mut frac = "";
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        frac = &s[start..i];
    }
    let zone = &s[i..];
    let zone = match zone {
        "Z" => "Z".to_string(),
        z if z.len() == 6
            && (z.starts_with('+') || z.starts_with('-'))
            && z.as_bytes()[3] == b':'
            && z[1..3]
                .bytes()
                .chain(z[4..6].bytes())
                .all(|c| c.is_ascii_digit()) =>
        {
            if &z[1..] == "00:00" {
                "Z".to_string()
            } else {
                z.to_string()
            }
        }
        _ => return None,
    };
    Some((&s[..19], frac, zone))
}

/// Rebuilds the nested metadata from flattened `key -> string` pairs (dotenv, INI):
/// `a__list_0__map_b` means `a[0].b`. Escaped newlines (`\n`) are restored.
pub(crate) fn unflatten(pairs: &[(String, String)]) -> Value {
    let mut root = Value::Map(Vec::new());
    for (key, value) in pairs {
        let mut parts = key.split("__");
        let Some(first) = parts.next() else { continue };
        let mut path: Vec<Step> = vec![Step::Key(first.to_string())];
        for part in parts {
            if let Some(n) = part.strip_prefix("list_").and_then(|n| n.parse().ok()) {
                path.push(Step::Index(n));
            } else if let Some(k) = part.strip_prefix("map_") {
                path.push(Step::Key(k.to_string()));
            } else {
                path.push(Step::Key(part.to_string()));
            }
        }
        insert(&mut root, &path, Value::str(&value.replace("\\n", "\n")));
    }
    root
}

enum Step {
    Key(String),
    Index(usize),
}

fn insert(node: &mut Value, path: &[Step], leaf: Value) {
    let Some((step, rest)) = path.split_first() else {
        *node = leaf;
        return;
    };
    let fresh = || match rest.first() {
        Some(Step::Index(_)) => Value::Seq(Vec::new()),
        Some(Step::Key(_)) => Value::Map(Vec::new()),
        None => Value::Null,
    };
    match step {
        Step::Key(k) => {
            if !matches!(node, Value::Map(_)) {
                *node = Value::Map(Vec::new());
            }
            let Value::Map(items) = node else { return };
            let pos = items
                .iter()
                .position(|i| matches!(i, Item::Pair(key, _) if key == k));
            let pos = pos.unwrap_or_else(|| {
                items.push(Item::Pair(k.clone(), fresh()));
                items.len() - 1
            });
            if let Item::Pair(_, child) = &mut items[pos] {
                insert(child, rest, leaf);
            }
        }
        Step::Index(n) => {
            if !matches!(node, Value::Seq(_)) {
                *node = Value::Seq(Vec::new());
            }
            let Value::Seq(list) = node else { return };
            while list.len() <= *n {
                list.push(fresh());
            }
            insert(&mut list[*n], rest, leaf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_canonical() {
        assert_eq!(
            canonical_rfc3339("2024-11-12T13:33:42Z").unwrap(),
            "2024-11-12T13:33:42Z"
        );
        assert_eq!(
            canonical_rfc3339("2024-11-12T13:33:42.5+00:00").unwrap(),
            "2024-11-12T13:33:42Z"
        );
        assert_eq!(
            canonical_rfc3339("2024-11-12T13:33:42+01:30").unwrap(),
            "2024-11-12T13:33:42+01:30"
        );
        assert_eq!(
            canonical_rfc3339_nano("2024-11-12T13:33:42.500Z").unwrap(),
            "2024-11-12T13:33:42.5Z"
        );
        assert!(canonical_rfc3339("2024-11-12 13:33:42Z").is_none());
    }

    #[test]
    fn unflatten_rebuilds_lists_of_maps() {
        let pairs = vec![
            (
                "age__list_0__map_recipient".to_string(),
                "age1x".to_string(),
            ),
            ("age__list_0__map_enc".to_string(), "a\\nb".to_string()),
            ("mac".to_string(), "m".to_string()),
        ];
        let v = unflatten(&pairs);
        let Some(Value::Seq(age)) = v.get("age") else {
            panic!("no age list")
        };
        assert_eq!(age[0].get("enc").and_then(Value::as_str), Some("a\nb"));
        assert_eq!(v.get("mac").and_then(Value::as_str), Some("m"));
    }
}
