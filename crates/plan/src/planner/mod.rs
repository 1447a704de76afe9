//! `plan(desired, observed, inventory) -> Plan`: what must happen to which node, in which order.
//!
//! No I/O. The order is fixed and each phase only starts from what the previous one leaves:
//!
//! ```text
//! refusals   version jumps, skew, lost quorum, not bootstrapped  -> Err(Refusal), nothing done
//! removals   workers, then control planes one by one (non-leaders first):
//!            forfeit if leader -> leave etcd (or remove via a peer) -> check members -> reset
//! additions  control planes one by one (apply in maintenance -> ready -> member joined
//!            and promoted -> check members), then workers
//! upgrades   control planes (leader last, after forfeiting), then workers; each gated on
//!            version, health and etcd, then the stabilization wait
//! configs    changed configs: live ones with NO_REBOOT, others one node at a time with a reboot
//!            (Talos 1.14+ never reboots on apply: NO_REBOOT, then vixen's own Reboot step)
//! ```
//!
//! When the Kubernetes API answers, every disruption is wrapped as `kubectl` users expect: the
//! Node is cordoned and drained (PodDisruptionBudgets honoured) before the node goes down,
//! must be `Ready` again (on the new version) before it is uncordoned and the next node starts,
//! and the Node object of a machine that was reset is deleted. A node vixen left cordoned (a run
//! that stopped part way) is uncordoned once it is `Ready`, before any other node is disrupted.
//!
//! Here: the order and the matching of Git to what was and what is. The phases' steps are in
//! `membership` (leaves and joins), `rollout` (upgrades and config changes), `kube` (drains and
//! readiness gates) and `decommission`.
//!
//! Identity: a node is its name in Git; a node whose name changed but whose maintenance address
//! matches an inventory entry is the same machine renamed (never reset for it).

use std::collections::BTreeSet;

use crate::action::*;
use crate::state::*;
use vixen_model::version;

mod decommission;
mod kube;
mod membership;
mod rollout;

pub use decommission::plan_decommission;
use kube::{back_in_kubernetes, drain, kubelet_gate};
use membership::{add_node, quorum, remove_control_plane, reset_node};
use rollout::{change_config, drift, upgrade_node};

/// `machine.*` sections Talos applies without a reboot (AUTO mode, Talos 1.12/1.13). Anything
/// else under `machine` needs a reboot; `cluster` and `debug` always apply live.
const LIVE_SECTIONS: &[&str] = &[
    "machine.ca",
    "machine.acceptedCAs",
    "machine.time",
    "machine.certSANs",
    "machine.install",
    "machine.network",
    "machine.sysfs",
    "machine.sysctls",
    "machine.logging",
    "machine.controlPlane",
    "machine.kubelet",
    "machine.kernel",
    "machine.registries",
    "machine.pods",
    "machine.seccompProfiles",
    "machine.nodeLabels",
    "machine.nodeAnnotations",
    "machine.nodeTaints",
    "machine.features.kubernetesTalosAPIAccess",
    "machine.features.kubePrism",
    "machine.features.hostDNS",
    "machine.features.imageCache",
    "machine.features.nodeAddressSortAlgorithm",
    "cluster",
    "debug",
];

/// The sections that differ between two digests.
pub fn changed_sections(old: &ConfigDigest, new: &ConfigDigest) -> Vec<String> {
    let keys: BTreeSet<&String> = old.sections.keys().chain(new.sections.keys()).collect();
    keys.into_iter()
        .filter(|k| old.sections.get(*k) != new.sections.get(*k))
        .cloned()
        .collect()
}

/// Whether moving from `old` to `new` makes Talos reboot the node.
pub fn needs_reboot(old: &ConfigDigest, new: &ConfigDigest) -> bool {
    changed_sections(old, new)
        .iter()
        .any(|s| !LIVE_SECTIONS.contains(&s.as_str()))
}

/// Talos 1.14+ never reboots on ApplyConfiguration: a REBOOT-mode apply on a configured node is
/// `Unimplemented "the REBOOT mode is not supported"`, and AUTO always means NO_REBOOT, which
/// persists the config and applies what can be applied live (v1.14
/// `internal/app/machined/internal/server/v1alpha1/v1alpha1_server.go`, ApplyConfiguration).
/// A change that needs a reboot is then applied with NO_REBOOT and vixen reboots the node.
pub fn apply_never_reboots(talos: Option<Version>) -> bool {
    talos.is_some_and(|v| v.minor_pair() >= (1, 14))
}

fn step(node: &str, action: Action, reason: impl Into<String>, risk: Risk) -> Step {
    Step {
        node: node.to_string(),
        action,
        reason: reason.into(),
        risk,
    }
}

const NONE: Risk = Risk {
    reboot: false,
    reset: false,
    etcd: false,
};
const REBOOT: Risk = Risk {
    reboot: true,
    reset: false,
    etcd: false,
};
const ETCD: Risk = Risk {
    reboot: false,
    reset: false,
    etcd: true,
};
const RESET: Risk = Risk {
    reboot: true,
    reset: true,
    etcd: false,
};

/// A desired node matched with what vixen knew of it and what it looks like now.
struct Match<'a> {
    desired: &'a DesiredNode,
    prior: Option<&'a InventoryNode>,
    observed: Option<&'a ObservedNode>,
}

impl Match<'_> {
    fn state(&self) -> NodeState {
        self.observed.map_or(NodeState::Unreachable, |o| o.state)
    }
    fn address(&self) -> &str {
        self.observed
            .map_or_else(|| self.desired.address(), |o| o.address.as_str())
    }
    /// Its etcd member (found by member ID, address, then hostname).
    fn member<'e>(&self, etcd: &'e EtcdView) -> Option<&'e Member> {
        let id = self.prior.and_then(|p| p.member_id);
        etcd.member_of(id, &self.desired.hostname, self.address())
    }
    /// Whether its etcd member leads.
    fn leads(&self, etcd: &EtcdView) -> bool {
        let id = self.prior.and_then(|p| p.member_id);
        etcd.leads(id, &self.desired.hostname, self.address())
    }
}

/// Plans the changes that bring the observed cluster to the desired one.
///
/// # Errors
/// A [`Refusal`] when the change is unsafe or impossible now; nothing may be done then.
pub fn plan(
    desired: &Desired,
    observed: &Observed,
    inventory: &Inventory,
) -> Result<Plan, Refusal> {
    let wanted: BTreeSet<&str> = desired.nodes.iter().map(|n| n.name.as_str()).collect();
    // Match every desired node to its inventory entry, by name, else by maintenance address
    // (a rename).
    let mut renamed_from: BTreeSet<&str> = BTreeSet::new();
    let matches: Vec<Match<'_>> = desired
        .nodes
        .iter()
        .map(|d| {
            let prior = inventory.node(&d.name).or_else(|| {
                inventory.nodes.iter().find(|i| {
                    i.maintenance_address == d.maintenance_address
                        && !wanted.contains(i.name.as_str())
                })
            });
            if let Some(p) = prior.filter(|p| p.name != d.name) {
                renamed_from.insert(p.name.as_str());
            }
            let observed = observed
                .node(&d.name)
                .filter(|o| o.state != NodeState::Unreachable)
                .or_else(|| {
                    prior
                        .and_then(|p| observed.node(&p.name))
                        .or_else(|| observed.node(&d.name))
                });
            Match {
                desired: d,
                prior,
                observed,
            }
        })
        .collect();

    // Nodes leaving: in the inventory, not in Git (and not renamed), or changing role.
    let mut leaving: Vec<Leaving<'_>> = inventory
        .nodes
        .iter()
        .filter(|i| !wanted.contains(i.name.as_str()) && !renamed_from.contains(i.name.as_str()))
        .map(|i| Leaving {
            name: &i.name,
            hostname: &i.hostname,
            role: i.role,
            maintenance: &i.maintenance_address,
            address: &i.address,
            member_id: i.member_id,
            observed: observed.node(&i.name),
            role_change: false,
        })
        .collect();
    for m in &matches {
        if let Some(prior) = m.prior
            && prior.role != m.desired.role
            && m.state() == NodeState::Configured
        {
            leaving.push(Leaving {
                name: &m.desired.name,
                hostname: &prior.hostname,
                role: prior.role,
                maintenance: &m.desired.maintenance_address,
                address: &prior.address,
                member_id: prior.member_id,
                observed: m.observed,
                role_change: true,
            });
        }
    }

    let configured_cps: Vec<&Match<'_>> = matches
        .iter()
        .filter(|m| m.desired.role == Role::Controlplane && m.state() == NodeState::Configured)
        .filter(|m| !leaving.iter().any(|l| l.name == m.desired.name))
        .collect();
    let any_configured_cp = configured_cps.len()
        + leaving
            .iter()
            .filter(|l| {
                l.role == Role::Controlplane
                    && l.observed.is_some_and(|o| o.state == NodeState::Configured)
            })
            .count();
    if any_configured_cp == 0 || observed.etcd.is_none() {
        return Err(Refusal::NotBootstrapped);
    }
    let etcd = observed.etcd.clone().unwrap_or_default();
    let kube = observed.kubernetes.as_ref();

    refuse_bad_paths(desired, &matches, inventory)?;

    let mut plan = Plan::default();
    let mut members: Vec<String> = etcd.voters().map(|m| m.name.clone()).collect();
    members.sort();

    // --- removals: workers first, then control planes one at a time, leader last.
    // A dead member goes first (through a peer): while it is listed, the healthy members left
    // after a live one leaves might be no majority, and the scale-in would wait for the dead.
    leaving.sort_by_key(|l| {
        (
            l.role == Role::Controlplane,
            l.observed.is_some_and(|o| o.state == NodeState::Configured),
            etcd.leads(l.member_id, l.hostname, l.address),
            l.name,
        )
    });
    for l in &leaving {
        if l.role == Role::Controlplane {
            if configured_cps.is_empty() {
                return Err(Refusal::Quorum(format!(
                    "removing {} would remove the last etcd member; add its replacement first",
                    l.name
                )));
            }
            remove_control_plane(
                &mut plan,
                l,
                &etcd,
                &mut members,
                &configured_cps,
                desired,
                kube,
            )?;
        } else if desired.reset_on_removal || l.role_change {
            reset_node(&mut plan, l, "left Git", kube, true);
        }
        // A machine that left Git must be seen wiped: one that does not answer may still run
        // its config with the cluster's keys, so the cluster is not converged while it is out
        // of sight. One found in maintenance mode is done (the gate drops it from the record).
        let state = l.observed.map(|o| o.state);
        if !l.role_change && desired.reset_on_removal {
            match state {
                Some(NodeState::Maintenance) => plan.steps.push(step(
                    l.name,
                    Action::WaitMaintenance {
                        address: l.maintenance.to_string(),
                    },
                    "left Git and is back in maintenance mode",
                    NONE,
                )),
                Some(NodeState::Configured) => {}
                _ => plan.waiting.push(format!(
                    "{}: left Git but does not answer; it is reset when it answers again",
                    l.name
                )),
            }
        }
    }

    // --- additions: nodes in maintenance mode (new, reset, or changing role).
    let mut adds: Vec<&Match<'_>> = matches
        .iter()
        .filter(|m| {
            m.state() == NodeState::Maintenance
                || leaving
                    .iter()
                    .any(|l| l.role_change && l.name == m.desired.name)
        })
        .collect();
    adds.sort_by_key(|m| {
        (
            m.desired.role != Role::Controlplane,
            m.desired.name.as_str(),
        )
    });
    for m in &adds {
        add_node(&mut plan, m, desired, &etcd, &mut members, kube)?;
    }
    for m in &matches {
        if m.state() == NodeState::Unreachable
            && !adds.iter().any(|a| a.desired.name == m.desired.name)
        {
            plan.waiting.push(format!(
                "{}: unreachable at {} and at its maintenance address {}",
                m.desired.name,
                m.desired.address(),
                m.desired.maintenance_address
            ));
        }
    }

    // --- Talos upgrades: configured nodes on another version; control planes first, leader last.
    let added: BTreeSet<&str> = adds.iter().map(|m| m.desired.name.as_str()).collect();
    // A control plane in Git that etcd does not list as a started voter (a join that stalled, a
    // member removed behind vixen's back) is not converged, and the plan says so.
    for m in configured_cps
        .iter()
        .filter(|m| !added.contains(m.desired.name.as_str()))
    {
        let why = match m.member(&etcd) {
            Some(mem) if mem.is_learner => "its etcd member is still a learner",
            Some(mem) if !mem.started => "its etcd member has not started",
            Some(_) => continue,
            None => "etcd does not list its member",
        };
        plan.waiting
            .push(format!("{}: configured, but {why}", m.desired.name));
    }
    let mut upgrades: Vec<&Match<'_>> = matches
        .iter()
        .filter(|m| m.state() == NodeState::Configured && !added.contains(m.desired.name.as_str()))
        .filter(|m| {
            m.observed
                .and_then(|o| o.talos_version)
                .is_some_and(|v| v != desired.talos_version)
        })
        .collect();
    upgrades.sort_by_key(|m| {
        (
            m.desired.role != Role::Controlplane,
            m.leads(&etcd),
            m.desired.name.as_str(),
        )
    });

    // --- Nodes vixen left cordoned (a run stopped at their readiness gate): uncordoned once
    // Ready, before anything else is disrupted. Nodes about to be upgraded get it with theirs.
    if let Some(k) = kube {
        for m in &matches {
            let name = m.desired.name.as_str();
            if m.state() == NodeState::Configured
                && !added.contains(name)
                && !upgrades.iter().any(|u| u.desired.name == name)
                && k.node(&m.desired.hostname)
                    .is_some_and(|n| n.cordoned_by_vixen)
            {
                let node_name = m.desired.hostname.clone();
                plan.steps.push(step(
                    name,
                    Action::WaitNodeReady {
                        node_name: node_name.clone(),
                        version: None,
                    },
                    "vixen left it cordoned: it must be Ready before it takes pods again",
                    NONE,
                ));
                plan.steps.push(step(
                    name,
                    Action::Uncordon { node_name },
                    "Ready again",
                    NONE,
                ));
            }
        }
    }
    let changed = |m: &Match<'_>| {
        m.prior
            .is_none_or(|p| p.config.whole != m.desired.config.whole)
    };
    // A node that moves and upgrades in one commit moves first: every upgrade step talks to the
    // node at its address in Git, where it answers only once its new config is applied.
    let mut moved_first: BTreeSet<&str> = BTreeSet::new();
    for m in &upgrades {
        if changed(m) && m.observed.is_some_and(|o| o.address != m.desired.address()) {
            let talos = m.observed.and_then(|o| o.talos_version);
            change_config(&mut plan, m, desired, members.len(), kube, talos);
            moved_first.insert(m.desired.name.as_str());
        }
        upgrade_node(&mut plan, m, desired, &etcd, members.len(), kube);
    }

    // --- config changes on configured nodes, and reboots still owed for a config applied live on
    // Talos 1.14+ (an upgrade planned above reboots the node anyway); control planes first.
    let upgraded: BTreeSet<&str> = upgrades.iter().map(|m| m.desired.name.as_str()).collect();
    let mut changes: Vec<&Match<'_>> = matches
        .iter()
        .filter(|m| m.state() == NodeState::Configured && !added.contains(m.desired.name.as_str()))
        .filter(|m| !moved_first.contains(m.desired.name.as_str()))
        .filter(|m| {
            m.prior.is_none_or(|p| {
                p.config.whole != m.desired.config.whole
                    || (p.reboot_pending && !upgraded.contains(m.desired.name.as_str()))
            }) || (desired.drift == DriftPolicy::Correct && drift(m).is_some())
        })
        .collect();
    changes.sort_by_key(|m| {
        (
            m.desired.role != Role::Controlplane,
            m.desired.name.as_str(),
        )
    });
    // "Converged" means the Nodes report the Kubernetes version: a node whose config is applied
    // but whose kubelet (or, on a control plane, whose static pods) still report another one is
    // waited for (a gate, no call to Talos), before any other node's change: a retry after a
    // gate that timed out waits there again instead of going on to the next node.
    for m in &matches {
        let name = m.desired.name.as_str();
        if m.state() == NodeState::Configured
            && !added.contains(name)
            && !changes.iter().any(|c| c.desired.name == name)
            && !plan.steps.iter().any(|s| s.node == name)
        {
            kubelet_gate(&mut plan, m, desired, kube);
        }
    }
    for m in &changes {
        // The version the node runs when its change is applied: an upgrade comes first.
        let talos = if upgraded.contains(m.desired.name.as_str()) {
            Some(desired.talos_version)
        } else {
            m.observed.and_then(|o| o.talos_version)
        };
        change_config(&mut plan, m, desired, members.len(), kube, talos);
        kubelet_gate(&mut plan, m, desired, kube);
    }
    Ok(plan)
}

/// A node on its way out (left Git, or changing role).
struct Leaving<'a> {
    name: &'a str,
    hostname: &'a str,
    role: Role,
    maintenance: &'a str,
    /// Where vixen last reached it.
    address: &'a str,
    /// Its etcd member, as recorded when it joined.
    member_id: Option<u64>,
    observed: Option<&'a ObservedNode>,
    role_change: bool,
}

fn refuse_bad_paths(
    desired: &Desired,
    matches: &[Match<'_>],
    inventory: &Inventory,
) -> Result<(), Refusal> {
    for m in matches {
        let Some(current) = m
            .observed
            .filter(|o| o.state == NodeState::Configured)
            .and_then(|o| o.talos_version)
        else {
            continue;
        };
        if let Some(reason) = version::talos_upgrade_problem(current, desired.talos_version) {
            return Err(Refusal::UpgradePath {
                node: m.desired.name.clone(),
                reason,
            });
        }
        if let Some(problem) = version::compatibility_problem(current, desired.kubernetes_version) {
            return Err(Refusal::KubernetesPath(format!(
                "{problem} (node {} runs it now); upgrade Talos first, in its own commit",
                m.desired.name
            )));
        }
    }
    if let Some(from) = inventory
        .kubernetes_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        && let Some(problem) = version::kubernetes_upgrade_problem(from, desired.kubernetes_version)
    {
        return Err(Refusal::KubernetesPath(problem));
    }
    Ok(())
}
