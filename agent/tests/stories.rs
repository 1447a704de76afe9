//! The lifecycle stories of issue 5, each on its own lab (real etcd, real Talos wire API), run
//! through the `vixen` binary as a user runs it. Effects are observed independently: the lab's
//! call journal (calls.jsonl), lab.json and etcd itself (etcdctl), never vixen's own report.
//!
//! Each test gets its own loopback range (127.K.x.x) so tests can run in parallel, and its lab
//! is stopped when the test ends, pass or fail.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::example;
use common::lab::*;

use serde_json::Value;

#[test]
fn story_01_add_worker_only_the_new_node_gets_a_mutating_call() {
    let lab = Lab::start(31, |repo| {
        std::fs::remove_file(repo.join("nodes/worker-2.yaml")).unwrap()
    });
    lab.bootstrap();
    lab.converge();
    // Git gains worker-2 (the lab already has the machine, in maintenance mode).
    std::fs::copy(
        example().join("nodes/worker-2.yaml"),
        lab.repo.join("nodes/worker-2.yaml"),
    )
    .unwrap();
    rewrite_all(&lab.repo.join("nodes"), "127.0.", "127.31.");
    let mark = lab.mark();
    lab.converge();
    let calls = lab.mutating_since(mark);
    assert_eq!(names(&calls), set(&["worker-2"]), "{calls:#?}");
    assert_eq!(lab.node_status("worker-2")["mode"], "configured");
}

#[test]
fn story_02_remove_worker_resets_that_node_alone() {
    let lab = Lab::full_cluster(32);
    std::fs::remove_file(lab.repo.join("nodes/worker-2.yaml")).unwrap();
    let mark = lab.mark();
    lab.converge();
    let calls = lab.mutating_since(mark);
    assert_eq!(names(&calls), set(&["worker-2"]), "{calls:#?}");
    assert_eq!(calls.iter().map(Call::short).collect::<Vec<_>>(), ["Reset"]);
    assert_eq!(calls[0].detail["graceful"], true, "{:?}", calls[0].detail);
    assert_eq!(lab.node_status("worker-2")["mode"], "maintenance");
    assert_eq!(lab.node_status("worker-1")["mode"], "configured");
}

#[test]
fn story_03_scale_control_planes_1_to_3_joins_one_at_a_time() {
    let lab = Lab::start(33, |repo| {
        std::fs::remove_file(repo.join("nodes/cp-2.yaml")).unwrap();
        std::fs::remove_file(repo.join("nodes/cp-3.yaml")).unwrap();
    });
    lab.bootstrap();
    lab.converge();
    assert_eq!(lab.etcd_members(&lab.ip("10.1")), members(&["cp-1"]));
    for n in ["cp-2", "cp-3"] {
        std::fs::copy(
            example().join(format!("nodes/{n}.yaml")),
            lab.repo.join(format!("nodes/{n}.yaml")),
        )
        .unwrap();
    }
    rewrite_all(&lab.repo.join("nodes"), "127.0.", "127.33.");
    let mark = lab.mark();
    lab.converge();
    let calls = lab.mutating_since(mark);
    assert_eq!(names(&calls), set(&["cp-2", "cp-3"]), "{calls:#?}");
    // cp-3 is configured only after cp-2's member was promoted: between the two applies vixen
    // read the member list through a control plane and found cp-2 a voter.
    let all = lab.calls();
    let apply = |n: &str| {
        all.iter()
            .enumerate()
            .skip(mark)
            // The real apply, not the dry run made before the plan's first call.
            .find(|(_, c)| c.node == n && c.short() == "ApplyConfiguration" && c.mutating())
            .unwrap()
            .0
    };
    let (a2, a3) = (apply("cp-2"), apply("cp-3"));
    assert!(a2 < a3);
    assert!(
        all[a2..a3].iter().any(|c| c.short() == "EtcdMemberList"),
        "no membership check between the joins"
    );
    assert_eq!(
        lab.etcd_members(&lab.ip("10.1")),
        members(&["cp-1", "cp-2", "cp-3"])
    );
    assert_eq!(lab.node_status("worker-1")["mode"], "configured");
}

#[test]
fn story_04_scale_control_planes_3_to_1_keeps_etcd_writable() {
    let lab = Lab::full_cluster(34);
    std::fs::remove_file(lab.repo.join("nodes/cp-2.yaml")).unwrap();
    std::fs::remove_file(lab.repo.join("nodes/cp-3.yaml")).unwrap();
    // A probe writes to etcd through the member that stays, all along the change.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let endpoint = format!("http://{}:2379", lab.ip("10.1"));
    let probe = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut worst, mut failing_since): (Duration, Option<Instant>) =
                (Duration::ZERO, None);
            let mut writes = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let ok = Command::new("etcdctl")
                    .env("ETCDCTL_API", "3")
                    .args([
                        "--endpoints",
                        &endpoint,
                        "--command-timeout=2s",
                        "put",
                        "probe",
                        &writes.to_string(),
                    ])
                    .output()
                    .is_ok_and(|o| o.status.success());
                writes += 1;
                match (ok, failing_since) {
                    (true, Some(t)) => {
                        worst = worst.max(t.elapsed());
                        failing_since = None;
                    }
                    (false, None) => failing_since = Some(Instant::now()),
                    _ => {}
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Some(t) = failing_since {
                worst = worst.max(t.elapsed());
            }
            (worst, writes)
        })
    };
    let mark = lab.mark();
    lab.converge();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (worst, writes) = probe.join().unwrap();
    assert!(writes > 3, "the probe barely ran");
    // etcd's default election timeout is 1 s: no outage may last longer than an election.
    assert!(
        worst < Duration::from_secs(3),
        "etcd writes failed for {worst:?}"
    );
    let calls = lab.mutating_since(mark);
    assert_eq!(names(&calls), set(&["cp-2", "cp-3"]), "{calls:#?}");
    assert!(
        calls.iter().all(|c| c.result == "ok"),
        "a call failed on the way: {calls:#?}"
    );
    // For each leaving node: leave etcd before its reset.
    for n in ["cp-2", "cp-3"] {
        let seq: Vec<&str> = calls
            .iter()
            .filter(|c| c.node == n)
            .map(Call::short)
            .filter(|m| *m != "EtcdForfeitLeadership")
            .collect();
        assert_eq!(seq, ["EtcdLeaveCluster", "Reset"], "{n}");
    }
    assert_eq!(lab.etcd_members(&lab.ip("10.1")), members(&["cp-1"]));
    assert_eq!(lab.node_status("cp-2")["mode"], "maintenance");
    assert_eq!(lab.node_status("cp-3")["mode"], "maintenance");
}

#[test]
fn story_05_even_control_plane_count_is_rejected_with_zero_calls() {
    let lab = Lab::full_cluster(35);
    std::fs::remove_file(lab.repo.join("nodes/cp-3.yaml")).unwrap();
    let mark = lab.mark();
    let out = lab.run(&["agent", "--once"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nodes/cp-2.yaml:3:7: 2 control planes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        lab.mark(),
        mark,
        "an invalid repo must not cause a single call"
    );
}

#[test]
fn story_06_address_and_hostname_change_follows_the_node_without_reset() {
    let lab = Lab::full_cluster(36);
    let before = lab.etcd_members(&lab.ip("10.1"));
    lab.edit("nodes/worker-1.yaml", "127.36.10.4/24", "127.36.10.44/24");
    lab.edit(
        "nodes/cp-2.yaml",
        "role: controlplane",
        "hostname: cp-2b\nrole: controlplane",
    );
    let mark = lab.mark();
    lab.converge();
    let calls = lab.mutating_since(mark);
    assert!(
        calls.iter().all(|c| c.short() == "ApplyConfiguration"),
        "{calls:#?}"
    );
    assert_eq!(names(&calls), set(&["worker-1", "cp-2"]));
    assert!(
        calls.iter().all(|c| c.detail["mode"] == "NO_REBOOT"),
        "{calls:#?}"
    );
    assert_eq!(
        lab.node_status("worker-1")["current_address"],
        lab.ip("10.44")
    );
    assert_eq!(lab.etcd_members(&lab.ip("10.1")).len(), before.len());
    // A second reconcile finds the node at its new address and does nothing.
    let mark = lab.mark();
    lab.converge();
    assert!(lab.mutating_since(mark).is_empty());
}

#[test]
fn story_07_talos_upgrade_one_node_at_a_time_leader_last() {
    let lab = Lab::full_cluster(37);
    lab.edit("cluster.yaml", "version: v1.11.6", "version: v1.12.2");
    let mark = lab.mark();
    lab.converge();
    let calls = lab.mutating_since(mark);
    let upgrades: Vec<&str> = calls
        .iter()
        .filter(|c| c.short() == "Upgrade")
        .map(|c| c.node.as_str())
        .collect();
    assert_eq!(upgrades.len(), 5);
    assert_eq!(
        &upgrades[3..],
        ["worker-1", "worker-2"],
        "control planes first"
    );
    // the etcd leader forfeits right before its own upgrade, and goes last of the control planes
    let forfeit = calls
        .iter()
        .position(|c| c.short() == "EtcdForfeitLeadership")
        .expect("leader forfeits");
    assert_eq!(calls[forfeit + 1].short(), "Upgrade");
    assert_eq!(calls[forfeit + 1].node, upgrades[2]);
    for n in lab.status()["nodes"].as_array().unwrap() {
        assert_eq!(n["talos_version"], "v1.12.2", "{n}");
    }
    assert_eq!(lab.etcd_members(&lab.ip("10.1")).len(), 3);
}

#[test]
fn story_07b_skipping_a_minor_is_refused_before_any_call() {
    let lab = Lab::full_cluster(38);
    lab.edit("cluster.yaml", "version: v1.11.6", "version: v1.13.0");
    lab.edit("cluster.yaml", "version: 1.34.1", "version: 1.34.2");
    let mark = lab.mark();
    let out = lab.run(&["agent", "--once"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("v1.12.x"), "{err}");
    assert!(lab.mutating_since(mark).is_empty());
}

#[test]
fn story_07c_failed_upgrade_stops_the_rollout() {
    let lab = Lab::full_cluster(39);
    lab.edit("cluster.yaml", "version: v1.11.6", "version: v1.12.2");
    // A real node takes minutes to reboot; give cp-2 a visible reboot so the rollback is seen.
    for fault in [&["fail-next-upgrade"][..], &["slow-reboot", "2000"][..]] {
        let mut args = vec!["lab", "fault", "--dir", lab.lab.to_str().unwrap(), "cp-2"];
        args.extend_from_slice(fault);
        let out = lab.vixen(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mark = lab.mark();
    let out = lab.run(&["agent", "--once"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cp-2") && err.contains("rolled back"), "{err}");
    let upgrades: Vec<String> = lab
        .mutating_since(mark)
        .iter()
        .filter(|c| c.short() == "Upgrade")
        .map(|c| c.node.clone())
        .collect();
    assert_eq!(upgrades, ["cp-2"], "no further node may be touched");
    assert_eq!(lab.node_status("cp-2")["talos_version"], "v1.11.6");
}

#[test]
fn story_10_metadata_change_is_live_and_unchanged_config_makes_no_apply() {
    let lab = Lab::full_cluster(40);
    lab.edit(
        "nodes/worker-1.yaml",
        "node.kubernetes.io/pool: general",
        "node.kubernetes.io/pool: batch",
    );
    lab.edit("cluster.yaml", "", "# a comment that changes nothing\n");
    let mark = lab.mark();
    lab.converge();
    let calls = lab.mutating_since(mark);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(
        (calls[0].node.as_str(), calls[0].short()),
        ("worker-1", "ApplyConfiguration")
    );
    assert_eq!(calls[0].detail["mode"], "NO_REBOOT");
}

#[test]
fn story_11_second_reconcile_makes_zero_mutating_calls() {
    let lab = Lab::full_cluster(41);
    let mark = lab.mark();
    let out = lab.converge();
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 steps"));
    assert!(lab.mutating_since(mark).is_empty());
    // and bootstrap again changes nothing either
    lab.bootstrap();
    assert!(
        lab.mutating_since(mark).is_empty(),
        "a second bootstrap must not call Bootstrap"
    );
}

#[test]
fn story_11b_lost_journal_nodes_running_their_git_config_are_adopted_untouched() {
    let lab = Lab::full_cluster(51);
    // vixen's record is gone (a lost volume; a new in-cluster agent whose journal starts empty).
    std::fs::remove_file(lab.lab.join("vixen/state.json")).unwrap();
    let mark = lab.mark();
    let out = lab.converge();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0 steps"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let calls = lab.mutating_since(mark);
    assert!(calls.is_empty(), "{calls:#?}");
    // Each node was asked with a dry run, once.
    let dry: Vec<String> = lab
        .calls()
        .into_iter()
        .skip(mark)
        .filter(|c| c.short() == "ApplyConfiguration" && c.detail["dry_run"] == true)
        .map(|c| c.node)
        .collect();
    assert_eq!(dry.len(), 5, "{dry:?}");
    // A real change afterwards is planned from the re-learnt record: live, no reboot.
    lab.edit(
        "nodes/worker-1.yaml",
        "node.kubernetes.io/pool: general",
        "node.kubernetes.io/pool: batch",
    );
    let mark = lab.mark();
    lab.converge();
    let calls = lab.mutating_since(mark);
    assert_eq!(names(&calls), set(&["worker-1"]), "{calls:#?}");
    assert_eq!(
        calls[0].detail["mode"], "NO_REBOOT",
        "{:?}",
        calls[0].detail
    );
}

#[test]
fn story_09_promote_worker_to_control_plane_resets_that_node_alone() {
    let lab = Lab::full_cluster(42);
    lab.edit("nodes/worker-2.yaml", "role: worker", "role: controlplane");
    lab.edit("nodes/worker-2.yaml", "taints:", "taints: []\nold_taints:");
    // keep the count odd: cp-3 leaves in the same commit
    std::fs::remove_file(lab.repo.join("nodes/cp-3.yaml")).unwrap();
    let text = std::fs::read_to_string(lab.repo.join("nodes/worker-2.yaml")).unwrap();
    let text: String = text
        .lines()
        .take_while(|l| !l.starts_with("old_taints"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(lab.repo.join("nodes/worker-2.yaml"), text).unwrap();
    let mark = lab.mark();
    lab.converge();
    let calls = lab.mutating_since(mark);
    assert_eq!(names(&calls), set(&["worker-2", "cp-3"]), "{calls:#?}");
    let resets: BTreeSet<String> = calls
        .iter()
        .filter(|c| c.short() == "Reset")
        .map(|c| c.node.clone())
        .collect();
    assert_eq!(resets, set(&["worker-2", "cp-3"]));
    assert_eq!(
        lab.etcd_members(&lab.ip("10.1")),
        members(&["cp-1", "cp-2", "worker-2"])
    );
}

#[test]
fn story_08_kubernetes_upgrade_is_live_node_by_node_and_skips_are_refused() {
    let lab = Lab::full_cluster(43);
    // A minor skip (and a version the running Talos cannot run) is refused before any call.
    lab.edit("cluster.yaml", "version: 1.34.1", "version: 1.36.0");
    let mark = lab.mark();
    let out = lab.run(&["agent", "--once"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(lab.mutating_since(mark).is_empty());
    // A patch release: component images change on every node, control planes first, no reboot.
    lab.edit("cluster.yaml", "version: 1.36.0", "version: 1.34.2");
    let mark = lab.mark();
    lab.converge();
    let calls = lab.mutating_since(mark);
    assert!(
        calls
            .iter()
            .all(|c| c.short() == "ApplyConfiguration" && c.detail["mode"] == "NO_REBOOT"),
        "{calls:#?}"
    );
    let order: Vec<&str> = calls.iter().map(|c| c.node.as_str()).collect();
    assert_eq!(order, ["cp-1", "cp-2", "cp-3", "worker-1", "worker-2"]);
}

#[test]
fn story_12_agent_killed_at_every_step_boundary_upgrades_each_node_once() {
    let lab = Lab::full_cluster(44);
    lab.edit("cluster.yaml", "version: v1.11.6", "version: v1.12.2");
    let state = lab.lab.join("vixen/state.json");
    let done = || -> Option<(u64, bool)> {
        let v: Value = serde_json::from_slice(&std::fs::read(&state).ok()?).ok()?;
        let run = v.get("run").filter(|r| !r.is_null())?;
        Some((run["done"].as_u64()?, run["in_flight"].is_null()))
    };
    let mark = lab.mark();
    let mut kills = 0;
    let mut last_done = 0;
    let mut failures: Vec<String> = Vec::new();
    let err_file = lab.lab.join("agent.err");
    for _attempt in 0..60 {
        let mut args: Vec<String> = vec!["agent".into(), "--once".into()];
        args.extend(lab.target());
        args.extend(["--ready-timeout".into(), "60".into()]);
        let mut child = Command::new(env!("CARGO_BIN_EXE_vixen"))
            .args(&args)
            .env("SOPS_AGE_KEY_FILE", example().join("demo.agekey"))
            .env("VIXEN_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&err_file).unwrap())
            .spawn()
            .unwrap();
        // Wait for the next step boundary (a step finished, the next not yet started), then
        // SIGKILL the agent there.
        let exited = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if let Some((d, true)) = done()
                && d > last_done
            {
                last_done = d;
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                break None;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        match exited {
            Some(status) if status.success() => break,
            // A run that fails a gate is retried, as the long-running agent retries with backoff;
            // what must hold is that no node is upgraded twice (checked below).
            Some(_) => failures.push(std::fs::read_to_string(&err_file).unwrap_or_default()),
            None => {}
        }
        assert!(
            failures.len() <= 2,
            "the resumed agent kept failing: {failures:#?}"
        );
    }
    assert!(
        kills >= 8,
        "only {kills} kills: the test did not exercise the boundaries; failures: {failures:#?}"
    );
    let upgrades: Vec<String> = lab
        .mutating_since(mark)
        .iter()
        .filter(|c| c.short() == "Upgrade")
        .map(|c| c.node.clone())
        .collect();
    let unique: BTreeSet<&String> = upgrades.iter().collect();
    eprintln!("{kills} kills, failed runs: {failures:#?}");
    assert_eq!(
        upgrades.len(),
        5,
        "every node upgraded exactly once: {upgrades:?}"
    );
    assert_eq!(unique.len(), 5);
    for n in lab.status()["nodes"].as_array().unwrap() {
        assert_eq!(n["talos_version"], "v1.12.2", "{n}");
    }
}

#[test]
fn story_13_decommission_resets_everything_workers_first_last_control_plane_alone() {
    let lab = Lab::full_cluster(45);
    let mark = lab.mark();
    let out = lab.run(&[
        "decommission",
        "--confirm",
        "not-the-name",
        "--timeout",
        "60",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        lab.mutating_since(mark).is_empty(),
        "a wrong confirmation must change nothing"
    );
    let out = lab.run(&["decommission", "--confirm", "homelab", "--timeout", "60"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let resets: Vec<(String, bool)> = lab
        .mutating_since(mark)
        .iter()
        .filter(|c| c.short() == "Reset")
        .map(|c| {
            (
                c.node.clone(),
                c.detail["graceful"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(resets.len(), 5, "{resets:?}");
    assert!(
        resets[..2].iter().all(|(n, _)| n.starts_with("worker-")),
        "workers first: {resets:?}"
    );
    assert!(
        resets[2..4].iter().all(|(n, g)| n.starts_with("cp-") && *g),
        "{resets:?}"
    );
    assert!(
        !resets[4].1,
        "the last control plane is reset alone, without leaving etcd"
    );
    for n in lab.status()["nodes"].as_array().unwrap() {
        assert_eq!(n["mode"], "maintenance", "{n}");
    }
}

// ---- bootstrap (issue 7)

#[test]
fn bootstrap_from_maintenance_gives_one_member_etcd_and_a_rerun_changes_nothing() {
    let lab = Lab::start(46, |_| {});
    lab.bootstrap();
    assert_eq!(lab.etcd_members(&lab.ip("10.1")), members(&["cp-1"]));
    assert_eq!(lab.node_status("cp-1")["mode"], "configured");
    for n in ["cp-2", "cp-3", "worker-1", "worker-2"] {
        assert_eq!(
            lab.node_status(n)["mode"],
            "maintenance",
            "{n} must not be touched"
        );
    }
    let boots: Vec<Call> = lab
        .calls()
        .into_iter()
        .filter(|c| c.short() == "Bootstrap")
        .collect();
    assert_eq!(boots.len(), 1);
    use std::os::unix::fs::PermissionsExt as _;
    for f in ["talosconfig", "kubeconfig"] {
        let mode = std::fs::metadata(lab.lab.join("out").join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    // The kubeconfig is the file itself, unpacked from the node's .tar.gz.
    let kubeconfig: Value =
        serde_yaml_ng::from_slice(&std::fs::read(lab.lab.join("out/kubeconfig")).unwrap()).unwrap();
    assert_eq!(kubeconfig["kind"], "Config", "{kubeconfig}");
    let mark = lab.mark();
    lab.bootstrap();
    assert!(
        lab.mutating_since(mark).is_empty(),
        "re-running bootstrap must not call anything mutating"
    );
}

#[test]
fn bootstrap_follows_the_node_to_its_vlan_address_when_the_management_address_is_cut() {
    let lab = Lab::start(47, |_| {});
    let out = lab.vixen(&[
        "lab",
        "fault",
        "--dir",
        lab.lab.to_str().unwrap(),
        "cp-1",
        "addr-down",
        &lab.ip("10.1"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = lab.run(&[
        "bootstrap",
        "--out",
        lab.lab.join("out").to_str().unwrap(),
        "--timeout",
        "30",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("answers configured at {}", lab.ip("20.1"))),
        "{text}"
    );
    let boots: Vec<Call> = lab
        .calls()
        .into_iter()
        .filter(|c| c.short() == "Bootstrap")
        .collect();
    assert_eq!(boots.len(), 1);
}

#[test]
fn bootstrap_with_the_wrong_age_key_applies_nothing() {
    let lab = Lab::start(48, |_| {});
    let wrong = lab.lab.parent().unwrap().join("wrong.agekey");
    let keygen = Command::new("age-keygen")
        .args(["-o", wrong.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(keygen.status.success());
    let mut args: Vec<String> = vec![
        "bootstrap".into(),
        "--out".into(),
        lab.lab.join("out").to_str().unwrap().into(),
        "--age-key".into(),
        wrong.to_str().unwrap().into(),
    ];
    args.extend(lab.target());
    let out = Command::new(env!("CARGO_BIN_EXE_vixen"))
        .args(&args)
        .env_remove("SOPS_AGE_KEY_FILE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("age1"),
        "the error lists the file's recipients: {err}"
    );
    assert_eq!(lab.mark(), 0, "not a single call may reach a node");
}

#[test]
fn bootstrap_of_an_unreachable_node_says_what_to_check_and_applies_nothing() {
    let lab = Lab::start(49, |_| {});
    let out = lab.vixen(&[
        "lab",
        "fault",
        "--dir",
        lab.lab.to_str().unwrap(),
        "cp-1",
        "down",
    ]);
    assert!(out.status.success());
    let out = lab.run(&[
        "bootstrap",
        "--out",
        lab.lab.join("out").to_str().unwrap(),
        "--timeout",
        "5",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not answer") && err.contains("powered on"),
        "{err}"
    );
    assert!(lab.mutating_since(0).is_empty());
}

#[test]
fn bootstrap_refuses_when_another_control_plane_already_runs_etcd() {
    let lab = Lab::full_cluster(50);
    let mark = lab.mark();
    let out = lab.run(&[
        "bootstrap",
        "--node",
        "cp-2",
        "--out",
        lab.lab.join("out2").to_str().unwrap(),
        "--timeout",
        "5",
    ]);
    // A second Bootstrap elsewhere would split the cluster: refused, nothing called.
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cp-1 already runs etcd"), "{err}");
    assert!(lab.mutating_since(mark).is_empty());
}

#[test]
fn a_lab_stops_with_the_process_it_belongs_to() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    common::copy_dir(&example(), &repo);
    rewrite_all(&repo, "127.0.", "127.52.");
    let dir = tmp.path().join("lab");
    let mut owner = Command::new("sleep").arg("3").spawn().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vixen"))
        .args([
            "lab",
            "up",
            "--repo",
            repo.to_str().unwrap(),
            "--dir",
            dir.to_str().unwrap(),
            "--die-with",
            &owner.id().to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listening = || {
        std::net::TcpStream::connect_timeout(
            &"127.52.10.11:50000".parse().unwrap(),
            Duration::from_millis(300),
        )
        .is_ok()
    };
    assert!(listening(), "cp-1 waits in maintenance mode");
    owner.wait().unwrap();
    let until = Instant::now() + Duration::from_secs(15);
    while listening() || dir.join("ready").exists() {
        assert!(
            Instant::now() < until,
            "the lab outlived the process it belongs to"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn story_17_reboot_needing_change_reboots_one_node_at_a_time() {
    let lab = Lab::full_cluster(53);
    // machine.env is not among what Talos applies live: every node must reboot.
    lab.edit(
        "patches/common.yaml",
        "  time:\n    disabled: false\n",
        "  time:\n    disabled: false\n  env:\n    TZ: Europe/Paris\n",
    );
    // Watch the nodes' modes in lab.json while the change rolls out.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (stop, path) = (stop.clone(), lab.lab.join("lab.json"));
        std::thread::spawn(move || {
            let mut worst: Vec<String> = Vec::new();
            let mut rebooted: BTreeSet<String> = BTreeSet::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(v) = std::fs::read(&path)
                    .map_err(|_| ())
                    .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|_| ()))
                {
                    let down: Vec<String> = v["nodes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|n| n["mode"] != "configured")
                        .map(|n| n["name"].as_str().unwrap().to_string())
                        .collect();
                    rebooted.extend(down.iter().cloned());
                    if down.len() > worst.len() {
                        worst = down;
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (worst, rebooted)
        })
    };
    let mark = lab.mark();
    lab.converge();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (worst, rebooted) = sampler.join().unwrap();
    let applies: Vec<Call> = lab
        .mutating_since(mark)
        .into_iter()
        .filter(|c| c.short() == "ApplyConfiguration")
        .collect();
    assert_eq!(applies.len(), 5, "{applies:#?}");
    assert!(
        applies.iter().all(|c| c.detail["mode"] == "REBOOT"),
        "{applies:#?}"
    );
    assert_eq!(
        rebooted,
        set(&["cp-1", "cp-2", "cp-3", "worker-1", "worker-2"]),
        "every node rebooted"
    );
    assert!(worst.len() <= 1, "two nodes down at once: {worst:?}");
    assert_eq!(
        lab.etcd_members(&lab.ip("10.1")),
        members(&["cp-1", "cp-2", "cp-3"])
    );
}

/// Talos 1.14: a configured node answers a REBOOT-mode apply with Unimplemented "the REBOOT mode
/// is not supported" and AUTO never reboots (v1.14 `v1alpha1_server.go` ApplyConfiguration; the
/// lab follows it). Fault covered: a reboot-needing change sent as on 1.13 stops at the first
/// node, or is taken live and never takes effect. vixen applies with NO_REBOOT and reboots each
/// node itself, one node at a time, and etcd keeps its members (calls.jsonl, lab.json, etcdctl).
#[test]
fn story_17b_reboot_needing_change_on_talos_1_14_applies_live_then_reboots_each_node() {
    // Git and the machines on 1.14, with the default installer (the Image Factory's: 1.14 no
    // longer publishes ghcr.io/siderolabs/installer, and the lab does not find it).
    let lab = Lab::full_cluster_before(130, |lab| {
        lab.edit("cluster.yaml", "version: v1.11.6", "version: v1.14.0");
        lab.edit(
            "cluster.yaml",
            "  installer: ghcr.io/siderolabs/installer\n",
            "",
        );
    });
    for n in lab.status()["nodes"].as_array().unwrap() {
        assert_eq!(n["talos_version"], "v1.14.0", "{n}");
    }
    lab.edit(
        "patches/common.yaml",
        "  time:\n    disabled: false\n",
        "  time:\n    disabled: false\n  env:\n    TZ: Europe/Paris\n",
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (stop, path) = (stop.clone(), lab.lab.join("lab.json"));
        std::thread::spawn(move || {
            let mut worst: Vec<String> = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(v) = std::fs::read(&path)
                    .map_err(|_| ())
                    .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|_| ()))
                {
                    let down: Vec<String> = v["nodes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|n| n["mode"] != "configured")
                        .map(|n| n["name"].as_str().unwrap().to_string())
                        .collect();
                    if down.len() > worst.len() {
                        worst = down;
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            worst
        })
    };
    let mark = lab.mark();
    lab.converge();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let worst = sampler.join().unwrap();
    let calls = lab.mutating_since(mark);
    // Per node, in order: ApplyConfiguration NO_REBOOT, then Reboot; never REBOOT mode; and
    // one node's pair is done before the next node's starts.
    let seq: Vec<(String, String)> = calls
        .iter()
        .filter(|c| c.result == "ok")
        .map(|c| {
            let what = match c.short() {
                "ApplyConfiguration" => format!("apply {}", c.detail["mode"].as_str().unwrap()),
                other => other.to_string(),
            };
            (c.node.clone(), what)
        })
        .collect();
    let mut expected = Vec::new();
    let mut order: Vec<String> = Vec::new();
    for (node, _) in &seq {
        if !order.contains(node) {
            order.push(node.clone());
        }
    }
    for node in &order {
        expected.push((node.clone(), "apply NO_REBOOT".to_string()));
        expected.push((node.clone(), "Reboot".to_string()));
    }
    assert_eq!(seq, expected, "{calls:#?}");
    assert_eq!(
        order.iter().cloned().collect::<BTreeSet<_>>(),
        set(&["cp-1", "cp-2", "cp-3", "worker-1", "worker-2"]),
        "every node"
    );
    assert!(
        !calls.iter().any(|c| c.detail["mode"] == "REBOOT"),
        "{calls:#?}"
    );
    assert!(worst.len() <= 1, "two nodes down at once: {worst:?}");
    assert_eq!(
        lab.etcd_members(&lab.ip("10.1")),
        members(&["cp-1", "cp-2", "cp-3"])
    );
    // Nothing is owed: the next run changes nothing.
    let mark = lab.mark();
    lab.converge();
    assert!(lab.mutating_since(mark).is_empty());
}
