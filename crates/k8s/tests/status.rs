//! The VixenCluster status: kstatus conditions, the printer table, and the CRD in manifests/.

use k8s_openapi::jiff::Timestamp;
use kube::CustomResourceExt as _;
use vixen_k8s::{
    NodeStatus, Phase, VixenCluster, VixenClusterSpec, VixenClusterStatus, render_table,
};

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn cond<'a>(st: &'a VixenClusterStatus, ty: &str) -> &'a vixen_k8s::Condition {
    st.conditions.iter().find(|c| c.type_ == ty).unwrap()
}

#[test]
fn conditions_follow_kstatus_and_keep_their_transition_time() {
    let mut st = VixenClusterStatus::default();
    st.set_phase(
        Phase::Reconciling,
        "Progressing",
        "applying abc",
        t("2026-01-01T00:00:00Z"),
    );
    assert_eq!(cond(&st, "Reconciling").status, "True");
    assert_eq!(cond(&st, "Ready").status, "False");
    assert_eq!(cond(&st, "Stalled").status, "False");
    st.set_phase(
        Phase::Waiting,
        "Waiting",
        "waiting on w1",
        t("2026-01-01T00:01:00Z"),
    );
    assert_eq!(
        cond(&st, "Reconciling").last_transition_time,
        "2026-01-01T00:00:00Z",
        "unchanged status keeps its time"
    );
    st.set_phase(
        Phase::Failed,
        "StepFailed",
        "step 2 failed",
        t("2026-01-01T00:02:00Z"),
    );
    assert_eq!(cond(&st, "Stalled").status, "True");
    assert_eq!(cond(&st, "Stalled").reason, "StepFailed");
    assert_eq!(cond(&st, "Reconciling").status, "False");
    st.set_phase(
        Phase::Ready,
        "Applied",
        "applied in 3 steps",
        t("2026-01-01T00:03:00Z"),
    );
    assert_eq!(cond(&st, "Ready").status, "True");
    assert_eq!(
        cond(&st, "Ready").last_transition_time,
        "2026-01-01T00:03:00Z"
    );
    assert_eq!(cond(&st, "Stalled").status, "False");
    assert_eq!(st.phase, "Ready");
}

/// The `Drifted` condition survives the phase changes of the next reconciles, and keeps its
/// transition time while its status holds.
#[test]
fn the_drifted_condition_is_kept_across_phases() {
    let mut st = VixenClusterStatus::default();
    st.set_condition(
        "Drifted",
        true,
        "DriftReported",
        "worker-1",
        t("2026-01-01T00:00:00Z"),
    );
    st.set_phase(
        Phase::Reconciling,
        "Progressing",
        "x",
        t("2026-01-01T00:01:00Z"),
    );
    st.set_phase(Phase::Ready, "Applied", "y", t("2026-01-01T00:02:00Z"));
    st.set_condition(
        "Drifted",
        true,
        "DriftReported",
        "worker-1, worker-2",
        t("2026-01-01T00:03:00Z"),
    );
    let c = cond(&st, "Drifted");
    assert_eq!(
        (c.status.as_str(), c.message.as_str()),
        ("True", "worker-1, worker-2")
    );
    assert_eq!(c.last_transition_time, "2026-01-01T00:00:00Z");
    assert_eq!(st.conditions.len(), 4);
    st.set_condition("Drifted", false, "NoDrift", "", t("2026-01-01T00:04:00Z"));
    assert_eq!(
        cond(&st, "Drifted").last_transition_time,
        "2026-01-01T00:04:00Z"
    );
}

#[test]
fn status_table_shows_revision_nodes_and_conditions() {
    let mut obj = VixenCluster::new(
        "homelab",
        VixenClusterSpec {
            source: "https://git.example/infra.git".into(),
            cluster: "homelab".into(),
        },
    );
    let mut st = VixenClusterStatus {
        revision: Some("a".repeat(40)),
        last_applied_revision: Some("a".repeat(40)),
        etcd_members: Some(3),
        ..Default::default()
    };
    st.set_nodes(vec![
        NodeStatus {
            name: "cp1".into(),
            role: "controlplane".into(),
            version: Some("v1.11.6".into()),
            state: "ready".into(),
        },
        NodeStatus {
            name: "w1".into(),
            role: "worker".into(),
            version: None,
            state: "unreachable".into(),
        },
    ]);
    st.set_phase(
        Phase::Waiting,
        "Waiting",
        "waiting on w1",
        t("2026-01-01T00:00:00Z"),
    );
    assert_eq!(st.node_summary, "1/2 ready");
    obj.status = Some(st);
    let table = render_table(&obj);
    assert!(
        table.contains("phase     Waiting  waiting on w1"),
        "{table}"
    );
    assert!(
        table.contains("cp1   controlplane  v1.11.6     ready"),
        "{table}"
    );
    assert!(
        table.contains("w1    worker        -           unreachable"),
        "{table}"
    );
    assert!(table.contains("Reconciling   True"), "{table}");
}

/// manifests/crd.yaml must be what the code generates (regenerate with
/// `VIXEN_WRITE_CRD=1 cargo test -p vixen-k8s --test status`).
#[test]
fn crd_in_manifests_matches_the_code() {
    let path = &std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(
            || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            std::path::PathBuf::from,
        )
        .join("../../manifests/crd.yaml");
    let generated = format!(
        "# Generated from crates/k8s/src/status.rs; do not edit.\n{}",
        serde_yaml_ng::to_string(&VixenCluster::crd()).unwrap()
    );
    if std::env::var_os("VIXEN_WRITE_CRD").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    assert_eq!(
        on_disk, generated,
        "manifests/crd.yaml is stale: rerun with VIXEN_WRITE_CRD=1"
    );
}
