//! What applying a set would do, without doing it (`vixen plan`): each object goes through a
//! server-side dry run, as `kubectl diff --server-side` sends it, and is compared with what the
//! API server holds; the prune is read from the set's inventory as the apply would read it.
//! Nothing is written: every patch carries `dryRun=All`, and the inventory is only read.
//!
//! ```text
//! Git object ──label──► SSA dryRun=All ──► would-be object ─┐
//!                         live object (GET) ────────────────┴─► compare without metadata the
//!                                                               server keeps (managedFields,
//!                                                               resourceVersion, ...) and status
//! inventory - Git (labelled as the set's) ──► would be pruned
//! ```

use std::collections::BTreeSet;

use kube::api::{Patch, PatchParams};
use serde_json::Value;

use crate::manifests::{Kinds, key, label, rank, str_at, what};
use crate::{Error, FIELD_MANAGER, ManifestSets, Result, api_code};

/// What applying one set would do. Names objects (`Kind namespace/name`), never their data.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SetPreview {
    /// Would be created.
    pub create: Vec<String>,
    /// Would change.
    pub change: Vec<String>,
    /// Would be deleted: they left Git.
    pub prune: Vec<String>,
    /// Their kind is not served yet (a CRD of the set creates it): created once it is.
    pub waiting: Vec<String>,
    /// The API server refuses them (the apply would stop there): `Kind ns/name: why`.
    pub refused: Vec<String>,
    /// As the API server holds them already.
    pub unchanged: usize,
}

impl SetPreview {
    /// Nothing would change.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty()
            && self.change.is_empty()
            && self.prune.is_empty()
            && self.waiting.is_empty()
            && self.refused.is_empty()
    }

    /// One line: `cni: 1 to change (ConfigMap kube-system/cilium-config), 6 unchanged`.
    pub fn summary(&self, set: &str) -> String {
        let mut parts = Vec::new();
        for (list, verb) in [
            (&self.create, "to create"),
            (&self.change, "to change"),
            (&self.prune, "to prune"),
            (&self.waiting, "to create once their kind is served"),
            (&self.refused, "refused by the API server"),
        ] {
            if !list.is_empty() {
                parts.push(format!("{} {verb} ({})", list.len(), list.join(", ")));
            }
        }
        if parts.is_empty() {
            return format!("{set}: no changes ({} unchanged)", self.unchanged);
        }
        format!("{set}: {}, {} unchanged", parts.join(", "), self.unchanged)
    }
}

/// The part of an object an apply decides: without what the server keeps for itself.
fn content(mut v: Value) -> Value {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "managedFields",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "uid",
        ] {
            meta.remove(k);
        }
    }
    if let Some(obj) = v.as_object_mut() {
        obj.remove("status");
    }
    v
}

/// The first line of an API server's refusal.
fn refusal(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.lines().next().unwrap_or_default().to_owned(),
        other => other.to_string(),
    }
}

impl ManifestSets {
    /// What [`Self::apply_in`] of `objects` as `set` would do now.
    ///
    /// # Errors
    /// API errors other than a refusal of one object (those are in [`SetPreview::refused`]).
    ///
    /// # Guarantees
    /// Writes nothing: every patch is a dry run, the inventory is only read.
    pub async fn preview_in(
        &self,
        set: &str,
        objects: &[Value],
        default_namespace: &str,
    ) -> Result<SetPreview> {
        let mut preview = SetPreview::default();
        let mut kinds = Kinds::new();
        let mut ordered: Vec<Value> = objects.to_vec();
        ordered.sort_by_key(rank);
        let mut now = BTreeSet::new();
        let params = PatchParams::apply(FIELD_MANAGER).force().dry_run();
        for mut obj in ordered {
            label(&mut obj, set);
            let Some(api) = self
                .resolve(&mut kinds, &mut obj, default_namespace)
                .await?
            else {
                now.insert(key(&obj));
                preview.waiting.push(what(&obj));
                continue;
            };
            now.insert(key(&obj));
            let name = str_at(&obj, "/metadata/name").to_owned();
            let live = api
                .get_opt(&name)
                .await
                .map_err(|e| Error::kube("get", what(&obj), e))?;
            match (api.patch(&name, &params, &Patch::Apply(&obj)).await, live) {
                // A new object in a namespace the set creates first.
                (Err(e), None) if api_code(&e) == Some(404) => preview.create.push(what(&obj)),
                (Err(e), _) if api_code(&e).is_some() => {
                    preview
                        .refused
                        .push(format!("{}: {}", what(&obj), refusal(&e)));
                }
                (Err(e), _) => return Err(Error::kube("dry-run apply", what(&obj), e)),
                (Ok(_), None) => preview.create.push(what(&obj)),
                (Ok(after), Some(before)) => {
                    let after = serde_json::to_value(after).unwrap_or_default();
                    let before = serde_json::to_value(before).unwrap_or_default();
                    if content(after) == content(before) {
                        preview.unchanged += 1;
                    } else {
                        preview.change.push(what(&obj));
                    }
                }
            }
        }
        // As the apply: nothing is pruned while an object waits for its API.
        if !preview.waiting.is_empty() {
            return Ok(preview);
        }
        let before = self.inventory(set).await?;
        for (_, _, object) in self
            .prunable(&mut kinds, set, &before, &now, default_namespace)
            .await?
        {
            preview.prune.push(object);
        }
        Ok(preview)
    }
}
