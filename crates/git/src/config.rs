//! What the user configures for a Git source (URL, ref, sub-path, credentials, cache), validated
//! before any I/O.
//!
//! Validation happens once, in [`GitSourceConfig::validate`]: a URL with a password in it is split
//! into a URL without userinfo plus basic-auth credentials, so that the URL can appear in errors
//! and logs without leaking the secret.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use zeroize::Zeroizing;

use crate::{Error, Result};

/// A secret string (token, password, passphrase) that never prints.
#[derive(Clone, Default)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// The secret itself; only for handing it to the transport.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

/// Which revision of the remote to follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GitRef {
    /// A branch name (`main`), looked up as `refs/heads/<name>`.
    Branch(String),
    /// A tag name (`v1.2.0`), looked up as `refs/tags/<name>`; annotated tags are peeled.
    Tag(String),
    /// A pinned commit id (40 hex digits). The server must allow fetching it by id when no ref
    /// points at it (`uploadpack.allowReachableSHA1InWant`, which the big forges allow).
    Commit(String),
}

impl GitRef {
    /// The full ref name on the remote, or the commit id for [`GitRef::Commit`].
    pub fn remote_name(&self) -> String {
        match self {
            Self::Branch(b) => format!("refs/heads/{b}"),
            Self::Tag(t) => format!("refs/tags/{t}"),
            Self::Commit(c) => c.clone(),
        }
    }
}

/// How to authenticate to the remote.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum Auth {
    /// Anonymous (public HTTPS repositories).
    #[default]
    None,
    /// HTTP basic authentication.
    Basic {
        /// User name.
        username: String,
        /// Password or personal access token.
        password: Secret,
    },
    /// An HTTPS access token, sent as basic auth with user `x-access-token` (GitHub; Gitea and
    /// Forgejo accept any user name; GitLab deploy/project tokens want [`Auth::Basic`] with
    /// their user name).
    Token(Secret),
    /// An SSH deploy key. The server's host key is always checked against `known_hosts`.
    SshKey {
        /// Private key file (OpenSSH or PEM format); read by the transport on each connect.
        private_key: PathBuf,
        /// Passphrase of the private key, if any.
        passphrase: Option<Secret>,
        /// A `known_hosts` file (OpenSSH format, hashed names allowed).
        known_hosts: PathBuf,
    },
}

/// Optional commit signature verification.
#[derive(Clone, Debug)]
pub struct SignaturePolicy {
    /// An allowed-signers file in git's `gpg.ssh.allowedSignersFile` format; re-read on every
    /// verification so an updated Secret or ConfigMap takes effect at once.
    pub allowed_signers: PathBuf,
}

/// Everything a [`crate::GitSource`] needs.
#[derive(Clone, Debug)]
pub struct GitSourceConfig {
    /// `https://`, `http://`, `ssh://` or scp-like `user@host:path`.
    pub url: String,
    /// The revision to follow.
    pub reference: GitRef,
    /// Only this directory of the repository is checked out (relative, no `..`).
    pub sub_path: Option<PathBuf>,
    /// Credentials.
    pub auth: Auth,
    /// Directory owned by the source: a bare cache repository and the checkouts.
    pub cache_dir: PathBuf,
    /// When set, the head commit must carry a trusted SSH signature.
    pub signatures: Option<SignaturePolicy>,
}

/// The transport a URL selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `https://`
    Https,
    /// `http://` (credentials travel in clear; only for in-cluster or test servers)
    Http,
    /// `ssh://` or scp-like.
    Ssh,
}

/// A parsed remote URL without any password in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoUrl {
    /// What libgit2 is given (userinfo password removed).
    pub(crate) url: String,
    /// Transport.
    pub scheme: Scheme,
    /// Host name or address (without brackets).
    pub host: String,
    /// Port (defaults: 443, 80, 22).
    pub port: u16,
    /// User name from the URL, if any.
    pub user: Option<String>,
}

impl RepoUrl {
    /// Parses a remote URL. A password in the userinfo is returned separately.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for anything that is not one of the supported forms.
    pub fn parse(input: &str) -> Result<(Self, Option<Secret>)> {
        let bad = |reason: &'static str| Error::InvalidUrl {
            url: redact_url(input),
            reason,
        };
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains whitespace or control characters"));
        }
        let (scheme, rest, scp) = if let Some(r) = input.strip_prefix("https://") {
            (Scheme::Https, r, false)
        } else if let Some(r) = input.strip_prefix("http://") {
            (Scheme::Http, r, false)
        } else if let Some(r) = input.strip_prefix("ssh://") {
            (Scheme::Ssh, r, false)
        } else if input.contains("://") {
            return Err(bad("unsupported scheme (use https://, http:// or ssh://)"));
        } else {
            (Scheme::Ssh, input, true)
        };
        let (authority, path) = if scp {
            let colon = rest
                .find(':')
                .ok_or_else(|| bad("not a URL nor user@host:path"))?;
            if rest[..colon].contains('/') {
                return Err(bad("local paths are not supported"));
            }
            (&rest[..colon], &rest[colon + 1..])
        } else {
            let slash = rest.find('/').unwrap_or(rest.len());
            (&rest[..slash], &rest[slash..])
        };
        if path.trim_matches('/').is_empty() {
            return Err(bad("no repository path"));
        }
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(ui) => match ui.split_once(':') {
                Some((u, p)) => (Some(u.to_owned()), Some(Secret::new(p))),
                None => (Some(ui.to_owned()), None),
            },
            None => (None, None),
        };
        if password.is_some() && scheme == Scheme::Ssh {
            return Err(bad(
                "a password in an SSH URL is not supported; use a deploy key",
            ));
        }
        let default_port = match scheme {
            Scheme::Https => 443,
            Scheme::Http => 80,
            Scheme::Ssh => 22,
        };
        let (host, port) = split_host_port(hostport, scp).ok_or_else(|| bad("bad host or port"))?;
        let port = port.unwrap_or(default_port);
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let url = if scp {
            input.to_owned()
        } else {
            let prefix = match scheme {
                Scheme::Https => "https://",
                Scheme::Http => "http://",
                Scheme::Ssh => "ssh://",
            };
            let user_part = match (&user, scheme) {
                (Some(u), Scheme::Ssh) => format!("{u}@"),
                _ => String::new(),
            };
            format!("{prefix}{user_part}{hostport}{path}")
        };
        Ok((
            Self {
                url,
                scheme,
                host,
                port,
                user,
            },
            password,
        ))
    }

    /// The URL as it may appear in logs and errors (no password, no query string).
    pub fn redacted(&self) -> String {
        redact_url(&self.url)
    }
}

impl fmt::Display for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

fn split_host_port(hostport: &str, scp: bool) -> Option<(String, Option<u16>)> {
    if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_owned(), port));
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) if !scp => Some((h.to_owned(), Some(p.parse().ok()?))),
        _ => Some((hostport.to_owned(), None)),
    }
}

/// Removes the password of a URL's userinfo and its query string, for errors and logs.
pub fn redact_url(url: &str) -> String {
    let mut out = url.split(['?', '#']).next().unwrap_or("").to_owned();
    if let Some(scheme_end) = out.find("://") {
        let auth_start = scheme_end + 3;
        let auth_end = out[auth_start..]
            .find('/')
            .map_or(out.len(), |i| auth_start + i);
        if let Some(at) = out[auth_start..auth_end].rfind('@') {
            let userinfo = &out[auth_start..auth_start + at];
            let user = userinfo.split(':').next().unwrap_or("");
            let shown = if userinfo.contains(':') {
                format!("{user}:<redacted>")
            } else {
                user.to_owned()
            };
            out.replace_range(auth_start..auth_start + at, &shown);
        }
    }
    out
}

/// A configuration after validation: what [`crate::GitSource`] runs with.
#[derive(Clone, Debug)]
pub(crate) struct Validated {
    pub url: RepoUrl,
    pub reference: GitRef,
    pub sub_path: Option<PathBuf>,
    pub auth: Auth,
    pub cache_dir: PathBuf,
    pub signatures: Option<SignaturePolicy>,
}

impl GitSourceConfig {
    /// Checks what the user typed, without touching the network or the disk.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`], [`Error::InvalidRef`] or [`Error::InvalidConfig`].
    pub(crate) fn validate(&self) -> Result<Validated> {
        let (url, password) = RepoUrl::parse(&self.url)?;
        let auth = match (password, &self.auth) {
            (Some(p), Auth::None) => Auth::Basic {
                username: url.user.clone().unwrap_or_default(),
                password: p,
            },
            (Some(_), _) => {
                return Err(Error::InvalidConfig(
                    "the URL carries a password and credentials are configured too",
                ));
            }
            (None, a) => a.clone(),
        };
        match (&auth, url.scheme) {
            (Auth::SshKey { .. }, Scheme::Ssh) => {}
            (_, Scheme::Ssh) => {
                return Err(Error::InvalidConfig(
                    "an SSH URL needs SSH credentials (deploy key and known_hosts)",
                ));
            }
            (Auth::SshKey { .. }, _) => {
                return Err(Error::InvalidConfig("SSH credentials need an SSH URL"));
            }
            _ => {}
        }
        validate_ref(&self.reference)?;
        let sub_path = match &self.sub_path {
            Some(p) => Some(validate_sub_path(p)?),
            None => None,
        };
        Ok(Validated {
            url,
            reference: self.reference.clone(),
            sub_path,
            auth,
            cache_dir: self.cache_dir.clone(),
            signatures: self.signatures.clone(),
        })
    }
}

fn validate_ref(r: &GitRef) -> Result<()> {
    let bad = |reason: &'static str| Error::InvalidRef {
        reference: format!("{r:?}"),
        reason,
    };
    match r {
        GitRef::Commit(c) => {
            if c.len() != 40 || !c.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("a pinned commit must be 40 hex digits"));
            }
        }
        GitRef::Branch(n) | GitRef::Tag(n) => {
            let ok = !n.is_empty()
                && !n.starts_with(['-', '/'])
                && !n.ends_with(['/', '.'])
                && !n.contains("..")
                && !n.contains("@{")
                && !n.ends_with(".lock")
                && !n.chars().any(|c| c.is_control() || " ~^:?*[\\".contains(c));
            if !ok {
                return Err(bad("not a valid ref name"));
            }
        }
    }
    Ok(())
}

fn validate_sub_path(p: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            _ => {
                return Err(Error::InvalidConfig(
                    "sub_path must be relative and stay inside the repository",
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_password_is_split_off_and_redacted() {
        let (u, p) = RepoUrl::parse("https://bob:s3cret@example.com/org/repo.git?x=1").unwrap();
        assert_eq!(u.url, "https://example.com/org/repo.git?x=1");
        assert_eq!(p.unwrap().expose(), "s3cret");
        assert_eq!(u.port, 443);
        assert!(!u.redacted().contains("x=1"));
        assert_eq!(
            redact_url("https://bob:s3cret@h/r"),
            "https://bob:<redacted>@h/r"
        );
    }

    #[test]
    fn ssh_forms() {
        let (u, _) = RepoUrl::parse("ssh://git@127.0.0.1:2222/srv/repo.git").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.user.as_deref()),
            ("127.0.0.1", 2222, Some("git"))
        );
        let (u, _) = RepoUrl::parse("git@github.com:org/repo.git").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.scheme),
            ("github.com", 22, Scheme::Ssh)
        );
        assert_eq!(u.url, "git@github.com:org/repo.git");
        let (u, _) = RepoUrl::parse("ssh://git@[::1]:2222/r").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 2222));
    }

    #[test]
    fn rejects_bad_urls() {
        for bad in [
            "ftp://h/r",
            "/local/path",
            "https://h",
            "https://h:99999/r",
            "a b:c",
        ] {
            assert!(RepoUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refs_and_sub_paths() {
        assert!(validate_ref(&GitRef::Branch("main".into())).is_ok());
        assert!(validate_ref(&GitRef::Branch("a..b".into())).is_err());
        assert!(validate_ref(&GitRef::Commit("abc".into())).is_err());
        assert!(validate_sub_path(Path::new("../x")).is_err());
        assert!(validate_sub_path(Path::new("/x")).is_err());
        assert_eq!(
            validate_sub_path(Path::new("./a/b")).unwrap(),
            Path::new("a/b")
        );
    }

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(format!("{:?}", Secret::new("tok")), "Secret(<redacted>)");
    }
}
