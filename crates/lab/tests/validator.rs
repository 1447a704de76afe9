//! The lab's nodes accept or refuse ApplyConfiguration with Talos' own loader and validator (the
//! `talos-validate` peer), in maintenance and configured modes, dry runs included: a refused
//! config changes nothing on the node, and calls.jsonl records the refusal.
//!
//! Needs `bash tests/peers/build.sh`; skipped loudly without it, except in CI where it fails.

mod common;

use std::time::Duration;

use common::*;
use tonic::Code;
use vixen_lab::{CallRecord, LabStatus, Role};
use vixen_talos::{ApplyMode, Error};

const APPLY: &str = "/machine.MachineService/ApplyConfiguration";

fn validator(test: &str) -> bool {
    vixen_lab::peers::for_test("talos-validate", test).is_some()
}

/// `config` with `from` replaced (once) by `to`.
fn edit(config: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8(config.to_vec()).unwrap();
    assert!(text.contains(from), "no {from:?} in the config");
    text.replacen(from, to, 1).into_bytes()
}

/// The refusal's code and message.
fn refusal(e: &Error) -> (Option<Code>, String) {
    (e.code(), e.to_string())
}

fn applies(dir: &std::path::Path) -> Vec<CallRecord> {
    CallRecord::load_all(dir)
        .unwrap()
        .into_iter()
        .filter(|r| r.method == APPLY)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_mode_refuses_what_talos_refuses_and_stays_in_maintenance() {
    if !validator("maintenance_mode_refuses_what_talos_refuses_and_stays_in_maintenance") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::generate();
    let lab = start(
        &spec(44, &[("cp1", Role::Controlplane, "v1.11.6")]),
        dir.path(),
    )
    .await;
    let m = maint("127.0.44.1");
    let good = c.config(Role::Controlplane, "cp1", &["127.0.44.11"], "v1.11.6");
    // The lab's own checks read only the address before the prefix: Talos refuses this one.
    let bad_cidr = edit(&good, "127.0.44.11/8", "127.0.44.11/99");
    let bad_type = edit(&good, "  type: controlplane\n", "  type: nonsense\n");
    let unknown_key = edit(&good, "machine:\n", "machine:\n  bogus: 1\n");

    for (config, talos_says) in [
        (&bad_cidr, "invalid CIDR address: 127.0.44.11/99"),
        (&bad_type, r#"unknown machine type "nonsense""#),
    ] {
        for dry_run in [true, false] {
            let e = m
                .apply_configuration(config, ApplyMode::Auto, dry_run, None)
                .await
                .unwrap_err();
            let (code, text) = refusal(&e);
            assert_eq!(code, Some(Code::InvalidArgument), "{text}");
            assert!(
                text.contains("configuration validation failed: ") && text.contains(talos_says),
                "dry_run {dry_run}: {text}"
            );
        }
    }
    // A config Talos cannot load: the maintenance server answers a plain error (gRPC Unknown).
    let (code, text) = refusal(
        &m.apply_configuration(&unknown_key, ApplyMode::Auto, false, None)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, Some(Code::Unknown), "{text}");
    assert!(
        text.contains("failed to parse config: unknown keys found during decoding"),
        "{text}"
    );

    // Nothing changed: after longer than a reboot, still in maintenance on its ISO version, and
    // the maintenance server still takes a config.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let node = &LabStatus::load(dir.path()).unwrap().nodes[0];
    assert_eq!(node.mode, "maintenance");
    assert_eq!(node.current_address, "127.0.44.1");
    assert_eq!(node.talos_version, "v1.11.6");
    let out = m
        .apply_configuration(&good, ApplyMode::Auto, true, None)
        .await
        .unwrap();
    assert!(out.mode_details.contains("maintenance mode"), "{out:?}");
    assert_eq!(out.warnings, Vec::<String>::new());
    // A deprecated field is accepted with Talos' warning in the reply.
    let deprecated = edit(
        &good,
        "    disk: /dev/sda\n",
        "    disk: /dev/sda\n    extensions:\n      - image: ghcr.io/siderolabs/gvisor:20231214.0-v1.6.0\n",
    );
    let out = m
        .apply_configuration(&deprecated, ApplyMode::Auto, true, None)
        .await
        .unwrap();
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains(".machine.install.extensions is deprecated")),
        "{out:?}"
    );

    // calls.jsonl: every refusal with Talos' message, then the accepted dry runs.
    let calls = applies(dir.path());
    assert_eq!(calls.len(), 7, "{calls:#?}");
    for r in &calls[..4] {
        assert!(
            r.result
                .starts_with("InvalidArgument: configuration validation failed: "),
            "{r:?}"
        );
    }
    assert!(
        calls[0]
            .result
            .contains("invalid CIDR address: 127.0.44.11/99")
    );
    assert_eq!(calls[0].detail["dry_run"], true);
    assert_eq!(calls[1].detail["dry_run"], false);
    assert!(calls[2].result.contains("unknown machine type"));
    assert!(
        calls[4]
            .result
            .starts_with("Unknown: failed to parse config: unknown keys"),
        "{:?}",
        calls[4]
    );
    assert_eq!(calls[5].result, "ok");
    assert_eq!(calls[6].result, "ok");

    // The valid config is accepted: the node installs and comes up configured.
    install(&c, "127.0.44.1", &good, "127.0.44.11").await;
    let node = &LabStatus::load(dir.path()).unwrap().nodes[0];
    assert_eq!(node.mode, "configured");
    assert_eq!(node.current_address, "127.0.44.11");
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_node_refuses_what_talos_refuses_and_keeps_its_config() {
    if !validator("configured_node_refuses_what_talos_refuses_and_keeps_its_config") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::generate();
    let lab = start(
        &spec(45, &[("cp1", Role::Controlplane, "v1.11.6")]),
        dir.path(),
    )
    .await;
    let good = c.config(Role::Controlplane, "cp1", &["127.0.45.11"], "v1.11.6");
    install(&c, "127.0.45.1", &good, "127.0.45.11").await;
    let a = admin(&c, "127.0.45.11");
    let before = applies(dir.path()).len();

    // A live change (new hostname) carrying an address Talos refuses; and a key Talos does not
    // know. Configured mode answers InvalidArgument with Talos' error as is, dry run or not,
    // whatever the mode.
    let renamed = edit(&good, "hostname: cp1\n", "hostname: cp1-new\n");
    let bad_cidr = edit(&renamed, "127.0.45.11/8", "127.0.45.11/99");
    let unknown_key = edit(&renamed, "machine:\n", "machine:\n  bogus: 1\n");
    let cidr = "invalid CIDR address: 127.0.45.11/99";
    let unknown = "unknown keys found during decoding";
    let cases = [
        (&bad_cidr, ApplyMode::Auto, true, cidr),
        (&bad_cidr, ApplyMode::NoReboot, false, cidr),
        (&bad_cidr, ApplyMode::Staged, false, cidr),
        (&unknown_key, ApplyMode::Auto, false, unknown),
    ];
    for (config, mode, dry_run, talos_says) in cases {
        let e = a
            .apply_configuration(config, mode, dry_run, None)
            .await
            .unwrap_err();
        let (code, text) = refusal(&e);
        assert_eq!(code, Some(Code::InvalidArgument), "{text}");
        assert!(!text.contains("configuration validation failed"), "{text}");
        assert!(text.contains(talos_says), "{mode:?} {dry_run}: {text}");
    }

    // Nothing changed: same address and hostname, nothing staged (a reboot boots the same
    // config), and the node's own diff against the original config is empty.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let node = &LabStatus::load(dir.path()).unwrap().nodes[0];
    assert_eq!(node.mode, "configured");
    assert_eq!(node.current_address, "127.0.45.11");
    let out = a
        .apply_configuration(&good, ApplyMode::Auto, true, None)
        .await
        .unwrap();
    assert!(out.mode_details.contains("No changes."), "{out:?}");
    let out = a
        .apply_configuration(&renamed, ApplyMode::Auto, true, None)
        .await
        .unwrap();
    assert!(
        out.mode_details
            .contains("-    hostname: cp1\n+    hostname: cp1-new\n"),
        "{out:?}"
    );
    a.reboot().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    wait_configured(&c, "127.0.45.11").await;
    let out = a
        .apply_configuration(&good, ApplyMode::Auto, true, None)
        .await
        .unwrap();
    assert!(out.mode_details.contains("No changes."), "{out:?}");

    // calls.jsonl records each refusal with Talos' message.
    let calls = applies(dir.path());
    let refused = &calls[before..before + cases.len()];
    for (r, (_, mode, dry_run, talos_says)) in refused.iter().zip(cases) {
        assert!(r.result.starts_with("InvalidArgument: "), "{r:?}");
        assert!(r.result.contains(talos_says), "{r:?}");
        assert_eq!(r.detail["mode"], mode.name(), "{r:?}");
        assert_eq!(r.detail["dry_run"], dry_run, "{r:?}");
    }

    // The valid live change is accepted.
    let out = a
        .apply_configuration(&renamed, ApplyMode::NoReboot, false, None)
        .await
        .unwrap();
    assert_eq!(out.mode, Some(ApplyMode::NoReboot));
    lab.shutdown().await;
}
