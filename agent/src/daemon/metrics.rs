//! Prometheus metrics of the agent. Labels take fixed values only (categories, states, versions,
//! commit ids): never an error message, a URL with credentials, or a secret.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Every metric vixen exports.
pub struct Metrics {
    registry: Registry,
    /// Reconcile duration by outcome (`converged`, `waiting`, `refused`, `failed`, `error`).
    pub reconcile_duration: Family<Labels, Histogram>,
    /// 1 for the last revision the cluster fully matched (an info metric).
    pub last_applied: Family<Labels, Gauge>,
    /// When the last revision was applied (Unix seconds).
    pub last_applied_time: Gauge<f64, AtomicU64>,
    /// Nodes by state and Talos version.
    pub nodes: Family<Labels, Gauge>,
    /// etcd members (voting and learners) seen at the last reconcile.
    pub etcd_members: Gauge,
    /// Failures by fixed category.
    pub failures: Family<Labels, Counter>,
    /// Git polls by result (`unchanged`, `changed`, `error`).
    pub polls: Family<Labels, Counter>,
    /// Webhook requests by result (`accepted`, `rejected`).
    pub webhooks: Family<Labels, Counter>,
    /// Commit statuses by state and result.
    pub statuses: Family<Labels, Counter>,
    /// 1 while this replica holds the Lease (or runs without election).
    pub leader: Gauge,
    /// Engine steps by action kind and event (`started`, `succeeded`, `resumed`, `failed`).
    pub steps: Family<Labels, Counter>,
    /// Step Events by result (`posted`, `failed`, `dropped` when the queue was full).
    pub events: Family<Labels, Counter>,
    /// Verified webhooks handed between replicas: `sent` and `failed` on a standby, `received`
    /// on the leader.
    pub webhook_relays: Family<Labels, Counter>,
    /// Nodes found drifted (running a config that is not the one from Git) at the last check.
    pub drifted_nodes: Gauge,
    /// Drift found, by node and what was done (`corrected` or `reported`).
    pub drift: Family<Labels, Counter>,
    /// etcd snapshots by trigger (`scheduled`, `before_risky`) and result (`stored`, `failed`).
    pub backups: Family<Labels, Counter>,
    /// When the last snapshot was stored (Unix seconds).
    pub backup_last_success: Gauge<f64, AtomicU64>,
    /// Size of the last stored snapshot (bytes, before encryption).
    pub backup_last_size: Gauge,
    /// How long the last stored snapshot took: check, encrypt, upload, prune (seconds).
    pub backup_last_duration: Gauge<f64, AtomicU64>,
}

fn duration_histogram() -> Histogram {
    Histogram::new([0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0])
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("vixen"),
            reconcile_duration: Family::new_with_constructor(duration_histogram),
            last_applied: Family::default(),
            last_applied_time: Gauge::default(),
            nodes: Family::default(),
            etcd_members: Gauge::default(),
            failures: Family::default(),
            polls: Family::default(),
            webhooks: Family::default(),
            statuses: Family::default(),
            leader: Gauge::default(),
            steps: Family::default(),
            events: Family::default(),
            webhook_relays: Family::default(),
            drifted_nodes: Gauge::default(),
            drift: Family::default(),
            backups: Family::default(),
            backup_last_success: Gauge::default(),
            backup_last_size: Gauge::default(),
            backup_last_duration: Gauge::default(),
        };
        let r = &mut m.registry;
        r.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            m.reconcile_duration.clone(),
        );
        r.register(
            "last_applied_revision",
            "The last Git revision the cluster fully matched (value 1)",
            m.last_applied.clone(),
        );
        r.register(
            "last_applied_timestamp_seconds",
            "When the last revision was applied",
            m.last_applied_time.clone(),
        );
        r.register("nodes", "Nodes by state and Talos version", m.nodes.clone());
        r.register(
            "etcd_members",
            "etcd members seen at the last reconcile",
            m.etcd_members.clone(),
        );
        r.register(
            "reconcile_failures",
            "Failures by category",
            m.failures.clone(),
        );
        r.register("git_polls", "Git polls by result", m.polls.clone());
        r.register("webhooks", "Webhook requests by result", m.webhooks.clone());
        r.register(
            "commit_statuses",
            "Commit statuses by state and result",
            m.statuses.clone(),
        );
        r.register(
            "leader",
            "1 while this replica may act on the cluster",
            m.leader.clone(),
        );
        r.register(
            "steps",
            "Engine steps by action kind and event",
            m.steps.clone(),
        );
        r.register(
            "events",
            "Step Events by result (dropped: the queue to the API server was full)",
            m.events.clone(),
        );
        r.register(
            "drifted_nodes",
            "Nodes whose running config was not the one from Git at the last drift check",
            m.drifted_nodes.clone(),
        );
        r.register(
            "drift_detections",
            "Drift found by the dry run of a resync, by node and action (corrected, reported)",
            m.drift.clone(),
        );
        r.register(
            "etcd_snapshots",
            "etcd snapshots by trigger (scheduled, before_risky) and result (stored, failed)",
            m.backups.clone(),
        );
        r.register(
            "etcd_snapshot_last_success_timestamp_seconds",
            "When the last etcd snapshot was stored",
            m.backup_last_success.clone(),
        );
        r.register(
            "etcd_snapshot_last_size_bytes",
            "Size of the last stored etcd snapshot, before encryption",
            m.backup_last_size.clone(),
        );
        r.register(
            "etcd_snapshot_last_duration_seconds",
            "How long the last stored etcd snapshot took (check, encrypt, upload, prune)",
            m.backup_last_duration.clone(),
        );
        r.register(
            "webhook_relays",
            "Verified webhooks handed from a standby to the leader",
            m.webhook_relays.clone(),
        );
        m
    }
}

impl Metrics {
    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Counts one failure under a fixed category.
    pub fn fail(&self, category: &'static str) {
        self.failures
            .get_or_create(&vec![("reason", category.to_owned())])
            .inc();
    }

    /// Records the last applied revision (only one series is kept).
    pub fn applied(&self, revision: &str) {
        self.last_applied.clear();
        self.last_applied
            .get_or_create(&vec![("revision", revision.to_owned())])
            .set(1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.last_applied_time.set(now);
    }

    /// Replaces the node gauges: `(state, version)` per node.
    pub fn set_nodes(&self, nodes: &[(String, String)]) {
        self.nodes.clear();
        for (state, version) in nodes {
            self.nodes
                .get_or_create(&vec![
                    ("state", state.clone()),
                    ("version", version.clone()),
                ])
                .inc();
        }
    }
}
