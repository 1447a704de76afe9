//! One simulated Talos node: its state machine (maintenance -> configured -> rebooting/down),
//! its API server on every address it owns, and its etcd member's lifecycle.
//!
//! ```text
//! maintenance ──apply──► rebooting ──► configured ──reboot/upgrade──► rebooting ──► configured
//!      ▲                                   │ reset (graceful: leave etcd first)
//!      └──────────── rebooting ◄───────────┘
//! ```

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use vixen_talos::TalosVersion;
use vixen_talos::api::machine as pb;
use vixen_talos::api::machine::sequence_event::Action as SeqAction;

use crate::config::MachineConfig;
use crate::etcd::{self, EtcdProcess};
use crate::events::{EventLog, Payload};
use crate::journal::NodeStatus;
use crate::lab::LabInner;
use crate::{NodeSpec, Result, Role, server, tls};

/// How long a rebooting node waits for its etcd to exit after SIGTERM before it kills it
/// (Talos waits its services' GracefulShutdownTimeout; a lab member exits in milliseconds).
const ETCD_GRACE: Duration = Duration::from_secs(5);

/// What the node is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Maintenance,
    Configured,
    Rebooting,
    Down,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Maintenance => "maintenance",
            Mode::Configured => "configured",
            Mode::Rebooting => "rebooting",
            Mode::Down => "down",
        }
    }
}

/// Injected faults.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    pub slow_reboot_ms: Option<u64>,
    pub fail_next_upgrade: bool,
    /// Addresses cut off (the node keeps them in its config but nobody reaches them there).
    pub addrs_down: Vec<IpAddr>,
    /// The kubelet reports NotReady although Talos runs fine (a CNI or runtime problem).
    pub kubelet_not_ready: bool,
    /// The install media was removed: a node whose system disk is wiped has nothing to boot.
    pub boot_media_removed: bool,
    /// Talos has not applied its Kubernetes manifests yet: no `talos.dev` CRD from this node.
    pub talos_api_access_pending: bool,
    /// Its kube-apiserver static pod is never Ready.
    pub apiserver_not_ready: bool,
}

/// Mutable state; never held across an await.
pub(crate) struct State {
    pub mode: Mode,
    /// The running Talos version tag.
    pub version: String,
    /// The active machine config (None: maintenance mode).
    pub config: Option<Arc<MachineConfig>>,
    /// A config applied with STAGED, installed at the next boot.
    pub staged: Option<Arc<MachineConfig>>,
    /// A version installed but not yet booted (LifecycleService.Upgrade, staged Upgrade).
    pub pending_version: Option<String>,
    /// Bumped by every apply; a TRY revert only fires if nothing was applied since.
    pub apply_gen: u64,
    /// Addresses the API listens on now.
    pub listen: Vec<IpAddr>,
    /// Cancels the current server and cuts its connections.
    pub cut: Option<CancellationToken>,
    /// EtcdLeaveCluster ran during this boot: Talos keeps etcd stopped until the next boot.
    pub etcd_left: bool,
    /// Images in containerd, by (driver, namespace, reference) (ImageService.Pull); kept on
    /// reboots, gone when EPHEMERAL (/var) is wiped.
    pub images: std::collections::HashSet<(i32, i32, String)>,
    /// `/proc/sys/kernel/random/boot_id`: a new one on every boot.
    pub boot_id: String,
    /// When the current boot started (service event times).
    pub booted_at: std::time::SystemTime,
    /// When the node last entered configured mode (Bootstrap's "not available yet" window).
    pub configured_at: Option<std::time::Instant>,
    /// Talos is installed on the system disk (a maintenance apply installs it; a reset that
    /// wipes the whole disk removes it, and the machine boots its install media).
    pub installed: bool,
    pub faults: Faults,
}

pub(crate) struct Node {
    pub spec: NodeSpec,
    pub lab: Weak<LabInner>,
    pub dir: PathBuf,
    st: Mutex<State>,
    pub etcd: Mutex<Option<EtcdProcess>>,
    /// Serializes bootstrap, join and leave.
    pub etcd_ops: tokio::sync::Mutex<()>,
    /// One ApplyConfiguration at a time (a second gets FailedPrecondition, as in Talos).
    pub apply_lock: tokio::sync::Mutex<()>,
    /// MachineService.Events of the current boot.
    pub events: EventLog,
}

impl Node {
    pub(crate) fn new(spec: NodeSpec, lab: Weak<LabInner>, labdir: &Path) -> Self {
        let dir = labdir.join("nodes").join(&spec.name);
        let st = State {
            mode: Mode::Down,
            version: spec.talos_version.clone(),
            config: None,
            staged: None,
            pending_version: None,
            apply_gen: 0,
            listen: vec![spec.maintenance_address],
            cut: None,
            etcd_left: false,
            images: std::collections::HashSet::new(),
            boot_id: new_uuid(),
            booted_at: std::time::SystemTime::now(),
            configured_at: None,
            installed: false,
            faults: Faults::default(),
        };
        Self {
            spec,
            lab,
            dir,
            st: Mutex::new(st),
            etcd: Mutex::new(None),
            etcd_ops: tokio::sync::Mutex::new(()),
            apply_lock: tokio::sync::Mutex::new(()),
            events: EventLog::new(),
        }
    }

    pub(crate) fn st(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn lab(&self) -> Option<Arc<LabInner>> {
        self.lab.upgrade()
    }

    pub(crate) fn publish(&self) {
        if let Some(lab) = self.lab() {
            lab.publish();
        }
    }

    pub(crate) fn mode(&self) -> Mode {
        self.st().mode
    }

    pub(crate) fn config(&self) -> Option<Arc<MachineConfig>> {
        self.st().config.clone()
    }

    pub(crate) fn version(&self) -> TalosVersion {
        TalosVersion::parse(&self.st().version).unwrap_or(TalosVersion {
            major: 1,
            minor: 11,
            patch: 0,
        })
    }

    /// The current boot's start, as a protobuf timestamp.
    pub(crate) fn booted_at(&self) -> prost_types::Timestamp {
        prost_types::Timestamp::from(self.st().booted_at)
    }

    pub(crate) fn role(&self) -> Role {
        self.config().map_or(self.spec.role, |c| c.role)
    }

    pub(crate) fn hostname(&self) -> String {
        match self.config() {
            Some(c) if !c.hostname.is_empty() => c.hostname.clone(),
            _ => self.spec.name.clone(),
        }
    }

    pub(crate) fn current_address(&self) -> IpAddr {
        self.st()
            .listen
            .first()
            .copied()
            .unwrap_or(self.spec.maintenance_address)
    }

    pub(crate) fn listens_on(&self, ip: IpAddr) -> bool {
        let st = self.st();
        st.cut.is_some() && st.listen.contains(&ip)
    }

    pub(crate) fn faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.st().faults);
    }

    pub(crate) fn etcd_url(&self) -> Option<String> {
        let mut slot = self.etcd.lock().unwrap_or_else(|e| e.into_inner());
        let p = slot.as_mut()?;
        p.alive().then(|| p.client_url.clone())
    }

    pub(crate) fn status(&self) -> NodeStatus {
        let etcd_client_url = self.etcd_url();
        let st = self.st();
        NodeStatus {
            name: self.spec.name.clone(),
            role: st
                .config
                .as_ref()
                .map_or(self.spec.role, |c| c.role)
                .as_str()
                .to_string(),
            maintenance_address: self.spec.maintenance_address.to_string(),
            current_address: st
                .listen
                .first()
                .copied()
                .unwrap_or(self.spec.maintenance_address)
                .to_string(),
            mode: st.mode.as_str().to_string(),
            talos_version: st.version.clone(),
            etcd_client_url,
        }
    }

    /// A fresh machine: no state from an earlier lab in the same directory.
    pub(crate) fn wipe_disk(&self) {
        etcd::wipe(&etcd::data_dir(&self.dir));
        let _ = std::fs::create_dir_all(&self.dir);
    }

    /// Boots: maintenance mode without a config, configured mode with one.
    pub(crate) async fn boot(self: &Arc<Self>) -> Result<()> {
        let config = {
            let mut st = self.st();
            st.etcd_left = false;
            st.boot_id = new_uuid();
            st.booted_at = std::time::SystemTime::now();
            st.configured_at = None;
            st.config.clone()
        };
        use pb::machine_status_event::MachineStage;
        self.events.clear();
        self.events
            .emit("", Payload::Stage(MachineStage::Booting, false));
        self.events
            .emit("", Payload::Sequence("initialize", SeqAction::Start));
        let Some(cfg) = config else {
            self.events
                .emit("", Payload::Stage(MachineStage::Maintenance, false));
            let addrs = vec![self.spec.maintenance_address];
            let tls = tls::maintenance_config(&addrs)?;
            self.serve(addrs, tls, true).await?;
            self.set_mode(Mode::Maintenance);
            return Ok(());
        };
        let addrs = if cfg.addresses.is_empty() {
            vec![self.spec.maintenance_address]
        } else {
            cfg.addresses.clone()
        };
        {
            let mut st = self.st();
            st.mode = Mode::Configured;
            st.configured_at = Some(std::time::Instant::now());
            st.listen.clone_from(&addrs);
        }
        self.events
            .emit("", Payload::Sequence("initialize", SeqAction::Stop));
        self.events
            .emit("", Payload::Sequence("boot", SeqAction::Start));
        self.events
            .emit("", Payload::Sequence("boot", SeqAction::Stop));
        self.events
            .emit("", Payload::Stage(MachineStage::Running, true));
        if cfg.role == Role::Controlplane {
            let tls = tls::configured_config(&machine_ca(&cfg), &addrs, &self.hostname())?;
            self.serve(addrs, tls, false).await?;
            tokio::spawn(join_etcd(self.clone()));
        } else {
            // A worker has no OS CA key: real workers get apid's certificate from trustd on a
            // control plane. The lab mints it with the key of a configured control plane of the
            // same cluster (same machine.ca.crt), and waits for one as a real worker waits.
            let node = self.clone();
            tokio::spawn(async move {
                loop {
                    if node.mode() != Mode::Configured
                        || !node.config().is_some_and(|c| Arc::ptr_eq(&c, &cfg))
                    {
                        return;
                    }
                    if let Some(ca) = node.trustd_ca(&cfg) {
                        match tls::configured_config(&ca, &addrs, &node.hostname()) {
                            Ok(tls) => {
                                if let Err(e) = node.serve(addrs.clone(), tls, false).await {
                                    tracing::warn!(node = %node.spec.name, error = %e, "apid");
                                }
                                node.publish();
                            }
                            Err(e) => tracing::warn!(node = %node.spec.name, error = %e, "apid"),
                        }
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
        }
        self.publish();
        Ok(())
    }

    /// The OS CA (with key) of a configured control plane sharing this worker's machine.ca.crt.
    fn trustd_ca(&self, cfg: &MachineConfig) -> Option<vixen_pki::CertAndKey> {
        let lab = self.lab()?;
        let want = cfg.get("machine.ca.crt")?;
        lab.nodes.iter().find_map(|n| {
            let c = n.config()?;
            (n.mode() == Mode::Configured
                && c.role == Role::Controlplane
                && c.get("machine.ca.crt") == Some(want))
            .then(|| machine_ca(&c))
        })
    }

    fn set_mode(&self, mode: Mode) {
        self.st().mode = mode;
        self.publish();
    }

    /// Starts the API server on `addrs`, replacing any previous one.
    pub(crate) async fn serve(
        self: &Arc<Self>,
        addrs: Vec<IpAddr>,
        tls: Arc<rustls::ServerConfig>,
        maintenance: bool,
    ) -> Result<()> {
        self.stop_server();
        let cut = CancellationToken::new();
        let down = self.st().faults.addrs_down.clone();
        let reachable: Vec<IpAddr> = addrs
            .iter()
            .copied()
            .filter(|a| !down.contains(a))
            .collect();
        let incoming = tls::listen(&self.spec.name, &reachable, tls, cut.clone()).await?;
        server::spawn(self.clone(), incoming, cut.clone(), maintenance);
        let mut st = self.st();
        st.listen = addrs;
        st.cut = Some(cut);
        Ok(())
    }

    pub(crate) fn stop_server(&self) {
        if let Some(cut) = self.st().cut.take() {
            cut.cancel();
        }
    }

    pub(crate) async fn stop_etcd(&self) {
        let proc = self.etcd.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(p) = proc {
            p.stop().await;
        }
    }

    /// Power off (`Mode::Down`): the API and etcd stop at once. A reboot (`Mode::Rebooting`)
    /// stops etcd as Talos' Reboot sequence does: gracefully (see `EtcdProcess::stop_gracefully`).
    pub(crate) async fn go_down(&self, mode: Mode) {
        self.stop_server();
        self.st().mode = mode;
        let proc = self.etcd.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(p) = proc {
            match mode {
                Mode::Rebooting => p.stop_gracefully(ETCD_GRACE).await,
                _ => p.stop().await,
            }
        }
        self.publish();
    }

    /// Synchronous last-resort stop (Drop of the lab).
    pub(crate) fn kill_now(&self) {
        self.stop_server();
        if let Some(p) = self.etcd.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            p.kill_now();
        }
    }

    fn reboot_delay(&self) -> Duration {
        let base = self.lab().map_or(0, |l| l.reboot_ms);
        Duration::from_millis(self.st().faults.slow_reboot_ms.unwrap_or(base))
    }

    /// Reboots after the current reply has gone out: down for the reboot delay, then boots the
    /// staged config and any pending version. A pending version whose image was marked bad fails
    /// to boot and the node comes back on the old one (Talos' A/B boot fallback).
    pub(crate) fn reboot_later(self: &Arc<Self>) {
        self.reboot_later_by("", "reboot");
    }

    /// As [`Node::reboot_later`], recording the sequence (`reboot`, `upgrade`) and the actor ID
    /// of the call that asked for it in the node's events.
    pub(crate) fn reboot_later_by(self: &Arc<Self>, actor: &str, sequence: &'static str) {
        use pb::machine_status_event::MachineStage;
        self.events
            .emit(actor, Payload::Sequence(sequence, SeqAction::Start));
        self.events.emit(
            actor,
            Payload::Task("stopAllServices", pb::task_event::Action::Start),
        );
        let stage = if sequence == "upgrade" {
            MachineStage::Upgrading
        } else {
            MachineStage::Rebooting
        };
        self.events.emit(actor, Payload::Stage(stage, false));
        let node = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            node.reboot_now().await;
        });
    }

    pub(crate) async fn reboot_now(self: &Arc<Self>) {
        self.go_down(Mode::Rebooting).await;
        tokio::time::sleep(self.reboot_delay()).await;
        let failed_boot = {
            let mut st = self.st();
            if let Some(staged) = st.staged.take() {
                st.config = Some(staged);
            }
            match st.pending_version.take() {
                Some(_) if std::mem::take(&mut st.faults.fail_next_upgrade) => true,
                Some(v) => {
                    st.version = v;
                    false
                }
                None => false,
            }
        };
        if failed_boot {
            // The new image does not come up; the bootloader falls back to the previous one.
            tokio::time::sleep(self.reboot_delay()).await;
        }
        if self.mode() != Mode::Rebooting {
            return; // powered off meanwhile
        }
        if let Err(e) = self.boot().await {
            tracing::warn!(node = %self.spec.name, error = %e, "boot failed");
            self.set_mode(Mode::Down);
        }
    }
}

/// A random UUID (boot IDs, actor IDs), from the random keys of std's hasher (no RNG crate).
pub(crate) fn new_uuid() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut words = [0u64; 2];
    for w in &mut words {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        *w = h.finish();
    }
    let x = (u128::from(words[0]) << 64) | u128::from(words[1]);
    let hex = format!("{x:032x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// The OS CA of a control plane's config (`machine.ca`).
pub(crate) fn machine_ca(cfg: &MachineConfig) -> vixen_pki::CertAndKey {
    vixen_pki::CertAndKey {
        crt: cfg.get("machine.ca.crt").unwrap_or_default().to_string(),
        key: vixen_pki::Secret::new(cfg.get("machine.ca.key").unwrap_or_default().to_string()),
    }
}

/// What Talos' etcd service does on a configured control plane: with data, start the member;
/// without, wait for Bootstrap or join through a healthy member of the same cluster (as a
/// learner, then promoted once caught up).
async fn join_etcd(node: Arc<Node>) {
    let Some(cfg) = node.config() else { return };
    loop {
        if node.mode() != Mode::Configured || !node.config().is_some_and(|c| Arc::ptr_eq(&c, &cfg))
        {
            return;
        }
        let guard = node.etcd_ops.lock().await;
        if node.etcd_url().is_some() || node.st().etcd_left {
            return;
        }
        let addr = node.current_address();
        let data = etcd::data_dir(&node.dir);
        let log = node.dir.join("etcd.log");
        let name = node.hostname();
        if etcd::has_data(&data) {
            let initial = format!("{name}={}", etcd::peer_url(addr));
            node.start_etcd(&name, addr, &initial, "existing");
            return;
        }
        let Some(via) = node.healthy_peer(&cfg).await else {
            drop(guard);
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        match etcd::add_learner(&via, &name, addr).await {
            Ok((initial, id)) => {
                let _ = &log;
                node.start_etcd(&name, addr, &initial, "existing");
                drop(guard);
                if let Err(e) = etcd::promote(&[via], id, Duration::from_secs(60)).await {
                    tracing::warn!(node = %node.spec.name, error = %e, "etcd promote failed");
                }
                node.publish();
                return;
            }
            Err(e) => {
                tracing::debug!(node = %node.spec.name, error = %e, "etcd join: retrying");
                drop(guard);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}

impl Node {
    pub(crate) fn start_etcd(&self, name: &str, addr: IpAddr, initial: &str, state: &str) -> bool {
        let data = etcd::data_dir(&self.dir);
        match EtcdProcess::spawn(
            name,
            addr,
            &data,
            &self.dir.join("etcd.log"),
            initial,
            state,
        ) {
            Ok(p) => {
                *self.etcd.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
                self.publish();
                true
            }
            Err(e) => {
                tracing::warn!(node = %self.spec.name, error = %e, "cannot start etcd");
                false
            }
        }
    }

    /// A healthy etcd member of another control plane of the same cluster.
    pub(crate) async fn healthy_peer(&self, cfg: &MachineConfig) -> Option<String> {
        let lab = self.lab()?;
        let key = cfg.cluster_key();
        for n in &lab.nodes {
            if std::ptr::eq(n.as_ref(), self) {
                continue;
            }
            let same = n.config().is_some_and(|c| c.cluster_key() == key);
            if let (true, Some(url)) = (same, n.etcd_url())
                && etcd::healthy(&url).await
            {
                return Some(url);
            }
        }
        None
    }
}
