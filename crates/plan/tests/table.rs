//! Table-driven planner tests: one situation per test, named after it. Each asserts the exact
//! order of the steps that matter (who, what) and that nothing else touches a node.

use std::time::Duration;

use vixen_plan::*;

fn digest(tag: &str, sections: &[(&str, &str)]) -> ConfigDigest {
    ConfigDigest {
        whole: format!("{tag}:{sections:?}"),
        sections: sections
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn base_sections() -> Vec<(&'static str, &'static str)> {
    vec![
        ("machine.network", "n1"),
        ("machine.install", "i1"),
        ("machine.kubelet", "k1"),
        ("cluster", "c1"),
        ("machine.files", "f1"),
    ]
}

/// A healthy cluster: `cps` control planes and `workers` workers, all configured on v1.11.6,
/// etcd led by cp-1, inventory matching Git.
struct World {
    desired: Desired,
    observed: Observed,
    inventory: Inventory,
}

fn world(cps: usize, workers: usize) -> World {
    let mut desired = Desired {
        talos_version: "v1.11.6".parse().unwrap(),
        installer_image: "ghcr.io/siderolabs/installer:v1.11.6".into(),
        kubernetes_version: "1.34.1".parse().unwrap(),
        nodes: Vec::new(),
        stabilization: Duration::from_secs(30),
        reset_on_removal: true,
        worker_concurrency: 1,
        drift: DriftPolicy::Correct,
        network_rollout: None,
    };
    let mut observed = Observed {
        nodes: Vec::new(),
        etcd: Some(EtcdView::default()),
        kubernetes: None,
    };
    let mut inventory = Inventory {
        nodes: Vec::new(),
        kubernetes_version: Some("1.34.1".into()),
    };
    for i in 1..=cps {
        add(
            &mut desired,
            &mut observed,
            &mut inventory,
            &format!("cp-{i}"),
            Role::Controlplane,
            i,
            true,
        );
    }
    for i in 1..=workers {
        add(
            &mut desired,
            &mut observed,
            &mut inventory,
            &format!("worker-{i}"),
            Role::Worker,
            10 + i,
            true,
        );
    }
    if cps > 0 {
        observed.etcd.as_mut().unwrap().leader = Some(1);
    }
    World {
        desired,
        observed,
        inventory,
    }
}

fn add(
    desired: &mut Desired,
    observed: &mut Observed,
    inventory: &mut Inventory,
    name: &str,
    role: Role,
    n: usize,
    configured: bool,
) {
    let config = digest(name, &base_sections());
    let node = DesiredNode {
        name: name.into(),
        hostname: name.into(),
        role,
        maintenance_address: format!("127.0.10.{}", 100 + n),
        management_addresses: vec![format!("127.0.10.{n}")],
        config: config.clone(),
    };
    let (address, state) = if configured {
        (node.management_addresses[0].clone(), NodeState::Configured)
    } else {
        (node.maintenance_address.clone(), NodeState::Maintenance)
    };
    observed.nodes.push(ObservedNode {
        name: name.into(),
        address,
        state,
        talos_version: Some("v1.11.6".parse().unwrap()),
        healthy: true,
        drift: None,
    });
    if configured {
        inventory.nodes.push(InventoryNode {
            name: name.into(),
            hostname: name.into(),
            role,
            maintenance_address: node.maintenance_address.clone(),
            address: node.management_addresses[0].clone(),
            config,
            member_id: (role == Role::Controlplane).then_some(n as u64),
            reboot_pending: false,
        });
        if role == Role::Controlplane {
            observed.etcd.as_mut().unwrap().members.push(Member {
                id: n as u64,
                name: name.into(),
                is_learner: false,
                started: true,
                peer_urls: vec![format!("https://127.0.10.{n}:2380")],
            });
        }
    }
    desired.nodes.push(node);
}

impl World {
    fn plan(&self) -> Result<Plan, Refusal> {
        plan(&self.desired, &self.observed, &self.inventory)
    }
    fn drop_from_git(&mut self, name: &str) {
        self.desired.nodes.retain(|n| n.name != name);
    }
    fn node(&mut self, name: &str) -> &mut DesiredNode {
        self.desired
            .nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap()
    }
    fn observed(&mut self, name: &str) -> &mut ObservedNode {
        self.observed
            .nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap()
    }
    fn new_node(&mut self, name: &str, role: Role, n: usize) {
        add(
            &mut self.desired,
            &mut self.observed,
            &mut self.inventory,
            name,
            role,
            n,
            false,
        );
    }
}

/// `(node, short action)` for every step, for readable assertions.
fn summary(plan: &Plan) -> Vec<(String, String)> {
    plan.steps
        .iter()
        .map(|s| {
            let a = match &s.action {
                Action::ApplyConfig { mode, .. } => format!("apply:{mode:?}"),
                Action::WaitReady { .. } => "ready".into(),
                Action::WaitEtcdMember => "member".into(),
                Action::ForfeitLeadership => "forfeit".into(),
                Action::LeaveEtcd => "leave".into(),
                Action::RemoveMember { .. } => "remove-member".into(),
                Action::CheckMembers { expected } => format!("members={}", expected.join("+")),
                Action::Reset { graceful } => format!("reset:{graceful}"),
                Action::WaitMaintenance { .. } => "maintenance".into(),
                Action::Upgrade { .. } => "upgrade:legacy".into(),
                Action::PullImage { .. } => "pull".into(),
                Action::LifecycleUpgrade { .. } => "upgrade:lifecycle".into(),
                Action::Reboot => "reboot".into(),
                Action::CheckUpgradeSafe => "upgrade-safe".into(),
                Action::Stabilize { .. } => "stabilize".into(),
                Action::Drain { node_name } => format!("drain:{node_name}"),
                Action::WaitNodeReady {
                    version: Some(v), ..
                } => format!("node-ready:{v}"),
                Action::WaitNodeReady { version: None, .. } => "node-ready".into(),
                Action::Uncordon { node_name } => format!("uncordon:{node_name}"),
                Action::DeleteNode { node_name } => format!("delete-node:{node_name}"),
                Action::WaitKubernetes { version, .. } => format!("kubelet:{version}"),
            };
            (s.node.clone(), a)
        })
        .collect()
}

fn s(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn mutated_nodes(plan: &Plan) -> std::collections::BTreeSet<String> {
    plan.mutating().map(|s| s.node.clone()).collect()
}

#[test]
fn steady_state_plans_nothing() {
    let w = world(3, 2);
    let plan = w.plan().unwrap();
    assert!(plan.steps.is_empty(), "{plan:#?}");
    assert!(plan.waiting.is_empty());
}

#[test]
fn add_worker_touches_only_the_new_node() {
    let mut w = world(3, 2);
    w.new_node("worker-3", Role::Worker, 13);
    let plan = w.plan().unwrap();
    assert_eq!(
        summary(&plan),
        s(&[("worker-3", "apply:Auto"), ("worker-3", "ready")])
    );
    assert!(
        matches!(&plan.steps[0].action, Action::ApplyConfig { maintenance: true, address, .. } if address == "127.0.10.113")
    );
}

#[test]
fn remove_worker_resets_that_node_alone() {
    let mut w = world(3, 2);
    w.drop_from_git("worker-2");
    let plan = w.plan().unwrap();
    assert_eq!(
        summary(&plan),
        s(&[("worker-2", "reset:true"), ("worker-2", "maintenance")])
    );
}

#[test]
fn remove_worker_with_removal_keep_resets_nothing() {
    let mut w = world(3, 2);
    w.desired.reset_on_removal = false;
    w.drop_from_git("worker-2");
    assert!(w.plan().unwrap().steps.is_empty());
}

#[test]
fn scale_control_planes_1_to_3_joins_one_at_a_time() {
    let mut w = world(1, 1);
    w.new_node("cp-2", Role::Controlplane, 2);
    w.new_node("cp-3", Role::Controlplane, 3);
    let plan = w.plan().unwrap();
    assert_eq!(
        summary(&plan),
        s(&[
            ("cp-2", "apply:Auto"),
            ("cp-2", "ready"),
            ("cp-2", "member"),
            ("cp-2", "members=cp-1+cp-2"),
            ("cp-3", "apply:Auto"),
            ("cp-3", "ready"),
            ("cp-3", "member"),
            ("cp-3", "members=cp-1+cp-2+cp-3"),
        ])
    );
}

#[test]
fn scale_in_3_to_1_leader_leaves_last_after_forfeiting() {
    let mut w = world(3, 1);
    // cp-2 leads; cp-2 and cp-3 leave; cp-1 stays.
    w.observed.etcd.as_mut().unwrap().leader = Some(2);
    w.drop_from_git("cp-2");
    w.drop_from_git("cp-3");
    let plan = w.plan().unwrap();
    assert_eq!(
        summary(&plan),
        s(&[
            ("cp-3", "leave"),
            ("cp-3", "members=cp-1+cp-2"),
            ("cp-3", "reset:true"),
            ("cp-3", "maintenance"),
            ("cp-2", "forfeit"),
            ("cp-2", "leave"),
            ("cp-2", "members=cp-1"),
            ("cp-2", "reset:true"),
            ("cp-2", "maintenance"),
        ])
    );
}

#[test]
fn unreachable_leaving_control_plane_is_removed_through_a_peer() {
    let mut w = world(3, 0);
    w.drop_from_git("cp-3");
    w.observed("cp-3").state = NodeState::Unreachable;
    let plan = w.plan().unwrap();
    assert_eq!(
        summary(&plan),
        s(&[("cp-3", "remove-member"), ("cp-3", "members=cp-1+cp-2")])
    );
    assert!(
        matches!(&plan.steps[0].action, Action::RemoveMember { member_id: 3, via } if via == "cp-1")
    );
}

#[test]
fn removal_refused_when_the_others_have_no_quorum() {
    let mut w = world(3, 0);
    w.drop_from_git("cp-3");
    w.observed.etcd.as_mut().unwrap().members[1].started = false;
    let err = w.plan().unwrap_err();
    assert!(matches!(err, Refusal::Quorum(_)), "{err}");
}

#[test]
fn replacing_every_control_plane_at_once_is_refused() {
    let mut w = world(1, 0);
    w.drop_from_git("cp-1");
    w.new_node("cp-9", Role::Controlplane, 9);
    assert!(matches!(w.plan().unwrap_err(), Refusal::Quorum(_)));
}

#[test]
fn nothing_configured_means_not_bootstrapped_and_no_steps() {
    let mut w = world(0, 0);
    w.new_node("cp-1", Role::Controlplane, 1);
    w.observed.etcd = None;
    assert_eq!(w.plan().unwrap_err(), Refusal::NotBootstrapped);
}

#[test]
fn address_change_applies_at_old_address_then_follows_no_reset() {
    let mut w = world(3, 1);
    let n = w.node("cp-2");
    n.management_addresses = vec!["127.0.10.50".into()];
    n.config = digest(
        "cp-2b",
        &[
            ("machine.network", "n2"),
            ("machine.install", "i1"),
            ("machine.kubelet", "k1"),
            ("cluster", "c1"),
            ("machine.files", "f1"),
        ],
    );
    let plan = w.plan().unwrap();
    assert_eq!(
        summary(&plan),
        s(&[("cp-2", "apply:NoReboot"), ("cp-2", "ready")])
    );
    assert!(
        matches!(&plan.steps[0].action, Action::ApplyConfig { address, .. } if address == "127.0.10.2")
    );
    assert!(
        matches!(&plan.steps[1].action, Action::WaitReady { address, .. } if address == "127.0.10.50")
    );
}

#[test]
fn rename_is_matched_by_maintenance_address_and_never_reset() {
    let mut w = world(3, 2);
    let n = w.node("worker-1");
    n.name = "storage-1".into();
    n.hostname = "storage-1".into();
    n.config = digest(
        "storage-1",
        &[
            ("machine.network", "n-renamed"),
            ("machine.install", "i1"),
            ("machine.kubelet", "k1"),
            ("cluster", "c1"),
            ("machine.files", "f1"),
        ],
    );
    let plan = w.plan().unwrap();
    assert_eq!(summary(&plan), s(&[("storage-1", "apply:NoReboot")]));
}

#[test]
fn metadata_change_is_live_and_unchanged_config_makes_no_call() {
    let mut w = world(3, 2);
    let n = w.node("worker-1");
    n.config = digest(
        "w1-labels",
        &[
            ("machine.network", "n1"),
            ("machine.install", "i1"),
            ("machine.kubelet", "k1"),
            ("cluster", "c1"),
            ("machine.files", "f1"),
            ("machine.nodeLabels", "l2"),
        ],
    );
    let plan = w.plan().unwrap();
    assert_eq!(summary(&plan), s(&[("worker-1", "apply:NoReboot")]));
    assert!(!plan.steps[0].risk.reboot);
}

#[test]
fn reboot_needing_change_goes_one_node_at_a_time_with_gates() {
    let mut w = world(3, 0);
    for name in ["cp-1", "cp-2"] {
        let n = w.node(name);
        n.config = digest(
            &format!("{name}-files"),
            &[
                ("machine.network", "n1"),
                ("machine.install", "i1"),
                ("machine.kubelet", "k1"),
                ("cluster", "c1"),
                ("machine.files", "f2"),
            ],
        );
    }
    let plan = w.plan().unwrap();
    assert_eq!(
        summary(&plan),
        s(&[
            ("cp-1", "upgrade-safe"),
            ("cp-1", "apply:Reboot"),
            ("cp-1", "ready"),
            ("cp-1", "member"),
            ("cp-1", "stabilize"),
            ("cp-2", "upgrade-safe"),
            ("cp-2", "apply:Reboot"),
            ("cp-2", "ready"),
            ("cp-2", "member"),
            ("cp-2", "stabilize"),
        ])
    );
}

#[test]
fn talos_upgrade_control_planes_first_leader_last_then_workers() {
    let mut w = world(3, 2);
    w.observed.etcd.as_mut().unwrap().leader = Some(1);
    w.desired.talos_version = "v1.12.2".parse().unwrap();
    w.desired.installer_image = "ghcr.io/siderolabs/installer:v1.12.2".into();
    let plan = w.plan().unwrap();
    let order: Vec<(String, String)> = summary(&plan)
        .into_iter()
        .filter(|(_, a)| a.starts_with("upgrade:") || a == "forfeit")
        .collect();
    assert_eq!(
        order,
        s(&[
            ("cp-2", "upgrade:legacy"),
            ("cp-3", "upgrade:legacy"),
            ("cp-1", "forfeit"),
            ("cp-1", "upgrade:legacy"),
            ("worker-1", "upgrade:legacy"),
            ("worker-2", "upgrade:legacy")
        ])
    );
    // every upgrade is followed by its gates before the next node starts
    let sum = summary(&plan);
    let i = sum
        .iter()
        .position(|x| x == &("cp-2".to_string(), "upgrade:legacy".to_string()))
        .unwrap();
    assert_eq!(
        &sum[i + 1..i + 4],
        &s(&[("cp-2", "ready"), ("cp-2", "member"), ("cp-2", "stabilize")])[..]
    );
}

/// Issue 14: a Talos upgrade and a re-address in one commit. The upgrade steps talk to the node
/// at its address in Git, so the move goes first; without it the upgrade was planned at an
/// address the node does not answer at yet ("etcd does not answer"), forever.
#[test]
fn upgrade_plus_readdress_moves_first_then_upgrades_at_the_new_address() {
    let mut w = world(3, 1);
    w.desired.talos_version = "v1.12.2".parse().unwrap();
    w.desired.installer_image = "ghcr.io/siderolabs/installer:v1.12.2".into();
    for name in ["cp-2", "worker-1"] {
        let n = w.node(name);
        n.management_addresses = vec![format!("127.0.10.{}", if name == "cp-2" { 50 } else { 60 })];
        let tag = format!("{name}-moved");
        n.config = digest(
            &tag,
            &[
                ("machine.network", "n2"),
                ("machine.install", "i1"),
                ("machine.kubelet", "k1"),
                ("cluster", "c1"),
                ("machine.files", "f1"),
            ],
        );
    }
    let plan = w.plan().unwrap();
    let sum = summary(&plan);
    for (name, new) in [("cp-2", "127.0.10.50"), ("worker-1", "127.0.10.60")] {
        let apply = sum
            .iter()
            .position(|x| x == &(name.to_string(), "apply:NoReboot".to_string()))
            .unwrap_or_else(|| panic!("{name} is moved: {sum:?}"));
        let upgrade = sum
            .iter()
            .position(|x| x == &(name.to_string(), "upgrade:legacy".to_string()))
            .unwrap_or_else(|| panic!("{name} is upgraded: {sum:?}"));
        assert!(apply < upgrade, "{name} moves before its upgrade: {sum:?}");
        assert!(
            matches!(&plan.steps[apply + 1].action, Action::WaitReady { address, .. } if address == new),
            "{name} is followed to {new} before the upgrade: {sum:?}"
        );
        // Moved once: no second apply after the upgrade.
        assert_eq!(
            sum.iter()
                .filter(|x| x.0 == name && x.1.starts_with("apply:"))
                .count(),
            1
        );
    }
    // Still one node at a time, and nothing is reset.
    assert!(!sum.iter().any(|(_, a)| a.starts_with("reset")));
}

#[test]
fn talos_1_13_nodes_upgrade_through_lifecycle_service() {
    let mut w = world(1, 0);
    w.observed("cp-1").talos_version = Some("v1.13.0".parse().unwrap());
    w.desired.talos_version = "v1.13.2".parse().unwrap();
    let plan = w.plan().unwrap();
    // Pull, install, then the etcd check and the reboot: three journaled steps, so a crash
    // between them resumes at the right one.
    assert_eq!(
        summary(&plan)[..5],
        s(&[
            ("cp-1", "pull"),
            ("cp-1", "upgrade:lifecycle"),
            ("cp-1", "upgrade-safe"),
            ("cp-1", "reboot"),
            ("cp-1", "ready")
        ])[..]
    );
    assert!(!summary(&plan).iter().any(|(_, a)| a == "upgrade:legacy"));
}

/// Every action is classified once; the reboot-causing ones are fire-once, reads are not
/// mutating, and pulling or installing an image may be sent again after a crash.
#[test]
fn action_classes_say_what_a_crash_may_repeat() {
    let apply = |mode, maintenance| Action::ApplyConfig {
        mode,
        address: "a".into(),
        maintenance,
        reboot_after: false,
    };
    let cases: Vec<(Action, bool, bool, Disruption)> = vec![
        (apply(ApplyMode::Auto, true), true, true, Disruption::None),
        (
            apply(ApplyMode::NoReboot, false),
            true,
            false,
            Disruption::None,
        ),
        (
            apply(ApplyMode::Reboot, false),
            true,
            true,
            Disruption::Node,
        ),
        (apply(ApplyMode::Auto, false), true, true, Disruption::Node),
        (
            Action::Upgrade { image: "i".into() },
            true,
            true,
            Disruption::Node,
        ),
        (Action::Reboot, true, true, Disruption::Node),
        (
            Action::Reset { graceful: true },
            true,
            true,
            Disruption::Node,
        ),
        (
            Action::PullImage { image: "i".into() },
            true,
            false,
            Disruption::None,
        ),
        (
            Action::LifecycleUpgrade { image: "i".into() },
            true,
            false,
            Disruption::None,
        ),
        (Action::LeaveEtcd, true, true, Disruption::Member),
        (
            Action::RemoveMember {
                member_id: 1,
                via: "cp-1".into(),
            },
            true,
            true,
            Disruption::Member,
        ),
        (
            Action::WaitReady {
                address: "a".into(),
                version: None,
            },
            false,
            false,
            Disruption::None,
        ),
        (Action::CheckUpgradeSafe, false, false, Disruption::None),
        (
            Action::Drain {
                node_name: "n".into(),
            },
            true,
            false,
            Disruption::None,
        ),
    ];
    for (action, mutating, fire_once, disrupts) in cases {
        assert_eq!(
            action.class(),
            Class {
                mutating,
                fire_once,
                disrupts
            },
            "{action:?}"
        );
        // The label is the journal's `kind` word.
        let json = serde_json::to_value(&action).unwrap();
        assert_eq!(json["kind"], action.kind().as_str(), "{action:?}");
    }
}

#[test]
fn talos_upgrade_skipping_a_minor_is_refused_naming_the_minor() {
    let mut w = world(3, 0);
    w.desired.talos_version = "v1.13.0".parse().unwrap();
    match w.plan().unwrap_err() {
        Refusal::UpgradePath { reason, .. } => assert!(reason.contains("v1.12.x"), "{reason}"),
        other => panic!("{other}"),
    }
}

#[test]
fn kubernetes_minor_skip_is_refused() {
    let mut w = world(3, 0);
    w.inventory.kubernetes_version = Some("1.32.3".into());
    w.desired.kubernetes_version = "1.34.1".parse().unwrap();
    assert!(matches!(w.plan().unwrap_err(), Refusal::KubernetesPath(_)));
}

#[test]
fn kubernetes_version_the_running_talos_cannot_run_is_refused() {
    let mut w = world(3, 0);
    w.desired.kubernetes_version = "1.35.0".parse().unwrap();
    w.inventory.kubernetes_version = Some("1.34.1".into());
    assert!(matches!(w.plan().unwrap_err(), Refusal::KubernetesPath(_)));
}

#[test]
fn kubernetes_upgrade_is_live_config_control_planes_first() {
    let mut w = world(3, 1);
    w.inventory.kubernetes_version = Some("1.33.4".into());
    for n in &mut w.desired.nodes {
        n.config = digest(
            &format!("{}-k8s", n.name),
            &[
                ("machine.network", "n1"),
                ("machine.install", "i1"),
                ("machine.kubelet", "k2"),
                ("cluster", "c2"),
                ("machine.files", "f1"),
            ],
        );
    }
    let plan = w.plan().unwrap();
    assert_eq!(
        summary(&plan),
        s(&[
            ("cp-1", "apply:NoReboot"),
            ("cp-2", "apply:NoReboot"),
            ("cp-3", "apply:NoReboot"),
            ("worker-1", "apply:NoReboot")
        ])
    );
}

#[test]
fn promote_worker_to_control_plane_resets_that_node_alone_then_joins() {
    let mut w = world(3, 2);
    w.node("worker-2").role = Role::Controlplane;
    // Keep the control-plane count odd in Git: cp-3 leaves at the same time.
    w.drop_from_git("cp-3");
    let plan = w.plan().unwrap();
    assert_eq!(
        mutated_nodes(&plan),
        ["cp-3".to_string(), "worker-2".to_string()].into()
    );
    let sum = summary(&plan);
    let reset = sum
        .iter()
        .position(|x| x == &("worker-2".to_string(), "reset:true".to_string()))
        .unwrap();
    let apply = sum
        .iter()
        .position(|x| x == &("worker-2".to_string(), "apply:Auto".to_string()))
        .unwrap();
    assert!(reset < apply);
    assert!(sum.contains(&("worker-2".into(), "member".into())));
}

#[test]
fn unreachable_desired_node_is_reported_as_waiting_not_touched() {
    let mut w = world(3, 2);
    w.observed("worker-1").state = NodeState::Unreachable;
    let plan = w.plan().unwrap();
    assert!(plan.steps.is_empty());
    assert_eq!(plan.waiting.len(), 1);
}

#[test]
fn healthy_nodes_are_never_reset_whatever_else_changes() {
    // Add, upgrade-free config edits, rename and re-address in one commit: no reset anywhere.
    let mut w = world(3, 2);
    w.new_node("worker-3", Role::Worker, 13);
    w.node("worker-1").management_addresses = vec!["127.0.10.60".into()];
    w.node("worker-1").config = digest("w1-moved", &[("machine.network", "moved")]);
    let plan = w.plan().unwrap();
    assert!(plan.steps.iter().all(|s| !s.risk.reset), "{plan:#?}");
}

#[test]
fn decommission_workers_first_then_control_planes_one_by_one_last_alone() {
    let mut w = world(3, 2);
    w.observed.etcd.as_mut().unwrap().leader = Some(2);
    let plan = plan_decommission(&w.desired, &w.observed).unwrap();
    assert_eq!(
        summary(&plan),
        s(&[
            ("worker-1", "reset:true"),
            ("worker-1", "maintenance"),
            ("worker-2", "reset:true"),
            ("worker-2", "maintenance"),
            ("cp-1", "leave"),
            ("cp-1", "members=cp-2+cp-3"),
            ("cp-1", "reset:true"),
            ("cp-1", "maintenance"),
            ("cp-3", "leave"),
            ("cp-3", "members=cp-2"),
            ("cp-3", "reset:true"),
            ("cp-3", "maintenance"),
            ("cp-2", "reset:false"),
            ("cp-2", "maintenance"),
        ])
    );
}

// --- With a Kubernetes API: drain before, readiness after, as kubectl users expect.

impl World {
    /// The API answers and lists every configured node, Ready.
    fn with_kubernetes(mut self) -> Self {
        let nodes = self
            .inventory
            .nodes
            .iter()
            .map(|n| KubeNode {
                name: n.hostname.clone(),
                ready: true,
                cordoned_by_vixen: false,
                kubelet_version: "v1.34.1".into(),
                static_pods: Vec::new(),
            })
            .collect();
        self.observed.kubernetes = Some(KubeView { nodes });
        self
    }
    fn kube_node(&mut self, name: &str) -> &mut KubeNode {
        self.observed
            .kubernetes
            .as_mut()
            .unwrap()
            .nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap()
    }
}

#[test]
fn kubernetes_upgrade_drains_each_node_and_waits_for_it_ready_on_the_new_version() {
    let mut w = world(3, 1).with_kubernetes();
    w.desired.talos_version = "v1.12.1".parse().unwrap();
    let plan = w.plan().unwrap();
    let want_for = |n: &'static str, cp: bool| {
        let mut v = Vec::new();
        if cp {
            v.push((n, "upgrade-safe".to_string()));
            if n == "cp-1" {
                v.push((n, "forfeit".to_string()));
            }
        }
        v.push((n, format!("drain:{n}")));
        v.push((n, "upgrade:legacy".to_string()));
        v.push((n, "ready".to_string()));
        if cp {
            v.push((n, "member".to_string()));
        }
        v.push((n, "node-ready:v1.12.1".to_string()));
        v.push((n, format!("uncordon:{n}")));
        v.push((n, "stabilize".to_string()));
        v
    };
    let want: Vec<(String, String)> = [
        ("cp-2", true),
        ("cp-3", true),
        ("cp-1", true),
        ("worker-1", false),
    ]
    .into_iter()
    .flat_map(|(n, cp)| want_for(n, cp))
    .map(|(n, a)| (n.to_string(), a))
    .collect();
    assert_eq!(summary(&plan), want);
}

#[test]
fn kubernetes_removed_worker_is_drained_reset_and_its_node_object_deleted() {
    let mut w = world(3, 2).with_kubernetes();
    w.drop_from_git("worker-2");
    let plan = w.plan().unwrap();
    assert_eq!(
        summary(&plan),
        s(&[
            ("worker-2", "drain:worker-2"),
            ("worker-2", "reset:true"),
            ("worker-2", "maintenance"),
            ("worker-2", "delete-node:worker-2")
        ])
    );
    assert_eq!(mutated_nodes(&plan), ["worker-2".to_string()].into());
}

#[test]
fn kubernetes_removed_control_plane_is_drained_before_its_member_leaves() {
    let mut w = world(5, 0).with_kubernetes();
    w.drop_from_git("cp-5");
    let plan = w.plan().unwrap();
    assert_eq!(
        summary(&plan),
        s(&[
            ("cp-5", "drain:cp-5"),
            ("cp-5", "leave"),
            ("cp-5", "members=cp-1+cp-2+cp-3+cp-4"),
            ("cp-5", "reset:true"),
            ("cp-5", "maintenance"),
            ("cp-5", "delete-node:cp-5"),
        ])
    );
}

#[test]
fn kubernetes_new_node_must_be_ready_before_the_next_one() {
    let mut w = world(3, 0).with_kubernetes();
    w.new_node("worker-1", Role::Worker, 11);
    w.new_node("worker-2", Role::Worker, 12);
    let plan = w.plan().unwrap();
    assert_eq!(
        summary(&plan),
        s(&[
            ("worker-1", "apply:Auto"),
            ("worker-1", "ready"),
            ("worker-1", "node-ready"),
            ("worker-2", "apply:Auto"),
            ("worker-2", "ready"),
            ("worker-2", "node-ready")
        ])
    );
}

#[test]
fn kubernetes_node_left_cordoned_by_a_stopped_run_is_uncordoned_once_ready_before_the_rest() {
    let mut w = world(3, 2).with_kubernetes();
    w.desired.talos_version = "v1.12.1".parse().unwrap();
    // cp-2 was upgraded by a run that stopped at its readiness gate.
    w.observed("cp-2").talos_version = Some("v1.12.1".parse().unwrap());
    w.kube_node("cp-2").cordoned_by_vixen = true;
    w.kube_node("cp-2").ready = false;
    let plan = w.plan().unwrap();
    let got = summary(&plan);
    assert_eq!(
        &got[..2],
        &s(&[("cp-2", "node-ready"), ("cp-2", "uncordon:cp-2")])[..],
        "{got:#?}"
    );
    assert!(
        got[2..].iter().all(|(n, _)| n != "cp-2"),
        "cp-2 is not upgraded again: {got:#?}"
    );
}

#[test]
fn kubernetes_live_config_change_neither_drains_nor_cordons() {
    let mut w = world(3, 1).with_kubernetes();
    let mut sections = base_sections();
    sections[0] = ("machine.network", "n2");
    w.node("worker-1").config = digest("worker-1b", &sections);
    let plan = w.plan().unwrap();
    assert_eq!(summary(&plan), s(&[("worker-1", "apply:NoReboot")]));
}

#[test]
fn kubernetes_rebooting_config_change_drains_and_waits_ready() {
    let mut w = world(3, 1).with_kubernetes();
    let mut sections = base_sections();
    sections[4] = ("machine.files", "f2");
    w.node("worker-1").config = digest("worker-1b", &sections);
    let plan = w.plan().unwrap();
    assert_eq!(
        summary(&plan),
        s(&[
            ("worker-1", "drain:worker-1"),
            ("worker-1", "apply:Reboot"),
            ("worker-1", "ready"),
            ("worker-1", "node-ready"),
            ("worker-1", "uncordon:worker-1"),
            ("worker-1", "stabilize")
        ])
    );
}

#[test]
fn without_kubernetes_plans_have_no_kubernetes_steps() {
    let mut w = world(3, 2);
    w.desired.talos_version = "v1.12.1".parse().unwrap();
    w.drop_from_git("worker-2");
    let plan = w.plan().unwrap();
    assert!(
        !plan.steps.iter().any(|s| matches!(
            s.action,
            Action::Drain { .. }
                | Action::WaitNodeReady { .. }
                | Action::Uncordon { .. }
                | Action::DeleteNode { .. }
        )),
        "{plan:#?}"
    );
}

/// cp-3 was renamed cp-3b in Git (hostname too); etcd kept the member's old name `cp-3`, as it
/// does until the member restarts. The inventory's own entry for the machine.
fn renamed_cp3(w: &mut World) {
    let i = w
        .inventory
        .nodes
        .iter_mut()
        .find(|n| n.name == "cp-3")
        .unwrap();
    i.name = "cp-3b".into();
    i.hostname = "cp-3b".into();
    w.observed("cp-3").name = "cp-3b".into();
    // Nothing but the recorded ID ties the member to the node.
    let m = w.observed.etcd.as_mut().unwrap();
    m.members.iter_mut().for_each(|m| {
        if m.id == 3 {
            m.peer_urls.clear()
        }
    });
    w.drop_from_git("cp-3");
}

/// Issue 14, members by ID: a control plane renamed, then removed from Git. Its member is found
/// by the ID recorded when it joined, not by hostname: it leaves etcd before its reset, and the
/// check expects the two members that stay (by hostname nothing was planned and the dead
/// member stayed in etcd for good).
#[test]
fn renamed_control_plane_removed_later_leaves_etcd_by_its_member_id() {
    let mut w = world(3, 0);
    renamed_cp3(&mut w);
    let plan = w.plan().unwrap();
    let sum = summary(&plan);
    let leave = sum.iter().position(|x| x == &s(&[("cp-3b", "leave")])[0]);
    let reset = sum
        .iter()
        .position(|x| x.0 == "cp-3b" && x.1.starts_with("reset"));
    assert!(leave.is_some() && leave < reset, "{sum:?}");
    assert!(
        sum.contains(&s(&[("cp-3b", "members=cp-1+cp-2")])[0]),
        "{sum:?}"
    );
}

/// The same, with the renamed node powered off (fault: node down): its member is removed
/// through a healthy peer by the recorded ID.
#[test]
fn renamed_and_unreachable_control_plane_is_removed_through_a_peer_by_id() {
    let mut w = world(3, 0);
    renamed_cp3(&mut w);
    w.observed("cp-3b").state = NodeState::Unreachable;
    let plan = w.plan().unwrap();
    assert!(
        plan.steps.iter().any(|s| s.node == "cp-3b"
            && matches!(&s.action, Action::RemoveMember { member_id: 3, via } if via == "cp-1")),
        "{:?}",
        summary(&plan)
    );
    assert!(
        !plan
            .steps
            .iter()
            .any(|s| matches!(s.action, Action::Reset { .. }))
    );
}

/// A journal written before member IDs (none recorded) learns them from etcd: by peer URL,
/// else by name; an ID another entry holds is never given twice; a recorded ID survives the
/// member being renamed; a removed member's ID is forgotten.
#[test]
fn inventory_learns_member_ids_by_address_then_name() {
    let mut w = world(3, 1);
    w.inventory
        .nodes
        .iter_mut()
        .for_each(|n| n.member_id = None);
    let etcd = w.observed.etcd.clone().unwrap();
    assert!(w.inventory.learn_members(&etcd));
    let ids =
        |w: &World| -> Vec<Option<u64>> { w.inventory.nodes.iter().map(|n| n.member_id).collect() };
    assert_eq!(ids(&w), vec![Some(1), Some(2), Some(3), None]);
    assert!(!w.inventory.learn_members(&etcd), "nothing new to learn");

    // Renamed member, no peer URL match: the recorded ID holds.
    let mut renamed = etcd.clone();
    renamed.members[2].name = "other".into();
    renamed.members[2].peer_urls.clear();
    assert!(!w.inventory.learn_members(&renamed));
    assert_eq!(ids(&w)[2], Some(3));

    // Member 3 removed (it left): forgotten; a new member at its address is learned.
    let mut gone = etcd.clone();
    gone.members.retain(|m| m.id != 3);
    assert!(w.inventory.learn_members(&gone));
    assert_eq!(ids(&w)[2], None);
    let mut rejoined = gone.clone();
    let mut m = etcd.members[2].clone();
    m.id = 33;
    rejoined.members.push(m);
    assert!(w.inventory.learn_members(&rejoined));
    assert_eq!(ids(&w)[2], Some(33));

    // The address wins over a name: member 1 renamed `cp-2` does not take cp-2's entry.
    let mut confusing = etcd.clone();
    confusing.members[0].name = "cp-2".into();
    w.inventory.nodes[1].member_id = None;
    w.inventory.learn_members(&confusing);
    assert_eq!(ids(&w)[1], Some(2), "cp-2 is at member 2's address");
}

/// Issue 14, dead-member scale-in: 3 -> 1 while cp-3 (leaving) is powered off. Its member is
/// removed through a peer first; then cp-2 leaves, and the member that stays is a majority of
/// the list. (cp-2 first would leave cp-1 and the dead cp-3: 1 healthy of 2, and the scale-in
/// waited for the dead node to return.)
#[test]
fn scale_in_with_a_dead_member_removes_the_dead_one_first() {
    let mut w = world(3, 0);
    w.drop_from_git("cp-2");
    w.drop_from_git("cp-3");
    w.observed("cp-3").state = NodeState::Unreachable;
    let plan = w.plan().unwrap();
    assert_eq!(
        summary(&plan)[..4],
        s(&[
            ("cp-3", "remove-member"),
            ("cp-3", "members=cp-1+cp-2"),
            ("cp-2", "leave"),
            ("cp-2", "members=cp-1"),
        ])[..]
    );
    assert!(
        plan.waiting
            .iter()
            .any(|w| w.starts_with("cp-3: left Git but does not answer")),
        "{:?}",
        plan.waiting
    );
}

/// Issue 14, "converged without checking etcd": a control plane in Git that etcd does not list
/// as a started voter (its join stalled, or its member was removed behind vixen's back) keeps
/// the cluster from being converged, and the plan says which and why. Nothing is reset.
#[test]
fn control_plane_missing_from_etcd_is_not_converged() {
    for (case, why) in [
        ("removed", "etcd does not list its member"),
        ("learner", "its etcd member is still a learner"),
        ("unstarted", "its etcd member has not started"),
    ] {
        let mut w = world(3, 1);
        let etcd = w.observed.etcd.as_mut().unwrap();
        match case {
            "removed" => etcd.members.retain(|m| m.id != 2),
            "learner" => etcd.members[1].is_learner = true,
            _ => etcd.members[1].started = false,
        }
        let plan = w.plan().unwrap();
        assert!(plan.steps.is_empty(), "{case}: {:?}", summary(&plan));
        assert_eq!(
            plan.waiting,
            vec![format!("cp-2: configured, but {why}")],
            "{case}"
        );
    }
}

/// Issue 14, Kubernetes upgrade: 1.34 -> 1.35 went to every node as live applies within
/// 108 ms with no gate. Now each node's apply is followed by a gate on its Node reporting the
/// new kubelet version (and Ready) before the next node starts, control planes first.
#[test]
fn kubernetes_upgrade_waits_for_each_kubelet_before_the_next_node() {
    let mut w = world(3, 1).with_kubernetes();
    // (1.35 needs a newer Talos than the world's v1.11.6: a patch upgrade has the same gates.)
    w.desired.kubernetes_version = "1.34.3".parse().unwrap();
    for n in &mut w.desired.nodes {
        n.config = digest(
            &format!("{}-k8s", n.name),
            &[
                ("machine.network", "n1"),
                ("machine.install", "i1"),
                ("machine.kubelet", "k2"),
                ("cluster", "c2"),
                ("machine.files", "f1"),
            ],
        );
    }
    let plan = w.plan().unwrap();
    let mut expected = Vec::new();
    for n in ["cp-1", "cp-2", "cp-3", "worker-1"] {
        expected.push((n.to_string(), "apply:NoReboot".to_string()));
        expected.push((n.to_string(), "kubelet:v1.34.3".to_string()));
    }
    assert_eq!(summary(&plan), expected);
}

/// "Converged" means the Nodes report the version: a node whose config is applied (no change
/// left) but whose kubelet still reports the old version gets a gate, and no call.
#[test]
fn a_kubelet_on_the_old_version_keeps_the_cluster_unconverged() {
    let mut w = world(3, 1).with_kubernetes();
    w.kube_node("worker-1").kubelet_version = "v1.34.0".into();
    let plan = w.plan().unwrap();
    assert_eq!(summary(&plan), s(&[("worker-1", "kubelet:v1.34.1")]));
    assert!(plan.mutating().next().is_none());
    // An unknown kubelet version (a Node without node info) is not a reason to wait.
    w.kube_node("worker-1").kubelet_version = String::new();
    assert!(w.plan().unwrap().steps.is_empty());
}

/// The static pods of a control plane on Git's version.
fn static_pods(tag: &str, apiserver_ready: bool) -> Vec<StaticPodView> {
    CONTROL_PLANE_COMPONENTS
        .iter()
        .map(|c| StaticPodView {
            component: (*c).to_string(),
            tag: tag.into(),
            ready: apiserver_ready || *c != "kube-apiserver",
        })
        .collect()
}

/// Issue 14, a retry after a gate timed out. Fault: cp-2 got the new Kubernetes config, its
/// kubelet reports the new version, but its kube-apiserver is not Ready; cp-3 still has the
/// old config. The next plan waits for cp-2's static pods first, and only then changes cp-3
/// (before the fix the gate of an already applied node came after every other change, so a
/// retry went on to the next control plane).
#[test]
fn a_retry_waits_for_the_control_plane_whose_api_server_is_not_ready_before_the_next() {
    let mut w = world(3, 0).with_kubernetes();
    w.desired.kubernetes_version = "1.34.3".parse().unwrap();
    for n in &mut w.desired.nodes {
        // Only the cluster section changes (live): the other sections stay as they are.
        let sections: Vec<(&str, &str)> = base_sections()
            .into_iter()
            .map(|(k, v)| if k == "cluster" { (k, "c2") } else { (k, v) })
            .collect();
        n.config = digest(&format!("{}-k8s", n.name), &sections);
    }
    // cp-1 and cp-2 are done (their records hold the new config), cp-3 is not.
    for name in ["cp-1", "cp-2"] {
        let cfg = w.node(name).config.clone();
        w.inventory
            .nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap()
            .config = cfg;
        let k = w.kube_node(name);
        k.kubelet_version = "v1.34.3".into();
        k.static_pods = static_pods("v1.34.3", name != "cp-2");
    }
    w.kube_node("cp-3").static_pods = static_pods("v1.34.1", true);
    let plan = w.plan().unwrap();
    assert_eq!(
        summary(&plan),
        s(&[
            ("cp-2", "kubelet:v1.34.3"),
            ("cp-3", "apply:NoReboot"),
            ("cp-3", "kubelet:v1.34.3"),
        ])
    );
    // cp-2's API server Ready: no gate for it, cp-3 goes.
    w.kube_node("cp-2").static_pods = static_pods("v1.34.3", true);
    let plan = w.plan().unwrap();
    assert_eq!(
        summary(&plan),
        s(&[("cp-3", "apply:NoReboot"), ("cp-3", "kubelet:v1.34.3")])
    );
    // No static pod listed (a cluster whose mirror pods are not visible): no gate from them.
    w.kube_node("cp-2").static_pods = Vec::new();
    assert_eq!(w.plan().unwrap().steps.len(), 2);
}

// --- Talos 1.14: ApplyConfiguration never reboots (REBOOT is Unimplemented, AUTO means
// NO_REBOOT: v1.14 internal/app/machined/internal/server/v1alpha1/v1alpha1_server.go), so a
// change that needs a reboot is applied live and vixen reboots the node itself.

impl World {
    /// Every node runs Talos v1.14.0, and Git wants it.
    fn on_1_14(mut self) -> Self {
        self.desired.talos_version = "v1.14.0".parse().unwrap();
        self.desired.installer_image = "factory.talos.dev/installer/abc:v1.14.0".into();
        for n in &mut self.observed.nodes {
            n.talos_version = Some("v1.14.0".parse().unwrap());
        }
        self
    }
    /// `name`'s machine.files changes (a section Talos applies only at the next boot).
    fn files_change(&mut self, name: &str) {
        let mut sections = base_sections();
        sections[4] = ("machine.files", "f2");
        self.node(name).config = digest(&format!("{name}-files"), &sections);
    }
}

/// Fault covered: a 1.14 node answers REBOOT with Unimplemented; a plan that sends it stops the
/// rollout on the first node. Each node: the etcd check, NO_REBOOT, then vixen's own reboot and
/// the same gates as a reboot, one node at a time.
#[test]
fn talos_1_14_reboot_needing_change_applies_live_then_reboots_one_node_at_a_time() {
    let mut w = world(3, 1).on_1_14();
    for n in ["cp-1", "cp-2", "worker-1"] {
        w.files_change(n);
    }
    let plan = w.plan().unwrap();
    assert_eq!(
        summary(&plan),
        s(&[
            ("cp-1", "upgrade-safe"),
            ("cp-1", "apply:NoReboot"),
            ("cp-1", "reboot"),
            ("cp-1", "ready"),
            ("cp-1", "member"),
            ("cp-1", "stabilize"),
            ("cp-2", "upgrade-safe"),
            ("cp-2", "apply:NoReboot"),
            ("cp-2", "reboot"),
            ("cp-2", "ready"),
            ("cp-2", "member"),
            ("cp-2", "stabilize"),
            ("worker-1", "apply:NoReboot"),
            ("worker-1", "reboot"),
            ("worker-1", "ready"),
            ("worker-1", "stabilize"),
        ])
    );
    for st in &plan.steps {
        match &st.action {
            Action::ApplyConfig {
                mode, reboot_after, ..
            } => {
                assert_eq!((*mode, *reboot_after), (ApplyMode::NoReboot, true), "{st}");
                assert!(!st.risk.reboot, "the apply itself reboots nothing: {st}");
            }
            Action::Reboot => assert!(st.risk.reboot, "{st}"),
            _ => {}
        }
    }
}

/// The same change on 1.13 still lets Talos reboot (REBOOT), with no Reboot step of vixen's.
#[test]
fn talos_1_13_reboot_needing_change_still_applies_with_reboot() {
    let mut w = world(1, 0);
    w.desired.talos_version = "v1.13.2".parse().unwrap();
    w.observed("cp-1").talos_version = Some("v1.13.2".parse().unwrap());
    w.files_change("cp-1");
    let sum = summary(&w.plan().unwrap());
    assert!(
        sum.contains(&("cp-1".into(), "apply:Reboot".into())),
        "{sum:?}"
    );
    assert!(!sum.iter().any(|(_, a)| a == "reboot"), "{sum:?}");
}

/// With Kubernetes: the Node is drained before the apply (what follows reboots it) and must be
/// Ready again before it is uncordoned.
#[test]
fn talos_1_14_reboot_needing_change_drains_before_and_waits_ready_after() {
    let mut w = world(1, 1).on_1_14().with_kubernetes();
    w.files_change("worker-1");
    assert_eq!(
        summary(&w.plan().unwrap()),
        s(&[
            ("worker-1", "drain:worker-1"),
            ("worker-1", "apply:NoReboot"),
            ("worker-1", "reboot"),
            ("worker-1", "ready"),
            ("worker-1", "node-ready"),
            ("worker-1", "uncordon:worker-1"),
            ("worker-1", "stabilize"),
        ])
    );
}

/// A live change on 1.14 is one NO_REBOOT apply, with no reboot.
#[test]
fn talos_1_14_live_change_is_one_no_reboot_apply() {
    let mut w = world(3, 1).on_1_14();
    let mut sections = base_sections();
    sections[2] = ("machine.kubelet", "k2");
    w.node("worker-1").config = digest("w1-kubelet", &sections);
    let plan = w.plan().unwrap();
    assert_eq!(summary(&plan), s(&[("worker-1", "apply:NoReboot")]));
    assert!(
        matches!(
            plan.steps[0].action,
            Action::ApplyConfig {
                reboot_after: false,
                ..
            }
        ),
        "{}",
        plan.steps[0]
    );
}

/// Fault covered: the agent died (or Git moved on) between the NO_REBOOT apply and its reboot.
/// The inventory owes the reboot; the next plan reboots the node, behind the same gates, without
/// applying again.
#[test]
fn reboot_owed_after_a_1_14_live_apply_is_planned_with_git_unchanged() {
    let mut w = world(3, 0).on_1_14();
    w.inventory
        .nodes
        .iter_mut()
        .find(|n| n.name == "cp-2")
        .unwrap()
        .reboot_pending = true;
    assert_eq!(
        summary(&w.plan().unwrap()),
        s(&[
            ("cp-2", "upgrade-safe"),
            ("cp-2", "reboot"),
            ("cp-2", "ready"),
            ("cp-2", "member"),
            ("cp-2", "stabilize"),
        ])
    );
    // An upgrade reboots it anyway: no second reboot is planned.
    let mut w = world(1, 0);
    w.observed("cp-1").talos_version = Some("v1.14.0".parse().unwrap());
    w.desired.talos_version = "v1.14.1".parse().unwrap();
    w.inventory.nodes[0].reboot_pending = true;
    let sum = summary(&w.plan().unwrap());
    assert_eq!(
        sum.iter().filter(|(_, a)| a == "reboot").count(),
        1,
        "{sum:?}"
    );
}

/// A 1.13 node upgraded to 1.14 in the same plan gets its reboot-needing change as a 1.14 node:
/// the upgrade first, then NO_REBOOT and a reboot (REBOOT would be refused by then).
#[test]
fn upgrade_to_1_14_then_reboot_needing_change_uses_no_reboot() {
    let mut w = world(1, 0);
    w.observed("cp-1").talos_version = Some("v1.13.2".parse().unwrap());
    w.desired.talos_version = "v1.14.0".parse().unwrap();
    w.files_change("cp-1");
    let sum = summary(&w.plan().unwrap());
    let upgrade = sum
        .iter()
        .position(|(_, a)| a == "upgrade:lifecycle")
        .unwrap();
    let apply = sum
        .iter()
        .position(|(_, a)| a.starts_with("apply:"))
        .unwrap();
    assert!(upgrade < apply, "{sum:?}");
    assert_eq!(sum[apply].1, "apply:NoReboot", "{sum:?}");
    assert_eq!(sum[apply + 1].1, "reboot", "{sum:?}");
}

/// Without a record of what was applied (vixen's state lost), a 1.14 node gets NO_REBOOT and a
/// reboot: the change is treated as disruptive, as AUTO is on older versions.
#[test]
fn talos_1_14_without_a_record_applies_live_and_reboots() {
    let mut w = world(1, 0).on_1_14();
    w.inventory.nodes.clear();
    let sum = summary(&w.plan().unwrap());
    assert_eq!(
        sum,
        s(&[
            ("cp-1", "apply:NoReboot"),
            ("cp-1", "reboot"),
            ("cp-1", "ready"),
            ("cp-1", "member"),
            ("cp-1", "stabilize"),
        ])
    );
}

// --- drift: a configured node whose running config is not the one vixen applied (Talos' dry
// run said so); the engine marks it in the observation.

#[test]
fn drift_is_corrected_by_a_live_apply_of_the_same_config() {
    let mut w = world(3, 2);
    w.observed("worker-1").drift = Some(Drift { reboot: false });
    let plan = w.plan().unwrap();
    assert_eq!(summary(&plan), s(&[("worker-1", "apply:NoReboot")]));
    assert!(plan.steps[0].reason.contains("drifted"), "{plan:?}");
}

#[test]
fn drift_that_needs_a_reboot_goes_through_the_same_gates_as_a_change() {
    let mut w = world(3, 2);
    w.observed("cp-2").drift = Some(Drift { reboot: true });
    let plan = w.plan().unwrap();
    assert_eq!(
        summary(&plan),
        s(&[
            ("cp-2", "upgrade-safe"),
            ("cp-2", "apply:Reboot"),
            ("cp-2", "ready"),
            ("cp-2", "member"),
            ("cp-2", "stabilize"),
        ])
    );
}

#[test]
fn drift_is_left_alone_with_the_report_policy() {
    let mut w = world(3, 2);
    w.desired.drift = DriftPolicy::Report;
    w.observed("worker-1").drift = Some(Drift { reboot: false });
    let plan = w.plan().unwrap();
    assert!(plan.steps.is_empty() && plan.waiting.is_empty(), "{plan:?}");
}

#[test]
fn a_config_change_on_a_drifted_node_is_planned_once_from_the_record() {
    let mut w = world(3, 2);
    w.observed("worker-1").drift = Some(Drift { reboot: true });
    // Git changes a live section: the change is planned from the record (live), as always.
    w.node("worker-1").config = digest(
        "worker-1b",
        &[
            ("machine.network", "n1"),
            ("machine.install", "i1"),
            ("machine.kubelet", "k2"),
            ("cluster", "c1"),
            ("machine.files", "f1"),
        ],
    );
    let plan = w.plan().unwrap();
    assert_eq!(summary(&plan), s(&[("worker-1", "apply:NoReboot")]));
}

/// Which plans get a fresh etcd snapshot first (`backup.beforeRisky`), and which do not: one
/// row per situation, the reason naming what is at risk.
#[test]
fn risky_plans_are_the_removals_minor_upgrades_and_promotions() {
    let why = |w: &World| risky(&w.plan().unwrap(), &w.desired, &w.observed, &w.inventory);

    // Steady state, a worker added, a worker removed, a live config change: nothing risky.
    let w = world(3, 1);
    assert_eq!(why(&w), None);
    let mut w = world(3, 1);
    w.new_node("worker-9", Role::Worker, 19);
    assert_eq!(why(&w), None);
    let mut w = world(3, 2);
    w.drop_from_git("worker-2");
    assert_eq!(why(&w), None);
    // A Talos patch upgrade: not a minor.
    let mut w = world(3, 1);
    w.desired.talos_version = "v1.11.7".parse().unwrap();
    w.desired.installer_image = "ghcr.io/siderolabs/installer:v1.11.7".into();
    assert_eq!(why(&w), None);

    // A control plane leaves: before its leave.
    let mut w = world(3, 1);
    w.drop_from_git("cp-3");
    w.new_node("cp-9", Role::Controlplane, 9);
    w.drop_from_git("cp-2");
    let r = why(&w).unwrap();
    assert!(r.contains("control-plane removal of cp-"), "{r}");
    // An unreachable one removed through a peer.
    let mut w = world(3, 1);
    w.drop_from_git("cp-3");
    w.drop_from_git("cp-2");
    w.observed("cp-3").state = NodeState::Unreachable;
    assert!(why(&w).unwrap().contains("control-plane removal"));

    // A Talos minor upgrade.
    let mut w = world(3, 1);
    w.desired.talos_version = "v1.12.2".parse().unwrap();
    w.desired.installer_image = "ghcr.io/siderolabs/installer:v1.12.2".into();
    assert_eq!(
        why(&w).unwrap(),
        "the Talos minor upgrade of cp-2 (v1.11.6 -> v1.12.2)"
    );

    // A Kubernetes minor upgrade (its configs change live).
    let mut w = world(3, 1);
    w.inventory.kubernetes_version = Some("1.33.4".into());
    for n in &mut w.desired.nodes {
        n.config = digest(&format!("{}-k8s", n.name), &[("cluster", "c2")]);
    }
    assert_eq!(
        why(&w).unwrap(),
        "the Kubernetes minor upgrade (1.33.4 -> 1.34.1)"
    );

    // A worker promoted to control plane (cp-3 leaves at the same time: the removal is named
    // first), and a plain scale-up.
    let mut w = world(3, 2);
    w.node("worker-2").role = Role::Controlplane;
    w.drop_from_git("cp-3");
    assert!(why(&w).unwrap().contains("removal of cp-3"));
    let mut w = world(1, 2);
    w.node("worker-2").role = Role::Controlplane;
    w.new_node("cp-2", Role::Controlplane, 2);
    w.drop_from_git("cp-2");
    assert_eq!(
        why(&w).unwrap(),
        "the promotion of worker-2 from worker to control plane"
    );
    let mut w = world(1, 0);
    w.new_node("cp-2", Role::Controlplane, 2);
    w.new_node("cp-3", Role::Controlplane, 3);
    assert_eq!(
        why(&w).unwrap(),
        "the promotion of cp-2 to an etcd voting member"
    );
}
