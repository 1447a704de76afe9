//! Drift (issue 15): a node's config changed behind vixen's back, with the real Talos client
//! (the `talos-client` peer, as `talosctl apply-config` sends it) straight to the lab node. The
//! long-running agent's resync dry-runs each node's rendered config and sees it; it corrects
//! it through a normal plan step, or only reports it with `drift: report`. Observed
//! independently: the agent's /metrics, the lab's calls.jsonl, and a dry run of the rendered
//! config by the peer itself (Talos answers "No changes." only when the node runs it).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::lab::*;
use common::{KillOnDrop, example};

struct Agent {
    _child: KillOnDrop,
    port: u16,
}

impl Agent {
    /// `vixen agent` polling every second and resyncing every second, on the lab.
    fn start(lab: &Lab) -> Agent {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_vixen"))
            .args([
                "agent",
                "--interval",
                "1",
                "--resync",
                "1",
                "--ready-timeout",
                "60",
            ])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(lab.target())
            .env("SOPS_AGE_KEY_FILE", example().join("demo.agekey"))
            .env("VIXEN_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Agent {
            _child: KillOnDrop(child),
            port,
        }
    }

    fn metrics(&self) -> String {
        common::http(self.port, "GET", "/metrics", &[], b"").1
    }

    fn metric(&self, line_start: &str) -> f64 {
        self.metrics()
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    #[track_caller]
    fn wait_for(&self, what: &str, secs: u64, mut f: impl FnMut(&Agent) -> bool) {
        let until = Instant::now() + Duration::from_secs(secs);
        while !f(self) {
            assert!(
                Instant::now() < until,
                "gave up waiting: {what}\n{}",
                self.metrics()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// The peer, a talosconfig minted from the repo's bundle, and worker-1's rendered config.
struct Peer {
    bin: PathBuf,
    talosconfig: PathBuf,
    rendered: PathBuf,
    changed: PathBuf,
}

impl Peer {
    fn new(lab: &Lab, test: &str) -> Option<Peer> {
        let bin = vixen_lab::peers::for_test("talos-client", test)?;
        let dir = lab.lab.join("peer");
        std::fs::create_dir_all(&dir).unwrap();
        let repo = lab.repo.to_str().unwrap();
        let out = lab.vixen(&["render", repo, "--talosconfig"]);
        assert!(out.status.success(), "{out:?}");
        let talosconfig = dir.join("talosconfig");
        std::fs::write(&talosconfig, &out.stdout).unwrap();
        let out = lab.vixen(&["render", repo, "--node", "worker-1"]);
        assert!(out.status.success(), "{out:?}");
        let config = String::from_utf8(out.stdout).unwrap();
        assert!(
            config.contains("node.kubernetes.io/pool: general"),
            "{config}"
        );
        let rendered = dir.join("worker-1.yaml");
        std::fs::write(&rendered, &config).unwrap();
        let changed = dir.join("worker-1-changed.yaml");
        std::fs::write(
            &changed,
            config.replace(
                "node.kubernetes.io/pool: general",
                "node.kubernetes.io/pool: drifted",
            ),
        )
        .unwrap();
        Some(Peer {
            bin,
            talosconfig,
            rendered,
            changed,
        })
    }

    /// `talosctl apply-config` of `file` to the node at `addr`: its reply as JSON.
    fn apply(&self, addr: &str, file: &Path, extra: &[&str]) -> serde_json::Value {
        let out = Command::new(&self.bin)
            .arg("--talosconfig")
            .arg(&self.talosconfig)
            .args([
                "--endpoints",
                addr,
                "--nodes",
                addr,
                "--timeout",
                "60s",
                "apply",
            ])
            .arg(file)
            .args(["--mode", "no-reboot"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "talos-client apply: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Talos' dry-run answer for worker-1's rendered config.
    fn dry_run_of_rendered(&self, addr: &str) -> String {
        self.apply(addr, &self.rendered, &["--dry-run"]).to_string()
    }
}

fn live_applies_to(lab: &Lab, node: &str, mark: usize) -> Vec<Call> {
    lab.mutating_since(mark)
        .into_iter()
        .filter(|c| c.node == node && c.short() == "ApplyConfiguration")
        .collect()
}

/// Fault: worker-1's config changed out of band, and worker-2 powered off during the drift
/// checks. The agent's resync reports worker-1's drift (metric) and gives it its Git config
/// again, live (a normal NO_REBOOT step); worker-2, which does not answer, is not drift and
/// holds nothing up. Fails when the resync sends no dry run or the planner ignores drift.
#[test]
fn drift_behind_vixens_back_is_reported_and_corrected_and_a_node_down_is_not_drift() {
    let test = "drift_behind_vixens_back_is_reported_and_corrected_and_a_node_down_is_not_drift";
    let lab = Lab::full_cluster(152);
    let Some(peer) = Peer::new(&lab, test) else {
        return;
    };
    let addr = lab.ip("10.4");
    assert_eq!(lab.node_status("worker-1")["current_address"], addr);
    assert!(peer.dry_run_of_rendered(&addr).contains("No changes."));
    let agent = Agent::start(&lab);
    agent.wait_for("the first reconcile", 120, |a| {
        a.metric("vixen_last_applied_revision{") >= 1.0
    });
    lab.fault("worker-2", "down");
    let mark = lab.mark();
    peer.apply(&addr, &peer.changed, &[]);
    agent.wait_for("worker-1's drift reported", 120, |a| {
        a.metric("vixen_drift_detections_total{node=\"worker-1\",policy=\"correct\"}") >= 1.0
    });
    let mut back = String::new();
    let until = Instant::now() + Duration::from_secs(120);
    while live_applies_to(&lab, "worker-1", mark).len() < 2 {
        assert!(Instant::now() < until, "worker-1 was not corrected");
        std::thread::sleep(Duration::from_millis(300));
    }
    // The correction: ours first, then vixen's, live.
    let applies = live_applies_to(&lab, "worker-1", mark);
    assert_eq!(applies[1].detail["mode"], "NO_REBOOT", "{applies:#?}");
    while !back.contains("No changes.") {
        assert!(
            Instant::now() < until,
            "worker-1 never ran its Git config again: {back}"
        );
        back = peer.dry_run_of_rendered(&addr);
    }
    assert!(
        !agent.metrics().contains("node=\"worker-2\""),
        "a node down is not drift:\n{}",
        agent.metrics()
    );
    let others: Vec<Call> = lab
        .mutating_since(mark)
        .into_iter()
        .filter(|c| c.node != "worker-1")
        .collect();
    assert!(others.is_empty(), "{others:#?}");
}

/// Fault: worker-1's config changed out of band on a cluster whose cluster.yaml says
/// `drift: report`. The drift is reported (metric) and nothing is changed: no live apply from
/// vixen in calls.jsonl, and the node still runs the other config.
#[test]
fn drift_with_drift_report_is_reported_and_nothing_is_changed() {
    let test = "drift_with_drift_report_is_reported_and_nothing_is_changed";
    let lab = Lab::full_cluster(153);
    let Some(peer) = Peer::new(&lab, test) else {
        return;
    };
    lab.edit("cluster.yaml", "", "drift: report\n");
    let addr = lab.ip("10.4");
    let agent = Agent::start(&lab);
    agent.wait_for("the first reconcile", 120, |a| {
        a.metric("vixen_last_applied_revision{") >= 1.0
    });
    let mark = lab.mark();
    peer.apply(&addr, &peer.changed, &[]);
    // Two resyncs that saw it: the first one had every chance to act.
    agent.wait_for("worker-1's drift reported twice", 120, |a| {
        a.metric("vixen_drift_detections_total{node=\"worker-1\",policy=\"report\"}") >= 2.0
    });
    let applies = live_applies_to(&lab, "worker-1", mark);
    assert_eq!(applies.len(), 1, "only ours: {applies:#?}");
    assert!(lab.mutating_since(mark).len() == 1);
    let diff = peer.dry_run_of_rendered(&addr);
    assert!(diff.contains("pool: drifted"), "{diff}");
    assert_eq!(agent.metric("vixen_drifted_nodes "), 1.0);
}
