//! The engine's [`SnapshotSink`] on vixen-backup: check, encrypt to the repo's recipients,
//! upload, prune. Counters for the metrics and a callback for Events are the daemon's; the CLI
//! uses it bare.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vixen_backup::{Resolved, Stored, Taken};
use vixen_engine::ports::BoxFuture;
use vixen_engine::{SnapshotSink, SnapshotSource};
use vixen_model::backup::BeforeRisky;

/// The outcome of one snapshot, for metrics, Events and the status.
#[derive(Debug, Clone)]
pub enum SnapshotOutcome {
    /// Stored.
    Stored {
        /// What was stored.
        stored: Box<Stored>,
        /// Keys retention deleted.
        pruned: Vec<String>,
        /// How long it took (check, encrypt, upload, prune).
        took: Duration,
    },
    /// Failed.
    Failed {
        /// Why it was taken.
        reason: String,
        /// What went wrong (no secret).
        error: String,
    },
}

/// Told about every snapshot (the daemon turns them into metrics and Events).
pub type OnSnapshot = Arc<dyn Fn(&SnapshotOutcome) + Send + Sync>;

/// vixen-backup as the engine's sink.
#[derive(Clone)]
pub struct BackupPort {
    /// The resolved `backup:` block.
    pub resolved: Resolved,
    /// The Git revision being reconciled, recorded with each snapshot.
    pub revision: Option<String>,
    /// Told about every snapshot.
    pub on_snapshot: Option<OnSnapshot>,
    /// The last outcome (for the status).
    pub last: Arc<Mutex<Option<SnapshotOutcome>>>,
    /// Why no snapshot can be stored at all (the credentials' Secret cannot be read): every
    /// save fails with it, and is reported as any failed snapshot.
    pub broken: Option<String>,
}

impl BackupPort {
    /// A port for `resolved`.
    pub fn new(resolved: Resolved) -> Self {
        Self {
            resolved,
            revision: None,
            on_snapshot: None,
            last: Arc::new(Mutex::new(None)),
            broken: None,
        }
    }

    /// Saves a snapshot and reports the outcome.
    ///
    /// # Errors
    /// The vixen-backup error, as text.
    pub async fn save_reporting(
        &self,
        snapshot: Vec<u8>,
        source: SnapshotSource,
    ) -> Result<Stored, String> {
        let start = Instant::now();
        let reason = source.reason.clone();
        let taken = Taken {
            member: source.member,
            member_id: source.member_id,
            etcd_version: source.etcd_version,
            raft_index: source.raft_index,
            revision: self.revision.clone(),
            reason: source.reason,
        };
        let result = match &self.broken {
            Some(why) => Err(vixen_backup::BackupError::Config(why.clone())),
            None => self.resolved.save(&snapshot, taken).await,
        };
        let outcome = match &result {
            Ok((stored, pruned)) => SnapshotOutcome::Stored {
                stored: Box::new(stored.clone()),
                pruned: pruned.clone(),
                took: start.elapsed(),
            },
            Err(e) => SnapshotOutcome::Failed {
                reason,
                error: e.to_string(),
            },
        };
        match &outcome {
            SnapshotOutcome::Stored { stored, pruned, .. } => tracing::info!(
                key = %stored.key, size = stored.meta.size, pruned = pruned.len(),
                "etcd snapshot stored"
            ),
            SnapshotOutcome::Failed { error, .. } => {
                tracing::warn!(%error, "etcd snapshot failed")
            }
        }
        if let Some(f) = &self.on_snapshot {
            f(&outcome);
        }
        *self.last.lock().expect("last snapshot") = Some(outcome);
        result.map(|(s, _)| s).map_err(|e| e.to_string())
    }
}

impl SnapshotSink for BackupPort {
    fn policy(&self) -> BeforeRisky {
        self.resolved.before_risky()
    }

    fn save<'a>(
        &'a self,
        snapshot: Vec<u8>,
        source: SnapshotSource,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move { self.save_reporting(snapshot, source).await.map(|s| s.key) })
    }
}
