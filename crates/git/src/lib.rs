//! Git source for the vixen agent: a cheap poll of the remote ref, a shallow fetch, an optional SSH
//! commit signature check, and a checkout (of the repository or a sub-path) that the caller reads.
//!
//! ```text
//! GitSourceConfig --validate--> GitSource
//!   poll()  : connect + list refs (no objects)          -> Revision
//!   fetch() : shallow fetch (depth 1) -> verify signature? -> write tree -> Checkout { path }
//!             cache_dir/repo.git (bare)    cache_dir/checkouts/<commit>/
//! ```
//!
//! All operations block; call them from `tokio::task::spawn_blocking`. URLs in errors and logs
//! never carry a password or a query string, and secrets are [`Secret`]s that cannot print.

mod checkout;
mod config;
mod known_hosts;
mod signature;
mod source;

use std::path::PathBuf;

pub use config::{
    Auth, GitRef, GitSourceConfig, RepoUrl, Scheme, Secret, SignaturePolicy, redact_url,
};
pub use signature::VerifiedSignature;
pub use source::{Checkout, GitSource, Revision};

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong with a Git source. No variant carries a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL is not one of the supported forms.
    #[error("invalid repository URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, redacted.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The branch, tag or commit is malformed.
    #[error("invalid ref {reference}: {reason}")]
    InvalidRef {
        /// The ref as configured.
        reference: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The configuration is inconsistent.
    #[error("invalid Git source configuration: {0}")]
    InvalidConfig(&'static str),
    /// The `known_hosts` file cannot be read or parsed.
    #[error("known_hosts file {path}: {reason}")]
    KnownHosts {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The SSH server is not in `known_hosts` (with a key of the type it offered).
    #[error("SSH host {host} is not in known_hosts: it offered {algorithm} key {fingerprint}")]
    HostKeyUnknown {
        /// `host` or `[host]:port`.
        host: String,
        /// Key algorithm the server offered.
        algorithm: String,
        /// Its SHA-256 fingerprint.
        fingerprint: String,
    },
    /// The SSH server's key differs from the one recorded: possible man-in-the-middle.
    #[error(
        "SSH host key of {host} CHANGED: it offered {algorithm} key {fingerprint}, which known_hosts does not list"
    )]
    HostKeyChanged {
        /// `host` or `[host]:port`.
        host: String,
        /// Key algorithm the server offered.
        algorithm: String,
        /// Its SHA-256 fingerprint.
        fingerprint: String,
    },
    /// The SSH server's key is marked `@revoked`.
    #[error("SSH host key {fingerprint} of {host} is revoked in known_hosts")]
    HostKeyRevoked {
        /// `host` or `[host]:port`.
        host: String,
        /// Its SHA-256 fingerprint.
        fingerprint: String,
    },
    /// The server rejected the credentials (or wants some and none are configured).
    #[error("authentication to {url} failed: {reason}")]
    AuthFailed {
        /// The URL, redacted.
        url: String,
        /// Why.
        reason: &'static str,
    },
    /// The branch or tag does not exist on the remote.
    #[error("{reference} not found on {url}")]
    RefNotFound {
        /// The URL, redacted.
        url: String,
        /// Full ref name or commit id.
        reference: String,
    },
    /// The configured sub-path is not a directory in the commit.
    #[error("sub-path {path} is not a directory in commit {commit}")]
    SubPathNotFound {
        /// Commit id.
        commit: String,
        /// The sub-path.
        path: PathBuf,
    },
    /// Signature verification is on and the head commit is not signed.
    #[error("commit {commit} is not signed; refusing to apply it")]
    Unsigned {
        /// Commit id.
        commit: String,
    },
    /// Signature verification is on and the head commit's signature is not trusted.
    #[error("commit {commit} has an untrusted signature: {reason}; refusing to apply it")]
    UntrustedSignature {
        /// Commit id.
        commit: String,
        /// Why (unknown key, wrong namespace, bad signature, ...).
        reason: String,
    },
    /// The allowed-signers file cannot be read or parsed.
    #[error("allowed signers file {path}: {reason}")]
    AllowedSigners {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The commit has a symlink pointing outside the checkout, or a bad file name.
    #[error("commit {commit} has an unsafe entry {path}: {reason}")]
    UnsafeEntry {
        /// Commit id.
        commit: String,
        /// Path in the repository.
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// A libgit2 operation failed.
    #[error("git {op} on {url} failed: {source}")]
    Git {
        /// Operation (`connect`, `fetch`, ...).
        op: &'static str,
        /// The URL, redacted.
        url: String,
        /// The libgit2 error.
        #[source]
        source: git2::Error,
    },
    /// A local file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A fixed label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            Self::InvalidUrl { .. } | Self::InvalidRef { .. } | Self::InvalidConfig(_) => "config",
            Self::KnownHosts { .. } | Self::AllowedSigners { .. } => "trust_file",
            Self::HostKeyUnknown { .. }
            | Self::HostKeyChanged { .. }
            | Self::HostKeyRevoked { .. } => "host_key",
            Self::AuthFailed { .. } => "auth",
            Self::RefNotFound { .. } | Self::SubPathNotFound { .. } => "not_found",
            Self::Unsigned { .. } | Self::UntrustedSignature { .. } => "signature",
            Self::UnsafeEntry { .. } => "unsafe_content",
            Self::Git { .. } => "git",
            Self::Io { .. } => "io",
        }
    }
}
