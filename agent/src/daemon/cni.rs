//! The CNI's manifests (issue 17): applied before the engine runs, by server-side apply with
//! prune (`vixen_k8s::ManifestSets`, set `cni`, inventory in `kube-system`). The engine's
//! interlock then holds every node disruption until the CNI's DaemonSet has rolled out, so a
//! Cilium upgrade and a node rollout never overlap.

use vixen_engine::KubeLink;
use vixen_k8s::ManifestSets;
use vixen_model::Role;

use super::Prepared;
use super::cycle::{Agent, first_line};

/// Where the inventory of the CNI's objects is kept (Cilium's own namespace by default; it
/// always exists).
const INVENTORY_NAMESPACE: &str = "kube-system";

/// What the CNI apply says for the commit status.
pub(super) enum CniNote {
    /// Applied: the summary.
    Applied(String),
    /// Not applied: why, in one line (never a secret: the manifests are in clear in Git).
    Failed {
        category: &'static str,
        message: String,
    },
}

impl Agent {
    /// Applies `p.cni` when there is something to apply and a Kubernetes API answers.
    pub(super) async fn apply_cni(&self, p: &Prepared, link: &KubeLink) -> Option<CniNote> {
        if p.cni.is_empty() {
            return None;
        }
        let client = match &self.kube {
            Some(k) => k.client.clone(),
            None => {
                let cps: Vec<String> = p
                    .desired
                    .nodes
                    .iter()
                    .filter(|n| n.role == Role::Controlplane)
                    .flat_map(|n| n.management_addresses.clone())
                    .collect();
                link.client(&cps).await?
            }
        };
        let sets = ManifestSets::new(client, INVENTORY_NAMESPACE);
        Some(match sets.apply("cni", &p.cni).await {
            Ok(r) => CniNote::Applied(r.summary("cni")),
            Err(e) => {
                let mut message = format!("CNI manifests not applied: {}", first_line(&e));
                if e.category() == "kube_forbidden" {
                    message.push_str(
                        " (vixen's least-privilege role cannot install a CNI: apply \
                         manifests/infrastructure/rbac.yaml, which binds vixen to cluster-admin)",
                    );
                }
                CniNote::Failed {
                    category: e.category(),
                    message,
                }
            }
        })
    }
}
