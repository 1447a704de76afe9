//! The lab answers as real Talos does (issue 13): each test names the siderolabs/talos file whose
//! behaviour it holds the lab to, asserts the exact gRPC code and message, and checks effects in
//! lab.json, calls.jsonl or etcd. Addresses: 127.70.x.x to 127.79.x.x.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tonic::Code;
use vixen_lab::{CallRecord, Fault, Lab, LabSpec, LabStatus, NodeSpec, Role, Timing};
use vixen_talos::api::machine::machine_service_client::MachineServiceClient;
use vixen_talos::{ApplyMode, Client, Error};

/// Nodes `name` with maintenance address `127.<a>.<b>.<i+1>`.
fn spec7(a: u8, b: u8, nodes: &[(&str, Role, &str)]) -> LabSpec {
    LabSpec {
        nodes: nodes
            .iter()
            .enumerate()
            .map(|(i, (name, role, version))| NodeSpec {
                name: (*name).into(),
                role: *role,
                maintenance_address: format!("127.{a}.{b}.{}", i + 1).parse().unwrap(),
                talos_version: (*version).into(),
            })
            .collect(),
    }
}

fn refusal(e: &Error) -> (Option<Code>, String) {
    match e {
        Error::Rpc { code, message, .. } => (Some(*code), message.clone()),
        other => (other.code(), other.to_string()),
    }
}

fn calls(lab: &Lab, method: &str) -> Vec<CallRecord> {
    CallRecord::load_all(lab.dir())
        .unwrap()
        .into_iter()
        .filter(|r| r.method.ends_with(method))
        .collect()
}

/// A raw MachineService client on `c`'s channel (for fields the client does not surface).
fn raw(c: &Client) -> MachineServiceClient<tonic::transport::Channel> {
    MachineServiceClient::new(c.raw_channel())
}

/// Installs one node and returns its admin client.
async fn up(c: &Cluster, role: Role, name: &str, maint: &str, mgmt: &str, v: &str) -> Client {
    let cfg = c.config(role, name, &[mgmt], v);
    install(c, maint, &cfg, mgmt).await;
    admin(c, mgmt)
}

/// Fault covered: the lab listed only healthy services with empty events, so vixen's "every
/// service healthy" gate passed in the lab and never on metal, where `dashboard` has no health
/// check (`health/status.go` AsProto: unknown=true, healthy=false) and talosctl reads the last
/// event (`pkg/cluster/check/service.go`). The lab lists a metal node's services per role, and
/// `vixen_talos::health::judge` passes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_are_those_of_a_metal_node_and_judge_passes_with_the_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::generate();
    let v = "v1.11.6";
    let spec = spec7(
        70,
        1,
        &[("cp1", Role::Controlplane, v), ("w1", Role::Worker, v)],
    );
    let lab = start(&spec, dir.path()).await;
    let cp = up(
        &c,
        Role::Controlplane,
        "cp1",
        "127.70.1.1",
        "127.70.1.11",
        v,
    )
    .await;

    // Before bootstrap: etcd waits, so the node is not healthy, and judge says why.
    let before = cp.service_list().await.unwrap();
    let verdict = vixen_talos::judge(&before);
    assert!(!verdict.healthy);
    assert!(
        verdict
            .reasons
            .contains(&"etcd: state Preparing".to_string()),
        "{:?}",
        verdict.reasons
    );
    cp.bootstrap_when_ready(Duration::from_secs(10))
        .await
        .unwrap();
    let w = up(&c, Role::Worker, "w1", "127.70.1.2", "127.70.1.12", v).await;

    let ids = |s: &[vixen_talos::ServiceStatus]| s.iter().map(|s| s.id.clone()).collect::<Vec<_>>();
    until("etcd healthy", 30, || async {
        vixen_talos::judge(&cp.service_list().await.unwrap()).healthy
    })
    .await;
    let cps = cp.service_list().await.unwrap();
    assert_eq!(
        ids(&cps),
        [
            "apid",
            "auditd",
            "containerd",
            "cri",
            "dashboard",
            "etcd",
            "kubelet",
            "machined",
            "syslogd",
            "trustd",
            "udevd"
        ]
    );
    until("worker cri up", 10, || async {
        vixen_talos::judge(&w.service_list().await.unwrap()).healthy
    })
    .await;
    let ws = w.service_list().await.unwrap();
    assert_eq!(
        ids(&ws),
        [
            "apid",
            "auditd",
            "containerd",
            "cri",
            "dashboard",
            "kubelet",
            "machined",
            "syslogd",
            "udevd"
        ]
    );
    let dash = ws.iter().find(|s| s.id == "dashboard").unwrap();
    assert!(dash.health_unknown && !dash.healthy, "{dash:?}");
    assert!(vixen_talos::judge(&ws).healthy);
    // Every service has events; the last one is what talosctl checks.
    let reply = raw(&w).service_list(()).await.unwrap().into_inner();
    for s in &reply.messages[0].services {
        let events = &s.events.as_ref().unwrap().events;
        assert!(!events.is_empty(), "{} has no events", s.id);
        assert_eq!(events.last().unwrap().state, s.state);
    }
    assert_eq!(
        ws.iter()
            .find(|s| s.id == "kubelet")
            .unwrap()
            .last_event
            .as_deref(),
        Some("[Running] Health check successful")
    );

    // A node whose etcd stopped is not healthy: etcd no longer runs.
    lab.fault("cp1", Fault::EtcdDown).await.unwrap();
    let verdict = vixen_talos::judge(&cp.service_list().await.unwrap());
    assert_eq!(verdict.reasons, vec!["etcd: state Finished"]);
    assert_eq!(
        LabStatus::load(dir.path()).unwrap().nodes[0].etcd_client_url,
        None
    );
    lab.shutdown().await;
}

/// Fault covered: the lab refused anonymous 1.11 maintenance calls with PermissionDenied and
/// reported REBOOT for a 1.13 maintenance apply. Real 1.11 (`internal/app/maintenance/server.go`,
/// `assertAdminRole`) answers Unimplemented "API is not implemented in maintenance mode" to
/// Version/Upgrade/Reset, the generated stub's "method X not implemented" to the rest, and
/// refuses NO_REBOOT/STAGED; 1.13 (`v1alpha1_server.go` ApplyConfiguration) turns REBOOT into
/// NO_REBOOT in maintenance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_mode_answers_as_each_version_does() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::generate();
    let spec = spec7(
        70,
        2,
        &[
            ("old", Role::Controlplane, "v1.11.6"),
            ("new", Role::Controlplane, "v1.13.0"),
        ],
    );
    let lab = start(&spec, dir.path()).await;
    let m = maint("127.70.2.1");
    let not_impl = (
        Some(Code::Unimplemented),
        "API is not implemented in maintenance mode".to_string(),
    );
    assert_eq!(refusal(&m.version().await.unwrap_err()), not_impl);
    assert_eq!(refusal(&m.reset(false, true).await.unwrap_err()), not_impl);
    let up = m.upgrade_legacy("ghcr.io/siderolabs/installer:v1.11.6", false, false);
    assert_eq!(refusal(&up.await.unwrap_err()), not_impl);
    assert_eq!(
        refusal(&m.service_list().await.unwrap_err()),
        (
            Some(Code::Unimplemented),
            "method ServiceList not implemented".into()
        )
    );
    let cfg = c.config(Role::Controlplane, "old", &["127.70.2.11"], "v1.11.6");
    let nr = m.apply_configuration(&cfg, ApplyMode::NoReboot, false, None);
    assert_eq!(
        refusal(&nr.await.unwrap_err()),
        (
            Some(Code::Unimplemented),
            "apply configuration --mode='no-reboot' is not supported in maintenance mode".into()
        )
    );
    // Still in maintenance after the refusals.
    assert_eq!(
        LabStatus::load(dir.path()).unwrap().nodes[0].mode,
        "maintenance"
    );

    // 1.13: a REBOOT-mode apply in maintenance reports NO_REBOOT, and the node installs.
    let cfg = c.config(Role::Controlplane, "new", &["127.70.2.12"], "v1.13.0");
    let out = maint("127.70.2.2")
        .apply_configuration(&cfg, ApplyMode::Reboot, false, None)
        .await
        .unwrap();
    assert_eq!(out.mode, Some(ApplyMode::NoReboot));
    wait_configured(&c, "127.70.2.12").await;
    assert_eq!(
        LabStatus::load(dir.path()).unwrap().nodes[1].mode,
        "configured"
    );
    let recs = calls(&lab, "/ApplyConfiguration");
    assert!(recs.iter().any(|r| r.node == "old"
        && r.result
            == "Unimplemented: apply configuration --mode='no-reboot' is not supported in \
                maintenance mode"));
    assert!(
        recs.iter()
            .any(|r| r.node == "new" && r.detail["mode"] == "REBOOT" && r.result == "ok")
    );
    lab.shutdown().await;
}

/// Fault covered: the lab answered FailedPrecondition to a leave on a control plane whose etcd
/// is stopped, and vixen's fallback relied on it. Real Talos (`internal/pkg/etcd/local.go`
/// `GetLocalMemberID`, `etcd.go` `LeaveCluster`) waits for the local member, then fails with a
/// plain error (Unknown); workers answer Unimplemented (`checkControlplane`); RemoveMemberByID
/// goes through every control plane's endpoint, NotFound for an unknown member and Unknown for
/// other failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_errors_have_talos_codes() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::generate();
    let v = "v1.13.0";
    let spec = spec7(
        70,
        3,
        &[
            ("cp1", Role::Controlplane, v),
            ("cp2", Role::Controlplane, v),
            ("w1", Role::Worker, v),
            ("cp3", Role::Controlplane, v),
        ],
    );
    let lab = start(&spec, dir.path()).await;
    lab.set_timing(Timing {
        etcd_member_wait_ms: 700,
        ..Timing::default()
    });
    let cp1 = up(
        &c,
        Role::Controlplane,
        "cp1",
        "127.70.3.1",
        "127.70.3.11",
        v,
    )
    .await;
    // No etcd anywhere yet: no endpoints to remove through.
    assert_eq!(
        refusal(&cp1.etcd_remove_member_by_id(7).await.unwrap_err()),
        (
            Some(Code::Unknown),
            "failed to create etcd client: no controlplane endpoints discovered yet".into()
        )
    );
    cp1.bootstrap_when_ready(Duration::from_secs(10))
        .await
        .unwrap();
    let cp2 = up(
        &c,
        Role::Controlplane,
        "cp2",
        "127.70.3.2",
        "127.70.3.12",
        v,
    )
    .await;
    wait_members("127.70.3.11", 2).await;
    let w = up(&c, Role::Worker, "w1", "127.70.3.3", "127.70.3.13", v).await;
    // Legacy Upgrade on a control plane (`v1alpha1_server.go` Upgrade, `etcd.go`
    // ValidateForUpgrade): two members cannot lose one; a plain error, so Unknown.
    let e = cp1
        .upgrade_legacy("ghcr.io/siderolabs/installer:v1.13.1", false, false)
        .await
        .unwrap_err();
    assert_eq!(
        refusal(&e),
        (
            Some(Code::Unknown),
            "error validating etcd for upgrade: etcd member count(2) is insufficient to maintain \
             quorum if upgrade commences"
                .into()
        )
    );
    assert_eq!(
        LabStatus::load(dir.path()).unwrap().nodes[0].talos_version,
        v
    );
    assert_eq!(
        refusal(&w.etcd_leave_cluster().await.unwrap_err()),
        (
            Some(Code::Unimplemented),
            "etcd leave is only available on control plane nodes".into()
        )
    );
    assert_eq!(
        refusal(&w.etcd_remove_member_by_id(1).await.unwrap_err()),
        (
            Some(Code::Unimplemented),
            "etcd remove member is only available on control plane nodes".into()
        )
    );

    // A third member keeps quorum while cp2's etcd is down.
    up(
        &c,
        Role::Controlplane,
        "cp3",
        "127.70.3.4",
        "127.70.3.14",
        v,
    )
    .await;
    wait_members("127.70.3.11", 3).await;
    // cp2's etcd stops; its API still answers. A leave waits for the member, then Unknown.
    lab.fault("cp2", Fault::EtcdDown).await.unwrap();
    let t = Instant::now();
    let e = cp2.etcd_leave_cluster().await.unwrap_err();
    assert!(
        t.elapsed() >= Duration::from_millis(700),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(
        refusal(&e),
        (
            Some(Code::Unknown),
            "failed to leave cluster: failed to get local etcd member ID: context deadline \
             exceeded"
                .into()
        )
    );
    // Its member is still there; cp2 itself can remove it through the other members.
    let mut e1 = etcd("127.70.3.11").await;
    let list = e1.member_list().await.unwrap();
    let id = list
        .members()
        .iter()
        .find(|m| m.name() == "cp2")
        .unwrap()
        .id();
    assert_eq!(
        refusal(&cp2.etcd_remove_member_by_id(0x1234).await.unwrap_err()),
        (
            Some(Code::NotFound),
            format!(
                "failed to remove member {}: etcdserver: member not found",
                0x1234
            )
        )
    );
    cp2.etcd_remove_member_by_id(id).await.unwrap();
    let left = e1.member_list().await.unwrap();
    let mut names: Vec<&str> = left.members().iter().map(|m| m.name()).collect();
    names.sort_unstable();
    assert_eq!(names, ["cp1", "cp3"]);
    lab.shutdown().await;
}

/// Fault covered: the lab bootstrapped the moment a node configured, so a client that does not
/// retry "not yet" passed in the lab and failed on real nodes, where Bootstrap
/// (`v1alpha1_server.go`) answers FailedPrecondition "bootstrap is not available yet" until CRI
/// is up and "time is not in sync yet" after waiting for time sync; a worker is refused for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_waits_for_cri_and_time_sync() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::generate();
    let spec = spec7(
        70,
        4,
        &[
            ("cp1", Role::Controlplane, "v1.11.6"),
            ("w1", Role::Worker, "v1.11.6"),
            ("cp2", Role::Controlplane, "v1.13.0"),
            ("w2", Role::Worker, "v1.13.0"),
        ],
    );
    let lab = start(&spec, dir.path()).await;
    lab.set_timing(Timing {
        bootstrap_after_ms: 1500,
        time_sync_after_ms: 2500,
        time_sync_wait_ms: 200,
        ..Timing::default()
    });
    let cp = up(
        &c,
        Role::Controlplane,
        "cp1",
        "127.70.4.1",
        "127.70.4.11",
        "v1.11.6",
    )
    .await;
    let not_yet = (
        Some(Code::FailedPrecondition),
        "bootstrap is not available yet".to_string(),
    );
    assert_eq!(refusal(&cp.bootstrap().await.unwrap_err()), not_yet);
    // cri is not up yet: judge says so.
    let verdict = vixen_talos::judge(&cp.service_list().await.unwrap());
    assert!(
        verdict.reasons.contains(&"cri: state Starting".to_string()),
        "{verdict:?}"
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(
        refusal(&cp.bootstrap().await.unwrap_err()),
        (
            Some(Code::FailedPrecondition),
            "time is not in sync yet".into()
        )
    );
    assert_eq!(
        LabStatus::load(dir.path()).unwrap().nodes[0].etcd_client_url,
        None
    );
    cp.bootstrap_when_ready(Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        LabStatus::load(dir.path()).unwrap().nodes[0]
            .etcd_client_url
            .is_some()
    );
    let recs = calls(&lab, "/Bootstrap");
    assert!(recs.len() >= 3, "{recs:?}");
    assert_eq!(recs.last().unwrap().result, "ok");

    lab.set_timing(Timing::default());
    let w1 = up(
        &c,
        Role::Worker,
        "w1",
        "127.70.4.2",
        "127.70.4.12",
        "v1.11.6",
    )
    .await;
    let e = w1
        .bootstrap_when_ready(Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(
        refusal(&e),
        (
            Some(Code::FailedPrecondition),
            "bootstrap can only be performed on a control plane node".into()
        )
    );
    // 1.13 goes through machinehelper.CheckControlplane.
    let cp2 = up(
        &c,
        Role::Controlplane,
        "cp2",
        "127.70.4.3",
        "127.70.4.13",
        "v1.13.0",
    )
    .await;
    drop(cp2);
    let w2 = up(
        &c,
        Role::Worker,
        "w2",
        "127.70.4.4",
        "127.70.4.14",
        "v1.13.0",
    )
    .await;
    let e = w2
        .bootstrap_when_ready(Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(
        refusal(&e),
        (
            Some(Code::Unimplemented),
            "bootstrap is only available on control plane nodes".into()
        )
    );
    lab.shutdown().await;
}
