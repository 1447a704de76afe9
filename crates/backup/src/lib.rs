//! vixen-backup: etcd snapshots taken through Talos, checked, encrypted with age to the repo's
//! recipients, and stored with their metadata in S3-compatible storage or a local folder.
//!
//! ```text
//! EtcdSnapshot bytes ─check─► (size, etcd's trailing sha256) ─age─► <key>.db.age
//!                                                                  <key>.json (metadata)
//!        Store (object_store: AmazonS3 | LocalFileSystem) ─► put · list · get · prune
//! ```
//!
//! Nothing here talks to Talos: the caller takes the snapshot (the engine's `NodeApi`) and hands
//! the bytes over. No error message holds a credential or snapshot content.

mod config;
mod crypt;
mod error;
mod retention;
pub mod schedule;
mod snapshot;
mod store;

pub use config::{
    Allowed, Resolved, Taken, TargetConfig, resolve, s3_credentials_from_secret,
    s3_credentials_from_yaml,
};
pub use crypt::{decrypt, encrypt, parse_recipients};
pub use error::BackupError;
pub use retention::to_prune;
pub use snapshot::{CheckedSnapshot, HASH_LEN, check};
pub use store::{S3Credentials, SnapshotMeta, Store, Stored};
