//! Writes the decrypted tree as go-yaml v3 does for sops (`SetIndent(4)`):
//!
//! ```text
//! key: value            map at indent m; a nested block at 4 * (m / 4 + 1)
//! list:
//!     - item            a list item's content starts 2 columns after its dash
//!     - k: v
//!       k2: v2
//! ```
//!
//! Comments are written on their own line at the indent of the map or list holding them;
//! the comments that open a list item's map or list come before its dash.

use zeroize::Zeroizing;

use super::scalar::format_float;
use super::write::{needs_explicit_key, write_string};
use crate::tree::{Item, Value};

pub(crate) fn emit(branches: &[Vec<Item>]) -> Zeroizing<Vec<u8>> {
    let mut e = Emitter {
        out: Zeroizing::new(Vec::new()),
    };
    for (i, branch) in branches.iter().enumerate() {
        if i > 0 {
            e.out.extend_from_slice(b"---\n");
        }
        if branch.iter().any(|i| matches!(i, Item::Pair(..))) {
            e.map(branch, 0, false);
        } else {
            for item in branch {
                if let Item::Comment(c) = item {
                    e.comment(c, 0);
                }
            }
            e.newline(0);
            e.out.extend_from_slice(b"{}");
        }
        if e.out.last() != Some(&b'\n') {
            e.out.push(b'\n');
        }
    }
    e.out
}

struct Emitter {
    out: Zeroizing<Vec<u8>>,
}

/// The indent of a block nested under a map entry at `indent`.
fn child(indent: usize) -> usize {
    4 * (indent / 4 + 1)
}

fn has_entries_map(items: &[Item]) -> bool {
    items.iter().any(|i| matches!(i, Item::Pair(..)))
}

fn has_entries_seq(items: &[Value]) -> bool {
    items.iter().any(|v| !matches!(v, Value::Comment(_)))
}

impl Emitter {
    /// Starts a new line at `indent`, unless nothing has been written on the current one.
    fn newline(&mut self, indent: usize) {
        if !self.out.is_empty() && self.out.last() != Some(&b'\n') {
            self.out.push(b'\n');
        }
        self.out.extend(std::iter::repeat_n(b' ', indent));
    }

    fn comment(&mut self, text: &[u8], indent: usize) {
        self.newline(indent);
        self.out.push(b'#');
        self.out.extend_from_slice(text);
    }

    /// A block map at `indent`; with `inline`, the cursor already stands at its first key.
    fn map(&mut self, items: &[Item], indent: usize, mut inline: bool) {
        for item in items {
            match item {
                Item::Comment(c) => {
                    self.comment(c, indent);
                    inline = false;
                }
                Item::Pair(k, v) => {
                    if !inline {
                        self.newline(indent);
                    }
                    inline = false;
                    if needs_explicit_key(k) {
                        self.out.extend_from_slice(b"? ");
                        write_string(&mut self.out, k.as_bytes(), false, child(indent));
                        self.newline(indent);
                    } else {
                        write_string(&mut self.out, k.as_bytes(), true, 0);
                    }
                    self.out.push(b':');
                    self.value_after_key(v, indent);
                }
            }
        }
    }

    fn value_after_key(&mut self, v: &Value, indent: usize) {
        match v {
            Value::Map(items) if has_entries_map(items) => self.map(items, child(indent), false),
            Value::Seq(list) if has_entries_seq(list) => self.seq(list, child(indent), false),
            _ => {
                self.out.push(b' ');
                self.scalar(v, child(indent));
            }
        }
    }

    /// A block list whose dashes are at `indent`.
    fn seq(&mut self, list: &[Value], indent: usize, mut inline: bool) {
        for v in list {
            if let Value::Comment(c) = v {
                self.comment(c, indent);
                inline = false;
                continue;
            }
            // Comments opening a nested block are written before the dash.
            let rest_map;
            let rest_seq;
            let v = match v {
                Value::Map(items) if has_entries_map(items) => {
                    let n = items
                        .iter()
                        .take_while(|i| matches!(i, Item::Comment(_)))
                        .count();
                    for item in &items[..n] {
                        if let Item::Comment(c) = item {
                            self.comment(c, indent);
                            inline = false;
                        }
                    }
                    rest_map = Value::Map(items[n..].to_vec());
                    &rest_map
                }
                Value::Seq(items) if has_entries_seq(items) => {
                    let n = items
                        .iter()
                        .take_while(|i| matches!(i, Value::Comment(_)))
                        .count();
                    for item in &items[..n] {
                        if let Value::Comment(c) = item {
                            self.comment(c, indent);
                            inline = false;
                        }
                    }
                    rest_seq = Value::Seq(items[n..].to_vec());
                    &rest_seq
                }
                other => other,
            };
            if !inline {
                self.newline(indent);
            }
            inline = false;
            self.out.extend_from_slice(b"- ");
            match v {
                Value::Map(items) if has_entries_map(items) => self.map(items, indent + 2, true),
                Value::Seq(items) if has_entries_seq(items) => self.seq(items, indent + 2, true),
                other => self.scalar(other, indent + 2),
            }
        }
    }

    /// A leaf, or an empty collection in flow style. `indent` is for literal blocks.
    fn scalar(&mut self, v: &Value, indent: usize) {
        match v {
            Value::Str(b) => write_string(&mut self.out, b, false, indent),
            Value::Int(n) => self.out.extend_from_slice(n.to_string().as_bytes()),
            Value::Float(f) => self.out.extend_from_slice(format_float(*f).as_bytes()),
            Value::Bool(b) => self
                .out
                .extend_from_slice(if *b { b"true" } else { b"false" }),
            Value::Time(t) => self.out.extend_from_slice(t.as_bytes()),
            Value::Null => self.out.extend_from_slice(b"null"),
            Value::Map(_) => self.out.extend_from_slice(b"{}"),
            Value::Seq(_) => self.out.extend_from_slice(b"[]"),
            Value::Comment(c) => {
                self.out.push(b'#');
                self.out.extend_from_slice(c);
            }
        }
    }
}
