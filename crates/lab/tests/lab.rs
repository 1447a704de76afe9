//! The Talos client against the lab: every RPC, maintenance and configured modes, refused
//! credentials, real etcd checked with an independent client, and calls.jsonl.

mod common;

use std::io::Read as _;
use std::time::Duration;

use common::*;
use tonic::Code;
use vixen_lab::{CallRecord, Fault, LabStatus, Role};
use vixen_talos::{ApplyMode, Client, Credentials, Error};

fn code(e: &Error) -> Option<Code> {
    e.code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_control_plane_v1_11_full_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::generate();
    let lab = start(
        &spec(41, &[("cp1", Role::Controlplane, "v1.11.6")]),
        dir.path(),
    )
    .await;
    let m = maint("127.0.41.1");

    // Maintenance mode (<= 1.12): only ApplyConfiguration; Version needs SideroLink admin.
    assert_eq!(
        code(&m.version().await.unwrap_err()),
        Some(Code::Unimplemented)
    );
    assert_eq!(
        code(&m.service_list().await.unwrap_err()),
        Some(Code::Unimplemented)
    );
    assert_eq!(
        code(&m.bootstrap().await.unwrap_err()),
        Some(Code::Unimplemented)
    );
    let cfg = c.config(Role::Controlplane, "cp1", &["127.0.41.11"], "v1.11.6");
    let staged = m
        .apply_configuration(&cfg, ApplyMode::Staged, false, None)
        .await
        .unwrap_err();
    assert_eq!(code(&staged), Some(Code::Unimplemented));
    let bad = m.apply_configuration(
        b"version: v1alpha1\nmachine: {type: nope}\n",
        ApplyMode::Auto,
        false,
        None,
    );
    assert_eq!(code(&bad.await.unwrap_err()), Some(Code::InvalidArgument));

    // Apply: install, reboot, come up configured on the management address with mTLS.
    let out = m
        .apply_configuration(&cfg, ApplyMode::Auto, false, None)
        .await
        .unwrap();
    assert_eq!(out.mode, Some(ApplyMode::Reboot));
    wait_configured(&c, "127.0.41.11").await;
    let status = LabStatus::load(dir.path()).unwrap();
    assert_eq!(status.nodes[0].mode, "configured");
    assert_eq!(status.nodes[0].current_address, "127.0.41.11");
    assert_eq!(status.nodes[0].maintenance_address, "127.0.41.1");
    assert_eq!(status.nodes[0].etcd_client_url, None);
    let a = admin(&c, "127.0.41.11");
    assert_eq!(a.version().await.unwrap().tag, "v1.11.6");

    // Missing and wrong client certificates are refused; a reader may not apply.
    assert!(maint("127.0.41.11").version().await.is_err());
    let other = Cluster::generate();
    let wrong = Credentials {
        ca_pem: c.admin.ca_pem.clone(),
        ..other.admin.clone()
    };
    assert!(
        Client::connect("127.0.41.11", &wrong)
            .unwrap()
            .with_options(quick())
            .version()
            .await
            .is_err()
    );
    let reader_cert = vixen_pki::mint(
        &c.bundle.certs.os,
        "certs.os",
        "reader",
        &vixen_pki::Usage::Client {
            roles: &["os:reader"],
        },
        time::Duration::days(1),
    )
    .unwrap();
    let reader = Client::connect(
        "127.0.41.11",
        &Credentials::from_minted(&c.bundle.certs.os.crt, &reader_cert).unwrap(),
    )
    .unwrap()
    .with_options(quick());
    assert_eq!(reader.version().await.unwrap().tag, "v1.11.6");
    let denied = reader
        .apply_configuration(&cfg, ApplyMode::NoReboot, false, None)
        .await
        .unwrap_err();
    assert_eq!(code(&denied), Some(Code::PermissionDenied));

    // etcd: bootstrap once, then the etcd RPCs act on the real member.
    a.bootstrap_when_ready(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        code(&a.bootstrap().await.unwrap_err()),
        Some(Code::AlreadyExists)
    );
    let members = a.etcd_member_list().await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].hostname, "cp1");
    let st = a.etcd_status().await.unwrap();
    assert_eq!(st.leader, st.member_id);
    assert_eq!(st.member_id, members[0].id);
    assert!(
        a.etcd_forfeit_leadership().await.is_err(),
        "one member cannot forfeit"
    );
    assert_eq!(
        code(&a.etcd_remove_member_by_id(0x1234).await.unwrap_err()),
        Some(Code::NotFound)
    );
    let mut e = etcd("127.0.41.11").await;
    e.put("k", "v", None).await.unwrap();
    let snap = a.etcd_snapshot().await.unwrap();
    assert!(snap.len() > 1000);
    let services = a.service_list().await.unwrap();
    assert!(services.iter().any(|s| s.id == "etcd" && s.healthy));
    assert!(services.iter().any(|s| s.id == "kubelet"));
    let kc = a.kubeconfig().await.unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&kc[..]));
    let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
    let mut text = String::new();
    entry.read_to_string(&mut text).unwrap();
    assert!(text.contains("server: https://127.0.0.1:6443"));
    assert_eq!(
        LabStatus::load(dir.path()).unwrap().nodes[0]
            .etcd_client_url
            .as_deref(),
        Some("http://127.0.41.11:2379")
    );

    // Configured apply modes.
    let live = String::from_utf8(cfg.clone())
        .unwrap()
        .replace("clusterName: lab", "clusterName: lab2");
    let reboot = String::from_utf8(cfg.clone())
        .unwrap()
        .replace("machine:\n", "machine:\n  env:\n    A: b\n");
    let out = a
        .apply_configuration(live.as_bytes(), ApplyMode::Auto, true, None)
        .await
        .unwrap();
    assert_eq!(out.mode, Some(ApplyMode::NoReboot));
    assert!(
        // Talos' dry-run diff of the two documents (v1alpha1_server.go ApplyConfiguration).
        out.mode_details.contains("-  clusterName: lab\n")
            && out.mode_details.contains("+  clusterName: lab2\n"),
        "{}",
        out.mode_details
    );
    let out = a
        .apply_configuration(live.as_bytes(), ApplyMode::NoReboot, false, None)
        .await
        .unwrap();
    assert_eq!(out.mode, Some(ApplyMode::NoReboot));
    let refused = a
        .apply_configuration(reboot.as_bytes(), ApplyMode::NoReboot, false, None)
        .await;
    assert_eq!(code(&refused.unwrap_err()), Some(Code::FailedPrecondition));
    let out = a
        .apply_configuration(reboot.as_bytes(), ApplyMode::Auto, true, None)
        .await
        .unwrap();
    assert_eq!(out.mode, Some(ApplyMode::Reboot));
    let worker = c.config(Role::Worker, "cp1", &["127.0.41.11"], "v1.11.6");
    let refused = a
        .apply_configuration(&worker, ApplyMode::Auto, false, None)
        .await;
    assert_eq!(code(&refused.unwrap_err()), Some(Code::InvalidArgument));
    let out = a
        .apply_configuration(reboot.as_bytes(), ApplyMode::Staged, false, None)
        .await
        .unwrap();
    assert_eq!(out.mode, Some(ApplyMode::Staged));
    assert_eq!(
        a.version().await.unwrap().tag,
        "v1.11.6",
        "staged: no reboot yet"
    );

    // Upgrade (legacy on 1.11): a bad image rolls back, a good one boots; etcd data survives.
    lab.fault("cp1", Fault::FailNextUpgrade).await.unwrap();
    let out = a
        .upgrade("ghcr.io/siderolabs/installer:v1.12.1")
        .await
        .unwrap();
    assert!(matches!(out, vixen_talos::UpgradeOutcome::Legacy { .. }));
    tokio::time::sleep(Duration::from_millis(200)).await;
    wait_configured(&c, "127.0.41.11").await;
    assert_eq!(a.version().await.unwrap().tag, "v1.11.6", "rolled back");
    a.upgrade("ghcr.io/siderolabs/installer:v1.12.1")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    wait_configured(&c, "127.0.41.11").await;
    assert_eq!(a.version().await.unwrap().tag, "v1.12.1");
    until("etcd back", 30, || async { a.etcd_status().await.is_ok() }).await;
    let mut e = etcd("127.0.41.11").await;
    assert_eq!(e.get("k", None).await.unwrap().kvs()[0].value(), b"v");

    // Non-graceful reset: back to maintenance mode on the maintenance address.
    a.reset(false, true).await.unwrap();
    until("maintenance", 30, || async {
        LabStatus::load(dir.path()).unwrap().nodes[0].mode == "maintenance"
    })
    .await;
    let out = maint("127.0.41.1")
        .apply_configuration(&cfg, ApplyMode::Auto, true, None)
        .await
        .unwrap();
    assert!(out.mode_details.contains("Dry run"));

    // calls.jsonl: what was and was not called.
    let calls = CallRecord::load_all(dir.path()).unwrap();
    let applies: Vec<_> = calls
        .iter()
        .filter(|r| r.method == "/machine.MachineService/ApplyConfiguration")
        .collect();
    assert!(
        applies
            .iter()
            .any(|r| r.detail["mode"] == "STAGED" && r.result.starts_with("Unimplemented"))
    );
    assert!(
        applies
            .iter()
            .any(|r| r.detail["dry_run"] == true && r.result == "ok")
    );
    assert!(calls.iter().all(|r| r.node == "cp1" && !r.time.is_empty()));
    // Who called: the admin certificate's name; maintenance mode sees no client certificate.
    assert!(
        calls
            .iter()
            .any(|r| r.method.ends_with("/Upgrade") && r.client.as_deref() == Some("vixen"))
    );
    assert!(
        applies
            .iter()
            .any(|r| r.detail["dry_run"] == true && r.client.is_none())
    );
    assert!(
        !calls
            .iter()
            .any(|r| r.method == "/machine.LifecycleService/Upgrade")
    );
    assert_eq!(
        calls
            .iter()
            .filter(|r| r.method == "/machine.MachineService/Upgrade")
            .count(),
        2
    );
    lab.shutdown().await;
}
