//! etcd snapshots (issue 16) on the lab (real etcd, the Talos wire API), through the `vixen`
//! binary, with a real S3-compatible peer (moto's server mode, started on 127.140.x.x) and a
//! local folder. Effects are read from calls.jsonl, etcd itself, the bucket (plain HTTP, not
//! vixen's listing), `age -d` and `etcdctl snapshot status`.

use std::path::Path;
use std::process::Command;

mod common;
use common::lab::*;
use common::s3::{S3Peer, decrypt_and_status};

/// A SOPS file with S3 credentials in the repo, encrypted to the demo key with real sops.
fn write_s3_credentials(repo: &Path) {
    let sealed = common::sops_encrypt(
        "accessKeyId: vixen-lab\nsecretAccessKey: lab-secret-not-real\n",
        &repo.join("secrets"),
        None,
    );
    std::fs::write(repo.join("secrets/s3.sops.yaml"), sealed).unwrap();
}

fn s3_backup(endpoint: &str) -> String {
    format!(
        "backup:\n  retention:\n    count: 5\n  beforeRisky: required\n  target:\n    s3:\n      \
         endpoint: {endpoint}\n      bucket: etcd-backups\n      prefix: clusters\n      \
         pathStyle: true\n      credentials:\n        sopsFile: secrets/s3.sops.yaml\n"
    )
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Fault: the S3 peer is stopped when a control plane leaves Git (`beforeRisky: required`).
/// The plan stops before any etcd change: calls.jsonl shows no EtcdLeaveCluster, no
/// EtcdRemoveMemberByID, nothing mutating, and etcd still has its 3 members. With the peer
/// back, the snapshot is taken before the leave, lands in the bucket age-encrypted, decrypts
/// with `age -d` and is a snapshot `etcdctl snapshot status` reads.
#[test]
fn a_control_plane_removal_needs_a_fresh_snapshot_first() {
    let lab = Lab::full_cluster(140);
    write_s3_credentials(&lab.repo);
    let down = S3Peer::start(&lab.ip("50.1"), "etcd-backups");
    lab.edit("cluster.yaml", "", &s3_backup(&down.endpoint));
    drop(down);
    // 3 -> 1 (an even count of control planes is refused by validation).
    std::fs::remove_file(lab.repo.join("nodes/cp-2.yaml")).unwrap();
    std::fs::remove_file(lab.repo.join("nodes/cp-3.yaml")).unwrap();

    let mark = lab.mark();
    let out = lab.run(&["agent", "--once"]);
    let t = text(&out);
    assert!(!out.status.success(), "must not converge: {t}");
    assert!(
        t.contains("no fresh etcd snapshot before the control-plane removal of cp-"),
        "{t}"
    );
    assert!(
        !t.contains("lab-secret-not-real"),
        "no secret in the output: {t}"
    );
    let since: Vec<Call> = lab.calls().into_iter().skip(mark).collect();
    assert!(
        since
            .iter()
            .all(|c| !matches!(c.short(), "EtcdLeaveCluster" | "EtcdRemoveMemberByID")),
        "no etcd change: {since:#?}"
    );
    assert!(
        lab.mutating_since(mark).is_empty(),
        "{:#?}",
        lab.mutating_since(mark)
    );
    assert!(
        since.iter().any(|c| c.short() == "EtcdSnapshot"),
        "a snapshot was taken"
    );
    assert_eq!(
        lab.etcd_members(&lab.ip("10.1")),
        members(&["cp-1", "cp-2", "cp-3"])
    );

    // The store is back (on another address): the removal goes through, snapshot first.
    let up = S3Peer::start(&lab.ip("50.2"), "etcd-backups");
    let file = lab.repo.join("cluster.yaml");
    let cluster = std::fs::read_to_string(&file).unwrap();
    let fixed = cluster
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("endpoint: http://") {
                format!("      endpoint: {}", up.endpoint)
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    std::fs::write(&file, fixed).unwrap();
    let mark = lab.mark();
    lab.converge();
    let since: Vec<Call> = lab.calls().into_iter().skip(mark).collect();
    let snap = since.iter().position(|c| c.short() == "EtcdSnapshot");
    let leave = since.iter().position(|c| c.short() == "EtcdLeaveCluster");
    assert!(
        matches!((snap, leave), (Some(s), Some(l)) if s < l),
        "snapshot before the leave: {since:#?}"
    );
    assert_eq!(lab.etcd_members(&lab.ip("10.1")), members(&["cp-1"]));
    let keys = up.keys("etcd-backups", "clusters/homelab/");
    let data: Vec<&String> = keys.iter().filter(|k| k.ends_with(".db.age")).collect();
    assert_eq!(data.len(), 1, "{keys:?}");
    assert!(
        keys.iter().any(|k| k.ends_with(".json")),
        "metadata beside it: {keys:?}"
    );
    let (code, cipher) = up.curl(&[&format!("/etcd-backups/{}", data[0])]);
    assert_eq!(code, 200);
    assert!(
        cipher.starts_with(b"age-encryption.org/v1"),
        "age-encrypted"
    );
    let tmp = tempfile::tempdir().unwrap();
    assert!(decrypt_and_status(&cipher, tmp.path()) > 0);
    let (_, meta) = up.curl(&[&format!(
        "/etcd-backups/{}",
        data[0].replace(".db.age", ".json")
    )]);
    let meta: serde_json::Value = serde_json::from_slice(&meta).unwrap();
    assert_eq!(meta["cluster"], "homelab");
    assert!(meta["reason"].as_str().unwrap().contains("removal of cp-"));
    assert!(!meta["etcdVersion"].as_str().unwrap().is_empty(), "{meta}");
}

/// `vixen etcd snapshot` three times into a local folder with `retention.count: 2`: two are
/// kept (the oldest is pruned), `vixen etcd snapshots` lists them, and each is an encrypted
/// etcd snapshot holding a key written before it.
#[test]
fn manual_snapshots_land_in_a_folder_and_retention_prunes_the_oldest() {
    let lab = Lab::full_cluster(141);
    let folder = lab.lab.join("backups");
    lab.edit(
        "cluster.yaml",
        "",
        &format!(
            "backup:\n  retention:\n    count: 2\n  target:\n    local:\n      path: {}\n",
            folder.display()
        ),
    );
    let put = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &format!("http://{}:2379", lab.ip("10.1"))])
        .args(["put", "/vixen-test/before-snapshot", "kept"])
        .output()
        .unwrap();
    assert!(put.status.success());
    let mut stored = Vec::new();
    for _ in 0..3 {
        let out = lab.run(&["etcd", "snapshot", "--reason", "test"]);
        assert!(out.status.success(), "{}", text(&out));
        stored.push(text(&out));
    }
    let files: Vec<std::path::PathBuf> = walk(&folder)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".db.age"))
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    let first = stored[0].trim().trim_start_matches("stored ").to_string();
    assert!(
        files.iter().all(|f| !f.to_string_lossy().ends_with(&first)),
        "the oldest ({first}) is pruned: {files:?}"
    );
    let out = lab.run(&["etcd", "snapshots"]);
    let listing = text(&out);
    assert!(out.status.success(), "{listing}");
    assert_eq!(
        listing.lines().filter(|l| l.contains(".db.age")).count(),
        2,
        "{listing}"
    );
    let tmp = tempfile::tempdir().unwrap();
    for f in &files {
        assert!(decrypt_and_status(&std::fs::read(f).unwrap(), tmp.path()) > 0);
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn etcdctl(ip: &str, args: &[&str]) -> std::process::Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &format!("http://{ip}:2379"),
            "--command-timeout=5s",
        ])
        .args(args)
        .output()
        .unwrap()
}

fn get(ip: &str, key: &str) -> Option<String> {
    let out = etcdctl(ip, &["get", "--print-value-only", key]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!v.is_empty()).then_some(v)
}

/// The disaster: keys written through etcdctl, a snapshot taken, then every node reset to
/// maintenance mode (`vixen decommission`: etcd wiped on every control plane). `vixen etcd
/// restore --from latest` brings cp-1 up from maintenance, uploads the snapshot (EtcdRecover),
/// recovers it (Bootstrap{recover_etcd}: real etcd restores it into a new data directory), and
/// the other control planes join: the keys read back through etcdctl on every member, and a
/// key written after the snapshot is not there. Before the disaster, with etcd healthy, the
/// same restore is refused and changes nothing.
#[test]
fn disaster_restore_brings_back_the_keys_of_the_snapshot() {
    let lab = Lab::full_cluster(142);
    let folder = lab.lab.join("backups");
    lab.edit(
        "cluster.yaml",
        "",
        &format!(
            "backup:\n  beforeRisky: off\n  target:\n    local:\n      path: {}\n",
            folder.display()
        ),
    );
    let cp1 = lab.ip("10.1");
    for (k, v) in [("/vixen-test/a", "1"), ("/vixen-test/b", "two")] {
        assert!(etcdctl(&cp1, &["put", k, v]).status.success());
    }
    let out = lab.run(&["etcd", "snapshot", "--reason", "before the disaster"]);
    assert!(out.status.success(), "{}", text(&out));

    // A healthy etcd answers: refused, nothing sent that changes a node.
    let mark = lab.mark();
    let out = lab.run(&["etcd", "restore", "--from", "latest", "--timeout", "60"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("etcd still answers on cp-1"), "{t}");
    let since: Vec<Call> = lab.calls().into_iter().skip(mark).collect();
    assert!(
        since
            .iter()
            .all(|c| !c.mutating() && c.short() != "EtcdRecover"),
        "{since:#?}"
    );
    assert_eq!(get(&cp1, "/vixen-test/a").as_deref(), Some("1"));

    assert!(
        etcdctl(&cp1, &["put", "/vixen-test/after", "x"])
            .status
            .success()
    );
    let out = lab.run(&["decommission", "--confirm", "homelab", "--timeout", "60"]);
    assert!(out.status.success(), "decommission: {}", text(&out));
    for n in ["cp-1", "cp-2", "cp-3"] {
        assert_eq!(lab.node_status(n)["mode"], "maintenance", "{n}");
    }
    assert!(
        !etcdctl(&cp1, &["get", "/vixen-test/a"]).status.success(),
        "no etcd answers any more"
    );

    let mark = lab.mark();
    let out = lab.run(&["etcd", "restore", "--from", "latest", "--timeout", "60"]);
    let t = text(&out);
    assert!(out.status.success(), "restore: {t}");
    let since: Vec<Call> = lab.calls().into_iter().skip(mark).collect();
    let recover = since.iter().position(|c| c.short() == "EtcdRecover");
    let boot = since
        .iter()
        .position(|c| c.short() == "Bootstrap" && c.detail["recover_etcd"] == true);
    assert!(
        matches!((recover, boot), (Some(r), Some(b)) if r < b),
        "EtcdRecover, then Bootstrap{{recover_etcd}}: {since:#?}"
    );
    assert_eq!(since[recover.unwrap()].node, "cp-1");
    for ip in [lab.ip("10.1"), lab.ip("10.2"), lab.ip("10.3")] {
        assert_eq!(get(&ip, "/vixen-test/a").as_deref(), Some("1"), "{ip}");
        assert_eq!(get(&ip, "/vixen-test/b").as_deref(), Some("two"), "{ip}");
        assert_eq!(get(&ip, "/vixen-test/after"), None, "{ip}");
    }
    assert_eq!(
        lab.etcd_members(&lab.ip("10.1")),
        members(&["cp-1", "cp-2", "cp-3"])
    );
}

/// The agent's `/metrics` (0 and empty while it does not answer yet).
fn metrics(port: u16) -> String {
    common::http(port, "GET", "/metrics", &[], b"").1
}

/// The value of the snapshot counter for `trigger` and `result`, 0 when absent.
fn snapshots_counted(metrics: &str, trigger: &str, result: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("vixen_etcd_snapshots_total{"))
        .filter(|l| {
            l.contains(&format!("trigger=\"{trigger}\""))
                && l.contains(&format!("result=\"{result}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn wait_until(what: &str, secs: u64, log: &Path, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} within {secs}s; agent log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// `backup.schedule: "* * * * *"` followed by the long-running agent (its poll interval far
/// longer than a minute, so the schedule alone wakes it). Fault: the target folder cannot be
/// created at the first scheduled time (a file stands where it should be): the failure is
/// counted (`result="failed"`), nothing is stored, the agent goes on; with the path free, the
/// next scheduled time stores an encrypted snapshot whose metadata says `scheduled`, and
/// `etcdctl snapshot status` reads it. No mutating Talos call is made for it.
#[test]
fn a_scheduled_snapshot_is_retried_at_the_next_time_after_a_failure() {
    let lab = Lab::full_cluster(185);
    let folder = lab.lab.join("scheduled");
    std::fs::write(&folder, "not a folder").unwrap();
    lab.edit(
        "cluster.yaml",
        "",
        &format!(
            "backup:\n  schedule: \"* * * * *\"\n  timeZone: UTC\n  target:\n    local:\n      \
             path: {}\n",
            folder.display()
        ),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = lab.lab.join("agent.log");
    let mark = lab.mark();
    let mut args: Vec<String> = ["agent", "--interval", "3600", "--resync", "3600"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(["--listen".into(), format!("127.0.0.1:{port}")]);
    args.extend(lab.target());
    let _agent = common::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_vixen"))
            .args(&args)
            .env("SOPS_AGE_KEY_FILE", common::example().join("demo.agekey"))
            .env("VIXEN_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_until("a failed scheduled snapshot", 100, &log, || {
        snapshots_counted(&metrics(port), "scheduled", "failed") >= 1.0
    });
    assert_eq!(
        snapshots_counted(&metrics(port), "scheduled", "stored"),
        0.0
    );
    std::fs::remove_file(&folder).unwrap();
    wait_until("a stored scheduled snapshot", 100, &log, || {
        snapshots_counted(&metrics(port), "scheduled", "stored") >= 1.0
    });
    let files: Vec<std::path::PathBuf> = walk(&folder)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".db.age"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let meta =
        std::fs::read_to_string(files[0].to_string_lossy().replace(".db.age", ".json")).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
    assert_eq!(meta["reason"], "scheduled", "{meta}");
    let tmp = tempfile::tempdir().unwrap();
    assert!(decrypt_and_status(&std::fs::read(&files[0]).unwrap(), tmp.path()) > 0);
    let since: Vec<Call> = lab.calls().into_iter().skip(mark).collect();
    assert!(
        since.iter().any(|c| c.short() == "EtcdSnapshot"),
        "taken through Talos"
    );
    assert!(
        lab.mutating_since(mark).is_empty(),
        "{:#?}",
        lab.mutating_since(mark)
    );
}
