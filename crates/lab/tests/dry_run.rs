//! A configured node's dry-run apply answers as Talos does (`v1alpha1_server.go`
//! ApplyConfiguration with `dry_run`, and its generateDiff): the summary, then "Config diff:"
//! and the unified diff of the running and the new config, or "No changes.". `vixen plan` shows
//! this text and the drift check keys on "No changes.", so a lab that answered anything else
//! would let both pass against a node that differs.

mod common;

use common::*;
use vixen_lab::{LabSpec, NodeSpec, Role};
use vixen_talos::ApplyMode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_answers_talos_summary_and_a_unified_diff_or_no_changes() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::generate();
    let spec = LabSpec {
        nodes: vec![NodeSpec {
            name: "cp1".into(),
            role: Role::Controlplane,
            maintenance_address: "127.154.0.1".parse().unwrap(),
            talos_version: "v1.11.6".into(),
        }],
    };
    let lab = start(&spec, dir.path()).await;
    let good = c.config(Role::Controlplane, "cp1", &["127.154.0.11"], "v1.11.6");
    install(&c, "127.154.0.1", &good, "127.154.0.11").await;
    let a = admin(&c, "127.154.0.11");
    let summary = "Dry run summary:\nApplied configuration without a reboot (skipped in dry-run).\n\
                   Config diff:\n\n";

    let same = a
        .apply_configuration(&good, ApplyMode::Auto, true, None)
        .await
        .unwrap();
    assert_eq!(same.mode_details, format!("{summary}No changes."));
    // The same values written another way are no change: Talos diffs its own encoding.
    let text = String::from_utf8(good.clone()).unwrap();
    let requoted = text.replacen("hostname: cp1\n", "hostname: \"cp1\"\n", 1);
    assert_ne!(requoted, text);
    let out = a
        .apply_configuration(requoted.as_bytes(), ApplyMode::Auto, true, None)
        .await
        .unwrap();
    assert_eq!(out.mode_details, format!("{summary}No changes."));

    // Keys in another order are no change either: Talos encodes from its structs
    // (`container.go` encodeToBuf), not the submitted text.
    let reordered = text.replacen("version: v1alpha1\n", "", 1) + "version: v1alpha1\n";
    assert_ne!(reordered, text);
    let out = a
        .apply_configuration(reordered.as_bytes(), ApplyMode::Auto, true, None)
        .await
        .unwrap();
    assert_eq!(out.mode_details, format!("{summary}No changes."));

    let renamed = text.replacen("hostname: cp1\n", "hostname: cp1-new\n", 1);
    let out = a
        .apply_configuration(renamed.as_bytes(), ApplyMode::Auto, true, None)
        .await
        .unwrap();
    let diff = out
        .mode_details
        .strip_prefix(summary)
        .unwrap_or_else(|| panic!("{:?}", out.mode_details));
    assert!(diff.starts_with("--- a\n+++ b\n@@ -"), "{diff}");
    assert!(
        diff.contains("\n-    hostname: cp1\n+    hostname: cp1-new\n"),
        "{diff}"
    );
    // Three lines of context around the change, no more.
    let body: Vec<&str> = diff.lines().skip(3).collect();
    assert!(body.len() <= 8, "{diff}");
    // Nothing was changed by the dry runs.
    let again = a
        .apply_configuration(&good, ApplyMode::Auto, true, None)
        .await
        .unwrap();
    assert_eq!(again.mode_details, format!("{summary}No changes."));
    lab.shutdown().await;
}
