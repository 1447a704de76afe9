//! Installing vixen into the cluster it bootstrapped: the objects of `manifests/` (and the
//! Secrets `vixen bootstrap` makes) applied by server-side apply under the field manager
//! `vixen`, as `kubectl apply --server-side` would. Kinds are looked up through discovery; a
//! CustomResourceDefinition is waited on until the API serves it, so objects of that kind may
//! follow it in the same install. A kind the API does not serve is reported, not fatal (the
//! `talos.dev` kinds exist only once Talos' Kubernetes API access is on).

use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery;

use crate::{Error, FIELD_MANAGER, Result};

/// What an install did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InstallReport {
    /// `Kind namespace/name` of every object applied.
    pub applied: Vec<String>,
    /// Objects not applied, with why.
    pub skipped: Vec<(String, String)>,
}

/// `Kind namespace/name` (or `Kind name`) of a document, as [`InstallReport`] names it.
pub fn object_id(doc: &serde_json::Value) -> String {
    let kind = doc["kind"].as_str().unwrap_or_default();
    let name = doc["metadata"]["name"].as_str().unwrap_or_default();
    match doc["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// Applies `docs` in order. Secrets' values are never part of any message.
///
/// # Errors
/// API errors other than a kind the API does not serve; a malformed document.
pub async fn apply(client: &kube::Client, docs: &[serde_json::Value]) -> Result<InstallReport> {
    let mut report = InstallReport::default();
    for doc in docs {
        let api_version = doc["apiVersion"].as_str().unwrap_or_default();
        let kind = doc["kind"].as_str().unwrap_or_default();
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        if api_version.is_empty() || kind.is_empty() || name.is_empty() {
            return Err(Error::Decode {
                what: "manifest".into(),
                reason: "a document lacks apiVersion, kind or metadata.name".into(),
            });
        }
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let namespace = doc["metadata"]["namespace"].as_str();
        let id = object_id(doc);
        let (resource, caps) = match discovery::pinned_kind(client, &gvk).await {
            Ok(found) => found,
            Err(e) => {
                report.skipped.push((
                    id,
                    format!("the API does not serve {api_version} {kind} ({e})"),
                ));
                continue;
            }
        };
        let api: Api<DynamicObject> = match (caps.scope, namespace) {
            (discovery::Scope::Namespaced, Some(ns)) => {
                Api::namespaced_with(client.clone(), ns, &resource)
            }
            (discovery::Scope::Namespaced, None) => {
                Api::default_namespaced_with(client.clone(), &resource)
            }
            (discovery::Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
        };
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(name, &pp, &Patch::Apply(doc))
            .await
            .map_err(|e| Error::kube("apply", id.clone(), e))?;
        if kind == "CustomResourceDefinition" {
            served(client, doc).await?;
        }
        report.applied.push(id);
    }
    Ok(report)
}

/// Waits until the API serves the kind a CRD defines (its discovery answers).
async fn served(client: &kube::Client, crd: &serde_json::Value) -> Result<()> {
    let group = crd["spec"]["group"].as_str().unwrap_or_default();
    let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
    let Some(version) = crd["spec"]["versions"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["served"] == true))
        .and_then(|v| v["name"].as_str())
    else {
        return Ok(());
    };
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        match discovery::pinned_kind(client, &gvk).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= until => {
                return Err(Error::kube(
                    "discover",
                    format!("{group}/{version} {kind}"),
                    e,
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Whether the Secret `namespace/name` exists (its values are not read).
///
/// # Errors
/// API errors other than 404.
pub async fn secret_exists(client: &kube::Client, namespace: &str, name: &str) -> Result<bool> {
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), namespace);
    api.get_metadata_opt(name)
        .await
        .map(|m| m.is_some())
        .map_err(|e| Error::kube("get", format!("Secret {namespace}/{name}"), e))
}
