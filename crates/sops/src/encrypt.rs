//! Encrypting a YAML tree of strings to age recipients, as `sops encrypt --age R` writes it
//! (sops 3.x YAML store): every non-empty leaf an `ENC[AES256_GCM,...,type:str]` value whose additional
//! data is its path (`a:b:`), a fresh data key wrapped to each recipient in an armored age file,
//! and the MAC (SHA-512 over the plaintext leaves in order, upper-case hex, encrypted with
//! `lastmodified` as additional data). The output decrypts with `sops decrypt` and with
//! [`crate::decrypt`].
//!
//! Only what vixen writes is supported: nested mappings with string leaves (a Talos secrets
//! bundle).

use std::io::Write as _;

use sha2::{Digest as _, Sha512};
use zeroize::Zeroizing;

use crate::cipher::seal;
use crate::error::{Error, Result};

/// A node of the tree to encrypt.
#[derive(Debug)]
pub enum Node {
    /// A string leaf (kept in a buffer wiped on drop).
    Str(Zeroizing<String>),
    /// A mapping, in output order.
    Map(Vec<(String, Node)>),
}

/// The YAML text of `tree` encrypted to `recipients` (age public keys), with `lastmodified`
/// set to `now` (RFC 3339, UTC, seconds).
///
/// # Errors
/// [`Error::InvalidMetadata`] for an invalid recipient or key, or no recipient; never carries
/// plaintext.
pub fn encrypt_yaml(tree: &[(String, Node)], recipients: &[String], now: &str) -> Result<String> {
    if recipients.is_empty() {
        return Err(Error::InvalidMetadata(
            "no age recipient to encrypt to".into(),
        ));
    }
    let parsed: Vec<age::x25519::Recipient> = recipients
        .iter()
        .map(|r| {
            r.parse()
                .map_err(|_| Error::InvalidMetadata(format!("{r:?} is not an age recipient")))
        })
        .collect::<Result<_>>()?;
    let mut key = Zeroizing::new([0u8; 32]);
    getrandom::fill(key.as_mut())
        .map_err(|_| Error::InvalidMetadata("no randomness for the data key".into()))?;
    let mut hash = Sha512::new();
    let mut out = String::new();
    emit(tree, &key, &mut Vec::new(), 0, &mut hash, &mut out)?;
    let mac_hex: String = hash.finalize().iter().map(|b| format!("{b:02X}")).collect();
    let mac = seal(&key, now.as_bytes(), mac_hex.as_bytes(), "str")
        .map_err(|_| Error::InvalidMetadata("cannot encrypt the MAC".into()))?;
    out.push_str("sops:\n    age:\n");
    for (text, r) in recipients.iter().zip(&parsed) {
        let wrapped = wrap(&key, r)?;
        out.push_str(&format!("        - recipient: {text}\n          enc: |\n"));
        for line in wrapped.lines() {
            out.push_str(&format!("            {line}\n"));
        }
    }
    out.push_str(&format!(
        "    lastmodified: \"{now}\"\n    mac: {mac}\n    unencrypted_suffix: _unencrypted\n    version: 3.11.0\n"
    ));
    Ok(out)
}

fn emit(
    items: &[(String, Node)],
    key: &[u8; 32],
    path: &mut Vec<String>,
    depth: usize,
    hash: &mut Sha512,
    out: &mut String,
) -> Result<()> {
    let indent = "    ".repeat(depth);
    for (k, v) in items {
        if k.is_empty()
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(Error::InvalidMetadata(format!(
                "key {k:?} is not a plain YAML key"
            )));
        }
        path.push(k.clone());
        match v {
            Node::Map(children) => {
                out.push_str(&format!("{indent}{k}:\n"));
                emit(children, key, path, depth + 1, hash, out)?;
            }
            // sops leaves an empty string as it is (its cipher encrypts nothing for "").
            Node::Str(s) if s.is_empty() => out.push_str(&format!("{indent}{k}: \"\"\n")),
            Node::Str(s) => {
                hash.update(s.as_bytes());
                let aad: String = path.iter().map(|p| format!("{p}:")).collect();
                let enc = seal(key, aad.as_bytes(), s.as_bytes(), "str").map_err(|_| {
                    Error::InvalidMetadata(format!("cannot encrypt `{}`", path.join(".")))
                })?;
                out.push_str(&format!("{indent}{k}: {enc}\n"));
            }
        }
        path.pop();
    }
    Ok(())
}

/// The data key as an armored age file to one recipient.
fn wrap(key: &[u8; 32], r: &age::x25519::Recipient) -> Result<String> {
    let fail = |_| Error::InvalidMetadata("cannot wrap the data key to the recipient".into());
    let enc = age::Encryptor::with_recipients(std::iter::once(r as &dyn age::Recipient))
        .map_err(|_| Error::InvalidMetadata("cannot wrap the data key".into()))?;
    let mut armored = Vec::new();
    let writer =
        age::armor::ArmoredWriter::wrap_output(&mut armored, age::armor::Format::AsciiArmor)
            .map_err(fail)?;
    let mut w = enc.wrap_output(writer).map_err(fail)?;
    w.write_all(key).map_err(fail)?;
    w.finish().and_then(|a| a.finish()).map_err(fail)?;
    String::from_utf8(armored).map_err(|_| Error::InvalidMetadata("age armor is not UTF-8".into()))
}
