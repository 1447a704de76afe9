//! Age identities, found the way sops finds them, and unwrapping of the data key.
//!
//! Loading is in two steps, as in ripgrep's configuration: [`Keyring::from_str`] and
//! [`Keyring::from_file`] only parse what they are given; [`Keyring::from_env`] resolves
//! the environment (`SOPS_AGE_KEY`, `SOPS_AGE_KEY_FILE`, `SOPS_AGE_SSH_PRIVATE_KEY_FILE`,
//! then the default keys file) and gathers every identity it finds, like sops does.
//!
//! Supported identities: native X25519 (`AGE-SECRET-KEY-1…`) and unencrypted OpenSSH
//! ed25519/RSA private keys. `SOPS_AGE_KEY_CMD` and age plugins are not supported.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use age::armor::ArmoredReader;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// A set of age identities (private keys). Its `Debug` shows only how many it holds.
pub struct Keyring {
    identities: Vec<Box<dyn age::Identity + Send + Sync>>,
    /// The native X25519 identities as written (`AGE-SECRET-KEY-1…`), for handing on.
    native: Vec<Zeroizing<String>>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keyring({} identities)", self.identities.len())
    }
}

impl Keyring {
    /// An empty keyring.
    pub fn empty() -> Keyring {
        Keyring {
            identities: Vec::new(),
            native: Vec::new(),
        }
    }

    /// Number of identities held.
    pub fn len(&self) -> usize {
        self.identities.len()
    }

    /// True when no identity is held.
    pub fn is_empty(&self) -> bool {
        self.identities.is_empty()
    }

    /// Adds every identity of `other`.
    pub fn extend(&mut self, other: Keyring) {
        self.identities.extend(other.identities);
        self.native.extend(other.native);
    }

    /// The native X25519 identities as an age keys file (one per line), to hand to another
    /// tool that decrypts SOPS files (Flux's `sops-age` Secret); `None` when there is none
    /// (OpenSSH keys are not handed on).
    pub fn age_keys_file(&self) -> Option<Zeroizing<String>> {
        if self.native.is_empty() {
            return None;
        }
        let mut out = Zeroizing::new(String::new());
        for k in &self.native {
            out.push_str(k);
            out.push('\n');
        }
        Some(out)
    }

    /// Parses identities from text: an age keys file (one `AGE-SECRET-KEY-1…` per line,
    /// `#` comments and blank lines ignored) or one unencrypted OpenSSH private key.
    /// `origin` names the source in errors (a path or a variable name).
    ///
    /// # Errors
    /// [`Error::InvalidIdentity`] with the line of the first bad entry.
    pub fn parse(text: &str, origin: &str) -> Result<Keyring> {
        if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----")
            || text.contains("-----BEGIN RSA PRIVATE KEY-----")
        {
            return parse_ssh(text, origin);
        }
        let mut identities: Vec<Box<dyn age::Identity + Send + Sync>> = Vec::new();
        let mut native = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let identity =
                line.parse::<age::x25519::Identity>()
                    .map_err(|_| Error::InvalidIdentity {
                        origin: origin.to_string(),
                        line: n + 1,
                    })?;
            identities.push(Box::new(identity));
            native.push(Zeroizing::new(line.to_owned()));
        }
        Ok(Keyring { identities, native })
    }

    /// Reads identities from a file (age keys file or OpenSSH private key).
    ///
    /// # Errors
    /// [`Error::KeyFile`] if it cannot be read, [`Error::InvalidIdentity`] if it does not parse.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Keyring> {
        let path = path.as_ref();
        let text = read_secret_file(path)?;
        Keyring::parse(&text, &path.display().to_string())
    }

    /// Gathers identities like sops: `SOPS_AGE_KEY` (inline keys), `SOPS_AGE_KEY_FILE`,
    /// `SOPS_AGE_SSH_PRIVATE_KEY_FILE`, and the default keys file
    /// `$XDG_CONFIG_HOME/sops/age/keys.txt` (or `~/.config/sops/age/keys.txt`), which is
    /// skipped silently when absent.
    ///
    /// # Errors
    /// A named file that cannot be read or parsed; [`Error::NoIdentities`] if none is found.
    pub fn from_env() -> Result<Keyring> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let mut ring = Keyring::empty();
        if let Some(inline) = var("SOPS_AGE_KEY") {
            let inline = Zeroizing::new(inline.to_string_lossy().into_owned());
            ring.extend(Keyring::parse(&inline, "SOPS_AGE_KEY")?);
        }
        for name in ["SOPS_AGE_KEY_FILE", "SOPS_AGE_SSH_PRIVATE_KEY_FILE"] {
            if let Some(path) = var(name) {
                ring.extend(Keyring::from_file(PathBuf::from(path))?);
            }
        }
        let default = default_keys_file();
        if let Some(path) = default.as_ref().filter(|p| p.is_file()) {
            ring.extend(Keyring::from_file(path)?);
        }
        if ring.is_empty() {
            let default = default.map(|p| p.display().to_string()).unwrap_or_default();
            return Err(Error::NoIdentities { default });
        }
        Ok(ring)
    }

    /// Opens one armored age stanza (`enc` of an age master key) and returns the plaintext
    /// (the data key or a Shamir share), or `None` if no identity matches or it is invalid.
    pub(crate) fn unwrap(&self, armored: &str) -> Option<Zeroizing<Vec<u8>>> {
        let reader = ArmoredReader::new(armored.trim_start().as_bytes());
        let decryptor = age::Decryptor::new(reader).ok()?;
        let identities = self
            .identities
            .iter()
            .map(|i| i.as_ref() as &dyn age::Identity);
        let mut stream = decryptor.decrypt(identities).ok()?;
        let mut out = Zeroizing::new(Vec::with_capacity(64));
        stream.read_to_end(&mut out).ok()?;
        Some(out)
    }

    /// Decrypts a whole binary (or armored) age file with these identities, as `age -d` does;
    /// `None` when no identity opens it or it is damaged.
    pub fn decrypt_age(&self, cipher: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let reader = ArmoredReader::new(cipher);
        let decryptor = age::Decryptor::new(reader).ok()?;
        let identities = self
            .identities
            .iter()
            .map(|i| i.as_ref() as &dyn age::Identity);
        let mut stream = decryptor.decrypt(identities).ok()?;
        let mut out = Zeroizing::new(Vec::new());
        stream.read_to_end(&mut out).ok()?;
        Some(out)
    }
}

impl std::str::FromStr for Keyring {
    type Err = Error;

    /// Same as [`Keyring::parse`] with origin `"string"`.
    fn from_str(s: &str) -> Result<Keyring> {
        Keyring::parse(s, "string")
    }
}

/// Go's `os.UserConfigDir()/sops/age/keys.txt` on Unix.
fn default_keys_file() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".config"),
    };
    Some(base.join("sops").join("age").join("keys.txt"))
}

fn read_secret_file(path: &Path) -> Result<Zeroizing<String>> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| Error::KeyFile {
        path: path.to_path_buf(),
        source,
    })?);
    match std::str::from_utf8(&bytes) {
        Ok(text) => Ok(Zeroizing::new(text.to_string())),
        Err(_) => Err(Error::InvalidIdentity {
            origin: path.display().to_string(),
            line: 1,
        }),
    }
}

fn parse_ssh(text: &str, origin: &str) -> Result<Keyring> {
    let invalid = || Error::InvalidIdentity {
        origin: origin.to_string(),
        line: 1,
    };
    let identity = age::ssh::Identity::from_buffer(text.as_bytes(), Some(origin.to_string()))
        .map_err(|_| invalid())?;
    match identity {
        age::ssh::Identity::Unencrypted(_) => Ok(Keyring {
            identities: vec![Box::new(identity)],
            native: Vec::new(),
        }),
        // Passphrase-protected or unsupported (e.g. ECDSA) keys cannot be used unattended.
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_file_with_comments() {
        let key = age::x25519::Identity::generate();
        use age::secrecy::ExposeSecret;
        let text = format!(
            "# created: now\n# public key: x\n{}\n\n",
            key.to_string().expose_secret()
        );
        let ring = Keyring::parse(&text, "test").unwrap();
        assert_eq!(ring.len(), 1);
        assert_eq!(format!("{ring:?}"), "Keyring(1 identities)");
    }

    #[test]
    fn bad_line_reports_line_not_content() {
        let err = Keyring::parse("# c\nAGE-SECRET-KEY-1NOTAKEY\n", "keys.txt").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 2") && !msg.contains("NOTAKEY"), "{msg}");
    }
}
