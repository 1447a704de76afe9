//! INI files, read and written the way sops does it through go-ini: each section is a map
//! (so paths are `section:key:`), comments attach to the section or to a key, and the
//! metadata is the flattened `[sops]` section.

use zeroize::Zeroizing;

use super::Document;
use crate::Format;
use crate::error::{Error, Result};
use crate::metadata::unflatten;
use crate::tree::{Item, Value, comment};

const DEFAULT: &str = "DEFAULT";

/// A key, its value and the comment written above it.
type KeyLine<'a> = (&'a str, Vec<u8>, Option<Vec<u8>>);

struct Section {
    name: String,
    comment: Option<String>,
    keys: Vec<(String, String, Option<String>)>,
}

pub(super) fn load(input: &[u8]) -> Result<Document> {
    let text = std::str::from_utf8(input).map_err(|_| parse_err(None, "not UTF-8"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut sections = vec![Section {
        name: DEFAULT.into(),
        comment: None,
        keys: Vec::new(),
    }];
    let mut pending: Vec<String> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with(';') || line.starts_with('#') {
            pending.push(line.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest
                .split_once(']')
                .map(|(n, _)| n.trim())
                .ok_or_else(|| parse_err(Some(n + 1), "unclosed section name"))?;
            let comment = (!pending.is_empty()).then(|| pending.join("\n"));
            pending.clear();
            if let Some(existing) = sections.iter_mut().find(|s| s.name == name) {
                existing.comment = comment.or(existing.comment.take());
            } else {
                sections.push(Section {
                    name: name.to_string(),
                    comment,
                    keys: Vec::new(),
                });
            }
            continue;
        }
        let Some(pos) = line.find(['=', ':']) else {
            return Err(parse_err(
                Some(n + 1),
                "a line is neither a section, a comment nor key = value",
            ));
        };
        let key = unquote_key(line[..pos].trim());
        let mut value = line[pos + 1..].trim().to_string();
        if let Some(v) = quoted(&value) {
            value = v;
        } else if let Some(i) = value.find(['#', ';']) {
            pending.push(value[i..].to_string());
            value = value[..i].trim().to_string();
        }
        let comment = (!pending.is_empty()).then(|| pending.join("\n"));
        pending.clear();
        let section = sections.last_mut().expect("DEFAULT is always there");
        section.keys.retain(|(k, _, _)| k != &key);
        section.keys.push((key, value, comment));
    }

    let mut branch = Vec::new();
    let mut meta = None;
    for section in sections {
        if section.name == "sops" {
            let pairs: Vec<(String, String)> =
                section.keys.into_iter().map(|(k, v, _)| (k, v)).collect();
            meta = Some(unflatten(&pairs));
            continue;
        }
        let mut items = Vec::new();
        if let Some(c) = &section.comment {
            items.push(Item::Comment(comment(strip_comment_char(c))));
        }
        for (k, v, c) in section.keys {
            items.push(Item::Pair(k, Value::str(&v)));
            if let Some(c) = c {
                items.push(Item::Comment(comment(strip_comment_char(&c))));
            }
        }
        branch.push(Item::Pair(section.name, Value::Map(items)));
    }
    let metadata = meta.ok_or(Error::NotSopsFile(Format::Ini))?;
    Ok(Document {
        branches: vec![branch],
        metadata,
    })
}

fn parse_err(line: Option<usize>, reason: &str) -> Error {
    Error::Parse {
        format: Format::Ini,
        line,
        reason: reason.into(),
    }
}

fn unquote_key(k: &str) -> String {
    quoted(k).unwrap_or_else(|| k.to_string())
}

/// A value wrapped in `"""…"""`, `"…"` or `` `…` `` (go-ini strips these).
fn quoted(v: &str) -> Option<String> {
    for q in ["\"\"\"", "\"", "`"] {
        if v.len() >= 2 * q.len() && v.starts_with(q) && v.ends_with(q) {
            return Some(v[q.len()..v.len() - q.len()].to_string());
        }
    }
    None
}

/// sops' `stripCommentChar`: drop the leading `;`/`#` and spaces.
fn strip_comment_char(c: &str) -> &str {
    if c.starts_with(';') {
        c.trim_start_matches([';', ' '])
    } else if c.starts_with('#') {
        c.trim_start_matches(['#', ' '])
    } else {
        c
    }
}

pub(super) fn emit(branch: &[Item]) -> Zeroizing<Vec<u8>> {
    let mut chunks: Vec<Zeroizing<Vec<u8>>> = Vec::new();
    for item in branch {
        let Item::Pair(name, Value::Map(items)) = item else {
            continue;
        };
        let mut out = Zeroizing::new(Vec::new());
        let mut rest = items.as_slice();
        let mut section_comment = None;
        if let Some((Item::Comment(c), tail)) = rest.split_first() {
            section_comment = Some(c.clone());
            rest = tail;
        }
        // (key, value, comment) in order; a comment item sets the comment of the key before it.
        let mut keys: Vec<KeyLine<'_>> = Vec::new();
        for item in rest {
            match item {
                Item::Pair(k, v) => keys.push((k, leaf_text(v), None)),
                Item::Comment(c) => {
                    if let Some(last) = keys.last_mut() {
                        last.2 = Some(c.to_vec());
                    }
                }
            }
        }
        let is_default = name == DEFAULT && chunks.is_empty();
        if is_default && keys.is_empty() {
            continue;
        }
        if let Some(c) = section_comment {
            write_comment(&mut out, &c);
        }
        if !is_default {
            out.extend_from_slice(format!("[{name}]\n").as_bytes());
        }
        let align = keys.iter().map(|(k, _, _)| k.len()).max().unwrap_or(0);
        for (k, v, c) in keys {
            if let Some(c) = c {
                write_comment(&mut out, &c);
            }
            out.extend_from_slice(k.as_bytes());
            out.extend(std::iter::repeat_n(b' ', align - k.len()));
            out.extend_from_slice(b" = ");
            let s = String::from_utf8_lossy(&v);
            if s.contains('\n') || s.contains('`') {
                out.extend_from_slice(format!("\"\"\"{s}\"\"\"").as_bytes());
            } else if s.contains('#') || s.contains(';') {
                out.extend_from_slice(format!("`{s}`").as_bytes());
            } else if s.trim() != s {
                out.extend_from_slice(format!("\"{s}\"").as_bytes());
            } else {
                out.extend_from_slice(&v);
            }
            out.push(b'\n');
        }
        chunks.push(out);
    }
    let mut out = Zeroizing::new(Vec::new());
    for (i, chunk) in chunks.iter().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(chunk);
    }
    out
}

fn write_comment(out: &mut Vec<u8>, c: &[u8]) {
    if !c.starts_with(b"#") && !c.starts_with(b";") {
        out.extend_from_slice(b"; ");
    }
    out.extend_from_slice(c);
    out.push(b'\n');
}

fn leaf_text(v: &Value) -> Vec<u8> {
    match v {
        Value::Str(b) | Value::Comment(b) => b.to_vec(),
        Value::Int(n) => n.to_string().into_bytes(),
        Value::Float(f) => format!("{f:.6}").into_bytes(),
        Value::Bool(b) => b.to_string().into_bytes(),
        Value::Time(t) => t.clone().into_bytes(),
        Value::Null | Value::Map(_) | Value::Seq(_) => Vec::new(),
    }
}
