//! Typed errors of vixen-backup. Messages name objects, sizes and reasons, never a credential
//! and never snapshot content.

/// What went wrong with a snapshot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The snapshot is empty or too small to be a bbolt database.
    #[error("the snapshot is {0} bytes: too small to be an etcd database")]
    TooSmall(usize),
    /// The snapshot does not end with etcd's sha256 of its content.
    #[error("the snapshot has no etcd hash: its size ({0} bytes) is not a bbolt database plus 32")]
    NoHash(usize),
    /// The trailing sha256 does not match the content (truncated or damaged on the way).
    #[error("the snapshot's sha256 does not match its content (truncated or damaged)")]
    HashMismatch,
    /// The content is not a bbolt database (bad magic in its meta page).
    #[error("the snapshot is not a bbolt database (no bbolt magic)")]
    NotBolt,
    /// No recipient to encrypt to.
    #[error("no age recipient to encrypt the snapshot to")]
    NoRecipients,
    /// A recipient does not parse.
    #[error("`{0}` is not an age recipient")]
    BadRecipient(String),
    /// age failed.
    #[error("age: {0}")]
    Age(String),
    /// The configuration cannot be used (named field, reason).
    #[error("backup config: {0}")]
    Config(String),
    /// The object store refused or failed (the operation and object, and the store's reason).
    #[error("{op} {key}: {reason}")]
    Store {
        /// put, get, list, delete.
        op: &'static str,
        /// Object key.
        key: String,
        /// What the store said (object_store's message; it holds no credential).
        reason: String,
    },
    /// A metadata sidecar does not parse.
    #[error("{key}: metadata does not parse: {reason}")]
    Metadata {
        /// Object key.
        key: String,
        /// Why.
        reason: String,
    },
    /// No snapshot matches.
    #[error("no snapshot {0}")]
    NotFound(String),
}
