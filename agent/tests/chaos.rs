//! The chaos harness of issue 14 (item 8): seeded random sequences of Git changes (remove or
//! re-add a worker, a live label change, a reboot-needing `machine.env` patch, the Talos upgrade
//! v1.11.6 -> v1.12.2) each interleaved with a random fault (none, a node powered off for the
//! reconcile, a slow reboot, the agent SIGKILLed mid-run and restarted), on the lab (real etcd),
//! through the `vixen` binary. Observed independently: calls.jsonl, lab.json sampled every
//! 20 ms, an etcd write probe through the control-plane endpoints, etcdctl member list.
//!
//! Invariants (each run prints its seed; a failure names it): no Reset of a node in Git; no
//! Bootstrap after the first; never two control planes down at once because of vixen; no etcd
//! write outage over 3 s; after faults clear `agent --once` succeeds within 3 runs and lab.json
//! and etcd match Git.
//!
//! `VIXEN_CHAOS_SEEDS=random:N` or `VIXEN_CHAOS_SEEDS=1,2,3` drives the ignored `chaos_seeds`
//! (see bench/chaos.sh).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::lab::*;
use common::{KillOnDrop, example};

const CPS: [&str; 3] = ["cp-1", "cp-2", "cp-3"];
const WORKERS: [&str; 2] = ["worker-1", "worker-2"];
/// The longest etcd write outage allowed (an election is 1 s; 2 of 3 voters keep quorum).
const MAX_OUTAGE: Duration = Duration::from_secs(3);
/// Wall-time bound of one `agent --once` run.
const RUN_BOUND: Duration = Duration::from_secs(90);

/// splitmix64: small, seeded, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

#[derive(Debug, Clone)]
enum Change {
    RemoveWorker(&'static str),
    AddWorker(&'static str),
    Label(&'static str, u64),
    RebootPatch(u64),
    Upgrade,
}

#[derive(Debug, Clone)]
enum Fault {
    None,
    Down(&'static str),
    SlowReboot(&'static str),
    Kill(u64),
}

/// What the sampler and the probe threads saw.
#[derive(Default)]
struct Watch {
    /// The node the harness holds powered off now.
    held: Option<String>,
    worst_outage: Duration,
    worst_cps_down: usize,
    violations: Vec<String>,
    writes: u64,
    /// When the probe's writes started failing (None while they succeed).
    failing_since: Option<Instant>,
    /// The step running now, and the one of the worst outage.
    step: usize,
    outage_step: usize,
}

/// The figures of one run.
#[derive(Debug, Default)]
struct RunReport {
    steps: usize,
    faults: usize,
    /// SIGKILLs that hit a running agent.
    kills: usize,
    violations: Vec<String>,
    worst_outage: Duration,
    worst_cps_down: usize,
    converge: Vec<Duration>,
}

struct Agent {
    ok: bool,
    text: String,
}

/// `vixen agent --once` as a child; killed after `kill_after` if given, bounded by RUN_BOUND.
fn agent_once(lab: &Lab, kill_after: Option<Duration>) -> Option<Agent> {
    let err = lab.lab.join("chaos-agent.err");
    let mut args: Vec<String> = vec!["agent".into(), "--once".into()];
    args.extend(lab.target());
    args.extend(["--ready-timeout".into(), "60".into()]);
    let child = Command::new(env!("CARGO_BIN_EXE_vixen"))
        .args(&args)
        .env("SOPS_AGE_KEY_FILE", example().join("demo.agekey"))
        .env("VIXEN_LOG", "warn")
        .stdout(std::fs::File::create(&err).unwrap())
        .stderr(std::fs::OpenOptions::new().append(true).open(&err).unwrap())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let started = Instant::now();
    let bound = kill_after.unwrap_or(RUN_BOUND);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            let text = std::fs::read_to_string(&err).unwrap_or_default();
            let mut tail: Vec<char> = text.chars().rev().take(600).collect();
            tail.reverse();
            let tail: String = tail.into_iter().collect();
            return Some(Agent {
                ok: status.success(),
                text: tail,
            });
        }
        if started.elapsed() >= bound {
            // Dropping the guard SIGKILLs the agent.
            return kill_after.is_none().then(|| Agent {
                ok: false,
                text: format!("agent --once still running after {RUN_BOUND:?}"),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The repo as the harness drives it: original texts to restore and the current Git model.
struct Git {
    originals: BTreeMap<&'static str, String>,
    common: String,
    removed: BTreeSet<&'static str>,
    upgraded: bool,
}

impl Git {
    fn new(lab: &Lab) -> Git {
        let read = |p: &str| std::fs::read_to_string(lab.repo.join(p)).unwrap();
        let originals = CPS
            .iter()
            .chain(WORKERS.iter())
            .map(|n| (*n, read(&format!("nodes/{n}.yaml"))))
            .collect();
        Git {
            originals,
            common: read("patches/common.yaml"),
            removed: BTreeSet::new(),
            upgraded: false,
        }
    }

    fn in_git(&self) -> Vec<&'static str> {
        CPS.iter()
            .chain(WORKERS.iter())
            .copied()
            .filter(|n| !self.removed.contains(n))
            .collect()
    }

    fn version(&self) -> &'static str {
        if self.upgraded { "v1.12.2" } else { "v1.11.6" }
    }

    fn draw(&self, rng: &mut Rng) -> Change {
        loop {
            match rng.below(5) {
                0 => {
                    let present: Vec<&str> = WORKERS
                        .iter()
                        .copied()
                        .filter(|w| !self.removed.contains(w))
                        .collect();
                    if !present.is_empty() {
                        return Change::RemoveWorker(static_name(rng.pick(&present)));
                    }
                }
                1 => {
                    if let Some(w) = self.removed.iter().next() {
                        return Change::AddWorker(w);
                    }
                }
                2 => {
                    let nodes = self.in_git();
                    let n = nodes[rng.below(nodes.len() as u64) as usize];
                    return Change::Label(n, rng.range(1, 1_000_000));
                }
                3 => return Change::RebootPatch(rng.range(1, 1_000_000)),
                _ => {
                    if !self.upgraded {
                        return Change::Upgrade;
                    }
                }
            }
        }
    }

    fn apply(&mut self, lab: &Lab, change: &Change) {
        let node_file = |n: &str| lab.repo.join(format!("nodes/{n}.yaml"));
        match change {
            Change::RemoveWorker(w) => {
                std::fs::remove_file(node_file(w)).unwrap();
                self.removed.insert(w);
            }
            Change::AddWorker(w) => {
                std::fs::write(node_file(w), &self.originals[w]).unwrap();
                self.removed.remove(w);
            }
            Change::Label(n, v) => {
                let text = std::fs::read_to_string(node_file(n)).unwrap();
                let mut out = String::new();
                for line in text
                    .lines()
                    .filter(|l| !l.starts_with("  chaos.vixen.dev/"))
                {
                    out.push_str(line);
                    out.push('\n');
                    if line == "labels:" {
                        out.push_str(&format!("  chaos.vixen.dev/step: s{v}\n"));
                    }
                }
                std::fs::write(node_file(n), out).unwrap();
            }
            Change::RebootPatch(v) => {
                let block = "  time:\n    disabled: false\n";
                assert!(self.common.contains(block));
                let text = self
                    .common
                    .replace(block, &format!("{block}  env:\n    CHAOS: \"{v}\"\n"));
                std::fs::write(lab.repo.join("patches/common.yaml"), text).unwrap();
            }
            Change::Upgrade => {
                lab.edit("cluster.yaml", "version: v1.11.6", "version: v1.12.2");
                self.upgraded = true;
            }
        }
    }
}

/// The etcd write probe (through every control-plane endpoint) and the lab.json sampler.
fn watchers(
    lab: &Lab,
    stop: &Arc<AtomicBool>,
    watch: &Arc<Mutex<Watch>>,
) -> Vec<std::thread::JoinHandle<()>> {
    let endpoints: Vec<String> = (1..=CPS.len())
        .map(|i| format!("http://{}:2379", lab.ip(&format!("10.{i}"))))
        .collect();
    let probe = {
        let (stop, watch) = (stop.clone(), watch.clone());
        std::thread::spawn(move || {
            // The outage: from the end of a successful write to the start of the next attempt
            // that succeeds (or to the end, if writes still fail then).
            let mut last_ok = Instant::now();
            let mut failing = false;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let attempt = Instant::now();
                // Every endpoint at once: one after the other, an attempt in which each put
                // times out would take 3 s and count as a 3 s outage whatever etcd did.
                let ok = std::thread::scope(|scope| {
                    let puts: Vec<_> = endpoints
                        .iter()
                        .map(|ep| {
                            let value = n.to_string();
                            scope.spawn(move || {
                                Command::new("etcdctl")
                                    .env("ETCDCTL_API", "3")
                                    .args(["--endpoints", ep, "--dial-timeout=500ms"])
                                    .args(["--command-timeout=1s", "put", "chaos-probe", &value])
                                    .output()
                                    .is_ok_and(|o| o.status.success())
                            })
                        })
                        .collect();
                    // The scope joins the threads `any` leaves behind.
                    puts.into_iter().any(|p| p.join().unwrap_or(false))
                });
                n += 1;
                let gap = attempt.saturating_duration_since(last_ok);
                if ok {
                    last_ok = Instant::now();
                }
                failing = !ok;
                let mut w = watch.lock().unwrap();
                if gap > w.worst_outage {
                    w.worst_outage = gap;
                    w.outage_step = w.step;
                }
                w.failing_since = if ok {
                    None
                } else {
                    w.failing_since.or(Some(attempt))
                };
                w.writes += u64::from(ok);
                drop(w);
                std::thread::sleep(Duration::from_millis(50));
            }
            let mut w = watch.lock().unwrap();
            if failing && last_ok.elapsed() > w.worst_outage {
                w.worst_outage = last_ok.elapsed();
                w.outage_step = w.step;
            }
        })
    };
    let sampler = {
        let (stop, watch, path) = (stop.clone(), watch.clone(), lab.lab.join("lab.json"));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let status = std::fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
                if let Some(v) = status {
                    let mut w = watch.lock().unwrap();
                    let held = w.held.clone();
                    let down: Vec<String> = v["nodes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        // Down for etcd: not configured, or configured with its etcd not
                        // running (lab.json's etcd_client_url is null then).
                        .filter(|n| {
                            n["role"] == "controlplane"
                                && (n["mode"] != "configured" || n["etcd_client_url"].is_null())
                        })
                        .filter_map(|n| n["name"].as_str().map(String::from))
                        .collect();
                    let by_vixen = down.iter().filter(|n| Some(*n) != held.as_ref()).count();
                    w.worst_cps_down = w.worst_cps_down.max(by_vixen);
                    // Two control planes down at once, at least one of them not held by us.
                    if down.len() >= 2 && by_vixen >= 1 && w.violations.len() < 5 {
                        w.violations.push(format!(
                            "control planes down at once: {down:?} (held: {held:?})"
                        ));
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    vec![probe, sampler]
}

/// lab.json and etcd against Git: every Git node configured on the Git version, removed nodes
/// in maintenance, etcd voters = the control planes.
fn matches_git(lab: &Lab, git: &Git) -> Result<(), String> {
    let status = lab.status();
    for n in status["nodes"].as_array().unwrap() {
        let name = n["name"].as_str().unwrap_or_default();
        if git.removed.contains(name) {
            if n["mode"] != "maintenance" {
                return Err(format!("{name} left Git but is {}", n["mode"]));
            }
        } else if n["mode"] != "configured" || n["talos_version"] != git.version() {
            return Err(format!(
                "{name} is {} on {}, Git says configured on {}",
                n["mode"],
                n["talos_version"],
                git.version()
            ));
        }
    }
    let members = lab.etcd_members(&lab.ip("10.1"));
    if members != members_of(&CPS) {
        return Err(format!("etcd members {members:?}, Git has {CPS:?}"));
    }
    Ok(())
}

fn members_of(items: &[&str]) -> Vec<(String, bool)> {
    members(items)
}

/// The labs of this binary run one at a time (2 shared cores: timing is part of what is tested).
static SERIAL: Mutex<()> = Mutex::new(());

/// One run of seed `seed` on 127.`k`.x.x.
fn run(seed: u64, k: u8) -> RunReport {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    eprintln!("chaos: seed {seed} (lab 127.{k}.x.x)");
    let mut rng = Rng(seed);
    let lab = Lab::full_cluster(k);
    let mut git = Git::new(&lab);
    let mut report = RunReport::default();
    let boot_mark = lab.mark();
    let stop = Arc::new(AtomicBool::new(false));
    let watch = Arc::new(Mutex::new(Watch::default()));
    let threads = watchers(&lab, &stop, &watch);
    let steps = rng.range(3, 5);
    let mut log: Vec<String> = Vec::new();
    for step in 0..steps {
        let change = git.draw(&mut rng);
        let all: Vec<&str> = CPS.iter().chain(WORKERS.iter()).copied().collect();
        let fault = match rng.below(4) {
            0 => Fault::None,
            1 => Fault::Down(static_name(rng.pick(&all))),
            2 => Fault::SlowReboot(static_name(rng.pick(&all))),
            _ => Fault::Kill(rng.range(200, 2000)),
        };
        log.push(format!("{step}: {change:?} + {fault:?}"));
        eprintln!("chaos: seed {seed} step {step}: {change:?} with fault {fault:?}");
        report.steps += 1;
        if !matches!(fault, Fault::None) {
            report.faults += 1;
        }
        watch.lock().unwrap().step = step as usize;
        let mark = lab.mark();
        git.apply(&lab, &change);
        // The reconcile under the fault, then the faults cleared.
        let cleared;
        match &fault {
            Fault::None => {
                cleared = Instant::now();
                if let Some(a) = agent_once(&lab, None)
                    && !a.ok
                {
                    eprintln!(
                        "chaos: seed {seed} step {step}: first run failed: {}",
                        a.text
                    );
                }
            }
            Fault::Down(n) => {
                watch.lock().unwrap().held = Some(n.to_string());
                lab.fault(n, "down");
                let _ = agent_once(&lab, None);
                lab.fault(n, "up");
                watch.lock().unwrap().held = None;
                cleared = Instant::now();
            }
            Fault::SlowReboot(n) => {
                lab.fault(n, "slow-reboot 800");
                let _ = agent_once(&lab, None);
                // The lab's base reboot time (`--reboot-ms 200`): the fault is lifted.
                lab.fault(n, "slow-reboot 200");
                cleared = Instant::now();
            }
            Fault::Kill(ms) => {
                if agent_once(&lab, Some(Duration::from_millis(*ms))).is_none() {
                    report.kills += 1;
                }
                cleared = Instant::now();
            }
        }
        // Convergence: within 3 runs once the faults are cleared.
        let mut converged = false;
        let mut last = String::new();
        for _ in 0..3 {
            let a = agent_once(&lab, None).unwrap();
            if a.ok {
                converged = true;
                break;
            }
            last = a.text;
        }
        let calls: Vec<Call> = lab.calls().into_iter().skip(mark).collect();
        let in_git: BTreeSet<&str> = git.in_git().into_iter().collect();
        for c in calls.iter().filter(|c| c.mutating()) {
            if c.short() == "Reset" && in_git.contains(c.node.as_str()) {
                report.violations.push(format!(
                    "step {step}: Reset of {} which is in Git: {c:?}",
                    c.node
                ));
            }
        }
        if !converged {
            report.violations.push(format!(
                "step {step}: no successful agent --once in 3 runs after faults cleared: {last}"
            ));
            break;
        }
        report.converge.push(cleared.elapsed());
        if let Err(e) = matches_git(&lab, &git) {
            report.violations.push(format!(
                "step {step}: converged but lab differs from Git: {e}"
            ));
            break;
        }
    }
    let bootstraps = lab
        .calls()
        .into_iter()
        .skip(boot_mark)
        .filter(|c| c.short() == "Bootstrap")
        .count();
    if bootstraps > 0 {
        report.violations.push(format!(
            "{bootstraps} Bootstrap call(s) after the first bootstrap"
        ));
    }
    // A short run leaves the probe few attempts (each waits for its slowest endpoint): it goes on
    // writing to the converged cluster until it is a witness (10 writes) or 20 s pass.
    let witness = Instant::now() + Duration::from_secs(20);
    while watch.lock().unwrap().writes < 10 && Instant::now() < witness {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let w = watch.lock().unwrap();
    report.worst_outage = w.worst_outage;
    report.worst_cps_down = w.worst_cps_down;
    report.violations.extend(w.violations.iter().cloned());
    if w.writes < 10 {
        report
            .violations
            .push(format!("the etcd probe barely wrote ({})", w.writes));
    }
    if w.worst_outage > MAX_OUTAGE {
        report.violations.push(format!(
            "step {}: etcd writes failed for {:?}",
            w.outage_step, w.worst_outage
        ));
    }
    for v in &mut report.violations {
        *v = format!("seed {seed}: {v} [steps: {}]", log.join("; "));
    }
    eprintln!("chaos: seed {seed} done: {report:?}");
    report
}

fn static_name(n: &str) -> &'static str {
    CPS.iter()
        .chain(WORKERS.iter())
        .copied()
        .find(|m| *m == n)
        .unwrap()
}

fn run_seeds(seeds: &[u64], first_k: u8) -> Vec<RunReport> {
    seeds
        .iter()
        .enumerate()
        .map(|(i, s)| run(*s, first_k + (i % 10) as u8))
        .collect()
}

fn figures(reports: &[RunReport]) {
    let mut conv: Vec<Duration> = reports.iter().flat_map(|r| r.converge.clone()).collect();
    conv.sort();
    let pct = |i: usize| {
        conv.get(i)
            .map_or("-".into(), |d| format!("{:.2}s", d.as_secs_f64()))
    };
    println!("chaos figures:");
    println!("  runs: {}", reports.len());
    println!(
        "  steps: {}",
        reports.iter().map(|r| r.steps).sum::<usize>()
    );
    println!(
        "  faults injected: {}",
        reports.iter().map(|r| r.faults).sum::<usize>()
    );
    println!(
        "  agent SIGKILLs that hit a running agent: {}",
        reports.iter().map(|r| r.kills).sum::<usize>()
    );
    println!(
        "  invariant violations: {}",
        reports.iter().map(|r| r.violations.len()).sum::<usize>()
    );
    for v in reports.iter().flat_map(|r| &r.violations) {
        println!("    {v}");
    }
    println!(
        "  worst etcd write outage: {:?}",
        reports
            .iter()
            .map(|r| r.worst_outage)
            .max()
            .unwrap_or_default()
    );
    println!(
        "  worst control planes down at once (by vixen): {}",
        reports
            .iter()
            .map(|r| r.worst_cps_down)
            .max()
            .unwrap_or_default()
    );
    println!(
        "  time to converge after faults clear: min {} median {} max {}",
        pct(0),
        pct(conv.len() / 2),
        pct(conv.len().saturating_sub(1))
    );
}

#[track_caller]
fn assert_clean(reports: &[RunReport]) {
    let violations: Vec<&String> = reports.iter().flat_map(|r| &r.violations).collect();
    assert!(
        violations.is_empty(),
        "chaos invariants broken:\n{violations:#?}"
    );
}

/// Faults: the fixed CI seeds (node down, slow reboot, agent SIGKILL, interleaved with worker
/// removal/re-add, labels, reboot-needing patches and the upgrade); every invariant above.
#[test]
fn chaos_fixed_seeds() {
    let reports = run_seeds(&[1, 2], 100);
    figures(&reports);
    assert_clean(&reports);
}

/// Seeds that broke the write-outage bound in `bench/chaos.sh 200` (2026-12-03, issue 14): a
/// reboot-needing patch on the control planes after a node was powered off (561105), or after
/// the Talos upgrade and a slow reboot (470074), measured 3.2-3.3 s. That was one probe attempt
/// whose puts, sent to the endpoints one after the other, each timed out at 1 s. etcd's logs show
/// clean leadership transfers (the lab's reboot stops etcd as Talos does). With the puts sent at
/// once, no attempt of these seeds fails, and the probe still sees a lost quorum
/// (`chaos_watchers_see_a_lost_quorum`).
#[test]
fn chaos_regression_seeds() {
    let reports = run_seeds(&[561105, 470074], 196);
    figures(&reports);
    assert_clean(&reports);
}

/// Seeds from `VIXEN_CHAOS_SEEDS` (`random:N` or `1,2,3`); run by bench/chaos.sh.
#[test]
#[ignore = "bench: run by bench/chaos.sh"]
fn chaos_seeds() {
    let spec = std::env::var("VIXEN_CHAOS_SEEDS").unwrap_or_else(|_| "random:1".into());
    let seeds: Vec<u64> = if let Some(n) = spec.strip_prefix("random:") {
        let mut rng = Rng(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64);
        (0..n.parse::<u64>().unwrap())
            .map(|_| rng.next() % 1_000_000)
            .collect()
    } else {
        spec.split(',').map(|s| s.trim().parse().unwrap()).collect()
    };
    println!("chaos seeds: {seeds:?}");
    let reports = run_seeds(&seeds, 102);
    figures(&reports);
    assert_clean(&reports);
}

/// The harness's own eyes (fault: quorum lost, two control planes powered off, only one of them
/// held by the harness): the sampler must call it two down at once, the probe must see the write
/// outage, and the Git check must see the node that is not configured.
#[test]
fn chaos_watchers_see_a_lost_quorum() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::full_cluster(118);
    let git = Git::new(&lab);
    let stop = Arc::new(AtomicBool::new(false));
    let watch = Arc::new(Mutex::new(Watch::default()));
    let threads = watchers(&lab, &stop, &watch);
    std::thread::sleep(Duration::from_millis(500));
    watch.lock().unwrap().held = Some("cp-1".into());
    lab.fault("cp-1", "down");
    lab.fault("cp-2", "down");
    // Held until the probe has seen writes fail for longer than the limit (under load a fixed
    // sleep measured less: the probe's own attempts are slow then).
    let deadline = Instant::now() + Duration::from_secs(60);
    while watch
        .lock()
        .unwrap()
        .failing_since
        .is_none_or(|t| t.elapsed() < MAX_OUTAGE + Duration::from_secs(1))
    {
        assert!(Instant::now() < deadline, "the probe never saw the outage");
        std::thread::sleep(Duration::from_millis(100));
    }
    let differs = matches_git(&lab, &git);
    lab.fault("cp-2", "up");
    lab.fault("cp-1", "up");
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let w = watch.lock().unwrap();
    assert!(
        w.violations.iter().any(|v| v.contains("cp-2")),
        "{:?}",
        w.violations
    );
    assert!(w.worst_outage > MAX_OUTAGE, "{:?}", w.worst_outage);
    assert!(differs.is_err_and(|e| e.contains("cp-1") || e.contains("cp-2")));
}
