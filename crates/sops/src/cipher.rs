//! The `ENC[AES256_GCM,...]` value format: parsing and AES-256-GCM decryption.
//!
//! Every encrypted leaf, comment and the MAC use the same envelope. The nonce is 32 bytes
//! (taken from the length of `iv`), the 16-byte tag is stored apart, and the additional
//! data is the value's path (`a:b:`) or, for the MAC, the `lastmodified` timestamp.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::aead::consts::U32;
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, KeyInit, Nonce, Tag};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

/// AES-256-GCM with the 32-byte nonce sops uses.
type SopsGcm = AesGcm<Aes256, U32>;

/// The parts of an `ENC[...]` value.
pub(crate) struct Envelope {
    data: Vec<u8>,
    iv: Vec<u8>,
    tag: Vec<u8>,
    /// The declared plaintext type (`str`, `int`, `float`, `bool`, `bytes`, `time`, `comment`).
    pub(crate) kind: String,
}

/// Why an envelope could not be used. Carries no data from the value itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CipherError {
    /// Not of the form `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]`, or bad base64.
    Malformed,
    /// Authentication failed: wrong key, wrong path or modified ciphertext.
    Auth,
}

/// True if the text looks like an encrypted value (used to tell sops files apart).
pub(crate) fn looks_encrypted(s: &str) -> bool {
    s.starts_with("ENC[AES256_GCM,")
}

impl Envelope {
    /// Parses the envelope, following sops' regular expression
    /// `^ENC\[AES256_GCM,data:(.+),iv:(.+),tag:(.+),type:(.+)\]` (greedy groups).
    pub(crate) fn parse(s: &str) -> Result<Envelope, CipherError> {
        let body = s
            .strip_prefix("ENC[AES256_GCM,data:")
            .ok_or(CipherError::Malformed)?;
        let end = body.rfind(']').ok_or(CipherError::Malformed)?;
        let body = &body[..end];
        let (rest, kind) = body.rsplit_once(",type:").ok_or(CipherError::Malformed)?;
        let (rest, tag) = rest.rsplit_once(",tag:").ok_or(CipherError::Malformed)?;
        let (data, iv) = rest.rsplit_once(",iv:").ok_or(CipherError::Malformed)?;
        if data.is_empty() || iv.is_empty() || tag.is_empty() || kind.is_empty() {
            return Err(CipherError::Malformed);
        }
        let decode = |part: &str| STANDARD.decode(part).map_err(|_| CipherError::Malformed);
        let envelope = Envelope {
            data: decode(data)?,
            iv: decode(iv)?,
            tag: decode(tag)?,
            kind: kind.to_string(),
        };
        if envelope.iv.len() != 32 || envelope.tag.len() != 16 {
            return Err(CipherError::Malformed);
        }
        Ok(envelope)
    }

    /// Decrypts with the data key, authenticating `aad`.
    pub(crate) fn open(
        &self,
        key: &[u8; 32],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CipherError> {
        let cipher = SopsGcm::new_from_slice(key).map_err(|_| CipherError::Auth)?;
        let mut buf = Zeroizing::new(self.data.clone());
        cipher
            .decrypt_in_place_detached(
                Nonce::<U32>::from_slice(&self.iv),
                aad,
                &mut buf,
                Tag::from_slice(&self.tag),
            )
            .map_err(|_| CipherError::Auth)?;
        Ok(buf)
    }
}

/// Encrypts `plain` into an `ENC[AES256_GCM,...,type:<kind>]` value with a fresh random
/// 32-byte nonce, authenticating `aad` (sops' `Cipher.Encrypt`).
pub(crate) fn seal(
    key: &[u8; 32],
    aad: &[u8],
    plain: &[u8],
    kind: &str,
) -> Result<String, CipherError> {
    let cipher = SopsGcm::new_from_slice(key).map_err(|_| CipherError::Auth)?;
    let mut iv = [0u8; 32];
    getrandom::fill(&mut iv).map_err(|_| CipherError::Auth)?;
    let mut buf = Zeroizing::new(plain.to_vec());
    let tag = cipher
        .encrypt_in_place_detached(Nonce::<U32>::from_slice(&iv), aad, &mut buf)
        .map_err(|_| CipherError::Auth)?;
    Ok(format!(
        "ENC[AES256_GCM,data:{},iv:{},tag:{},type:{kind}]",
        STANDARD.encode(buf.as_slice()),
        STANDARD.encode(iv),
        STANDARD.encode(tag)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_garbage() {
        for bad in [
            "",
            "ENC[",
            "ENC[AES256_GCM,data:,iv:,tag:,type:]",
            "ENC[AES256_GCM,data:AA==]",
        ] {
            assert!(Envelope::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parse_rejects_short_iv() {
        let s = "ENC[AES256_GCM,data:AA==,iv:AA==,tag:AAAAAAAAAAAAAAAAAAAAAA==,type:str]";
        assert_eq!(Envelope::parse(s).err(), Some(CipherError::Malformed));
    }
}
