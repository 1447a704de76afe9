//! From `backup:` in cluster.yaml to a usable store: the target with its credentials
//! (decrypted from the repo's SOPS file, or handed over from a Secret), the recipients (listed,
//! or those of the secrets bundle), the retention, and [`Resolved::save`], the whole path of
//! one snapshot.

use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use vixen_model::Repo;
use vixen_model::backup::{BackupSpec, BeforeRisky};
use zeroize::Zeroizing;

use crate::error::BackupError;
use crate::store::{S3Credentials, SnapshotMeta, Store, Stored};

/// A target with everything needed to open it.
#[derive(Debug, Clone)]
pub enum TargetConfig {
    /// S3-compatible storage.
    S3 {
        /// Endpoint URL.
        endpoint: String,
        /// Bucket.
        bucket: String,
        /// Key prefix.
        prefix: String,
        /// Region.
        region: String,
        /// Path-style requests.
        path_style: bool,
        /// Access key (`None`: unsigned requests).
        credentials: Option<S3Credentials>,
        /// How long a failing request is retried before the error is returned.
        retry_timeout: Duration,
    },
    /// A folder.
    Local {
        /// Absolute path.
        path: PathBuf,
    },
}

/// A `backup:` block ready to use.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The spec as written.
    pub spec: BackupSpec,
    /// Cluster name.
    pub cluster: String,
    /// The target.
    pub target: TargetConfig,
    /// age recipients.
    pub recipients: Vec<String>,
    /// Retention age limit.
    pub max_age: Option<Duration>,
}

/// Reads `accessKeyId`, `secretAccessKey` and `sessionToken` from decrypted YAML.
///
/// # Errors
/// [`BackupError::Config`] naming the missing key (never a value).
pub fn s3_credentials_from_yaml(text: &str) -> Result<S3Credentials, BackupError> {
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)
        .map_err(|_| BackupError::Config("the S3 credentials file is not YAML".into()))?;
    let get = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let id = get("accessKeyId")
        .ok_or_else(|| BackupError::Config("the S3 credentials have no `accessKeyId`".into()))?;
    let secret = get("secretAccessKey").ok_or_else(|| {
        BackupError::Config("the S3 credentials have no `secretAccessKey`".into())
    })?;
    Ok(S3Credentials {
        access_key_id: id,
        secret_access_key: Zeroizing::new(secret),
        session_token: get("sessionToken").map(Zeroizing::new),
    })
}

/// Resolves the repo's `backup:` (None when there is none). `keys` decrypt a `sopsFile`;
/// `secret` holds the credentials of a `secret:` reference, read by the caller.
///
/// # Errors
/// [`BackupError::Config`] when credentials or recipients cannot be had.
pub fn resolve(
    repo: &Repo,
    keys: Option<&vixen_sops::Keyring>,
    secret: Option<S3Credentials>,
) -> Result<Option<Resolved>, BackupError> {
    let Some(spec) = repo.cluster.value.backup.clone() else {
        return Ok(None);
    };
    let recipients = if spec.recipients.is_empty() {
        let bundle = repo
            .sandbox()
            .read_bytes(&repo.cluster.value.secrets.file)
            .map_err(|r| BackupError::Config(format!("secrets file {r}")))?;
        vixen_sops::recipients(&bundle, vixen_sops::Format::Yaml).map_err(|_| {
            BackupError::Config(
                "the secrets bundle names no age recipient; list them under backup.recipients"
                    .into(),
            )
        })?
    } else {
        spec.recipients.clone()
    };
    crate::crypt::parse_recipients(&recipients)?;
    let target = match (&spec.target.s3, &spec.target.local) {
        (Some(s3), None) => {
            let credentials = match &s3.credentials {
                None => None,
                Some(c) => match (&c.sops_file, &c.secret) {
                    (Some(file), None) => {
                        let keys = keys.ok_or_else(|| {
                            BackupError::Config(format!(
                                "{file}: an age key is needed to decrypt the S3 credentials"
                            ))
                        })?;
                        let bytes = repo
                            .sandbox()
                            .read_bytes(file)
                            .map_err(|r| BackupError::Config(format!("credentials file {r}")))?;
                        let plain = vixen_sops::decrypt(&bytes, vixen_sops::Format::Yaml, keys)
                            .map_err(|e| BackupError::Config(format!("{file}: {e}")))?;
                        let text = std::str::from_utf8(plain.as_bytes()).map_err(|_| {
                            BackupError::Config(format!("{file}: not UTF-8 once decrypted"))
                        })?;
                        Some(s3_credentials_from_yaml(text)?)
                    }
                    (None, Some(name)) => Some(secret.ok_or_else(|| {
                        BackupError::Config(format!(
                            "the S3 credentials are in Secret {name}, which only the agent in \
                             Kubernetes reads"
                        ))
                    })?),
                    _ => {
                        return Err(BackupError::Config(
                            "credentials need exactly one of sopsFile and secret".into(),
                        ));
                    }
                },
            };
            TargetConfig::S3 {
                endpoint: s3.endpoint.clone(),
                bucket: s3.bucket.clone(),
                prefix: s3.prefix.clone(),
                region: s3.region.clone(),
                path_style: s3.path_style,
                credentials,
                retry_timeout: Duration::from_secs(30),
            }
        }
        (None, Some(l)) => TargetConfig::Local {
            path: PathBuf::from(&l.path),
        },
        _ => {
            return Err(BackupError::Config(
                "the target needs exactly one of s3 and local".into(),
            ));
        }
    };
    let max_age = spec
        .retention
        .max_age
        .as_deref()
        .and_then(vixen_model::validate::parse_duration);
    Ok(Some(Resolved {
        cluster: repo.cluster.value.name.clone(),
        spec,
        target,
        recipients,
        max_age,
    }))
}

/// What the caller knows about a snapshot it took.
#[derive(Debug, Clone, Default)]
pub struct Taken {
    /// Member hostname.
    pub member: String,
    /// Member ID.
    pub member_id: u64,
    /// etcd version.
    pub etcd_version: String,
    /// Raft index.
    pub raft_index: u64,
    /// Git revision.
    pub revision: Option<String>,
    /// Why.
    pub reason: String,
}

impl Resolved {
    /// What a failed snapshot before a risky step does.
    pub fn before_risky(&self) -> BeforeRisky {
        self.spec.before_risky
    }

    /// Opens the store.
    ///
    /// # Errors
    /// [`BackupError::Config`].
    pub fn store(&self) -> Result<Store, BackupError> {
        Store::open(&self.target, &self.cluster)
    }

    /// Checks, encrypts and uploads `snapshot`, then applies retention. Returns the stored
    /// snapshot and the keys retention deleted.
    ///
    /// # Errors
    /// The first failure: check, encryption, upload (retention failures too: a store that
    /// cannot delete will soon be full).
    pub async fn save(
        &self,
        snapshot: &[u8],
        taken: Taken,
    ) -> Result<(Stored, Vec<String>), BackupError> {
        let checked = crate::snapshot::check(snapshot)?;
        let recipients = crate::crypt::parse_recipients(&self.recipients)?;
        let encrypted = crate::crypt::encrypt(snapshot, &recipients)?;
        let meta = SnapshotMeta {
            cluster: self.cluster.clone(),
            member: taken.member,
            member_id: format!("{:x}", taken.member_id),
            etcd_version: taken.etcd_version,
            raft_index: taken.raft_index,
            revision: taken.revision,
            reason: taken.reason,
            taken_at: Utc::now(),
            size: checked.size,
            sha256: checked.sha256,
            encrypted_size: encrypted.len() as u64,
            recipients: self.recipients.clone(),
        };
        let store = self.store()?;
        let stored = store.put(encrypted, meta).await?;
        let pruned = store
            .prune(self.spec.retention.count, self.max_age, Utc::now())
            .await?;
        Ok((stored, pruned))
    }
}
