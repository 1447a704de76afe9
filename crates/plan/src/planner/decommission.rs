//! `vixen decommission`: every node back to maintenance mode, never triggered by Git.

use super::*;

/// Plans the decommission of the whole cluster: every node back to maintenance mode, workers
/// first, then control planes one by one (each leaves etcd before its reset, the leader last),
/// the last control plane alone at the very end. Never triggered by Git: only by
/// `vixen decommission --confirm <cluster>`.
///
/// # Errors
/// [`Refusal::Quorum`] when a control plane must leave etcd while the others lack quorum.
pub fn plan_decommission(desired: &Desired, observed: &Observed) -> Result<Plan, Refusal> {
    let mut plan = Plan::default();
    let configured = |name: &str| {
        observed
            .node(name)
            .is_some_and(|o| o.state == NodeState::Configured)
    };
    let etcd = observed.etcd.clone().unwrap_or_default();
    let mut workers: Vec<&DesiredNode> = desired
        .nodes
        .iter()
        .filter(|n| n.role == Role::Worker)
        .collect();
    workers.sort_by_key(|n| n.name.as_str());
    for w in workers {
        if configured(&w.name) {
            plan.steps.push(step(
                &w.name,
                Action::Reset { graceful: true },
                "decommission: workers first",
                RESET,
            ));
            plan.steps.push(step(
                &w.name,
                Action::WaitMaintenance {
                    address: w.maintenance_address.clone(),
                },
                "the reset must finish before the next node",
                NONE,
            ));
        }
    }
    let mut cps: Vec<&DesiredNode> = desired
        .nodes
        .iter()
        .filter(|n| n.role == Role::Controlplane && configured(&n.name))
        .collect();
    cps.sort_by_key(|n| {
        (
            etcd.leader_name() == Some(n.hostname.as_str()),
            n.name.as_str(),
        )
    });
    let mut members: Vec<String> = etcd.voters().map(|m| m.name.clone()).collect();
    members.sort();
    let last = cps.pop();
    for cp in cps {
        let others: Vec<&Member> = etcd
            .voters()
            .filter(|m| members.contains(&m.name) && m.name != cp.hostname)
            .collect();
        if others.iter().filter(|m| m.started).count() < quorum(others.len()) {
            return Err(Refusal::Quorum(format!(
                "{} cannot leave etcd: the other members lack quorum",
                cp.name
            )));
        }
        if etcd.leader_name() == Some(cp.hostname.as_str()) {
            plan.steps.push(step(
                &cp.name,
                Action::ForfeitLeadership,
                "decommission: it leads etcd",
                ETCD,
            ));
        }
        plan.steps.push(step(
            &cp.name,
            Action::LeaveEtcd,
            "decommission: its member leaves etcd before the node goes",
            ETCD,
        ));
        members.retain(|m| *m != cp.hostname);
        plan.steps.push(step(
            &cp.name,
            Action::CheckMembers {
                expected: members.clone(),
            },
            "etcd must list exactly the remaining members",
            NONE,
        ));
        plan.steps.push(step(
            &cp.name,
            Action::Reset { graceful: true },
            "decommission",
            RESET,
        ));
        plan.steps.push(step(
            &cp.name,
            Action::WaitMaintenance {
                address: cp.maintenance_address.clone(),
            },
            "the reset must finish before the next node",
            NONE,
        ));
    }
    if let Some(cp) = last {
        // The last member cannot leave etcd (there is no one to leave to): it is wiped with the
        // node, as Talos does for a non-graceful reset.
        plan.steps.push(step(
            &cp.name,
            Action::Reset { graceful: false },
            "decommission: the last control plane, alone",
            RESET,
        ));
        plan.steps.push(step(
            &cp.name,
            Action::WaitMaintenance {
                address: cp.maintenance_address.clone(),
            },
            "back in maintenance mode",
            NONE,
        ));
    }
    Ok(plan)
}
