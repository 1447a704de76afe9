//! The stores: one loader and one emitter per format, all speaking [`crate::tree`].
//!
//! A loader returns the document branches (one per YAML document, one otherwise) without
//! the `sops` entry, and the metadata as a nested map. An emitter prints decrypted branches
//! exactly as the matching sops store does.

mod dotenv;
mod ini;
mod json;
mod yaml;

use zeroize::Zeroizing;

use crate::Format;
use crate::error::{Error, Result};
use crate::tree::{Item, Value};

/// A loaded file.
pub(crate) struct Document {
    pub(crate) branches: Vec<Vec<Item>>,
    pub(crate) metadata: Value,
}

/// Parses `input` in `format`.
///
/// # Errors
/// [`Error::Parse`] when the syntax is wrong, [`Error::NotSopsFile`] without metadata.
pub(crate) fn load(input: &[u8], format: Format) -> Result<Document> {
    match format {
        Format::Yaml => yaml::load(input),
        Format::Json | Format::Binary => json::load(input, format),
        Format::Dotenv => dotenv::load(input),
        Format::Ini => ini::load(input),
    }
}

/// Prints decrypted branches.
pub(crate) fn emit(branches: &[Vec<Item>], format: Format) -> Result<Zeroizing<Vec<u8>>> {
    match format {
        Format::Yaml => Ok(yaml::emit(branches)),
        Format::Json => Ok(json::emit(
            branches.first().map(Vec::as_slice).unwrap_or(&[]),
        )),
        Format::Binary => binary_data(branches),
        Format::Dotenv => dotenv::emit(branches.first().map(Vec::as_slice).unwrap_or(&[])),
        Format::Ini => Ok(ini::emit(
            branches.first().map(Vec::as_slice).unwrap_or(&[]),
        )),
    }
}

/// The `data` string of a binary envelope.
fn binary_data(branches: &[Vec<Item>]) -> Result<Zeroizing<Vec<u8>>> {
    let data = branches.first().and_then(|b| {
        b.iter().find_map(|item| match item {
            Item::Pair(k, Value::Str(bytes)) if k == "data" => Some(bytes.clone()),
            _ => None,
        })
    });
    data.ok_or(Error::Parse {
        format: Format::Binary,
        line: None,
        reason: "no `data` string in the envelope".into(),
    })
}

/// Removes every top-level `sops` entry of a branch and returns the first one.
pub(crate) fn take_sops(branch: &mut Vec<Item>) -> Option<Value> {
    let mut found = None;
    branch.retain_mut(|item| match item {
        Item::Pair(k, v) if k == "sops" => {
            if found.is_none() {
                found = Some(std::mem::replace(v, Value::Null));
            }
            false
        }
        _ => true,
    });
    found
}
