//! The long-running agent: poll Git, and on a new commit (or a webhook, or every resync)
//! validate, decrypt, plan and execute with the lifecycle engine, then tell the forge, the
//! cluster and Prometheus what happened.
//!
//! ```text
//!  webhook ─┐   interval/backoff ─┐   secret files changed ─┐
//!           ▼                     ▼                         ▼
//!   poll (ls-remote) ─new commit?─► fetch ─► prepare (validate, decrypt, render)
//!        │ no: idle                            │
//!        ▼                                     ▼ (only while holding the Lease)
//!   sleep                          commit status pending ─► engine::reconcile ─► Cilium apply
//!                                                                    │
//!               status object, Events, metrics, commit status ◄──────┘
//! ```
//!
//! As the engine goes, each step becomes a metric and a Kubernetes Event (see `steps`). With two
//! replicas behind one Service, a webhook may land on the standby: it records the push on a
//! ConfigMap the leader looks at on every Lease tick (see `relay`).
//!
//! Dangerous work runs only while this replica leads: the reconcile is dropped the moment the
//! Lease is lost, and the journal refuses writes from a replica that does not lead.

pub mod backup;
pub mod cycle;
pub mod drift;
pub mod http;
pub mod kube_store;
pub mod layers;
pub mod metrics;
pub mod reconcile;
pub mod relay;
pub mod secrets;
pub mod source;
pub mod steps;
pub mod verdict;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use vixen_plan::Desired;

pub use source::{GitOptions, Source};
use vixen_engine::{Configs, Connector, KubeAccess, Timeouts};

/// What [`Prepare`] gives for one checkout.
pub struct Prepared {
    /// Desired state.
    pub desired: Desired,
    /// Rendered configs.
    pub configs: Configs,
    /// How to reach the nodes.
    pub conn: Connector,
    /// How to reach Kubernetes (in the cluster the agent's own client replaces it).
    pub kube: KubeAccess,
    /// `network.yaml`.
    pub network: vixen_model::NetworkFile,
    /// The objects of `cni.manifests` (empty for Talos' Flannel).
    pub cni: Vec<serde_json::Value>,
    /// The objects of `addons:`, the encrypted ones decrypted (they may hold Secrets).
    pub addons: Vec<serde_json::Value>,
    /// The `gitops:` handover.
    pub gitops: Option<GitopsLayer>,
    /// Cluster name.
    pub cluster: String,
    /// `backup:`, resolved (the credentials of a `secret:` reference still to be read).
    pub backup: Option<vixen_backup::Resolved>,
}

/// The `gitops:` handover of one checkout.
pub struct GitopsLayer {
    /// Flux or Argo CD.
    pub tool: vixen_model::GitopsTool,
    /// Its install manifests and the objects pointing it at the apps.
    pub objects: Vec<serde_json::Value>,
    /// The age identities to hand over (`None`: vixen holds no native one).
    pub age_keys: Option<zeroize::Zeroizing<String>>,
}

/// Why a checkout cannot be applied.
#[derive(Debug)]
pub struct PrepareError {
    /// `validate`, `decrypt`, `render`, `credentials` or `backup` (a fixed category).
    pub stage: &'static str,
    /// What is wrong (never a secret value).
    pub error: anyhow::Error,
    /// The first problem in one line, as the user should read it: for an invalid repo the
    /// first diagnostic, `file:line:col: message (fix: ...)`, with how many more there are.
    /// Empty: the first line of `error` is used.
    pub summary: String,
}

/// Turns a checked-out folder into what the engine needs (the binary supplies it).
pub type Prepare = Arc<dyn Fn(&Path) -> Result<Prepared, PrepareError> + Send + Sync>;

/// Where commit statuses go.
#[derive(Clone, Debug)]
pub struct ForgeOptions {
    /// Forge kind.
    pub forge: vixen_forge::Forge,
    /// API base URL.
    pub base_url: String,
    /// `owner/name` (GitLab: project path or id).
    pub repo: String,
    /// Token file.
    pub token_file: PathBuf,
    /// A link shown next to the status.
    pub target_url: Option<String>,
}

/// The Kubernetes side.
#[derive(Clone, Debug)]
pub struct KubeOptions {
    /// vixen's namespace (Lease, journal, status object, Events).
    pub namespace: String,
    /// This replica (pod name).
    pub identity: String,
    /// Lease name.
    pub lease: String,
    /// ConfigMap holding the journal.
    pub journal: String,
    /// Pool API version.
    pub pool_version: vixen_k8s::PoolVersion,
    /// Force Cilium fields owned by other managers.
    pub force_conflicts: bool,
    /// How long the Lease lasts without renewal (renewals and the standby's checks follow).
    pub lease_duration: Duration,
}

/// Everything the loop needs.
pub struct Config {
    /// The repo's origin.
    pub source: Source,
    /// Git poll interval.
    pub interval: Duration,
    /// Reconcile an already applied commit again this often (drift).
    pub resync: Duration,
    /// Backoff ceiling after errors (it starts at 5 s and doubles).
    pub backoff_max: Duration,
    /// Engine timeouts.
    pub timeouts: Timeouts,
    /// HTTP server address (metrics, health, webhooks).
    pub listen: Option<SocketAddr>,
    /// Webhook path.
    pub webhook_path: String,
    /// Webhook secret file.
    pub webhook_secret_file: Option<PathBuf>,
    /// Commit statuses.
    pub forge: Option<ForgeOptions>,
    /// Kubernetes; without it, the journal is a file in `state_dir` and there is no election.
    pub kube: Option<KubeOptions>,
    /// Journal folder when not in Kubernetes.
    pub state_dir: PathBuf,
    /// Other files whose change triggers a reconcile (age key, talosconfig).
    pub watch_files: Vec<PathBuf>,
    /// Where the repo comes from, for the status object (no credentials).
    pub source_label: String,
    /// The cluster name, when known before the first fetch (commit status context).
    pub cluster: Option<String>,
}

/// Exponential backoff: 5 s, 10 s, 20 s ... up to `max`.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// Starts at `base`, never above `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            failures: 0,
        }
    }
    /// The wait after one more failure.
    pub fn fail(&mut self) -> Duration {
        let d = self
            .base
            .saturating_mul(1u32 << self.failures.min(16))
            .min(self.max);
        self.failures += 1;
        d
    }
    /// Back to the first step.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Runs until `shutdown` turns true.
///
/// # Errors
/// Setup errors only (bad listen address, no Kubernetes client, unreadable token): once the loop
/// runs, failures are reported, counted and retried with backoff.
pub async fn run(
    cfg: Config,
    prepare: Prepare,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    cycle::Agent::start(cfg, prepare, shutdown)
        .await?
        .run()
        .await
}

/// Reads a token file into a forge secret.
fn read_forge_secret(path: &Path) -> anyhow::Result<vixen_forge::Secret> {
    use anyhow::Context as _;
    Ok(vixen_forge::Secret::new(
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    ))
}

/// Whether a credentials file is absent: the Deployment mounts `vixen-git` and `vixen-forge`
/// as optional Secrets, so a Secret not created (a public repo, no commit statuses) is an empty
/// folder. The file is watched all the same: creating the Secret later turns the feature on.
fn absent(path: &Path) -> bool {
    matches!(path.try_exists(), Ok(false))
}

/// The webhook secret, or `None` (webhook off) when its file is absent.
fn optional_webhook_secret(path: &Path) -> anyhow::Result<Option<vixen_forge::Secret>> {
    if absent(path) {
        return Ok(None);
    }
    read_forge_secret(path).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_ceiling_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(5), Duration::from_secs(60));
        let waits: Vec<u64> = (0..6).map(|_| b.fail().as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 60, 60]);
        b.reset();
        assert_eq!(b.fail().as_secs(), 5);
    }

    #[test]
    fn remote_or_folder() {
        assert!(source::is_remote("https://git.example/a/b.git"));
        assert!(source::is_remote("git@git.example:a/b.git"));
        assert!(!source::is_remote("examples/homelab"));
    }
}
