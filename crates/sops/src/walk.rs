//! Decrypting the tree and computing its MAC, in the order and with the rules sops uses.
//!
//! Values are visited in document order. For each leaf, the selection rule decides whether
//! it is encrypted; encrypted leaves are opened with their path (`a:b:`) as additional
//! data; list indexes never enter the path. The MAC is SHA-512 over the plaintext bytes of
//! the leaves (comments and nulls excepted; with `mac_only_encrypted`, only the encrypted
//! leaves, after a fixed prefix), printed as uppercase hex.

use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

use crate::cipher::{CipherError, Envelope};
use crate::error::{Error, Result};
use crate::metadata::{Metadata, Rule, canonical_rfc3339_nano, parse_go_bool};
use crate::tree::{Item, Value};

/// `sha256("sops")`: what the hash starts with when `mac_only_encrypted` is set.
const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b,
    0x0b, 0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

/// Checks without a key what can be checked: every value the file's rule encrypts is a
/// well-formed `ENC[...]` value, and so is the MAC. Nothing is decrypted.
///
/// # Errors
/// [`Error::MalformedValue`] naming the first value that is not (by path, never by content).
pub(crate) fn check_tree(branches: &mut [Vec<Item>], meta: &Metadata) -> Result<()> {
    let mut walker = Walker {
        meta,
        key: None,
        hash: Sha512::new(),
        path: Vec::new(),
        shown: Vec::new(),
    };
    for branch in branches.iter_mut() {
        walker.map(branch, &mut Vec::new())?;
    }
    if meta.mac.is_empty() || Envelope::parse(&meta.mac).is_err() {
        return Err(Error::MalformedValue {
            path: "sops.mac".into(),
            reason: "not an ENC[...] value",
        });
    }
    Ok(())
}

/// Decrypts every branch in place and checks the MAC.
///
/// # Errors
/// [`Error::MalformedValue`] for a bad `ENC[...]`, [`Error::MacMismatch`] when a value fails
/// authentication or the MAC differs.
pub(crate) fn decrypt_tree(
    branches: &mut [Vec<Item>],
    meta: &Metadata,
    key: &[u8; 32],
) -> Result<()> {
    let mut walker = Walker {
        meta,
        key: Some(key),
        hash: Sha512::new(),
        path: Vec::new(),
        shown: Vec::new(),
    };
    if meta.mac_only_encrypted {
        walker.hash.update(MAC_ONLY_ENCRYPTED_INIT);
    }
    for branch in branches.iter_mut() {
        walker.map(branch, &mut Vec::new())?;
    }
    let computed = hex_upper(&walker.hash.finalize());
    let stored = if meta.mac.is_empty() {
        return Err(Error::MacMismatch);
    } else {
        let envelope = Envelope::parse(&meta.mac).map_err(|_| Error::MalformedValue {
            path: "sops.mac".into(),
            reason: "not an ENC[...] value",
        })?;
        envelope
            .open(key, meta.last_modified.as_bytes())
            .map_err(|_| Error::MacMismatch)?
    };
    if stored.as_slice() != computed.as_bytes() {
        return Err(Error::MacMismatch);
    }
    Ok(())
}

struct Walker<'a> {
    meta: &'a Metadata,
    /// `None` checks the envelopes' form only.
    key: Option<&'a [u8; 32]>,
    hash: Sha512,
    /// Keys from the root: the additional data.
    path: Vec<String>,
    /// The same path for error messages, with list indexes.
    shown: Vec<String>,
}

type Stack = Vec<Vec<String>>;

impl Walker<'_> {
    fn map(&mut self, items: &mut [Item], stack: &mut Stack) -> Result<()> {
        stack.push(Vec::new());
        for item in items.iter_mut() {
            match item {
                Item::Comment(text) => {
                    let s = String::from_utf8_lossy(text).into_owned();
                    stack.last_mut().expect("pushed").push(s);
                    if let Some(plain) = self.comment(text, stack)? {
                        *text = plain;
                    }
                }
                Item::Pair(key, value) => {
                    self.path.push(key.clone());
                    self.shown.push(key.clone());
                    self.value(value, stack)?;
                    self.path.pop();
                    self.shown.pop();
                    stack.last_mut().expect("pushed").clear();
                }
            }
        }
        stack.pop();
        Ok(())
    }

    fn seq(&mut self, list: &mut [Value], stack: &mut Stack) -> Result<()> {
        stack.push(Vec::new());
        for (i, v) in list.iter_mut().enumerate() {
            if let Value::Comment(text) = v {
                let s = String::from_utf8_lossy(text).into_owned();
                stack.last_mut().expect("pushed").push(s);
                if let Some(plain) = self.comment(text, stack)? {
                    *text = plain;
                }
                continue;
            }
            if let Some(last) = self.shown.last_mut() {
                last.push_str(&format!("[{i}]"));
            }
            let res = self.value(v, stack);
            if let Some(last) = self.shown.last_mut() {
                let cut = last.rfind('[').unwrap_or(last.len());
                last.truncate(cut);
            }
            res?;
            stack.last_mut().expect("pushed").clear();
        }
        stack.pop();
        Ok(())
    }

    fn value(&mut self, v: &mut Value, stack: &mut Stack) -> Result<()> {
        match v {
            Value::Map(items) => self.map(items, stack),
            Value::Seq(list) => self.seq(list, stack),
            Value::Null | Value::Comment(_) => Ok(()),
            _ => self.leaf(v, stack),
        }
    }

    fn leaf(&mut self, v: &mut Value, stack: &Stack) -> Result<()> {
        let encrypted = self.should_encrypt(stack, false);
        if encrypted {
            let text = match v {
                Value::Str(b) => b,
                _ => {
                    return Err(
                        self.malformed("an unencrypted value where an encrypted one is expected")
                    );
                }
            };
            if !text.is_empty() {
                let text = std::str::from_utf8(text)
                    .map_err(|_| self.malformed("not an ENC[...] value"))?;
                let envelope =
                    Envelope::parse(text).map_err(|_| self.malformed("not an ENC[...] value"))?;
                let Some(key) = self.key else {
                    return Ok(());
                };
                let plain = envelope
                    .open(key, self.aad().as_bytes())
                    .map_err(|e| match e {
                        CipherError::Auth => Error::MacMismatch,
                        CipherError::Malformed => self.malformed("not an ENC[...] value"),
                    })?;
                *v = self.typed(&envelope.kind, plain)?;
            }
        }
        if !self.meta.mac_only_encrypted || encrypted {
            hash_leaf(&mut self.hash, v);
        }
        Ok(())
    }

    /// Decrypts a comment if it should be and can be; sops keeps comments that fail to
    /// decrypt as they are (files written by old versions).
    fn comment(&mut self, text: &[u8], stack: &Stack) -> Result<Option<Zeroizing<Vec<u8>>>> {
        if !self.should_encrypt(stack, true) {
            return Ok(None);
        }
        let Ok(s) = std::str::from_utf8(text) else {
            return Ok(None);
        };
        let Ok(envelope) = Envelope::parse(s) else {
            return Ok(None);
        };
        let Some(key) = self.key else {
            return Ok(None);
        };
        Ok(envelope.open(key, self.aad().as_bytes()).ok())
    }

    fn typed(&self, kind: &str, plain: Zeroizing<Vec<u8>>) -> Result<Value> {
        let text =
            || std::str::from_utf8(&plain).map_err(|_| self.malformed("plaintext is not text"));
        Ok(match kind {
            "str" | "bytes" => Value::Str(plain),
            "int" => Value::Int(text()?.parse().map_err(|_| self.malformed("not an int"))?),
            "float" => {
                Value::Float(parse_go_float(text()?).ok_or_else(|| self.malformed("not a float"))?)
            }
            "bool" => {
                Value::Bool(parse_go_bool(text()?).ok_or_else(|| self.malformed("not a bool"))?)
            }
            "time" => Value::Time(
                canonical_rfc3339_nano(text()?).ok_or_else(|| self.malformed("not a time"))?,
            ),
            "comment" => Value::Comment(plain),
            _ => return Err(self.malformed("unknown value type")),
        })
    }

    fn aad(&self) -> String {
        let mut s = self.path.join(":");
        s.push(':');
        s
    }

    fn malformed(&self, reason: &'static str) -> Error {
        let path = if self.shown.is_empty() {
            "(top level)".to_string()
        } else {
            self.shown.join(".")
        };
        Error::MalformedValue { path, reason }
    }

    fn should_encrypt(&self, stack: &Stack, is_comment: bool) -> bool {
        let path = &self.path;
        match &self.meta.rule {
            Rule::UnencryptedSuffix(s) => !path.iter().any(|p| p.ends_with(s.as_str())),
            Rule::EncryptedSuffix(s) => path.iter().any(|p| p.ends_with(s.as_str())),
            Rule::UnencryptedRegex(re) => !path.iter().any(|p| re.is_match(p)),
            Rule::EncryptedRegex(re) => path.iter().any(|p| re.is_match(p)),
            Rule::UnencryptedCommentRegex(re) => !stack.iter().flatten().any(|c| re.is_match(c)),
            Rule::EncryptedCommentRegex(re) => {
                let last = stack.len().saturating_sub(1);
                stack.iter().enumerate().any(|(i, cs)| {
                    cs.iter().enumerate().any(|(j, c)| {
                        // The matching comment line itself stays in clear.
                        let own = is_comment && i == last && j + 1 == cs.len();
                        !own && re.is_match(c)
                    })
                })
            }
        }
    }
}

/// Feeds a leaf into the MAC the way sops' `ToBytes` prints it.
fn hash_leaf(hash: &mut Sha512, v: &Value) {
    match v {
        Value::Str(b) => hash.update(b.as_slice()),
        Value::Int(n) => hash.update(n.to_string()),
        Value::Float(f) => hash.update(go_format_f(*f)),
        Value::Bool(true) => hash.update(b"True"),
        Value::Bool(false) => hash.update(b"False"),
        Value::Time(t) => hash.update(t.as_bytes()),
        Value::Map(_) | Value::Seq(_) | Value::Null | Value::Comment(_) => {}
    }
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`: shortest digits, never an exponent.
pub(crate) fn go_format_f(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{f}")
    }
}

/// Go's `strconv.ParseFloat(s, 64)` for the forms sops writes and YAML/JSON readers accept.
pub(crate) fn parse_go_float(s: &str) -> Option<f64> {
    let t = s.strip_prefix('+').unwrap_or(s);
    let lower = t.to_ascii_lowercase();
    let body = lower.strip_prefix('-').unwrap_or(&lower);
    if matches!(body, "inf" | "infinity" | "nan") {
        return s.parse().ok().or_else(|| lower.parse().ok());
    }
    if body.is_empty()
        || !body
            .bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'+' | b'-'))
    {
        return None;
    }
    // Go reports out-of-range values as errors instead of rounding to infinity.
    s.parse().ok().filter(|f: &f64| f.is_finite())
}

fn hex_upper(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_formats_like_go() {
        assert_eq!(go_format_f(1.5), "1.5");
        assert_eq!(go_format_f(1e-7), "0.0000001");
        assert_eq!(go_format_f(1e23), "100000000000000000000000");
        assert_eq!(go_format_f(12.0), "12");
        assert_eq!(go_format_f(f64::INFINITY), "+Inf");
    }

    #[test]
    fn mac_prefix_is_sha256_of_sops() {
        use sha2::Sha256;
        assert_eq!(Sha256::digest(b"sops").as_slice(), &MAC_ONLY_ENCRYPTED_INIT);
    }
}
