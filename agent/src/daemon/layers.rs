//! The layers vixen applies above the nodes, before the engine runs, each a set of objects by
//! server-side apply with prune (`vixen_k8s::ManifestSets`, inventories in `kube-system`):
//!
//! ```text
//! cni (cni.manifests) ──► addons (addons:, SOPS ones decrypted) ──► gitops (the tool's install,
//!                                                                    its GitRepository/Kustomization
//!                                                                    or Application, the age key)
//! ```
//!
//! Each set waits for the one before it: an addon never lands on a cluster whose CNI failed to
//! apply. The engine's interlock then holds every node disruption until the CNI's DaemonSet has
//! rolled out, so a Cilium upgrade and a node rollout never overlap. What the app tool then
//! deploys is its own: vixen reads only the tool's view of the apps (`vixen_k8s::handover`).

use vixen_engine::KubeLink;
use vixen_k8s::ManifestSets;
use vixen_model::Role;

use super::Prepared;
use super::cycle::{Agent, first_line};

/// Where the inventories of the sets are kept (it always exists).
const INVENTORY_NAMESPACE: &str = "kube-system";

/// What one layer says for the commit status.
pub enum LayerNote {
    /// Applied: the summary.
    Applied(String),
    /// Not applied: why, in one line (names of objects and files, never a secret value).
    Failed {
        category: &'static str,
        message: String,
    },
}

impl Agent {
    /// [`apply`] with the agent's own Kubernetes client when it runs in the cluster.
    pub(super) async fn apply_layers(&self, p: &Prepared, link: &KubeLink) -> Vec<LayerNote> {
        apply(p, link, self.kube.as_ref().map(|k| k.client.clone())).await
    }
}

/// A client for the layers: `client`, else one from a control plane's kubeconfig.
async fn layer_client(
    p: &Prepared,
    link: &KubeLink,
    client: Option<kube::Client>,
) -> Option<kube::Client> {
    if client.is_some() {
        return client;
    }
    let cps: Vec<String> = p
        .desired
        .nodes
        .iter()
        .filter(|n| n.role == Role::Controlplane)
        .flat_map(|n| n.management_addresses.clone())
        .collect();
    link.client(&cps).await
}

/// The sets of `p`, in the order they are applied: name, objects, and the namespace of the
/// namespaced objects that name none (`default`; the tool's own for the GitOps install, written
/// for `kubectl apply -n`). The GitOps set carries the age key Secret.
pub fn layer_sets(p: &Prepared) -> Vec<(&'static str, Vec<serde_json::Value>, &'static str)> {
    let mut layers = Vec::new();
    if !p.cni.is_empty() {
        layers.push(("cni", p.cni.clone(), "default"));
    }
    if !p.addons.is_empty() {
        layers.push(("addons", p.addons.clone(), "default"));
    }
    if let Some(g) = &p.gitops {
        let mut objects = g.objects.clone();
        if let Some(keys) = &g.age_keys {
            objects.push(vixen_model::gitops::sops_secret(g.tool, keys));
        }
        layers.push(("gitops", objects, g.tool.namespace()));
    }
    layers
}

/// What applying `layers` ([`layer_sets`]) would do now, set by set (`vixen plan`), or why it cannot be told
/// (one line, no secret); writes nothing.
pub async fn preview(
    layers: &[(&'static str, Vec<serde_json::Value>, &'static str)],
    client: kube::Client,
) -> Vec<(&'static str, Result<vixen_k8s::SetPreview, String>)> {
    let sets = ManifestSets::new(client, INVENTORY_NAMESPACE);
    let mut out = Vec::new();
    for (set, objects, namespace) in layers {
        let preview = sets.preview_in(set, objects, namespace).await;
        out.push((*set, preview.map_err(|e| first_line(&e))));
    }
    out
}

/// Applies the CNI, the addons and the GitOps handover of `p`, in that order, each only when
/// the one before it applied; the notes are in that order. Nothing when no Kubernetes API
/// answers yet (before bootstrap).
pub async fn apply(p: &Prepared, link: &KubeLink, client: Option<kube::Client>) -> Vec<LayerNote> {
    let mut notes = Vec::new();
    if p.cni.is_empty() && p.addons.is_empty() && p.gitops.is_none() {
        return notes;
    }
    let Some(client) = layer_client(p, link, client).await else {
        return notes;
    };
    let sets = ManifestSets::new(client.clone(), INVENTORY_NAMESPACE);
    for (set, objects, namespace) in layer_sets(p) {
        match sets.apply_in(set, &objects, namespace).await {
            Ok(r) => notes.push(LayerNote::Applied(r.summary(set))),
            Err(e) => {
                let mut message = format!("{set} manifests not applied: {}", first_line(&e));
                if e.category() == "kube_forbidden" {
                    message.push_str(
                        " (vixen's least-privilege role cannot install the platform layer: \
                         apply manifests/infrastructure/rbac.yaml, which binds vixen to \
                         cluster-admin)",
                    );
                }
                notes.push(LayerNote::Failed {
                    category: e.category(),
                    message,
                });
                return notes;
            }
        }
    }
    if let Some(g) = &p.gitops {
        let line = match vixen_k8s::handover::read(&client, g.tool).await {
            Ok(h) => h.line(g.tool),
            Err(e) => format!("{}: not read: {}", g.tool.title(), first_line(&e)),
        };
        let line = if g.age_keys.is_none() {
            format!("{line} (no age key handed over: vixen holds no native age identity)")
        } else {
            line
        };
        notes.push(LayerNote::Applied(line));
    }
    notes
}
