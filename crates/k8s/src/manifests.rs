//! The CNI's manifests from the repo, kept in step: server-side apply under field manager
//! `vixen` with force (vixen owns the infrastructure layer; what Talos created at bootstrap is
//! taken over, as `talosctl upgrade-k8s` does with its manifest sync), and pruning of what left
//! Git.
//!
//! ```text
//! ConfigMap <ns>/vixen-set-<set>: previous inventory (apiVersion kind namespace name)
//!   1. inventory := previous ∪ Git          (before anything is created)
//!   2. objects (Git) ──SSA, force, labels managed-by=vixen, vixen.dev/set=<set>──► API server
//!   3. delete(previous - Git), only objects that still carry both labels
//!   4. inventory := Git
//! ```
//!
//! Step 1 makes an apply that is cut short (the agent killed, an object refused) harmless: what
//! it created is on record, and leaves Git with a later commit like anything else.
//!
//! Order as Talos applies inline manifests (namespaces, then CRDs, then the rest); objects of
//! a kind the API does not serve yet (a CRD just created) are retried on the next reconcile.
//! The DaemonSet rollout of a set tells whether nodes may be disrupted ([`DaemonSetProgress`]).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
};
use kube::discovery::{self, Scope};
use serde_json::{Value, json};

use crate::{Error, FIELD_MANAGER, MANAGED_BY, Result, api_code};

/// The label naming the set an object belongs to.
pub const SET_LABEL: &str = "vixen.dev/set";

/// What one apply did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SetReport {
    /// `Kind namespace/name` applied.
    pub applied: Vec<String>,
    /// Deleted because they left Git.
    pub pruned: Vec<String>,
    /// Not applied yet: their kind is not served (yet).
    pub deferred: Vec<String>,
}

impl SetReport {
    /// One line for the commit status.
    pub fn summary(&self, set: &str) -> String {
        let mut s = format!("{set}: {} applied", self.applied.len());
        if !self.pruned.is_empty() {
            s.push_str(&format!(", {} pruned", self.pruned.len()));
        }
        if !self.deferred.is_empty() {
            s.push_str(&format!(", {} waiting for their API", self.deferred.len()));
        }
        s
    }
}

/// Where a DaemonSet's rollout stands (its status, as `kubectl rollout status` reads it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DaemonSetProgress {
    /// The controller has seen the current template (`observedGeneration >= generation`).
    pub observed: bool,
    /// Nodes that should run a pod.
    pub desired: i32,
    /// Pods running the current template.
    pub updated: i32,
    /// Pods available.
    pub available: i32,
}

impl DaemonSetProgress {
    /// Why the rollout is not finished, or `None` when it is. Pods missing because their node
    /// is not Ready (`nodes_not_ready`, e.g. one vixen is upgrading) are no rollout: the rule is
    /// `kubectl rollout status`'s with that allowance, so `workerConcurrency` keeps its meaning.
    pub fn unfinished(&self, nodes_not_ready: i32) -> Option<String> {
        if !self.observed {
            return Some("the controller has not seen the new template yet".into());
        }
        if self.updated < self.desired {
            return Some(format!("{} of {} pods updated", self.updated, self.desired));
        }
        if self.available + nodes_not_ready < self.desired {
            return Some(format!(
                "{} of {} updated pods available",
                self.available, self.desired
            ));
        }
        None
    }
}

/// How long an apply waits for the kinds of the CRDs it has just created to be served.
pub const CRD_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// The kinds one apply has discovered: `apiVersion/Kind` to its API and whether it is
/// namespaced.
pub(crate) type Kinds = std::collections::HashMap<String, (ApiResource, bool)>;

/// Applies named sets of manifests.
pub struct ManifestSets {
    client: kube::Client,
    /// Namespace of the inventory ConfigMaps (vixen's own).
    namespace: String,
}

pub(crate) fn str_at<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or_default()
}

/// `apiVersion Kind namespace name`, space-separated (none of them can hold a space; the
/// namespace is empty for a cluster-scoped object).
pub(crate) fn key(obj: &Value) -> String {
    format!(
        "{} {} {} {}",
        str_at(obj, "/apiVersion"),
        str_at(obj, "/kind"),
        str_at(obj, "/metadata/namespace"),
        str_at(obj, "/metadata/name")
    )
}

pub(crate) fn what(obj: &Value) -> String {
    let ns = str_at(obj, "/metadata/namespace");
    let name = str_at(obj, "/metadata/name");
    if ns.is_empty() {
        format!("{} {name}", str_at(obj, "/kind"))
    } else {
        format!("{} {ns}/{name}", str_at(obj, "/kind"))
    }
}

/// Labels `obj` as vixen's and the set's (what apply writes, and a preview compares).
pub(crate) fn label(obj: &mut Value, set: &str) {
    let labels = &mut obj["metadata"]["labels"];
    if !labels.is_object() {
        *labels = json!({});
    }
    labels[MANAGED_BY.0] = json!(MANAGED_BY.1);
    labels[SET_LABEL] = json!(set);
}

pub(crate) fn rank(obj: &Value) -> u8 {
    match (str_at(obj, "/kind"), str_at(obj, "/apiVersion")) {
        ("Namespace", "v1") => 0,
        ("CustomResourceDefinition", a) if a.starts_with("apiextensions.k8s.io/") => 1,
        _ => 2,
    }
}

impl ManifestSets {
    /// Sets whose inventories live in `namespace`.
    pub fn new(client: kube::Client, namespace: impl Into<String>) -> Self {
        Self {
            client,
            namespace: namespace.into(),
        }
    }

    /// The API of `obj`'s kind (`None`: not served), discovered once per apply (`kinds`; a kind
    /// not served is asked again, as its CRD may just have been created). A namespaced object
    /// that names no namespace gets `default_namespace` written in, so its key is final.
    pub(crate) async fn resolve(
        &self,
        kinds: &mut Kinds,
        obj: &mut Value,
        default_namespace: &str,
    ) -> Result<Option<Api<DynamicObject>>> {
        let api_version = str_at(obj, "/apiVersion").to_owned();
        let kind = str_at(obj, "/kind").to_owned();
        let id = format!("{api_version}/{kind}");
        if !kinds.contains_key(&id) {
            let (group, version) = api_version.rsplit_once('/').unwrap_or(("", &api_version));
            let gvk = GroupVersionKind::gvk(group, version, &kind);
            match discovery::pinned_kind(&self.client, &gvk).await {
                Ok((ar, caps)) => {
                    kinds.insert(id.clone(), (ar, caps.scope == Scope::Namespaced));
                }
                Err(kube::Error::Discovery(_)) => return Ok(None),
                Err(e) if api_code(&e) == Some(404) => return Ok(None),
                Err(e) => return Err(Error::kube("discover", id, e)),
            }
        }
        let (ar, namespaced) = &kinds[&id];
        Ok(Some(if *namespaced {
            if str_at(obj, "/metadata/namespace").is_empty() {
                obj["metadata"]["namespace"] = json!(default_namespace);
            }
            Api::namespaced_with(self.client.clone(), str_at(obj, "/metadata/namespace"), ar)
        } else {
            Api::all_with(self.client.clone(), ar)
        }))
    }

    /// Applies one labelled object whose kind is served: `Ok(false)` when the API answers 404
    /// (its kind or namespace went away meanwhile).
    async fn apply_one(&self, api: &Api<DynamicObject>, obj: &Value) -> Result<bool> {
        let name = str_at(obj, "/metadata/name");
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api.patch(name, &params, &Patch::Apply(obj)).await {
            Ok(_) => Ok(true),
            Err(e) if api_code(&e) == Some(404) => Ok(false),
            Err(e) => Err(Error::kube("apply", what(obj), e)),
        }
    }

    fn inventory_name(set: &str) -> String {
        format!("vixen-set-{set}")
    }

    /// The keys applied by the last apply of `set`.
    pub(crate) async fn inventory(&self, set: &str) -> Result<BTreeSet<String>> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let name = Self::inventory_name(set);
        let cm = api
            .get_opt(&name)
            .await
            .map_err(|e| Error::kube("get", format!("configmap {}/{name}", self.namespace), e))?;
        Ok(cm
            .and_then(|c| c.data)
            .and_then(|d| d.get("objects").cloned())
            .map(|s| s.lines().map(str::to_owned).collect())
            .unwrap_or_default())
    }

    async fn save_inventory(&self, set: &str, keys: &BTreeSet<String>) -> Result<()> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let name = Self::inventory_name(set);
        let body = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "labels": { MANAGED_BY.0: MANAGED_BY.1, SET_LABEL: set },
            },
            "data": { "objects": keys.iter().cloned().collect::<Vec<_>>().join("\n") },
        });
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|e| Error::kube("apply", format!("configmap {}/{name}", self.namespace), e))?;
        Ok(())
    }

    /// Applies `objects` as the set `set`, then deletes what the last apply of the set had and
    /// this one has not. Nothing is pruned while an object of the set waits for its API (the
    /// inventory then keeps both). Namespaced objects that name no namespace go to `default`.
    ///
    /// # Errors
    /// API errors.
    ///
    /// # Guarantees
    /// Only objects that carry the labels managed-by vixen and `vixen.dev/set=<set>` are deleted.
    pub async fn apply(&self, set: &str, objects: &[Value]) -> Result<SetReport> {
        self.apply_in(set, objects, "default").await
    }

    /// [`Self::apply`], with the namespaced objects that name no namespace in
    /// `default_namespace` (as `kubectl apply -n NS` does: Argo CD's install manifests are
    /// written for it). A kind whose CRD this apply created is waited for, up to
    /// [`CRD_WAIT`], as `kubectl wait --for condition=established` would.
    ///
    /// # Errors
    /// As [`Self::apply`].
    pub async fn apply_in(
        &self,
        set: &str,
        objects: &[Value],
        default_namespace: &str,
    ) -> Result<SetReport> {
        let mut report = SetReport::default();
        let mut kinds = Kinds::new();
        let mut ordered: Vec<Value> = objects.to_vec();
        ordered.sort_by_key(rank);
        let mut served = Vec::new();
        let mut pending = Vec::new();
        for mut obj in ordered {
            label(&mut obj, set);
            match self
                .resolve(&mut kinds, &mut obj, default_namespace)
                .await?
            {
                Some(api) => served.push((obj, api)),
                None => pending.push(obj),
            }
        }

        // Everything this apply may create is on record before the first object is created,
        // as ApplySet (KEP-3659) has the parent list the superset before applying: an apply cut
        // short (the agent killed, an object refused) leaves nothing a later prune cannot find.
        let before = self.inventory(set).await?;
        let intent: BTreeSet<String> = before
            .iter()
            .cloned()
            .chain(served.iter().map(|(o, _)| key(o)))
            .chain(pending.iter().map(key))
            .collect();
        if intent != before {
            self.save_inventory(set, &intent).await?;
        }

        let mut now = BTreeSet::new();
        let mut new_crds = false;
        for (obj, api) in served {
            if self.apply_one(&api, &obj).await? {
                new_crds |= rank(&obj) == 1;
                now.insert(key(&obj));
                report.applied.push(what(&obj));
            } else {
                pending.push(obj);
            }
        }
        let deadline = tokio::time::Instant::now() + CRD_WAIT;
        while new_crds && !pending.is_empty() {
            let mut still = Vec::new();
            for mut obj in pending {
                let api = self
                    .resolve(&mut kinds, &mut obj, default_namespace)
                    .await?;
                match api {
                    Some(api) if self.apply_one(&api, &obj).await? => {
                        now.insert(key(&obj));
                        report.applied.push(what(&obj));
                    }
                    _ => still.push(obj),
                }
            }
            pending = still;
            if pending.is_empty() || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        for obj in &pending {
            now.insert(key(obj));
            report.deferred.push(what(obj));
        }
        if !report.deferred.is_empty() {
            let both: BTreeSet<String> = before.union(&now).cloned().collect();
            self.save_inventory(set, &both).await?;
            return Ok(report);
        }
        for (api, name, object) in self
            .prunable(&mut kinds, set, &before, &now, default_namespace)
            .await?
        {
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => report.pruned.push(object),
                Err(e) if api_code(&e) == Some(404) => {}
                Err(e) => return Err(Error::kube("delete", object, e)),
            }
        }
        self.save_inventory(set, &now).await?;
        Ok(report)
    }

    /// What an apply prunes: the objects in the inventory `before` and not in Git (`now`) that
    /// still exist and carry vixen's labels and the set's (each with its API, name and
    /// `Kind ns/name`). An object recorded before its kind was served (no namespace yet) that
    /// is one still in Git is not among them.
    ///
    /// # Errors
    /// API errors.
    pub(crate) async fn prunable(
        &self,
        kinds: &mut Kinds,
        set: &str,
        before: &BTreeSet<String>,
        now: &BTreeSet<String>,
        default_namespace: &str,
    ) -> Result<Vec<(Api<DynamicObject>, String, String)>> {
        let mut out = Vec::new();
        for gone in before.difference(now) {
            let parts: Vec<&str> = gone.split(' ').collect();
            let [api_version, kind, ns, name] = parts[..] else {
                continue;
            };
            let mut probe = json!({
                "apiVersion": api_version, "kind": kind,
                "metadata": { "name": name, "namespace": ns },
            });
            let Some(api) = self.resolve(kinds, &mut probe, default_namespace).await? else {
                continue;
            };
            if now.contains(&key(&probe)) {
                continue;
            }
            let Some(live) = api
                .get_metadata_opt(name)
                .await
                .map_err(|e| Error::kube("get", what(&probe), e))?
            else {
                continue;
            };
            let labels: BTreeMap<String, String> = live.metadata.labels.unwrap_or_default();
            if labels.get(MANAGED_BY.0).map(String::as_str) != Some(MANAGED_BY.1)
                || labels.get(SET_LABEL).map(String::as_str) != Some(set)
            {
                tracing::warn!(object = %what(&probe), "left Git but not labelled as vixen's; kept");
                continue;
            }
            out.push((api, name.to_owned(), what(&probe)));
        }
        Ok(out)
    }

    /// The rollout of DaemonSet `namespace/name` (`None`: it does not exist).
    ///
    /// # Errors
    /// API errors.
    pub async fn daemonset_progress(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<DaemonSetProgress>> {
        progress(&self.client, namespace, name).await
    }
}

/// The rollout of DaemonSet `namespace/name` (`None`: it does not exist).
///
/// # Errors
/// API errors.
pub async fn progress(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<DaemonSetProgress>> {
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
    let ds = api
        .get_opt(name)
        .await
        .map_err(|e| Error::kube("get", format!("daemonset {namespace}/{name}"), e))?;
    Ok(ds.as_ref().map(daemonset_progress))
}

/// A DaemonSet's rollout from its status (no status yet: nothing observed).
pub fn daemonset_progress(ds: &DaemonSet) -> DaemonSetProgress {
    let generation = ds.metadata.generation.unwrap_or_default();
    let Some(st) = &ds.status else {
        return DaemonSetProgress::default();
    };
    DaemonSetProgress {
        observed: st.observed_generation.unwrap_or_default() >= generation,
        desired: st.desired_number_scheduled,
        updated: st.updated_number_scheduled.unwrap_or_default(),
        available: st.number_available.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::DaemonSetProgress;

    fn p(observed: bool, desired: i32, updated: i32, available: i32) -> DaemonSetProgress {
        DaemonSetProgress {
            observed,
            desired,
            updated,
            available,
        }
    }

    #[test]
    fn a_rollout_is_finished_when_every_pod_on_a_ready_node_is_updated_and_available() {
        let cases = [
            (p(false, 3, 3, 3), 0, Some("not seen the new template")),
            (p(true, 3, 1, 3), 0, Some("1 of 3 pods updated")),
            (p(true, 3, 3, 2), 0, Some("2 of 3 updated pods available")),
            // One node is down (vixen upgrades it): its pod is not a rollout.
            (p(true, 3, 3, 2), 1, None),
            (p(true, 3, 3, 1), 1, Some("1 of 3 updated pods available")),
            (p(true, 3, 3, 3), 0, None),
            (p(true, 0, 0, 0), 0, None),
        ];
        for (progress, not_ready, want) in cases {
            let got = progress.unfinished(not_ready);
            match want {
                None => assert_eq!(got, None, "{progress:?} {not_ready}"),
                Some(w) => assert!(
                    got.as_deref().is_some_and(|g| g.contains(w)),
                    "{progress:?} {not_ready}: {got:?}"
                ),
            }
        }
    }
}
