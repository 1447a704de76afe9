//! etcd truth, checked with an independent etcd client: joins as learner then promotion,
//! quorum lost after non-graceful resets, kept after graceful leaves; Talos 1.13 behaviour
//! (LifecycleService, anonymous reader in maintenance) and `node`-key proxying to a worker.

mod common;

use std::time::Duration;

use common::*;
use tonic::Code;
use vixen_lab::{CallRecord, LabStatus, Role};
use vixen_talos::ApplyMode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_graceful_reset_of_two_of_three_loses_quorum() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::generate();
    let v = "v1.12.4";
    let s = spec(
        42,
        &[
            ("cp1", Role::Controlplane, v),
            ("cp2", Role::Controlplane, v),
            ("cp3", Role::Controlplane, v),
        ],
    );
    let lab = start(&s, dir.path()).await;
    for i in 1..=3 {
        let cfg = c.config(
            Role::Controlplane,
            &format!("cp{i}"),
            &[&format!("127.0.42.{i}")],
            v,
        );
        install(&c, &format!("127.0.42.{i}"), &cfg, &format!("127.0.42.{i}")).await;
    }
    admin(&c, "127.0.42.1")
        .bootstrap_when_ready(Duration::from_secs(10))
        .await
        .unwrap();
    wait_members("127.0.42.1", 3).await;
    let mut e = etcd("127.0.42.1").await;
    e.put("before", "1", None).await.unwrap();
    let members = admin(&c, "127.0.42.2").etcd_member_list().await.unwrap();
    assert_eq!(members.len(), 3);
    assert!(members.iter().all(|m| !m.is_learner));

    // Legacy Upgrade refuses nothing here (3 healthy members) but 2 members would be refused:
    // checked below after the resets.
    admin(&c, "127.0.42.2").reset(false, true).await.unwrap();
    admin(&c, "127.0.42.3").reset(false, true).await.unwrap();
    until("both in maintenance", 30, || async {
        LabStatus::load(dir.path())
            .unwrap()
            .nodes
            .iter()
            .filter(|n| n.mode == "maintenance")
            .count()
            == 2
    })
    .await;
    // The dead members stay: the survivor has no leader and writes fail.
    until("no leader", 30, || async {
        let Ok(mut e) = tokio::time::timeout(Duration::from_secs(3), etcd("127.0.42.1")).await
        else {
            return false;
        };
        matches!(e.status().await, Ok(s) if s.leader() == 0)
    })
    .await;
    let mut e = etcd("127.0.42.1").await;
    assert!(
        e.put("after", "1", None).await.is_err(),
        "a write without quorum must fail"
    );
    assert_eq!(e.member_list().await.unwrap().members().len(), 3);
    let refused = admin(&c, "127.0.42.1")
        .upgrade_legacy("ghcr.io/siderolabs/installer:v1.12.5", false, false)
        .await;
    // v1alpha1_server.go Upgrade: ValidateForUpgrade's failure is a plain error (Unknown).
    let refused = refused.unwrap_err();
    assert_eq!(refused.code(), Some(Code::Unknown), "{refused}");
    assert!(
        refused
            .to_string()
            .contains("error validating etcd for upgrade"),
        "{refused}"
    );
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_leaves_keep_quorum_on_v1_13_with_worker_and_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::generate();
    let v = "v1.13.0";
    let s = spec(
        43,
        &[
            ("cp1", Role::Controlplane, v),
            ("cp2", Role::Controlplane, v),
            ("cp3", Role::Controlplane, v),
            ("w1", Role::Worker, v),
        ],
    );
    let lab = start(&s, dir.path()).await;
    // 1.13 maintenance mode: anonymous reader, AUTO reported as NO_REBOOT.
    let m = maint("127.0.43.1");
    assert_eq!(m.version().await.unwrap().tag, v);
    assert_eq!(
        m.reboot().await.unwrap_err().code(),
        Some(Code::PermissionDenied)
    );
    let cfg = c.config(Role::Controlplane, "cp1", &["127.0.43.1"], v);
    let out = m
        .apply_configuration(&cfg, ApplyMode::Auto, false, None)
        .await
        .unwrap();
    assert_eq!(out.mode, Some(ApplyMode::NoReboot));
    wait_configured(&c, "127.0.43.1").await;
    admin(&c, "127.0.43.1")
        .bootstrap_when_ready(Duration::from_secs(10))
        .await
        .unwrap();
    for i in 2..=3 {
        let cfg = c.config(
            Role::Controlplane,
            &format!("cp{i}"),
            &[&format!("127.0.43.{i}")],
            v,
        );
        install(&c, &format!("127.0.43.{i}"), &cfg, &format!("127.0.43.{i}")).await;
        wait_members("127.0.43.1", i).await;
    }
    // A worker gets its apid certificate once a control plane of its cluster is up.
    let wcfg = c.config(Role::Worker, "w1", &["127.0.43.14"], v);
    install(&c, "127.0.43.4", &wcfg, "127.0.43.14").await;

    // The `node` key: cp1 proxies to the worker.
    let via = admin(&c, "127.0.43.1").with_node("127.0.43.14");
    let services = via.service_list().await.unwrap();
    assert!(services.iter().all(|s| s.id != "etcd"));
    assert_eq!(
        via.etcd_status().await.unwrap_err().code(),
        Some(Code::Unimplemented)
    );

    // 1.13+: LifecycleService.Upgrade installs without rebooting; our Reboot boots it.
    let w = admin(&c, "127.0.43.14");
    let out = w
        .upgrade("ghcr.io/siderolabs/installer:v1.13.1")
        .await
        .unwrap();
    assert!(matches!(
        out,
        vixen_talos::UpgradeOutcome::LifecycleThenReboot { .. }
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    wait_configured(&c, "127.0.43.14").await;
    assert_eq!(w.version().await.unwrap().tag, "v1.13.1");

    // Graceful: cp3 resets gracefully (leaves etcd first), cp2 forfeits and leaves.
    admin(&c, "127.0.43.3").reset(true, true).await.unwrap();
    wait_members("127.0.43.1", 2).await;
    let cp2 = admin(&c, "127.0.43.2");
    let leader_after = cp2.etcd_forfeit_leadership().await.unwrap();
    assert!(leader_after.is_empty() || leader_after == "cp1");
    // Talos sends the MemberRemove through a shuffled list of every control plane's endpoint
    // (`etcd.NewClientFromControlPlaneIPs`), its own included: when it lands on the leaving
    // member, that member applies its own removal and stops before it answers ("raft: stopped",
    // or the connection drops), and Talos returns the error although the member is gone (it
    // retries only ErrUnhealthy). What counts is that it has left: etcd itself says so below.
    if let Err(e) = cp2.etcd_leave_cluster().await {
        eprintln!("etcd leave answered an error after the removal went through: {e}");
    }
    wait_members("127.0.43.1", 1).await;
    let mut e = etcd("127.0.43.1").await;
    until("writes succeed", 20, || {
        let mut e = e.clone();
        async move { e.put("after", "1", None).await.is_ok() }
    })
    .await;
    assert_eq!(e.get("after", None).await.unwrap().kvs().len(), 1);

    let calls = CallRecord::load_all(dir.path()).unwrap();
    assert!(
        calls
            .iter()
            .any(|r| r.node == "w1" && r.detail["via"] == "cp1")
    );
    assert!(
        calls
            .iter()
            .any(|r| r.method == "/machine.LifecycleService/Upgrade" && r.node == "w1")
    );
    assert!(
        !calls
            .iter()
            .any(|r| r.method == "/machine.MachineService/Upgrade")
    );
    assert!(
        calls
            .iter()
            .any(|r| r.method == "/machine.MachineService/Reset" && r.detail["graceful"] == true)
    );
    lab.shutdown().await;
}
