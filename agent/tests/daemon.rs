//! The long-running `vixen agent` end to end, on loopback: a Git remote behind `git http-backend`
//! with basic auth, a fake GitHub that records commit statuses, and the agent's own HTTP server
//! (webhook, /metrics, /healthz, /readyz). No Talos node answers, so the planner refuses (not
//! bootstrapped): that is a `failure` status and an idle agent, which is what is measured.
//!
//! Prints the benchmark figures of the README (idle RSS, CPU per poll, webhook -> pending) for the
//! binary in `VIXEN_BIN` (default: this test build's):
//! `VIXEN_BIN=FILE cargo test -p vixen --test daemon -- --nocapture`. `bench/agent-memory.sh`
//! builds the container image's binary (static musl, release) and runs this test on it.

#[path = "../../crates/git/tests/e2e/fixture.rs"]
#[allow(dead_code)]
mod fixture;
#[path = "../../crates/git/tests/e2e/http_server.rs"]
#[allow(dead_code)]
mod http_server;

mod common;
use common::example;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const TOKEN: &str = "forge-token-0123456789";
const HOOK_SECRET: &str = "hook-secret-abcdef";
const GIT_PASSWORD: &str = "git-password-xyz";

/// A status the fake forge received.
#[derive(Clone, Debug)]
struct Posted {
    at: Instant,
    path: String,
    auth: String,
    body: Value,
}

/// A fake GitHub: answers 201 to every POST and records it.
struct Forge {
    port: u16,
    posted: Arc<Mutex<Vec<Posted>>>,
}

impl Forge {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let posted = Arc::new(Mutex::new(Vec::new()));
        let p2 = posted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let p = p2.clone();
                std::thread::spawn(move || serve_one(stream, &p));
            }
        });
        Self { port, posted }
    }

    fn wait_for(&self, pred: impl Fn(&Posted) -> bool, timeout: Duration) -> Option<Posted> {
        let t = Instant::now();
        while t.elapsed() < timeout {
            if let Some(p) = self.posted.lock().unwrap().iter().find(|p| pred(p)) {
                return Some(p.clone());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    }
}

fn serve_one(stream: TcpStream, posted: &Mutex<Vec<Posted>>) {
    let mut r = BufReader::new(stream.try_clone().unwrap());
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
        let (mut len, mut auth) = (0usize, String::new());
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap(),
                "authorization" => auth = v.trim().to_owned(),
                _ => {}
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        let at = Instant::now();
        posted.lock().unwrap().push(Posted {
            at,
            path,
            auth,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        let mut w = &stream;
        let _ = w.write_all(b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}");
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn copy_dir(from: &Path, files: &mut Vec<(String, String)>, prefix: &str) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), files, &format!("{name}/"));
        } else if !name.ends_with(".agekey") {
            let mut text = std::fs::read_to_string(e.path()).unwrap();
            // Addresses no lab uses: this test must never reach another test's simulated nodes.
            if !name.starts_with("secrets/") {
                text = text
                    .replace("127.0.10.", "127.0.231.")
                    .replace("127.0.20.", "127.0.232.");
            }
            files.push((name, text));
        }
    }
}

fn example_files() -> Vec<(String, String)> {
    let mut files = Vec::new();
    copy_dir(&example(), &mut files, "");
    files
}

/// The binary under test: `VIXEN_BIN` (the README's figures are of a release build), else this
/// test build's.
fn agent_bin() -> String {
    std::env::var("VIXEN_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_vixen").to_owned())
}

struct Agent {
    child: common::KillOnDrop,
    port: u16,
    log: PathBuf,
}

impl Agent {
    fn start(dir: &Path, repo_url: &str, forge: &Forge, interval: u32) -> Self {
        let port = free_port();
        let secrets = dir.join("secrets");
        std::fs::create_dir_all(&secrets).unwrap();
        std::fs::write(secrets.join("token"), format!("{TOKEN}\n")).unwrap();
        std::fs::write(secrets.join("hook"), HOOK_SECRET).unwrap();
        std::fs::write(secrets.join("git-password"), GIT_PASSWORD).unwrap();
        let log = dir.join(format!("agent-{port}.log"));
        let child = Command::new(agent_bin())
            .args([
                "--log-format",
                "json",
                "agent",
                "--repo",
                repo_url,
                "--git-username",
                "u",
            ])
            .arg("--git-password-file")
            .arg(secrets.join("git-password"))
            .arg("--state")
            .arg(dir.join(format!("state-{port}")))
            .args([
                "--interval",
                &interval.to_string(),
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("--webhook-secret-file")
            .arg(secrets.join("hook"))
            .args([
                "--forge",
                "github",
                "--forge-url",
                &format!("http://127.0.0.1:{}", forge.port),
                "--forge-repo",
                "o/r",
            ])
            .arg("--forge-token-file")
            .arg(secrets.join("token"))
            .arg("--age-key")
            .arg(example().join("demo.agekey"))
            .args(["--ready-timeout", "2"])
            .env("VIXEN_LOG", "info")
            .env_remove("SOPS_AGE_KEY")
            .env_remove("SOPS_AGE_KEY_FILE")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let agent = Self {
            child: common::KillOnDrop(child),
            port,
            log,
        };
        let t = Instant::now();
        while agent.get("/healthz").0 != 200 {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "agent did not start: {}",
                agent.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        agent
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> (u16, String) {
        common::http(self.port, method, path, headers, body)
    }

    fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, &[], b"")
    }

    fn metric(&self, name_and_labels: &str) -> f64 {
        let (_, body) = self.get("/metrics");
        body.lines()
            .find(|l| l.starts_with(name_and_labels))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    fn github_push(&self, after: &str, secret: &str) -> u16 {
        use hmac::Mac as _;
        let body = serde_json::json!({ "ref": "refs/heads/main", "after": after, "repository": { "full_name": "o/r" } }).to_string();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        self.request(
            "POST",
            "/hook",
            &[
                ("x-github-event", "push".into()),
                ("x-hub-signature-256", sig),
                ("content-type", "application/json".into()),
            ],
            body.as_bytes(),
        )
        .0
    }

    /// `VmRSS`, `RssAnon` and `RssFile` in KiB.
    fn memory(&self) -> [u64; 3] {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.0.id())).unwrap();
        ["VmRSS:", "RssAnon:", "RssFile:"].map(|k| {
            status
                .lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap()
                .parse()
                .unwrap()
        })
    }

    /// CPU time of all the process's threads (schedstat, nanoseconds).
    fn cpu(&self) -> Duration {
        let mut ns = 0u64;
        for t in std::fs::read_dir(format!("/proc/{}/task", self.child.0.id()))
            .unwrap()
            .flatten()
        {
            let s = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            ns += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
        Duration::from_nanos(ns)
    }
}

fn statuses_for<'a>(posted: &'a [Posted], sha: &str) -> Vec<&'a Posted> {
    posted.iter().filter(|p| p.path.ends_with(sha)).collect()
}

#[test]
fn agent_follows_git_reports_on_the_commit_and_wakes_on_a_verified_webhook() {
    let remote = fixture::Remote::new();
    let files = example_files();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let first = remote.commit(&refs, "homelab", None);
    let server =
        http_server::GitHttpServer::start(remote.bare.parent().unwrap(), "u", GIT_PASSWORD);
    let forge = Forge::start();
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), &server.url("repo.git"), &forge, 3600);

    // First commit: pending, then failure (no node answers: the planner refuses), on
    // /repos/o/r/statuses/<sha> with the token and the context vixen/homelab.
    let pending = forge
        .wait_for(
            |p| p.path.ends_with(&first) && p.body["state"] == "pending",
            Duration::from_secs(30),
        )
        .unwrap_or_else(|| panic!("no pending status: {}", agent.logs()));
    assert_eq!(pending.path, format!("/repos/o/r/statuses/{first}"));
    assert_eq!(pending.auth, format!("Bearer {TOKEN}"));
    assert_eq!(pending.body["context"], "vixen/homelab");
    let last = forge
        .wait_for(
            |p| p.path.ends_with(&first) && p.body["state"] != "pending",
            Duration::from_secs(60),
        )
        .unwrap_or_else(|| panic!("no final status: {}", agent.logs()));
    assert_eq!(last.body["state"], "failure", "{:?}", last.body);
    let desc = last.body["description"].as_str().unwrap();
    assert!(desc.contains("refused") && desc.len() <= 140, "{desc}");
    let t = Instant::now();
    while agent.get("/readyz").0 != 200 {
        assert!(t.elapsed() < Duration::from_secs(10), "not ready");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Idle: memory.
    std::thread::sleep(Duration::from_secs(2));
    let [rss_kib, anon_kib, file_kib] = agent.memory();

    // A forged webhook is refused and triggers nothing; a verified one wakes the agent at once.
    let second = remote.commit(&[("README.md", "second\n")], "second", None);
    assert_eq!(agent.github_push(&second, "wrong-secret"), 401);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        statuses_for(&forge.posted.lock().unwrap(), &second).is_empty(),
        "a forged webhook triggered a poll"
    );
    let sent = Instant::now();
    assert_eq!(agent.github_push(&second, HOOK_SECRET), 202);
    let pending2 = forge
        .wait_for(
            |p| p.path.ends_with(&second) && p.body["state"] == "pending",
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("webhook did not trigger: {}", agent.logs()));
    let webhook_to_pending = pending2.at - sent;
    forge
        .wait_for(
            |p| p.path.ends_with(&second) && p.body["state"] != "pending",
            Duration::from_secs(60),
        )
        .expect("final status of the second commit");

    // Metrics and health.
    let (code, metrics) = agent.get("/metrics");
    assert_eq!(code, 200);
    for name in [
        "vixen_reconcile_duration_seconds_bucket",
        "vixen_reconcile_failures_total{reason=\"refused\"}",
        "vixen_git_polls_total",
        "vixen_webhooks_total{result=\"rejected\"} 1",
        "vixen_webhooks_total{result=\"accepted\"} 1",
        "vixen_nodes{",
        "vixen_etcd_members",
        "vixen_leader 1",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    assert_eq!(agent.get("/nothing").0, 404);

    // No secret anywhere it could leak.
    let logs = agent.logs();
    for secret in [TOKEN, HOOK_SECRET, GIT_PASSWORD] {
        assert!(
            !logs.contains(secret) && !metrics.contains(secret),
            "{secret} leaked"
        );
        for p in forge.posted.lock().unwrap().iter() {
            assert!(!p.body.to_string().contains(secret));
        }
    }
    // JSON logs: one object per line.
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }

    // A rotated forge token is used without a restart.
    std::fs::write(dir.path().join("secrets/token"), "rotated-token\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let third = remote.commit(&[("README.md", "third\n")], "third", None);
    assert_eq!(agent.github_push(&third, HOOK_SECRET), 202);
    let p3 = forge
        .wait_for(|p| p.path.ends_with(&third), Duration::from_secs(10))
        .expect("third commit");
    assert_eq!(p3.auth, "Bearer rotated-token");
    drop(agent);

    // CPU per poll with no new commit: a second agent polling every second.
    let agent = Agent::start(dir.path(), &server.url("repo.git"), &forge, 1);
    forge.wait_for(
        |p| {
            p.path.ends_with(&third)
                && p.body["state"] != "pending"
                && p.auth == "Bearer rotated-token"
        },
        Duration::from_secs(60),
    );
    let t = Instant::now();
    while agent.metric("vixen_git_polls_total{result=\"unchanged\"}") < 1.0
        && t.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let polls0 = agent.metric("vixen_git_polls_total{result=\"unchanged\"}");
    let cpu0 = agent.cpu();
    std::thread::sleep(Duration::from_secs(20));
    let polls1 = agent.metric("vixen_git_polls_total{result=\"unchanged\"}");
    let cpu1 = agent.cpu();
    let [rss2, ..] = agent.memory();
    let polls = polls1 - polls0;
    assert!(
        polls >= 10.0,
        "only {polls} polls in 20 s: {}",
        agent.logs()
    );
    // Includes the idle process between polls and the /metrics scrapes of this test.
    let cpu_ms_per_poll = (cpu1 - cpu0).as_secs_f64() * 1000.0 / polls;

    println!("BENCH binary: {}", agent_bin());
    println!(
        "BENCH idle agent resident memory (example repo, after a reconcile): {:.1} MiB = {:.1} MiB heap/stacks + {:.1} MiB mapped code and libraries (polling every second: {:.1} MiB)",
        rss_kib as f64 / 1024.0,
        anon_kib as f64 / 1024.0,
        file_kib as f64 / 1024.0,
        rss2 as f64 / 1024.0
    );
    println!(
        "BENCH CPU per poll with no new commit: {cpu_ms_per_poll:.2} ms ({polls} polls over 20 s, all threads' schedstat time)"
    );
    println!(
        "BENCH webhook received -> pending status sent: {:.1} ms",
        webhook_to_pending.as_secs_f64() * 1000.0
    );
    assert!(
        webhook_to_pending < Duration::from_secs(1),
        "webhook -> pending took {webhook_to_pending:?}"
    );
}

/// A 4th control plane (an even count): the fault is a reason that stops at a header line or
/// names the agent's checkout folder. The forge's received status must carry the first problem
/// as `file:line:col: message (fix: ...)`, within GitHub's 140 characters, with no local path.
#[test]
fn an_invalid_commit_tells_the_forge_the_file_line_and_fix() {
    let remote = fixture::Remote::new();
    let mut files = example_files();
    files.push((
        "nodes/cp-4.yaml".into(),
        "name: cp-4\n\
         role: controlplane\n\
         maintenanceAddress: 127.0.231.14\n\
         installDisk: /dev/sda\n\
         interfaces:\n  - name: eth0\n    addresses: [127.0.231.9/24]\n"
            .into(),
    ));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let bad = remote.commit(&refs, "a 4th control plane", None);
    let server =
        http_server::GitHttpServer::start(remote.bare.parent().unwrap(), "u", GIT_PASSWORD);
    let forge = Forge::start();
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), &server.url("repo.git"), &forge, 3600);
    let last = forge
        .wait_for(
            |p| p.path.ends_with(&bad) && p.body["state"] != "pending",
            Duration::from_secs(60),
        )
        .unwrap_or_else(|| panic!("no final status: {}", agent.logs()));
    assert_eq!(last.body["state"], "failure", "{:?}", last.body);
    let desc = last.body["description"].as_str().unwrap();
    assert!(desc.chars().count() <= 140, "{desc}");
    assert!(
        desc.contains("nodes/cp-4.yaml:2:7: 4 control planes"),
        "no file:line reason in {desc:?}"
    );
    let tmp = dir.path().to_string_lossy().into_owned();
    for leak in ["/tmp", "checkouts", tmp.as_str()] {
        assert!(!desc.contains(leak), "{leak} in {desc:?}");
    }
    // Nothing was asked of any node: no step ran, so no pending status names one.
    let posted = forge.posted.lock().unwrap();
    assert!(
        statuses_for(&posted, &bad)
            .iter()
            .all(|p| !p.body["description"]
                .as_str()
                .unwrap_or("")
                .contains("(step ")),
        "{posted:?}"
    );
}
