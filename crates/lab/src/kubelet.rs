//! The kubelet stand-in of the lab's nodes: each configured node of the served cluster registers
//! its `Node` object (as a kubelet does when it starts) and keeps its `Ready` condition: true while
//! the node runs, false while it reboots, is powered off or is back in maintenance mode.
//!
//! Writes go through server-side apply under one field manager, on the object (labels) and on its
//! `status` subresource; the spec (`unschedulable`, taints) is left to whoever cordons.
//!
//! On a control plane it posts the mirror pods of the static pods Talos runs from the config
//! (kube-apiserver, kube-controller-manager, kube-scheduler in `kube-system`, labelled
//! `tier=control-plane` and `k8s-app=<component>`, each on `cluster.<component>.image`;
//! internal/app/machined/pkg/controllers/k8s/control_plane_static_pod.go), Ready while the
//! node runs, and replaced when the config changes their image.
//!
//! Pods bound to a node are a kubelet's too: a running node reports them Running and Ready, and
//! finishes the deletion of a pod being deleted (an eviction sets its deletion timestamp; the
//! kubelet stops its containers, then deletes it with grace 0). A node that is down leaves
//! them as they are until it is back, as a real kubelet does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo, Pod, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};

use crate::config::image_tag;
use crate::lab::LabInner;
use crate::node::Mode;
use crate::{Role, node};

/// The field manager of the lab's writes.
const MANAGER: &str = "vixen-lab-kubelet";
/// How often an unchanged status is posted again (a kubelet's heartbeat).
const HEARTBEAT: Duration = Duration::from_secs(10);

/// What was last posted per node.
#[derive(Default)]
pub(crate) struct Kubelet {
    registered: HashSet<String>,
    posted: HashMap<String, Posted>,
    /// Per control plane: the static pods' images and readiness last posted.
    statics: HashMap<String, Vec<(String, bool)>>,
    /// The DaemonSets' status (the controller's part, one pod per registered node).
    daemonsets: crate::daemonsets::DaemonSets,
}

/// The control-plane static pods: `k8s-app` and the config path of their image.
const STATIC_PODS: [(&str, &str); 3] = [
    ("kube-apiserver", "cluster.apiServer.image"),
    ("kube-controller-manager", "cluster.controllerManager.image"),
    ("kube-scheduler", "cluster.scheduler.image"),
];

struct Posted {
    ready: bool,
    /// The Talos version in the posted OS image: a kubelet starting after an upgrade posts its
    /// new node info at once, whether or not a NotReady was seen in between.
    version: String,
    /// The kubelet image's tag: Talos restarts the kubelet when `machine.kubelet.image` changes
    /// (a live apply), and the new kubelet posts its version when it starts.
    kubelet: String,
    since: Time,
    at: Instant,
}

impl Kubelet {
    /// Registers running nodes and posts every changed (or stale) Ready condition.
    pub(crate) async fn sync(&mut self, lab: &LabInner, client: &kube::Client) {
        let api: Api<Node> = Api::all(client.clone());
        let cluster = lab.kube.as_ref().and_then(|k| k.cluster());
        for n in &lab.nodes {
            let Some(cfg) = n.config() else { continue };
            if Some(cfg.cluster_key()) != cluster {
                continue;
            }
            let name = n.hostname();
            let mut not_ready = false;
            n.faults(|f| not_ready = f.kubelet_not_ready);
            let ready = n.mode() == Mode::Configured && !not_ready;
            if ready && !self.registered.contains(&name) {
                match register(&api, n, &cfg).await {
                    Ok(()) => {
                        self.registered.insert(name.clone());
                    }
                    Err(e) => {
                        tracing::debug!(node = %name, error = %e, "node registration");
                        continue;
                    }
                }
            }
            if !self.registered.contains(&name) {
                continue;
            }
            let due = match self.posted.get(&name) {
                Some(p) => {
                    p.ready != ready
                        || p.version != n.version().to_string()
                        || p.kubelet != kubelet_tag(&cfg)
                        || p.at.elapsed() > HEARTBEAT
                }
                None => true,
            };
            if !due {
                continue;
            }
            let since = match self.posted.get(&name) {
                Some(p) if p.ready == ready => p.since.clone(),
                _ => Time(k8s_openapi::jiff::Timestamp::now()),
            };
            match post_status(&api, n, &cfg, ready, &since).await {
                Ok(()) => {
                    self.posted.insert(
                        name,
                        Posted {
                            ready,
                            version: n.version().to_string(),
                            kubelet: kubelet_tag(&cfg),
                            since,
                            at: Instant::now(),
                        },
                    );
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    // Deleted (a removal): a running kubelet registers again, a stopped one not.
                    self.registered.remove(&name);
                    self.posted.remove(&name);
                }
                Err(e) => tracing::debug!(node = %name, error = %e, "node status"),
            }
        }
        self.static_pods(lab, client).await;
        self.pods(lab, client).await;
        let scheduled = i32::try_from(self.registered.len()).unwrap_or(i32::MAX);
        let ready = self.posted.values().filter(|p| p.ready).count();
        let ready = i32::try_from(ready).unwrap_or(i32::MAX);
        self.daemonsets.sync(client, scheduled, ready).await;
    }

    /// Posts the mirror pods of each registered control plane whose images or readiness
    /// changed.
    async fn static_pods(&mut self, lab: &LabInner, client: &kube::Client) {
        let api: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
        for n in &lab.nodes {
            let Some(cfg) = n.config() else { continue };
            let name = n.hostname();
            if cfg.role != Role::Controlplane || !self.registered.contains(&name) {
                continue;
            }
            let mut apiserver_down = false;
            n.faults(|f| apiserver_down = f.apiserver_not_ready);
            let running = n.mode() == Mode::Configured;
            let want: Vec<(String, bool)> = STATIC_PODS
                .iter()
                .map(|(app, path)| {
                    let image = cfg.get(path).unwrap_or_default().to_string();
                    let ready = running && !(apiserver_down && *app == "kube-apiserver");
                    (image, ready)
                })
                .collect();
            if self.statics.get(&name) == Some(&want) {
                continue;
            }
            let mut ok = true;
            for ((app, _), (image, ready)) in STATIC_PODS.iter().zip(&want) {
                if let Err(e) = post_static_pod(&api, n, app, image, *ready).await {
                    tracing::debug!(node = %name, pod = app, error = %e, "static pod");
                    ok = false;
                }
            }
            if ok {
                self.statics.insert(name, want);
            }
        }
    }

    /// The pods of running nodes: report new ones Running, finish deletions.
    async fn pods(&self, lab: &LabInner, client: &kube::Client) {
        let running: HashSet<String> = lab
            .nodes
            .iter()
            .filter(|n| n.mode() == Mode::Configured)
            .map(|n| n.hostname())
            .filter(|h| self.registered.contains(h))
            .collect();
        if running.is_empty() {
            return;
        }
        let all: Api<Pod> = Api::all(client.clone());
        let Ok(list) = all.list(&ListParams::default()).await else {
            return;
        };
        for pod in list.items {
            let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
                continue;
            };
            if !running.contains(&node) {
                continue;
            }
            // Mirror pods are posted by `static_pods`.
            if pod
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"))
            {
                continue;
            }
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            if pod.metadata.deletion_timestamp.is_some() {
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    ..DeleteParams::default()
                };
                if let Err(e) = api.delete(&name, &dp).await {
                    tracing::debug!(pod = %name, error = %e, "pod deletion");
                }
                continue;
            }
            let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
            if phase.is_none() || phase.as_deref() == Some("Pending") {
                let now = Time(k8s_openapi::jiff::Timestamp::now());
                let status = Pod {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        ..ObjectMeta::default()
                    },
                    status: Some(PodStatus {
                        phase: Some("Running".into()),
                        conditions: Some(vec![PodCondition {
                            type_: "Ready".into(),
                            status: "True".into(),
                            last_transition_time: Some(now),
                            ..PodCondition::default()
                        }]),
                        ..PodStatus::default()
                    }),
                    ..Pod::default()
                };
                let pp = PatchParams::apply(MANAGER).force();
                if let Err(e) = api.patch_status(&name, &pp, &Patch::Apply(&status)).await {
                    tracing::debug!(pod = %name, error = %e, "pod status");
                }
            }
        }
    }
}

/// Creates or updates the Node object with the labels a kubelet on Talos sets.
async fn register(
    api: &Api<Node>,
    n: &node::Node,
    cfg: &crate::config::MachineConfig,
) -> Result<(), kube::Error> {
    let name = n.hostname();
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), "amd64".to_string()),
    ]);
    if cfg.role == Role::Controlplane {
        labels.insert(
            "node-role.kubernetes.io/control-plane".to_string(),
            String::new(),
        );
    }
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    let pp = PatchParams::apply(MANAGER).force();
    api.patch(&name, &pp, &Patch::Apply(&node)).await?;
    Ok(())
}

/// The kubelet version a node's config runs (`machine.kubelet.image`'s tag).
fn kubelet_tag(cfg: &crate::config::MachineConfig) -> String {
    cfg.get("machine.kubelet.image")
        .and_then(image_tag)
        .unwrap_or_default()
}

/// Posts the Ready condition, addresses and node info on the `status` subresource.
async fn post_status(
    api: &Api<Node>,
    n: &node::Node,
    cfg: &crate::config::MachineConfig,
    ready: bool,
    since: &Time,
) -> Result<(), kube::Error> {
    let name = n.hostname();
    let (status, reason, message) = if ready {
        ("True", "KubeletReady", "kubelet is posting ready status")
    } else {
        (
            "False",
            "KubeletNotReady",
            "node is rebooting, powered off or in maintenance mode",
        )
    };
    let kubelet = kubelet_tag(cfg);
    let talos = n.version();
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..ObjectMeta::default()
        },
        status: Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: status.into(),
                reason: Some(reason.into()),
                message: Some(message.into()),
                last_heartbeat_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
                last_transition_time: Some(since.clone()),
            }]),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: n.current_address().to_string(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: name.clone(),
                },
            ]),
            node_info: Some(NodeSystemInfo {
                architecture: "amd64".into(),
                boot_id: String::new(),
                container_runtime_version: "containerd://2.1.5".into(),
                kernel_version: "6.12.0-talos".into(),
                kube_proxy_version: String::new(),
                kubelet_version: kubelet,
                machine_id: n.spec.name.clone(),
                operating_system: "linux".into(),
                os_image: format!("Talos (v{}.{}.{})", talos.major, talos.minor, talos.patch),
                system_uuid: n.spec.name.clone(),
                ..NodeSystemInfo::default()
            }),
            ..NodeStatus::default()
        }),
        ..Node::default()
    };
    let pp = PatchParams::apply(MANAGER).force();
    api.patch_status(&name, &pp, &Patch::Apply(&node)).await?;
    Ok(())
}

/// Creates or updates the mirror pod `<app>-<hostname>` and its status.
async fn post_static_pod(
    api: &Api<Pod>,
    n: &node::Node,
    app: &str,
    image: &str,
    ready: bool,
) -> Result<(), kube::Error> {
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    let host = n.hostname();
    let name = format!("{app}-{host}");
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some("kube-system".into()),
            labels: Some(BTreeMap::from([
                ("tier".to_string(), "control-plane".to_string()),
                ("k8s-app".to_string(), app.to_string()),
            ])),
            annotations: Some(BTreeMap::from([(
                "kubernetes.io/config.mirror".to_string(),
                format!("{:x}", fnv(image)),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(host),
            containers: vec![Container {
                name: app.to_string(),
                image: Some(image.to_string()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    };
    let pp = PatchParams::apply(MANAGER).force();
    // A static pod's image is immutable in the API: the kubelet replaces the mirror pod.
    if let Ok(old) = api.get(&name).await {
        let old_image = old
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone());
        if old_image.as_deref() != Some(image) {
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            };
            api.delete(&name, &dp).await?;
        }
    }
    api.patch(&name, &pp, &Patch::Apply(&pod)).await?;
    let status = Pod {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..ObjectMeta::default()
        },
        status: Some(PodStatus {
            phase: Some("Running".into()),
            host_ip: Some(n.current_address().to_string()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                last_transition_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        }),
        ..Pod::default()
    };
    api.patch_status(&name, &pp, &Patch::Apply(&status)).await?;
    Ok(())
}

/// A small stable hash (the mirror annotation holds the static pod's hash).
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
