//! A YAML tree that remembers where every node stands, so that any error can name file:line:col.
//!
//! ```text
//! text ──saphyr-parser events──► Node { value, line, col } ──to_json──► serde_json::Value ──serde──► types
//!                                   ▲
//!                    Path (["nodes", 2, "addresses", 0]) ──position──┘
//! ```
//!
//! Plain scalars resolve by the YAML 1.2 core schema (what Talos' go-yaml v3 does for these
//! files): `null`/`~`/empty, `true`/`false`, integers, floats; quoted scalars are strings.
//! Duplicate keys are an error (a typo that silently overrides is worse than a refusal). Anchors
//! and aliases are refused too: the repo format has no use for them and they hide where a value
//! came from.

use std::borrow::Cow;
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Number, Value};

/// A position in a file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// A YAML node with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the node starts (for a mapping entry's value, where the value starts).
    pub pos: Pos,
    /// What it holds.
    pub kind: Kind,
}

/// The shape of a node.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A scalar, already resolved to a JSON value.
    Scalar(Value),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping in document order: (key, key position, value).
    Map(Vec<(String, Pos, Node)>),
}

/// A YAML syntax error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pos}: {message}")]
pub struct SyntaxError {
    /// Where the parser stopped.
    pub pos: Pos,
    /// What it said.
    pub message: String,
}

/// One step of a path into a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

impl From<&str> for Seg {
    fn from(key: &str) -> Self {
        Seg::Key(key.to_string())
    }
}
impl From<usize> for Seg {
    fn from(i: usize) -> Self {
        Seg::Index(i)
    }
}

/// Builds a path from keys and indexes: `path!["nodes", 2, "name"]`.
#[macro_export]
macro_rules! path {
    ($($seg:expr),* $(,)?) => { vec![$($crate::yaml::Seg::from($seg)),*] };
}

fn pos_of(span: &Span) -> Pos {
    Pos {
        line: span.start.line(),
        col: span.start.col() + 1,
    }
}

/// Parses every document of a YAML stream.
///
/// # Errors
/// [`SyntaxError`] with the position of the first problem.
pub fn parse_all(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut parser = Parser::new_from_str(text);
    let mut docs = Vec::new();
    loop {
        let (event, span) = next(&mut parser)?;
        match event {
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            Event::StreamEnd => return Ok(docs),
            Event::DocumentStart(_) => {
                let (event, span) = next(&mut parser)?;
                if matches!(event, Event::DocumentEnd) {
                    docs.push(Node {
                        pos: pos_of(&span),
                        kind: Kind::Scalar(Value::Null),
                    });
                } else {
                    docs.push(build(&mut parser, event, span)?);
                }
            }
            other => {
                return Err(SyntaxError {
                    pos: pos_of(&span),
                    message: format!("unexpected {other:?}"),
                });
            }
        }
    }
}

/// Parses a stream that must hold exactly one document (an empty file is a null document).
///
/// # Errors
/// [`SyntaxError`] on bad YAML or more than one document.
pub fn parse_one(text: &str) -> Result<Node, SyntaxError> {
    let mut docs = parse_all(text)?;
    match docs.len() {
        0 => Ok(Node {
            pos: Pos { line: 1, col: 1 },
            kind: Kind::Scalar(Value::Null),
        }),
        1 => Ok(docs.remove(0)),
        _ => Err(SyntaxError {
            pos: docs[1].pos,
            message: "this file must hold one YAML document; remove the extra `---` document"
                .into(),
        }),
    }
}

fn next<'a>(
    parser: &mut Parser<'a, saphyr_parser::StrInput<'a>>,
) -> Result<(Event<'a>, Span), SyntaxError> {
    match parser.next_event() {
        Some(Ok(pair)) => Ok(pair),
        Some(Err(e)) => Err(SyntaxError {
            pos: Pos {
                line: e.marker().line(),
                col: e.marker().col() + 1,
            },
            message: e.info().to_string(),
        }),
        None => Err(SyntaxError {
            pos: Pos::default(),
            message: "unexpected end of input".into(),
        }),
    }
}

fn no_anchor(anchor: usize, pos: Pos) -> Result<(), SyntaxError> {
    if anchor == 0 {
        Ok(())
    } else {
        Err(SyntaxError {
            pos,
            message: "anchors and aliases are not supported; write the value out".into(),
        })
    }
}

fn build<'a>(
    parser: &mut Parser<'a, saphyr_parser::StrInput<'a>>,
    event: Event<'a>,
    span: Span,
) -> Result<Node, SyntaxError> {
    let pos = pos_of(&span);
    match event {
        Event::Scalar(text, style, anchor, tag) => {
            no_anchor(anchor, pos)?;
            let value = match (&tag, style) {
                (Some(tag), _) if tag.suffix == "str" => Value::String(text.into_owned()),
                (_, ScalarStyle::Plain) => resolve_plain(text),
                _ => Value::String(text.into_owned()),
            };
            Ok(Node {
                pos,
                kind: Kind::Scalar(value),
            })
        }
        Event::SequenceStart(anchor, _) => {
            no_anchor(anchor, pos)?;
            let mut items = Vec::new();
            loop {
                let (event, span) = next(parser)?;
                if matches!(event, Event::SequenceEnd) {
                    return Ok(Node {
                        pos,
                        kind: Kind::Seq(items),
                    });
                }
                items.push(build(parser, event, span)?);
            }
        }
        Event::MappingStart(anchor, _) => {
            no_anchor(anchor, pos)?;
            let mut entries: Vec<(String, Pos, Node)> = Vec::new();
            loop {
                let (event, span) = next(parser)?;
                if matches!(event, Event::MappingEnd) {
                    return Ok(Node {
                        pos,
                        kind: Kind::Map(entries),
                    });
                }
                let key_node = build(parser, event, span)?;
                let key = match key_node.kind {
                    Kind::Scalar(Value::String(s)) => s,
                    Kind::Scalar(Value::Null) => String::new(),
                    Kind::Scalar(other) => other.to_string(),
                    _ => {
                        return Err(SyntaxError {
                            pos: key_node.pos,
                            message: "mapping keys must be plain text".into(),
                        });
                    }
                };
                if let Some((_, first, _)) = entries.iter().find(|(k, _, _)| *k == key) {
                    return Err(SyntaxError {
                        pos: key_node.pos,
                        message: format!(
                            "duplicate key `{key}` (first at line {}); keep only one",
                            first.line
                        ),
                    });
                }
                let (event, span) = next(parser)?;
                let value = build(parser, event, span)?;
                entries.push((key, key_node.pos, value));
            }
        }
        Event::Alias(_) => Err(SyntaxError {
            pos,
            message: "anchors and aliases are not supported; write the value out".into(),
        }),
        other => Err(SyntaxError {
            pos,
            message: format!("unexpected {other:?}"),
        }),
    }
}

/// YAML 1.2 core schema resolution of a plain scalar.
fn resolve_plain(text: Cow<'_, str>) -> Value {
    match text.as_ref() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let t = text.as_ref();
    let looks_numeric = t
        .trim_start_matches(['-', '+'])
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit() || c == '.');
    if looks_numeric {
        if let Ok(i) = t.parse::<i64>() {
            return Value::Number(i.into());
        }
        if let Some(hex) = t.strip_prefix("0x")
            && let Ok(i) = i64::from_str_radix(hex, 16)
        {
            return Value::Number(i.into());
        }
        if let Some(oct) = t.strip_prefix("0o")
            && let Ok(i) = i64::from_str_radix(oct, 8)
        {
            return Value::Number(i.into());
        }
        if t.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c))
            && let Some(n) = t.parse::<f64>().ok().and_then(Number::from_f64)
        {
            return Value::Number(n);
        }
    }
    Value::String(text.into_owned())
}

impl Node {
    /// The node as a JSON value (mapping order kept).
    pub fn to_json(&self) -> Value {
        match &self.kind {
            Kind::Scalar(v) => v.clone(),
            Kind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Kind::Map(entries) => {
                let mut map = Map::with_capacity(entries.len());
                for (k, _, v) in entries {
                    map.insert(k.clone(), v.to_json());
                }
                Value::Object(map)
            }
        }
    }

    /// The node at `path`, if there is one.
    pub fn get(&self, path: &[Seg]) -> Option<&Node> {
        let Some((first, rest)) = path.split_first() else {
            return Some(self);
        };
        match (first, &self.kind) {
            (Seg::Key(key), Kind::Map(entries)) => entries
                .iter()
                .find(|(k, _, _)| k == key)
                .and_then(|(_, _, v)| v.get(rest)),
            (Seg::Index(i), Kind::Seq(items)) => items.get(*i).and_then(|n| n.get(rest)),
            _ => None,
        }
    }

    /// The position of the deepest existing node along `path`: the value itself when it exists,
    /// else its closest ancestor (so a missing field points at the mapping that lacks it).
    pub fn position(&self, path: &[Seg]) -> Pos {
        let mut node = self;
        for seg in path {
            match node.get(std::slice::from_ref(seg)) {
                Some(child) => node = child,
                None => break,
            }
        }
        node.pos
    }

    /// The position of the key of the last segment when it is a mapping key (for "unknown field"
    /// and "duplicate" messages, pointing at the key reads best).
    pub fn key_position(&self, path: &[Seg]) -> Pos {
        if let Some((Seg::Key(key), parent)) = path.split_last()
            && let Some(Node {
                kind: Kind::Map(entries),
                ..
            }) = self.get(parent)
            && let Some((_, pos, _)) = entries.iter().find(|(k, _, _)| k == key)
        {
            return *pos;
        }
        self.position(path)
    }
}

/// Turns a `serde_path_to_error` path into segments.
pub fn segments_of(path: &serde_path_to_error::Path) -> Vec<Seg> {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|seg| match seg {
            Segment::Seq { index } => Some(Seg::Index(*index)),
            Segment::Map { key } => Some(Seg::Key(key.clone())),
            Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
            Segment::Unknown => None,
        })
        .collect()
}

/// A path as users read it: `nodes[2].addresses[0]`.
pub fn display_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn positions_are_one_based_and_point_at_values() {
        let doc = parse_one("a: 1\nlist:\n  - x: foo\n    y: \"true\"\n").unwrap();
        assert_eq!(doc.get(&path!["a"]).unwrap().pos, Pos { line: 1, col: 4 });
        assert_eq!(
            doc.get(&path!["list", 0, "y"]).unwrap().pos,
            Pos { line: 4, col: 8 }
        );
        assert_eq!(
            doc.key_position(&path!["list", 0, "y"]),
            Pos { line: 4, col: 5 }
        );
        assert_eq!(
            doc.position(&path!["list", 0, "missing"]),
            Pos { line: 3, col: 5 }
        );
    }

    #[test]
    fn core_schema_scalars() {
        let doc = parse_one("a: 1\nb: 1.5\nc: true\nd: ~\ne: 'true'\nf: v1.11.6\ng: 1.34\nh: -3\n")
            .unwrap();
        assert_eq!(
            doc.to_json(),
            json!({"a": 1, "b": 1.5, "c": true, "d": null, "e": "true", "f": "v1.11.6", "g": 1.34, "h": -3})
        );
    }

    #[test]
    fn duplicate_keys_are_refused_with_both_lines() {
        let err = parse_one("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.pos.line, 3);
        assert!(err.message.contains("first at line 1"), "{}", err.message);
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let err = parse_one("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.pos.line >= 1, "{err}");
    }

    #[test]
    fn multi_document_streams() {
        let docs = parse_all("a: 1\n---\nb: 2\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].pos.line, 3);
        assert!(parse_one("a: 1\n---\nb: 2\n").is_err());
    }

    #[test]
    fn aliases_are_refused() {
        assert!(parse_one("a: &x 1\nb: *x\n").is_err());
    }
}
