//! How the engine reaches Kubernetes for its gates (drain, Node readiness, uncordon).
//!
//! The in-cluster agent hands in its own client (its ServiceAccount, least-privilege RBAC).
//! From a laptop, vixen asks a control plane for an admin kubeconfig over the Talos API, as
//! `talosctl kubeconfig` does, and keeps the client for the rest of the run. When no API
//! answers, plans carry no Kubernetes steps (Talos still cordons and drains a node itself
//! before an upgrade or a graceful reset).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use vixen_k8s::Nodes;
use vixen_plan::{KubeNode, KubeView};

use super::observe::Connector;

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

impl Connector {
    /// Node operations, if Kubernetes can be reached; `control_planes` are the addresses asked
    /// for a kubeconfig.
    pub async fn kube_nodes(&self, control_planes: &[String]) -> Option<Nodes> {
        self.kube_client(control_planes).await.map(Nodes::new)
    }

    /// A Kubernetes client whose API answered, if there is one. A client is kept only once its
    /// API answered: before that (a cluster still coming up) every call looks again.
    pub async fn kube_client(&self, control_planes: &[String]) -> Option<kube::Client> {
        match &self.kube {
            KubeAccess::Off => None,
            KubeAccess::Client(c) => Some(c.clone()),
            KubeAccess::Kubeconfig(path) => {
                if let Some(c) = self.kube_cache.get() {
                    return Some(c);
                }
                match kubeconfig_file_client(path).await {
                    Ok(client) => self.kube_cache.keep_if_answers(client).await,
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "unusable kubeconfig: no drain or readiness steps");
                        None
                    }
                }
            }
            KubeAccess::FromTalos => {
                if let Some(c) = self.kube_cache.get() {
                    return Some(c);
                }
                for address in control_planes {
                    match self.kubeconfig_client(address).await {
                        Ok(client) => {
                            if let Some(c) = self.kube_cache.keep_if_answers(client).await {
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

    /// The admin kubeconfig the control plane at `address` hands out (Talos streams it as a
    /// `.tar.gz` holding one file).
    ///
    /// # Errors
    /// The node refuses or fails the call; the archive is unreadable.
    pub async fn kubeconfig(&self, address: &str) -> anyhow::Result<Vec<u8>> {
        let archive = self.node(address)?.kubeconfig().await?;
        first_file_of_targz(&archive).context("the node's kubeconfig archive is unreadable")
    }

    async fn kubeconfig_client(&self, address: &str) -> anyhow::Result<kube::Client> {
        let text = self.kubeconfig(address).await?;
        client_from(kube::config::Kubeconfig::from_yaml(std::str::from_utf8(
            &text,
        )?)?)
        .await
    }
}

async fn kubeconfig_file_client(path: &std::path::Path) -> anyhow::Result<kube::Client> {
    client_from(kube::config::Kubeconfig::read_from(path)?).await
}

async fn client_from(kc: kube::config::Kubeconfig) -> anyhow::Result<kube::Client> {
    let mut cfg =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    // An API that does not answer must not hold up a reconcile.
    cfg.connect_timeout = Some(Duration::from_secs(2));
    cfg.read_timeout = Some(Duration::from_secs(15));
    Ok(kube::Client::try_from(cfg)?)
}

/// What the API shows, or `None` when it does not answer.
pub async fn view(nodes: &Nodes) -> Option<KubeView> {
    match nodes.list().await {
        Ok(list) => Some(KubeView {
            nodes: list
                .into_iter()
                .map(|n| KubeNode {
                    name: n.name,
                    ready: n.ready,
                    cordoned_by_vixen: n.cordoned_by_vixen,
                })
                .collect(),
        }),
        Err(e) => {
            tracing::info!(error = %e, "the Kubernetes API does not answer: no drain or readiness steps this time");
            None
        }
    }
}

/// The first file of a `.tar.gz`.
fn first_file_of_targz(archive: &[u8]) -> anyhow::Result<Vec<u8>> {
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
    anyhow::bail!("the archive holds no file")
}
