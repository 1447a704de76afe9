//! Loads YAML into the tree. Values come from `saphyr-parser` events; comments, which no
//! YAML parser reports, are found in the gaps between the events' spans and placed like
//! sops places them: a full-line comment goes to the map or list it is indented into (its
//! head, before the next entry, or its end), a comment after a value goes before that
//! value's entry.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use zeroize::Zeroizing;

use super::scalar::resolve_plain;
use crate::Format;
use crate::error::{Error, Result};
use crate::formats::{Document, take_sops};
use crate::tree::{Item, Value};

/// Deepest nesting accepted.
const MAX_DEPTH: usize = 256;

struct Comment {
    /// Byte offset of `#`.
    at: usize,
    col: usize,
    /// Something precedes it on its line.
    trailing: bool,
    text: String,
}

enum Frame {
    Map {
        items: Vec<Item>,
        key: Option<String>,
        col: usize,
        flow: bool,
        anchor: usize,
    },
    Seq {
        items: Vec<Value>,
        col: usize,
        flow: bool,
        anchor: usize,
    },
}

fn parse_err(line: Option<usize>, reason: impl Into<String>) -> Error {
    Error::Parse {
        format: Format::Yaml,
        line,
        reason: reason.into(),
    }
}

pub(crate) fn load(input: &[u8]) -> Result<Document> {
    let text = std::str::from_utf8(input).map_err(|_| parse_err(None, "not UTF-8"))?;
    let events = collect_events(text)?;
    let offsets: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect();
    let byte = |span_index: usize| offsets.get(span_index).copied().unwrap_or(text.len());
    let comments = find_comments(text, &events, &byte);

    let mut b = Builder {
        frames: Vec::new(),
        anchors: HashMap::new(),
        comments,
        next: 0,
        docs: Vec::new(),
        root: None,
    };
    for (event, span) in &events {
        let at = byte(span.start.index());
        let line = Some(span.start.line());
        match event {
            Event::DocumentStart(_) => b.root = None,
            Event::DocumentEnd => {
                b.flush_into_root(at);
                b.finish_doc(line)?;
            }
            Event::StreamEnd => {
                b.flush_into_root(usize::MAX);
                if b.root.is_some() {
                    b.finish_doc(line)?;
                }
            }
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                if b.frames.len() >= MAX_DEPTH {
                    return Err(parse_err(line, "nesting too deep"));
                }
                if matches!(b.frames.last(), Some(Frame::Map { key: None, .. })) {
                    return Err(parse_err(line, "map keys must be strings"));
                }
                let flow = span.start.index() != span.end.index();
                b.flush_head(at);
                let col = span.start.col();
                let frame = if matches!(event, Event::MappingStart(..)) {
                    Frame::Map {
                        items: Vec::new(),
                        key: None,
                        col,
                        flow,
                        anchor: *anchor,
                    }
                } else {
                    Frame::Seq {
                        items: Vec::new(),
                        col,
                        flow,
                        anchor: *anchor,
                    }
                };
                b.frames.push(frame);
            }
            Event::MappingEnd | Event::SequenceEnd => {
                b.flush_foot(at);
                let (value, anchor) = match b.frames.pop() {
                    Some(Frame::Map { items, anchor, .. }) => (Value::Map(items), anchor),
                    Some(Frame::Seq { items, anchor, .. }) => (Value::Seq(items), anchor),
                    None => return Err(parse_err(line, "unbalanced collection")),
                };
                b.push_node(value, anchor, line)?;
            }
            Event::Scalar(value, style, anchor, tag) => {
                b.flush_before(at);
                let tag = tag.as_ref().map(|t| format!("{}{}", t.handle, t.suffix));
                let is_key = matches!(b.frames.last(), Some(Frame::Map { key: None, .. }));
                if is_key {
                    let value = yaml11_breaks(value, *style, span.start.col());
                    let key = scalar_key(&value, *style, tag.as_deref())
                        .ok_or_else(|| parse_err(line, "map keys must be strings"))?;
                    if let Some(Frame::Map { key: slot, .. }) = b.frames.last_mut() {
                        *slot = Some(key);
                    }
                    continue;
                }
                let value = yaml11_breaks(value, *style, span.start.col());
                let v = scalar_value(&value, *style, tag.as_deref()).ok_or_else(|| {
                    parse_err(
                        line,
                        "unsupported scalar (integer out of range or bad !!binary)",
                    )
                })?;
                b.push_node(v, *anchor, line)?;
            }
            Event::Alias(id) => {
                b.flush_before(at);
                if matches!(b.frames.last(), Some(Frame::Map { key: None, .. })) {
                    return Err(parse_err(line, "map keys must be strings"));
                }
                let v = b
                    .anchors
                    .get(id)
                    .cloned()
                    .ok_or_else(|| parse_err(line, "unknown alias"))?;
                b.push_node(v, 0, line)?;
            }
            _ => {}
        }
    }
    let mut docs = b.docs;
    let mut metadata = None;
    for (i, doc) in docs.iter_mut().enumerate() {
        let found = take_sops(doc);
        if i == 0 {
            metadata = found;
        }
    }
    let metadata = metadata.ok_or(Error::NotSopsFile(Format::Yaml))?;
    Ok(Document {
        branches: docs,
        metadata,
    })
}

fn collect_events(text: &str) -> Result<Vec<(Event<'_>, Span)>> {
    let mut parser = Parser::new_from_str(text);
    let mut events = Vec::new();
    while let Some(next) = parser.next_event() {
        match next {
            Ok(ev) => events.push(ev),
            Err(e) => return Err(parse_err(Some(e.marker().line()), e.info().to_string())),
        }
    }
    Ok(events)
}

/// go-yaml follows YAML 1.1, where U+0085, U+2028 and U+2029 are line breaks: the
/// indentation after them is not content. `saphyr-parser` follows YAML 1.2 and keeps it.
fn yaml11_breaks(value: &str, style: ScalarStyle, col: usize) -> String {
    // Double-quoted scalars are left alone: their breaks are usually escapes (`\L`).
    if matches!(style, ScalarStyle::Plain | ScalarStyle::DoubleQuoted)
        || !value.contains(['\u{85}', '\u{2028}', '\u{2029}'])
    {
        return value.to_string();
    }
    let block = matches!(style, ScalarStyle::Literal | ScalarStyle::Folded);
    let mut out = String::with_capacity(value.len());
    let mut strip = 0usize;
    let mut skipping = false;
    for c in value.chars() {
        if skipping && (c == ' ' || (!block && c == '\t')) && (!block || strip < col) {
            strip += 1;
            continue;
        }
        skipping = false;
        out.push(c);
        if matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}') {
            skipping = true;
            strip = 0;
        }
    }
    out
}

fn scalar_key(value: &str, style: ScalarStyle, tag: Option<&str>) -> Option<String> {
    match scalar_value(value, style, tag)? {
        Value::Str(b) => String::from_utf8(b.to_vec()).ok(),
        Value::Time(_) => Some(value.to_string()),
        _ => None,
    }
}

fn scalar_value(value: &str, style: ScalarStyle, tag: Option<&str>) -> Option<Value> {
    match tag {
        Some("tag:yaml.org,2002:str" | "!!str") => return Some(Value::str(value)),
        Some("tag:yaml.org,2002:binary" | "!!binary") => {
            let clean: String = value.chars().filter(|c| !c.is_whitespace()).collect();
            return STANDARD
                .decode(clean)
                .ok()
                .map(|b| Value::Str(Zeroizing::new(b)));
        }
        _ => {}
    }
    if style == ScalarStyle::Plain {
        resolve_plain(value)
    } else {
        Some(Value::str(value))
    }
}

struct Builder {
    frames: Vec<Frame>,
    anchors: HashMap<usize, Value>,
    comments: Vec<Comment>,
    next: usize,
    docs: Vec<Vec<Item>>,
    root: Option<Value>,
}

impl Builder {
    fn push_node(&mut self, v: Value, anchor: usize, line: Option<usize>) -> Result<()> {
        if anchor != 0 {
            self.anchors.insert(anchor, v.clone());
        }
        match self.frames.last_mut() {
            Some(Frame::Map { items, key, .. }) => {
                let k = key
                    .take()
                    .ok_or_else(|| parse_err(line, "map keys must be strings"))?;
                items.push(Item::Pair(k, v));
            }
            Some(Frame::Seq { items, .. }) => items.push(v),
            None => self.root = Some(v),
        }
        Ok(())
    }

    fn finish_doc(&mut self, line: Option<usize>) -> Result<()> {
        match self.root.take() {
            Some(Value::Map(items)) => self.docs.push(items),
            None | Some(Value::Null) => self.docs.push(Vec::new()),
            Some(Value::Seq(_)) => {
                return Err(parse_err(
                    line,
                    "YAML documents that are sequences are not supported",
                ));
            }
            Some(_) => {
                return Err(parse_err(
                    line,
                    "YAML documents that are values are not supported",
                ));
            }
        }
        Ok(())
    }

    /// Comments that start before byte `at`, in order.
    fn due(&mut self, at: usize) -> Vec<Comment> {
        let start = self.next;
        while self.next < self.comments.len() && self.comments[self.next].at < at {
            self.next += 1;
        }
        self.comments[start..self.next]
            .iter()
            .map(|c| Comment {
                at: c.at,
                col: c.col,
                trailing: c.trailing,
                text: c.text.clone(),
            })
            .collect()
    }

    /// Before a new collection: trailing comments go before the previous entry, the others
    /// become the head of the new collection (they are placed once it is pushed).
    fn flush_head(&mut self, at: usize) {
        let due = self.due(at);
        let (trailing, head): (Vec<_>, Vec<_>) = due.into_iter().partition(|c| c.trailing);
        self.place_trailing(trailing);
        // Re-queue the head comments: they are placed by the first event inside.
        if !head.is_empty() {
            self.next -= head.len();
        }
    }

    /// Before a scalar or alias: everything goes into the current collection.
    fn flush_before(&mut self, at: usize) {
        for c in self.due(at) {
            if c.trailing {
                self.place_trailing(vec![c]);
            } else {
                self.append(c.text);
            }
        }
    }

    /// Before a collection ends: trailing comments and those indented into it stay in it;
    /// the rest wait for the parent.
    fn flush_foot(&mut self, at: usize) {
        let (col, flow) = match self.frames.last() {
            Some(Frame::Map { col, flow, .. } | Frame::Seq { col, flow, .. }) => (*col, *flow),
            None => return,
        };
        let start = self.next;
        let mut end = start;
        while end < self.comments.len() && self.comments[end].at < at {
            let c = &self.comments[end];
            if !(c.trailing || flow || c.col >= col) {
                break;
            }
            end += 1;
        }
        self.next = end;
        let taken: Vec<Comment> = self.comments[start..end]
            .iter()
            .map(|c| Comment {
                at: c.at,
                col: c.col,
                trailing: c.trailing,
                text: c.text.clone(),
            })
            .collect();
        for c in taken {
            if c.trailing {
                self.place_trailing(vec![c]);
            } else {
                self.append(c.text);
            }
        }
    }

    fn flush_into_root(&mut self, at: usize) {
        let due = self.due(at);
        if let Some(Value::Map(items)) = &mut self.root {
            for c in due {
                items.push(Item::Comment(Zeroizing::new(c.text.into_bytes())));
            }
        }
    }

    fn append(&mut self, text: String) {
        let bytes = Zeroizing::new(text.into_bytes());
        match self.frames.last_mut() {
            Some(Frame::Map { items, .. }) => items.push(Item::Comment(bytes)),
            Some(Frame::Seq { items, .. }) => items.push(Value::Comment(bytes)),
            None => {}
        }
    }

    /// A comment after a value on the same line goes before that value's entry.
    fn place_trailing(&mut self, comments: Vec<Comment>) {
        for c in comments {
            let bytes = Zeroizing::new(c.text.into_bytes());
            match self.frames.last_mut() {
                Some(Frame::Map { items, key, .. }) => {
                    let pos = if key.is_some() {
                        items.len()
                    } else {
                        last_entry(items.len())
                    };
                    items.insert(pos, Item::Comment(bytes));
                }
                Some(Frame::Seq { items, .. }) => {
                    let pos = last_entry(items.len());
                    items.insert(pos, Value::Comment(bytes));
                }
                None => {
                    if let Some(Value::Map(items)) = &mut self.root {
                        items.push(Item::Comment(bytes));
                    }
                }
            }
        }
    }
}

fn last_entry(len: usize) -> usize {
    len.saturating_sub(1)
}

/// Finds `#` comments outside scalars.
fn find_comments(
    text: &str,
    events: &[(Event<'_>, Span)],
    byte: &dyn Fn(usize) -> usize,
) -> Vec<Comment> {
    let bytes = text.as_bytes();
    // Byte ranges covered by scalar content.
    let mut covered: Vec<(usize, usize)> = Vec::new();
    for (event, span) in events {
        if let Event::Scalar(_, style, _, _) = event {
            let start = byte(span.start.index());
            let end = match style {
                ScalarStyle::SingleQuoted => close_single(bytes, start),
                ScalarStyle::DoubleQuoted => close_double(bytes, start),
                _ => byte(span.end.index()).max(start),
            };
            covered.push((start, end));
        }
    }
    covered.sort_unstable();
    let mut out = Vec::new();
    let mut ci = 0;
    let mut i = 0;
    while i < bytes.len() {
        while ci < covered.len() && covered[ci].1 <= i {
            ci += 1;
        }
        if ci < covered.len() && covered[ci].0 <= i && i < covered[ci].1 {
            i = covered[ci].1;
            continue;
        }
        if bytes[i] == b'#' && (i == 0 || matches!(bytes[i - 1], b' ' | b'\t' | b'\n' | b'\r')) {
            let end = bytes[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(bytes.len(), |p| i + p);
            let line_start = bytes[..i]
                .iter()
                .rposition(|&c| c == b'\n')
                .map_or(0, |p| p + 1);
            let before = &text[line_start..i];
            let trailing = !before.trim().is_empty();
            let col = before.chars().count();
            let body = text[i + 1..end].trim_end_matches('\r').to_string();
            out.push(Comment {
                at: i,
                col,
                trailing,
                text: body,
            });
            i = end;
            continue;
        }
        i += 1;
    }
    out
}

fn close_single(b: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < b.len() {
        if b[i] == b'\'' {
            if b.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

fn close_double(b: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}
