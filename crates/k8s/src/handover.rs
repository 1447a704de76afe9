//! Where the app GitOps tool stands after vixen handed the apps over: Flux's Kustomization
//! `flux-system/apps` (its `Ready` condition and `lastAppliedRevision`, what `flux get
//! kustomizations` shows) or Argo CD's Application `argocd/apps` (health and sync status, what
//! `argocd app get` shows). vixen only reads these: the tool owns them once they exist.

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde_json::Value;
use vixen_model::GitopsTool;
use vixen_model::gitops::APPS;

use crate::{Error, Result, api_code};

/// The tool's view of the apps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handover {
    /// Applied and healthy at `revision`.
    Ready {
        /// The revision the tool applied (`main@sha1:...` for Flux).
        revision: String,
    },
    /// Not ready: why, in one line.
    NotReady(String),
    /// The tool has not looked at the object yet (or its API is not served yet).
    Pending,
}

impl Handover {
    /// One line for the commit status and `vixen status`, e.g. "Flux: Ready, apps at
    /// main@sha1:1a2b".
    pub fn line(&self, tool: GitopsTool) -> String {
        let t = tool.title();
        match self {
            Handover::Ready { revision } => format!("{t}: Ready, {APPS} at {revision}"),
            Handover::NotReady(why) => format!("{t}: not ready, {why}"),
            Handover::Pending => format!("{t}: {APPS} not reconciled yet"),
        }
    }
}

fn text(v: &Value, p: &str) -> String {
    v.pointer(p)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The first line of an upstream message, at most 200 characters.
fn short(s: &str) -> String {
    let line = s.lines().next().unwrap_or_default();
    let mut out: String = line.chars().take(200).collect();
    if line.chars().count() > 200 {
        out.push('…');
    }
    out
}

/// Flux's Kustomization, as kstatus reads it: observed the current generation, then `Ready`.
pub fn flux_state(k: &Value) -> Handover {
    let generation = k.pointer("/metadata/generation").and_then(Value::as_i64);
    let observed = k
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64);
    let ready = k
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
    let Some(ready) = ready else {
        return Handover::Pending;
    };
    if matches!((generation, observed), (Some(g), Some(o)) if o < g) {
        return Handover::Pending;
    }
    match ready["status"].as_str() {
        Some("True") => Handover::Ready {
            revision: text(k, "/status/lastAppliedRevision"),
        },
        _ => Handover::NotReady(format!(
            "{}: {}",
            text(ready, "/reason"),
            short(&text(ready, "/message"))
        )),
    }
}

/// Argo CD's Application: ready when `Healthy` and `Synced`; an error condition says why not.
pub fn argo_state(app: &Value) -> Handover {
    let health = text(app, "/status/health/status");
    let sync = text(app, "/status/sync/status");
    if health.is_empty() && sync.is_empty() {
        return Handover::Pending;
    }
    if health == "Healthy" && sync == "Synced" {
        return Handover::Ready {
            revision: text(app, "/status/sync/revision"),
        };
    }
    let error = app
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| {
            c.iter()
                .find(|c| c["type"].as_str().is_some_and(|t| t.ends_with("Error")))
        })
        .map(|c| format!(": {}", short(&text(c, "/message"))))
        .unwrap_or_default();
    Handover::NotReady(format!("{health}, {sync}{error}"))
}

/// Reads the tool's object of the handover.
///
/// # Errors
/// API errors other than "not found" and "not served".
pub async fn read(client: &kube::Client, tool: GitopsTool) -> Result<Handover> {
    let (gvk, plural) = match tool {
        GitopsTool::Flux => (
            GroupVersionKind::gvk("kustomize.toolkit.fluxcd.io", "v1", "Kustomization"),
            "kustomizations",
        ),
        GitopsTool::Argocd => (
            GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application"),
            "applications",
        ),
    };
    let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), tool.namespace(), &ar);
    let obj = match api.get_opt(APPS).await {
        Ok(Some(o)) => o,
        Ok(None) => return Ok(Handover::Pending),
        Err(e) if api_code(&e) == Some(404) => return Ok(Handover::Pending),
        Err(e) => {
            return Err(Error::kube(
                "get",
                format!("{} {}/{APPS}", gvk.kind, tool.namespace()),
                e,
            ));
        }
    };
    let v = serde_json::to_value(&obj).unwrap_or_default();
    Ok(match tool {
        GitopsTool::Flux => flux_state(&v),
        GitopsTool::Argocd => argo_state(&v),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kustomization(generation: i64, observed: i64, status: &str, reason: &str) -> Value {
        json!({
            "metadata": { "generation": generation },
            "status": {
                "observedGeneration": observed,
                "lastAppliedRevision": "main@sha1:1a2b3c",
                "conditions": [{ "type": "Ready", "status": status, "reason": reason,
                                 "message": "decryption failed for 'db': no key\nmore" }],
            },
        })
    }

    #[test]
    fn flux_is_ready_only_when_the_current_generation_is_ready() {
        let cases = [
            (
                kustomization(2, 2, "True", "ReconciliationSucceeded"),
                "Flux: Ready, apps at main@sha1:1a2b3c",
            ),
            (
                kustomization(3, 2, "True", "ReconciliationSucceeded"),
                "Flux: apps not reconciled yet",
            ),
            (
                kustomization(2, 2, "False", "DecryptionFailed"),
                "Flux: not ready, DecryptionFailed: decryption failed for 'db': no key",
            ),
            (json!({ "metadata": {} }), "Flux: apps not reconciled yet"),
        ];
        for (k, want) in cases {
            assert_eq!(flux_state(&k).line(GitopsTool::Flux), want);
        }
    }

    #[test]
    fn argo_is_ready_when_healthy_and_synced() {
        let app = |h: &str, s: &str| {
            json!({ "status": { "health": { "status": h }, "sync": { "status": s, "revision": "abc" },
                    "conditions": [{ "type": "ComparisonError", "message": "repo not found" }] } })
        };
        let cases = [
            (app("Healthy", "Synced"), "Argo CD: Ready, apps at abc"),
            (
                app("Progressing", "OutOfSync"),
                "Argo CD: not ready, Progressing, OutOfSync: repo not found",
            ),
            (json!({}), "Argo CD: apps not reconciled yet"),
        ];
        for (a, want) in cases {
            assert_eq!(argo_state(&a).line(GitopsTool::Argocd), want);
        }
    }
}
