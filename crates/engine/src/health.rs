//! The health model behind the interlocks: is it safe, now, to take a control plane or its etcd
//! member down?
//!
//! A member is healthy when its own node answers EtcdStatus with no error, and its raft index is
//! within [`MAX_RAFT_LAG`] of the leader's. Members are found by ID and peer URL (the host of
//! the peer URL is the node's address), with the hostname only as a fallback, so a renamed node
//! is still the same member.
//!
//! The rule, checked before every step that disrupts a control plane:
//! - taking the node down (reboot, upgrade, reset): every other member is healthy and a voter,
//!   and the members that stay up are a majority of the member list; a single control plane may
//!   go down (there is nothing to keep), two never (the other alone is no majority);
//! - taking the member out (leave, remove): the healthy members that stay are a majority of the
//!   smaller list.

use vixen_plan::{Desired, Disruption, Inventory, Role, url_host};
use vixen_talos::EtcdMember;

use crate::ports::{KubeGates, NodeApi};

/// A member this far behind the leader's raft index is not healthy (still catching up).
pub const MAX_RAFT_LAG: u64 = 1000;

/// One member and how it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberHealth {
    /// Member ID.
    pub id: u64,
    /// Member name (a hostname).
    pub name: String,
    /// Not a voter.
    pub learner: bool,
    /// Hosts of its peer URLs (its node's addresses).
    pub peer_hosts: Vec<String>,
    /// Why it is not healthy (`None`: healthy).
    pub problem: Option<String>,
}

/// etcd's members and the health of each, as seen now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EtcdHealth {
    /// Every member.
    pub members: Vec<MemberHealth>,
}

/// Reads the member list through the first of `control_planes` that answers, then asks each
/// member's own node for its status. `address_of` maps a member name to more addresses to try
/// (where vixen knows that hostname's node). `None` when no control plane answers.
pub async fn etcd_health(
    talos: &impl NodeApi,
    control_planes: &[String],
    address_of: impl Fn(&str) -> Vec<String>,
) -> Option<EtcdHealth> {
    let mut members: Option<Vec<EtcdMember>> = None;
    for a in control_planes {
        if let Ok(list) = talos.etcd_members(a).await {
            members = Some(list);
            break;
        }
    }
    let members = members?;
    let mut statuses = Vec::new();
    for m in &members {
        let mut tried: Vec<String> = m
            .peer_urls
            .iter()
            .map(|u| url_host(u).to_string())
            .collect();
        tried.extend(address_of(&m.hostname));
        tried.dedup();
        let mut found = None;
        for a in &tried {
            if let Ok(st) = talos.etcd_status(a).await
                && st.member_id == m.id
            {
                found = Some(st);
                break;
            }
        }
        statuses.push(found);
    }
    let leader_index = statuses
        .iter()
        .flatten()
        .filter(|s| s.leader == s.member_id)
        .map(|s| s.raft_index)
        .max();
    let leader_index = leader_index
        .or_else(|| statuses.iter().flatten().map(|s| s.raft_index).max())
        .unwrap_or(0);
    let members = members
        .iter()
        .zip(statuses)
        .map(|(m, st)| {
            let name = if m.hostname.is_empty() {
                format!("{:x}", m.id)
            } else {
                m.hostname.clone()
            };
            let problem = match st {
                _ if m.client_urls.is_empty() => {
                    Some(format!("{name}'s etcd member has not started"))
                }
                None => Some(format!("{name}'s etcd does not answer")),
                Some(s) if !s.errors.is_empty() => Some(format!(
                    "{name}'s etcd reports an error: {}",
                    s.errors.join("; ")
                )),
                Some(s) if s.raft_index + MAX_RAFT_LAG < leader_index => Some(format!(
                    "{name}'s etcd is {} entries behind the leader",
                    leader_index - s.raft_index
                )),
                Some(_) => None,
            };
            let peer_hosts = m
                .peer_urls
                .iter()
                .map(|u| url_host(u).to_string())
                .collect();
            MemberHealth {
                id: m.id,
                name,
                learner: m.is_learner,
                peer_hosts,
                problem,
            }
        })
        .collect();
    Some(EtcdHealth { members })
}

impl EtcdHealth {
    /// The member of the node called `hostname` at `address` (by peer URL first).
    pub fn member_of(&self, hostname: &str, addresses: &[String]) -> Option<&MemberHealth> {
        let by_url = self
            .members
            .iter()
            .find(|m| m.peer_hosts.iter().any(|h| addresses.contains(h)));
        by_url.or_else(|| self.members.iter().find(|m| m.name == hostname))
    }

    /// Why taking `target` (a member ID, or `None` when the node is no member) down in the way
    /// `how` says is unsafe now; `None` when it is safe. `what` names the step for the message
    /// ("rebooting cp-3").
    pub fn refuse(&self, target: Option<u64>, how: Disruption, what: &str) -> Option<String> {
        let target = target?;
        let voters: Vec<&MemberHealth> = self.members.iter().filter(|m| !m.learner).collect();
        let others: Vec<&MemberHealth> = self.members.iter().filter(|m| m.id != target).collect();
        let healthy_others = others
            .iter()
            .filter(|m| m.problem.is_none() && !m.learner)
            .count();
        let first_problem = || {
            others
                .iter()
                .find_map(|m| {
                    m.problem
                        .clone()
                        .or_else(|| m.learner.then(|| format!("{} is still a learner", m.name)))
                })
                .unwrap_or_default()
        };
        match how {
            Disruption::None => None,
            Disruption::Node => {
                let n = voters.len();
                if n <= 1 {
                    return None;
                }
                if n == 2 {
                    return Some(format!(
                        "etcd has exactly 2 members: {what} would leave 1 of 2 voters, no majority"
                    ));
                }
                let all_healthy = others.iter().all(|m| m.problem.is_none() && !m.learner);
                if !all_healthy || healthy_others < n / 2 + 1 {
                    return Some(format!(
                        "{}; {what} now would leave {healthy_others} of {n} voters",
                        first_problem()
                    ));
                }
                None
            }
            Disruption::Member => {
                let n = self.members.len().saturating_sub(1);
                if n == 0 {
                    return Some(format!("{what} would remove the last etcd member"));
                }
                if healthy_others < n / 2 + 1 {
                    return Some(format!(
                        "{}; {what} now would leave {healthy_others} healthy of {n} members",
                        first_problem()
                    ));
                }
                None
            }
        }
    }
}

/// The workers vixen configured, in Git, other than `except`, that are down now: their Node
/// is not Ready (when Kubernetes answers and lists it), else their Talos API does not answer.
/// A worker never installed yet is not counted: it was never part of the cluster's capacity.
pub async fn workers_down(
    talos: &impl NodeApi,
    kube: &impl KubeGates,
    desired: &Desired,
    inv: &Inventory,
    control_planes: &[String],
    except: &str,
) -> Vec<String> {
    let view = kube.view(control_planes).await;
    let mut down = Vec::new();
    for w in desired
        .nodes
        .iter()
        .filter(|n| n.role == Role::Worker && n.name != except)
    {
        let Some(known) = inv.node(&w.name).filter(|i| i.role == Role::Worker) else {
            continue;
        };
        let is_down = match view.as_ref().and_then(|v| v.node(&w.hostname)) {
            Some(node) => !node.ready,
            None => {
                talos.version(w.address()).await.is_err()
                    && talos.version(&known.address).await.is_err()
            }
        };
        if is_down {
            down.push(w.name.clone());
        }
    }
    down
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: u64, problem: Option<&str>) -> MemberHealth {
        MemberHealth {
            id,
            name: format!("cp-{id}"),
            learner: false,
            peer_hosts: vec![],
            problem: problem.map(str::to_string),
        }
    }

    #[test]
    fn urls_give_their_host() {
        assert_eq!(url_host("https://127.0.10.1:2380"), "127.0.10.1");
        assert_eq!(url_host("https://[fd00::1]:2380"), "fd00::1");
        assert_eq!(url_host("127.0.0.9"), "127.0.0.9");
    }

    /// The table of the rule: (members, target, disruption, refused).
    #[test]
    fn disrupting_a_member_needs_the_others_healthy_and_a_majority() {
        let down = Some("cp-2's etcd does not answer");
        let cases: Vec<(Vec<MemberHealth>, u64, Disruption, bool)> = vec![
            (
                vec![m(1, None), m(2, None), m(3, None)],
                3,
                Disruption::Node,
                false,
            ),
            // One member down: rebooting another leaves 1 of 3 (the incident of issue 14).
            (
                vec![m(1, None), m(2, down), m(3, None)],
                3,
                Disruption::Node,
                true,
            ),
            (vec![m(1, None), m(2, None)], 2, Disruption::Node, true),
            (vec![m(1, None)], 1, Disruption::Node, false),
            // Five members, one down: still refused (every other member must be healthy).
            (
                vec![m(1, None), m(2, down), m(3, None), m(4, None), m(5, None)],
                5,
                Disruption::Node,
                true,
            ),
            // Removing the dead member itself keeps 2 healthy of 2.
            (
                vec![m(1, None), m(2, down), m(3, None)],
                2,
                Disruption::Member,
                false,
            ),
            // A healthy member leaving while another is dead leaves 1 healthy of 2.
            (
                vec![m(1, None), m(2, down), m(3, None)],
                3,
                Disruption::Member,
                true,
            ),
            (vec![m(1, None)], 1, Disruption::Member, true),
        ];
        for (members, target, how, refused) in cases {
            let h = EtcdHealth {
                members: members.clone(),
            };
            let got = h.refuse(Some(target), how, "rebooting it");
            assert_eq!(
                got.is_some(),
                refused,
                "{members:?} target {target} {how:?}: {got:?}"
            );
        }
        let h = EtcdHealth {
            members: vec![m(1, None), m(2, down), m(3, None)],
        };
        assert_eq!(
            h.refuse(Some(3), Disruption::Node, "rebooting cp-3")
                .unwrap(),
            "cp-2's etcd does not answer; rebooting cp-3 now would leave 1 of 3 voters"
        );
        assert_eq!(
            h.refuse(None, Disruption::Node, "x"),
            None,
            "a node that is no member"
        );
    }
}
