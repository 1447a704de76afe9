//! SSH host key checking against a `known_hosts` file: the only way vixen trusts an SSH server.
//!
//! An unknown host, or a host whose key differs from the recorded one, is an error; there is no
//! "accept new" mode. Hashed host names (`|1|salt|hash`), wildcard patterns, negations,
//! `[host]:port` entries and `@revoked` markers are understood; `@cert-authority` lines are not
//! supported and ignored (so a host known only through a CA is reported as unknown).

use std::path::Path;

use hmac::{Hmac, Mac};
use sha1::Sha1;
use ssh_key::known_hosts::{Entry, HostPatterns, Marker};
use ssh_key::{HashAlg, PublicKey};

use crate::{Error, Result};

/// Checks the key a server presented (SSH wire encoding) for `host`:`port`.
///
/// # Errors
/// [`Error::KnownHosts`] when the file cannot be read or parsed, [`Error::HostKeyUnknown`],
/// [`Error::HostKeyChanged`] or [`Error::HostKeyRevoked`].
pub(crate) fn check_host_key(known_hosts: &Path, host: &str, port: u16, key: &[u8]) -> Result<()> {
    let text = std::fs::read_to_string(known_hosts).map_err(|e| Error::KnownHosts {
        path: known_hosts.to_owned(),
        reason: e.to_string(),
    })?;
    let presented = PublicKey::from_bytes(key).map_err(|e| Error::KnownHosts {
        path: known_hosts.to_owned(),
        reason: format!("server presented a key that cannot be decoded: {e}"),
    })?;
    let entries = parse(&text).map_err(|reason| Error::KnownHosts {
        path: known_hosts.to_owned(),
        reason,
    })?;
    check_entries(&entries, host, port, &presented)
}

fn parse(text: &str) -> std::result::Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let entry: Entry = line
            .parse()
            .map_err(|e| format!("line {}: cannot parse: {e}", i + 1))?;
        out.push(entry);
    }
    Ok(out)
}

fn check_entries(entries: &[Entry], host: &str, port: u16, presented: &PublicKey) -> Result<()> {
    let name = if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    };
    let fingerprint = presented.fingerprint(HashAlg::Sha256).to_string();
    let algorithm = presented.algorithm().as_str().to_owned();
    let mut same_type_recorded = false;
    let mut ok = false;
    for entry in entries
        .iter()
        .filter(|e| host_matches(e.host_patterns(), &name))
    {
        let same_key = entry.public_key().key_data() == presented.key_data();
        match entry.marker() {
            Some(Marker::Revoked) if same_key => {
                return Err(Error::HostKeyRevoked {
                    host: name,
                    fingerprint,
                });
            }
            Some(_) => {}
            None if same_key => ok = true,
            None => {
                same_type_recorded |= entry.public_key().algorithm() == presented.algorithm();
            }
        }
    }
    if ok {
        Ok(())
    } else if same_type_recorded {
        Err(Error::HostKeyChanged {
            host: name,
            algorithm,
            fingerprint,
        })
    } else {
        Err(Error::HostKeyUnknown {
            host: name,
            algorithm,
            fingerprint,
        })
    }
}

fn host_matches(patterns: &HostPatterns, name: &str) -> bool {
    match patterns {
        HostPatterns::HashedName { salt, hash } => {
            let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(salt) else {
                return false;
            };
            mac.update(name.as_bytes());
            mac.verify_slice(hash).is_ok()
        }
        HostPatterns::Patterns(list) => {
            let mut matched = false;
            for p in list {
                if let Some(neg) = p.strip_prefix('!') {
                    if glob(neg.as_bytes(), name.as_bytes()) {
                        return false;
                    }
                } else if glob(p.as_bytes(), name.as_bytes()) {
                    matched = true;
                }
            }
            matched
        }
    }
}

/// `*` and `?` wildcards, ASCII case-insensitive, as OpenSSH host patterns.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&pattern[1..], name) || (!name.is_empty() && glob(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => glob(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p.eq_ignore_ascii_case(n) => glob(&pattern[1..], &name[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGjJhgTRJAVPGDuTxKOJy6B3TrtO7p2GlSNLEDDhKjV3";
    const ED2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE8QmT816cr4us/F7u2OkPCzReoPkSd6Xlj3PU72rrih";

    fn entries(text: &str) -> Vec<Entry> {
        parse(text).unwrap()
    }

    #[test]
    fn plain_port_and_wildcards() {
        let key = PublicKey::from_openssh(ED).unwrap();
        let e = entries(&format!(
            "[127.0.0.1]:2222 {ED}\n*.example.com,!bad.example.com {ED}\n"
        ));
        assert!(check_entries(&e, "127.0.0.1", 2222, &key).is_ok());
        assert!(matches!(
            check_entries(&e, "127.0.0.1", 22, &key),
            Err(Error::HostKeyUnknown { .. })
        ));
        assert!(check_entries(&e, "git.example.com", 22, &key).is_ok());
        assert!(check_entries(&e, "bad.example.com", 22, &key).is_err());
    }

    #[test]
    fn changed_key_and_revoked() {
        let other = PublicKey::from_openssh(ED2).unwrap();
        let e = entries(&format!("h {ED}\n"));
        assert!(matches!(
            check_entries(&e, "h", 22, &other),
            Err(Error::HostKeyChanged { .. })
        ));
        let e = entries(&format!("h {ED2}\n@revoked * {ED2}\n"));
        assert!(matches!(
            check_entries(&e, "h", 22, &other),
            Err(Error::HostKeyRevoked { .. })
        ));
    }

    #[test]
    fn hashed_names() {
        // Hash of "[127.0.0.1]:2222" computed with HMAC-SHA1 and the salt below.
        let salt = [7u8; 20];
        let mut mac = Hmac::<Sha1>::new_from_slice(&salt).unwrap();
        mac.update(b"[127.0.0.1]:2222");
        let hash: [u8; 20] = mac.finalize().into_bytes().into();
        let p = HostPatterns::HashedName {
            salt: salt.to_vec(),
            hash,
        };
        assert!(host_matches(&p, "[127.0.0.1]:2222"));
        assert!(!host_matches(&p, "127.0.0.1"));
    }
}
