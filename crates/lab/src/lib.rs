//! vixen-lab: simulated Talos nodes on loopback that speak the real Talos gRPC API and run real
//! etcd, so that lifecycle tests, the demo and rehearsals exercise the same wire protocol.
//!
//! ```text
//! Lab ──owns──► Node (one per NodeSpec) ──boot──► server (apid stand-in on every address:50000)
//!  │             │  maintenance: self-signed TLS     configured: mTLS from machine.ca
//!  │             └──control plane──► EtcdMember (a real `etcd` child process)
//!  └──► Journal: LABDIR/lab.json (node table, kept current), LABDIR/calls.jsonl (one line per RPC)
//! ```
//!
//! With [`KubeOptions`] (`vixen lab up --kube`), a real kube-apiserver runs on the lab's etcd and
//! the nodes keep their `Node` objects (see `apiserver`, `kubelet`).
//!
//! Every child process is stopped by [`Lab::shutdown`] and, as a last resort, by `Drop`.

mod apid;
mod apiserver;
mod config;
mod daemon;
mod daemonsets;
mod etcd;
mod etcd_ops;
mod events;
mod image_api;
mod images;
mod journal;
mod kubeconfig;
mod kubelet;
mod lab;
mod manifests;
mod node;
mod ops;
pub mod peers;
mod recover;
mod reset;
mod server;
mod services;
mod state_api;
mod storage_api;
mod talos_sa;
mod tls;
mod validate;
mod versions;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use apiserver::KubeOptions;
pub use config::MachineConfig;
pub use daemon::{
    Control, ControlReply, control_socket, ready_file, run_daemon, send_control, serve_blocking,
};
pub use journal::{CallRecord, LabStatus, NodeStatus};
pub use lab::{Fault, Lab, LabOptions, Timing};

/// Errors of the lab.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The spec is unusable (duplicate names or addresses, address outside 127.0.0.0/8...).
    #[error("lab spec: {0}")]
    Spec(String),
    /// No node of that name.
    #[error("no node named {0:?}")]
    UnknownNode(String),
    /// A file of the lab directory could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A node could not listen on its address.
    #[error("node {node}: cannot listen on {addr}: {source}")]
    Listen {
        /// The node.
        node: String,
        /// The address.
        addr: String,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
    /// TLS material could not be produced.
    #[error("tls: {0}")]
    Tls(String),
    /// The lab daemon's control socket failed.
    #[error("control: {0}")]
    Control(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A node's role, as in `machine.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs etcd and the Kubernetes control plane.
    Controlplane,
    /// Runs workloads only.
    Worker,
}

impl Role {
    /// `controlplane` or `worker`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Controlplane => "controlplane",
            Role::Worker => "worker",
        }
    }
}

/// What the lab runs: one simulated node per entry. JSON form (`vixen lab up --spec FILE`):
/// `{"nodes": [{"name": "cp1", "role": "controlplane", "maintenance_address": "127.0.10.1",
/// "talos_version": "v1.11.6"}]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabSpec {
    /// The nodes.
    pub nodes: Vec<NodeSpec>,
}

/// One simulated node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Node name (the repo's node name; also the hostname until a config sets one).
    pub name: String,
    /// The role the repo gives it.
    pub role: Role,
    /// Where it listens in maintenance mode (port 50000); must be in 127.0.0.0/8.
    pub maintenance_address: IpAddr,
    /// The Talos version it boots before any install (the ISO), e.g. `v1.11.6`.
    pub talos_version: String,
}

impl LabSpec {
    /// Checks names, addresses and versions.
    ///
    /// # Errors
    /// [`Error::Spec`] naming the first problem.
    pub fn validate(&self) -> Result<()> {
        let mut names = std::collections::HashSet::new();
        let mut addrs = std::collections::HashSet::new();
        if self.nodes.is_empty() {
            return Err(Error::Spec("no nodes".into()));
        }
        for n in &self.nodes {
            if n.name.is_empty() || !names.insert(&n.name) {
                return Err(Error::Spec(format!(
                    "node name {:?} empty or repeated",
                    n.name
                )));
            }
            if !is_lab_address(n.maintenance_address) || !addrs.insert(n.maintenance_address) {
                return Err(Error::Spec(format!(
                    "node {}: maintenance address {} repeated or outside 127.0.0.0/8",
                    n.name, n.maintenance_address
                )));
            }
            if vixen_talos::TalosVersion::parse(&n.talos_version).is_none() {
                return Err(Error::Spec(format!(
                    "node {}: bad talos_version {:?}",
                    n.name, n.talos_version
                )));
            }
        }
        Ok(())
    }
}

/// The lab only ever binds loopback addresses (127.0.0.0/8).
pub fn is_lab_address(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 127)
}

impl LabSpec {
    /// Reads a spec from a JSON file.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Spec`].
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| journal::io(path, e))?;
        let spec: Self = serde_json::from_str(&text)
            .map_err(|e| Error::Spec(format!("{}: {e}", path.display())))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Writes the spec as JSON.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        std::fs::write(path, text + "\n").map_err(|e| journal::io(path, e))
    }
}
