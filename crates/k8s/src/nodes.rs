//! Nodes the way `kubectl cordon`, `drain` and `uncordon` handle them, for the engine's gates:
//! a node is cordoned and drained before Talos takes it down, must be `Ready` again afterwards
//! before it is uncordoned, and the Node object of a machine that was reset is deleted.
//!
//! Draining evicts through the Eviction API (`pods/eviction`), so PodDisruptionBudgets are
//! honoured: an eviction the budget forbids answers 429 and is retried until the drain's time is
//! up. DaemonSet pods and static (mirror) pods are left, as `kubectl drain
//! --ignore-daemonsets` and Talos' own drain leave them.
//!
//! vixen marks a cordon it made with an annotation, and only ever uncordons a node carrying it:
//! a node an operator cordoned by hand stays cordoned.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams};

use crate::{Error, Result, api_code};

/// The annotation on a Node vixen cordoned.
pub const CORDONED_BY_VIXEN: &str = "vixen.dev/cordoned";

/// A Node as the gates see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// Name.
    pub name: String,
    /// `Ready` condition is `True`.
    pub ready: bool,
    /// `spec.unschedulable`.
    pub unschedulable: bool,
    /// Cordoned by vixen (carries [`CORDONED_BY_VIXEN`]).
    pub cordoned_by_vixen: bool,
    /// `status.nodeInfo.osImage` (`Talos (v1.11.6)`).
    pub os_image: String,
    /// `status.nodeInfo.kubeletVersion` (`v1.34.1`).
    pub kubelet_version: String,
}

impl NodeView {
    fn of(node: &Node) -> Self {
        let status = node.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True");
        Self {
            name: node.metadata.name.clone().unwrap_or_default(),
            ready,
            unschedulable: node
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false),
            cordoned_by_vixen: node
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(CORDONED_BY_VIXEN)),
            os_image: status
                .and_then(|s| s.node_info.as_ref())
                .map(|i| i.os_image.clone())
                .unwrap_or_default(),
            kubelet_version: status
                .and_then(|s| s.node_info.as_ref())
                .map(|i| i.kubelet_version.clone())
                .unwrap_or_default(),
        }
    }
}

/// One of the control-plane static pods Talos runs on a control plane (kube-apiserver,
/// kube-controller-manager, kube-scheduler), as its mirror pod in `kube-system` shows it.
/// Talos labels them `tier=control-plane` and `k8s-app=<component>`
/// (internal/app/machined/pkg/controllers/k8s/control_plane_static_pod.go), and
/// `talosctl upgrade-k8s` waits for each to be Ready on the new image
/// (pkg/cluster/kubernetes/talos_managed.go, `checkPodStatus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticPod {
    /// `k8s-app` (`kube-apiserver`, ...).
    pub component: String,
    /// The first container's image.
    pub image: String,
    /// `Ready` condition is `True`.
    pub ready: bool,
}

/// What a finished drain did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Pods evicted (`namespace/name`).
    pub evicted: Vec<String>,
    /// Pods left in place (DaemonSet and mirror pods).
    pub ignored: Vec<String>,
}

/// Node operations.
#[derive(Clone)]
pub struct Nodes {
    nodes: Api<Node>,
    pods: kube::Client,
}

impl Nodes {
    /// Nodes through `client`.
    pub fn new(client: kube::Client) -> Self {
        Self {
            nodes: Api::all(client.clone()),
            pods: client,
        }
    }

    /// Every Node.
    ///
    /// # Errors
    /// API errors (the API is down, or RBAC refuses `list nodes`).
    pub async fn list(&self) -> Result<Vec<NodeView>> {
        let list = self
            .nodes
            .list(&ListParams::default())
            .await
            .map_err(|e| Error::kube("list", "nodes", e))?;
        Ok(list.items.iter().map(NodeView::of).collect())
    }

    /// The control-plane static pods bound to the Node `name` (none on a worker).
    ///
    /// # Errors
    /// API errors (RBAC refusing `list pods`).
    pub async fn static_pods(&self, name: &str) -> Result<Vec<StaticPod>> {
        let mut by_node = self
            .list_static_pods(Some(&format!("spec.nodeName={name}")))
            .await?;
        Ok(by_node.remove(name).unwrap_or_default())
    }

    /// Every control-plane static pod, by Node name.
    ///
    /// # Errors
    /// API errors.
    pub async fn all_static_pods(&self) -> Result<BTreeMap<String, Vec<StaticPod>>> {
        self.list_static_pods(None).await
    }

    async fn list_static_pods(
        &self,
        fields: Option<&str>,
    ) -> Result<BTreeMap<String, Vec<StaticPod>>> {
        let api: Api<Pod> = Api::namespaced(self.pods.clone(), "kube-system");
        let mut lp = ListParams::default().labels("tier=control-plane");
        if let Some(f) = fields {
            lp = lp.fields(f);
        }
        let list = api
            .list(&lp)
            .await
            .map_err(|e| Error::kube("list", "control-plane pods", e))?;
        let mut out: BTreeMap<String, Vec<StaticPod>> = BTreeMap::new();
        for p in &list.items {
            let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else {
                continue;
            };
            let Some(component) = p
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("k8s-app"))
                .cloned()
            else {
                continue;
            };
            let Some(image) = p
                .spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.clone())
            else {
                continue;
            };
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                .is_some_and(|c| c.status == "True");
            out.entry(node).or_default().push(StaticPod {
                component,
                image,
                ready,
            });
        }
        Ok(out)
    }

    /// The Node called `name`, if it exists.
    ///
    /// # Errors
    /// API errors.
    pub async fn get(&self, name: &str) -> Result<Option<NodeView>> {
        let node = self
            .nodes
            .get_opt(name)
            .await
            .map_err(|e| Error::kube("get", format!("node {name}"), e))?;
        Ok(node.as_ref().map(NodeView::of))
    }

    /// Marks the node unschedulable, and marks the cordon as vixen's unless someone else had
    /// already cordoned it. A missing Node is not an error (nothing to cordon).
    ///
    /// # Errors
    /// API errors.
    pub async fn cordon(&self, name: &str) -> Result<()> {
        let Some(node) = self.get(name).await? else {
            return Ok(());
        };
        if node.unschedulable {
            return Ok(());
        }
        let patch = serde_json::json!({
            "metadata": { "annotations": { CORDONED_BY_VIXEN: "true" } },
            "spec": { "unschedulable": true },
        });
        self.patch(name, &patch, "cordon").await
    }

    /// Makes the node schedulable again, if vixen cordoned it.
    ///
    /// # Errors
    /// API errors.
    pub async fn uncordon(&self, name: &str) -> Result<()> {
        let Some(node) = self.get(name).await? else {
            return Ok(());
        };
        if !node.cordoned_by_vixen {
            return Ok(());
        }
        let patch = serde_json::json!({
            "metadata": { "annotations": { CORDONED_BY_VIXEN: null } },
            "spec": { "unschedulable": null },
        });
        self.patch(name, &patch, "uncordon").await
    }

    async fn patch(&self, name: &str, patch: &serde_json::Value, verb: &'static str) -> Result<()> {
        match self
            .nodes
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if api_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(Error::kube(verb, format!("node {name}"), e)),
        }
    }

    /// Deletes the Node object (a machine that left the cluster). Already gone is fine.
    ///
    /// # Errors
    /// API errors.
    pub async fn delete(&self, name: &str) -> Result<()> {
        match self.nodes.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if api_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(Error::kube("delete", format!("node {name}"), e)),
        }
    }

    /// Cordons `name`, then evicts its pods until none is left but DaemonSet and mirror pods,
    /// retrying evictions a PodDisruptionBudget refuses, for at most `limit`.
    ///
    /// # Errors
    /// [`Error::Drain`] naming the pods still there and the last refusal when time is up;
    /// API errors.
    pub async fn drain(&self, name: &str, limit: Duration, poll: Duration) -> Result<DrainReport> {
        self.cordon(name).await?;
        let until = Instant::now() + limit;
        let all: Api<Pod> = Api::all(self.pods.clone());
        let mut evicted: BTreeSet<String> = BTreeSet::new();
        let mut last_refusal: Option<String> = None;
        loop {
            let pods = all
                .list(&ListParams::default().fields(&format!("spec.nodeName={name}")))
                .await
                .map_err(|e| Error::kube("list", format!("pods on node {name}"), e))?;
            let mut ignored = Vec::new();
            let mut left = Vec::new();
            for pod in &pods.items {
                let id = pod_id(pod);
                if is_mirror(pod) || is_daemonset(pod) {
                    ignored.push(id);
                    continue;
                }
                left.push(id.clone());
                if pod.metadata.deletion_timestamp.is_some() {
                    continue; // evicted: its kubelet is stopping it
                }
                let ns = pod.metadata.namespace.clone().unwrap_or_default();
                let api: Api<Pod> = Api::namespaced(self.pods.clone(), &ns);
                match api
                    .evict(
                        pod.metadata.name.as_deref().unwrap_or_default(),
                        &EvictParams::default(),
                    )
                    .await
                {
                    Ok(_) => {
                        tracing::info!(node = name, pod = %id, "evicted");
                        evicted.insert(id);
                    }
                    Err(e) if api_code(&e) == Some(404) => {}
                    // A PodDisruptionBudget forbids it now: try again on the next round.
                    Err(kube::Error::Api(s)) if s.code == 429 => {
                        tracing::info!(node = name, pod = %id, reason = %s.message, "eviction refused by a disruption budget; retrying");
                        last_refusal = Some(format!("{id}: {}", s.message));
                    }
                    Err(e) => return Err(Error::kube("evict", format!("pod {id}"), e)),
                }
            }
            if left.is_empty() {
                ignored.sort();
                return Ok(DrainReport {
                    evicted: evicted.into_iter().collect(),
                    ignored,
                });
            }
            if Instant::now() >= until {
                return Err(Error::Drain {
                    node: name.to_string(),
                    pods: left,
                    reason: last_refusal.unwrap_or_else(|| "the pods did not terminate".into()),
                });
            }
            tokio::time::sleep(poll.min(until.saturating_duration_since(Instant::now()))).await;
        }
    }
}

fn pod_id(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// A static pod's API mirror: the kubelet owns it, an eviction cannot move it.
fn is_mirror(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"))
}

/// A DaemonSet's pod: the DaemonSet would put it straight back.
fn is_daemonset(pod: &Pod) -> bool {
    pod.metadata.owner_references.as_ref().is_some_and(|o| {
        o.iter()
            .any(|r| r.kind == "DaemonSet" && r.controller == Some(true))
    })
}
