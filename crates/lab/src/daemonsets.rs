//! The DaemonSet controller's part of the lab (the lab runs no kube-controller-manager): each
//! DaemonSet in the API gets the status the controller and the nodes' kubelets would give it, so
//! that `kubectl rollout status` (and vixen's CNI gate) read a real rollout.
//!
//! Modelled on kube-controller-manager's `pkg/controller/daemon` (`updateDaemonSetStatus`): one
//! pod per registered node (node selectors and taints are not modelled), scheduled on every
//! registered node, running the current template at once, ready and available while the node's
//! kubelet is Ready; `observedGeneration` follows `metadata.generation`.

use std::collections::HashMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

/// The field manager of these status writes.
const MANAGER: &str = "vixen-lab-daemonset-controller";

/// What was last posted per DaemonSet (`namespace/name`): generation, scheduled, ready.
#[derive(Default)]
pub(crate) struct DaemonSets {
    posted: HashMap<String, (i64, i32, i32)>,
}

impl DaemonSets {
    /// Posts the status of every DaemonSet whose generation or node counts changed.
    /// `scheduled`: registered nodes; `ready`: those whose kubelet is Ready.
    pub(crate) async fn sync(&mut self, client: &kube::Client, scheduled: i32, ready: i32) {
        let all: Api<DaemonSet> = Api::all(client.clone());
        let list = match all.list(&ListParams::default()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "daemonsets");
                return;
            }
        };
        for ds in list.items {
            let (Some(ns), Some(name)) = (ds.metadata.namespace.clone(), ds.metadata.name.clone())
            else {
                continue;
            };
            let generation = ds.metadata.generation.unwrap_or(1);
            let key = format!("{ns}/{name}");
            let want = (generation, scheduled, ready);
            if self.posted.get(&key) == Some(&want) {
                continue;
            }
            let status = json!({
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": { "name": name, "namespace": ns },
                "status": {
                    "observedGeneration": generation,
                    "desiredNumberScheduled": scheduled,
                    "currentNumberScheduled": scheduled,
                    "updatedNumberScheduled": scheduled,
                    "numberMisscheduled": 0,
                    "numberReady": ready,
                    "numberAvailable": ready,
                    "numberUnavailable": scheduled - ready,
                },
            });
            let api: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
            match api
                .patch_status(
                    &name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&status),
                )
                .await
            {
                Ok(_) => {
                    self.posted.insert(key, want);
                }
                Err(e) => tracing::debug!(daemonset = %key, error = %e, "daemonset status"),
            }
        }
    }
}
