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
    };
    (desired, configs)
}

/// A store that remembers every node as configured with `whole` in `section`.
pub(crate) fn store_of(d: &Desired) -> MemoryStore {
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
    let store = store_of(&old);
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
    let store = store_of(&d);
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
        let store = store_of(&d);
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
    let store = store_of(&all);
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
    let store = store_of(&all);
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
    let store = store_of(&d);
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
    let store = store_of(&d);
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

/// Fault: hostile or invalid input that vixen's own checks let through and Talos refuses
/// (law 5). The dry run of every config before the first call finds it on the last node of
/// the plan, and not a single node is changed, the first ones included.
#[tokio::test]
async fn a_config_a_node_refuses_stops_the_plan_before_any_call() {
    let c = FakeCluster::new(3, 2, "v1.12.2");
    let (old, _) = desired(&c, "v1.12.2", "", "machine.nodeLabels");
    let store = store_of(&old);
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
    let store = store_of(&old);
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
