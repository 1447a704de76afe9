//! Cilium LB-IPAM pools and L2 announcement policies from the repo's `network.yaml`.
//!
//! [`NetworkObjects::from_network`] builds the objects (no I/O); [`CiliumApi::apply`] applies them
//! with server-side apply under field manager `vixen`, labelled managed-by vixen, and deletes the
//! managed ones that left Git. A field owned by another manager is reported as a [`Conflict`] and
//! left alone, unless `force` is set.
//!
//! API versions: `CiliumLoadBalancerIPPool` is `cilium.io/v2alpha1` on Cilium 1.16-1.17 and
//! `cilium.io/v2` from 1.18 (v2alpha1 still served, deprecated in 1.19); the L2 policy is
//! `cilium.io/v2alpha1` only.

use std::collections::BTreeSet;

use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use serde_json::{Value, json};
use vixen_model::{L2Policy, LabelSelector, NetworkFile, Pool};

use crate::{Error, FIELD_MANAGER, MANAGED_BY, Result, api_code};

/// Which API version pools are written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PoolVersion {
    /// `cilium.io/v2alpha1` (Cilium 1.16+; deprecated from 1.19).
    #[default]
    V2Alpha1,
    /// `cilium.io/v2` (Cilium 1.18+).
    V2,
}

impl std::str::FromStr for PoolVersion {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "v2alpha1" | "cilium.io/v2alpha1" => Ok(Self::V2Alpha1),
            "v2" | "cilium.io/v2" => Ok(Self::V2),
            _ => Err(format!("unknown pool API version {s:?} (v2alpha1 or v2)")),
        }
    }
}

/// The pool kind in `version`.
pub fn pool_resource(version: PoolVersion) -> ApiResource {
    let v = match version {
        PoolVersion::V2Alpha1 => "v2alpha1",
        PoolVersion::V2 => "v2",
    };
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cilium.io", v, "CiliumLoadBalancerIPPool"),
        "ciliumloadbalancerippools",
    )
}

/// The L2 announcement policy kind.
pub fn l2_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cilium.io", "v2alpha1", "CiliumL2AnnouncementPolicy"),
        "ciliuml2announcementpolicies",
    )
}

/// The objects Git wants.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetworkObjects {
    /// Pools, as full objects for server-side apply.
    pub pools: Vec<Value>,
    /// L2 announcement policies.
    pub l2_policies: Vec<Value>,
}

fn selector(s: &LabelSelector) -> Value {
    serde_json::to_value(s).unwrap_or(Value::Null)
}

fn meta(name: &str) -> Value {
    json!({ "name": name, "labels": { MANAGED_BY.0: MANAGED_BY.1 } })
}

fn pool(p: &Pool, api_version: &str) -> Value {
    let mut blocks: Vec<Value> = p.cidrs.iter().map(|c| json!({ "cidr": c })).collect();
    blocks.extend(
        p.ranges
            .iter()
            .map(|r| json!({ "start": r.start, "stop": r.stop })),
    );
    let mut spec = json!({ "blocks": blocks });
    if let Some(s) = &p.service_selector {
        spec["serviceSelector"] = selector(s);
    }
    if p.disabled {
        spec["disabled"] = json!(true);
    }
    json!({ "apiVersion": api_version, "kind": "CiliumLoadBalancerIPPool", "metadata": meta(&p.name), "spec": spec })
}

fn l2(p: &L2Policy) -> Value {
    let mut spec = json!({ "loadBalancerIPs": p.load_balancer_ips, "externalIPs": p.external_ips });
    if !p.interfaces.is_empty() {
        spec["interfaces"] = json!(p.interfaces);
    }
    if let Some(s) = &p.node_selector {
        spec["nodeSelector"] = selector(s);
    }
    if let Some(s) = &p.service_selector {
        spec["serviceSelector"] = selector(s);
    }
    json!({ "apiVersion": "cilium.io/v2alpha1", "kind": "CiliumL2AnnouncementPolicy", "metadata": meta(&p.name), "spec": spec })
}

impl NetworkObjects {
    /// The objects for `network.yaml`.
    pub fn from_network(net: &NetworkFile, version: PoolVersion) -> Self {
        let ar = pool_resource(version);
        Self {
            pools: net.pools.iter().map(|p| pool(p, &ar.api_version)).collect(),
            l2_policies: net.l2_policies.iter().map(l2).collect(),
        }
    }
}

/// A field that another manager owns; vixen did not force it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// `CiliumLoadBalancerIPPool/default`.
    pub object: String,
    /// The API server's explanation (names the other manager and the fields).
    pub message: String,
}

/// What an apply did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// `Kind/name` of the objects applied.
    pub applied: Vec<String>,
    /// `Kind/name` of the managed objects deleted because they left Git.
    pub deleted: Vec<String>,
    /// Objects not applied because another manager owns some of their fields.
    pub conflicts: Vec<Conflict>,
}

impl ApplyReport {
    /// One line for logs, events and commit statuses.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} Cilium objects applied, {} deleted",
            self.applied.len(),
            self.deleted.len()
        );
        if !self.conflicts.is_empty() {
            s.push_str(&format!(
                ", {} in conflict ({})",
                self.conflicts.len(),
                self.conflicts
                    .iter()
                    .map(|c| c.object.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        s
    }
}

/// Applies [`NetworkObjects`].
pub struct CiliumApi {
    client: kube::Client,
    version: PoolVersion,
    force: bool,
}

impl CiliumApi {
    /// `force`: take over fields owned by another manager instead of reporting a conflict.
    pub fn new(client: kube::Client, version: PoolVersion, force: bool) -> Self {
        Self {
            client,
            version,
            force,
        }
    }

    /// Applies every object, then deletes managed objects of both kinds that Git no longer has.
    ///
    /// # Errors
    /// API errors other than conflicts (conflicts are in the report).
    ///
    /// # Guarantees
    /// Only objects labelled managed-by vixen are ever deleted.
    pub async fn apply(&self, objects: &NetworkObjects) -> Result<ApplyReport> {
        let mut report = ApplyReport::default();
        self.apply_kind(&pool_resource(self.version), &objects.pools, &mut report)
            .await?;
        self.apply_kind(&l2_resource(), &objects.l2_policies, &mut report)
            .await?;
        Ok(report)
    }

    async fn apply_kind(
        &self,
        ar: &ApiResource,
        objects: &[Value],
        report: &mut ApplyReport,
    ) -> Result<()> {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), ar);
        let mut params = PatchParams::apply(FIELD_MANAGER);
        if self.force {
            params = params.force();
        }
        let mut wanted = BTreeSet::new();
        for obj in objects {
            let name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let what = format!("{}/{name}", ar.kind);
            wanted.insert(name.clone());
            match api.patch(&name, &params, &Patch::Apply(obj)).await {
                Ok(_) => report.applied.push(what),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    tracing::warn!(object = %what, message = %s.message, "field owned by another manager; not forced");
                    report.conflicts.push(Conflict {
                        object: what,
                        message: s.message.clone(),
                    });
                }
                Err(e) => return Err(Error::kube("apply", what, e)),
            }
        }
        let lp = ListParams::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
        let existing = match api.list_metadata(&lp).await {
            Ok(l) => l.items,
            // The CRD is not installed: nothing of this kind can be left over.
            Err(e) if api_code(&e) == Some(404) && objects.is_empty() => return Ok(()),
            Err(e) => return Err(Error::kube("list", ar.plural.clone(), e)),
        };
        for o in existing {
            let Some(name) = o.metadata.name else {
                continue;
            };
            if wanted.contains(&name) {
                continue;
            }
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => report.deleted.push(format!("{}/{name}", ar.kind)),
                Err(e) if api_code(&e) == Some(404) => {}
                Err(e) => return Err(Error::kube("delete", format!("{}/{name}", ar.kind), e)),
            }
        }
        Ok(())
    }
}
