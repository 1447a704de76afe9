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

/// What the operator, not the repo, decides about backups: the repo is untrusted, so a
/// `local:` folder it names is written only when it lies inside a folder allowed here.
#[derive(Debug, Clone, Default)]
pub struct Allowed {
    /// Folders a `local:` target may be in (`--backup-dir`; the lab folder with `--lab`).
    pub local_roots: Vec<PathBuf>,
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
    /// The Secret holding the S3 credentials, while they have not been handed over
    /// ([`Resolved::with_secret`]); nothing is stored until then.
    pub pending_secret: Option<String>,
}

/// Reads `accessKeyId`, `secretAccessKey` and `sessionToken` from decrypted YAML.
///
/// # Errors
/// [`BackupError::Config`] naming the missing key (never a value).
pub fn s3_credentials_from_yaml(text: &str) -> Result<S3Credentials, BackupError> {
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)
        .map_err(|_| BackupError::Config("the S3 credentials file is not YAML".into()))?;
    s3_credentials_from("the S3 credentials", |k| {
        v.get(k).and_then(|x| x.as_str()).map(str::to_string)
    })
}

/// The same keys from a Kubernetes Secret's `data` (already base64-decoded by the caller).
///
/// # Errors
/// [`BackupError::Config`] naming the Secret and the missing key (never a value).
pub fn s3_credentials_from_secret(
    name: &str,
    data: &std::collections::BTreeMap<String, Vec<u8>>,
) -> Result<S3Credentials, BackupError> {
    s3_credentials_from(&format!("Secret {name}"), |k| {
        data.get(k)
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
    })
}

fn s3_credentials_from(
    what: &str,
    get: impl Fn(&str) -> Option<String>,
) -> Result<S3Credentials, BackupError> {
    let missing = |k: &str| BackupError::Config(format!("{what} have no `{k}`"));
    let id = get("accessKeyId").ok_or_else(|| missing("accessKeyId"))?;
    let secret = get("secretAccessKey").ok_or_else(|| missing("secretAccessKey"))?;
    Ok(S3Credentials {
        access_key_id: id,
        secret_access_key: Zeroizing::new(secret),
        session_token: get("sessionToken").map(Zeroizing::new),
    })
}

/// Resolves the repo's `backup:` (None when there is none). `keys` decrypt a `sopsFile`; the
/// credentials of a `secret:` reference are read by the caller (the agent in Kubernetes) and
/// handed over with [`Resolved::with_secret`]; `allowed` says where a `local:` folder may be.
///
/// # Errors
/// [`BackupError::Config`] when credentials or recipients cannot be had, or the folder is not
/// allowed.
pub fn resolve(
    repo: &Repo,
    keys: Option<&vixen_sops::Keyring>,
    allowed: &Allowed,
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
    let mut pending_secret = None;
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
                    (None, Some(name)) => {
                        pending_secret = Some(name.clone());
                        None
                    }
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
            path: allowed_folder(&l.path, &allowed.local_roots)?,
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
        pending_secret,
    }))
}

/// `path` when it is absolute, plain (no `.` or `..`) and inside one of `roots`, symlinks
/// followed as far as the path exists (a link in the repo's folder cannot lead out).
fn allowed_folder(path: &str, roots: &[PathBuf]) -> Result<PathBuf, BackupError> {
    use std::path::Component;
    let p = PathBuf::from(path);
    let plain = p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !plain {
        return Err(BackupError::Config(format!(
            "backup.target.local.path `{path}` must be an absolute path without `.` or `..`"
        )));
    }
    let real = real_path(&p);
    let inside = roots.iter().any(|r| {
        let root = r.canonicalize().unwrap_or_else(|_| r.clone());
        real.starts_with(&root)
    });
    if !inside {
        let hint = match roots.first() {
            Some(r) => format!("the folders allowed are under {}", r.display()),
            None => "no folder is allowed".to_string(),
        };
        return Err(BackupError::Config(format!(
            "backup.target.local.path `{path}` is not in a folder this vixen may write ({hint}); \
             fix: run vixen with `--backup-dir <folder>` naming it or a parent"
        )));
    }
    Ok(p)
}

/// `p` with its deepest existing ancestor resolved (symlinks followed) and the rest appended.
fn real_path(p: &std::path::Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut cur = p.to_path_buf();
    loop {
        if let Ok(real) = cur.canonicalize() {
            return rest.iter().rev().fold(real, |acc, c| acc.join(c));
        }
        match (cur.file_name().map(|n| n.to_owned()), cur.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                cur = parent.to_path_buf();
            }
            _ => return p.to_path_buf(),
        }
    }
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

    /// Hands over the credentials of the `secret:` reference.
    pub fn with_secret(mut self, credentials: S3Credentials) -> Self {
        if let TargetConfig::S3 { credentials: c, .. } = &mut self.target {
            *c = Some(credentials);
        }
        self.pending_secret = None;
        self
    }

    /// Opens the store.
    ///
    /// # Errors
    /// [`BackupError::Config`], also while the credentials of a Secret are still pending.
    pub fn store(&self) -> Result<Store, BackupError> {
        if let Some(name) = &self.pending_secret {
            return Err(BackupError::Config(format!(
                "the S3 credentials are in Secret {name}, which only the agent in Kubernetes \
                 reads (fix: use `credentials: {{sopsFile: ...}}` to run this outside the cluster)"
            )));
        }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn a_folder_inside_an_allowed_root_is_taken() {
        let root = tempfile::tempdir().unwrap();
        let want = root.path().join("homelab/snapshots");
        let got = allowed_folder(want.to_str().unwrap(), &[root.path().to_path_buf()]).unwrap();
        assert_eq!(got, want);
    }

    /// Hostile repo: it names a folder the operator never allowed, climbs out with `..`, or
    /// goes through a symlink that leads out of the allowed root.
    #[test]
    fn folders_the_operator_did_not_allow_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let roots = [root.path().to_path_buf()];
        let e = allowed_folder("/etc/cron.d", &roots)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/etc/cron.d") && e.contains("--backup-dir"),
            "{e}"
        );
        assert!(
            allowed_folder("/etc", &[]).is_err(),
            "no root: nothing allowed"
        );
        let climb = format!("{}/../x", root.path().display());
        let e = allowed_folder(&climb, &roots).unwrap_err().to_string();
        assert!(e.contains("without `.` or `..`"), "{e}");
        assert!(allowed_folder("relative/dir", &roots).is_err());
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
        let through = root.path().join("link/snapshots");
        assert!(allowed_folder(through.to_str().unwrap(), &roots).is_err());
    }

    #[test]
    fn secret_credentials_name_the_missing_key_never_a_value() {
        let mut data = BTreeMap::new();
        data.insert("accessKeyId".to_string(), b"AKIDEXAMPLE".to_vec());
        let e = s3_credentials_from_secret("vixen-backup-s3", &data)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("Secret vixen-backup-s3") && e.contains("secretAccessKey"),
            "{e}"
        );
        assert!(!e.contains("AKIDEXAMPLE"), "{e}");
        data.insert("secretAccessKey".to_string(), b"s3cr3t-value\n".to_vec());
        let c = s3_credentials_from_secret("vixen-backup-s3", &data).unwrap();
        assert_eq!(c.secret_access_key.as_str(), "s3cr3t-value");
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn nothing_is_stored_while_the_secret_is_pending() {
        let r = Resolved {
            spec: serde_yaml_ng::from_str("target: {s3: {endpoint: 'http://127.0.0.1:1', bucket: b, credentials: {secret: s}}}")
                .unwrap(),
            cluster: "c".into(),
            target: TargetConfig::S3 {
                endpoint: "http://127.0.0.1:1".into(),
                bucket: "b".into(),
                prefix: String::new(),
                region: "us-east-1".into(),
                path_style: true,
                credentials: None,
                retry_timeout: Duration::from_secs(1),
            },
            recipients: Vec::new(),
            max_age: None,
            pending_secret: Some("s".into()),
        };
        let e = r.store().unwrap_err().to_string();
        assert!(e.contains("Secret s"), "{e}");
        let r = r.with_secret(S3Credentials {
            access_key_id: "a".into(),
            ..S3Credentials::default()
        });
        assert!(r.pending_secret.is_none());
        assert!(r.store().is_ok());
    }
}
