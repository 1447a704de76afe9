//! The Kubernetes side of the vixen agent, kept apart from the engine (no Talos, no Git here).
//!
//! ```text
//! LeaderElector ──renews──► coordination.k8s.io/v1 Lease "vixen"        (one replica acts)
//! Journal       ──get/replace(resourceVersion)──► ConfigMap "vixen-state" (journal, fenced)
//! cilium        ──server-side apply (manager "vixen")──► CiliumLoadBalancerIPPool,
//!                                                         CiliumL2AnnouncementPolicy (+ prune)
//! status        ──apply status──► VixenCluster "<cluster>" (kubectl get vixenclusters)
//! Events        ──create──► events.k8s.io/v1 Event, regarding the VixenCluster
//! Nodes         ──cordon/evict/uncordon/delete──► Node, pods/eviction (the engine's gates)
//! PushSignal    ──update (standby) / get (leader)──► ConfigMap "vixen-push" (webhook relay)
//! ```
//!
//! Every write goes through [`kube::Client`], so the unit tests drive it with a `tower_test` mock
//! (see `tests/`). Nothing here ever sees a secret: the journal holds names and digests only.

pub mod cilium;
pub mod events;
pub mod handover;
pub mod install;
pub mod journal;
pub mod lease;
pub mod manifests;
pub mod nodes;
pub mod preview;
pub mod push;
pub mod status;

pub use cilium::{ApplyReport, CiliumApi, Conflict, NetworkObjects, PoolVersion};
pub use events::{EventRecorder, EventType};
pub use handover::Handover;
pub use journal::Journal;
pub use lease::{LeaderElector, LeaseConfig};
pub use manifests::{DaemonSetProgress, ManifestSets, SET_LABEL, SetReport};
pub use nodes::{CORDONED_BY_VIXEN, DrainReport, NodeView, Nodes, StaticPod};
pub use preview::SetPreview;
pub use push::{Push, PushSignal};
pub use status::{
    BackupStatus, Condition, NodeStatus, Phase, StatusApi, VixenCluster, VixenClusterSpec,
    VixenClusterStatus, render_table,
};

/// The field manager of every server-side apply vixen makes.
pub const FIELD_MANAGER: &str = "vixen";
/// The label every object vixen creates carries (`app.kubernetes.io/managed-by=vixen`).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "vixen");

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong talking to the API server. No variant carries a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("{verb} {what}: {source}")]
    Kube {
        /// `get`, `apply`, `replace`, ...
        verb: &'static str,
        /// The object (`lease vixen-system/vixen`).
        what: String,
        /// The client error.
        #[source]
        source: Box<kube::Error>,
    },
    /// Another writer changed the object since it was read (optimistic concurrency).
    #[error("{what} was changed by someone else (resourceVersion conflict)")]
    Conflict {
        /// The object.
        what: String,
    },
    /// This replica is not the leader: the write was not made.
    #[error("not the leader: {0} refused")]
    NotLeader(&'static str),
    /// The stored data cannot be decoded.
    #[error("{what}: {reason}")]
    Decode {
        /// The object.
        what: String,
        /// Why.
        reason: String,
    },
    /// The repo's network file cannot be turned into Cilium objects.
    #[error("network.yaml: {0}")]
    Network(String),
    /// A drain ran out of time with pods still on the node.
    #[error("draining node {node}: {} {} still there ({}); last refusal: {reason}", pods.len(), if pods.len() == 1 { "pod" } else { "pods" }, pods.join(", "))]
    Drain {
        /// The node.
        node: String,
        /// Pods left (`namespace/name`).
        pods: Vec<String>,
        /// Why the last eviction was refused.
        reason: String,
    },
}

impl Error {
    /// A fixed label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube { source, .. } => match source.as_ref() {
                kube::Error::Api(s) if s.code == 403 => "kube_forbidden",
                kube::Error::Api(s) if s.code == 404 => "kube_not_found",
                kube::Error::Api(_) => "kube_api",
                _ => "kube_unreachable",
            },
            Self::Conflict { .. } => "kube_conflict",
            Self::NotLeader(_) => "not_leader",
            Self::Decode { .. } => "kube_decode",
            Self::Network(_) => "network_config",
            Self::Drain { .. } => "drain_timeout",
        }
    }

    pub(crate) fn kube(verb: &'static str, what: impl Into<String>, source: kube::Error) -> Self {
        let what = what.into();
        if let kube::Error::Api(s) = &source
            && s.code == 409
            && verb != "apply"
        {
            return Self::Conflict { what };
        }
        Self::Kube {
            verb,
            what,
            source: Box::new(source),
        }
    }
}

/// The API status code of a client error, if the server answered.
pub(crate) fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}
