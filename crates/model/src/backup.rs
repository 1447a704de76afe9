//! `backup:` in cluster.yaml: scheduled etcd snapshots, their retention and target, and what
//! happens before a risky step. The types users write, and their rules (file:line like the
//! rest of the model).
//!
//! ```yaml
//! backup:
//!   schedule: "0 3 * * *"        # cron, 5 fields (minute hour day-of-month month day-of-week)
//!   timeZone: Europe/Paris       # IANA name (default UTC)
//!   retention: {count: 14, maxAge: 720h}
//!   beforeRisky: required        # required | best-effort | off
//!   target:
//!     s3:
//!       endpoint: https://s3.example.net
//!       bucket: etcd-backups
//!       prefix: homelab
//!       region: eu-west-1
//!       pathStyle: true
//!       credentials: {sopsFile: secrets/s3.sops.yaml}   # or {secret: vixen-backup-s3}
//!     # or: local: {path: /var/lib/vixen/backups}
//! ```

use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::path;
use crate::repo::{Diagnostics, Repo};
use crate::yaml::Seg;

/// etcd snapshots of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupSpec {
    /// When scheduled snapshots are taken, as a 5-field cron expression (`minute hour
    /// day-of-month month day-of-week`), e.g. `0 3 * * *` for 03:00 every day. Without it, only
    /// the snapshots before risky steps (and `vixen etcd snapshot`) are taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// IANA time zone the schedule is read in, e.g. `Europe/Paris` (default `UTC`).
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// How many snapshots are kept, and for how long.
    #[serde(default)]
    pub retention: Retention,
    /// Where snapshots go.
    pub target: Target,
    /// A fresh snapshot before a control-plane removal, a Talos or Kubernetes minor upgrade
    /// and an etcd member promotion: `required` (a failed snapshot stops the plan),
    /// `best-effort` (a failure is reported, the plan goes on) or `off`.
    #[serde(default)]
    pub before_risky: BeforeRisky,
    /// age recipients (`age1...`) snapshots are encrypted to. Default: the age recipients of
    /// the SOPS-encrypted secrets bundle, so whoever can decrypt the cluster's secrets can
    /// decrypt its snapshots.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
}

fn default_time_zone() -> String {
    "UTC".into()
}

/// How many snapshots are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retention {
    /// The newest `count` snapshots are kept (default 14).
    #[serde(default = "default_count")]
    pub count: u32,
    /// Snapshots older than this are deleted (e.g. `720h`), except the newest one, which is
    /// always kept. Default: no age limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
}

fn default_count() -> u32 {
    14
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            count: default_count(),
            max_age: None,
        }
    }
}

/// Where snapshots are stored: exactly one of `s3` and `local`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Target {
    /// S3-compatible object storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Target>,
    /// A folder on the machine that runs vixen (a laptop, the lab).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalTarget>,
}

/// An S3-compatible bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Target {
    /// Endpoint URL, e.g. `https://s3.eu-west-1.amazonaws.com` or `http://127.0.0.1:9000`.
    pub endpoint: String,
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket (default: none). Objects are named
    /// `<prefix>/<cluster>/<time>-<member>.db.age`.
    #[serde(default)]
    pub prefix: String,
    /// Region (default `us-east-1`).
    #[serde(default = "default_region")]
    pub region: String,
    /// Path-style addressing (`endpoint/bucket/key`), as most self-hosted servers want.
    #[serde(default)]
    pub path_style: bool,
    /// Access key: from a SOPS file of the repo or a Kubernetes Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,
}

fn default_region() -> String {
    "us-east-1".into()
}

/// Where the S3 access key comes from: exactly one of `sopsFile` and `secret`. Either holds
/// `accessKeyId` and `secretAccessKey` (and optionally `sessionToken`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Credentials {
    /// Path, relative to the repo, of a SOPS-encrypted YAML file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sops_file: Option<String>,
    /// Name of a Secret in vixen's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// A local folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalTarget {
    /// Absolute path of the folder (created when missing).
    pub path: String,
}

/// What a failed snapshot before a risky step does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BeforeRisky {
    /// The plan stops with the reason before any change; the next reconcile tries again.
    #[default]
    Required,
    /// The failure is reported and the plan goes on.
    BestEffort,
    /// No snapshot is taken before risky steps.
    Off,
}

/// True for a well-formed age X25519 recipient (`age1...`, bech32).
pub fn is_age_recipient(s: &str) -> bool {
    vixen_sops::is_age_recipient(s)
}

/// A parsed 5-field cron expression.
///
/// # Errors
/// croner's message, which quotes only the expression.
pub fn parse_schedule(s: &str) -> Result<croner::Cron, String> {
    if s.split_whitespace().count() != 5 {
        return Err(format!(
            "`{s}` is not a 5-field cron expression (minute hour day-of-month month day-of-week)"
        ));
    }
    s.parse::<croner::Cron>()
        .map_err(|e| format!("`{s}` is not a cron expression: {e}"))
}

/// The time zone called `name`.
pub fn parse_time_zone(name: &str) -> Option<chrono_tz::Tz> {
    name.parse().ok()
}

/// The rules of `backup:` (called by [`crate::validate`]).
pub(crate) fn backup_rules(repo: &Repo, d: &mut Diagnostics) {
    let c = &repo.cluster;
    let Some(b) = &c.value.backup else { return };
    let f = c.path.as_path();
    let at = |segs: Vec<Seg>| c.pos(&segs);
    if let Some(s) = &b.schedule
        && let Err(e) = parse_schedule(s)
    {
        d.push(
            f,
            at(path!["backup", "schedule"]),
            e,
            "write it like `0 3 * * *` (03:00 every day) or `*/30 * * * *`",
        );
    }
    if parse_time_zone(&b.time_zone).is_none() {
        d.push(
            f,
            at(path!["backup", "timeZone"]),
            format!("`{}` is not an IANA time zone", b.time_zone),
            "write it like UTC, Europe/Paris or America/New_York",
        );
    }
    if b.retention.count == 0 {
        d.push(
            f,
            at(path!["backup", "retention", "count"]),
            "retention count is 0: every snapshot would be deleted as soon as it is taken",
            "keep at least 1",
        );
    }
    if let Some(age) = &b.retention.max_age
        && crate::validate::parse_duration(age).is_none_or(|d| d.is_zero())
    {
        d.push(
            f,
            at(path!["backup", "retention", "maxAge"]),
            format!("`{age}` is not a positive duration"),
            "write it like 720h or 168h",
        );
    }
    for (i, r) in b.recipients.iter().enumerate() {
        if !is_age_recipient(r) {
            d.push(
                f,
                at(path!["backup", "recipients", i]),
                "not an age recipient",
                "write the public key of an age identity (`age1...`, from `age-keygen -y`)",
            );
        }
    }
    if b.recipients.is_empty() && !bundle_has_recipients(repo) {
        d.push(
            f,
            at(path!["backup"]),
            "snapshots need age recipients: the secrets bundle is not SOPS-encrypted to any",
            "list the public keys under backup.recipients",
        );
    }
    target_rules(repo, b, d);
}

/// Whether the secrets bundle names age recipients (the default recipients of snapshots).
fn bundle_has_recipients(repo: &Repo) -> bool {
    repo.sandbox()
        .read_bytes(&repo.cluster.value.secrets.file)
        .ok()
        .and_then(|b| vixen_sops::recipients(&b, vixen_sops::Format::Yaml).ok())
        .is_some_and(|r| !r.is_empty())
}

fn target_rules(repo: &Repo, b: &BackupSpec, d: &mut Diagnostics) {
    let c = &repo.cluster;
    let f = c.path.as_path();
    let at = |segs: Vec<Seg>| c.pos(&segs);
    match (&b.target.s3, &b.target.local) {
        (Some(_), Some(_)) => d.push(
            f,
            at(path!["backup", "target", "local"]),
            "the target has both `s3` and `local`",
            "keep one of them",
        ),
        (None, None) => d.push(
            f,
            at(path!["backup", "target"]),
            "the target has neither `s3` nor `local`",
            "add `s3: {endpoint, bucket, ...}` or `local: {path: /absolute/folder}`",
        ),
        _ => {}
    }
    if let Some(l) = &b.target.local
        && !Path::new(&l.path).is_absolute()
    {
        d.push(
            f,
            at(path!["backup", "target", "local", "path"]),
            format!("`{}` is not an absolute path", l.path),
            "write the folder as an absolute path, e.g. /var/lib/vixen/backups",
        );
    }
    let Some(s3) = &b.target.s3 else { return };
    let endpoint_ok = (s3.endpoint.starts_with("https://") || s3.endpoint.starts_with("http://"))
        && s3.endpoint.split_once("://").is_some_and(|(_, h)| {
            !h.is_empty() && !h.contains('@') && !h.contains(char::is_whitespace)
        });
    if !endpoint_ok {
        d.push(
            f,
            at(path!["backup", "target", "s3", "endpoint"]),
            format!("`{}` is not an http(s) URL", s3.endpoint),
            "write it like https://s3.example.net (credentials go under `credentials`)",
        );
    }
    if !is_bucket_name(&s3.bucket) {
        d.push(
            f,
            at(path!["backup", "target", "s3", "bucket"]),
            format!("`{}` is not a bucket name", s3.bucket),
            "use 3 to 63 lowercase letters, digits, `-` and `.`",
        );
    }
    if s3.prefix.starts_with('/')
        || s3.prefix.split('/').any(|p| p == ".." || p == ".")
        || s3.prefix.contains("//")
    {
        d.push(
            f,
            at(path!["backup", "target", "s3", "prefix"]),
            format!("`{}` is not a clean key prefix", s3.prefix),
            "write it like `clusters/homelab` (no leading `/`, no `.` or `..`)",
        );
    }
    let Some(cred) = &s3.credentials else { return };
    match (&cred.sops_file, &cred.secret) {
        (Some(_), Some(_)) | (None, None) => d.push(
            f,
            at(path!["backup", "target", "s3", "credentials"]),
            "credentials need exactly one of `sopsFile` and `secret`",
            "keep one: a SOPS file of the repo, or the name of a Secret in vixen's namespace",
        ),
        (Some(file), None) => {
            let pos = at(path!["backup", "target", "s3", "credentials", "sopsFile"]);
            match repo.sandbox().read_bytes(file) {
                Err(r) => d.push(f, pos, format!("credentials file {r}"), r.fix()),
                Ok(bytes) => {
                    if !vixen_sops::is_sops_file(&bytes, vixen_sops::Format::Yaml) {
                        d.push(
                            Path::new(file),
                            crate::yaml::Pos { line: 1, col: 1 },
                            "the S3 credentials file is not SOPS-encrypted",
                            "encrypt it with `sops -e -i` to the cluster's age key",
                        );
                    }
                }
            }
        }
        (None, Some(name)) => {
            if !is_dns_subdomain(name) {
                d.push(
                    f,
                    at(path!["backup", "target", "s3", "credentials", "secret"]),
                    format!("`{name}` is not a Secret name"),
                    "use lowercase letters, digits, `-` and `.`",
                );
            }
        }
    }
}

fn is_bucket_name(s: &str) -> bool {
    (3..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}
