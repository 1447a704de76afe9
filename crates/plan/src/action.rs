//! The steps of a plan: what to do to one node ([`Action`]), what it risks, and how the
//! executor must treat it ([`Action::class`]: one exhaustive table instead of lists kept by hand).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::state::ApplyMode;

/// One thing to do to one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Send the rendered config.
    ApplyConfig {
        /// Mode.
        mode: ApplyMode,
        /// Address to send it to (where the node is now).
        address: String,
        /// The node is in maintenance mode (insecure TLS, no client cert).
        maintenance: bool,
        /// The change takes effect only at the next boot, and a [`Action::Reboot`] step of this
        /// plan follows (Talos 1.14+ applies every config live and never reboots on apply).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        reboot_after: bool,
    },
    /// Wait until the node answers configured at `address`, healthy, at `version`.
    WaitReady {
        /// Address to reach it at.
        address: String,
        /// Talos version it must report (None: any).
        version: Option<String>,
    },
    /// Wait until the node's etcd member has joined, started and been promoted.
    WaitEtcdMember,
    /// Move etcd leadership away from this node.
    ForfeitLeadership,
    /// Remove this node's own member from etcd (EtcdLeaveCluster on the node).
    LeaveEtcd,
    /// Remove a member through a healthy peer (the node is unreachable).
    RemoveMember {
        /// Member ID.
        member_id: u64,
        /// Control plane to ask.
        via: String,
    },
    /// Check that etcd has exactly the expected voting members, all started.
    CheckMembers {
        /// Expected member names.
        expected: Vec<String>,
    },
    /// Reset the node back to maintenance mode.
    Reset {
        /// Graceful (cordon, drain, leave etcd) as Talos does it.
        graceful: bool,
    },
    /// Wait until the node answers in maintenance mode at its maintenance address.
    WaitMaintenance {
        /// Maintenance address.
        address: String,
    },
    /// Upgrade Talos to `image` with the legacy MachineService.Upgrade (Talos up to 1.12): the
    /// node pulls the image, installs it and reboots by itself.
    Upgrade {
        /// Installer image with tag.
        image: String,
    },
    /// Pull `image` into the node's containerd store (ImageService.Pull, Talos 1.13+): the
    /// lifecycle upgrade refuses an image that is not there.
    PullImage {
        /// Installer image with tag.
        image: String,
    },
    /// Install `image` on the inactive boot partition (LifecycleService.Upgrade, Talos 1.13+).
    /// The node does not reboot: a [`Action::Reboot`] step follows.
    LifecycleUpgrade {
        /// Installer image with tag.
        image: String,
    },
    /// Reboot the node (after a lifecycle upgrade, or a config change Talos applied live but
    /// that only takes effect on the next boot).
    Reboot,
    /// Check, before a control-plane upgrade, what Talos' legacy Upgrade checked: not exactly
    /// 2 members, every member started, none a learner, etcd healthy.
    CheckUpgradeSafe,
    /// Wait so the node proves stable.
    Stabilize {
        /// How long.
        millis: u64,
    },
    /// Cordon the Node and evict its pods (not DaemonSet or mirror pods) through the Eviction
    /// API, so PodDisruptionBudgets are honoured; done when no such pod is left.
    Drain {
        /// Node object name (the hostname).
        node_name: String,
    },
    /// Wait until the Node is `Ready` in Kubernetes (on `version` when given: its OS image).
    WaitNodeReady {
        /// Node object name.
        node_name: String,
        /// Talos version its OS image must show (`v1.11.6`).
        version: Option<String>,
    },
    /// Wait until the node runs Kubernetes `version`, as `talosctl upgrade-k8s` waits for each
    /// kubelet (talos pkg/cluster/kubernetes/kubelet.go): its Node reports that kubelet version
    /// and is `Ready`.
    WaitKubernetes {
        /// Node object name.
        node_name: String,
        /// Kubernetes version (`v1.35.0`).
        version: String,
    },
    /// Make the Node schedulable again (only a cordon vixen made).
    Uncordon {
        /// Node object name.
        node_name: String,
    },
    /// Delete the Node object of a machine that left the cluster.
    DeleteNode {
        /// Node object name.
        node_name: String,
    },
}

/// What a step can disrupt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Risk {
    /// The node reboots.
    pub reboot: bool,
    /// The node is wiped.
    pub reset: bool,
    /// etcd membership changes.
    pub etcd: bool,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Target node.
    pub node: String,
    /// What to do.
    #[serde(flatten)]
    pub action: Action,
    /// Why, in words.
    pub reason: String,
    /// What it can disrupt.
    pub risk: Risk,
}

impl Step {
    /// True when the step changes something on a node or in Kubernetes (as opposed to waiting
    /// or checking).
    pub fn is_mutating(&self) -> bool {
        self.action.class().mutating
    }
}

/// The kind of an [`Action`], without its data: a fixed label for logs, metrics and Events
/// (the same word as the journal's `kind` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ActionKind {
    /// [`Action::ApplyConfig`].
    ApplyConfig,
    /// [`Action::WaitReady`].
    WaitReady,
    /// [`Action::WaitEtcdMember`].
    WaitEtcdMember,
    /// [`Action::ForfeitLeadership`].
    ForfeitLeadership,
    /// [`Action::LeaveEtcd`].
    LeaveEtcd,
    /// [`Action::RemoveMember`].
    RemoveMember,
    /// [`Action::CheckMembers`].
    CheckMembers,
    /// [`Action::Reset`].
    Reset,
    /// [`Action::WaitMaintenance`].
    WaitMaintenance,
    /// [`Action::Upgrade`].
    Upgrade,
    /// [`Action::PullImage`].
    PullImage,
    /// [`Action::LifecycleUpgrade`].
    LifecycleUpgrade,
    /// [`Action::Reboot`].
    Reboot,
    /// [`Action::CheckUpgradeSafe`].
    CheckUpgradeSafe,
    /// [`Action::Stabilize`].
    Stabilize,
    /// [`Action::Drain`].
    Drain,
    /// [`Action::WaitNodeReady`].
    WaitNodeReady,
    /// [`Action::WaitKubernetes`].
    WaitKubernetes,
    /// [`Action::Uncordon`].
    Uncordon,
    /// [`Action::DeleteNode`].
    DeleteNode,
}

impl ActionKind {
    /// The label (`apply_config`, `upgrade`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::ApplyConfig => "apply_config",
            ActionKind::WaitReady => "wait_ready",
            ActionKind::WaitEtcdMember => "wait_etcd_member",
            ActionKind::ForfeitLeadership => "forfeit_leadership",
            ActionKind::LeaveEtcd => "leave_etcd",
            ActionKind::RemoveMember => "remove_member",
            ActionKind::CheckMembers => "check_members",
            ActionKind::Reset => "reset",
            ActionKind::WaitMaintenance => "wait_maintenance",
            ActionKind::Upgrade => "upgrade",
            ActionKind::PullImage => "pull_image",
            ActionKind::LifecycleUpgrade => "lifecycle_upgrade",
            ActionKind::Reboot => "reboot",
            ActionKind::CheckUpgradeSafe => "check_upgrade_safe",
            ActionKind::Stabilize => "stabilize",
            ActionKind::Drain => "drain",
            ActionKind::WaitNodeReady => "wait_node_ready",
            ActionKind::WaitKubernetes => "wait_kubernetes",
            ActionKind::Uncordon => "uncordon",
            ActionKind::DeleteNode => "delete_node",
        }
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an action does to its node and to etcd, as far as the executor's interlocks care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disruption {
    /// Nothing goes down.
    None,
    /// The node goes down (a reboot, an upgrade, a reset): on a control plane its etcd member
    /// stops voting until it is back.
    Node,
    /// The node's etcd member leaves the member list (the node itself stays up).
    Member,
}

/// How the executor treats an action: one exhaustive table (a new action cannot be added
/// without saying how it behaves after a crash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    /// It changes something on a node or in Kubernetes.
    pub mutating: bool,
    /// It must not be sent again when it was in flight as the agent died (the node may be
    /// rebooting or wiping from it); the next gate finds out whether it took. Every other
    /// action is safe to repeat.
    pub fire_once: bool,
    /// What it takes down.
    pub disrupts: Disruption,
}

impl Action {
    /// The kind, without data.
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::ApplyConfig { .. } => ActionKind::ApplyConfig,
            Action::WaitReady { .. } => ActionKind::WaitReady,
            Action::WaitEtcdMember => ActionKind::WaitEtcdMember,
            Action::ForfeitLeadership => ActionKind::ForfeitLeadership,
            Action::LeaveEtcd => ActionKind::LeaveEtcd,
            Action::RemoveMember { .. } => ActionKind::RemoveMember,
            Action::CheckMembers { .. } => ActionKind::CheckMembers,
            Action::Reset { .. } => ActionKind::Reset,
            Action::WaitMaintenance { .. } => ActionKind::WaitMaintenance,
            Action::Upgrade { .. } => ActionKind::Upgrade,
            Action::PullImage { .. } => ActionKind::PullImage,
            Action::LifecycleUpgrade { .. } => ActionKind::LifecycleUpgrade,
            Action::Reboot => ActionKind::Reboot,
            Action::CheckUpgradeSafe => ActionKind::CheckUpgradeSafe,
            Action::Stabilize { .. } => ActionKind::Stabilize,
            Action::Drain { .. } => ActionKind::Drain,
            Action::WaitNodeReady { .. } => ActionKind::WaitNodeReady,
            Action::WaitKubernetes { .. } => ActionKind::WaitKubernetes,
            Action::Uncordon { .. } => ActionKind::Uncordon,
            Action::DeleteNode { .. } => ActionKind::DeleteNode,
        }
    }

    /// How the executor treats it (see [`Class`]).
    pub fn class(&self) -> Class {
        const fn c(mutating: bool, fire_once: bool, disrupts: Disruption) -> Class {
            Class {
                mutating,
                fire_once,
                disrupts,
            }
        }
        use Disruption as D;
        match self {
            // In maintenance mode the node installs and reboots into its config: it was no
            // member before. A configured node may reboot from it (REBOOT, or AUTO when Talos
            // decides so); NO_REBOOT is applied live and is safe to send again.
            Action::ApplyConfig {
                maintenance: true, ..
            } => c(true, true, D::None),
            Action::ApplyConfig {
                mode: ApplyMode::NoReboot,
                ..
            } => c(true, false, D::None),
            Action::ApplyConfig { .. } => c(true, true, D::Node),
            Action::Upgrade { .. } | Action::Reboot | Action::Reset { .. } => {
                c(true, true, D::Node)
            }
            // Pulling and installing on the inactive partition change nothing that runs: both
            // may be sent again (Talos installs the same image again).
            Action::PullImage { .. } | Action::LifecycleUpgrade { .. } => c(true, false, D::None),
            Action::LeaveEtcd => c(true, true, D::Member),
            Action::RemoveMember { .. } => c(true, true, D::Member),
            Action::ForfeitLeadership => c(true, false, D::None),
            Action::Drain { .. } | Action::Uncordon { .. } | Action::DeleteNode { .. } => {
                c(true, false, D::None)
            }
            Action::WaitReady { .. }
            | Action::WaitEtcdMember
            | Action::CheckMembers { .. }
            | Action::WaitMaintenance { .. }
            | Action::CheckUpgradeSafe
            | Action::Stabilize { .. }
            | Action::WaitNodeReady { .. }
            | Action::WaitKubernetes { .. } => c(false, false, D::None),
        }
    }

    /// The action as words, without the node and the reason (for errors, logs and Events).
    pub fn describe(&self) -> String {
        match self {
            Action::ApplyConfig {
                mode,
                address,
                maintenance,
                reboot_after,
            } => format!(
                "apply config ({}) at {address}{}{}",
                match mode {
                    ApplyMode::NoReboot => "no-reboot",
                    ApplyMode::Reboot => "reboot",
                    ApplyMode::Auto => "auto",
                },
                if *maintenance { " [maintenance]" } else { "" },
                if *reboot_after {
                    ", effective after the reboot that follows"
                } else {
                    ""
                }
            ),
            Action::WaitReady { address, version } => match version {
                Some(v) => format!("wait ready at {address} on {v}"),
                None => format!("wait ready at {address}"),
            },
            Action::WaitEtcdMember => "wait for its etcd member (joined, promoted)".into(),
            Action::ForfeitLeadership => "forfeit etcd leadership".into(),
            Action::LeaveEtcd => "leave etcd".into(),
            Action::RemoveMember { member_id, via } => {
                format!("remove etcd member {member_id:x} via {via}")
            }
            Action::CheckMembers { expected } => {
                format!("check etcd members = [{}]", expected.join(", "))
            }
            Action::Reset { graceful } => {
                format!("reset ({})", if *graceful { "graceful" } else { "forced" })
            }
            Action::WaitMaintenance { address } => {
                format!("wait for maintenance mode at {address}")
            }
            Action::Upgrade { image } => format!("upgrade to {image}"),
            Action::PullImage { image } => format!("pull {image}"),
            Action::LifecycleUpgrade { image } => format!("install {image} (lifecycle upgrade)"),
            Action::Reboot => "reboot".into(),
            Action::CheckUpgradeSafe => "check etcd is safe to upgrade a member".into(),
            Action::Stabilize { millis } => format!("stabilize {}s", millis / 1000),
            Action::Drain { node_name } => format!("cordon and drain Node {node_name}"),
            Action::WaitNodeReady { node_name, version } => match version {
                Some(v) => format!("wait for Node {node_name} Ready on {v}"),
                None => format!("wait for Node {node_name} Ready"),
            },
            Action::WaitKubernetes { node_name, version } => {
                format!("wait for Node {node_name} Ready with kubelet {version}")
            }
            Action::Uncordon { node_name } => format!("uncordon Node {node_name}"),
            Action::DeleteNode { node_name } => format!("delete Node {node_name}"),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = self.action.describe();
        let mut flags = Vec::new();
        if self.risk.reboot {
            flags.push("REBOOT");
        }
        if self.risk.reset {
            flags.push("RESET");
        }
        if self.risk.etcd {
            flags.push("ETCD");
        }
        let flags = if flags.is_empty() {
            String::new()
        } else {
            format!(" [{}]", flags.join(","))
        };
        write!(f, "{:<10} {what}{flags}  -- {}", self.node, self.reason)
    }
}
