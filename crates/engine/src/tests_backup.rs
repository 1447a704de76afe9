//! A fresh etcd snapshot before risky plans, on the fakes: taken before the first etcd change,
//! and, under `required`, its failure stops the plan before any call that changes a node.

use vixen_model::backup::BeforeRisky;
use vixen_plan::Refusal;

use crate::fake::{FakeCluster, MemoryStore, Mode};
use crate::fake_backup::FakeSink;
use crate::ports::SnapshotSink;
use crate::tests::{desired, engine_with, store_of};
use crate::{Configs, Outcome};

async fn reconcile_with(
    c: &FakeCluster,
    store: &MemoryStore,
    d: &vixen_plan::Desired,
    configs: &Configs,
    sink: &dyn SnapshotSink,
) -> Outcome {
    engine_with(c, store, Some(sink))
        .reconcile(d, configs)
        .await
        .unwrap()
        .outcome
}

/// 3 control planes in the inventory, cp-3 dropped from Git.
fn cp_removal() -> (FakeCluster, MemoryStore, vixen_plan::Desired, Configs) {
    let c = FakeCluster::new(3, 1, "v1.12.2");
    let (all, _) = desired(&c, "v1.12.2", "", "machine.env");
    let store = store_of(&c, &all);
    let (mut d, mut configs) = desired(&c, "v1.12.2", "", "machine.env");
    d.nodes.retain(|n| n.name != "cp-3");
    configs.remove("cp-3");
    (c, store, d, configs)
}

/// A control-plane removal: the snapshot is taken (from a non-leader member, whose metadata
/// is recorded) before the leave, and the removal then goes on.
#[tokio::test]
async fn a_control_plane_removal_is_preceded_by_a_snapshot() {
    let (c, store, d, configs) = cp_removal();
    let sink = FakeSink::new(BeforeRisky::Required);
    let outcome = reconcile_with(&c, &store, &d, &configs, &sink).await;
    assert!(outcome.converged(), "{outcome:?}");
    let saved = sink.saved();
    assert_eq!(saved.len(), 1, "{saved:?}");
    let (_, source, size) = &saved[0];
    assert!(
        source.reason.contains("control-plane removal of cp-3"),
        "{source:?}"
    );
    assert_ne!(source.member, "cp-1", "the leader is asked last");
    assert!(*size > 4096);
    let calls: Vec<&str> = c.with(|w| w.calls.iter().map(|c| c.method).collect());
    let snap = calls.iter().position(|m| *m == "etcd_snapshot").unwrap();
    let leave = calls.iter().position(|m| *m == "etcd_leave").unwrap();
    assert!(snap < leave, "{calls:?}");
}

/// Fault: the object store answers 500 (the sink fails). Under `required` the plan stops with
/// the reason before any etcd change or any other call that changes a node; the cluster is
/// as before. The next reconcile, with the store back, carries the removal out.
#[tokio::test]
async fn a_failed_snapshot_under_required_stops_the_plan_before_any_change() {
    let (c, store, d, configs) = cp_removal();
    let sink = FakeSink::new(BeforeRisky::Required).failing("put: 500 Internal Server Error");
    let outcome = reconcile_with(&c, &store, &d, &configs, &sink).await;
    match &outcome {
        Outcome::Refused(Refusal::SnapshotFailed { risk, error }) => {
            assert!(risk.contains("cp-3"), "{risk}");
            assert!(error.contains("500"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    let calls: Vec<&str> = c.with(|w| w.calls.iter().map(|c| c.method).collect());
    assert!(
        calls.iter().all(|m| *m == "etcd_snapshot"),
        "only the snapshot was asked for: {calls:?}"
    );
    assert_eq!(
        c.with(|w| w.nodes.iter().filter(|n| n.member.is_some()).count()),
        3
    );

    *sink.fail.lock().unwrap() = None;
    let outcome = reconcile_with(&c, &store, &d, &configs, &sink).await;
    assert!(outcome.converged(), "{outcome:?}");
    assert!(c.calls_to("cp-3").contains(&"etcd_leave"));
}

/// Under `best-effort` a failed snapshot is only reported; under `off` none is taken.
#[tokio::test]
async fn best_effort_goes_on_and_off_takes_none() {
    let (c, store, d, configs) = cp_removal();
    let sink = FakeSink::new(BeforeRisky::BestEffort).failing("put: 500");
    let outcome = reconcile_with(&c, &store, &d, &configs, &sink).await;
    assert!(outcome.converged(), "{outcome:?}");
    assert!(c.calls_to("cp-3").contains(&"etcd_leave"));

    let (c, store, d, configs) = cp_removal();
    let sink = FakeSink::new(BeforeRisky::Off);
    let outcome = reconcile_with(&c, &store, &d, &configs, &sink).await;
    assert!(outcome.converged(), "{outcome:?}");
    let calls: Vec<&str> = c.with(|w| w.calls.iter().map(|c| c.method).collect());
    assert!(!calls.contains(&"etcd_snapshot"), "{calls:?}");
}

/// A plan that risks nothing (a live config change) takes no snapshot.
#[tokio::test]
async fn a_plan_that_risks_nothing_takes_no_snapshot() {
    let c = FakeCluster::new(3, 1, "v1.12.2");
    let (old, _) = desired(&c, "v1.12.2", "", "machine.nodeLabels");
    let store = store_of(&c, &old);
    let (d, configs) = desired(&c, "v1.12.2", "labels", "machine.nodeLabels");
    let sink = FakeSink::new(BeforeRisky::Required).failing("must not be called");
    let outcome = reconcile_with(&c, &store, &d, &configs, &sink).await;
    assert!(outcome.converged(), "{outcome:?}");
    assert!(sink.saved().is_empty());
}

/// A scheduled snapshot on a converged cluster: taken from a follower, with nothing but reads
/// sent to the nodes.
#[tokio::test]
async fn a_scheduled_snapshot_reads_only() {
    let c = FakeCluster::new(3, 1, "v1.12.2");
    let (d, _) = desired(&c, "v1.12.2", "", "");
    let store = store_of(&c, &d);
    let sink = FakeSink::new(BeforeRisky::Required);
    let key = engine_with(&c, &store, Some(&sink))
        .snapshot(&d, "scheduled")
        .await
        .unwrap();
    assert!(!key.is_empty());
    let saved = sink.saved();
    assert_eq!(saved.len(), 1);
    assert_eq!(saved[0].1.reason, "scheduled");
    assert_ne!(saved[0].1.member, "cp-1", "the leader is asked last");
    // The fake records every call that is not a read: only the snapshot itself is there.
    let calls: Vec<&str> = c.with(|w| w.calls.iter().map(|c| c.method).collect());
    assert_eq!(calls, ["etcd_snapshot"]);
}

/// Fault: a follower is powered off. The snapshot comes from the other follower, never from a
/// member that does not answer; with every control plane but the leader down, from the leader.
#[tokio::test]
async fn a_scheduled_snapshot_skips_a_member_that_is_down() {
    let c = FakeCluster::new(3, 0, "v1.12.2");
    let (d, _) = desired(&c, "v1.12.2", "", "");
    let store = store_of(&c, &d);
    let sink = FakeSink::new(BeforeRisky::Required);
    c.with(|w| w.nodes[1].mode = Mode::Off);
    engine_with(&c, &store, Some(&sink))
        .snapshot(&d, "scheduled")
        .await
        .unwrap();
    assert_eq!(sink.saved()[0].1.member, "cp-3");
    c.with(|w| w.nodes[2].mode = Mode::Off);
    engine_with(&c, &store, Some(&sink))
        .snapshot(&d, "scheduled")
        .await
        .unwrap();
    assert_eq!(sink.saved()[1].1.member, "cp-1");
}
