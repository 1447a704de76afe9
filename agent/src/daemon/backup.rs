//! etcd snapshots in the long-running agent: the snapshot port of every reconcile (before risky
//! steps), the scheduled snapshots of `backup.schedule`, and what the user sees of both: a
//! metric set, an Event per snapshot and `lastBackup` in the VixenCluster status.
//!
//! ```text
//! prepared commit ─► Armed (resolved backup:, desired, how to reach the nodes) ─► Due (cron)
//!   reconcile ─► BackupPort (Secret credentials read here) ─► engine: before a risky step
//!   loop tick, leading, Due::take ─► Engine::snapshot ─► BackupPort
//!                 every outcome ─► metrics · Event · status.lastBackup
//! ```
//!
//! Only the leader snapshots: the loop asks only while this replica holds the Lease.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::backup::{BackupPort, SnapshotOutcome};
use chrono::Utc;
use k8s_openapi::api::core::v1::Secret;
use vixen_backup::Resolved;
use vixen_backup::schedule::Due;
use vixen_engine::{Connector, Engine, KubeAccess, KubeLink, Quiet};
use vixen_k8s::{BackupStatus, EventRecorder, EventType};
use vixen_plan::Desired;

use super::cycle::{Agent, first_line};
use super::http::Shared;
use super::kube_store::AgentStore;
use super::{KubeOptions, Prepared};

/// Secrets vixen holds for itself: a repo naming one as S3 credentials is refused (the repo is
/// untrusted; the endpoint it names would receive the access key).
const OWN_SECRETS: [&str; 3] = ["vixen-git", "vixen-forge", "vixen-age"];

/// What the last prepared commit said about backups.
pub struct Armed {
    resolved: Resolved,
    desired: Desired,
    conn: Connector,
    kube: KubeAccess,
    revision: String,
}

/// Scheduled snapshots: the commit they follow, and when the next is due.
#[derive(Default)]
pub struct Backups {
    armed: Option<Armed>,
    due: Option<Due>,
}

impl Backups {
    /// Follows the backup block of a newly prepared commit (none: no scheduled snapshot).
    pub fn follow(&mut self, p: &Prepared, revision: &str) {
        let Some(resolved) = p.backup.clone() else {
            self.armed = None;
            self.due = None;
            return;
        };
        let now = Utc::now();
        match &mut self.due {
            Some(d) => d.update(&resolved.spec, now),
            None => self.due = Some(Due::new(resolved.spec.clone(), now)),
        }
        self.armed = Some(Armed {
            resolved,
            desired: p.desired.clone(),
            conn: p.conn.clone(),
            kube: p.kube.clone(),
            revision: revision.to_owned(),
        });
    }

    /// How long until the next scheduled snapshot (the loop sleeps no longer).
    pub fn until_next(&self) -> Option<std::time::Duration> {
        let next = self.due.as_ref()?.next()?;
        Some((next - Utc::now()).to_std().unwrap_or_default())
    }
}

/// The Secret's credentials, or why they cannot be had (never a value).
async fn secret_credentials(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<vixen_backup::S3Credentials, String> {
    if OWN_SECRETS.contains(&name) {
        return Err(format!(
            "backup.target.s3.credentials.secret names {name}, one of vixen's own Secrets; \
             fix: put the S3 key in a Secret of its own (vixen-backup)"
        ));
    }
    let api: kube::Api<Secret> = kube::Api::namespaced(client.clone(), namespace);
    let secret = api.get(name).await.map_err(|e| match &e {
        kube::Error::Api(s) if s.code == 403 => format!(
            "Secret {namespace}/{name} may not be read: vixen's Role grants only Secret \
             vixen-backup (fix: name that Secret in backup.target.s3.credentials.secret)"
        ),
        kube::Error::Api(s) if s.code == 404 => {
            format!("Secret {namespace}/{name} does not exist (fix: create it with accessKeyId and secretAccessKey)")
        }
        _ => format!("Secret {namespace}/{name}: {}", first_line(&e)),
    })?;
    let data: BTreeMap<String, Vec<u8>> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    vixen_backup::s3_credentials_from_secret(&format!("{namespace}/{name}"), &data)
        .map_err(|e| e.to_string())
}

/// The snapshot port for `resolved`: credentials of a Secret read now, every outcome counted,
/// published as an Event and kept for the status.
pub async fn port(
    resolved: &Resolved,
    revision: &str,
    kube: Option<(&kube::Client, &KubeOptions)>,
    shared: &Arc<Shared>,
    events: Option<Arc<EventRecorder>>,
) -> BackupPort {
    let mut broken = None;
    let mut resolved = resolved.clone();
    if let (Some(name), Some((client, opts))) = (resolved.pending_secret.clone(), kube) {
        match secret_credentials(client, &opts.namespace, &name).await {
            Ok(c) => resolved = resolved.with_secret(c),
            Err(why) => broken = Some(why),
        }
    }
    let mut port = BackupPort::new(resolved);
    port.broken = broken;
    port.revision = Some(revision.to_owned());
    let shared = shared.clone();
    port.on_snapshot = Some(Arc::new(move |outcome: &SnapshotOutcome| {
        count(&shared, outcome);
        if let Some(events) = events.clone() {
            let (kind, reason, note) = event_of(outcome);
            tokio::spawn(async move {
                if let Err(e) = events.publish(kind, reason, "Snapshot", &note).await {
                    tracing::debug!(error = %e, "snapshot event not published");
                }
            });
        }
    }));
    port
}

/// `scheduled` or `before_risky` (a fixed label value).
fn trigger(reason: &str) -> &'static str {
    if reason == "scheduled" {
        "scheduled"
    } else if reason.starts_with("before ") {
        "before_risky"
    } else {
        "manual"
    }
}

fn count(shared: &Shared, outcome: &SnapshotOutcome) {
    let m = &shared.metrics;
    match outcome {
        SnapshotOutcome::Stored { stored, took, .. } => {
            m.backups
                .get_or_create(&vec![
                    ("trigger", trigger(&stored.meta.reason).into()),
                    ("result", "stored".into()),
                ])
                .inc();
            m.backup_last_success
                .set(stored.meta.taken_at.timestamp_millis() as f64 / 1000.0);
            m.backup_last_size
                .set(i64::try_from(stored.meta.size).unwrap_or(i64::MAX));
            m.backup_last_duration.set(took.as_secs_f64());
        }
        SnapshotOutcome::Failed { reason, .. } => {
            m.backups
                .get_or_create(&vec![
                    ("trigger", trigger(reason).into()),
                    ("result", "failed".into()),
                ])
                .inc();
            m.fail("snapshot");
        }
    }
}

fn event_of(outcome: &SnapshotOutcome) -> (EventType, &'static str, String) {
    match outcome {
        SnapshotOutcome::Stored { stored, pruned, .. } => (
            EventType::Normal,
            "SnapshotStored",
            format!(
                "etcd snapshot {} ({}) from {}: {} bytes, encrypted{}",
                stored.key,
                stored.meta.reason,
                stored.meta.member,
                stored.meta.size,
                match pruned.len() {
                    0 => String::new(),
                    1 => "; 1 old snapshot pruned".into(),
                    n => format!("; {n} old snapshots pruned"),
                }
            ),
        ),
        SnapshotOutcome::Failed { reason, error } => (
            EventType::Warning,
            "SnapshotFailed",
            format!("no etcd snapshot ({reason}): {error}"),
        ),
    }
}

/// The status' view of an outcome; `previous` carries the last success time over a failure.
pub fn status_of(outcome: &SnapshotOutcome, previous: Option<&BackupStatus>) -> BackupStatus {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    match outcome {
        SnapshotOutcome::Stored { stored, .. } => BackupStatus {
            result: "Stored".into(),
            time: now.clone(),
            reason: stored.meta.reason.clone(),
            key: Some(stored.key.clone()),
            member: Some(stored.meta.member.clone()),
            size_bytes: Some(stored.meta.size),
            error: None,
            last_success_time: Some(now),
        },
        SnapshotOutcome::Failed { reason, error } => BackupStatus {
            result: "Failed".into(),
            time: now,
            reason: reason.clone(),
            key: None,
            member: None,
            size_bytes: None,
            error: Some(error.chars().take(300).collect()),
            last_success_time: previous.and_then(|p| p.last_success_time.clone()),
        },
    }
}

impl Agent {
    /// The Event recorder of the cluster named in the repo, once known.
    fn events(&self) -> Option<Arc<EventRecorder>> {
        self.kube
            .as_ref()
            .and_then(|k| k.named.as_ref())
            .map(|n| n.events.clone())
    }

    /// The snapshot port of a reconcile of `p` (None without `backup:`).
    pub(super) async fn backup_port(&self, p: &Prepared, revision: &str) -> Option<BackupPort> {
        let resolved = p.backup.as_ref()?;
        let kube = self.kube.as_ref().map(|k| (&k.client, &k.opts));
        let events = self.events();
        Some(port(resolved, revision, kube, &self.shared, events).await)
    }

    /// Records the port's last outcome in the status object (written with the next report,
    /// or now with `write`).
    pub(super) async fn note_backup(&mut self, port: &BackupPort, write: bool) {
        let Some(outcome) = port.last.lock().expect("last snapshot").clone() else {
            return;
        };
        let Some(k) = self.kube.as_mut() else { return };
        k.status.last_backup = Some(status_of(&outcome, k.status.last_backup.as_ref()));
        if write
            && let Some(n) = &k.named
            && let Err(e) = n.api.write(&k.status).await
        {
            tracing::warn!(error = %e, "status object not written");
        }
    }

    /// Takes the scheduled snapshot when it is due (called while this replica leads).
    pub(super) async fn scheduled_snapshot(&mut self) {
        let due = self
            .backups
            .due
            .as_mut()
            .is_some_and(|d| d.take(Utc::now()));
        let Some(armed) = self.backups.armed.as_ref().filter(|_| due) else {
            return;
        };
        let desired = armed.desired.clone();
        let (resolved, revision) = (armed.resolved.clone(), armed.revision.clone());
        let kube_access = match &self.kube {
            Some(k) => KubeAccess::Client(k.client.clone()),
            None => armed.kube.clone(),
        };
        let conn = armed.conn.clone();
        let kube_link = KubeLink::new(kube_access, conn.clone());
        let kube = self.kube.as_ref().map(|k| (&k.client, &k.opts));
        let events = self.events();
        let port = port(&resolved, &revision, kube, &self.shared, events).await;
        let store = match &self.kube {
            Some(k) => AgentStore::Kube(&k.store),
            None => AgentStore::File(&self.file_store),
        };
        let engine = Engine {
            talos: &conn,
            kube: &kube_link,
            store: &store,
            timeouts: self.cfg.timeouts.clone(),
            progress: &Quiet,
            backup: Some(&port),
        };
        match engine.snapshot(&desired, "scheduled").await {
            Ok(key) => tracing::info!(%key, "scheduled etcd snapshot stored"),
            Err(error) => {
                tracing::warn!(%error, "scheduled etcd snapshot failed");
                // A failure before the sink (no healthy member) is reported like one after it.
                if port.last.lock().expect("last snapshot").is_none() {
                    let outcome = SnapshotOutcome::Failed {
                        reason: "scheduled".into(),
                        error,
                    };
                    if let Some(f) = &port.on_snapshot {
                        f(&outcome);
                    }
                    *port.last.lock().expect("last snapshot") = Some(outcome);
                }
            }
        }
        self.note_backup(&port, true).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_are_fixed_label_values() {
        assert_eq!(trigger("scheduled"), "scheduled");
        assert_eq!(
            trigger("before control-plane removal of cp-3"),
            "before_risky"
        );
        assert_eq!(trigger("test"), "manual");
    }

    #[test]
    fn a_failure_keeps_the_last_success_time() {
        let before = BackupStatus {
            result: "Stored".into(),
            last_success_time: Some("2026-12-02T03:00:00Z".into()),
            ..BackupStatus::default()
        };
        let failed = SnapshotOutcome::Failed {
            reason: "scheduled".into(),
            error: "put x: 500".into(),
        };
        let s = status_of(&failed, Some(&before));
        assert_eq!(s.result, "Failed");
        assert_eq!(s.last_success_time.as_deref(), Some("2026-12-02T03:00:00Z"));
        assert_eq!(s.error.as_deref(), Some("put x: 500"));
    }
}
