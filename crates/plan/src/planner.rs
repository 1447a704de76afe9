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
//! Identity: a node is its name in Git; a node whose name changed but whose maintenance address
//! matches an inventory entry is the same machine renamed (never reset for it).

use std::collections::BTreeSet;

use crate::action::*;
use crate::state::*;
use vixen_model::version;

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

/// After a config change (or none), when Kubernetes lists the node with another kubelet
/// version than Git's: wait until the Node reports Git's version and is Ready, before the next
/// node, as `talosctl upgrade-k8s` waits for each kubelet.
fn kubelet_gate(plan: &mut Plan, m: &Match<'_>, desired: &Desired, kube: Option<&KubeView>) {
    let want = format!("v{}", desired.kubernetes_version);
    let Some(node) = kube.and_then(|k| k.node(&m.desired.hostname)) else {
        return;
    };
    let kubelet_off = !node.kubelet_version.is_empty() && node.kubelet_version != want;
    // Listed static pods that are not all Ready on Git's version (none listed: no gate).
    let pods_off = m.desired.role == Role::Controlplane
        && !node.static_pods.is_empty()
        && !crate::state::static_pods_on(&node.static_pods, &want);
    if !kubelet_off && !pods_off {
        return;
    }
    let reason = if kubelet_off {
        format!(
            "Kubernetes {} -> {want}: the kubelet must report it before the next node",
            node.kubelet_version
        )
    } else {
        format!(
            "Kubernetes {want}: kube-apiserver, kube-controller-manager and kube-scheduler \
             must be Ready on it before the next node"
        )
    };
    plan.steps.push(step(
        &m.desired.name,
        Action::WaitKubernetes {
            node_name: m.desired.hostname.clone(),
            version: want.clone(),
        },
        reason,
        NONE,
    ));
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

fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

fn remove_control_plane(
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

fn reset_node(
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

/// Cordon and drain before a disruption, when Kubernetes knows the node.
fn drain(plan: &mut Plan, name: &str, hostname: &str, kube: Option<&KubeView>, why: &str) {
    if kube.is_some_and(|k| k.node(hostname).is_some()) {
        plan.steps.push(step(
            name,
            Action::Drain {
                node_name: hostname.to_string(),
            },
            format!("{why}: its pods move first"),
            NONE,
        ));
    }
}

/// After a disruption: the Node must be Ready (on `version`) before it is uncordoned.
fn back_in_kubernetes(
    plan: &mut Plan,
    name: &str,
    hostname: &str,
    kube: Option<&KubeView>,
    version: Option<String>,
) {
    if kube.is_some_and(|k| k.node(hostname).is_some()) {
        plan.steps.push(step(
            name,
            Action::WaitNodeReady {
                node_name: hostname.to_string(),
                version,
            },
            "Kubernetes must see the node Ready before the next one",
            NONE,
        ));
        plan.steps.push(step(
            name,
            Action::Uncordon {
                node_name: hostname.to_string(),
            },
            "Ready: it takes pods again",
            NONE,
        ));
    }
}

fn add_node(
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

fn upgrade_node(
    plan: &mut Plan,
    m: &Match<'_>,
    desired: &Desired,
    etcd: &EtcdView,
    members: usize,
    kube: Option<&KubeView>,
) {
    let d = m.desired;
    let from = m
        .observed
        .and_then(|o| o.talos_version)
        .expect("filtered on a version");
    let cp = d.role == Role::Controlplane;
    let image = desired.installer_image.clone();
    let to = format!("Talos v{from} -> v{}", desired.talos_version);
    // Talos 1.13+: LifecycleService.Upgrade installs an image that must already be in the
    // containerd store, and does not reboot (talosctl 1.13 pulls first, then reboots). Pulling
    // and installing disrupt nothing, so they go before the drain.
    let lifecycle = from.minor_pair() >= (1, 13);
    if lifecycle {
        plan.steps.push(step(
            &d.name,
            Action::PullImage {
                image: image.clone(),
            },
            format!("{to}: the installer image must be in the node's store"),
            NONE,
        ));
        plan.steps.push(step(
            &d.name,
            Action::LifecycleUpgrade {
                image: image.clone(),
            },
            format!("{to}: install on the inactive partition"),
            NONE,
        ));
    }
    if cp {
        plan.steps.push(step(
            &d.name,
            Action::CheckUpgradeSafe,
            "etcd must keep quorum while this member reboots",
            NONE,
        ));
        if members > 1 && m.leads(etcd) {
            plan.steps.push(step(
                &d.name,
                Action::ForfeitLeadership,
                "it leads etcd: hand over before rebooting",
                ETCD,
            ));
        }
    }
    drain(plan, &d.name, &d.hostname, kube, "upgrade");
    if lifecycle {
        plan.steps.push(step(
            &d.name,
            Action::Reboot,
            format!("{to}: boot the new version"),
            REBOOT,
        ));
    } else {
        plan.steps
            .push(step(&d.name, Action::Upgrade { image }, to, REBOOT));
    }
    plan.steps.push(step(
        &d.name,
        Action::WaitReady {
            address: d.address().to_string(),
            version: Some(format!("v{}", desired.talos_version)),
        },
        "the node must report the new version and healthy services",
        NONE,
    ));
    if cp {
        plan.steps.push(step(
            &d.name,
            Action::WaitEtcdMember,
            "every member started, none a learner",
            NONE,
        ));
    }
    back_in_kubernetes(
        plan,
        &d.name,
        &d.hostname,
        kube,
        Some(format!("v{}", desired.talos_version)),
    );
    plan.steps.push(step(
        &d.name,
        Action::Stabilize {
            millis: desired.stabilization.as_millis() as u64,
        },
        "stabilization wait before the next node",
        NONE,
    ));
}

/// Drift seen on a node vixen applied this very config to (a node whose digest changed gets
/// its new config anyway).
fn drift<'a>(m: &Match<'a>) -> Option<&'a Drift> {
    m.prior
        .filter(|p| p.config.whole == m.desired.config.whole)
        .and(m.observed)
        .and_then(|o| o.drift.as_ref())
}

fn change_config(
    plan: &mut Plan,
    m: &Match<'_>,
    desired: &Desired,
    members: usize,
    kube: Option<&KubeView>,
    talos: Option<Version>,
) {
    let d = m.desired;
    let at = m
        .observed
        .map_or_else(|| d.address().to_string(), |o| o.address.clone());
    // Something to apply: Git changed, or the running config drifted from it.
    let changed = m.prior.is_none_or(|p| p.config.whole != d.config.whole) || drift(m).is_some();
    let owed = m.prior.is_some_and(|p| p.reboot_pending);
    let (reboot, what) = match (m.prior, drift(m)) {
        // Changed out of band: Talos' own dry run said whether going back needs a reboot.
        (Some(_), Some(drift)) => (
            drift.reboot || owed,
            "drifted: the running config is not the one from Git".to_string(),
        ),
        (Some(_), None) if !changed => (
            true,
            "applied live before; it takes effect at the next boot".to_string(),
        ),
        (Some(p), None) => (
            needs_reboot(&p.config, &d.config) || owed,
            changed_sections(&p.config, &d.config).join(", "),
        ),
        // Nothing recorded (vixen's state was lost): let Talos decide, treated as disruptive.
        (None, _) => (
            true,
            "unknown (no record of the applied config)".to_string(),
        ),
    };
    let moved = at != d.address();
    // Talos 1.14+: the config goes in live and vixen reboots the node itself (so it does for a
    // reboot still owed when nothing is left to apply).
    let own_reboot = reboot && (apply_never_reboots(talos) || !changed);
    let mode = if own_reboot {
        ApplyMode::NoReboot
    } else if m.prior.is_none() {
        ApplyMode::Auto
    } else if reboot {
        ApplyMode::Reboot
    } else {
        ApplyMode::NoReboot
    };
    if reboot && d.role == Role::Controlplane && members > 1 {
        plan.steps.push(step(
            &d.name,
            Action::CheckUpgradeSafe,
            "etcd must keep quorum while this member reboots",
            NONE,
        ));
    }
    let reason = if moved {
        format!(
            "config changed ({what}); moves from {at} to {}",
            d.address()
        )
    } else {
        format!("config changed ({what})")
    };
    if reboot {
        drain(
            plan,
            &d.name,
            &d.hostname,
            kube,
            "the new config reboots it",
        );
    }
    if changed {
        plan.steps.push(step(
            &d.name,
            Action::ApplyConfig {
                mode,
                address: at,
                maintenance: false,
                reboot_after: own_reboot,
            },
            reason,
            if reboot && !own_reboot { REBOOT } else { NONE },
        ));
    }
    if own_reboot {
        if moved {
            plan.steps.push(step(
                &d.name,
                Action::WaitReady {
                    address: d.address().to_string(),
                    version: None,
                },
                "follow the node to its new address before rebooting it",
                NONE,
            ));
        }
        plan.steps.push(step(
            &d.name,
            Action::Reboot,
            if changed {
                format!(
                    "config changed ({what}): Talos {} applies it without a reboot, the change \
                     takes effect at the next boot",
                    talos.map_or_else(String::new, |v| format!("v{v}"))
                )
            } else {
                format!("the config was {what}")
            },
            REBOOT,
        ));
    }
    if reboot || moved {
        plan.steps.push(step(
            &d.name,
            Action::WaitReady {
                address: d.address().to_string(),
                version: None,
            },
            if moved {
                "follow the node to its new address"
            } else {
                "back after the reboot"
            },
            NONE,
        ));
    }
    if reboot {
        if d.role == Role::Controlplane {
            plan.steps.push(step(
                &d.name,
                Action::WaitEtcdMember,
                "every member started, none a learner",
                NONE,
            ));
        }
        back_in_kubernetes(plan, &d.name, &d.hostname, kube, None);
        plan.steps.push(step(
            &d.name,
            Action::Stabilize {
                millis: desired.stabilization.as_millis() as u64,
            },
            "stabilization wait before the next node",
            NONE,
        ));
    }
}

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
