//! The engine's ports: the only ways it reaches the world. Each has a real implementation at
//! the edge ([`crate::talos::TalosLink`], [`crate::kube::KubeLink`], [`crate::journal::FileStore`])
//! and an in-memory fake ([`crate::fake`], feature `fake`) that the executor's tests drive in
//! milliseconds.
//!
//! ```text
//!            ┌──────────── Engine ────────────┐
//!  NodeApi ◄─┤ observe · adopt · execute      ├─► StateStore (inventory + journal)
//! KubeGates ◄┤ (interlocks, gates, resume)    │
//!            └────────────────────────────────┘
//! ```
//!
//! Addresses are plain strings (`127.0.10.1`, `[fd00::1]:50000`); the real Talos port adds
//! the API port. Reads may be retried by the port; mutating calls are sent once.

use std::future::Future;
use std::time::Duration;

use vixen_k8s::{DaemonSetProgress, DrainReport, NodeView, StaticPod};
use vixen_plan::KubeView;
use vixen_talos::{
    ApplyMode, ApplyOutcome, EtcdMember, EtcdMemberStatus, ServiceStatus, VersionInfo,
};

use crate::error::{KubeError, StoreError};
use crate::journal::State;

/// What a Talos call returns.
pub type TalosResult<T> = Result<T, vixen_talos::Error>;

/// The Talos operations the engine uses, by node address.
pub trait NodeApi: Send + Sync {
    /// Version over mTLS (a configured node).
    fn version(&self, at: &str) -> impl Future<Output = TalosResult<VersionInfo>> + Send;
    /// Version asked anonymously (a node in maintenance mode answers with a gRPC status).
    fn maintenance_version(
        &self,
        at: &str,
    ) -> impl Future<Output = TalosResult<VersionInfo>> + Send;
    /// The node's services.
    fn services(&self, at: &str) -> impl Future<Output = TalosResult<Vec<ServiceStatus>>> + Send;
    /// The etcd members the node sees.
    fn etcd_members(&self, at: &str) -> impl Future<Output = TalosResult<Vec<EtcdMember>>> + Send;
    /// The node's own etcd member status.
    fn etcd_status(&self, at: &str) -> impl Future<Output = TalosResult<EtcdMemberStatus>> + Send;
    /// ApplyConfiguration (anonymous when `maintenance`).
    fn apply(
        &self,
        at: &str,
        config: &[u8],
        mode: ApplyMode,
        dry_run: bool,
        maintenance: bool,
    ) -> impl Future<Output = TalosResult<ApplyOutcome>> + Send;
    /// Legacy MachineService.Upgrade (the node reboots by itself).
    fn upgrade(&self, at: &str, image: &str) -> impl Future<Output = TalosResult<()>> + Send;
    /// ImageService.Pull into the containerd store (Talos 1.13+).
    fn pull_image(&self, at: &str, image: &str) -> impl Future<Output = TalosResult<()>> + Send;
    /// LifecycleService.Upgrade (Talos 1.13+: installs, does not reboot).
    fn lifecycle_upgrade(
        &self,
        at: &str,
        image: &str,
    ) -> impl Future<Output = TalosResult<()>> + Send;
    /// Reboot.
    fn reboot(&self, at: &str) -> impl Future<Output = TalosResult<()>> + Send;
    /// Reset to maintenance mode (graceful: Talos leaves etcd and drains first).
    fn reset(&self, at: &str, graceful: bool) -> impl Future<Output = TalosResult<()>> + Send;
    /// Bootstrap etcd on this node (only `vixen bootstrap` calls it).
    fn bootstrap(&self, at: &str) -> impl Future<Output = TalosResult<()>> + Send;
    /// Remove this node's own member from etcd.
    fn etcd_leave(&self, at: &str) -> impl Future<Output = TalosResult<()>> + Send;
    /// Move etcd leadership away from this node.
    fn etcd_forfeit(&self, at: &str) -> impl Future<Output = TalosResult<()>> + Send;
    /// Remove member `id` through this node.
    fn etcd_remove_member(&self, at: &str, id: u64)
    -> impl Future<Output = TalosResult<()>> + Send;
    /// The node's boot ID (`/proc/sys/kernel/random/boot_id` through MachineService.Read): a new
    /// one proves a reboot happened, as `talosctl reboot --wait` checks.
    fn boot_id(&self, at: &str) -> impl Future<Output = TalosResult<String>> + Send;
    /// The admin kubeconfig the node hands out (a `.tar.gz`).
    fn kubeconfig(&self, at: &str) -> impl Future<Output = TalosResult<Vec<u8>>> + Send;
    /// An etcd snapshot of the node's member (EtcdSnapshot: the database and etcd's sha256).
    fn etcd_snapshot(&self, at: &str) -> impl Future<Output = TalosResult<Vec<u8>>> + Send;
    /// Disaster recovery on a configured control plane without etcd data: EtcdRecover with
    /// `snapshot`, then Bootstrap{recover_etcd} (only `vixen etcd restore` calls it).
    fn recover(&self, at: &str, snapshot: &[u8]) -> impl Future<Output = TalosResult<()>> + Send;
}

/// A boxed future (for the object-safe [`SnapshotSink`]).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the engine knows of a snapshot it took (the metadata stored with it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotSource {
    /// Hostname of the member.
    pub member: String,
    /// Its member ID.
    pub member_id: u64,
    /// etcd version it reported.
    pub etcd_version: String,
    /// Its raft index.
    pub raft_index: u64,
    /// Why it was taken.
    pub reason: String,
}

/// Where snapshots go (vixen-backup at the edge: check, encrypt, upload, prune; a fake in
/// tests). Object-safe so that the engine takes it as an option.
pub trait SnapshotSink: Send + Sync {
    /// What a failed snapshot before a risky step does.
    fn policy(&self) -> vixen_model::backup::BeforeRisky;
    /// Checks and stores `snapshot`; returns its key, or why it failed (no secret in it).
    fn save<'a>(
        &'a self,
        snapshot: Vec<u8>,
        source: SnapshotSource,
    ) -> BoxFuture<'a, Result<String, String>>;
}

/// The Kubernetes side of a disruption: drain before, readiness after. `control_planes` are the
/// addresses a port may ask for a kubeconfig.
pub trait KubeGates: Send + Sync {
    /// The Node objects, or `None` when no API answers (plans then have no Kubernetes steps).
    fn view(&self, control_planes: &[String]) -> impl Future<Output = Option<KubeView>> + Send;
    /// Cordon `node` and evict its pods (budgets honoured), within `limit`.
    fn drain(
        &self,
        control_planes: &[String],
        node: &str,
        limit: Duration,
        poll: Duration,
    ) -> impl Future<Output = Result<DrainReport, KubeError>> + Send;
    /// The Node called `node`.
    fn node(
        &self,
        control_planes: &[String],
        node: &str,
    ) -> impl Future<Output = Result<Option<NodeView>, KubeError>> + Send;
    /// The control-plane static pods (mirror pods) bound to the Node `node`.
    fn static_pods(
        &self,
        control_planes: &[String],
        node: &str,
    ) -> impl Future<Output = Result<Vec<StaticPod>, KubeError>> + Send;
    /// Undo vixen's own cordon of `node`.
    fn uncordon(
        &self,
        control_planes: &[String],
        node: &str,
    ) -> impl Future<Output = Result<(), KubeError>> + Send;
    /// Where the rollout of DaemonSet `namespace/name` stands (`None`: it does not exist).
    fn daemonset_progress(
        &self,
        control_planes: &[String],
        daemonset: &str,
    ) -> impl Future<Output = Result<Option<DaemonSetProgress>, KubeError>> + Send;
    /// Delete the Node object `node`.
    fn delete_node(
        &self,
        control_planes: &[String],
        node: &str,
    ) -> impl Future<Output = Result<(), KubeError>> + Send;
}

/// Where vixen keeps its inventory and journal.
pub trait StateStore: Send + Sync {
    /// The stored state (empty when there is none).
    fn load(&self) -> impl Future<Output = Result<State, StoreError>> + Send;
    /// Replaces the stored state, durably (a SIGKILL right after must not lose it).
    fn save(&self, state: &State) -> impl Future<Output = Result<(), StoreError>> + Send;
}
