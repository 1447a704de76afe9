//! `vixen plan` sees what the agent sees (issue 15): the dry-run adoption of nodes without a
//! record, the in-cluster journal when a Kubernetes API answers, Talos' own diff for each config
//! step, a summary line and terraform's detailed exit codes. Each test runs on its own lab
//! (127.15x.x.x), stopped when the test ends; effects are read from the lab's calls.jsonl and
//! the API server, never from vixen's own report.

use std::process::Output;
use std::time::{Duration, Instant};

mod common;
use common::example;
use common::lab::*;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, PostParams};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn plan(lab: &Lab, state: &std::path::Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "plan",
        "--repo",
        lab.repo.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    lab.vixen(&args)
}

/// Fault: vixen's local record is lost (a new laptop, an empty `--state`). The plan adopts
/// every node that runs exactly its Git config, as the agent does, and shows no step (the
/// regression: a rolling REBOOT of every node). After a Git change it exits 2 with
/// `--detailed-exitcode` and shows Talos' diff with the changed value. Nothing is changed.
#[test]
fn plan_with_an_empty_state_adopts_shows_no_step_then_talos_diff_of_a_git_change() {
    let lab = Lab::full_cluster(150);
    let empty = tempfile::tempdir().unwrap();
    let mark = lab.mark();
    let out = plan(&lab, empty.path(), &[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("no changes: the cluster matches Git"), "{t}");
    assert!(t.contains("state: local state"), "says which state: {t}");
    assert!(t.contains("adopted: 5 nodes"), "{t}");
    assert!(
        t.contains("0 steps: 0 reboots, 0 resets, 0 etcd changes"),
        "{t}"
    );
    let out = plan(&lab, empty.path(), &["--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    lab.edit(
        "nodes/worker-1.yaml",
        "node.kubernetes.io/pool: general",
        "node.kubernetes.io/pool: batch",
    );
    let out = plan(&lab, empty.path(), &["--detailed-exitcode"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    let lines: Vec<&str> = t.lines().map(str::trim_start).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with('-') && l.contains("pool: general"))
            && lines
                .iter()
                .any(|l| l.starts_with('+') && l.contains("pool: batch")),
        "Talos' diff shows the changed value: {t}"
    );
    assert!(t.contains("Dry run summary:"), "{t}");
    assert!(t.contains("worker-1"), "{t}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" step") && l.contains("reboot") && l.ends_with("etcd changes")),
        "{t}"
    );
    // Read-only: no mutating call, and nothing written to the state folder.
    let calls = lab.mutating_since(mark);
    assert!(calls.is_empty(), "{calls:#?}");
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);
}

/// Fault: a mistyped `--state` or `--lab` folder. It is an error naming the flag (exit 1), not
/// an empty record that would plan every node from scratch.
#[test]
fn plan_refuses_a_state_or_lab_folder_that_does_not_exist() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    for flag in ["--state", "--lab"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vixen"))
            .args(["plan", "--repo"])
            .arg(example())
            .arg(flag)
            .arg(&missing)
            .env("SOPS_AGE_KEY_FILE", example().join("demo.agekey"))
            .output()
            .unwrap();
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{t}");
        assert!(
            t.contains(&format!("{flag} {}: no such folder", missing.display())),
            "{t}"
        );
        assert!(!missing.exists());
    }
}

/// Fault: the local record is empty but the in-cluster agent's journal (ConfigMap
/// vixen-state) says otherwise. The plan reads the journal through the API server it finds
/// with Talos' Kubeconfig RPC, says so, and plans from it: the node whose recorded config
/// differs gets a step. The journal is left as it was.
#[test]
fn plan_reads_the_in_cluster_journal_when_the_api_answers() {
    let test = "plan_reads_the_in_cluster_journal_when_the_api_answers";
    if vixen_lab::peers::for_test("kube-apiserver", test).is_none() {
        return;
    }
    let lab = Lab::start_with(151, &["--kube"], |_| {});
    lab.bootstrap();
    lab.converge();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let kubeconfig = std::fs::read_to_string(lab.lab.join("out/kubeconfig")).unwrap();
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(lab.lab.join("vixen/state.json")).unwrap()).unwrap();
    let nodes = state["inventory"]["nodes"].as_array_mut().unwrap();
    assert_eq!(nodes.len(), 5);
    let w1 = nodes.iter_mut().find(|n| n["name"] == "worker-1").unwrap();
    w1["config"]["whole"] = "recorded-by-the-in-cluster-agent".into();
    let version = rt.block_on(async {
        let client = common::kubeapi::from_kubeconfig(&kubeconfig).await;
        let until = Instant::now() + Duration::from_secs(120);
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "vixen-system"}}))
                .unwrap();
        loop {
            match Api::<Namespace>::all(client.clone())
                .create(&PostParams::default(), &ns)
                .await
            {
                Ok(_) => break,
                Err(kube::Error::Api(e)) if e.code == 409 => break,
                Err(e) => assert!(Instant::now() < until, "the API server: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "vixen-state"},
            "data": {"state.json": state.to_string()},
        }))
        .unwrap();
        let api = Api::<ConfigMap>::namespaced(client, "vixen-system");
        api.create(&PostParams::default(), &cm).await.unwrap();
        (
            api.clone(),
            api.get("vixen-state")
                .await
                .unwrap()
                .metadata
                .resource_version,
        )
    });
    let empty = tempfile::tempdir().unwrap();
    let mark = lab.mark();
    let out = plan(&lab, empty.path(), &["--detailed-exitcode"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("state: ConfigMap vixen-system/vixen-state (the in-cluster agent's journal): 5 nodes on record"),
        "{t}"
    );
    assert!(!t.contains("adopted:"), "nothing to adopt: {t}");
    let steps: Vec<&str> = t.lines().filter(|l| l.contains(". ")).collect();
    assert!(
        steps
            .iter()
            .any(|l| l.contains("worker-1") && l.contains("config changed")),
        "{t}"
    );
    assert!(lab.mutating_since(mark).is_empty());
    let (api, before) = version;
    let after = rt
        .block_on(api.get("vixen-state"))
        .unwrap()
        .metadata
        .resource_version;
    assert_eq!(before, after, "the journal was not written");
}
