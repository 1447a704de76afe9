//! Decrypts SOPS files encrypted to age keys, byte-compatible with `sops decrypt` 3.x.
//!
//! ```text
//!  input bytes ──formats::load──▶ Tree + sops metadata
//!                                      │ Keyring::unwrap (age, Shamir groups) ──▶ data key
//!                                      ▼
//!                       walk::decrypt_tree (AES-256-GCM per value, MAC check)
//!                                      │
//!  Plaintext ◀──formats::emit── decrypted Tree (same layout rules as sops' stores)
//! ```
//!
//! # Output compatibility
//! The output is the bytes `sops decrypt` prints, for YAML, JSON, dotenv, INI and binary
//! files written by sops 3.7–3.11. Known differences (all in YAML input that sops did not
//! write itself, or in rare layouts):
//! - YAML comments are attached to the surrounding map or list by their position; sops
//!   uses go-yaml's head/line/foot rules, which can move a comment that sits at the end of
//!   a list whose last element is itself a list.
//! - YAML integers beyond the signed 64-bit range, non-string map keys, merge keys (`<<`)
//!   and explicit tags other than `!!str`/`!!binary` are rejected or read as strings,
//!   where sops may fail differently.
//! - Values of type `bytes` are printed as strings.
//!
//! # Guarantees
//! Plaintext only ever lives in zeroized buffers; nothing is written to disk or logged, and
//! no [`Error`] contains plaintext or key material.

mod cipher;
mod encrypt;
mod error;
mod formats;
mod keys;
mod metadata;
mod shamir;
mod tree;
mod walk;

use std::fmt;
use std::path::Path;

use zeroize::Zeroizing;

pub use encrypt::{Node, encrypt_yaml};
pub use error::{Error, Result};
pub use keys::Keyring;

/// The file formats sops knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// YAML, possibly with several documents and comments.
    Yaml,
    /// JSON.
    Json,
    /// `KEY=VALUE` lines (`.env`).
    Dotenv,
    /// INI sections.
    Ini,
    /// Any other file, stored as one string in a JSON envelope.
    Binary,
}

impl Format {
    /// Picks the format from the file extension, as sops does: `.yaml`/`.yml`, `.json`,
    /// `.env`, `.ini`; anything else is binary.
    pub fn from_path(path: impl AsRef<Path>) -> Format {
        let ext = path
            .as_ref()
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("");
        match ext {
            "yaml" | "yml" => Format::Yaml,
            "json" => Format::Json,
            "env" => Format::Dotenv,
            "ini" => Format::Ini,
            _ => Format::Binary,
        }
    }

    /// The name used on the command line (`yaml`, `json`, `dotenv`, `ini`, `binary`).
    pub fn name(self) -> &'static str {
        match self {
            Format::Yaml => "yaml",
            Format::Json => "json",
            Format::Dotenv => "dotenv",
            Format::Ini => "ini",
            Format::Binary => "binary",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "yaml" | "yml" => Ok(Format::Yaml),
            "json" => Ok(Format::Json),
            "dotenv" | "env" => Ok(Format::Dotenv),
            "ini" => Ok(Format::Ini),
            "binary" => Ok(Format::Binary),
            other => Err(format!(
                "unknown format `{other}` (yaml, json, dotenv, ini, binary)"
            )),
        }
    }
}

/// Decrypted file content. It wipes itself when dropped and never prints its content:
/// `Debug` shows only the length, and there is no `Display`.
pub struct Plaintext(Zeroizing<Vec<u8>>);

impl Plaintext {
    /// The decrypted bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bytes, still in a zeroizing buffer.
    pub fn into_inner(self) -> Zeroizing<Vec<u8>> {
        self.0
    }
}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Plaintext({} bytes)", self.0.len())
    }
}

/// Decrypts a SOPS file and renders it as `sops decrypt` would.
///
/// # Errors
/// [`Error::Parse`] or [`Error::NotSopsFile`] for bad input, [`Error::NoMatchingKey`],
/// [`Error::UnsupportedKeyType`] or [`Error::NotEnoughKeyGroups`] when the data key cannot
/// be opened, [`Error::MalformedValue`] for a broken `ENC[...]`, [`Error::MacMismatch`]
/// when the file was modified after encryption.
pub fn decrypt(input: &[u8], format: Format, keys: &Keyring) -> Result<Plaintext> {
    decrypt_to(input, format, format, keys)
}

/// [`decrypt`], printed in `output` (`sops decrypt --output-type`): a YAML file as JSON, a
/// JSON file as dotenv (flat keys only), the `data` string of any file as binary.
///
/// # Errors
/// As [`decrypt`]; [`Error::Parse`] when the tree does not fit `output` (nested keys for
/// dotenv, no `data` string for binary).
pub fn decrypt_to(
    input: &[u8],
    format: Format,
    output: Format,
    keys: &Keyring,
) -> Result<Plaintext> {
    let mut doc = formats::load(input, format)?;
    let meta = metadata::Metadata::from_value(&doc.metadata)?;
    let key = data_key(&meta, keys)?;
    walk::decrypt_tree(&mut doc.branches, &meta, &key)?;
    Ok(Plaintext(formats::emit(&doc.branches, output)?))
}

/// Checks a SOPS file without a key: it parses, its metadata is usable and names at least one
/// age recipient, and every value its rule encrypts (and the MAC) is a well-formed `ENC[...]`
/// value. A plaintext value injected into an encrypted file fails here. The MAC itself can only
/// be verified by [`decrypt`], with a key.
///
/// # Errors
/// [`Error::Parse`], [`Error::NotSopsFile`], [`Error::InvalidMetadata`] (also when there is no
/// age recipient) or [`Error::MalformedValue`] naming the first bad value by its path.
pub fn check(input: &[u8], format: Format) -> Result<()> {
    let mut doc = formats::load(input, format)?;
    let meta = metadata::Metadata::from_value(&doc.metadata)?;
    if meta.recipients().is_empty() {
        return Err(Error::InvalidMetadata(
            "the file lists no age recipient".into(),
        ));
    }
    walk::check_tree(&mut doc.branches, &meta)
}

/// The age recipients (public keys) a SOPS file is encrypted to, in file order, without a key.
///
/// # Errors
/// [`Error::Parse`], [`Error::NotSopsFile`] or [`Error::InvalidMetadata`].
pub fn recipients(input: &[u8], format: Format) -> Result<Vec<String>> {
    let doc = formats::load(input, format)?;
    Ok(metadata::Metadata::from_value(&doc.metadata)?.recipients())
}

/// True for a well-formed age X25519 recipient (`age1...`).
pub fn is_age_recipient(s: &str) -> bool {
    s.parse::<age::x25519::Recipient>().is_ok()
}

/// True if the input parses in `format` and carries sops metadata with a MAC.
pub fn is_sops_file(input: &[u8], format: Format) -> bool {
    match formats::load(input, format) {
        Ok(doc) => doc
            .metadata
            .get("mac")
            .and_then(tree::Value::as_str)
            .is_some_and(cipher::looks_encrypted),
        Err(_) => false,
    }
}

/// Opens the data key: the whole key from one group, or enough Shamir shares.
fn data_key(meta: &metadata::Metadata, keys: &Keyring) -> Result<Zeroizing<[u8; 32]>> {
    let recipients = meta.recipients();
    if recipients.is_empty() {
        let other = meta.other_key_types();
        if other.is_empty() {
            return Err(Error::InvalidMetadata(
                "the file lists no master keys".into(),
            ));
        }
        return Err(Error::UnsupportedKeyType(other));
    }
    let mut parts = Vec::new();
    for group in &meta.groups {
        if let Some(part) = group.age.iter().find_map(|k| keys.unwrap(&k.enc)) {
            parts.push(part);
        }
    }
    let key = if meta.groups.len() > 1 {
        if parts.len() < meta.threshold {
            if parts.is_empty() {
                return Err(Error::NoMatchingKey {
                    recipients,
                    other_key_types: meta.other_key_types(),
                });
            }
            return Err(Error::NotEnoughKeyGroups {
                opened: parts.len(),
                threshold: meta.threshold,
                recipients,
            });
        }
        shamir::combine(&parts)
            .ok_or_else(|| Error::InvalidMetadata("inconsistent Shamir shares".into()))?
    } else {
        parts.pop().ok_or_else(|| Error::NoMatchingKey {
            recipients,
            other_key_types: meta.other_key_types(),
        })?
    };
    let key: [u8; 32] = key
        .as_slice()
        .try_into()
        .map_err(|_| Error::InvalidMetadata("the data key is not 32 bytes".into()))?;
    Ok(Zeroizing::new(key))
}

/// Entry points for the fuzz targets and property tests; not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    use crate::Format;

    /// Parses `input`, reads its metadata and prints its (still encrypted) tree again:
    /// every parser and emitter runs without needing a key.
    pub fn load_and_emit(input: &[u8], format: Format) {
        if let Ok(doc) = crate::formats::load(input, format) {
            let _ = crate::metadata::Metadata::from_value(&doc.metadata);
            let _ = crate::formats::emit(&doc.branches, format);
        }
    }
}
