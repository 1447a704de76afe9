//! age encryption of snapshots to X25519 recipients (the `age` crate, the format `age -d`
//! reads), and decryption with an identity for a restore.

use std::io::Write;

use zeroize::Zeroizing;

use crate::error::BackupError;

/// Parses `age1...` recipients.
///
/// # Errors
/// [`BackupError::NoRecipients`] for an empty list, [`BackupError::BadRecipient`] naming the
/// first one that does not parse (a public key: not a secret).
pub fn parse_recipients(list: &[String]) -> Result<Vec<age::x25519::Recipient>, BackupError> {
    if list.is_empty() {
        return Err(BackupError::NoRecipients);
    }
    list.iter()
        .map(|r| {
            r.parse::<age::x25519::Recipient>()
                .map_err(|_| BackupError::BadRecipient(r.clone()))
        })
        .collect()
}

/// Encrypts `plain` to every recipient (binary age format).
///
/// # Errors
/// [`BackupError::NoRecipients`], [`BackupError::Age`].
pub fn encrypt(
    plain: &[u8],
    recipients: &[age::x25519::Recipient],
) -> Result<Vec<u8>, BackupError> {
    if recipients.is_empty() {
        return Err(BackupError::NoRecipients);
    }
    let enc = age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
        .map_err(|e| BackupError::Age(e.to_string()))?;
    let mut out = Vec::with_capacity(plain.len() + 512);
    let mut w = enc
        .wrap_output(&mut out)
        .map_err(|e| BackupError::Age(e.to_string()))?;
    w.write_all(plain)
        .map_err(|e| BackupError::Age(e.to_string()))?;
    w.finish().map_err(|e| BackupError::Age(e.to_string()))?;
    Ok(out)
}

/// Decrypts a snapshot with the age identities of `keys` (the keys that decrypt the repo's
/// SOPS files).
///
/// # Errors
/// [`BackupError::Age`] when no identity opens it or the file is damaged.
pub fn decrypt(
    cipher: &[u8],
    keys: &vixen_sops::Keyring,
) -> Result<Zeroizing<Vec<u8>>, BackupError> {
    keys.decrypt_age(cipher).ok_or_else(|| {
        BackupError::Age("no age identity given opens this snapshot (or it is damaged)".into())
    })
}

#[cfg(test)]
mod tests {
    use age::secrecy::ExposeSecret as _;

    use super::*;

    #[test]
    fn round_trip_and_wrong_key() {
        let id = age::x25519::Identity::generate();
        let other = age::x25519::Identity::generate();
        let r = parse_recipients(&[id.to_public().to_string()]).unwrap();
        let c = encrypt(b"etcd data", &r).unwrap();
        assert!(!c.windows(9).any(|w| w == b"etcd data"));
        let mine: vixen_sops::Keyring = id.to_string().expose_secret().parse().unwrap();
        let theirs: vixen_sops::Keyring = other.to_string().expose_secret().parse().unwrap();
        assert_eq!(decrypt(&c, &mine).unwrap().as_slice(), b"etcd data");
        assert!(decrypt(&c, &theirs).is_err());
        assert!(matches!(
            parse_recipients(&["age1nope".into()]),
            Err(BackupError::BadRecipient(_))
        ));
        assert!(matches!(
            parse_recipients(&[]),
            Err(BackupError::NoRecipients)
        ));
    }
}
