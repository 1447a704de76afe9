//! dotenv files: `KEY=VALUE` lines, `#` comments, `\n` escapes, metadata in `sops_` keys.

use zeroize::Zeroizing;

use super::Document;
use crate::Format;
use crate::error::{Error, Result};
use crate::metadata::unflatten;
use crate::tree::{Item, Value, comment};

const PREFIX: &str = "sops_";

pub(super) fn load(input: &[u8]) -> Result<Document> {
    let text = std::str::from_utf8(input).map_err(|_| Error::Parse {
        format: Format::Dotenv,
        line: None,
        reason: "not UTF-8".into(),
    })?;
    let mut branch = Vec::new();
    let mut meta = Vec::new();
    for (n, line) in text.split('\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            branch.push(Item::Comment(comment(c)));
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(Error::Parse {
                format: Format::Dotenv,
                line: Some(n + 1),
                reason: "a line is neither a comment nor KEY=VALUE".into(),
            });
        };
        if let Some(name) = key.strip_prefix(PREFIX) {
            meta.push((name.to_string(), value.to_string()));
        } else {
            branch.push(Item::Pair(
                key.to_string(),
                Value::str(&value.replace("\\n", "\n")),
            ));
        }
    }
    if meta.is_empty() {
        return Err(Error::NotSopsFile(Format::Dotenv));
    }
    Ok(Document {
        branches: vec![branch],
        metadata: unflatten(&meta),
    })
}

pub(super) fn emit(branch: &[Item]) -> Result<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::new());
    for item in branch {
        match item {
            Item::Comment(c) => {
                out.push(b'#');
                out.extend_from_slice(c);
            }
            Item::Pair(k, v) => {
                out.extend_from_slice(k.as_bytes());
                out.push(b'=');
                match v {
                    Value::Str(b) => {
                        for &c in b.iter() {
                            if c == b'\n' {
                                out.extend_from_slice(b"\\n");
                            } else {
                                out.push(c);
                            }
                        }
                    }
                    Value::Int(n) => out.extend_from_slice(n.to_string().as_bytes()),
                    Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
                    Value::Float(f) => {
                        out.extend_from_slice(crate::walk::go_format_f(*f).as_bytes())
                    }
                    Value::Time(t) => out.extend_from_slice(t.as_bytes()),
                    Value::Null => {}
                    Value::Map(_) | Value::Seq(_) | Value::Comment(_) => {
                        return Err(Error::Parse {
                            format: Format::Dotenv,
                            line: None,
                            reason: format!(
                                "cannot use a complex value in a dotenv file (key `{k}`)"
                            ),
                        });
                    }
                }
            }
        }
        out.push(b'\n');
    }
    Ok(out)
}
