//! In-memory fakes of the ports: a small cluster of Talos nodes with an etcd member list, and a
//! journal in memory. They are as strict as the engine needs to test its rules: a rebooting
//! node does not answer for a few looks, a lifecycle upgrade refuses an image that was not
//! pulled, a member whose etcd is down does not answer its status, Talos 1.14+ refuses a
//! REBOOT-mode apply and never reboots on one, and every call is recorded.
//!
//! Not a simulator of Talos (that is the lab, with real etcd): a table to drive the executor
//! in milliseconds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use vixen_k8s::{DrainReport, NodeView, StaticPod};
use vixen_plan::{KubeNode, KubeView, Role};
use vixen_talos::{
    ApplyMode, ApplyOutcome, EtcdMember, EtcdMemberStatus, ServiceStatus, VersionInfo,
};

use crate::error::{KubeError, StoreError};
use crate::journal::State;
use crate::ports::{KubeGates, NodeApi, StateStore, TalosResult};

/// Where a fake node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Configured, at its address.
    Configured,
    /// In maintenance mode, at its maintenance address.
    Maintenance,
    /// Powered off: answers nowhere.
    Off,
}

/// One fake node.
#[derive(Debug, Clone)]
pub struct FakeNode {
    /// Name (the hostname too).
    pub name: String,
    /// Role.
    pub role: Role,
    /// Configured address.
    pub address: String,
    /// Maintenance address.
    pub maintenance_address: String,
    /// Where it is.
    pub mode: Mode,
    /// Talos version tag it runs.
    pub version: String,
    /// Its services report healthy.
    pub healthy: bool,
    /// Its etcd member ID (control planes that joined).
    pub member: Option<u64>,
    /// Its etcd runs and answers.
    pub etcd_up: bool,
    /// Its raft index.
    pub raft_index: u64,
    /// Looks left during which it does not answer (it is rebooting).
    pub down_for: u32,
    /// The version installed on the other partition (booted at the next reboot).
    pub next_version: Option<String>,
    /// Images in its containerd store.
    pub pulled: BTreeSet<String>,
    /// The config it was given (persisted; what it boots next).
    pub config: Option<String>,
    /// The config it booted with (a config applied live on 1.14+ that needs a reboot is
    /// effective only once the node boots it).
    pub booted_config: Option<String>,
    /// Boots so far (its boot ID is `boot-N`).
    pub boots: u32,
    /// The address it answers at once its next live config is applied (a re-address).
    pub moves_to: Option<String>,
}

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Address called.
    pub address: String,
    /// Method (`reboot`, `apply`, ...).
    pub method: &'static str,
}

/// The fake world.
#[derive(Debug, Default)]
pub struct World {
    /// Nodes.
    pub nodes: Vec<FakeNode>,
    /// Leader member ID.
    pub leader: u64,
    /// Every mutating call, in order.
    pub calls: Vec<Call>,
    /// How many looks a rebooting node misses.
    pub reboot_looks: u32,
    /// Any apply (dry run or not) of a config holding this text is refused (InvalidArgument),
    /// as Talos' validator refuses a config.
    pub refuse: Option<String>,
    /// Node objects by name, when Kubernetes answers.
    pub kube: Option<BTreeMap<String, NodeView>>,
    /// The control-plane static pods by Node name, for nodes whose config names no Kubernetes
    /// version (see [`kubernetes_of`]).
    pub static_pods: BTreeMap<String, Vec<StaticPod>>,
    /// Control planes whose new kube-apiserver never becomes Ready (a crash loop).
    pub apiserver_stuck: BTreeSet<String>,
    /// DaemonSets (`namespace/name`) and their rollouts.
    pub daemonsets: BTreeMap<String, vixen_k8s::DaemonSetProgress>,
    next_member: u64,
}

/// A fake cluster: both a [`NodeApi`] and a [`KubeGates`].
#[derive(Debug, Default)]
pub struct FakeCluster(pub Mutex<World>);

fn unavailable(method: &'static str) -> vixen_talos::Error {
    vixen_talos::Error::Unavailable {
        method,
        message: "connection refused".into(),
    }
}

fn rpc(method: &'static str, code: tonic::Code, message: &str) -> vixen_talos::Error {
    vixen_talos::Error::Rpc {
        method,
        code,
        message: message.into(),
    }
}

/// Talos 1.14+ on a configured node (v1.14 `v1alpha1_server.go` ApplyConfiguration): REBOOT is
/// refused, AUTO means NO_REBOOT, and no apply reboots.
fn apply_never_reboots(tag: &str) -> bool {
    vixen_talos::TalosVersion::parse(tag).is_some_and(|v| (v.major, v.minor) >= (1, 14))
}

fn tag_of(image: &str) -> String {
    image.rsplit_once(':').map_or(image, |(_, t)| t).to_string()
}

impl FakeCluster {
    /// `cps` control planes and `workers` workers, configured, healthy, on `version`, at
    /// `10.0.0.N` (maintenance `10.0.1.N`; nothing is dialled), etcd with every control plane.
    pub fn new(cps: usize, workers: usize, version: &str) -> Self {
        let mut w = World {
            reboot_looks: 2,
            next_member: 1,
            ..World::default()
        };
        for i in 0..cps + workers {
            let role = if i < cps {
                Role::Controlplane
            } else {
                Role::Worker
            };
            let name = if i < cps {
                format!("cp-{}", i + 1)
            } else {
                format!("worker-{}", i - cps + 1)
            };
            let member = (role == Role::Controlplane).then(|| {
                w.next_member += 1;
                w.next_member
            });
            w.nodes.push(FakeNode {
                name,
                role,
                address: format!("10.0.0.{}", i + 1),
                maintenance_address: format!("10.0.1.{}", i + 1),
                mode: Mode::Configured,
                version: version.into(),
                healthy: true,
                member,
                etcd_up: member.is_some(),
                raft_index: 100,
                down_for: 0,
                next_version: None,
                pulled: BTreeSet::new(),
                config: Some(String::new()),
                booted_config: Some(String::new()),
                boots: 1,
                moves_to: None,
            });
        }
        w.leader = w.nodes.iter().find_map(|n| n.member).unwrap_or(0);
        Self(Mutex::new(w))
    }

    /// Changes the world (a fault, a config).
    pub fn with<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        f(&mut self.0.lock().expect("fake world lock"))
    }

    /// The methods called on `node`'s addresses, in order.
    pub fn calls_to(&self, node: &str) -> Vec<&'static str> {
        self.with(|w| {
            let n = w.nodes.iter().find(|n| n.name == node).cloned();
            let Some(n) = n else { return vec![] };
            w.calls
                .iter()
                .filter(|c| c.address == n.address || c.address == n.maintenance_address)
                .map(|c| c.method)
                .collect()
        })
    }

    fn node<R>(
        &self,
        at: &str,
        method: &'static str,
        f: impl FnOnce(&mut FakeNode, &mut Members) -> TalosResult<R>,
    ) -> TalosResult<R> {
        self.with(|w| {
            let members = Members::of(w);
            let mut members = members;
            let n = w
                .nodes
                .iter_mut()
                .find(|n| n.mode == Mode::Configured && n.address == at)
                .ok_or_else(|| unavailable(method))?;
            if n.down_for > 0 {
                n.down_for -= 1;
                return Err(unavailable(method));
            }
            let r = f(n, &mut members);
            members.apply(w);
            r
        })
    }

    fn mutate<R>(
        &self,
        at: &str,
        method: &'static str,
        f: impl FnOnce(&mut FakeNode, &mut Members) -> TalosResult<R>,
    ) -> TalosResult<R> {
        self.with(|w| {
            w.calls.push(Call {
                address: at.into(),
                method,
            })
        });
        self.node(at, method, f)
    }
}

/// Member list changes made inside one call, applied after it.
#[derive(Default)]
struct Members {
    all: Vec<(u64, String, String, bool)>,
    leader: u64,
    remove: Vec<u64>,
    new_leader: Option<u64>,
}

impl Members {
    fn of(w: &World) -> Self {
        let all = w
            .nodes
            .iter()
            .filter_map(|n| {
                n.member.map(|m| {
                    (
                        m,
                        n.name.clone(),
                        n.address.clone(),
                        n.etcd_up || n.mode != Mode::Configured,
                    )
                })
            })
            .collect();
        Self {
            all,
            leader: w.leader,
            ..Self::default()
        }
    }

    fn apply(self, w: &mut World) {
        for id in self.remove {
            for n in &mut w.nodes {
                if n.member == Some(id) {
                    n.member = None;
                    n.etcd_up = false;
                }
            }
        }
        if let Some(l) = self.new_leader {
            w.leader = l;
        }
    }
}

impl NodeApi for FakeCluster {
    async fn version(&self, at: &str) -> TalosResult<VersionInfo> {
        self.node(at, "version", |n, _| {
            Ok(VersionInfo {
                tag: n.version.clone(),
                platform: "metal".into(),
            })
        })
    }

    async fn maintenance_version(&self, at: &str) -> TalosResult<VersionInfo> {
        self.with(|w| {
            match w
                .nodes
                .iter()
                .find(|n| n.mode == Mode::Maintenance && n.maintenance_address == at)
            {
                Some(_) => Err(rpc(
                    "version",
                    tonic::Code::Unimplemented,
                    "API is not implemented in maintenance mode",
                )),
                None => Err(unavailable("version")),
            }
        })
    }

    async fn services(&self, at: &str) -> TalosResult<Vec<ServiceStatus>> {
        self.node(at, "services", |n, _| {
            // The services Talos requires to call a node healthy (vixen_talos::health).
            Ok(["apid", "machined", "kubelet"]
                .into_iter()
                .map(|id| ServiceStatus {
                    id: id.into(),
                    state: "Running".into(),
                    healthy: n.healthy,
                    health_unknown: false,
                    last_event: None,
                })
                .collect())
        })
    }

    async fn etcd_members(&self, at: &str) -> TalosResult<Vec<EtcdMember>> {
        self.node(at, "etcd_members", |n, m| {
            if !n.etcd_up {
                return Err(rpc(
                    "etcd_members",
                    tonic::Code::Unknown,
                    "etcd is not running",
                ));
            }
            Ok(m.all
                .iter()
                .map(|(id, name, address, started)| EtcdMember {
                    id: *id,
                    hostname: name.clone(),
                    peer_urls: vec![format!("https://{address}:2380")],
                    client_urls: if *started {
                        vec![format!("https://{address}:2379")]
                    } else {
                        vec![]
                    },
                    is_learner: false,
                })
                .collect())
        })
    }

    async fn etcd_status(&self, at: &str) -> TalosResult<EtcdMemberStatus> {
        self.node(at, "etcd_status", |n, m| match (n.etcd_up, n.member) {
            (true, Some(id)) => Ok(EtcdMemberStatus {
                member_id: id,
                leader: m.leader,
                raft_index: n.raft_index,
                ..EtcdMemberStatus::default()
            }),
            _ => Err(rpc(
                "etcd_status",
                tonic::Code::Unknown,
                "etcd is not running",
            )),
        })
    }

    async fn apply(
        &self,
        at: &str,
        config: &[u8],
        mode: ApplyMode,
        dry_run: bool,
        maintenance: bool,
    ) -> TalosResult<ApplyOutcome> {
        let text = String::from_utf8_lossy(config).into_owned();
        if self.with(|w| w.refuse.as_ref().is_some_and(|r| text.contains(r.as_str()))) {
            return Err(rpc(
                "apply",
                tonic::Code::InvalidArgument,
                "1 error occurred:\n\t* invalid config",
            ));
        }
        if maintenance {
            return self.with(|w| {
                w.calls.push(Call {
                    address: at.into(),
                    method: "apply",
                });
                let looks = w.reboot_looks;
                let id = w.next_member + 1;
                let n = w
                    .nodes
                    .iter_mut()
                    .find(|n| n.mode == Mode::Maintenance && n.maintenance_address == at)
                    .ok_or_else(|| unavailable("apply"))?;
                n.mode = Mode::Configured;
                n.booted_config = Some(text.clone());
                n.config = Some(text);
                n.down_for = looks;
                n.boots += 1;
                if n.role == Role::Controlplane {
                    n.member = Some(id);
                    n.etcd_up = true;
                    w.next_member = id;
                }
                Ok(ApplyOutcome {
                    mode: Some(ApplyMode::Reboot),
                    mode_details: "installing".into(),
                    warnings: vec![],
                })
            });
        }
        // v1.14 refuses REBOOT before it looks at dry_run.
        let refuse_reboot = |n: &FakeNode| {
            (mode == ApplyMode::Reboot && apply_never_reboots(&n.version)).then(|| {
                rpc(
                    "apply",
                    tonic::Code::Unimplemented,
                    "the REBOOT mode is not supported, please use AUTO or NO_REBOOT modes instead",
                )
            })
        };
        if dry_run {
            return self.node(at, "apply_dry_run", |n, _| {
                if let Some(e) = refuse_reboot(n) {
                    return Err(e);
                }
                let details = if n.config.as_deref() == Some(text.as_str()) {
                    "No changes."
                } else {
                    "Config diff: changed"
                };
                Ok(ApplyOutcome {
                    mode: Some(mode),
                    mode_details: details.into(),
                    warnings: vec![],
                })
            });
        }
        let looks = self.with(|w| w.reboot_looks);
        self.mutate(at, "apply", |n, _| {
            if let Some(e) = refuse_reboot(n) {
                return Err(e);
            }
            let mode = match mode {
                ApplyMode::Auto if apply_never_reboots(&n.version) => ApplyMode::NoReboot,
                m => m,
            };
            n.config = Some(text);
            if let Some(to) = n.moves_to.take() {
                n.address = to;
            }
            if mode == ApplyMode::Reboot {
                n.down_for = looks;
                n.boots += 1;
                n.booted_config = n.config.clone();
            }
            Ok(ApplyOutcome {
                mode: Some(mode),
                mode_details: String::new(),
                warnings: vec![],
            })
        })
    }

    async fn upgrade(&self, at: &str, image: &str) -> TalosResult<()> {
        let looks = self.with(|w| w.reboot_looks);
        self.mutate(at, "upgrade", |n, _| {
            n.version = tag_of(image);
            n.down_for = looks;
            n.boots += 1;
            n.booted_config = n.config.clone();
            Ok(())
        })
    }

    async fn pull_image(&self, at: &str, image: &str) -> TalosResult<()> {
        self.mutate(at, "pull_image", |n, _| {
            n.pulled.insert(image.into());
            Ok(())
        })
    }

    async fn lifecycle_upgrade(&self, at: &str, image: &str) -> TalosResult<()> {
        self.mutate(at, "lifecycle_upgrade", |n, _| {
            if !n.pulled.contains(image) {
                return Err(rpc(
                    "lifecycle_upgrade",
                    tonic::Code::Internal,
                    &format!("installer image \"{image}\" not found in containerd store"),
                ));
            }
            n.next_version = Some(tag_of(image));
            Ok(())
        })
    }

    async fn reboot(&self, at: &str) -> TalosResult<()> {
        let looks = self.with(|w| w.reboot_looks);
        self.mutate(at, "reboot", |n, _| {
            if let Some(v) = n.next_version.take() {
                n.version = v;
            }
            n.down_for = looks;
            n.boots += 1;
            n.booted_config = n.config.clone();
            Ok(())
        })
    }

    async fn reset(&self, at: &str, _graceful: bool) -> TalosResult<()> {
        self.mutate(at, "reset", |n, m| {
            if let Some(id) = n.member {
                m.remove.push(id);
            }
            n.mode = Mode::Maintenance;
            n.config = None;
            n.booted_config = None;
            Ok(())
        })
    }

    async fn bootstrap(&self, at: &str) -> TalosResult<()> {
        self.mutate(at, "bootstrap", |_, _| Ok(()))
    }

    async fn etcd_leave(&self, at: &str) -> TalosResult<()> {
        self.mutate(at, "etcd_leave", |n, m| match (n.etcd_up, n.member) {
            (true, Some(id)) => {
                m.remove.push(id);
                Ok(())
            }
            _ => Err(rpc(
                "etcd_leave",
                tonic::Code::Unknown,
                "failed to get local member: etcd is not running",
            )),
        })
    }

    async fn etcd_forfeit(&self, at: &str) -> TalosResult<()> {
        self.mutate(at, "etcd_forfeit", |n, m| {
            if n.member == Some(m.leader) {
                m.new_leader = m
                    .all
                    .iter()
                    .map(|(id, ..)| *id)
                    .find(|id| Some(*id) != n.member);
            }
            Ok(())
        })
    }

    async fn etcd_remove_member(&self, at: &str, id: u64) -> TalosResult<()> {
        self.mutate(at, "etcd_remove_member", |n, m| {
            if !n.etcd_up {
                return Err(rpc(
                    "etcd_remove_member",
                    tonic::Code::Unknown,
                    "etcd is not running",
                ));
            }
            m.remove.push(id);
            Ok(())
        })
    }

    async fn boot_id(&self, at: &str) -> TalosResult<String> {
        self.node(at, "boot_id", |n, _| Ok(format!("boot-{}", n.boots)))
    }

    async fn kubeconfig(&self, at: &str) -> TalosResult<Vec<u8>> {
        self.node(at, "kubeconfig", |_, _| {
            Err(rpc(
                "kubeconfig",
                tonic::Code::Unimplemented,
                "no kubeconfig in the fake",
            ))
        })
    }

    async fn recover(&self, at: &str, snapshot: &[u8]) -> TalosResult<()> {
        let restored = crate::fake_backup::raft_index_of(snapshot);
        self.mutate(at, "recover", |n, _| match (n.role, n.member) {
            (Role::Controlplane, None) => {
                n.raft_index = restored.unwrap_or_default();
                n.etcd_up = true;
                Ok(())
            }
            _ => Err(rpc(
                "recover",
                tonic::Code::AlreadyExists,
                "etcd data directory is not empty",
            )),
        })
        .inspect(|_| {
            self.with(|w| {
                w.next_member += 1;
                let id = w.next_member;
                if let Some(n) = w.nodes.iter_mut().find(|n| n.address == at) {
                    n.member = Some(id);
                }
                w.leader = id;
            })
        })
    }

    async fn etcd_snapshot(&self, at: &str) -> TalosResult<Vec<u8>> {
        // Recorded with the mutating calls, so tests see it in order with them.
        self.mutate(at, "etcd_snapshot", |n, _| match (n.etcd_up, n.member) {
            (true, Some(_)) => Ok(crate::fake_backup::snapshot_bytes(n.raft_index)),
            _ => Err(rpc(
                "etcd_snapshot",
                tonic::Code::Unknown,
                "etcd is not running",
            )),
        })
    }
}

impl KubeGates for FakeCluster {
    async fn view(&self, _: &[String]) -> Option<KubeView> {
        self.with(|w| {
            w.kube.as_ref().map(|k| KubeView {
                nodes: k
                    .values()
                    .map(|n| {
                        let host = w.nodes.iter().find(|h| h.name == n.name);
                        KubeNode {
                            name: n.name.clone(),
                            ready: n.ready,
                            cordoned_by_vixen: n.cordoned_by_vixen,
                            kubelet_version: host
                                .and_then(|h| h.config.as_deref())
                                .and_then(kubernetes_of)
                                .unwrap_or_else(|| n.kubelet_version.clone()),
                            static_pods: fake_static_pods(w, &n.name)
                                .iter()
                                .map(crate::gates::pod_view)
                                .collect(),
                        }
                    })
                    .collect(),
            })
        })
    }

    async fn drain(
        &self,
        _: &[String],
        node: &str,
        _: Duration,
        _: Duration,
    ) -> Result<DrainReport, KubeError> {
        self.with(|w| {
            w.calls.push(Call {
                address: format!("Node/{node}"),
                method: "drain",
            });
            let n = w
                .kube
                .as_mut()
                .ok_or(KubeError::NoApi)?
                .get_mut(node)
                .ok_or(KubeError::NoApi)?;
            n.unschedulable = true;
            n.cordoned_by_vixen = true;
            Ok(DrainReport::default())
        })
    }

    async fn node(&self, _: &[String], node: &str) -> Result<Option<NodeView>, KubeError> {
        self.with(|w| {
            let hostnode = w.nodes.iter().find(|n| n.name == node).cloned();
            let k = w.kube.as_mut().ok_or(KubeError::NoApi)?;
            // The kubelet follows its node: NotReady while it is down, its OS image its version,
            // its version the one its config names.
            if let (Some(n), Some(v)) = (hostnode, k.get_mut(node)) {
                v.ready = n.mode == Mode::Configured && n.down_for == 0;
                v.os_image = format!("Talos ({})", n.version);
                if let Some(k8s) = n.config.as_deref().and_then(kubernetes_of) {
                    v.kubelet_version = k8s;
                }
            }
            Ok(k.get(node).cloned())
        })
    }

    async fn static_pods(&self, _: &[String], node: &str) -> Result<Vec<StaticPod>, KubeError> {
        self.with(|w| {
            w.kube.as_ref().ok_or(KubeError::NoApi)?;
            Ok(fake_static_pods(w, node))
        })
    }

    async fn uncordon(&self, _: &[String], node: &str) -> Result<(), KubeError> {
        self.with(|w| {
            w.calls.push(Call {
                address: format!("Node/{node}"),
                method: "uncordon",
            });
            if let Some(n) = w.kube.as_mut().and_then(|k| k.get_mut(node)) {
                n.unschedulable = false;
                n.cordoned_by_vixen = false;
            }
            Ok(())
        })
    }

    async fn daemonset_progress(
        &self,
        _: &[String],
        daemonset: &str,
    ) -> Result<Option<vixen_k8s::DaemonSetProgress>, KubeError> {
        self.with(|w| {
            w.kube.as_ref().ok_or(KubeError::NoApi)?;
            Ok(w.daemonsets.get(daemonset).copied())
        })
    }

    async fn delete_node(&self, _: &[String], node: &str) -> Result<(), KubeError> {
        self.with(|w| {
            w.calls.push(Call {
                address: format!("Node/{node}"),
                method: "delete_node",
            });
            w.kube.as_mut().map(|k| k.remove(node));
            Ok(())
        })
    }
}

/// A journal in memory; `fail_after` makes the N-th save fail (an agent that dies there).
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// The state.
    pub state: Mutex<State>,
    /// Saves left before every save fails (`None`: never).
    pub fail_after: Mutex<Option<usize>>,
}

impl StateStore for MemoryStore {
    async fn load(&self) -> Result<State, StoreError> {
        Ok(self.state.lock().expect("store lock").clone())
    }

    async fn save(&self, state: &State) -> Result<(), StoreError> {
        let mut left = self.fail_after.lock().expect("store lock");
        if let Some(n) = left.as_mut() {
            if *n == 0 {
                return Err(StoreError::Write("the agent died here".into()));
            }
            *n -= 1;
        }
        *self.state.lock().expect("store lock") = state.clone();
        Ok(())
    }
}

/// The static pods the kubelet of `node` reports: from its config's Kubernetes version (Ready
/// while the node runs, except a stuck kube-apiserver), else as the test set them.
fn fake_static_pods(w: &World, node: &str) -> Vec<StaticPod> {
    let Some(n) = w.nodes.iter().find(|n| n.name == node) else {
        return Vec::new();
    };
    let Some(k8s) = n.config.as_deref().and_then(kubernetes_of) else {
        return w.static_pods.get(node).cloned().unwrap_or_default();
    };
    if n.role != Role::Controlplane {
        return Vec::new();
    }
    let up = n.mode == Mode::Configured && n.down_for == 0;
    vixen_plan::CONTROL_PLANE_COMPONENTS
        .iter()
        .map(|c| StaticPod {
            component: (*c).to_string(),
            image: format!("registry.k8s.io/{c}:{k8s}"),
            ready: up && !(*c == "kube-apiserver" && w.apiserver_stuck.contains(node)),
        })
        .collect()
}

/// The Kubernetes version a fake config names, on a line `kubernetes: vX.Y.Z` (the configs
/// of the fakes are free text; the kubelet and static pods follow that line).
pub fn kubernetes_of(config: &str) -> Option<String> {
    config
        .lines()
        .find_map(|l| l.trim().strip_prefix("kubernetes: "))
        .map(str::to_string)
}
