//! The planner's inputs (what Git wants, what the nodes say) and output (an ordered plan).
//!
//! ```text
//! Desired (repo + rendered configs) ─┐
//! Observed (nodes, etcd)            ─┼─► plan() ─► Plan { steps: [Step { node, action, reason, risk }] }
//! Inventory (what vixen applied)    ─┘
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::action::Step;
pub use vixen_model::Role;
pub use vixen_model::render::ConfigDigest;
pub use vixen_model::version::Version;

/// A node as Git wants it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredNode {
    /// Node name.
    pub name: String,
    /// Hostname (the node's etcd member name).
    pub hostname: String,
    /// Role.
    pub role: Role,
    /// Address in maintenance mode.
    pub maintenance_address: String,
    /// Addresses of the configured node, in order of preference.
    pub management_addresses: Vec<String>,
    /// Digests of the rendered config.
    pub config: ConfigDigest,
}

impl DesiredNode {
    /// The first management address.
    pub fn address(&self) -> &str {
        self.management_addresses
            .first()
            .map_or(&self.maintenance_address, String::as_str)
    }
}

/// The whole cluster as Git wants it. It serializes (every field) so that the engine's journal
/// can fingerprint it: a new field counts without anyone listing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Desired {
    /// Talos version (from the installer image tag).
    #[serde(serialize_with = "as_text")]
    pub talos_version: Version,
    /// Installer image, with tag.
    pub installer_image: String,
    /// Kubernetes version.
    #[serde(serialize_with = "as_text")]
    pub kubernetes_version: Version,
    /// Nodes, in repo order.
    pub nodes: Vec<DesiredNode>,
    /// Wait after each upgraded node.
    pub stabilization: Duration,
    /// Reset nodes that leave Git (else only leave etcd).
    pub reset_on_removal: bool,
    /// How many workers may be down at once because of vixen (`upgrade.workerConcurrency`):
    /// a worker is not disrupted while others already are.
    pub worker_concurrency: u32,
    /// What to do with a node whose running config drifted from the one vixen applied.
    pub drift: DriftPolicy,
    /// The CNI's agent DaemonSet (`namespace/name`) when vixen delivers the CNI: no node is
    /// disrupted while it rolls out (nodes need networking to restore networking).
    pub network_rollout: Option<String>,
}

/// What vixen does about drift: a configured node whose running config is no longer the one
/// rendered from Git (changed out of band), as Talos' dry-run apply tells.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftPolicy {
    /// Apply the rendered config again, as a normal step under the same gates.
    #[default]
    Correct,
    /// Only report it.
    Report,
}

/// Drift found on a node: Talos' dry run of its rendered config did not answer "No changes.".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// Talos would reboot the node to apply the rendered config (the mode its dry run chose).
    pub reboot: bool,
}

fn as_text<S: serde::Serializer>(v: &Version, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// What a node looks like from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Answers in maintenance mode: not configured.
    Maintenance,
    /// Configured and answering over mTLS.
    Configured,
    /// Answers nowhere.
    Unreachable,
}

/// A node as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedNode {
    /// Node name (desired or inventory name).
    pub name: String,
    /// Where it answered (or where it was last known).
    pub address: String,
    /// State.
    pub state: NodeState,
    /// Talos version it reports.
    pub talos_version: Option<Version>,
    /// Whether its services (apid, kubelet, etcd on control planes) report healthy.
    pub healthy: bool,
    /// Its running config drifted from the rendered one (only looked at on a resync).
    pub drift: Option<Drift>,
}

/// One etcd member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Member ID.
    pub id: u64,
    /// Member name (the node's hostname in Talos).
    pub name: String,
    /// A learner does not vote.
    pub is_learner: bool,
    /// The member has started (it has a name and client URLs).
    pub started: bool,
    /// Its peer URLs (`https://ADDRESS:2380`): where it is, whatever it is called.
    pub peer_urls: Vec<String>,
}

impl Member {
    /// Whether one of its peer URLs points at `address`.
    pub fn peers_at(&self, address: &str) -> bool {
        self.peer_urls.iter().any(|u| url_host(u) == address)
    }
}

/// The host of a URL such as `https://127.0.10.1:2380` or `https://[fd00::1]:2380`.
pub fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = rest.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    rest.rsplit_once(':').map_or(rest, |(h, _)| h)
}

/// etcd as seen through a healthy control plane.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdView {
    /// Members.
    pub members: Vec<Member>,
    /// The leader's member ID, if there is one.
    pub leader: Option<u64>,
}

impl EtcdView {
    /// Voting members.
    pub fn voters(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| !m.is_learner)
    }
    /// The member called `name`.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }
    /// The member of a node: by the member ID recorded when it joined, else by a peer URL at
    /// its address, else by its hostname. A member keeps its name when its node is renamed
    /// (etcd takes a new name only when the member restarts), so the name comes last.
    pub fn member_of(&self, id: Option<u64>, hostname: &str, address: &str) -> Option<&Member> {
        id.and_then(|id| self.members.iter().find(|m| m.id == id))
            .or_else(|| self.members.iter().find(|m| m.peers_at(address)))
            .or_else(|| self.member(hostname))
    }
    /// Whether the node's member (see [`EtcdView::member_of`]) leads etcd.
    pub fn leads(&self, id: Option<u64>, hostname: &str, address: &str) -> bool {
        self.leader.is_some_and(|l| {
            self.member_of(id, hostname, address)
                .is_some_and(|m| m.id == l)
        })
    }
    /// Name of the leader.
    pub fn leader_name(&self) -> Option<&str> {
        let id = self.leader?;
        self.members
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.name.as_str())
    }
}

/// Everything observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Nodes, desired or in the inventory.
    pub nodes: Vec<ObservedNode>,
    /// etcd, when a control plane answered.
    pub etcd: Option<EtcdView>,
    /// Kubernetes, when its API answered. Without it, plans have no drain or readiness steps
    /// (Talos still cordons and drains a node itself before an upgrade or a graceful reset).
    pub kubernetes: Option<KubeView>,
}

/// What the Kubernetes API shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeView {
    /// Node objects.
    pub nodes: Vec<KubeNode>,
}

impl KubeView {
    /// The Node object called `name` (a hostname).
    pub fn node(&self, name: &str) -> Option<&KubeNode> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// One Node object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeNode {
    /// Node name (the machine's hostname).
    pub name: String,
    /// Its `Ready` condition is `True`.
    pub ready: bool,
    /// vixen cordoned it (and has not uncordoned it yet): a run stopped part way.
    pub cordoned_by_vixen: bool,
    /// `status.nodeInfo.kubeletVersion` (`v1.34.1`).
    pub kubelet_version: String,
    /// On a control plane: its static pods (kube-apiserver, kube-controller-manager,
    /// kube-scheduler) as their mirror pods show them; empty when none is listed.
    pub static_pods: Vec<StaticPodView>,
}

/// A control-plane static pod on a Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticPodView {
    /// `k8s-app` (`kube-apiserver`, ...).
    pub component: String,
    /// Its image's tag (`v1.34.1`).
    pub tag: String,
    /// `Ready` condition is `True`.
    pub ready: bool,
}

/// The components `talosctl upgrade-k8s` rolls on each control plane.
pub const CONTROL_PLANE_COMPONENTS: [&str; 3] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// Whether each control-plane component has a Ready static pod on tag `version`.
pub fn static_pods_on(pods: &[StaticPodView], version: &str) -> bool {
    CONTROL_PLANE_COMPONENTS.iter().all(|c| {
        pods.iter()
            .any(|p| p.component == *c && p.ready && p.tag == version)
    })
}

impl Observed {
    /// The observation of `name`.
    pub fn node(&self, name: &str) -> Option<&ObservedNode> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// A node vixen configured before, as it recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryNode {
    /// Name it had in Git.
    pub name: String,
    /// Hostname it was given (its etcd member name).
    pub hostname: String,
    /// Role it was configured with.
    pub role: Role,
    /// Maintenance address (the machine's identity across renames).
    pub maintenance_address: String,
    /// Address vixen reached it at.
    pub address: String,
    /// Digests of the config it was given.
    pub config: ConfigDigest,
    /// Its etcd member ID (control planes), learned once it joined: the member's identity
    /// across renames and re-addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_id: Option<u64>,
    /// The config was applied live on a Talos that no longer reboots on apply (1.14+), the
    /// change takes effect at the next boot, and vixen has not rebooted the node since: the
    /// next plan reboots it (behind the same gates) even when Git has changed meanwhile.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reboot_pending: bool,
}

/// What vixen applied before (kept in the journal).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// Nodes vixen configured.
    pub nodes: Vec<InventoryNode>,
    /// Kubernetes version last rolled out.
    #[serde(default)]
    pub kubernetes_version: Option<String>,
}

impl Inventory {
    /// The entry called `name`.
    pub fn node(&self, name: &str) -> Option<&InventoryNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Records each control plane's etcd member ID from what etcd lists: the recorded ID while
    /// etcd still lists it, else the member at the node's address or with its hostname that no
    /// other entry holds. Returns whether anything changed (the journal is then saved).
    pub fn learn_members(&mut self, etcd: &EtcdView) -> bool {
        let mut changed = false;
        for i in 0..self.nodes.len() {
            let n = &self.nodes[i];
            if n.role != Role::Controlplane
                || n.member_id
                    .is_some_and(|id| etcd.members.iter().any(|m| m.id == id))
            {
                continue;
            }
            let claimed = |id: u64| {
                self.nodes
                    .iter()
                    .enumerate()
                    .any(|(j, o)| j != i && o.member_id == Some(id))
            };
            let found = etcd
                .members
                .iter()
                .filter(|m| !claimed(m.id))
                .find(|m| m.peers_at(&n.address))
                .or_else(|| {
                    etcd.members
                        .iter()
                        .filter(|m| !claimed(m.id))
                        .find(|m| m.name == n.hostname)
                })
                .map(|m| m.id);
            if self.nodes[i].member_id != found {
                self.nodes[i].member_id = found;
                changed = true;
            }
        }
        changed
    }
}

/// How a config is applied (always explicit: Talos' default mode value 0 is REBOOT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyMode {
    /// Apply live; Talos refuses if the change needs a reboot.
    NoReboot,
    /// Apply and reboot.
    Reboot,
    /// Let Talos decide (first configuration in maintenance mode).
    Auto,
}

/// The planner's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Steps in order.
    pub steps: Vec<Step>,
    /// Nodes vixen cannot act on now, and why (the cluster is not converged while any remain).
    pub waiting: Vec<String>,
}

impl Plan {
    /// Steps that change something.
    pub fn mutating(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(|s| s.is_mutating())
    }
}

/// Why no plan can be made: the repo asks for something unsafe or impossible now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No control plane is configured: the cluster must be bootstrapped by `vixen bootstrap`.
    #[error(
        "the cluster is not bootstrapped (no configured control plane answers); run `vixen bootstrap` once"
    )]
    NotBootstrapped,
    /// A Talos upgrade skips a minor version.
    #[error("node {node}: {reason}")]
    UpgradePath {
        /// Node.
        node: String,
        /// What is wrong.
        reason: String,
    },
    /// A Kubernetes version change skips a minor or breaks the skew policy.
    #[error("Kubernetes: {0}")]
    KubernetesPath(String),
    /// The change would leave etcd without quorum.
    #[error("etcd: {0}")]
    Quorum(String),
    /// The plan is risky, `backup.beforeRisky` is `required`, and the fresh etcd snapshot
    /// failed: nothing was changed, the next reconcile tries again.
    #[error(
        "no fresh etcd snapshot before {risk}: {error}; nothing was changed (backup.beforeRisky: required)"
    )]
    SnapshotFailed {
        /// What the plan would have risked.
        risk: String,
        /// Why the snapshot failed.
        error: String,
    },
    /// A node refused its rendered config in the dry run made before the plan's first call
    /// (Talos is the validator of last resort): nothing was changed.
    #[error("{node} refuses its rendered config (dry run, nothing was changed): {message}")]
    ConfigRefused {
        /// Node.
        node: String,
        /// Talos' own message.
        message: String,
    },
}
