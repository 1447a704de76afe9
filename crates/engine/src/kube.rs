//! How the engine reaches Kubernetes for its gates (drain, Node readiness, uncordon).
//!
//! The in-cluster agent hands in its own client (its ServiceAccount, least-privilege RBAC).
//! From a laptop, vixen asks a control plane for an admin kubeconfig over the Talos API, as
//! `talosctl kubeconfig` does, and keeps the client for the rest of the run. When no API
//! answers, plans carry no Kubernetes steps (Talos still cordons and drains a node itself
//! before an upgrade or a graceful reset).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use vixen_k8s::{DaemonSetProgress, DrainReport, NodeView, Nodes, StaticPod};
use vixen_plan::{KubeNode, KubeView};

use crate::error::KubeError;
use crate::ports::{KubeGates, NodeApi as _};
use crate::talos::Connector;

/// Where the Kubernetes client comes from.
#[derive(Clone, Default)]
pub enum KubeAccess {
    /// Nowhere: plans have no Kubernetes steps.
    Off,
    /// This client.
    Client(kube::Client),
    /// This kubeconfig file.
    Kubeconfig(std::path::PathBuf),
    /// An admin kubeconfig from a control plane's Kubeconfig RPC.
    #[default]
    FromTalos,
}

/// The resolved client, shared by clones of a [`Connector`].
#[derive(Clone, Default)]
pub(crate) struct KubeCache(Arc<Mutex<Option<kube::Client>>>);

impl KubeCache {
    fn get(&self) -> Option<kube::Client> {
        self.0.lock().ok()?.clone()
    }

    async fn keep_if_answers(&self, client: kube::Client) -> Option<kube::Client> {
        match client.apiserver_version().await {
            Ok(_) => {
                *self.0.lock().ok()? = Some(client.clone());
                Some(client)
            }
            Err(e) => {
                tracing::debug!(error = %e, "the Kubernetes API does not answer (yet)");
                None
            }
        }
    }
}

/// The real [`KubeGates`]: a Kubernetes client from [`KubeAccess`], resolved once its API
/// answers and kept for the rest of the run.
#[derive(Clone)]
pub struct KubeLink {
    access: KubeAccess,
    cache: KubeCache,
    talos: Connector,
}

impl KubeLink {
    /// Reaches Kubernetes through `access`; `talos` asks control planes for a kubeconfig.
    pub fn new(access: KubeAccess, talos: Connector) -> Self {
        Self {
            access,
            cache: KubeCache::default(),
            talos,
        }
    }

    /// Node operations, if Kubernetes can be reached; `control_planes` are the addresses asked
    /// for a kubeconfig.
    pub async fn nodes(&self, control_planes: &[String]) -> Option<Nodes> {
        self.client(control_planes).await.map(Nodes::new)
    }

    /// A Kubernetes client whose API answered, if there is one. A client is kept only once its
    /// API answered: before that (a cluster still coming up) every call looks again.
    pub async fn client(&self, control_planes: &[String]) -> Option<kube::Client> {
        match &self.access {
            KubeAccess::Off => None,
            KubeAccess::Client(c) => Some(c.clone()),
            KubeAccess::Kubeconfig(path) => {
                if let Some(c) = self.cache.get() {
                    return Some(c);
                }
                match kubeconfig_file_client(path).await {
                    Ok(client) => self.cache.keep_if_answers(client).await,
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "unusable kubeconfig: no drain or readiness steps");
                        None
                    }
                }
            }
            KubeAccess::FromTalos => {
                if let Some(c) = self.cache.get() {
                    return Some(c);
                }
                for address in control_planes {
                    match self.kubeconfig_client(address).await {
                        Ok(client) => {
                            if let Some(c) = self.cache.keep_if_answers(client).await {
                                return Some(c);
                            }
                        }
                        Err(e) => {
                            tracing::debug!(%address, error = %e, "no kubeconfig from this control plane")
                        }
                    }
                }
                None
            }
        }
    }

    async fn kubeconfig_client(&self, address: &str) -> Result<kube::Client, String> {
        let text = kubeconfig(&self.talos, address).await?;
        let text = std::str::from_utf8(&text).map_err(|e| e.to_string())?;
        client_from(kube::config::Kubeconfig::from_yaml(text).map_err(|e| e.to_string())?).await
    }

    async fn require(&self, control_planes: &[String]) -> Result<Nodes, KubeError> {
        self.nodes(control_planes).await.ok_or(KubeError::NoApi)
    }
}

impl KubeGates for KubeLink {
    async fn view(&self, control_planes: &[String]) -> Option<KubeView> {
        let nodes = self.nodes(control_planes).await?;
        // Static pods are a gate's input, not a must: a failed list leaves them out.
        let mut pods = nodes.all_static_pods().await.unwrap_or_default();
        match nodes.list().await {
            Ok(list) => Some(KubeView {
                nodes: list
                    .into_iter()
                    .map(|n| KubeNode {
                        static_pods: pods
                            .remove(&n.name)
                            .unwrap_or_default()
                            .iter()
                            .map(crate::gates::pod_view)
                            .collect(),
                        name: n.name,
                        ready: n.ready,
                        cordoned_by_vixen: n.cordoned_by_vixen,
                        kubelet_version: n.kubelet_version,
                    })
                    .collect(),
            }),
            Err(e) => {
                tracing::info!(error = %e, "the Kubernetes API does not answer: no drain or readiness steps this time");
                None
            }
        }
    }

    async fn drain(
        &self,
        control_planes: &[String],
        node: &str,
        limit: Duration,
        poll: Duration,
    ) -> Result<DrainReport, KubeError> {
        Ok(self
            .require(control_planes)
            .await?
            .drain(node, limit, poll)
            .await?)
    }

    async fn node(
        &self,
        control_planes: &[String],
        node: &str,
    ) -> Result<Option<NodeView>, KubeError> {
        Ok(self.require(control_planes).await?.get(node).await?)
    }

    async fn static_pods(
        &self,
        control_planes: &[String],
        node: &str,
    ) -> Result<Vec<StaticPod>, KubeError> {
        Ok(self
            .require(control_planes)
            .await?
            .static_pods(node)
            .await?)
    }

    async fn uncordon(&self, control_planes: &[String], node: &str) -> Result<(), KubeError> {
        Ok(self.require(control_planes).await?.uncordon(node).await?)
    }

    async fn daemonset_progress(
        &self,
        control_planes: &[String],
        daemonset: &str,
    ) -> Result<Option<DaemonSetProgress>, KubeError> {
        let client = self.client(control_planes).await.ok_or(KubeError::NoApi)?;
        let (namespace, name) = daemonset
            .split_once('/')
            .unwrap_or(("kube-system", daemonset));
        Ok(vixen_k8s::manifests::progress(&client, namespace, name).await?)
    }

    async fn delete_node(&self, control_planes: &[String], node: &str) -> Result<(), KubeError> {
        Ok(self.require(control_planes).await?.delete(node).await?)
    }
}

/// The admin kubeconfig the control plane at `address` hands out (Talos streams it as a
/// `.tar.gz` holding one file).
///
/// # Errors
/// The node refuses or fails the call; the archive is unreadable.
pub async fn kubeconfig(talos: &Connector, address: &str) -> Result<Vec<u8>, String> {
    let archive = talos.kubeconfig(address).await.map_err(|e| e.to_string())?;
    first_file_of_targz(&archive)
        .map_err(|e| format!("the node's kubeconfig archive is unreadable: {e}"))
}

async fn kubeconfig_file_client(path: &std::path::Path) -> Result<kube::Client, String> {
    client_from(kube::config::Kubeconfig::read_from(path).map_err(|e| e.to_string())?).await
}

async fn client_from(kc: kube::config::Kubeconfig) -> Result<kube::Client, String> {
    let mut cfg =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| e.to_string())?;
    // An API that does not answer must not hold up a reconcile.
    cfg.connect_timeout = Some(Duration::from_secs(2));
    cfg.read_timeout = Some(Duration::from_secs(15));
    kube::Client::try_from(cfg).map_err(|e| e.to_string())
}

/// The first file of a `.tar.gz`.
fn first_file_of_targz(archive: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    for entry in tar.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type().is_file() {
            let mut out = Vec::new();
            entry.read_to_end(&mut out)?;
            return Ok(out);
        }
    }
    Err(std::io::Error::other("the archive holds no file"))
}
