//! The format-neutral document tree that every store loads into and emits from.
//!
//! It mirrors the tree sops builds internally: ordered maps whose items are key/value pairs
//! or comments, lists whose elements may be comments, and typed leaves. Leaf strings and
//! comments live in zeroized buffers because after decryption they hold plaintext.

use zeroize::Zeroizing;

/// Bytes that are wiped from memory when dropped.
pub(crate) type SecretBytes = Zeroizing<Vec<u8>>;

/// One node of a document.
#[derive(Clone)]
pub(crate) enum Value {
    /// An ordered mapping.
    Map(Vec<Item>),
    /// A list; elements may be [`Value::Comment`].
    Seq(Vec<Value>),
    /// A string (arbitrary bytes: binary files and odd plaintexts need not be UTF-8).
    Str(SecretBytes),
    /// A 64-bit signed integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A timestamp, kept as its RFC 3339 text (what Go's `MarshalText` prints).
    Time(String),
    /// An explicit null: never encrypted, never hashed.
    Null,
    /// A comment inside a list (the text after `#`).
    Comment(SecretBytes),
}

/// One entry of a map.
#[derive(Clone)]
pub(crate) enum Item {
    /// A key and its value.
    Pair(String, Value),
    /// A comment line (the text after `#`).
    Comment(SecretBytes),
}

impl Value {
    /// A string leaf from UTF-8 text.
    pub(crate) fn str(s: &str) -> Value {
        Value::Str(Zeroizing::new(s.as_bytes().to_vec()))
    }

    /// The string content, if this is a UTF-8 string leaf.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// Looks a key up in a map.
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(items) => items.iter().find_map(|item| match item {
                Item::Pair(k, v) if k == key => Some(v),
                _ => None,
            }),
            _ => None,
        }
    }
}

/// A comment item from text.
pub(crate) fn comment(text: &str) -> SecretBytes {
    Zeroizing::new(text.as_bytes().to_vec())
}
