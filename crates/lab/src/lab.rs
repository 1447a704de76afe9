//! The in-process lab: starts the nodes, applies faults, publishes `lab.json`, and stops every
//! process it started on [`Lab::shutdown`] or, failing that, on `Drop`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use crate::journal::{Journal, LabStatus};
use crate::node::{Mode, Node};
use crate::{Error, LabSpec, Result};

/// How to run the lab.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// LABDIR: lab.json, calls.jsonl, per-node state (etcd data) and logs.
    pub dir: PathBuf,
    /// How long a reboot keeps a node unreachable.
    pub reboot_ms: u64,
}

/// Faults injected into a node (`vixen lab fault`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Power off: unreachable, etcd killed, until `Up`.
    Down,
    /// Power on again (boots as after a reboot).
    Up,
    /// Reboots of this node take this long instead of `reboot_ms`.
    SlowReboot(u64),
    /// The next upgrade's image fails to boot; the node rolls back (A/B).
    FailNextUpgrade,
}

impl std::str::FromStr for Fault {
    type Err = String;
    /// `down`, `up`, `slow-reboot MS`, `fail-next-upgrade`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut words = s.split_whitespace();
        match (words.next(), words.next()) {
            (Some("down"), None) => Ok(Fault::Down),
            (Some("up"), None) => Ok(Fault::Up),
            (Some("fail-next-upgrade"), None) => Ok(Fault::FailNextUpgrade),
            (Some("slow-reboot"), Some(ms)) => ms
                .parse()
                .map(Fault::SlowReboot)
                .map_err(|_| format!("bad milliseconds {ms:?}")),
            _ => Err(format!("unknown fault {s:?}")),
        }
    }
}

/// State shared by the nodes (they find each other through it).
pub(crate) struct LabInner {
    pub journal: Journal,
    pub reboot_ms: u64,
    pub nodes: Vec<Arc<Node>>,
}

impl LabInner {
    /// Rewrites lab.json from the nodes' current state.
    pub(crate) fn publish(&self) {
        let nodes = self.nodes.iter().map(|n| n.status()).collect();
        self.journal.write_status(&LabStatus { nodes });
    }

    /// The node answering on `ip`, or named / with hostname `name`.
    pub(crate) fn find(&self, key: &str) -> Option<Arc<Node>> {
        let ip: Option<IpAddr> = key.split(':').next().and_then(|h| h.parse().ok());
        self.nodes
            .iter()
            .find(|n| match ip {
                Some(ip) => n.listens_on(ip),
                None => n.spec.name == key || n.hostname() == key,
            })
            .cloned()
    }
}

/// A running lab.
pub struct Lab {
    inner: Arc<LabInner>,
}

impl Lab {
    /// Starts one node per spec entry, in maintenance mode on its maintenance address, and
    /// returns once all listen.
    ///
    /// # Errors
    /// [`Error::Spec`], [`Error::Io`], or [`Error::Listen`] when an address is taken.
    pub async fn start(spec: &LabSpec, opts: LabOptions) -> Result<Lab> {
        spec.validate()?;
        let journal = Journal::create(&opts.dir)?;
        let inner = Arc::new_cyclic(|weak: &Weak<LabInner>| LabInner {
            journal,
            reboot_ms: opts.reboot_ms,
            nodes: spec
                .nodes
                .iter()
                .map(|s| Arc::new(Node::new(s.clone(), weak.clone(), &opts.dir)))
                .collect(),
        });
        let lab = Lab { inner };
        for node in &lab.inner.nodes {
            node.wipe_disk();
            node.boot().await?;
        }
        lab.inner.publish();
        Ok(lab)
    }

    /// LABDIR.
    pub fn dir(&self) -> &Path {
        self.inner.journal.dir()
    }

    /// The current node table (what lab.json holds).
    pub fn status(&self) -> LabStatus {
        LabStatus {
            nodes: self.inner.nodes.iter().map(|n| n.status()).collect(),
        }
    }

    fn node(&self, name: &str) -> Result<&Arc<Node>> {
        self.inner
            .nodes
            .iter()
            .find(|n| n.spec.name == name)
            .ok_or_else(|| Error::UnknownNode(name.to_string()))
    }

    /// Injects a fault.
    ///
    /// # Errors
    /// [`Error::UnknownNode`]; [`Error::Listen`] when `Up` cannot bind.
    pub async fn fault(&self, node: &str, fault: Fault) -> Result<()> {
        let node = self.node(node)?;
        match fault {
            Fault::Down => node.go_down(Mode::Down).await,
            Fault::Up => {
                if node.mode() == Mode::Down {
                    node.boot().await?;
                }
            }
            Fault::SlowReboot(ms) => node.faults(|f| f.slow_reboot_ms = Some(ms)),
            Fault::FailNextUpgrade => node.faults(|f| f.fail_next_upgrade = true),
        }
        self.inner.publish();
        Ok(())
    }

    /// Stops every node and every etcd process.
    pub async fn shutdown(&self) {
        for node in &self.inner.nodes {
            node.go_down(Mode::Down).await;
        }
        self.inner.publish();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for node in &self.inner.nodes {
            node.kill_now();
        }
    }
}
