//! Where the repo comes from: a Git remote (vixen-git, blocking, run on the blocking pool) or a
//! local folder (tests, rehearsals). Credentials are read from files, so a rotated Secret takes
//! effect on the next [`Source::reload`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use vixen_git::{Auth, GitRef, GitSource, GitSourceConfig, Secret, SignaturePolicy};

/// How to reach a Git remote; secrets are file paths, read at (re)load time.
#[derive(Clone, Debug)]
pub struct GitOptions {
    /// Remote URL (no credentials in it).
    pub url: String,
    /// Branch, tag or commit to follow.
    pub reference: GitRef,
    /// Sub-path of the repository holding the cluster repo.
    pub sub_path: Option<PathBuf>,
    /// Cache directory (a writable volume).
    pub cache_dir: PathBuf,
    /// HTTPS token file.
    pub token_file: Option<PathBuf>,
    /// HTTPS basic-auth user (with `password_file`).
    pub username: Option<String>,
    /// HTTPS basic-auth password file.
    pub password_file: Option<PathBuf>,
    /// SSH deploy key file.
    pub ssh_key_file: Option<PathBuf>,
    /// SSH known_hosts file.
    pub known_hosts: Option<PathBuf>,
    /// Allowed-signers file: when set, only SSH-signed commits from these keys are applied.
    pub allowed_signers: Option<PathBuf>,
}

impl GitOptions {
    /// The files whose change calls for a reload.
    pub fn secret_files(&self) -> Vec<PathBuf> {
        [
            &self.token_file,
            &self.password_file,
            &self.ssh_key_file,
            &self.known_hosts,
            &self.allowed_signers,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
    }

    fn read_secret(path: &Path) -> anyhow::Result<Secret> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Secret::new(text.trim().to_owned()))
    }

    /// The vixen-git configuration, with secrets read now.
    ///
    /// # Errors
    /// When a credentials file cannot be read, or the options are contradictory.
    pub fn config(&self) -> anyhow::Result<GitSourceConfig> {
        let auth = match (&self.token_file, &self.password_file, &self.ssh_key_file) {
            // An optional Secret not created (a public repo): fetch anonymously; the file is
            // watched, so creating the Secret later brings the token in.
            (Some(t), None, None) if matches!(t.try_exists(), Ok(false)) => {
                tracing::info!(file = %t.display(), "no Git token (Secret vixen-git not created?): fetching anonymously");
                Auth::None
            }
            (Some(t), None, None) => Auth::Token(Self::read_secret(t)?),
            (None, Some(p), None) => Auth::Basic {
                username: self.username.clone().unwrap_or_else(|| "git".into()),
                password: Self::read_secret(p)?,
            },
            (None, None, Some(k)) => Auth::SshKey {
                private_key: k.clone(),
                passphrase: None,
                known_hosts: self.known_hosts.clone().context(
                    "an SSH deploy key needs --git-known-hosts (host keys are always checked)",
                )?,
            },
            (None, None, None) => Auth::None,
            _ => anyhow::bail!(
                "give at most one of --git-token-file, --git-password-file, --git-ssh-key-file"
            ),
        };
        Ok(GitSourceConfig {
            url: self.url.clone(),
            reference: self.reference.clone(),
            sub_path: self.sub_path.clone(),
            auth,
            cache_dir: self.cache_dir.clone(),
            signatures: self
                .allowed_signers
                .clone()
                .map(|allowed_signers| SignaturePolicy { allowed_signers }),
        })
    }
}

/// A checked-out revision.
#[derive(Clone, Debug)]
pub struct Fetched {
    /// The commit (40 hex digits) for a Git source; `None` for a local folder.
    pub commit: Option<String>,
    /// A short revision for logs and the status object.
    pub revision: String,
    /// The folder holding the cluster repo.
    pub path: PathBuf,
}

/// The repo's origin.
#[derive(Clone)]
pub enum Source {
    /// A local folder, read as it is.
    Local(PathBuf),
    /// A Git remote.
    Git {
        /// Options (re-read on reload).
        options: Box<GitOptions>,
        /// The source; `GitSource` is blocking and not `Sync`.
        source: Arc<Mutex<GitSource>>,
    },
}

/// Errors of a fetch, with a fixed category and whether the commit itself is at fault.
#[derive(Debug)]
pub struct FetchError {
    /// Fixed category for metrics.
    pub category: &'static str,
    /// True when the commit cannot be applied (unsigned, untrusted): a `failure` status.
    pub commit_at_fault: bool,
    /// What happened (no secret: vixen-git redacts URLs).
    pub message: String,
}

impl From<vixen_git::Error> for FetchError {
    fn from(e: vixen_git::Error) -> Self {
        let category = e.category();
        Self {
            category,
            commit_at_fault: matches!(category, "signature" | "unsafe_content" | "not_found"),
            message: e.to_string(),
        }
    }
}

impl Source {
    /// A Git source from `options` (reads its credentials now).
    ///
    /// # Errors
    /// Unreadable credentials, invalid configuration, or an unusable cache directory.
    pub fn git(options: GitOptions) -> anyhow::Result<Self> {
        let source = GitSource::new(&options.config()?)?;
        Ok(Self::Git {
            options: Box::new(options),
            source: Arc::new(Mutex::new(source)),
        })
    }

    /// Re-reads credentials (after their files changed).
    ///
    /// # Errors
    /// As [`Source::git`]; the old source stays in use then.
    pub fn reload(&mut self) -> anyhow::Result<()> {
        if let Self::Git { options, source } = self {
            let fresh = GitSource::new(&options.config()?)?;
            *source.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
        }
        Ok(())
    }

    /// The cheap check: the commit the remote ref points at (no object transfer), or a digest
    /// of the folder's file names, sizes and times for a local source.
    ///
    /// # Errors
    /// [`FetchError`].
    pub async fn poll(&self) -> Result<String, FetchError> {
        match self {
            Self::Local(path) => {
                let path = path.clone();
                Ok(tokio::task::spawn_blocking(move || local_digest(&path))
                    .await
                    .unwrap_or_default())
            }
            Self::Git { source, .. } => {
                let source = source.clone();
                tokio::task::spawn_blocking(move || {
                    source.lock().unwrap_or_else(|e| e.into_inner()).poll()
                })
                .await
                .map_err(|e| FetchError {
                    category: "internal",
                    commit_at_fault: false,
                    message: e.to_string(),
                })?
                .map(|r| r.commit)
                .map_err(FetchError::from)
            }
        }
    }

    /// Fetches and checks out the head.
    ///
    /// # Errors
    /// [`FetchError`]; an unsigned or untrusted head is never checked out.
    pub async fn fetch(&self) -> Result<Fetched, FetchError> {
        match self {
            Self::Local(path) => Ok(Fetched {
                commit: None,
                revision: format!("local:{}", self.poll().await?),
                path: path.clone(),
            }),
            Self::Git { source, .. } => {
                let source = source.clone();
                let co = tokio::task::spawn_blocking(move || {
                    source.lock().unwrap_or_else(|e| e.into_inner()).fetch()
                })
                .await
                .map_err(|e| FetchError {
                    category: "internal",
                    commit_at_fault: false,
                    message: e.to_string(),
                })??;
                Ok(Fetched {
                    revision: co.commit.clone(),
                    commit: Some(co.commit),
                    path: co.path,
                })
            }
        }
    }
}

/// A digest of the names, sizes and modification times under `root` (no contents read).
fn local_digest(root: &Path) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut stack = vec![root.to_path_buf()];
    let mut entries = Vec::new();
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(p),
                Ok(m) => entries.push((p, m.len(), m.modified().ok())),
                Err(_) => {}
            }
        }
    }
    entries.sort();
    entries.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// True when `repo` names a remote rather than a folder.
pub fn is_remote(repo: &str) -> bool {
    repo.contains("://") || (repo.contains('@') && repo.contains(':') && !Path::new(repo).exists())
}
