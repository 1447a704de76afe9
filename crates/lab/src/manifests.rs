//! Talos' bootstrap manifest apply in the lab: a configured control plane of the served cluster
//! whose etcd runs applies its config's `cluster.inlineManifests` to the API server, as Talos'
//! `k8s.ManifestApplyController` does (internal/app/machined/pkg/controllers/k8s/manifest_apply.go):
//! every object of every manifest (manifests in name order), namespaces first, then
//! CustomResourceDefinitions, then the rest in their order; an object that exists is left as it
//! is (never updated, never deleted), one that does not is created with field manager `talos`.
//! So a change of the inline manifests in a config changes nothing that is already there: that
//! is left to whoever syncs them (`talosctl upgrade-k8s`, or vixen).
//!
//! Fault `talos-api-access-pending` on a control plane: its Talos has not applied its bootstrap
//! manifests yet (these and the `talos.dev` ServiceAccount CRD alike).

use std::collections::{BTreeMap, HashMap, HashSet};

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::discovery::{self, Scope};
use serde::Deserialize;
use serde_json::Value;

use crate::Role;
use crate::lab::LabInner;
use crate::node::Mode;

/// Talos' field manager for what it creates.
const MANAGER: &str = "talos";

/// What was applied already (`kind/namespace/name` of objects found or created).
#[derive(Default)]
pub(crate) struct BootstrapManifests {
    done: HashSet<String>,
    kinds: HashMap<String, (ApiResource, bool)>,
}

/// The objects of `cluster.inlineManifests` in `doc`, in Talos' order.
pub(crate) fn objects(doc: &Value) -> Vec<Value> {
    let mut manifests: BTreeMap<String, String> = BTreeMap::new();
    for m in doc
        .pointer("/cluster/inlineManifests")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = m.get("name").and_then(Value::as_str).unwrap_or_default();
        let contents = m
            .get("contents")
            .and_then(Value::as_str)
            .unwrap_or_default();
        manifests.insert(name.to_string(), contents.to_string());
    }
    let mut out = Vec::new();
    for contents in manifests.values() {
        for d in serde_yaml_ng::Deserializer::from_str(contents) {
            match Value::deserialize(d) {
                Ok(v) if v.is_object() => out.push(v),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "inline manifest YAML"),
            }
        }
    }
    let rank = |v: &Value| {
        let kind = v.get("kind").and_then(Value::as_str).unwrap_or_default();
        let api = v
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match (kind, api) {
            ("Namespace", "v1") => 0,
            ("CustomResourceDefinition", a) if a.starts_with("apiextensions.k8s.io/") => 1,
            _ => 2,
        }
    };
    let name = |v: &Value| {
        v.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    // Stable: within the rest, the manifests' own order.
    out.sort_by(|a, b| {
        let (ra, rb) = (rank(a), rank(b));
        if ra == rb && ra < 2 {
            name(a).cmp(&name(b))
        } else {
            ra.cmp(&rb)
        }
    });
    out
}

impl BootstrapManifests {
    /// Applies what a control plane's inline manifests hold and the API does not.
    pub(crate) async fn sync(&mut self, lab: &LabInner, client: &kube::Client) {
        let Some(cluster) = lab.kube.as_ref().and_then(|k| k.cluster()) else {
            return;
        };
        let mut seen = HashSet::new();
        for n in &lab.nodes {
            let Some(cfg) = n.config() else { continue };
            let mut pending = false;
            n.faults(|f| pending = f.talos_api_access_pending);
            if cfg.role != Role::Controlplane
                || cfg.cluster_key() != cluster
                || n.mode() != Mode::Configured
                || n.etcd_url().is_none()
                || pending
            {
                continue;
            }
            for obj in objects(&cfg.doc) {
                let Some(key) = key(&obj) else { continue };
                if self.done.contains(&key) || !seen.insert(key.clone()) {
                    continue;
                }
                match self.create_if_missing(client, &obj).await {
                    Ok(()) => {
                        self.done.insert(key);
                    }
                    Err(e) => {
                        // Talos retries the whole list on its next event; so does the lab.
                        tracing::debug!(object = %key, error = %e, "bootstrap manifest");
                        return;
                    }
                }
            }
        }
    }

    async fn create_if_missing(
        &mut self,
        client: &kube::Client,
        obj: &Value,
    ) -> Result<(), String> {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let id = format!("{api_version}/{kind}");
        if !self.kinds.contains_key(&id) {
            let (ar, caps) = discovery::pinned_kind(client, &gvk)
                .await
                .map_err(|e| format!("no mapping for {id}: {e}"))?;
            self.kinds
                .insert(id.clone(), (ar, caps.scope == Scope::Namespaced));
        }
        let (ar, namespaced) = &self.kinds[&id];
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let api: Api<DynamicObject> = if *namespaced {
            let ns = obj
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default");
            Api::namespaced_with(client.clone(), ns, ar)
        } else {
            Api::all_with(client.clone(), ar)
        };
        match api.get_opt(name).await {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => {}
            Err(e) => return Err(format!("checking {id} {name}: {e}")),
        }
        let object: DynamicObject =
            serde_json::from_value(obj.clone()).map_err(|e| format!("{id} {name}: {e}"))?;
        let pp = PostParams {
            field_manager: Some(MANAGER.into()),
            ..PostParams::default()
        };
        match api.create(&pp, &object).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(format!("creating {id} {name}: {e}")),
        }
    }
}

/// `apiVersion/kind/namespace/name`, when the object has a name.
fn key(obj: &Value) -> Option<String> {
    let name = obj.pointer("/metadata/name").and_then(Value::as_str)?;
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Some(format!(
        "{}/{}/{ns}/{name}",
        obj["apiVersion"].as_str().unwrap_or_default(),
        obj["kind"].as_str().unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn namespaces_then_crds_then_the_rest_in_manifest_name_order() {
        let doc = json!({"cluster": {"inlineManifests": [
            {"name": "b", "contents": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: z, namespace: n}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n"},
            {"name": "a", "contents": "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: d, namespace: n}\n---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: x.example.com}\n"},
        ]}});
        let names: Vec<String> = super::objects(&doc)
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["n", "x.example.com", "d", "z"]);
    }
}
