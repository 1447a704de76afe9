//! Commit signature verification: SSH signatures (`gpgsig` header, SSHSIG namespace `git`) checked
//! against an allowed-signers file in git's `gpg.ssh.allowedSignersFile` format.
//!
//! ```text
//! commit --extract_signature--> (armored SSHSIG, signed bytes)
//!        SSHSIG.public_key ---lookup---> allowed signers (key, namespaces, valid-after/before)
//!        verify(namespace "git", signed bytes)
//! ```
//!
//! Like `git verify-commit`, the signer's principal is looked up by key and reported; it is not
//! compared with the committer's e-mail. `cert-authority` lines are not supported (ignored).
//! `valid-after`/`valid-before` are compared with the committer time, read as UTC.

use std::path::Path;

use ssh_key::{HashAlg, PublicKey, SshSig};

use crate::{Error, Result};

/// The namespace git signs commits in.
const NAMESPACE: &str = "git";

/// A commit whose signature was verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedSignature {
    /// The principal(s) of the allowed-signers line that matched, as written there.
    pub principal: String,
    /// The signing key's fingerprint (`SHA256:...`).
    pub fingerprint: String,
}

/// One usable line of an allowed-signers file.
#[derive(Debug)]
struct AllowedSigner {
    principals: String,
    key: PublicKey,
    namespaces: Option<Vec<String>>,
    valid_after: Option<i64>,
    valid_before: Option<i64>,
    cert_authority: bool,
}

/// Verifies `commit` (whose raw signature and signed payload are given) with the signers file.
///
/// # Errors
/// [`Error::Unsigned`] is raised by the caller; here [`Error::UntrustedSignature`] names the reason,
/// and [`Error::AllowedSigners`] reports an unreadable or malformed file.
pub(crate) fn verify(
    allowed_signers: &Path,
    commit: &str,
    commit_time: i64,
    signature: &[u8],
    payload: &[u8],
) -> Result<VerifiedSignature> {
    let untrusted = |reason: String| Error::UntrustedSignature {
        commit: commit.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(allowed_signers).map_err(|e| Error::AllowedSigners {
        path: allowed_signers.to_owned(),
        reason: e.to_string(),
    })?;
    let signers = parse_allowed_signers(&text).map_err(|reason| Error::AllowedSigners {
        path: allowed_signers.to_owned(),
        reason,
    })?;
    if signature.starts_with(b"-----BEGIN PGP") {
        return Err(untrusted(
            "OpenPGP signatures are not supported, only SSH signatures".into(),
        ));
    }
    let sig = SshSig::from_pem(signature)
        .map_err(|e| untrusted(format!("not a valid SSH signature: {e}")))?;
    if sig.namespace() != NAMESPACE {
        return Err(untrusted(format!(
            "signature namespace is {:?}, expected \"git\"",
            sig.namespace()
        )));
    }
    let key = PublicKey::from(sig.public_key().clone());
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    let candidates: Vec<&AllowedSigner> = signers
        .iter()
        .filter(|s| !s.cert_authority && s.key.key_data() == key.key_data())
        .collect();
    if candidates.is_empty() {
        return Err(untrusted(format!(
            "signing key {fingerprint} is not in the allowed signers file"
        )));
    }
    let signer = candidates
        .into_iter()
        .find(|s| {
            s.namespaces
                .as_ref()
                .is_none_or(|ns| ns.iter().any(|n| n == NAMESPACE))
                && s.valid_after.is_none_or(|t| commit_time >= t)
                && s.valid_before.is_none_or(|t| commit_time < t)
        })
        .ok_or_else(|| {
            untrusted(format!(
                "signing key {fingerprint} is allowed only for other namespaces or times"
            ))
        })?;
    key.verify(NAMESPACE, payload, &sig)
        .map_err(|e| untrusted(format!("signature by {fingerprint} does not verify: {e}")))?;
    Ok(VerifiedSignature {
        principal: signer.principals.clone(),
        fingerprint,
    })
}

fn parse_allowed_signers(text: &str) -> std::result::Result<Vec<AllowedSigner>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |what: String| format!("line {}: {what}", i + 1);
        let tokens = split_unquoted(line, |c| c.is_ascii_whitespace());
        if tokens.len() < 3 {
            return Err(err(
                "expected principals, optional options, key type and key".into(),
            ));
        }
        let key_at = if looks_like_key_type(&tokens[1]) {
            1
        } else {
            2
        };
        let (Some(kind), Some(blob)) = (tokens.get(key_at), tokens.get(key_at + 1)) else {
            return Err(err("missing public key".into()));
        };
        let key = PublicKey::from_openssh(&format!("{kind} {blob}"))
            .map_err(|e| err(format!("bad public key: {e}")))?;
        let mut signer = AllowedSigner {
            principals: unquote(&tokens[0]).to_owned(),
            key,
            namespaces: None,
            valid_after: None,
            valid_before: None,
            cert_authority: false,
        };
        if key_at == 2 {
            for opt in split_unquoted(&tokens[1], |c| c == ',') {
                let (name, value) = match opt.split_once('=') {
                    Some((n, v)) => (n.to_ascii_lowercase(), Some(unquote(v).to_owned())),
                    None => (opt.to_ascii_lowercase(), None),
                };
                match (name.as_str(), value) {
                    ("cert-authority", None) => signer.cert_authority = true,
                    ("namespaces", Some(v)) => {
                        signer.namespaces = Some(v.split(',').map(str::to_owned).collect());
                    }
                    ("valid-after", Some(v)) => {
                        signer.valid_after = Some(
                            parse_time(&v).ok_or_else(|| err(format!("bad valid-after {v:?}")))?,
                        );
                    }
                    ("valid-before", Some(v)) => {
                        signer.valid_before = Some(
                            parse_time(&v).ok_or_else(|| err(format!("bad valid-before {v:?}")))?,
                        );
                    }
                    (other, _) => return Err(err(format!("unsupported option {other:?}"))),
                }
            }
        }
        out.push(signer);
    }
    Ok(out)
}

fn looks_like_key_type(t: &str) -> bool {
    ["ssh-", "ecdsa-", "sk-"].iter().any(|p| t.starts_with(p))
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

/// Splits on `sep` outside double quotes; quotes are kept.
fn split_unquoted(s: &str, sep: impl Fn(char) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        if c == '"' {
            quoted = !quoted;
            cur.push(c);
        } else if !quoted && sep(c) {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `YYYYMMDD[HHMM[SS]][Z]` to Unix seconds (UTC).
fn parse_time(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z').unwrap_or(s);
    if !matches!(s.len(), 8 | 12 | 14) || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r).map_or(Some(0), |v| v.parse::<i64>().ok());
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(8..10)?, num(10..12)?, num(12..14)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGjJhgTRJAVPGDuTxKOJy6B3TrtO7p2GlSNLEDDhKjV3";

    #[test]
    fn parses_lines_with_and_without_options() {
        let text = format!(
            "# comment\nalice@example.com {KEY} laptop\n\"bob@x,carol@y\" namespaces=\"git,file\",valid-after=\"20240101\" {KEY}\n"
        );
        let s = parse_allowed_signers(&text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].principals, "alice@example.com");
        assert_eq!(s[1].principals, "bob@x,carol@y");
        assert_eq!(
            s[1].namespaces.as_deref(),
            Some(&["git".to_owned(), "file".to_owned()][..])
        );
        assert_eq!(s[1].valid_after, Some(1_704_067_200));
    }

    #[test]
    fn rejects_malformed_lines() {
        assert!(parse_allowed_signers("alice").is_err());
        assert!(parse_allowed_signers(&format!("a frobnicate=1 {KEY}")).is_err());
        assert!(parse_allowed_signers("a ssh-ed25519 AAAAnotbase64!").is_err());
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("19700101"), Some(0));
        assert_eq!(parse_time("20000301120000Z"), Some(951_912_000));
        assert_eq!(parse_time("2024130"), None);
        assert_eq!(parse_time("20241301"), None);
    }
}
