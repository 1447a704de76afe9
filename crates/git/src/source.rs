//! [`GitSource`]: poll the remote for the ref's commit, shallow-fetch it into a bare cache
//! repository, verify its signature, and write its tree (or sub-path) to a checkout directory.
//!
//! The cache repository keeps only `refs/vixen/source`; a force-push simply moves it. Old objects
//! are never read again, and the cache is recreated when it holds too many packs, which a fresh
//! depth-1 fetch makes cheap.

use std::cell::{Cell, RefCell};
use std::fs;
use std::path::{Path, PathBuf};

use git2::{
    AutotagOption, CertificateCheckStatus, Cred, CredentialType, Direction, ErrorCode,
    FetchOptions, Oid, RemoteCallbacks, RemoteRedirect, Repository,
};
use zeroize::Zeroizing;

use crate::config::{Auth, GitRef, Scheme, Validated};
use crate::signature::{self, VerifiedSignature};
use crate::{Error, GitSourceConfig, Result, checkout, known_hosts};

/// The local ref the fetched commit is stored under.
const SOURCE_REF: &str = "refs/vixen/source";
/// Recreate the cache repository when it holds more packs than this.
const MAX_PACKS: usize = 64;
/// A refspec no remote ref matches: a "download" with it connects and lists the refs (the
/// `info/refs` request) but wants nothing, so no `git-upload-pack` request follows.
const WANT_NOTHING: &str = "refs/vixen/poll-wants-nothing:refs/vixen/poll-wants-nothing";

/// A commit the remote ref points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revision {
    /// Commit id (40 hex digits).
    pub commit: String,
    /// The remote ref (`refs/heads/main`) or, for a pinned commit, the commit id.
    pub reference: String,
}

/// A commit checked out on disk.
#[derive(Clone, Debug)]
pub struct Checkout {
    /// Commit id (40 hex digits).
    pub commit: String,
    /// Directory holding the commit's tree, or its sub-path. Valid until the next `fetch` that
    /// returns another commit (then it is removed).
    pub path: PathBuf,
    /// The verified signature, when signature verification is on.
    pub signature: Option<VerifiedSignature>,
    /// Objects received by this fetch (0 when the commit was already in the cache).
    pub received_objects: usize,
    /// Bytes received by this fetch, as libgit2 counts them (it may report 0 over HTTP).
    pub received_bytes: usize,
}

/// A Git remote followed by the agent. Blocking; not `Sync` (wrap in a mutex or own it in one
/// task and call it from `spawn_blocking`).
pub struct GitSource {
    cfg: Validated,
    repo: Repository,
    last: Option<Checkout>,
}

impl std::fmt::Debug for GitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSource")
            .field("url", &self.cfg.url.redacted())
            .field("reference", &self.cfg.reference)
            .field("sub_path", &self.cfg.sub_path)
            .finish_non_exhaustive()
    }
}

impl GitSource {
    /// Validates the configuration and opens (or creates) the cache under `cache_dir`.
    ///
    /// # Errors
    /// Configuration errors, or [`Error::Io`]/[`Error::Git`] for the cache.
    pub fn new(config: &GitSourceConfig) -> Result<Self> {
        let cfg = config.validate()?;
        if matches!(cfg.url.scheme, crate::Scheme::Http) && !matches!(cfg.auth, Auth::None) {
            tracing::warn!(url = %cfg.url, "credentials are sent over plain http");
        }
        let repo = open_cache(&cfg.cache_dir, &cfg.url.redacted())?;
        Ok(Self {
            cfg,
            repo,
            last: None,
        })
    }

    /// The remote URL, redacted.
    pub fn url(&self) -> String {
        self.cfg.url.redacted()
    }

    /// The cheap check: asks the remote which commit the ref points at, downloading no objects
    /// (one `info/refs` request over HTTP, one `git-upload-pack` advertisement over SSH). For a
    /// pinned commit it returns the commit without contacting the remote.
    ///
    /// # Errors
    /// [`Error::RefNotFound`], [`Error::AuthFailed`], host key errors, [`Error::Git`].
    pub fn poll(&self) -> Result<Revision> {
        let reference = self.cfg.reference.remote_name();
        if let GitRef::Commit(c) = &self.cfg.reference {
            return Ok(Revision {
                commit: c.to_ascii_lowercase(),
                reference,
            });
        }
        let failure = RefCell::new(None);
        let mut remote = self
            .repo
            .remote_anonymous(&self.cfg.url.url)
            .map_err(|e| self.git_error("connect", &failure, e))?;
        let heads: Vec<(String, Oid)> = if let Some(auth) = self.preemptive_auth() {
            // libgit2's connect takes no custom headers (git2's `connect_auth` passes none), but
            // a download does: one that wants nothing is a connect plus the ref list.
            let mut opts = self.fetch_options(&failure, &auth);
            remote
                .download(&[WANT_NOTHING], Some(&mut opts))
                .map_err(|e| self.git_error("connect", &failure, e))?;
            let heads = remote
                .list()
                .map_err(|e| self.git_error("list refs", &failure, e))?
                .iter()
                .map(|h| (h.name().to_owned(), h.oid()))
                .collect();
            let _ = remote.disconnect();
            heads
        } else {
            let conn = remote
                .connect_auth(
                    Direction::Fetch,
                    Some(self.callbacks(&failure, false)),
                    None,
                )
                .map_err(|e| self.git_error("connect", &failure, e))?;
            conn.list()
                .map_err(|e| self.git_error("list refs", &failure, e))?
                .iter()
                .map(|h| (h.name().to_owned(), h.oid()))
                .collect()
        };
        let peeled = format!("{reference}^{{}}");
        let found = heads
            .iter()
            .find(|(name, _)| *name == peeled)
            .or_else(|| heads.iter().find(|(name, _)| *name == reference))
            .map(|(_, oid)| oid.to_string());
        let commit = found.ok_or_else(|| Error::RefNotFound {
            url: self.url(),
            reference: reference.clone(),
        })?;
        tracing::debug!(url = %self.cfg.url, %reference, %commit, "polled remote");
        Ok(Revision { commit, reference })
    }

    /// Polls, then shallow-fetches (depth 1) the ref's commit unless the cache already has it,
    /// verifies its signature when configured, and writes its tree (or the sub-path) to a fresh
    /// directory (reused when the commit is the one checked out last). Handles new commits and
    /// force-pushes alike: only the commit the ref points at matters.
    ///
    /// # Errors
    /// Everything [`GitSource::poll`] can return, plus [`Error::Unsigned`],
    /// [`Error::UntrustedSignature`], [`Error::SubPathNotFound`], [`Error::UnsafeEntry`].
    ///
    /// # Guarantees
    /// A commit that fails signature verification is never written to disk, and the previous
    /// checkout stays in place.
    pub fn fetch(&mut self) -> Result<Checkout> {
        self.recreate_cache_if_bloated()?;
        let (oid, received_objects, received_bytes) = self.fetch_commit()?;
        let commit_id = oid.to_string();
        let git = |source| Error::Git {
            op: "read commit",
            url: self.url(),
            source,
        };
        let commit = self.repo.find_commit(oid).map_err(git)?;
        let signature = match &self.cfg.signatures {
            Some(policy) => Some(self.verify(&commit, &policy.allowed_signers)?),
            None => None,
        };
        if let Some(last) = &self.last
            && last.commit == commit_id
            && last.path.is_dir()
        {
            return Ok(Checkout {
                signature,
                received_objects,
                received_bytes,
                ..last.clone()
            });
        }
        let mut tree = commit.tree().map_err(git)?;
        if let Some(sub) = &self.cfg.sub_path {
            let not_found = || Error::SubPathNotFound {
                commit: commit_id.clone(),
                path: sub.clone(),
            };
            let entry = tree.get_path(sub).map_err(|_| not_found())?;
            tree = self.repo.find_tree(entry.id()).map_err(|_| not_found())?;
        }
        let checkouts = self.cfg.cache_dir.join("checkouts");
        let tmp = checkouts.join(format!(".tmp-{commit_id}"));
        let dst = checkouts.join(&commit_id);
        remove_all(&tmp)?;
        fs::create_dir_all(&tmp).map_err(|source| Error::Io {
            path: tmp.clone(),
            source,
        })?;
        if let Err(e) = checkout::write_tree(&self.repo, &tree, &tmp, &commit_id) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        remove_all(&dst)?;
        fs::rename(&tmp, &dst).map_err(|source| Error::Io {
            path: dst.clone(),
            source,
        })?;
        self.remove_other_checkouts(&checkouts, &commit_id);
        tracing::info!(url = %self.cfg.url, commit = %commit_id, received_objects, "checked out");
        let out = Checkout {
            commit: commit_id,
            path: dst,
            signature,
            received_objects,
            received_bytes,
        };
        self.last = Some(out.clone());
        Ok(out)
    }

    fn fetch_commit(&self) -> Result<(Oid, usize, usize)> {
        let reference = self.cfg.reference.remote_name();
        // Ask first (no objects): when the commit is already in the cache there is nothing to
        // download, and a depth-1 fetch would otherwise send it again.
        let wanted = self.poll()?;
        let oid = Oid::from_str(&wanted.commit).map_err(|source| Error::Git {
            op: "parse commit",
            url: self.url(),
            source,
        })?;
        if self.repo.find_commit(oid).is_ok() {
            return Ok((oid, 0, 0));
        }
        // A stale ref must not be mistaken for the result of this fetch.
        if let Ok(mut r) = self.repo.find_reference(SOURCE_REF) {
            r.delete().map_err(|source| Error::Git {
                op: "delete ref",
                url: self.url(),
                source,
            })?;
        }
        let failure = RefCell::new(None);
        let mut remote = self
            .repo
            .remote_anonymous(&self.cfg.url.url)
            .map_err(|e| self.git_error("fetch", &failure, e))?;
        let auth = self.preemptive_auth();
        let mut opts = match &auth {
            Some(a) => self.fetch_options(&failure, a),
            None => {
                let mut o = FetchOptions::new();
                o.remote_callbacks(self.callbacks(&failure, false));
                o
            }
        };
        opts.depth(1)
            .download_tags(AutotagOption::None)
            .update_fetchhead(false);
        let refspec = format!("+{reference}:{SOURCE_REF}");
        remote
            .fetch(&[refspec.as_str()], Some(&mut opts), None)
            .map_err(|e| self.git_error("fetch", &failure, e))?;
        let stats = remote.stats();
        let (objects, bytes) = (stats.received_objects(), stats.received_bytes());
        let oid = self
            .repo
            .find_reference(SOURCE_REF)
            .and_then(|r| r.peel_to_commit())
            .map(|c| c.id())
            .map_err(|_| Error::RefNotFound {
                url: self.url(),
                reference,
            })?;
        tracing::debug!(url = %self.cfg.url, commit = %oid, objects, bytes, "fetched");
        Ok((oid, objects, bytes))
    }

    fn verify(
        &self,
        commit: &git2::Commit<'_>,
        allowed_signers: &Path,
    ) -> Result<VerifiedSignature> {
        let id = commit.id().to_string();
        let (sig, payload) = match self.repo.extract_signature(&commit.id(), None) {
            Ok(v) => v,
            Err(e) if e.code() == ErrorCode::NotFound => {
                return Err(Error::Unsigned { commit: id });
            }
            Err(source) => {
                return Err(Error::Git {
                    op: "extract signature",
                    url: self.url(),
                    source,
                });
            }
        };
        let v = signature::verify(
            allowed_signers,
            &id,
            commit.committer().when().seconds(),
            &sig,
            &payload,
        )?;
        tracing::info!(commit = %id, principal = %v.principal, key = %v.fingerprint, "signature verified");
        Ok(v)
    }

    /// The `Authorization` header for an HTTP(S) remote with basic or token credentials, sent
    /// on the first request. libgit2 itself sends credentials only after a 401 challenge
    /// (libgit2 `transports/httpclient.c` `apply_credentials`: no auth context until the server
    /// asked), which made every idle poll two requests.
    fn preemptive_auth(&self) -> Option<Zeroizing<String>> {
        if !matches!(self.cfg.url.scheme, Scheme::Https | Scheme::Http) {
            return None;
        }
        let (user, password) = match &self.cfg.auth {
            Auth::Basic { username, password } => (username.as_str(), password.expose()),
            Auth::Token(token) => ("x-access-token", token.expose()),
            _ => return None,
        };
        let pair = Zeroizing::new(format!("{user}:{password}"));
        Some(Zeroizing::new(format!(
            "Authorization: Basic {}",
            *base64(pair.as_bytes())
        )))
    }

    /// Fetch options that send `auth` on every request. Redirects are not followed: libgit2
    /// would send custom headers to the redirect's host too.
    fn fetch_options<'a>(
        &'a self,
        failure: &'a RefCell<Option<Error>>,
        auth: &str,
    ) -> FetchOptions<'a> {
        let mut opts = FetchOptions::new();
        opts.remote_callbacks(self.callbacks(failure, true))
            .custom_headers(&[auth])
            .follow_redirects(RemoteRedirect::None)
            .download_tags(AutotagOption::None);
        opts
    }

    /// Callbacks for credentials and host key checks; the precise failure lands in `failure`.
    /// With `sent_already`, the credentials went with the request: a challenge means they were
    /// refused, and sending them again would not help.
    fn callbacks<'a>(
        &'a self,
        failure: &'a RefCell<Option<Error>>,
        sent_already: bool,
    ) -> RemoteCallbacks<'a> {
        let mut cb = RemoteCallbacks::new();
        let attempts = Cell::new(0u32);
        let url = self.url();
        cb.credentials(move |_, user_from_url, allowed| {
            let fail = |reason: &'static str| {
                *failure.borrow_mut() = Some(Error::AuthFailed {
                    url: url.clone(),
                    reason,
                });
                Err(git2::Error::from_str("authentication failed"))
            };
            if allowed.contains(CredentialType::USERNAME) {
                return Cred::username(user_from_url.unwrap_or("git"));
            }
            attempts.set(attempts.get() + 1);
            if attempts.get() > 1 || sent_already {
                return fail("credentials rejected by the server");
            }
            match &self.cfg.auth {
                Auth::Basic { username, password }
                    if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) =>
                {
                    Cred::userpass_plaintext(username, password.expose())
                }
                Auth::Token(token) if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) => {
                    Cred::userpass_plaintext("x-access-token", token.expose())
                }
                Auth::SshKey {
                    private_key,
                    passphrase,
                    ..
                } if allowed.contains(CredentialType::SSH_KEY) => Cred::ssh_key(
                    user_from_url.unwrap_or("git"),
                    None,
                    private_key,
                    passphrase.as_ref().map(|p| p.expose()),
                ),
                Auth::None => fail("the server asks for credentials and none are configured"),
                _ => fail("the server does not accept the configured kind of credentials"),
            }
        });
        cb.certificate_check(move |cert, _host| {
            let Some(hostkey) = cert.as_hostkey() else {
                // TLS: keep libgit2's own verdict (system trust store, SSL_CERT_FILE).
                return Ok(CertificateCheckStatus::CertificatePassthrough);
            };
            let Auth::SshKey {
                known_hosts: file, ..
            } = &self.cfg.auth
            else {
                *failure.borrow_mut() =
                    Some(Error::InvalidConfig("SSH transport without known_hosts"));
                return Err(git2::Error::from_str("host key verification failed"));
            };
            let checked = match hostkey.hostkey() {
                Some(raw) => {
                    known_hosts::check_host_key(file, &self.cfg.url.host, self.cfg.url.port, raw)
                }
                None => Err(Error::KnownHosts {
                    path: file.clone(),
                    reason: "the transport did not expose the raw host key".into(),
                }),
            };
            match checked {
                Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
                Err(e) => {
                    *failure.borrow_mut() = Some(e);
                    Err(git2::Error::from_str("host key verification failed"))
                }
            }
        });
        cb
    }

    fn git_error(
        &self,
        op: &'static str,
        failure: &RefCell<Option<Error>>,
        source: git2::Error,
    ) -> Error {
        if let Some(e) = failure.borrow_mut().take() {
            return e;
        }
        if source.code() == ErrorCode::Auth {
            return Error::AuthFailed {
                url: self.url(),
                reason: "credentials rejected by the server",
            };
        }
        Error::Git {
            op,
            url: self.url(),
            source,
        }
    }

    fn recreate_cache_if_bloated(&mut self) -> Result<()> {
        let packs = self.repo.path().join("objects/pack");
        let count = fs::read_dir(&packs)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().is_some_and(|x| x == "pack"))
                    .count()
            })
            .unwrap_or(0);
        if count > MAX_PACKS {
            tracing::info!(packs = count, "recreating the Git cache");
            let path = self.repo.path().to_owned();
            remove_all(&path)?;
            self.repo = open_cache(&self.cfg.cache_dir, &self.url())?;
        }
        Ok(())
    }

    fn remove_other_checkouts(&self, checkouts: &Path, keep: &str) {
        let Ok(dir) = fs::read_dir(checkouts) else {
            return;
        };
        for entry in dir.flatten() {
            if entry.file_name() != keep
                && let Err(e) = fs::remove_dir_all(entry.path())
            {
                tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove old checkout");
            }
        }
    }
}

fn open_cache(cache_dir: &Path, url: &str) -> Result<Repository> {
    let path = cache_dir.join("repo.git");
    fs::create_dir_all(cache_dir).map_err(|source| Error::Io {
        path: cache_dir.to_owned(),
        source,
    })?;
    let git = |source| Error::Git {
        op: "open cache",
        url: url.to_owned(),
        source,
    };
    if path.join("HEAD").exists() {
        Repository::open_bare(&path).map_err(git)
    } else {
        Repository::init_bare(&path).map_err(git)
    }
}

/// Standard base64 with padding (RFC 4648), for the basic-auth header.
fn base64(input: &[u8]) -> Zeroizing<String> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Zeroizing::new(String::with_capacity(input.len().div_ceil(3) * 4));
    for c in input.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn remove_all(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
            path: path.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(*super::base64(plain.as_bytes()), encoded);
        }
    }
}
