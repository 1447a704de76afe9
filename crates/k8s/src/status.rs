//! The `VixenCluster` status object that `kubectl get vixenclusters` shows, its kstatus-style
//! conditions (Ready / Reconciling / Stalled), and the same as a table for `vixen status`.

use k8s_openapi::jiff::Timestamp;
use kube::CustomResource;
use kube::api::{Api, Patch, PatchParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{Error, FIELD_MANAGER, MANAGED_BY, Result, api_code};

/// One cluster managed by vixen from one repo. vixen creates it and writes its status.
// One `printcolumn(...)` per column is how kube-derive spells several columns.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "vixen.dev",
    version = "v1alpha1",
    kind = "VixenCluster",
    namespaced,
    status = "VixenClusterStatus",
    shortname = "vxc",
    printcolumn(
        name = "Revision",
        type_ = "string",
        json_path = ".status.lastAppliedRevision"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Nodes", type_ = "string", json_path = ".status.nodeSummary"),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.message",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct VixenClusterSpec {
    /// The Git repository (URL without credentials) or local path the cluster comes from.
    pub source: String,
    /// The cluster's name in `cluster.yaml`.
    pub cluster: String,
}

/// What vixen last did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VixenClusterStatus {
    /// `Ready`, `Reconciling`, `Waiting`, `Failed`, `Refused` or `Error`.
    #[serde(default)]
    pub phase: String,
    /// One line: steps done, or the first error.
    #[serde(default)]
    pub message: String,
    /// The commit vixen works on (or last worked on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The last commit the cluster fully matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_revision: Option<String>,
    /// The replica that wrote this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// When the last reconcile ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reconcile_time: Option<String>,
    /// `3/5 ready` for the printer column.
    #[serde(default)]
    pub node_summary: String,
    /// Per node.
    #[serde(default)]
    pub nodes: Vec<NodeStatus>,
    /// etcd members seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_members: Option<u32>,
    /// kstatus conditions.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The last etcd snapshot vixen took (scheduled or before a risky step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<BackupStatus>,
}

/// One etcd snapshot as the status shows it (no credential, no content).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// `Stored` or `Failed`.
    pub result: String,
    /// When it ended (RFC 3339).
    pub time: String,
    /// Why it was taken (`scheduled`, `before control-plane removal of cp-3`).
    pub reason: String,
    /// The stored object's key (what `vixen etcd restore --from` takes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The member it was taken from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// Size in bytes, before encryption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When a snapshot was last stored (RFC 3339), failed ones after it notwithstanding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_time: Option<String>,
}

/// One node as vixen sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Node name.
    pub name: String,
    /// `controlplane` or `worker`.
    pub role: String,
    /// Talos version running, when reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `ready`, `maintenance`, `unreachable`, `pending`, ...
    pub state: String,
}

/// A condition in the Kubernetes style.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Reconciling`, `Stalled` or `Drifted`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
}

/// The phases, and what each means for the conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The cluster matches the revision.
    Ready,
    /// vixen is working on a revision.
    Reconciling,
    /// Some nodes are not as Git wants them yet (unreachable, booting).
    Waiting,
    /// A step failed.
    Failed,
    /// The planner refused the change.
    Refused,
    /// vixen could not fetch, decrypt or reach the cluster.
    Error,
}

impl Phase {
    /// The phase's name in the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Reconciling => "Reconciling",
            Self::Waiting => "Waiting",
            Self::Failed => "Failed",
            Self::Refused => "Refused",
            Self::Error => "Error",
        }
    }
}

fn tf(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

impl VixenClusterStatus {
    /// Sets phase, message and the three kstatus conditions; a condition keeps its
    /// `lastTransitionTime` when its status does not change.
    pub fn set_phase(&mut self, phase: Phase, reason: &str, message: &str, now: Timestamp) {
        self.phase = phase.as_str().to_owned();
        self.message = message.to_owned();
        let stalled = matches!(phase, Phase::Failed | Phase::Refused | Phase::Error);
        let wanted = [
            ("Ready", phase == Phase::Ready),
            (
                "Reconciling",
                matches!(phase, Phase::Reconciling | Phase::Waiting),
            ),
            ("Stalled", stalled),
        ];
        let mut next = Vec::with_capacity(3);
        for (ty, on) in wanted {
            let status = tf(on).to_owned();
            let since = self
                .conditions
                .iter()
                .find(|c| c.type_ == ty && c.status == status)
                .map_or_else(|| now.to_string(), |c| c.last_transition_time.clone());
            let (reason, message) = if on || ty == "Ready" {
                (reason.to_owned(), message.to_owned())
            } else {
                (String::from("AsExpected"), String::new())
            };
            next.push(Condition {
                type_: ty.into(),
                status,
                reason,
                message,
                last_transition_time: since,
            });
        }
        // Conditions other than the three (`Drifted`) are kept as they are.
        next.extend(
            self.conditions
                .drain(..)
                .filter(|c| !["Ready", "Reconciling", "Stalled"].contains(&c.type_.as_str())),
        );
        self.conditions = next;
    }

    /// Sets one more condition (`Drifted`), keeping its `lastTransitionTime` when its status
    /// does not change.
    pub fn set_condition(
        &mut self,
        ty: &str,
        on: bool,
        reason: &str,
        message: &str,
        now: Timestamp,
    ) {
        let status = tf(on).to_owned();
        let since = self
            .conditions
            .iter()
            .find(|c| c.type_ == ty && c.status == status)
            .map_or_else(|| now.to_string(), |c| c.last_transition_time.clone());
        self.conditions.retain(|c| c.type_ != ty);
        self.conditions.push(Condition {
            type_: ty.into(),
            status,
            reason: reason.into(),
            message: message.into(),
            last_transition_time: since,
        });
    }

    /// Sets the per-node list and the summary column.
    pub fn set_nodes(&mut self, nodes: Vec<NodeStatus>) {
        let ready = nodes.iter().filter(|n| n.state == "ready").count();
        self.node_summary = format!("{ready}/{} ready", nodes.len());
        self.nodes = nodes;
    }
}

/// Reads and writes one `VixenCluster`.
pub struct StatusApi {
    api: Api<VixenCluster>,
    namespace: String,
    name: String,
}

impl StatusApi {
    /// The object `namespace/name`.
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    fn what(&self) -> String {
        format!("vixencluster {}/{}", self.namespace, self.name)
    }

    /// Creates or updates the object's spec (server-side apply).
    ///
    /// # Errors
    /// API errors.
    pub async fn ensure(&self, spec: &VixenClusterSpec) -> Result<()> {
        let obj = json!({
            "apiVersion": "vixen.dev/v1alpha1",
            "kind": "VixenCluster",
            "metadata": { "name": self.name, "labels": { MANAGED_BY.0: MANAGED_BY.1 } },
            "spec": spec,
        });
        self.api
            .patch(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await
            .map_err(|e| Error::kube("apply", self.what(), e))?;
        Ok(())
    }

    /// The object, if it exists.
    ///
    /// # Errors
    /// API errors other than not found.
    pub async fn get(&self) -> Result<Option<VixenCluster>> {
        match self.api.get(&self.name).await {
            Ok(o) => Ok(Some(o)),
            Err(e) if api_code(&e) == Some(404) => Ok(None),
            Err(e) => Err(Error::kube("get", self.what(), e)),
        }
    }

    /// Replaces the status (server-side apply on the status subresource; vixen owns all of it).
    ///
    /// # Errors
    /// API errors.
    pub async fn write(&self, status: &VixenClusterStatus) -> Result<()> {
        let obj =
            json!({ "apiVersion": "vixen.dev/v1alpha1", "kind": "VixenCluster", "status": status });
        self.api
            .patch_status(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await
            .map_err(|e| Error::kube("apply status", self.what(), e))?;
        Ok(())
    }
}

/// `vixen status`: the object as a few lines and two tables.
pub fn render_table(obj: &VixenCluster) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let name = obj.metadata.name.as_deref().unwrap_or("?");
    let st = obj.status.clone().unwrap_or_default();
    let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    let _ = writeln!(out, "cluster   {name} (from {})", obj.spec.source);
    let _ = writeln!(
        out,
        "phase     {}  {}",
        if st.phase.is_empty() { "-" } else { &st.phase },
        st.message
    );
    let _ = writeln!(
        out,
        "revision  {} (last applied {})",
        dash(&st.revision),
        dash(&st.last_applied_revision)
    );
    let _ = writeln!(
        out,
        "leader    {}   etcd members {}",
        dash(&st.leader),
        st.etcd_members
            .map_or_else(|| "-".into(), |n| n.to_string())
    );
    if let Some(b) = &st.last_backup {
        let what = match (&b.key, &b.error) {
            (Some(key), _) => key.clone(),
            (None, Some(e)) => e.clone(),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "backup    {} {} ({}): {what}",
            b.result, b.time, b.reason
        );
    }
    let _ = writeln!(out);
    let w = st
        .nodes
        .iter()
        .map(|n| n.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        out,
        "{:<w$}  {:<12}  {:<10}  STATE",
        "NODE", "ROLE", "VERSION"
    );
    for n in &st.nodes {
        let _ = writeln!(
            out,
            "{:<w$}  {:<12}  {:<10}  {}",
            n.name,
            n.role,
            n.version.as_deref().unwrap_or("-"),
            n.state
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<12}  {:<6}  {:<20}  {:<25}  MESSAGE",
        "CONDITION", "STATUS", "REASON", "SINCE"
    );
    for c in &st.conditions {
        let _ = writeln!(
            out,
            "{:<12}  {:<6}  {:<20}  {:<25}  {}",
            c.type_, c.status, c.reason, c.last_transition_time, c.message
        );
    }
    out
}
