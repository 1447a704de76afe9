//! Which plans deserve a fresh etcd snapshot before their first step: the steps after which a
//! lost or damaged etcd cannot be rebuilt from the running members alone.
//!
//! - a control-plane removal (a member leaves etcd, or is removed through a peer);
//! - a Talos minor upgrade (a new etcd and a new Talos on every member);
//! - a Kubernetes minor upgrade (the API server migrates stored objects);
//! - a promotion (a new member joins as a learner and is promoted to a voter: quorum grows).

use crate::action::Action;
use crate::state::{Desired, Inventory, NodeState, Observed, Plan};

/// Why `plan` is risky, in words (the first reason found), or `None`.
pub fn risky(
    plan: &Plan,
    desired: &Desired,
    observed: &Observed,
    inventory: &Inventory,
) -> Option<String> {
    plan.mutating().next()?;
    for s in &plan.steps {
        match &s.action {
            Action::LeaveEtcd | Action::RemoveMember { .. } => {
                return Some(format!("the control-plane removal of {}", s.node));
            }
            _ => {}
        }
    }
    for s in &plan.steps {
        if let Action::Upgrade { .. } | Action::LifecycleUpgrade { .. } = &s.action
            && let Some(from) = observed
                .node(&s.node)
                .filter(|o| o.state == NodeState::Configured)
                .and_then(|o| o.talos_version)
            && from.minor_pair() != desired.talos_version.minor_pair()
        {
            return Some(format!(
                "the Talos minor upgrade of {} (v{from} -> v{})",
                s.node, desired.talos_version
            ));
        }
    }
    if let Some(from) = inventory
        .kubernetes_version
        .as_deref()
        .and_then(|v| v.parse::<crate::Version>().ok())
        && from.minor_pair() != desired.kubernetes_version.minor_pair()
    {
        return Some(format!(
            "the Kubernetes minor upgrade ({from} -> {})",
            desired.kubernetes_version
        ));
    }
    // A member that joins: a control plane configured from maintenance mode whose member is
    // then awaited (an upgraded member's rejoin also waits for its member: not a promotion).
    let joining = |node: &str| {
        plan.steps.iter().any(|s| {
            s.node == node
                && matches!(
                    s.action,
                    Action::ApplyConfig {
                        maintenance: true,
                        ..
                    }
                )
        })
    };
    for s in &plan.steps {
        if s.action == Action::WaitEtcdMember && joining(&s.node) {
            let was_worker = inventory
                .node(&s.node)
                .is_some_and(|i| i.role == crate::Role::Worker);
            return Some(if was_worker {
                format!("the promotion of {} from worker to control plane", s.node)
            } else {
                format!("the promotion of {} to an etcd voting member", s.node)
            });
        }
    }
    None
}
