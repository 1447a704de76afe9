//! The in-process lab: starts the nodes, applies faults, publishes `lab.json`, and stops every
//! process it started on [`Lab::shutdown`] or, failing that, on `Drop`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use crate::apiserver::{self, Kube, KubeOptions};
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
    /// Run a real kube-apiserver on the lab's etcd (`--kube`).
    pub kube: Option<KubeOptions>,
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
    /// This address of the node stops answering (a link or VLAN cut), from the next boot on.
    AddrDown(std::net::IpAddr),
    /// Its kubelet reports the Node NotReady (`--kube`), while Talos itself stays healthy.
    KubeletNotReady,
    /// Its kubelet reports Ready again.
    KubeletReady,
    /// Its etcd stops (crashed, or stopped by a leave) and stays stopped until the next boot,
    /// while the Talos API keeps answering.
    EtcdDown,
    /// Its install media is removed: after a reset that wipes the whole system disk it stays
    /// down (nothing to boot).
    BootMediaRemoved,
    /// Its Talos has not applied its Kubernetes manifests yet (`--kube`): the `talos.dev`
    /// ServiceAccount API is not served from this control plane, and its inline manifests are
    /// not applied from it.
    TalosApiAccessPending,
    /// Its Talos applies them now.
    TalosApiAccessReady,
    /// Its kube-apiserver static pod runs but is never Ready (`--kube`; a crash loop, a bad
    /// flag), while Talos and the kubelet are fine.
    ApiServerNotReady,
    /// Its kube-apiserver is Ready again.
    ApiServerReady,
}

impl std::str::FromStr for Fault {
    type Err = String;
    /// `down`, `up`, `slow-reboot MS`, `fail-next-upgrade`, `addr-down ADDR`,
    /// `kubelet-not-ready`, `kubelet-ready`, `etcd-down`, `boot-media-removed`,
    /// `talos-api-access-pending`, `talos-api-access-ready`, `apiserver-not-ready`,
    /// `apiserver-ready`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut words = s.split_whitespace();
        match (words.next(), words.next()) {
            (Some("down"), None) => Ok(Fault::Down),
            (Some("up"), None) => Ok(Fault::Up),
            (Some("fail-next-upgrade"), None) => Ok(Fault::FailNextUpgrade),
            (Some("kubelet-not-ready"), None) => Ok(Fault::KubeletNotReady),
            (Some("kubelet-ready"), None) => Ok(Fault::KubeletReady),
            (Some("etcd-down"), None) => Ok(Fault::EtcdDown),
            (Some("boot-media-removed"), None) => Ok(Fault::BootMediaRemoved),
            (Some("talos-api-access-pending"), None) => Ok(Fault::TalosApiAccessPending),
            (Some("talos-api-access-ready"), None) => Ok(Fault::TalosApiAccessReady),
            (Some("apiserver-not-ready"), None) => Ok(Fault::ApiServerNotReady),
            (Some("apiserver-ready"), None) => Ok(Fault::ApiServerReady),
            (Some("slow-reboot"), Some(ms)) => ms
                .parse()
                .map(Fault::SlowReboot)
                .map_err(|_| format!("bad milliseconds {ms:?}")),
            (Some("addr-down"), Some(ip)) => ip
                .parse()
                .map(Fault::AddrDown)
                .map_err(|_| format!("bad address {ip:?}")),
            _ => Err(format!("unknown fault {s:?}")),
        }
    }
}

/// How long the lab's nodes take for what Talos waits on. Defaults keep tests fast while still
/// showing every window a client must cope with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// After a node configures, Bootstrap answers `FailedPrecondition "bootstrap is not
    /// available yet"` this long (until CRI is up; `v1alpha1_server.go` Bootstrap).
    pub bootstrap_after_ms: u64,
    /// The node's time syncs this long after it configures (0: at once).
    pub time_sync_after_ms: u64,
    /// Bootstrap waits this long for time sync before `"time is not in sync yet"` (Talos: 5 s).
    pub time_sync_wait_ms: u64,
    /// EtcdLeaveCluster waits this long for the local member before failing (Talos: 3 minutes,
    /// `internal/pkg/etcd/local.go`).
    pub etcd_member_wait_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            bootstrap_after_ms: 300,
            time_sync_after_ms: 0,
            time_sync_wait_ms: 5000,
            etcd_member_wait_ms: 2000,
        }
    }
}

/// State shared by the nodes (they find each other through it).
pub(crate) struct LabInner {
    pub journal: Journal,
    pub reboot_ms: u64,
    pub timing: std::sync::Mutex<Timing>,
    pub nodes: Vec<Arc<Node>>,
    /// The kube-apiserver supervisor (`--kube`).
    pub kube: Option<Kube>,
}

impl LabInner {
    pub(crate) fn timing(&self) -> Timing {
        *self.timing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rewrites lab.json from the nodes' current state.
    pub(crate) fn publish(&self) {
        self.journal.write_status(&self.status());
    }

    /// The node table and the API server's URL.
    pub(crate) fn status(&self) -> LabStatus {
        LabStatus {
            nodes: self.nodes.iter().map(|n| n.status()).collect(),
            kube_api: self.kube.as_ref().and_then(Kube::url),
        }
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
            timing: std::sync::Mutex::new(Timing::default()),
            nodes: spec
                .nodes
                .iter()
                .map(|s| Arc::new(Node::new(s.clone(), weak.clone(), &opts.dir)))
                .collect(),
            kube: opts.kube.map(|k| Kube::new(k, &opts.dir)),
        });
        let lab = Lab { inner };
        for node in &lab.inner.nodes {
            node.wipe_disk();
            node.boot().await?;
        }
        if lab.inner.kube.is_some() {
            tokio::spawn(apiserver::supervise(Arc::downgrade(&lab.inner)));
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
        self.inner.status()
    }

    /// An admin kubeconfig (`system:masters`) for the lab's kube-apiserver, once it runs.
    ///
    /// # Errors
    /// [`Error::Tls`] when no API server runs yet or no certificate can be minted.
    pub fn kubeconfig(&self) -> Result<String> {
        let kube = self.inner.kube.as_ref();
        let url = kube
            .and_then(Kube::url)
            .ok_or_else(|| Error::Tls("no kube-apiserver runs (yet)".into()))?;
        let cfg = self
            .inner
            .nodes
            .iter()
            .filter_map(|n| n.config())
            .find(|c| Some(c.cluster_key()) == kube.and_then(Kube::cluster))
            .ok_or_else(|| Error::Tls("no config of the served cluster".into()))?;
        apiserver::kubeconfig(&cfg, &url, "admin", &["system:masters"]).map_err(Error::Tls)
    }

    fn node(&self, name: &str) -> Result<&Arc<Node>> {
        self.inner
            .nodes
            .iter()
            .find(|n| n.spec.name == name)
            .ok_or_else(|| Error::UnknownNode(name.to_string()))
    }

    /// Replaces the lab's [`Timing`] (for every node, from the next call on).
    pub fn set_timing(&self, timing: Timing) {
        *self.inner.timing.lock().unwrap_or_else(|e| e.into_inner()) = timing;
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
            Fault::AddrDown(ip) => node.faults(|f| f.addrs_down.push(ip)),
            Fault::KubeletNotReady => node.faults(|f| f.kubelet_not_ready = true),
            Fault::KubeletReady => node.faults(|f| f.kubelet_not_ready = false),
            Fault::BootMediaRemoved => node.faults(|f| f.boot_media_removed = true),
            Fault::TalosApiAccessPending => node.faults(|f| f.talos_api_access_pending = true),
            Fault::TalosApiAccessReady => node.faults(|f| f.talos_api_access_pending = false),
            Fault::ApiServerNotReady => node.faults(|f| f.apiserver_not_ready = true),
            Fault::ApiServerReady => node.faults(|f| f.apiserver_not_ready = false),
            Fault::EtcdDown => {
                node.st().etcd_left = true;
                node.stop_etcd().await;
            }
        }
        self.inner.publish();
        Ok(())
    }

    /// Stops every node and every etcd process.
    pub async fn shutdown(&self) {
        if let Some(kube) = &self.inner.kube {
            kube.shutdown().await;
        }
        for node in &self.inner.nodes {
            node.go_down(Mode::Down).await;
        }
        self.inner.publish();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(kube) = &self.inner.kube {
            kube.kill_now();
        }
        for node in &self.inner.nodes {
            node.kill_now();
        }
    }
}
