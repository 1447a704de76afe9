//! Where snapshots live: an [`object_store`] store (S3-compatible, or a local folder), one
//! encrypted object per snapshot and a JSON sidecar with its metadata beside it:
//!
//! ```text
//! <prefix>/<cluster>/20261202T031500.123Z-cp-1.db.age   age(binary) of the etcd snapshot
//! <prefix>/<cluster>/20261202T031500.123Z-cp-1.json     SnapshotMeta (no secret in it)
//! ```
//!
//! The sidecar is written after the data object, so a listed snapshot always has its data;
//! a data object without sidecar (an upload cut in the middle) is ignored by `list`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::config::TargetConfig;
use crate::error::BackupError;

/// An S3 access key. `Debug` hides the secret parts.
#[derive(Clone, Default)]
pub struct S3Credentials {
    /// Access key ID.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: Zeroizing<String>,
    /// Session token, for temporary credentials.
    pub session_token: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// What is recorded with every snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotMeta {
    /// Cluster name.
    pub cluster: String,
    /// Hostname of the member the snapshot was taken from.
    pub member: String,
    /// Its etcd member ID (hex).
    pub member_id: String,
    /// etcd version the member reported.
    pub etcd_version: String,
    /// The member's raft index when the snapshot was taken.
    pub raft_index: u64,
    /// The Git revision vixen was reconciling, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Why it was taken (`scheduled`, `before control-plane removal of cp-3`, `manual`).
    pub reason: String,
    /// When (UTC).
    pub taken_at: DateTime<Utc>,
    /// Snapshot size in bytes (etcd's hash included), before encryption.
    pub size: u64,
    /// etcd's sha256 of the database (the snapshot's last 32 bytes), hex.
    pub sha256: String,
    /// Size of the encrypted object.
    pub encrypted_size: u64,
    /// The age recipients it is encrypted to (public keys).
    pub recipients: Vec<String>,
}

/// A stored snapshot: its object key and metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stored {
    /// Key of the encrypted object (what `--from` takes).
    pub key: String,
    /// Its metadata.
    pub meta: SnapshotMeta,
}

/// A snapshot store.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// `<prefix>/<cluster>` (no leading or trailing `/`).
    base: String,
    what: String,
}

const DATA_SUFFIX: &str = ".db.age";
const META_SUFFIX: &str = ".json";

fn store_err(op: &'static str, key: &str, e: &object_store::Error) -> BackupError {
    BackupError::Store {
        op,
        key: key.to_string(),
        reason: e.to_string(),
    }
}

impl Store {
    /// A store for `cluster` on `target`.
    ///
    /// # Errors
    /// [`BackupError::Config`] when the store cannot be built (a bad endpoint, a folder that
    /// cannot be created).
    pub fn open(target: &TargetConfig, cluster: &str) -> Result<Self, BackupError> {
        let (inner, prefix, what): (Arc<dyn ObjectStore>, &str, String) = match target {
            TargetConfig::Local { path } => {
                std::fs::create_dir_all(path).map_err(|e| {
                    BackupError::Config(format!("{}: cannot create: {}", path.display(), e.kind()))
                })?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(path)
                    .map_err(|e| BackupError::Config(format!("{}: {e}", path.display())))?;
                (Arc::new(fs), "", format!("folder {}", path.display()))
            }
            TargetConfig::S3 {
                endpoint,
                bucket,
                prefix,
                region,
                path_style,
                credentials,
                retry_timeout,
            } => {
                // reqwest is built without a default provider: the workspace uses ring.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let mut b = object_store::aws::AmazonS3Builder::new()
                    .with_endpoint(endpoint)
                    .with_bucket_name(bucket)
                    .with_region(region)
                    .with_virtual_hosted_style_request(!path_style)
                    .with_retry(object_store::RetryConfig {
                        max_retries: 3,
                        retry_timeout: *retry_timeout,
                        ..Default::default()
                    })
                    .with_client_options(
                        // Client options replace the builder's: plain HTTP is allowed here.
                        object_store::ClientOptions::new()
                            .with_allow_http(endpoint.starts_with("http://"))
                            .with_connect_timeout(Duration::from_secs(5))
                            .with_timeout(Duration::from_secs(120)),
                    );
                match credentials {
                    Some(c) => {
                        b = b
                            .with_access_key_id(&c.access_key_id)
                            .with_secret_access_key(c.secret_access_key.as_str());
                        if let Some(t) = &c.session_token {
                            b = b.with_token(t.as_str());
                        }
                    }
                    None => b = b.with_skip_signature(true),
                }
                let s3 = b
                    .build()
                    .map_err(|e| BackupError::Config(format!("s3 {endpoint}: {e}")))?;
                (
                    Arc::new(s3),
                    prefix.as_str(),
                    format!("s3 {endpoint} bucket {bucket}"),
                )
            }
        };
        let prefix = prefix.trim_matches('/');
        let base = if prefix.is_empty() {
            cluster.to_string()
        } else {
            format!("{prefix}/{cluster}")
        };
        Ok(Self { inner, base, what })
    }

    /// Where it stores, in words (no credential).
    pub fn describe(&self) -> &str {
        &self.what
    }

    /// Uploads an already checked and encrypted snapshot with its metadata.
    ///
    /// # Errors
    /// [`BackupError::Store`] when either object cannot be written.
    pub async fn put(&self, encrypted: Vec<u8>, meta: SnapshotMeta) -> Result<Stored, BackupError> {
        let stamp = meta.taken_at.format("%Y%m%dT%H%M%S%.3fZ");
        let stem = format!("{}/{stamp}-{}", self.base, safe(&meta.member));
        let key = format!("{stem}{DATA_SUFFIX}");
        let meta_key = format!("{stem}{META_SUFFIX}");
        self.inner
            .put(&ObjPath::from(key.as_str()), PutPayload::from(encrypted))
            .await
            .map_err(|e| store_err("put", &key, &e))?;
        let json = serde_json::to_vec_pretty(&meta).expect("metadata serializes");
        self.inner
            .put(&ObjPath::from(meta_key.as_str()), PutPayload::from(json))
            .await
            .map_err(|e| store_err("put", &meta_key, &e))?;
        Ok(Stored { key, meta })
    }

    /// Every snapshot of the cluster, newest first.
    ///
    /// # Errors
    /// [`BackupError::Store`] when listing or reading a sidecar fails, [`BackupError::Metadata`]
    /// when a sidecar does not parse.
    pub async fn list(&self) -> Result<Vec<Stored>, BackupError> {
        let prefix = ObjPath::from(self.base.as_str());
        let objects: Vec<_> = self
            .inner
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| store_err("list", &self.base, &e))?;
        let names: std::collections::BTreeSet<String> =
            objects.iter().map(|o| o.location.to_string()).collect();
        let mut out = Vec::new();
        for meta_key in names.iter().filter(|n| n.ends_with(META_SUFFIX)) {
            let stem = meta_key.trim_end_matches(META_SUFFIX);
            let key = format!("{stem}{DATA_SUFFIX}");
            if !names.contains(&key) {
                continue;
            }
            let bytes = self
                .inner
                .get(&ObjPath::from(meta_key.as_str()))
                .await
                .map_err(|e| store_err("get", meta_key, &e))?
                .bytes()
                .await
                .map_err(|e| store_err("get", meta_key, &e))?;
            let meta: SnapshotMeta =
                serde_json::from_slice(&bytes).map_err(|e| BackupError::Metadata {
                    key: meta_key.clone(),
                    reason: e.to_string(),
                })?;
            out.push(Stored { key, meta });
        }
        out.sort_by(|a, b| {
            b.meta
                .taken_at
                .cmp(&a.meta.taken_at)
                .then_with(|| b.key.cmp(&a.key))
        });
        Ok(out)
    }

    /// The snapshot `which` (a key as listed, or `latest`) and its encrypted bytes.
    ///
    /// # Errors
    /// [`BackupError::NotFound`], [`BackupError::Store`].
    pub async fn get(&self, which: &str) -> Result<(Stored, Vec<u8>), BackupError> {
        let all = self.list().await?;
        let found = if which == "latest" {
            all.into_iter().next()
        } else {
            all.into_iter().find(|s| s.key == which)
        }
        .ok_or_else(|| BackupError::NotFound(which.to_string()))?;
        let bytes = self
            .inner
            .get(&ObjPath::from(found.key.as_str()))
            .await
            .map_err(|e| store_err("get", &found.key, &e))?
            .bytes()
            .await
            .map_err(|e| store_err("get", &found.key, &e))?;
        Ok((found, bytes.to_vec()))
    }

    /// Deletes what retention no longer keeps; returns the deleted keys.
    ///
    /// # Errors
    /// [`BackupError::Store`].
    pub async fn prune(
        &self,
        count: u32,
        max_age: Option<Duration>,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, BackupError> {
        let all = self.list().await?;
        let pairs: Vec<(String, DateTime<Utc>)> = all
            .iter()
            .map(|s| (s.key.clone(), s.meta.taken_at))
            .collect();
        let doomed = crate::retention::to_prune(&pairs, count, max_age, now);
        for key in &doomed {
            // The sidecar first: a snapshot without one is no longer listed.
            let meta_key = format!("{}{META_SUFFIX}", key.trim_end_matches(DATA_SUFFIX));
            for k in [meta_key.as_str(), key.as_str()] {
                match self.inner.delete(&ObjPath::from(k)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(store_err("delete", k, &e)),
                }
            }
        }
        Ok(doomed)
    }
}

/// A member name as a key component (hostnames are DNS labels; anything else becomes `_`).
fn safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
