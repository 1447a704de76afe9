//! The executor's rules on the fakes, in milliseconds: interlocks, gates, resume after a crash,
//! adoption, and the Kubernetes wrapping. Each test names the fault it covers; the lab stories
//! in the agent's tests are the end-to-end proof on real etcd.

use std::collections::BTreeMap;
use std::time::Duration;

use vixen_k8s::NodeView;
use vixen_plan::{ConfigDigest, Desired, DesiredNode, Inventory, InventoryNode};
use zeroize::Zeroizing;

use crate::fake::{FakeCluster, MemoryStore, Mode};
use crate::{Configs, Engine, Outcome, Quiet, StepError, Timeouts};

fn digest(whole: &str, section: &str) -> ConfigDigest {
    let mut sections = BTreeMap::new();
    sections.insert(section.to_string(), whole.to_string());
    ConfigDigest {
        whole: whole.into(),
        sections,
    }
}

/// What Git wants of the fake cluster: every node with config `whole` in `section`.
pub(crate) fn desired(
    c: &FakeCluster,
    version: &str,
    whole: &str,
    section: &str,
) -> (Desired, Configs) {
    let nodes: Vec<DesiredNode> = c.with(|w| {
        w.nodes
            .iter()
            .map(|n| DesiredNode {
                name: n.name.clone(),
                hostname: n.name.clone(),
                role: n.role,
                maintenance_address: n.maintenance_address.clone(),
                management_addresses: vec![n.address.clone()],
                config: digest(whole, section),
            })
            .collect()
    });
    let configs = nodes
        .iter()
        .map(|n| (n.name.clone(), Zeroizing::new(whole.to_string())))
        .collect();
    let desired = Desired {
        talos_version: version.parse().unwrap(),
        installer_image: format!("ghcr.io/siderolabs/installer:{version}"),
        kubernetes_version: "1.34.1".parse().unwrap(),
        nodes,
        stabilization: Duration::ZERO,
        reset_on_removal: true,
        worker_concurrency: 1,
        drift: vixen_plan::DriftPolicy::Correct,
        network_rollout: None,
    };
    (desired, configs)
}

/// A store that remembers every node as configured with `whole` in `section`, with the member
/// IDs it learned when each control plane joined.
pub(crate) fn store_of(c: &FakeCluster, d: &Desired) -> MemoryStore {
    let store = MemoryStore::default();
    store.state.lock().unwrap().inventory = Inventory {
        nodes: d
            .nodes
            .iter()
            .map(|n| InventoryNode {
                name: n.name.clone(),
                hostname: n.hostname.clone(),
                role: n.role,
                maintenance_address: n.maintenance_address.clone(),
                address: n.address().to_string(),
                config: n.config.clone(),
                member_id: c.with(|w| {
                    w.nodes
                        .iter()
                        .find(|f| f.name == n.name)
                        .and_then(|f| f.member)
                }),
                reboot_pending: false,
            })
            .collect(),
        kubernetes_version: None,
    };
    store
}

pub(crate) fn timeouts() -> Timeouts {
    Timeouts {
        ready: Duration::from_secs(2),
        member: Duration::from_secs(2),
        maintenance: Duration::from_secs(2),
        drain: Duration::from_secs(2),
        poll: Duration::from_millis(1),
    }
}

async fn reconcile(
    c: &FakeCluster,
    store: &MemoryStore,
    d: &Desired,
    configs: &Configs,
) -> Outcome {
    let engine = Engine {
        talos: c,
        kube: c,
        store,
        timeouts: timeouts(),
        progress: &Quiet,
        backup: None,
    };
    engine
        .reconcile(d, configs)
        .await
        .map(|r| r.outcome)
        .unwrap_or_else(|e| panic!("store: {e}"))
}

/// The engine on the fakes, with `backup` as its snapshot sink.
pub(crate) fn engine_with<'a>(
    c: &'a FakeCluster,
    store: &'a MemoryStore,
    backup: Option<&'a dyn crate::ports::SnapshotSink>,
) -> Engine<'a, FakeCluster, FakeCluster, MemoryStore> {
    Engine {
        talos: c,
        kube: c,
        store,
        timeouts: timeouts(),
        progress: &Quiet,
        backup,
    }
}

fn waiting_reason(o: &Outcome) -> String {
    match o {
        Outcome::Waiting { waiting, .. } => waiting.join("; "),
        other => panic!("expected Waiting, got {other:?}"),
    }
}

/// Fault: cp-2 powered off. A config change that needs a reboot on every control plane must
/// reboot none of the others (each would leave 1 of 3 voters), say why, and go on once cp-2
/// is back. Fails when the health interlock is removed.
#[tokio::test]
async fn reboot_needing_change_waits_while_another_member_is_down() {
    let c = FakeCluster::new(3, 0, "v1.12.2");
    let (old, _) = desired(&c, "v1.12.2", "", "machine.env");
    let store = store_of(&c, &old);
    c.with(|w| w.nodes[1].mode = Mode::Off);
    let (d, configs) = desired(&c, "v1.12.2", "env TZ", "machine.env");
    let outcome = reconcile(&c, &store, &d, &configs).await;
    let why = waiting_reason(&outcome);
    assert!(
        why.contains("cp-2's etcd does not answer") && why.contains("would leave 1 of 3 voters"),
        "{why}"
    );
    assert!(
        c.with(|w| w.calls.is_empty()),
        "no node was touched: {:?}",
        c.with(|w| w.calls.clone())
    );

    c.with(|w| w.nodes[1].mode = Mode::Configured);
    let outcome = reconcile(&c, &store, &d, &configs).await;
    assert!(outcome.converged(), "{outcome:?}");
    for cp in ["cp-1", "cp-2", "cp-3"] {
        assert_eq!(
            c.calls_to(cp),
            ["apply"],
            "{cp} rebooted once into its config"
        );
    }
}

/// Fault: cp-3's etcd is stale (far behind the leader's raft index). A Talos 1.13 upgrade
/// pulls and installs (nothing goes down) but reboots no control plane until it caught up.
#[tokio::test]
async fn lifecycle_upgrade_reboots_nothing_while_a_member_lags() {
    let c = FakeCluster::new(3, 0, "v1.13.0");
    let (d, configs) = desired(&c, "v1.13.2", "", "machine.env");
    let store = store_of(&c, &d);
    c.with(|w| w.nodes.iter_mut().for_each(|n| n.raft_index = 5000));
    c.with(|w| w.nodes[2].raft_index = 1);
    let outcome = reconcile(&c, &store, &d, &configs).await;
    let why = waiting_reason(&outcome);
    assert!(
        why.contains("cp-3's etcd is") && why.contains("behind the leader"),
        "{why}"
    );
    assert!(
        c.with(|w| !w.calls.iter().any(|call| call.method == "reboot")),
        "no reboot"
    );
}

/// Fault: the agent dies between the steps of a Talos 1.13 upgrade (after the install, before
/// the reboot; then with the reboot in flight). The resumed run reboots the node itself (once)
/// and passes its gate at once; with one fire-once upgrade step it waited out the gate.
#[tokio::test]
async fn a_crash_between_the_lifecycle_steps_resumes_without_waiting_out_a_gate() {
    for (saves, reboots_before_resume) in [(5, 0), (8, 1)] {
        let c = FakeCluster::new(1, 0, "v1.13.0");
        let (d, configs) = desired(&c, "v1.13.2", "", "machine.env");
        let store = store_of(&c, &d);
        // plan saved (1), pull (2, 3), install (4, 5): the 6th save is the agent dying.
        // With 8: ... safe-check (6, 7), reboot in flight (8): it dies before marking it done.
        *store.fail_after.lock().unwrap() = Some(saves);
        let engine = Engine {
            talos: &c,
            kube: &c,
            store: &store,
            timeouts: timeouts(),
            progress: &Quiet,
            backup: None,
        };
        assert!(
            engine.reconcile(&d, &configs).await.is_err(),
            "the agent died"
        );
        assert_eq!(
            c.calls_to("cp-1")
                .iter()
                .filter(|m| **m == "reboot")
                .count(),
            reboots_before_resume
        );
        *store.fail_after.lock().unwrap() = None;
        let outcome = reconcile(&c, &store, &d, &configs).await;
        assert!(
            outcome.converged(),
            "resumed and converged without a gate timeout: {outcome:?}"
        );
        let calls = c.calls_to("cp-1");
        assert_eq!(
            calls.iter().filter(|m| **m == "reboot").count(),
            1,
            "{calls:?}"
        );
        assert_eq!(
            calls.iter().filter(|m| **m == "lifecycle_upgrade").count(),
            1,
            "{calls:?}"
        );
        assert_eq!(c.with(|w| w.nodes[0].version.clone()), "v1.13.2");
    }
}

/// Fault: the leaving control plane's own etcd is not running (crashed). Its member cannot
/// leave by itself; a healthy peer removes it, decided from what is observed (its etcd does not
/// answer), whatever code Talos would answer the leave with.
#[tokio::test]
async fn a_leaving_member_whose_etcd_is_down_is_removed_through_a_peer() {
    let c = FakeCluster::new(3, 0, "v1.12.2");
    let (all, _) = desired(&c, "v1.12.2", "", "machine.env");
    let store = store_of(&c, &all);
    c.with(|w| w.nodes[2].etcd_up = false);
    let (mut d, mut configs) = desired(&c, "v1.12.2", "", "machine.env");
    d.nodes.retain(|n| n.name != "cp-3");
    configs.remove("cp-3");
    let outcome = reconcile(&c, &store, &d, &configs).await;
    assert!(outcome.converged(), "{outcome:?}");
    assert!(
        !c.calls_to("cp-3").contains(&"etcd_leave"),
        "{:?}",
        c.calls_to("cp-3")
    );
    assert!(
        c.calls_to("cp-1").contains(&"etcd_remove_member")
            || c.calls_to("cp-2").contains(&"etcd_remove_member")
    );
    assert_eq!(c.with(|w| w.nodes[2].mode), Mode::Maintenance, "then reset");
    assert_eq!(
        c.with(|w| w.nodes.iter().filter(|n| n.member.is_some()).count()),
        2
    );
}

/// Fault: a control plane leaves Git while it is powered off. Its member is removed through a
/// peer; vixen does not call the cluster converged while the machine may still run its
/// config, and resets it when it comes back.
#[tokio::test]
async fn a_removed_node_that_was_off_is_reset_when_it_returns() {
    let c = FakeCluster::new(3, 0, "v1.12.2");
    let (all, _) = desired(&c, "v1.12.2", "", "machine.env");
    let store = store_of(&c, &all);
    c.with(|w| w.nodes[2].mode = Mode::Off);
    let (mut d, mut configs) = desired(&c, "v1.12.2", "", "machine.env");
    d.nodes.retain(|n| n.name != "cp-3");
    configs.remove("cp-3");
    let outcome = reconcile(&c, &store, &d, &configs).await;
    let why = waiting_reason(&outcome);
    assert!(why.contains("cp-3"), "{why}");
    assert_eq!(
        c.with(|w| w.nodes.iter().filter(|n| n.member.is_some()).count()),
        2,
        "its member is gone"
    );
    c.with(|w| w.nodes[2].mode = Mode::Configured);
    let outcome = reconcile(&c, &store, &d, &configs).await;
    assert!(outcome.converged(), "{outcome:?}");
    assert_eq!(c.calls_to("cp-3"), ["reset"]);
    assert_eq!(c.with(|w| w.nodes[2].mode), Mode::Maintenance);
}

/// No fault: a crafted plan that resets a node still in Git with its role is refused before
/// any call, whatever the plan says.
#[tokio::test]
async fn a_node_in_git_with_its_role_is_never_reset_whatever_the_plan_says() {
    use vixen_plan::{Action, Plan, Risk, Step};
    let c = FakeCluster::new(1, 1, "v1.12.2");
    let (d, configs) = desired(&c, "v1.12.2", "", "machine.env");
    let store = store_of(&c, &d);
    let plan = Plan {
        steps: vec![Step {
            node: "worker-1".into(),
            action: Action::Reset { graceful: true },
            reason: "crafted".into(),
            risk: Risk::default(),
        }],
        waiting: vec![],
    };
    let mut state = store.state.lock().unwrap().clone();
    state.run = Some(crate::Run {
        revision: "r".into(),
        plan,
        done: 0,
        in_flight: None,
        ..Default::default()
    });
    let exec = crate::Executor {
        talos: &c,
        kube: &c,
        store: &store,
        configs: &configs,
        desired: &d,
        timeouts: timeouts(),
        decommission: false,
        progress: &Quiet,
    };
    let err = exec.run(&mut state).await.unwrap_err();
    assert!(matches!(err.source, StepError::Interlock(_)), "{err}");
    assert!(c.with(|w| w.calls.is_empty()));
}

/// No fault: a lost journal. Nodes that run exactly their Git config are adopted with dry runs
/// only; nothing is applied or rebooted.
#[tokio::test]
async fn nodes_running_their_git_config_are_adopted_without_a_call() {
    let c = FakeCluster::new(3, 2, "v1.12.2");
    c.with(|w| {
        w.nodes
            .iter_mut()
            .for_each(|n| n.config = Some("cfg".into()))
    });
    let (d, configs) = desired(&c, "v1.12.2", "cfg", "machine.env");
    let store = MemoryStore::default();
    let outcome = reconcile(&c, &store, &d, &configs).await;
    assert!(outcome.converged(), "{outcome:?}");
    assert!(
        c.with(|w| w.calls.is_empty()),
        "{:?}",
        c.with(|w| w.calls.clone())
    );
    assert_eq!(store.state.lock().unwrap().inventory.nodes.len(), 5);
}

/// No fault: with Kubernetes answering, an upgrade drains the Node first, and uncordons it
/// only once it is Ready on the new version; the next node starts after that.
#[tokio::test]
async fn upgrades_are_wrapped_in_drain_and_uncordon_node_by_node() {
    let c = FakeCluster::new(1, 2, "v1.11.6");
    let (d, configs) = desired(&c, "v1.12.2", "", "machine.env");
    let store = store_of(&c, &d);
    c.with(|w| {
        let views = w.nodes.iter().map(|n| {
            (
                n.name.clone(),
                NodeView {
                    name: n.name.clone(),
                    ready: true,
                    unschedulable: false,
                    cordoned_by_vixen: false,
                    os_image: String::new(),
                    kubelet_version: "v1.34.1".into(),
                },
            )
        });
        w.kube = Some(views.collect());
    });
    let outcome = reconcile(&c, &store, &d, &configs).await;
    assert!(outcome.converged(), "{outcome:?}");
    let order: Vec<String> = c.with(|w| {
        w.calls
            .iter()
            .map(|c| format!("{} {}", c.method, c.address))
            .collect()
    });
    let pos = |s: &str| {
        order
            .iter()
            .position(|c| c == s)
            .unwrap_or_else(|| panic!("{s} in {order:?}"))
    };
    assert!(pos("drain Node/worker-1") < pos("upgrade 10.0.0.2"));
    assert!(pos("upgrade 10.0.0.2") < pos("uncordon Node/worker-1"));
    assert!(
        pos("uncordon Node/worker-1") < pos("drain Node/worker-2"),
        "one node at a time: {order:?}"
    );
}

/// Issue 14: a Talos upgrade and a re-address of a control plane and a worker in one commit.
/// Before the fix the upgrade was sent to the new address before the node moved there, and the
/// rollout never converged; now each node moves, is followed, then upgrades where it now is.
#[tokio::test]
async fn upgrade_plus_readdress_in_one_commit_converges() {
    let c = FakeCluster::new(3, 1, "v1.11.6");
    let (old, _) = desired(&c, "v1.11.6", "", "machine.env");
    let store = store_of(&c, &old);
    let (mut d, mut configs) = desired(&c, "v1.12.2", "", "machine.env");
    for (i, to) in [(1, "10.0.0.52"), (3, "10.0.0.54")] {
        c.with(|w| w.nodes[i].moves_to = Some(to.into()));
        let n = &mut d.nodes[i];
        n.management_addresses = vec![to.into()];
        n.config = digest("moved", "machine.network");
        configs.insert(n.name.clone(), Zeroizing::new("moved".into()));
    }
    let outcome = reconcile(&c, &store, &d, &configs).await;
    assert!(outcome.converged(), "{outcome:?}");
    c.with(|w| {
        for n in &w.nodes {
            assert_eq!(n.version, "v1.12.2", "{} upgraded", n.name);
        }
        assert_eq!(w.nodes[1].address, "10.0.0.52");
        assert_eq!(w.nodes[3].address, "10.0.0.54");
        let order: Vec<String> = w
            .calls
            .iter()
            .map(|c| format!("{} {}", c.method, c.address))
            .collect();
        for (from, to) in [("10.0.0.2", "10.0.0.52"), ("10.0.0.4", "10.0.0.54")] {
            let apply = order.iter().position(|c| *c == format!("apply {from}"));
            let upgrade = order.iter().position(|c| *c == format!("upgrade {to}"));
            assert!(
                apply.is_some() && upgrade.is_some() && apply < upgrade,
                "moved at {from}, then upgraded at {to}: {order:?}"
            );
        }
        assert!(!order.iter().any(|c| c.starts_with("reset")), "{order:?}");
    });
}

/// Fault: worker-2 powered off during a Talos upgrade, with `upgrade.workerConcurrency: 1`.
/// worker-1 is not rebooted while worker-2 is down (two workers down at once), the outcome
/// says why, and the rollout finishes once worker-2 is back. With a concurrency of 2 it goes on.
#[tokio::test]
async fn a_worker_is_not_disrupted_while_another_is_down() {
    let c = FakeCluster::new(1, 2, "v1.11.6");
    let (d, configs) = desired(&c, "v1.12.2", "", "machine.env");
    let store = store_of(&c, &d);
    c.with(|w| w.nodes[2].mode = Mode::Off);
    let outcome = reconcile(&c, &store, &d, &configs).await;
    let why = waiting_reason(&outcome);
    assert!(
        why.contains("worker-2 is down") && why.contains("workerConcurrency: 1"),
        "{why}"
    );
    assert!(
        !c.calls_to("worker-1").contains(&"upgrade"),
        "worker-1 kept running"
    );
    c.with(|w| w.nodes[2].mode = Mode::Configured);
    let outcome = reconcile(&c, &store, &d, &configs).await;
    assert!(outcome.converged(), "{outcome:?}");
    c.with(|w| assert!(w.nodes.iter().all(|n| n.version == "v1.12.2")));

    let c = FakeCluster::new(1, 2, "v1.11.6");
    let (mut d, configs) = desired(&c, "v1.12.2", "", "machine.env");
    d.worker_concurrency = 2;
    let store = store_of(&c, &d);
    c.with(|w| w.nodes[2].mode = Mode::Off);
    reconcile(&c, &store, &d, &configs).await;
    assert!(
        c.calls_to("worker-1").contains(&"upgrade"),
        "two may be down"
    );
}

/// Fault: hostile or invalid input that vixen's own checks let through and Talos refuses
/// (law 5). The dry run of every config before the first call finds it on the last node of
/// the plan, and not a single node is changed, the first ones included.
#[tokio::test]
async fn a_config_a_node_refuses_stops_the_plan_before_any_call() {
    let c = FakeCluster::new(3, 2, "v1.12.2");
    let (old, _) = desired(&c, "v1.12.2", "", "machine.nodeLabels");
    let store = store_of(&c, &old);
    let (d, mut configs) = desired(&c, "v1.12.2", "labels", "machine.nodeLabels");
    configs.insert("worker-2".into(), Zeroizing::new("labels bad".into()));
    c.with(|w| w.refuse = Some("bad".into()));
    let outcome = reconcile(&c, &store, &d, &configs).await;
    match &outcome {
        Outcome::Refused(vixen_plan::Refusal::ConfigRefused { node, message }) => {
            assert_eq!(node, "worker-2");
            assert!(message.contains("invalid config"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        c.with(|w| w.calls.is_empty()),
        "{:?}",
        c.with(|w| w.calls.clone())
    );
}

/// Fault: the agent dies right after sending a reboot; the node comes back before the agent
/// does. The resumed gate waits for a new boot ID recorded before the reboot, so it neither
/// passes on the old boot nor waits out its timeout for a "going down" it missed.
#[tokio::test]
async fn the_reboot_gate_proves_the_reboot_by_the_boot_id_across_a_crash() {
    let c = FakeCluster::new(3, 0, "v1.12.2");
    let (old, _) = desired(&c, "v1.12.2", "", "machine.env");
    let store = store_of(&c, &old);
    let (d, configs) = desired(&c, "v1.12.2", "env", "machine.env");
    // plan (1); cp-1: safe-check (2, 3), apply in flight (4), then the agent dies.
    *store.fail_after.lock().unwrap() = Some(4);
    let engine = Engine {
        talos: &c,
        kube: &c,
        store: &store,
        timeouts: timeouts(),
        progress: &Quiet,
        backup: None,
    };
    assert!(
        engine.reconcile(&d, &configs).await.is_err(),
        "the agent died"
    );
    let journal = store.state.lock().unwrap().run.clone().expect("journaled");
    assert_eq!(
        journal.boots.get("cp-1").map(String::as_str),
        Some("boot-1"),
        "boot ID read before the reboot"
    );
    // The node finished its reboot while the agent was away.
    c.with(|w| w.nodes[0].down_for = 0);
    *store.fail_after.lock().unwrap() = None;
    let outcome = reconcile(&c, &store, &d, &configs).await;
    assert!(outcome.converged(), "{outcome:?}");
    assert_eq!(c.calls_to("cp-1"), ["apply"], "not sent again");
    assert!(store.state.lock().unwrap().run.is_none());
}

/// The configs each node booted with.
fn booted(c: &FakeCluster) -> Vec<(String, Option<String>)> {
    c.with(|w| {
        w.nodes
            .iter()
            .map(|n| (n.name.clone(), n.booted_config.clone()))
            .collect()
    })
}

/// Fault covered: Talos 1.14 answers a REBOOT-mode apply with Unimplemented and never reboots
/// on AUTO (v1.14 `v1alpha1_server.go` ApplyConfiguration; the fake does the same), so a
/// reboot-needing change sent as before would stop at the first node, or be applied and never
/// take effect. Each node gets NO_REBOOT and then vixen's own reboot, one node at a time, and
/// boots the new config.
#[tokio::test]
async fn talos_1_14_reboot_needing_change_is_applied_live_then_rebooted_node_by_node() {
    let c = FakeCluster::new(3, 1, "v1.14.0");
    let (old, _) = desired(&c, "v1.14.0", "", "machine.env");
    let store = store_of(&c, &old);
    let (d, configs) = desired(&c, "v1.14.0", "env TZ", "machine.env");
    let outcome = reconcile(&c, &store, &d, &configs).await;
    assert!(outcome.converged(), "{outcome:?}");
    for n in ["cp-1", "cp-2", "cp-3", "worker-1"] {
        assert_eq!(c.calls_to(n), ["apply", "reboot"], "{n}");
    }
    // One node at a time: its apply and reboot before the next node's apply.
    let order: Vec<String> = c.with(|w| {
        w.calls
            .iter()
            .map(|call| format!("{} {}", call.address, call.method))
            .collect()
    });
    assert_eq!(
        order,
        [
            "10.0.0.1 apply",
            "10.0.0.1 reboot",
            "10.0.0.2 apply",
            "10.0.0.2 reboot",
            "10.0.0.3 apply",
            "10.0.0.3 reboot",
            "10.0.0.4 apply",
            "10.0.0.4 reboot"
        ]
    );
    assert!(
        booted(&c)
            .iter()
            .all(|(_, b)| b.as_deref() == Some("env TZ")),
        "every node booted its new config: {:?}",
        booted(&c)
    );
    assert!(
        store
            .state
            .lock()
            .unwrap()
            .inventory
            .nodes
            .iter()
            .all(|n| !n.reboot_pending)
    );

    // cp-2 powered off: the same change on 1.14 touches no node (the etcd check comes first).
    let c = FakeCluster::new(3, 0, "v1.14.0");
    let (old, _) = desired(&c, "v1.14.0", "", "machine.env");
    let store = store_of(&c, &old);
    c.with(|w| w.nodes[1].mode = Mode::Off);
    let outcome = reconcile(&c, &store, &d_for(&c, "env TZ"), &configs_for(&c, "env TZ")).await;
    let why = waiting_reason(&outcome);
    assert!(why.contains("would leave 1 of 3 voters"), "{why}");
    assert!(
        c.with(|w| w.calls.is_empty()),
        "{:?}",
        c.with(|w| w.calls.clone())
    );
}

fn d_for(c: &FakeCluster, whole: &str) -> Desired {
    desired(c, "v1.14.0", whole, "machine.env").0
}

fn configs_for(c: &FakeCluster, whole: &str) -> Configs {
    desired(c, "v1.14.0", whole, "machine.env").1
}

/// Fault covered: the agent dies after a 1.14 node took its config live and before vixen
/// rebooted it, and Git moves on before the next run (the journaled plan is dropped). The
/// inventory owes the node its reboot: the next run reboots it once, without applying again,
/// and it boots the config.
#[tokio::test]
async fn a_crash_between_the_1_14_apply_and_its_reboot_still_reboots_the_node() {
    let c = FakeCluster::new(1, 0, "v1.14.0");
    let (old, _) = desired(&c, "v1.14.0", "", "machine.env");
    let store = store_of(&c, &old);
    let (d, configs) = desired(&c, "v1.14.0", "env TZ", "machine.env");
    // plan saved (1), apply in flight (2), apply done (3): the 4th save (the reboot about to
    // be sent) is the agent dying.
    *store.fail_after.lock().unwrap() = Some(3);
    let engine = Engine {
        talos: &c,
        kube: &c,
        store: &store,
        timeouts: timeouts(),
        progress: &Quiet,
        backup: None,
    };
    assert!(
        engine.reconcile(&d, &configs).await.is_err(),
        "the agent died"
    );
    assert_eq!(c.calls_to("cp-1"), ["apply"]);
    assert_eq!(booted(&c)[0].1.as_deref(), Some(""), "not rebooted yet");
    *store.fail_after.lock().unwrap() = None;

    // Git moves on (another stabilization wait): a new revision, the journaled plan is dropped.
    let mut d2 = d.clone();
    d2.stabilization = Duration::from_millis(1);
    let outcome = reconcile(&c, &store, &d2, &configs).await;
    assert!(outcome.converged(), "{outcome:?}");
    assert_eq!(c.calls_to("cp-1"), ["apply", "reboot"]);
    assert_eq!(booted(&c)[0].1.as_deref(), Some("env TZ"));
    // And nothing more is owed.
    let outcome = reconcile(&c, &store, &d2, &configs).await;
    assert!(outcome.converged(), "{outcome:?}");
    assert_eq!(c.calls_to("cp-1"), ["apply", "reboot"]);
}

/// The engine on the fakes, for the drift tests.
fn engine<'a>(
    c: &'a FakeCluster,
    store: &'a MemoryStore,
) -> Engine<'a, FakeCluster, FakeCluster, MemoryStore> {
    Engine {
        talos: c,
        kube: c,
        store,
        timeouts: timeouts(),
        progress: &Quiet,
        backup: None,
    }
}

/// A converged fake cluster every node of which runs `cfg`, and worker-1 changed behind
/// vixen's back.
fn drifted_cluster(
    policy: vixen_plan::DriftPolicy,
) -> (FakeCluster, MemoryStore, Desired, Configs) {
    let c = FakeCluster::new(3, 2, "v1.12.2");
    let (mut d, configs) = desired(&c, "v1.12.2", "cfg", "machine.nodeLabels");
    d.drift = policy;
    let store = store_of(&c, &d);
    c.with(|w| {
        for n in &mut w.nodes {
            n.config = Some("cfg".into());
        }
        w.nodes[3].config = Some("cfg, changed out of band".into());
    });
    (c, store, d, configs)
}

/// Fault: a node's config changed out of band (drift). A resync finds it with a dry run and
/// gives it its rendered config again through a normal plan step; a plain reconcile (an idle
/// agent's) sends no dry run and sees nothing. Fails when the drift check or the planner's
/// drift rule is removed.
#[tokio::test]
async fn a_resync_corrects_drift_with_a_normal_step() {
    let (c, store, d, configs) = drifted_cluster(vixen_plan::DriftPolicy::Correct);
    let r = engine(&c, &store).reconcile(&d, &configs).await.unwrap();
    assert!(r.outcome.converged() && r.drift.is_empty(), "{r:?}");
    assert!(c.with(|w| w.calls.is_empty()));
    let r = engine(&c, &store).resync(&d, &configs).await.unwrap();
    assert!(r.outcome.converged(), "{:?}", r.outcome);
    let drifted: Vec<&str> = r.drift.iter().map(|x| x.node.as_str()).collect();
    assert_eq!(drifted, ["worker-1"]);
    assert_eq!(c.calls_to("worker-1"), ["apply"]);
    assert_eq!(
        c.with(|w| w.calls.len()),
        1,
        "{:?}",
        c.with(|w| w.calls.clone())
    );
    assert_eq!(
        c.with(|w| w.nodes[3].config.clone()).as_deref(),
        Some("cfg")
    );
    // Corrected: the next resync finds nothing.
    let r = engine(&c, &store).resync(&d, &configs).await.unwrap();
    assert!(r.drift.is_empty(), "{:?}", r.drift);
}

/// Fault: drift with `drift: report`: it is reported, and nothing is changed.
#[tokio::test]
async fn drift_is_only_reported_with_the_report_policy() {
    let (c, store, d, configs) = drifted_cluster(vixen_plan::DriftPolicy::Report);
    let r = engine(&c, &store).resync(&d, &configs).await.unwrap();
    assert!(r.outcome.converged(), "{:?}", r.outcome);
    assert_eq!(r.drift.len(), 1);
    assert!(c.with(|w| w.calls.is_empty()));
    assert_ne!(
        c.with(|w| w.nodes[3].config.clone()).as_deref(),
        Some("cfg")
    );
}

/// Fault: a node down during the drift check. It is not drift, and it holds up neither the
/// check nor the correction of the others.
#[tokio::test]
async fn a_node_down_is_not_drift_and_does_not_block_the_others() {
    let (c, store, d, configs) = drifted_cluster(vixen_plan::DriftPolicy::Correct);
    c.with(|w| w.nodes[4].mode = Mode::Off);
    let r = engine(&c, &store).resync(&d, &configs).await.unwrap();
    let drifted: Vec<&str> = r.drift.iter().map(|x| x.node.as_str()).collect();
    assert_eq!(drifted, ["worker-1"]);
    assert_eq!(c.calls_to("worker-1"), ["apply"]);
    assert!(c.calls_to("worker-2").is_empty());
    assert!(
        waiting_reason(&r.outcome).contains("worker-2"),
        "{:?}",
        r.outcome
    );
}

/// `vixen plan`'s preview: the drifted node's step, with Talos' own dry-run answer, and no
/// change made.
#[tokio::test]
async fn the_preview_shows_the_drift_step_and_its_dry_run_without_acting() {
    let (c, store, d, configs) = drifted_cluster(vixen_plan::DriftPolicy::Correct);
    let p = engine(&c, &store).plan_only(&d, &configs).await.unwrap();
    let plan = p.plan.unwrap();
    let applies: Vec<(usize, &str)> = plan
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s.action, vixen_plan::Action::ApplyConfig { .. }))
        .map(|(i, s)| (i, s.node.as_str()))
        .collect();
    assert_eq!(applies.len(), 1, "{plan:?}");
    assert_eq!(applies[0].1, "worker-1");
    assert_eq!(
        p.dry_runs.get(&applies[0].0).cloned(),
        Some(Ok("Config diff: changed".to_string()))
    );
    assert!(c.with(|w| w.calls.is_empty()));
}
