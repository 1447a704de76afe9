//! Nodes joining and leaving: control planes leave etcd one at a time keeping quorum, before
//! their reset; new nodes join from maintenance mode, control planes one at a time.

use super::*;

pub(super) fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

pub(super) fn remove_control_plane(
    plan: &mut Plan,
    l: &Leaving<'_>,
    etcd: &EtcdView,
    members: &mut Vec<String>,
    remaining: &[&Match<'_>],
    desired: &Desired,
    kube: Option<&KubeView>,
) -> Result<(), Refusal> {
    // By member ID first: a renamed node's member keeps its old name.
    let member = etcd.member_of(l.member_id, l.hostname, l.address);
    let others: Vec<&Member> = etcd
        .voters()
        .filter(|m| member.is_none_or(|own| own.id != m.id))
        .collect();
    let started_others = others.iter().filter(|m| m.started).count();
    if member.is_some_and(|m| !m.is_learner) && started_others < quorum(others.len()) {
        return Err(Refusal::Quorum(format!(
            "removing {} needs {} started members among the other {}, but only {} are started",
            l.name,
            quorum(others.len()),
            others.len(),
            started_others
        )));
    }
    let reachable = l.observed.is_some_and(|o| o.state == NodeState::Configured);
    let why = if l.role_change {
        "changes role"
    } else {
        "left Git"
    };
    let reset = reachable && (desired.reset_on_removal || l.role_change);
    if reset {
        // Pods go before the member does (the order of Talos' own graceful reset).
        drain(plan, l.name, l.hostname, kube, why);
    }
    if let Some(member) = member {
        if reachable {
            if etcd.leader == Some(member.id) && !others.is_empty() {
                plan.steps.push(step(
                    l.name,
                    Action::ForfeitLeadership,
                    format!("{why}; it leads etcd"),
                    ETCD,
                ));
            }
            plan.steps.push(step(
                l.name,
                Action::LeaveEtcd,
                format!("{why}: its member leaves etcd before the node goes"),
                ETCD,
            ));
        } else {
            let via = remaining
                .first()
                .map_or_else(String::new, |m| m.desired.name.clone());
            plan.steps.push(step(
                l.name,
                Action::RemoveMember {
                    member_id: member.id,
                    via: via.clone(),
                },
                format!("{why} and is unreachable: remove its member through {via}"),
                ETCD,
            ));
        }
        members.retain(|m| *m != member.name);
        plan.steps.push(step(
            l.name,
            Action::CheckMembers {
                expected: members.clone(),
            },
            "etcd must list exactly the remaining members",
            NONE,
        ));
    }
    if reset {
        reset_node(plan, l, why, kube, false);
    }
    Ok(())
}

pub(super) fn reset_node(
    plan: &mut Plan,
    l: &Leaving<'_>,
    why: &str,
    kube: Option<&KubeView>,
    drain_first: bool,
) {
    if l.observed.is_some_and(|o| o.state == NodeState::Configured) {
        if drain_first {
            drain(plan, l.name, l.hostname, kube, why);
        }
        plan.steps.push(step(
            l.name,
            Action::Reset { graceful: true },
            format!("{why}: back to maintenance mode"),
            RESET,
        ));
        plan.steps.push(step(
            l.name,
            Action::WaitMaintenance {
                address: l.maintenance.to_string(),
            },
            "the reset must finish before anything else",
            NONE,
        ));
        if kube.is_some_and(|k| k.node(l.hostname).is_some()) {
            plan.steps.push(step(
                l.name,
                Action::DeleteNode {
                    node_name: l.hostname.to_string(),
                },
                "the machine left the cluster: its Node object goes too",
                NONE,
            ));
        }
    }
}

pub(super) fn add_node(
    plan: &mut Plan,
    m: &Match<'_>,
    desired: &Desired,
    etcd: &EtcdView,
    members: &mut Vec<String>,
    kube: Option<&KubeView>,
) -> Result<(), Refusal> {
    let d = m.desired;
    // A node changing role is configured now but will be reset first: it is then found at its
    // maintenance address.
    let at = m
        .observed
        .filter(|o| o.state == NodeState::Maintenance)
        .map_or(d.maintenance_address.clone(), |o| o.address.clone());
    if d.role == Role::Controlplane {
        let voters = etcd.voters().count();
        let started = etcd.voters().filter(|m| m.started).count();
        if started < voters {
            return Err(Refusal::Quorum(format!(
                "cannot add {}: {} of {voters} etcd members are not started",
                d.name,
                voters - started
            )));
        }
    }
    plan.steps.push(step(
        &d.name,
        Action::ApplyConfig {
            mode: ApplyMode::Auto,
            address: at,
            maintenance: true,
            reboot_after: false,
        },
        format!("new {} in maintenance mode", d.role),
        REBOOT,
    ));
    plan.steps.push(step(
        &d.name,
        Action::WaitReady {
            address: d.address().to_string(),
            version: Some(format!("v{}", desired.talos_version)),
        },
        "installed and rebooted into its config",
        NONE,
    ));
    if d.role == Role::Controlplane {
        plan.steps.push(step(
            &d.name,
            Action::WaitEtcdMember,
            "joins etcd as a learner and is promoted before the next node",
            ETCD,
        ));
        members.push(d.hostname.clone());
        members.sort();
        plan.steps.push(step(
            &d.name,
            Action::CheckMembers {
                expected: members.clone(),
            },
            "etcd must list the new member",
            NONE,
        ));
    }
    if kube.is_some() {
        plan.steps.push(step(
            &d.name,
            Action::WaitNodeReady {
                node_name: d.hostname.clone(),
                version: None,
            },
            "its kubelet must register and be Ready before the next node",
            NONE,
        ));
    }
    Ok(())
}
