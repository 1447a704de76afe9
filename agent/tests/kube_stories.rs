//! The lifecycle stories that involve Kubernetes, on a lab running a real kube-apiserver on its
//! real etcd (`vixen lab up --kube`; the peer is built by tests/peers/build.sh). vixen drains
//! through the Eviction API and gates on the Node `Ready` condition; the tests watch the API
//! server and the lab's call journal, never vixen's own report.
//!
//! The lab runs no kube-controller-manager: where a controller would act (the disruption
//! controller filling in a PodDisruptionBudget's status), the test does it, and says so.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::kubeapi::{client, ready, runtime};
use common::lab::*;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

/// A `--kube` lab, or `None` (after a loud skip) when the kube-apiserver peer is not built
/// outside CI.
fn kube_lab(k: u8, test: &str) -> Option<Lab> {
    vixen_lab::peers::for_test("kube-apiserver", test)?;
    Some(Lab::start_with(k, &["--kube"], |_| {}))
}

fn unschedulable(n: &Node) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

fn pod(name: &str, node: &str, labels: serde_json::Value, owner: Option<serde_json::Value>) -> Pod {
    let mut meta = serde_json::json!({ "name": name, "labels": labels });
    if let Some(o) = owner {
        meta["ownerReferences"] = serde_json::json!([o]);
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": { "nodeName": node, "containers": [{ "name": "app", "image": "registry.k8s.io/pause:3.10" }] },
    }))
    .unwrap()
}

/// `vixen agent --once` in the background, so the test can watch the rollout as it runs.
fn spawn_agent(lab: &Lab, ready_timeout: u32) -> std::process::Child {
    let mut args: Vec<String> = vec![
        "agent".into(),
        "--once".into(),
        "--ready-timeout".into(),
        ready_timeout.to_string(),
    ];
    args.extend(lab.target());
    std::process::Command::new(env!("CARGO_BIN_EXE_vixen"))
        .args(&args)
        .env("SOPS_AGE_KEY_FILE", common::example().join("demo.agekey"))
        .env("VIXEN_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Polls until `f` holds (at most `secs`).
#[track_caller]
fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < until, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn story_14_removed_worker_is_drained_first_its_budget_honoured_then_reset_and_its_node_deleted() {
    let Some(lab) = kube_lab(61, "story_14") else {
        return;
    };
    lab.bootstrap();
    lab.converge();
    let rt = runtime();
    let client = client(&lab, &rt, 5);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let nodes: Api<Node> = Api::all(client.clone());
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");

    // A workload on worker-2 guarded by a PodDisruptionBudget, and a DaemonSet's pod.
    rt.block_on(async {
        // The service-account controller's part: the namespace's default ServiceAccount.
        let sa: k8s_openapi::api::core::v1::ServiceAccount = serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}})).unwrap();
        Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), "default").create(&PostParams::default(), &sa).await.unwrap();
        pods.create(&PostParams::default(), &pod("web", "worker-2", serde_json::json!({"app": "web"}), None)).await.unwrap();
        let ds = serde_json::json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "node-agent", "uid": "6f1c3c36-2d1b-4d35-9d6c-000000000001", "controller": true});
        pods.create(&PostParams::default(), &pod("node-agent-x1", "worker-2", serde_json::json!({"app": "node-agent"}), Some(ds))).await.unwrap();
        let pdb: PodDisruptionBudget = serde_json::from_value(serde_json::json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": { "name": "web" },
            "spec": { "minAvailable": 1, "selector": { "matchLabels": { "app": "web" } } },
        }))
        .unwrap();
        let pdb = pdbs.create(&PostParams::default(), &pdb).await.unwrap();
        // The disruption controller's part (no kube-controller-manager here): one pod, one
        // required, no disruption allowed.
        let generation = pdb.metadata.generation.unwrap_or(1);
        let status = serde_json::json!({"status": {"observedGeneration": generation, "disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1}});
        pdbs.patch_status("web", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    });

    // Its kubelet runs it (a Pending pod may be evicted whatever its budget says).
    eventually(30, "web Running", || {
        rt.block_on(pods.get("web"))
            .is_ok_and(|p| p.status.and_then(|s| s.phase).as_deref() == Some("Running"))
    });

    std::fs::remove_file(lab.repo.join("nodes/worker-2.yaml")).unwrap();
    let mark = lab.mark();
    let agent = spawn_agent(&lab, 60);

    // vixen cordons worker-2, and the budget holds the eviction back: no reset while it does.
    eventually(60, "worker-2 cordoned", || {
        rt.block_on(nodes.get("worker-2"))
            .is_ok_and(|n| unschedulable(&n))
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        lab.mutating_since(mark)
            .iter()
            .all(|c| c.short() != "Reset"),
        "reset while the budget forbids the eviction"
    );
    let web = rt
        .block_on(pods.get("web"))
        .expect("the guarded pod is still there");
    assert!(web.metadata.deletion_timestamp.is_none());
    assert_eq!(lab.node_status("worker-2")["mode"], "configured");

    // The budget allows one disruption now: the drain finishes and the reset follows.
    let status = serde_json::json!({"status": {"disruptionsAllowed": 1, "currentHealthy": 2, "desiredHealthy": 1, "expectedPods": 2}});
    rt.block_on(pdbs.patch_status("web", &PatchParams::default(), &Patch::Merge(&status)))
        .unwrap();
    let out = agent.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "agent: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let calls = lab.mutating_since(mark);
    assert_eq!(names(&calls), set(&["worker-2"]), "{calls:#?}");
    assert_eq!(calls.iter().map(Call::short).collect::<Vec<_>>(), ["Reset"]);
    assert_eq!(lab.node_status("worker-2")["mode"], "maintenance");
    rt.block_on(async {
        assert!(
            pods.get_opt("web").await.unwrap().is_none(),
            "the workload pod was evicted"
        );
        let ds_pod = pods.get("node-agent-x1").await.unwrap();
        assert!(
            ds_pod.metadata.deletion_timestamp.is_none(),
            "a DaemonSet pod is not evicted"
        );
        assert!(
            nodes.get_opt("worker-2").await.unwrap().is_none(),
            "the Node of the reset machine is deleted"
        );
        for n in nodes.list(&ListParams::default()).await.unwrap().items {
            assert!(
                !unschedulable(&n),
                "{} was left cordoned",
                n.metadata.name.unwrap_or_default()
            );
        }
    });
}

#[test]
fn story_15_upgrade_waits_for_each_node_ready_one_at_a_time_and_stops_at_one_that_is_not() {
    let Some(lab) = kube_lab(62, "story_15") else {
        return;
    };
    lab.bootstrap();
    lab.converge();
    let rt = runtime();
    let client = client(&lab, &rt, 5);
    let nodes: Api<Node> = Api::all(client.clone());
    // Reboots long enough for the kubelet to report them (a real node takes minutes).
    for n in ["cp-1", "cp-2", "cp-3", "worker-1", "worker-2"] {
        lab.fault(n, "slow-reboot 1500");
    }

    // Watch Ready through the API server while the rollout runs.
    let not_ready_at_once: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (seen, stop, nodes) = (not_ready_at_once.clone(), stop.clone(), nodes.clone());
        rt.spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(list) = nodes.list(&ListParams::default()).await {
                    let down: Vec<String> = list
                        .items
                        .iter()
                        .filter(|n| !ready(n))
                        .filter_map(|n| n.metadata.name.clone())
                        .collect();
                    seen.lock().unwrap().push(down);
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };

    lab.edit("cluster.yaml", "version: v1.11.6", "version: v1.12.2");
    let mark = lab.mark();
    let agent = spawn_agent(&lab, 20);
    // worker-1 (the 4th node) comes back with Talos healthy but its kubelet NotReady.
    eventually(120, "worker-1's upgrade", || {
        lab.mutating_since(mark)
            .iter()
            .any(|c| c.node == "worker-1" && c.short() == "Upgrade")
    });
    lab.fault("worker-1", "kubelet-not-ready");
    let out = agent.wait_with_output().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    rt.block_on(watcher).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Node worker-1 Ready"), "{stderr}");

    let upgrades: Vec<String> = lab
        .mutating_since(mark)
        .iter()
        .filter(|c| c.short() == "Upgrade")
        .map(|c| c.node.clone())
        .collect();
    assert_eq!(upgrades.len(), 4, "{upgrades:?}");
    assert_eq!(upgrades[3], "worker-1");
    assert!(
        !upgrades.contains(&"worker-2".to_string()),
        "the rollout went past a node Kubernetes does not see Ready"
    );

    // One node down at a time, and each upgraded control plane was seen NotReady (the gate
    // had something to wait for).
    let samples = not_ready_at_once.lock().unwrap().clone();
    let worst = samples.iter().map(Vec::len).max().unwrap_or(0);
    assert!(
        worst <= 1,
        "two nodes NotReady at once: {:?}",
        samples.iter().find(|s| s.len() > 1)
    );
    let mut seen_down: BTreeMap<String, usize> = BTreeMap::new();
    for s in &samples {
        for n in s {
            *seen_down.entry(n.clone()).or_default() += 1;
        }
    }
    for cp in ["cp-1", "cp-2", "cp-3"] {
        assert!(
            seen_down.contains_key(cp),
            "{cp} never NotReady during its upgrade: {seen_down:?}"
        );
    }

    rt.block_on(async {
        let w1 = nodes.get("worker-1").await.unwrap();
        assert!(
            unschedulable(&w1),
            "a node that is not Ready stays cordoned"
        );
        for cp in ["cp-1", "cp-2", "cp-3"] {
            let n = nodes.get(cp).await.unwrap();
            assert!(!unschedulable(&n) && ready(&n), "{cp} uncordoned and Ready");
            assert!(
                n.status
                    .unwrap()
                    .node_info
                    .unwrap()
                    .os_image
                    .contains("v1.12.2"),
                "{cp} on the new version"
            );
        }
    });

    // The kubelet recovers: the next reconcile uncordons worker-1 (no second upgrade) and
    // carries on with worker-2.
    lab.fault("worker-1", "kubelet-ready");
    let mark2 = lab.mark();
    lab.converge();
    let upgrades: Vec<String> = lab
        .mutating_since(mark2)
        .iter()
        .filter(|c| c.short() == "Upgrade")
        .map(|c| c.node.clone())
        .collect();
    assert_eq!(upgrades, ["worker-2"]);
    rt.block_on(async {
        for n in nodes.list(&ListParams::default()).await.unwrap().items {
            let name = n.metadata.name.clone().unwrap_or_default();
            assert!(
                ready(&n) && !unschedulable(&n),
                "{name} Ready and schedulable"
            );
            assert!(
                n.status
                    .unwrap()
                    .node_info
                    .unwrap()
                    .os_image
                    .contains("v1.12.2"),
                "{name} on the new version"
            );
        }
    });
}

#[test]
fn story_16_bootstrap_installs_vixen_once_the_api_answers_and_never_prints_the_age_key() {
    let Some(lab) = kube_lab(63, "story_16") else {
        return;
    };
    let out_dir = lab.lab.join("out");
    let out = lab.run(&[
        "bootstrap",
        "--out",
        out_dir.to_str().unwrap(),
        "--timeout",
        "60",
        "--install-repo",
        "https://git.example/homelab.git",
        "--install-branch",
        "prod",
        "--api-timeout",
        "120",
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "bootstrap: {stdout}{stderr}");
    let age_key = std::fs::read_to_string(common::example().join("demo.agekey")).unwrap();
    let secret_line = age_key
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap();
    assert!(
        !stdout.contains(secret_line) && !stderr.contains(secret_line),
        "the age key was printed"
    );
    // No forge in the URL, no token: said, not fatal; no placeholder phrase of old.
    assert!(stdout.contains("commit statuses: off"), "{stdout}");
    assert!(!stdout.contains("every change is a git push"), "{stdout}");

    // What the API server holds, read with the kubeconfig bootstrap wrote.
    let rt = runtime();
    rt.block_on(async {
        let client = common::kubeapi::from_kubeconfig(&std::fs::read_to_string(out_dir.join("kubeconfig")).unwrap()).await;
        let deploy: k8s_openapi::api::apps::v1::Deployment = Api::namespaced(client.clone(), "vixen-system").get("vixen").await.unwrap();
        assert_eq!(deploy.spec.as_ref().unwrap().replicas, Some(2));
        assert_eq!(deploy.metadata.labels.as_ref().unwrap()["app.kubernetes.io/part-of"], "vixen");
        let cm: k8s_openapi::api::core::v1::ConfigMap = Api::namespaced(client.clone(), "vixen-system").get("vixen-config").await.unwrap();
        let data = cm.data.unwrap();
        assert_eq!(data["VIXEN_REPO"], "https://git.example/homelab.git");
        assert_eq!(data["VIXEN_BRANCH"], "prod");
        assert_eq!(data["VIXEN_FORGE"], "", "no forge is known for git.example");
        assert!(data.values().all(|v| !v.contains("OWNER")), "{data:?}");
        // The lab's Talos (Kubernetes API access on) answered the talos.dev ServiceAccount
        // with the Secret the pods mount.
        let talos: k8s_openapi::api::core::v1::Secret = Api::namespaced(client.clone(), "vixen-system").get("vixen-talos").await.unwrap();
        assert!(talos.data.unwrap()["config"].0.starts_with(b"context: default"));
        let secret: k8s_openapi::api::core::v1::Secret = Api::namespaced(client.clone(), "vixen-system").get("vixen-age").await.unwrap();
        assert_eq!(secret.data.unwrap()["age.agekey"].0, age_key.as_bytes(), "the Secret holds the age key the repo decrypts with");
        let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> = Api::all(client.clone());
        crds.get("vixenclusters.vixen.dev").await.unwrap();
        let role: k8s_openapi::api::rbac::v1::ClusterRole = Api::all(client.clone()).get("vixen").await.unwrap();
        assert!(role.rules.unwrap().iter().any(|r| r.resources.as_ref().is_some_and(|x| x.contains(&"pods/eviction".to_string()))));
        let managers: Vec<String> = deploy.metadata.managed_fields.unwrap_or_default().into_iter().filter_map(|m| m.manager).collect();
        assert!(managers.contains(&"vixen".to_string()), "applied under the field manager vixen: {managers:?}");
    });

    // Running it again changes nothing on the node and applies the same objects again.
    let mark = lab.mark();
    let out = lab.run(&[
        "bootstrap",
        "--out",
        out_dir.to_str().unwrap(),
        "--timeout",
        "60",
        "--install-repo",
        "https://git.example/homelab.git",
        "--api-timeout",
        "60",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        lab.mutating_since(mark).is_empty(),
        "a second bootstrap touched a node"
    );
}

/// Issue 14: a Kubernetes upgrade (1.34.1 -> 1.34.2) waits, control plane by control plane,
/// for the static pods Talos runs from the config (kube-apiserver, kube-controller-manager,
/// kube-scheduler) to be Ready on the new version, as `talosctl upgrade-k8s` waits for each.
/// Fault: cp-2's kube-apiserver never becomes Ready. The rollout stops at cp-2 and says why;
/// cp-3 and the workers are not touched, so two API servers of three keep serving. Read from
/// the API server (the mirror pods) and calls.jsonl.
#[test]
fn story_18_kubernetes_upgrade_waits_for_each_control_planes_static_pods() {
    let Some(lab) = kube_lab(181, "story_18") else {
        return;
    };
    lab.bootstrap();
    lab.converge();
    let rt = runtime();
    let client = client(&lab, &rt, 5);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let statics = |pods: &Api<Pod>| {
        rt.block_on(pods.list(&ListParams::default().labels("tier=control-plane")))
            .unwrap()
            .items
            .into_iter()
            .map(|p| {
                let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap();
                let image = p.spec.unwrap().containers[0].image.clone().unwrap();
                let ready = p
                    .status
                    .and_then(|s| s.conditions)
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                (p.metadata.name.unwrap(), node, image, ready)
            })
            .collect::<Vec<_>>()
    };
    let mut before = Vec::new();
    eventually(30, "9 static pods Ready", || {
        before = statics(&pods);
        before.len() == 9 && before.iter().all(|p| p.3)
    });
    assert!(
        before.iter().all(|p| p.2.ends_with(":v1.34.1")),
        "{before:?}"
    );
    lab.fault("cp-2", "apiserver-not-ready");

    lab.edit("cluster.yaml", "version: 1.34.1", "version: 1.34.2");
    let mark = lab.mark();
    let agent = spawn_agent(&lab, 10);
    let out = agent.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cp-2") && stderr.contains("kube-apiserver"),
        "{stderr}"
    );
    let applied: Vec<String> = lab
        .mutating_since(mark)
        .iter()
        .filter(|c| c.short() == "ApplyConfiguration")
        .map(|c| c.node.clone())
        .collect();
    assert_eq!(
        applied,
        ["cp-1", "cp-2"],
        "control planes first, one at a time"
    );
    let now = statics(&pods);
    let image = |name: &str| now.iter().find(|p| p.0 == name).unwrap().2.clone();
    assert!(
        image("kube-apiserver-cp-1").ends_with(":v1.34.2"),
        "{now:?}"
    );
    assert!(
        image("kube-apiserver-cp-2").ends_with(":v1.34.2"),
        "{now:?}"
    );
    assert!(
        image("kube-apiserver-cp-3").ends_with(":v1.34.1"),
        "cp-3 untouched: {now:?}"
    );

    // cp-2's API server recovers: the rollout goes on with cp-3 and the workers.
    lab.fault("cp-2", "apiserver-ready");
    let mark2 = lab.mark();
    lab.converge();
    let applied: Vec<String> = lab
        .mutating_since(mark2)
        .iter()
        .filter(|c| c.short() == "ApplyConfiguration")
        .map(|c| c.node.clone())
        .collect();
    assert_eq!(applied, ["cp-3", "worker-1", "worker-2"]);
    let after = statics(&pods);
    assert!(
        after.iter().all(|p| p.2.ends_with(":v1.34.2") && p.3),
        "{after:?}"
    );
}
