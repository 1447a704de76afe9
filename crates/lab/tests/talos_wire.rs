//! The lab's wire behaviour against real Talos (issue 13, items 2, 7 and 10): apid routing and
//! reply metadata, actor IDs, Events and the boot ID talosctl waits on, and the 1.13+ image pull
//! before an upgrade. Each test names the siderolabs/talos file it follows. Addresses:
//! 127.71.x.x.

mod common;

use std::time::Duration;

use common::*;
use tonic::Code;
use vixen_lab::{CallRecord, LabSpec, LabStatus, NodeSpec, Role};
use vixen_talos::api::machine as pb;
use vixen_talos::api::machine::machine_service_client::MachineServiceClient;
use vixen_talos::{Client, Error};

fn spec7(b: u8, nodes: &[(&str, Role, &str)]) -> LabSpec {
    LabSpec {
        nodes: nodes
            .iter()
            .enumerate()
            .map(|(i, (name, role, version))| NodeSpec {
                name: (*name).into(),
                role: *role,
                maintenance_address: format!("127.71.{b}.{}", i + 1).parse().unwrap(),
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

fn raw(c: &Client) -> MachineServiceClient<tonic::transport::Channel> {
    MachineServiceClient::new(c.raw_channel())
}

async fn up(c: &Cluster, role: Role, name: &str, maint: &str, mgmt: &str, v: &str) -> Client {
    let cfg = c.config(role, name, &[mgmt], v);
    install(c, maint, &cfg, mgmt).await;
    admin(c, mgmt)
}

/// The payload type of an event (`talos/runtime/machine.X`) and the event.
fn kind(e: &pb::Event) -> &str {
    e.data
        .as_ref()
        .map_or("", |d| d.type_url.trim_start_matches("talos/runtime/"))
}

fn decode<M: prost::Message + Default>(e: &pb::Event) -> M {
    M::decode(e.data.as_ref().unwrap().value.as_slice()).unwrap()
}

/// Fault covered: the lab ignored `nodes` and left `Metadata.hostname` empty on proxied replies,
/// which talosctl and its checks key their output on. apid (`apid/pkg/director/director.go`)
/// refuses a multi-valued `node`, prefers `nodes`, and its remote backend
/// (`apid/pkg/backend/apid.go` AppendInfo) sets hostname to the key as given; without a key the
/// local reply has none; without forwarding (1.13 maintenance) another node is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apid_routes_by_node_and_nodes_and_fills_the_hostname() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::generate();
    let v = "v1.13.0";
    let spec = spec7(
        1,
        &[
            ("cp1", Role::Controlplane, v),
            ("w1", Role::Worker, v),
            ("m1", Role::Worker, v),
        ],
    );
    let lab = start(&spec, dir.path()).await;
    let cp = up(
        &c,
        Role::Controlplane,
        "cp1",
        "127.71.1.1",
        "127.71.1.11",
        v,
    )
    .await;
    cp.bootstrap_when_ready(Duration::from_secs(10))
        .await
        .unwrap();
    up(&c, Role::Worker, "w1", "127.71.1.2", "127.71.1.12", v).await;

    assert_eq!(cp.reply_hostname().await.unwrap(), "");
    assert_eq!(
        cp.clone()
            .with_node("127.71.1.11")
            .reply_hostname()
            .await
            .unwrap(),
        "127.71.1.11"
    );
    let via = cp.clone().with_node("127.71.1.12");
    assert_eq!(via.reply_hostname().await.unwrap(), "127.71.1.12");
    // The worker answered, through cp1.
    let ws = via.service_list().await.unwrap();
    assert!(ws.iter().all(|s| s.id != "etcd" && s.id != "trustd"));
    let recs = CallRecord::load_all(dir.path()).unwrap();
    assert!(
        recs.iter().any(|r| r.node == "w1"
            && r.method.ends_with("/ServiceList")
            && r.detail["via"] == "cp1")
    );

    // `nodes` (deprecated) routes too; a multi-valued `node` is refused.
    let mut req = tonic::Request::new(());
    req.metadata_mut().insert("nodes", "w1".parse().unwrap());
    let reply = raw(&cp).version(req).await.unwrap().into_inner();
    assert_eq!(reply.messages[0].metadata.as_ref().unwrap().hostname, "w1");
    let mut req = tonic::Request::new(());
    req.metadata_mut()
        .append("node", "127.71.1.11".parse().unwrap());
    req.metadata_mut()
        .append("node", "127.71.1.12".parse().unwrap());
    let e = raw(&cp).version(req).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "node metadata must be single-valued")
    );

    // 1.13 maintenance: no forwarding to another node.
    let e = maint("127.71.1.3")
        .with_node("127.71.1.11")
        .version()
        .await
        .unwrap_err();
    assert_eq!(
        refusal(&e),
        (Some(Code::PermissionDenied), "no request forwarding".into())
    );
    assert_eq!(
        maint("127.71.1.3")
            .with_node("127.71.1.3")
            .version()
            .await
            .unwrap()
            .tag,
        v
    );

    // etcd status carries the storage version.
    let st = cp.etcd_status().await.unwrap();
    assert!(st.storage_version.ends_with(".0"), "{st:?}");
    lab.shutdown().await;
}

/// Fault covered: talosctl's `upgrade`/`reboot`/`reset --wait` (`cmd/talosctl/pkg/talos/action/`
/// node.go, tracker.go) read the boot ID through Read and watch Events for their actor ID; the lab
/// served neither, and left actor IDs empty. A reboot now yields a new boot ID, a `reboot`
/// sequence and the `stopAllServices` task tagged with the reply's actor ID, and a fresh event
/// log that reaches MachineStatusEvent RUNNING ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_changes_the_boot_id_and_events_tell_who_did_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::generate();
    let v = "v1.11.6";
    let spec = spec7(2, &[("cp1", Role::Controlplane, v)]);
    let lab = start(&spec, dir.path()).await;
    let cp = up(
        &c,
        Role::Controlplane,
        "cp1",
        "127.71.2.1",
        "127.71.2.11",
        v,
    )
    .await;
    let before = cp.boot_id().await.unwrap();
    assert_eq!(before.len(), 36, "{before}");
    assert_eq!(cp.boot_id().await.unwrap(), before, "stable within a boot");

    let mut stream = raw(&cp)
        .events(pb::EventsRequest {
            tail_events: -1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // The hello event first (no type URL: `sendEmptyEvent` in v1alpha1_server.go), then the
    // boot's history.
    let hello = stream.message().await.unwrap().unwrap();
    assert_eq!(kind(&hello), "");
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(kind(&first), "machine.MachineStatusEvent");
    let reply = raw(&cp)
        .reboot(pb::RebootRequest::default())
        .await
        .unwrap()
        .into_inner();
    let actor = reply.messages[0].actor_id.clone();
    assert_eq!(actor.len(), 36, "{actor:?}");
    let mut seen = Vec::new();
    while let Ok(Some(e)) = stream.message().await {
        seen.push(e);
    }
    let mine: Vec<&pb::Event> = seen.iter().filter(|e| e.actor_id == actor).collect();
    let seq: pb::SequenceEvent = decode(mine.first().expect("events of the reboot"));
    assert_eq!((seq.sequence.as_str(), seq.action), ("reboot", 1));
    assert!(
        mine.iter().any(|e| kind(e) == "machine.TaskEvent"
            && decode::<pb::TaskEvent>(e).task == "stopAllServices")
    );

    tokio::time::sleep(Duration::from_millis(100)).await;
    wait_configured(&c, "127.71.2.11").await;
    let after = cp.boot_id().await.unwrap();
    assert_ne!(after, before, "a reboot means a new boot ID");
    // The new boot's log: no reboot sequence, and the machine is running and ready.
    let mut stream = raw(&cp)
        .events(pb::EventsRequest {
            tail_events: -1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut ready = false;
    while !ready {
        let e = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("events of the new boot")
            .unwrap()
            .unwrap();
        assert_ne!(e.actor_id, actor);
        if kind(&e) == "machine.MachineStatusEvent" {
            let m: pb::MachineStatusEvent = decode(&e);
            ready = m.stage == 4 && m.status.is_some_and(|s| s.ready);
        }
    }
    // Only the boot ID is readable; Reboot was recorded with the lab's view of the node.
    let e = raw(&cp)
        .read(pb::ReadRequest {
            path: "/etc/passwd".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    assert_eq!(
        LabStatus::load(dir.path()).unwrap().nodes[0].mode,
        "configured"
    );
    lab.shutdown().await;
}

/// Fault covered: the lab "upgraded" 1.13 nodes to images nobody pulled, and legacy upgrades to
/// images that do not exist. Talos 1.13's LifecycleService.Upgrade (`internal/app/lifecycle/`
/// lifecycle.go, container.go) needs the image in containerd (ImageService.Pull,
/// `internal/app/images/images.go`, NotFound when the pull fails); the legacy Upgrade
/// (`v1alpha1_server.go`) pulls and validates first. `.invalid` registries do not resolve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_need_an_image_that_exists_and_1_13_needs_it_pulled() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::generate();
    let spec = spec7(
        3,
        &[
            ("new", Role::Controlplane, "v1.13.0"),
            ("old", Role::Controlplane, "v1.11.6"),
        ],
    );
    let lab = start(&spec, dir.path()).await;
    let new = up(
        &c,
        Role::Controlplane,
        "new",
        "127.71.3.1",
        "127.71.3.11",
        "v1.13.0",
    )
    .await;
    let image = "ghcr.io/siderolabs/installer:v1.13.1";
    let e = new.lifecycle_upgrade(image).await.unwrap_err();
    assert_eq!(
        refusal(&e),
        (
            Some(Code::Internal),
            format!(
                "upgrade failed: installer image {image:?} not found in containerd store: image \
                 {image:?}: not found"
            )
        )
    );
    let bad = "registry.invalid/siderolabs/installer:v1.13.1";
    let (code, text) = refusal(&new.pull_image(bad).await.unwrap_err());
    assert_eq!(code, Some(Code::NotFound));
    assert!(
        text.starts_with("error pulling image: failed to pull image")
            && text.ends_with("lookup registry.invalid: no such host"),
        "{text}"
    );
    let name = new.pull_image(image).await.unwrap();
    assert!(
        name.starts_with("ghcr.io/siderolabs/installer@sha256:"),
        "{name}"
    );
    new.lifecycle_upgrade(image).await.unwrap();
    assert_eq!(new.version().await.unwrap().tag, "v1.13.0", "no reboot yet");
    let boot = new.boot_id().await.unwrap();
    new.reboot().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    wait_configured(&c, "127.71.3.11").await;
    assert_eq!(new.version().await.unwrap().tag, "v1.13.1");
    assert_ne!(new.boot_id().await.unwrap(), boot);
    assert_eq!(
        LabStatus::load(dir.path()).unwrap().nodes[0].talos_version,
        "v1.13.1"
    );
    // The client's one-call upgrade pulls first, as talosctl 1.13 does.
    new.upgrade("ghcr.io/siderolabs/installer:v1.13.2")
        .await
        .unwrap();
    let recs = CallRecord::load_all(dir.path()).unwrap();
    let order: Vec<&str> = recs
        .iter()
        .filter(|r| r.node == "new" && r.result == "ok")
        .map(|r| r.method.as_str())
        .filter(|m| m.contains("Pull") || m.contains("LifecycleService") || m.ends_with("/Reboot"))
        .collect();
    assert_eq!(
        &order[order.len() - 3..],
        [
            "/machine.ImageService/Pull",
            "/machine.LifecycleService/Upgrade",
            "/machine.MachineService/Reboot"
        ]
    );

    // 1.11: no ImageService; the legacy Upgrade refuses an image that does not resolve.
    let old = up(
        &c,
        Role::Controlplane,
        "old",
        "127.71.3.2",
        "127.71.3.12",
        "v1.11.6",
    )
    .await;
    assert_eq!(
        old.pull_image(image).await.unwrap_err().code(),
        Some(Code::Unimplemented)
    );
    let boot = old.boot_id().await.unwrap();
    let (code, text) = refusal(
        &old.upgrade_legacy("registry.invalid/installer:v1.12.0", false, false)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, Some(Code::Unknown));
    assert!(
        text.starts_with("error validating installer image \"registry.invalid/installer:v1.12.0\""),
        "{text}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(old.boot_id().await.unwrap(), boot, "no reboot");
    assert_eq!(
        LabStatus::load(dir.path()).unwrap().nodes[1].talos_version,
        "v1.11.6"
    );
    lab.shutdown().await;
}

/// Fault covered: the lab kept the installed version through any reset, so a reset that wipes
/// the whole system disk looked harmless. Talos' Reset (`v1alpha1_server.go`, `ResetSystemDisk`
/// in `v1alpha1_sequencer_tasks.go`) wipes only the labelled volumes when given labels (STATE and
/// EPHEMERAL, as vixen's client sends: the installed version stays), and without labels the whole
/// disk: the node boots its install media into maintenance on the media's version, or nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_wipes_what_it_names_and_a_full_wipe_boots_the_install_media() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::generate();
    let spec = spec7(4, &[("cp1", Role::Controlplane, "v1.11.6")]);
    let lab = start(&spec, dir.path()).await;
    let node = |dir: &std::path::Path| LabStatus::load(dir).unwrap().nodes[0].clone();
    // Installed from a newer installer than the boot media.
    let cfg = c.config(Role::Controlplane, "cp1", &["127.71.4.11"], "v1.12.1");
    install(&c, "127.71.4.1", &cfg, "127.71.4.11").await;
    assert_eq!(node(dir.path()).talos_version, "v1.12.1");

    // vixen's reset: STATE + EPHEMERAL; back in maintenance on the installed version.
    admin(&c, "127.71.4.11").reset(false, true).await.unwrap();
    until("maintenance", 30, || async {
        node(dir.path()).mode == "maintenance"
    })
    .await;
    assert_eq!(node(dir.path()).talos_version, "v1.12.1");
    let resets: Vec<CallRecord> = CallRecord::load_all(dir.path())
        .unwrap()
        .into_iter()
        .filter(|r| r.method.ends_with("/Reset"))
        .collect();
    assert_eq!(resets.len(), 1);

    // No labels, mode ALL: the whole system disk; the boot media (v1.11.6) comes up.
    install(&c, "127.71.4.1", &cfg, "127.71.4.11").await;
    let a = admin(&c, "127.71.4.11");
    let all = pb::ResetRequest {
        reboot: true,
        ..Default::default()
    };
    let reply = raw(&a).reset(all.clone()).await.unwrap().into_inner();
    assert_eq!(reply.messages[0].actor_id.len(), 36);
    until("maintenance on the media", 30, || async {
        let n = node(dir.path());
        n.mode == "maintenance" && n.talos_version == "v1.11.6"
    })
    .await;
    // An unknown volume is refused and nothing happens.
    install(&c, "127.71.4.1", &cfg, "127.71.4.11").await;
    let bad = pb::ResetRequest {
        system_partitions_to_wipe: vec![pb::ResetPartitionSpec {
            label: "DATA".into(),
            wipe: true,
        }],
        ..all.clone()
    };
    let e = raw(&a).reset(bad).await.unwrap_err();
    assert_eq!(e.code(), Code::Unknown);
    assert!(
        e.message()
            .starts_with("failed to get volume status with label \"DATA\"")
    );
    assert_eq!(node(dir.path()).mode, "configured");
    // Without install media, a full wipe leaves nothing to boot.
    lab.fault("cp1", vixen_lab::Fault::BootMediaRemoved)
        .await
        .unwrap();
    raw(&a).reset(all).await.unwrap();
    until("down", 30, || async { node(dir.path()).mode == "down" }).await;
    lab.shutdown().await;
}

/// Fault covered: on Talos 1.14 (v1.14 `v1alpha1_server.go` ApplyConfiguration) a configured
/// node refuses REBOOT with Unimplemented "the REBOOT mode is not supported, ..." and AUTO never
/// reboots; a client relying on the node's reboot would wait forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn talos_1_14_apply_never_reboots() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::generate();
    let v = "v1.14.0";
    let spec = spec7(5, &[("cp1", Role::Controlplane, v)]);
    let lab = start(&spec, dir.path()).await;
    let a = up(
        &c,
        Role::Controlplane,
        "cp1",
        "127.71.5.1",
        "127.71.5.11",
        v,
    )
    .await;
    let cfg = c.config(Role::Controlplane, "cp1", &["127.71.5.11"], v);
    let needs_reboot = String::from_utf8(cfg)
        .unwrap()
        .replace("machine:\n", "machine:\n  env:\n    A: b\n");
    let e = a
        .apply_configuration(
            needs_reboot.as_bytes(),
            vixen_talos::ApplyMode::Reboot,
            false,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(
        refusal(&e),
        (
            Some(Code::Unimplemented),
            "the REBOOT mode is not supported, please use AUTO or NO_REBOOT modes instead".into()
        )
    );
    let boot = a.boot_id().await.unwrap();
    let out = a
        .apply_configuration(
            needs_reboot.as_bytes(),
            vixen_talos::ApplyMode::Auto,
            false,
            None,
        )
        .await
        .unwrap();
    assert_eq!(out.mode, Some(vixen_talos::ApplyMode::NoReboot));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a.boot_id().await.unwrap(), boot, "no reboot");
    assert_eq!(
        LabStatus::load(dir.path()).unwrap().nodes[0].mode,
        "configured"
    );
    lab.shutdown().await;
}
