//! The laws under faults (issue 14), on the lab (real etcd, the Talos wire API), through the
//! `vixen` binary. Effects are read from calls.jsonl, lab.json and etcd itself.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
#[path = "../../crates/git/tests/e2e/fixture.rs"]
#[allow(dead_code)]
mod fixture;
#[path = "../../crates/git/tests/e2e/http_server.rs"]
#[allow(dead_code)]
mod http_server;
use common::example;
use common::lab::*;
use fixture::run;

/// Fault: one control plane powered off while a change that needs a reboot reaches every
/// control plane (the incident of issue 14: cp-1 and then cp-3 rebooted, 1 voter of 3 left).
/// vixen must not reboot any other control plane while cp-2 is down, must say why, and must
/// finish once cp-2 is back.
#[test]
fn reboot_needing_change_waits_while_a_control_plane_is_down() {
    let lab = Lab::full_cluster(91);
    lab.fault("cp-2", "down");
    // machine.env is not among what Talos applies live: each control plane must reboot.
    lab.edit(
        "patches/controlplane.yaml",
        "cluster:\n",
        "machine:\n  env:\n    TZ: Europe/Paris\ncluster:\n",
    );
    let mark = lab.mark();
    let out = lab.run(&["agent", "--once"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "not converged while cp-2 is down: {text}"
    );
    assert!(
        text.contains("cp-2") && text.contains("of 3 voters"),
        "the reason names the member and the count: {text}"
    );
    let cp_calls: Vec<Call> = lab
        .mutating_since(mark)
        .into_iter()
        .filter(|c| c.node.starts_with("cp-"))
        .collect();
    assert!(
        cp_calls.is_empty(),
        "no control plane touched: {cp_calls:#?}"
    );
    // etcd still has its two voters up and answering.
    let members = lab.etcd_members(&lab.ip("10.1"));
    assert_eq!(members.len(), 3, "{members:?}");

    lab.fault("cp-2", "up");
    let mark = lab.mark();
    lab.converge();
    let applied: Vec<String> = lab
        .mutating_since(mark)
        .into_iter()
        .filter(|c| c.short() == "ApplyConfiguration")
        .map(|c| c.node)
        .collect();
    for cp in ["cp-1", "cp-2", "cp-3"] {
        assert!(
            applied.iter().any(|n| n == cp),
            "{cp} got its config once healthy: {applied:?}"
        );
    }
    assert_eq!(lab.etcd_members(&lab.ip("10.1")).len(), 3);
}

/// Fault: none; the regression of issue 14 where an agent whose age key comes from
/// `SOPS_AGE_KEY_FILE` (no file watched) woke up in a loop and sent thousands of Talos calls.
/// Counted from calls.jsonl: between polls of an unchanged repo, no Talos call at all.
#[test]
fn an_idle_agent_makes_no_talos_call_between_polls() {
    let lab = Lab::full_cluster(92);
    let agent = Command::new(env!("CARGO_BIN_EXE_vixen"))
        .args(["agent", "--interval", "1"])
        .args(lab.target())
        .env("SOPS_AGE_KEY_FILE", example().join("demo.agekey"))
        .env("VIXEN_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = common::KillOnDrop(agent);
    // Its first reconcile reads every node; then it must fall silent.
    let started = Instant::now();
    let mut last = (lab.calls().len(), Instant::now());
    while last.1.elapsed() < Duration::from_secs(3) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the agent never stopped calling the nodes: {} calls",
            lab.calls().len()
        );
        std::thread::sleep(Duration::from_millis(200));
        let n = lab.calls().len();
        if n != last.0 {
            last = (n, Instant::now());
        }
    }
    let mark = lab.mark();
    std::thread::sleep(Duration::from_secs(5));
    let calls = &lab.calls()[mark..];
    assert!(
        calls.is_empty(),
        "{} Talos calls in 5 s of polling an unchanged repo",
        calls.len()
    );
}

/// `vixen agent --once` from a Git URL, as a laptop or a CI job runs it against the cluster's
/// remote. Fault covered: the Git server does not answer; no node is touched and the error says
/// which URL. Then the server answers: the pushed head is fetched (the commit is named) and its
/// metadata change is applied live, with no reboot (calls.jsonl).
#[test]
fn once_from_a_git_url_applies_the_pushed_head_and_touches_nothing_while_git_is_down() {
    let lab = Lab::full_cluster(203);
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("srv");
    std::fs::create_dir_all(&served).unwrap();
    let bare = served.join("cluster.git");
    run(fixture::git(&lab.repo).args(["init", "-q", "-b", "main"]));
    run(fixture::git(&lab.repo).args(["add", "-A"]));
    run(fixture::git(&lab.repo).args(["commit", "-qm", "cluster"]));
    run(fixture::git(tmp.path())
        .args(["clone", "-q", "--bare"])
        .arg(&lab.repo)
        .arg(&bare));
    let git_ip = lab.ip("3.1");
    let once = |url: &str| {
        lab.vixen(&[
            "agent",
            "--once",
            "--repo",
            url,
            "--lab",
            lab.lab.to_str().unwrap(),
            "--ready-timeout",
            "60",
        ])
    };

    // Fault: nothing answers at the URL.
    let port = std::net::TcpListener::bind((git_ip.as_str(), 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mark = lab.mark();
    let out = once(&format!("http://{git_ip}:{port}/cluster.git"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&format!("{git_ip}:{port}")), "{err}");
    assert!(lab.mutating_since(mark).is_empty());

    // The server answers; a label change is pushed.
    let http = http_server::GitHttpServer::start_public(&git_ip, &served);
    lab.edit(
        "nodes/worker-1.yaml",
        "node.kubernetes.io/pool: general",
        "node.kubernetes.io/pool: batch",
    );
    run(fixture::git(&lab.repo).args(["commit", "-qam", "worker-1 to batch"]));
    run(fixture::git(&lab.repo)
        .arg("push")
        .arg("-q")
        .arg(&bare)
        .arg("main"));
    let head = run(fixture::git(&lab.repo).args(["rev-parse", "HEAD"]));
    let mark = lab.mark();
    let out = once(&http.url("cluster.git"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("fetched {head}")), "{text}");
    let calls = lab.mutating_since(mark);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(
        (calls[0].node.as_str(), calls[0].short()),
        ("worker-1", "ApplyConfiguration")
    );
    assert_eq!(calls[0].detail["mode"], "NO_REBOOT");
}
