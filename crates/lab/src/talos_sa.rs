//! Talos' Kubernetes API access (`machine.features.kubernetesTalosAPIAccess`) in the lab: once a
//! configured control plane of the served cluster has the feature on, the CRD
//! `serviceaccounts.talos.dev` is applied (Talos applies it with its bootstrap manifests:
//! internal/app/machined/pkg/controllers/k8s/internal/k8stemplates/talos.go, testdata
//! talos-service-account-crd.yaml), and every `talos.dev/v1alpha1` ServiceAccount in an allowed
//! namespace whose roles are allowed gets a Secret of the same name, controlled by it, holding a
//! talosconfig under the key `config`: context `default`, endpoint `talos.default`, the OS CA and
//! a client certificate with the roles as Organization, valid 6 hours (Talos' CRD controller:
//! internal/app/machined/pkg/controllers/kubeaccess/serviceaccount/crd_controller.go, newSecret
//! and generateTalosconfig). A namespace or role not allowed leaves `status.failureReason` and no
//! Secret, as there.
//!
//! Fault `talos-api-access-pending` on a control plane: its Talos has not applied its manifests
//! yet (the CRD is not served until some control plane without the fault runs the feature).

use std::collections::HashSet;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};

use crate::Role;
use crate::lab::LabInner;
use crate::node::Mode;

const MANAGER: &str = "vixen-lab-talos";
const CERT_TTL_HOURS: i64 = 6;
const ENDPOINT: &str = "talos.default";

/// What the controller keeps between rounds.
#[derive(Default)]
pub(crate) struct TalosAccess {
    crd_applied: bool,
    /// `namespace/name` of ServiceAccounts whose Secret exists.
    synced: HashSet<String>,
}

/// The feature's settings on a control plane that runs it.
struct Feature {
    namespaces: Vec<String>,
    roles: Vec<String>,
    config: std::sync::Arc<crate::config::MachineConfig>,
}

/// The feature's settings of a control plane that runs it, if any.
fn feature(lab: &LabInner) -> Option<Feature> {
    let cluster = lab.kube.as_ref().and_then(|k| k.cluster())?;
    lab.nodes.iter().find_map(|n| {
        let cfg = n.config()?;
        if cfg.role != Role::Controlplane
            || cfg.cluster_key() != cluster
            || n.mode() != Mode::Configured
        {
            return None;
        }
        let mut pending = false;
        n.faults(|f| pending = f.talos_api_access_pending);
        let f = cfg
            .doc
            .pointer("/machine/features/kubernetesTalosAPIAccess")?;
        if pending || f["enabled"] != true {
            return None;
        }
        let list = |k: &str| -> Vec<String> {
            f[k].as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        Some(Feature {
            namespaces: list("allowedKubernetesNamespaces"),
            roles: list("allowedRoles"),
            config: cfg.clone(),
        })
    })
}

fn crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": "serviceaccounts.talos.dev" },
        "spec": {
            "conversion": { "strategy": "None" },
            "group": "talos.dev",
            "names": {
                "kind": "ServiceAccount", "listKind": "ServiceAccountList",
                "plural": "serviceaccounts", "shortNames": ["tsa"], "singular": "serviceaccount",
            },
            "scope": "Namespaced",
            "versions": [{
                "name": "v1alpha1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": { "type": "object", "properties": {
                    "spec": { "type": "object", "properties": {
                        "roles": { "type": "array", "items": { "type": "string" } } } },
                    "status": { "type": "object", "properties": {
                        "failureReason": { "type": "string" } } },
                } } },
            }],
        },
    })
}

impl TalosAccess {
    pub(crate) async fn sync(&mut self, lab: &LabInner, client: &kube::Client) {
        let Some(Feature {
            namespaces,
            roles,
            config: cfg,
        }) = feature(lab)
        else {
            return;
        };
        if !self.crd_applied {
            let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
            let doc: CustomResourceDefinition = match serde_json::from_value(crd()) {
                Ok(d) => d,
                Err(_) => return,
            };
            match crds
                .patch(
                    "serviceaccounts.talos.dev",
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&doc),
                )
                .await
            {
                Ok(_) => self.crd_applied = true,
                Err(e) => {
                    tracing::debug!(error = %e, "talos.dev CRD");
                    return;
                }
            }
        }
        let gvk = GroupVersionKind::gvk("talos.dev", "v1alpha1", "ServiceAccount");
        let sas: Api<DynamicObject> = Api::all_with(
            client.clone(),
            &ApiResource::from_gvk_with_plural(&gvk, "serviceaccounts"),
        );
        let Ok(list) = sas.list(&ListParams::default()).await else {
            return;
        };
        for sa in list.items {
            let (Some(ns), Some(name), Some(uid)) = (
                sa.metadata.namespace.clone(),
                sa.metadata.name.clone(),
                sa.metadata.uid.clone(),
            ) else {
                continue;
            };
            let key = format!("{ns}/{name}");
            if self.synced.contains(&key) {
                continue;
            }
            let wanted: Vec<String> = sa.data["spec"]["roles"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let failure = if !namespaces.contains(&ns) {
                Some(format!("Namespace is not allowed: {ns}"))
            } else if wanted.iter().any(|r| !roles.contains(r)) {
                let bad: Vec<&String> = wanted.iter().filter(|r| !roles.contains(r)).collect();
                Some(format!("Roles not allowed: {bad:?}"))
            } else {
                None
            };
            if let Some(reason) = failure {
                let nsd: Api<DynamicObject> = Api::namespaced_with(
                    client.clone(),
                    &ns,
                    &ApiResource::from_gvk_with_plural(&gvk, "serviceaccounts"),
                );
                let patch = json!({ "status": { "failureReason": reason } });
                let _ = nsd
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
                continue;
            }
            let Ok(config) = talosconfig(&cfg, &wanted) else {
                continue;
            };
            let secret: Secret = match serde_json::from_value(json!({
                "metadata": {
                    "name": name, "namespace": ns,
                    "ownerReferences": [{
                        "apiVersion": "talos.dev/v1alpha1", "kind": "ServiceAccount",
                        "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true,
                    }],
                },
                "data": { "config": vixen_pki::b64(&config) },
            })) {
                Ok(s) => s,
                Err(_) => continue,
            };
            let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
            match secrets.create(&PostParams::default(), &secret).await {
                Ok(_) => {
                    tracing::info!(%key, "Talos API access: Secret created for talos.dev ServiceAccount");
                    self.synced.insert(key);
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    self.synced.insert(key);
                }
                Err(e) => tracing::debug!(%key, error = %e, "Talos API access Secret"),
            }
        }
    }
}

/// A talosconfig as Talos' controller writes it (clientconfig.NewConfig with one context).
fn talosconfig(cfg: &crate::config::MachineConfig, roles: &[String]) -> Result<String, String> {
    let ca = vixen_pki::CertAndKey {
        crt: cfg.get("machine.ca.crt").unwrap_or_default().to_string(),
        key: vixen_pki::Secret::new(cfg.get("machine.ca.key").unwrap_or_default().to_string()),
    };
    let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
    let minted = vixen_pki::mint(
        &ca,
        "machine.ca",
        "talos-sa",
        &vixen_pki::Usage::Client { roles: &roles },
        time::Duration::hours(CERT_TTL_HOURS),
    )
    .map_err(|e| e.to_string())?;
    Ok(format!(
        "context: default\ncontexts:\n    default:\n        endpoints:\n            - {ENDPOINT}\n        \
         ca: {ca}\n        crt: {crt}\n        key: {key}\n",
        ca = ca.crt,
        crt = vixen_pki::b64(&minted.cert_pem),
        // Talos' crypto library labels Ed25519 keys `ED25519 PRIVATE KEY` (PKCS#8 inside).
        key = vixen_pki::b64(
            &minted
                .key_pem
                .expose()
                .replace(" PRIVATE KEY-", " ED25519 PRIVATE KEY-")
        ),
    ))
}
