//! A fresh etcd snapshot before a risky plan (`backup.beforeRisky`): taken through Talos'
//! EtcdSnapshot on a healthy voting member, handed to the [`SnapshotSink`] (check, encrypt,
//! upload), before the plan's first call. With `required`, a failure stops the plan as a
//! [`Refusal::SnapshotFailed`]: nothing was changed and the next reconcile tries again.
//!
//! ```text
//! plan ─vixen_plan::risky─► reason? ─► member (started voter, healthy, leader last)
//!        ─EtcdStatus─► metadata ─EtcdSnapshot─► bytes ─sink.save─► key | error
//! ```

use vixen_model::backup::BeforeRisky;
use vixen_plan::{Desired, Inventory, NodeState, Observed, Plan, Refusal, Role};

use crate::ports::{NodeApi, SnapshotSink, SnapshotSource};

/// `(hostname, address)` of the control planes a snapshot may be taken from: configured,
/// healthy, a started voting member; the leader last (a snapshot loads its member).
pub fn candidates(
    desired: &Desired,
    observed: &Observed,
    inventory: &Inventory,
) -> Vec<(String, String)> {
    let Some(etcd) = &observed.etcd else {
        return Vec::new();
    };
    let leader = etcd.leader_name();
    let mut out: Vec<(String, String)> = Vec::new();
    for m in etcd.voters().filter(|m| m.started) {
        let name = desired
            .nodes
            .iter()
            .find(|n| n.hostname == m.name && n.role == Role::Controlplane)
            .map(|n| n.name.as_str())
            .or_else(|| {
                inventory
                    .nodes
                    .iter()
                    .find(|n| n.hostname == m.name && n.role == Role::Controlplane)
                    .map(|n| n.name.as_str())
            });
        let Some(o) = name.and_then(|n| observed.node(n)) else {
            continue;
        };
        if o.state == NodeState::Configured && o.healthy {
            out.push((m.name.clone(), o.address.clone()));
        }
    }
    out.sort_by_key(|(h, _)| leader == Some(h.as_str()));
    out
}

/// Takes a snapshot from the first candidate that gives one and stores it through `sink`.
/// Returns the stored key.
///
/// # Errors
/// Why no snapshot could be stored: no candidate answered, or the sink refused (the upload
/// failing is not a member's fault: no other member is tried then).
pub async fn take(
    talos: &impl NodeApi,
    sink: &dyn SnapshotSink,
    candidates: &[(String, String)],
    reason: &str,
) -> Result<String, String> {
    let mut last = "no healthy etcd member to take it from".to_string();
    for (hostname, address) in candidates {
        let status = match talos.etcd_status(address).await {
            Ok(s) if s.leader != 0 && s.errors.is_empty() && !s.is_learner => s,
            Ok(_) => {
                last = format!("{hostname}: its etcd member is not healthy");
                continue;
            }
            Err(e) => {
                last = format!("{hostname}: EtcdStatus: {e}");
                continue;
            }
        };
        let bytes = match talos.etcd_snapshot(address).await {
            Ok(b) => b,
            Err(e) => {
                last = format!("{hostname}: EtcdSnapshot: {e}");
                continue;
            }
        };
        let source = SnapshotSource {
            member: hostname.clone(),
            member_id: status.member_id,
            etcd_version: if status.protocol_version.is_empty() {
                status.storage_version.clone()
            } else {
                status.protocol_version.clone()
            },
            raft_index: status.raft_index,
            reason: reason.to_string(),
        };
        return sink.save(bytes, source).await;
    }
    Err(last)
}

/// The snapshot a risky plan needs first; `Some(refusal)` when it failed under `required`.
pub async fn before_risky(
    talos: &impl NodeApi,
    sink: Option<&dyn SnapshotSink>,
    plan: &Plan,
    desired: &Desired,
    observed: &Observed,
    inventory: &Inventory,
) -> Option<Refusal> {
    let sink = sink?;
    let policy = sink.policy();
    if policy == BeforeRisky::Off {
        return None;
    }
    let risk = vixen_plan::risky(plan, desired, observed, inventory)?;
    let from = candidates(desired, observed, inventory);
    match take(talos, sink, &from, &format!("before {risk}")).await {
        Ok(key) => {
            tracing::info!(%key, %risk, "fresh etcd snapshot stored before a risky step");
            None
        }
        Err(error) if policy == BeforeRisky::Required => {
            tracing::warn!(%error, %risk, "no fresh etcd snapshot: the plan stops here");
            Some(Refusal::SnapshotFailed { risk, error })
        }
        Err(error) => {
            tracing::warn!(%error, %risk, "no fresh etcd snapshot (best-effort): going on");
            None
        }
    }
}

impl<T: NodeApi, K: crate::ports::KubeGates, S: crate::ports::StateStore>
    crate::Engine<'_, T, K, S>
{
    /// A snapshot now (scheduled, or `vixen etcd snapshot`): observes the cluster, picks a
    /// healthy voting member (the leader last) and stores its snapshot through the engine's
    /// sink. Read-only for the cluster: EtcdStatus and EtcdSnapshot are its only Talos calls
    /// besides the observation.
    ///
    /// # Errors
    /// Why no snapshot was stored (no sink, no healthy member, the sink's error).
    pub async fn snapshot(&self, desired: &Desired, reason: &str) -> Result<String, String> {
        let sink = self
            .backup
            .ok_or("cluster.yaml has no `backup:` block: nowhere to store a snapshot")?;
        let state = self.store.load().await.map_err(|e| e.to_string())?;
        let observed =
            crate::observe::observe(self.talos, self.kube, &desired.nodes, &state.inventory).await;
        let from = candidates(desired, &observed, &state.inventory);
        take(self.talos, sink, &from, reason).await
    }
}
