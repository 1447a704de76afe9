//! The lab driven as talosctl drives it: the `talos-client` peer (tests/peers/talos-client, on
//! Talos' own client library pkg/machinery v1.13.9, the one talosctl is built on) runs each
//! talosctl command against lab nodes, and every test checks the effect independently: in
//! lab.json, calls.jsonl and etcd itself (etcdctl), not only the peer's exit code.
//!
//! Fault covered: the lab and vixen's client come from the same understanding of Talos, so a lab
//! that is more lenient than Talos (or answers in a shape Talos never sends) lets vixen pass in
//! the lab and fail on real nodes. Here the client is Talos' own.
//!
//! Addresses: 127.80.x.x to 127.89.x.x (one /16 per test).

mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::Cluster;
use serde_json::Value;
use vixen_lab::{CallRecord, Fault, Lab, LabOptions, LabSpec, LabStatus, NodeSpec, Role};

/// The peer and the talosconfig it uses.
struct Peer {
    bin: PathBuf,
    talosconfig: PathBuf,
}

/// One peer run: its exit status and the JSON it printed.
struct Run {
    ok: bool,
    json: Value,
    stderr: String,
}

impl Run {
    fn expect_ok(self, what: &str) -> Value {
        assert!(self.ok, "{what} failed: {}\n{}", self.json, self.stderr);
        self.json
    }

    /// The gRPC code of a failed run (`"FailedPrecondition"`...).
    fn code(&self) -> &str {
        self.json["code"].as_str().unwrap_or("")
    }
}

impl Peer {
    fn new(test: &str, c: &Cluster, dir: &Path) -> Option<Peer> {
        let bin = vixen_lab::peers::for_test("talos-client", test)?;
        let talosconfig = dir.join("talosconfig");
        std::fs::write(&talosconfig, c.admin.to_talosconfig("lab", &[])).unwrap();
        Some(Peer { bin, talosconfig })
    }

    fn command(&self, endpoint: &str, nodes: &[&str], args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.arg("--talosconfig")
            .arg(&self.talosconfig)
            .arg("--endpoints")
            .arg(endpoint)
            .arg("--timeout")
            .arg("90s");
        if !nodes.is_empty() {
            cmd.arg("--nodes").arg(nodes.join(","));
        }
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs `talos-client --endpoints endpoint --nodes nodes args...`.
    async fn run(&self, endpoint: &str, nodes: &[&str], args: &[&str]) -> Run {
        let out = self
            .command(endpoint, nodes, args)
            .output()
            .await
            .expect("talos-client runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        Run {
            ok: out.status.success(),
            json: serde_json::from_str(&stdout).unwrap_or(Value::String(stdout.to_string())),
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        }
    }

    /// `run` against one node, the node being its own endpoint (as `talosctl -e X -n X`).
    async fn on(&self, addr: &str, args: &[&str]) -> Run {
        self.run(addr, &[addr], args).await
    }
}

/// `name@127.<net>.0.<i+1>`, all on `version`.
fn spec(net: u8, nodes: &[(&str, Role)], version: &str) -> LabSpec {
    LabSpec {
        nodes: nodes
            .iter()
            .enumerate()
            .map(|(i, (name, role))| NodeSpec {
                name: (*name).into(),
                role: *role,
                maintenance_address: addr(net, i + 1).parse().unwrap(),
                talos_version: version.into(),
            })
            .collect(),
    }
}

fn addr(net: u8, i: usize) -> String {
    format!("127.{net}.0.{i}")
}

async fn start(spec: &LabSpec, dir: &Path) -> Lab {
    Lab::start(
        spec,
        LabOptions {
            dir: dir.join("lab"),
            reboot_ms: 300,
            kube: None,
        },
    )
    .await
    .unwrap()
}

fn lab_node(lab: &Lab, name: &str) -> vixen_lab::NodeStatus {
    LabStatus::load(lab.dir())
        .unwrap()
        .nodes
        .into_iter()
        .find(|n| n.name == name)
        .unwrap()
}

fn calls(lab: &Lab, node: &str, method: &str) -> Vec<CallRecord> {
    CallRecord::load_all(lab.dir())
        .unwrap()
        .into_iter()
        .filter(|c| c.node == node && c.method.ends_with(method))
        .collect()
}

async fn until<F, Fut>(what: &str, secs: u64, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    common::until(what, secs, f).await;
}

/// etcdctl (v3 API) against one member, as an operator would check etcd: JSON output.
async fn etcdctl(ip: &str, args: &[&str]) -> Value {
    try_etcdctl(ip, args)
        .await
        .unwrap_or_else(|e| panic!("etcdctl {args:?}: {e}"))
}

/// `etcdctl`, or etcdctl's error (a member that is still starting, or restarting after a
/// reboot, does not answer yet: the waits below poll through that).
async fn try_etcdctl(ip: &str, args: &[&str]) -> Result<Value, String> {
    let out = tokio::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=http://{ip}:2379"))
        .arg("--command-timeout=5s")
        .args(args)
        .arg("-w")
        .arg("json")
        .output()
        .await
        .expect("etcdctl (tests/deps.sh installs etcd-client)");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).to_string());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// Whether etcd itself lists `n` started voting members (named, no learner); false while the
/// member at `ip` does not answer.
async fn etcd_voters(ip: &str, n: usize) -> bool {
    let Ok(v) = try_etcdctl(ip, &["member", "list"]).await else {
        return false;
    };
    let m = v["members"].as_array().cloned().unwrap_or_default();
    m.len() == n
        && m.iter().all(|m| {
            !m["name"].as_str().unwrap_or("").is_empty() && m["isLearner"] != Value::Bool(true)
        })
}

/// Member names and hex IDs, as etcd itself lists them.
async fn etcd_members(ip: &str) -> Vec<(String, String)> {
    let v = etcdctl(ip, &["member", "list"]).await;
    let mut out: Vec<(String, String)> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or("").to_string(),
                format!("{:x}", m["ID"].as_u64().unwrap()),
            )
        })
        .collect();
    out.sort();
    out
}

/// The leader's hex ID as etcd reports it, or None while no leader is elected (etcd then
/// reports leader 0, which its JSON omits) or the member does not answer.
async fn etcd_leader(ip: &str) -> Option<String> {
    let v = try_etcdctl(ip, &["endpoint", "status"]).await.ok()?;
    match v[0]["Status"]["leader"].as_u64() {
        Some(0) | None => None,
        Some(id) => Some(format!("{id:x}")),
    }
}

/// Waits until etcd has elected a leader other than `not`, and returns its hex ID.
async fn leader_other_than(ip: &str, not: &str, what: &str, secs: u64) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match etcd_leader(ip).await {
            Some(l) if l != not => return l,
            _ => {}
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The first config through `apply --insecure` (talosctl apply-config --insecure), then waits
/// for the node to answer with mTLS.
async fn install(p: &Peer, c: &Cluster, lab: &Lab, role: Role, name: &str, ip: &str, v: &str) {
    let cfg = c.config(role, name, &[ip], v);
    let file = lab.dir().join(format!("{name}.yaml"));
    std::fs::write(&file, cfg).unwrap();
    let file = file.to_str().unwrap();
    p.run(ip, &[ip], &["apply", file, "--mode", "auto", "--insecure"])
        .await
        .expect_ok("apply --insecure");
    until(&format!("{name} configured"), 60, || async {
        p.on(ip, &["version"]).await.ok
    })
    .await;
}

/// Bootstrap as a user of talosctl does it: retried only while Talos says it is not available
/// yet (FailedPrecondition, v1alpha1_server.go Bootstrap).
async fn bootstrap(p: &Peer, ip: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = p.on(ip, &["bootstrap"]).await;
        if r.ok {
            return;
        }
        assert!(
            r.code() == "FailedPrecondition" && tokio::time::Instant::now() < deadline,
            "bootstrap: {} {}",
            r.json,
            r.stderr
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A cluster of control planes (and workers) installed and bootstrapped through the peer.
async fn cluster(
    test: &str,
    net: u8,
    nodes: &[(&str, Role)],
    v: &str,
    dir: &Path,
) -> Option<(Cluster, Peer, Lab)> {
    let c = Cluster::generate();
    let p = Peer::new(test, &c, dir)?;
    let lab = start(&spec(net, nodes, v), dir).await;
    let mut cps = 0;
    for (i, (name, role)) in nodes.iter().enumerate() {
        let ip = addr(net, i + 1);
        install(&p, &c, &lab, *role, name, &ip, v).await;
        if *role == Role::Controlplane {
            cps += 1;
            if cps == 1 {
                bootstrap(&p, &ip).await;
            }
            let first = addr(net, 1);
            until(&format!("{cps} etcd members"), 60, || async {
                etcd_voters(&first, cps).await
            })
            .await;
        }
    }
    Some((c, p, lab))
}

/// Maintenance apply (dry run, then live), bootstrap, etcd members/status/snapshot, forfeit,
/// remove-member, leave and kubeconfig, each checked in etcd, lab.json or calls.jsonl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_installs_bootstraps_and_runs_etcd_operations() {
    let dir = tempfile::tempdir().unwrap();
    let test = "peer_installs_bootstraps_and_runs_etcd_operations";
    let v = "v1.11.6";
    let c = Cluster::generate();
    let Some(p) = Peer::new(test, &c, dir.path()) else {
        return;
    };
    let nodes = [
        ("cp1", Role::Controlplane),
        ("cp2", Role::Controlplane),
        ("cp3", Role::Controlplane),
    ];
    let lab = start(&spec(80, &nodes, v), dir.path()).await;
    let (ip1, ip2, ip3) = (addr(80, 1), addr(80, 2), addr(80, 3));

    // apply-config --insecure --dry-run: answered, nothing installed.
    let cfg = lab.dir().join("cp1.yaml");
    std::fs::write(&cfg, c.config(Role::Controlplane, "cp1", &[&ip1], v)).unwrap();
    let cfg = cfg.to_str().unwrap();
    let dry = p
        .run(
            &ip1,
            &[&ip1],
            &["apply", cfg, "--mode", "auto", "--dry-run", "--insecure"],
        )
        .await
        .expect_ok("apply --insecure --dry-run");
    assert!(
        dry["messages"][0]["mode_details"]
            .as_str()
            .unwrap()
            .contains("Dry run")
    );
    let rec = calls(&lab, "cp1", "/ApplyConfiguration");
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].detail["dry_run"], true);
    assert_eq!(
        rec[0].client, None,
        "maintenance apply carries no client certificate"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(lab_node(&lab, "cp1").mode, "maintenance");

    // Then live, for all three; the first one bootstraps.
    for (i, (name, role)) in nodes.iter().enumerate() {
        install(&p, &c, &lab, *role, name, &addr(80, i + 1), v).await;
    }
    for n in ["cp1", "cp2", "cp3"] {
        let s = lab_node(&lab, n);
        assert_eq!(
            (s.mode.as_str(), s.talos_version.as_str()),
            ("configured", v)
        );
    }
    let version = p.on(&ip2, &["version"]).await.expect_ok("version");
    assert_eq!(version["messages"][0]["version"]["tag"], v);
    bootstrap(&p, &ip1).await;
    until("3 etcd members", 60, || async {
        etcd_voters(&ip1, 3).await
    })
    .await;
    let truth = etcd_members(&ip1).await;
    assert_eq!(
        truth.iter().map(|m| m.0.as_str()).collect::<Vec<_>>(),
        ["cp1", "cp2", "cp3"]
    );

    // etcd members: what etcd itself lists (names and IDs).
    let members = p
        .on(&ip2, &["etcd-members"])
        .await
        .expect_ok("etcd-members");
    let mut listed: Vec<(String, String)> = members["messages"][0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let id: u64 = m["id"].as_str().unwrap().parse().unwrap();
            (
                m["hostname"].as_str().unwrap().to_string(),
                format!("{id:x}"),
            )
        })
        .collect();
    listed.sort();
    assert_eq!(listed, truth);

    // etcd status: the local member (its ID from etcd's response header, as
    // v1alpha1_server.go EtcdStatus), etcd's own leader and version, as etcdctl sees them.
    // (storage_version is not checked: etcd 3.4 has none.)
    let status = p.on(&ip3, &["etcd-status"]).await.expect_ok("etcd-status");
    let ms = &status["messages"][0]["member_status"];
    let num = |k: &str| -> u64 {
        ms[k]
            .as_str()
            .unwrap_or_else(|| panic!("no {k} in {status}"))
            .parse()
            .unwrap()
    };
    let truth3 = etcdctl(&ip3, &["endpoint", "status"]).await;
    assert_eq!(
        Some(num("member_id")),
        truth3[0]["Status"]["header"]["member_id"].as_u64()
    );
    assert_eq!(Some(num("leader")), truth3[0]["Status"]["leader"].as_u64());
    assert_eq!(
        ms["protocol_version"].as_str(),
        truth3[0]["Status"]["version"].as_str()
    );

    // etcd snapshot: a real etcd snapshot (etcdctl reads it) that holds a key written before.
    let put = etcdctl(&ip1, &["put", "peer-marker", "before-snapshot"]).await;
    let rev = put["header"]["revision"].as_u64().unwrap();
    let snap = dir.path().join("etcd.snapshot");
    p.on(&ip1, &["etcd-snapshot", snap.to_str().unwrap()])
        .await
        .expect_ok("etcd-snapshot");
    let st = etcdctl(&ip1, &["snapshot", "status", snap.to_str().unwrap()]).await;
    assert!(
        st["revision"].as_u64().unwrap() >= rev,
        "snapshot status {st}"
    );
    let bytes = std::fs::read(&snap).unwrap();
    assert!(bytes.windows(11).any(|w| w == b"peer-marker"));

    // forfeit leadership on the leader: etcd's leader moves to the member the reply names.
    let before = leader_other_than(&ip1, "", "a leader", 20).await;
    let (leader_name, _) = truth.iter().find(|m| m.1 == before).unwrap().clone();
    let leader_ip = addr(80, leader_name[2..].parse().unwrap());
    let forfeit = p
        .on(&leader_ip, &["etcd-forfeit"])
        .await
        .expect_ok("etcd-forfeit");
    let new_name = forfeit["messages"][0]["member"]
        .as_str()
        .unwrap()
        .to_string();
    let after = leader_other_than(&ip1, &before, "leadership moved", 20).await;
    assert_eq!(truth.iter().find(|m| m.1 == after).unwrap().0, new_name);

    // remove-member: cp3 powered off, removed through cp1 by its hex ID.
    let id3 = truth.iter().find(|m| m.0 == "cp3").unwrap().1.clone();
    lab.fault("cp3", Fault::Down).await.unwrap();
    leader_other_than(&ip1, &id3, "a leader without cp3", 30).await;
    p.on(&ip1, &["etcd-remove-member", &id3])
        .await
        .expect_ok("etcd-remove-member");
    let names: Vec<String> = etcd_members(&ip1).await.into_iter().map(|m| m.0).collect();
    assert_eq!(names, ["cp1", "cp2"]);
    assert!(calls(&lab, "cp1", "/EtcdRemoveMemberByID")[0].result == "ok");

    // leave: cp2 leaves; etcd lists cp1 alone, cp2's etcd stops (lab.json).
    p.on(&ip2, &["etcd-leave"]).await.expect_ok("etcd-leave");
    let names: Vec<String> = etcd_members(&ip1).await.into_iter().map(|m| m.0).collect();
    assert_eq!(names, ["cp1"]);
    until("cp2's etcd stopped", 20, || async {
        lab_node(&lab, "cp2").etcd_client_url.is_none()
    })
    .await;

    // kubeconfig: the cluster's CA, the configured endpoint, an admin (system:masters) cert.
    let kc = dir.path().join("kubeconfig");
    p.on(&ip1, &["kubeconfig", kc.to_str().unwrap()])
        .await
        .expect_ok("kubeconfig");
    let kube: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&kc).unwrap()).unwrap();
    let cluster = &kube["clusters"][0]["cluster"];
    assert_eq!(cluster["server"].as_str(), Some("https://127.0.0.1:6443"));
    let ca = b64(cluster["certificate-authority-data"].as_str().unwrap());
    assert_eq!(ca.trim(), b64(&c.bundle.certs.k8s.crt).trim());
    let crt = b64(kube["users"][0]["user"]["client-certificate-data"]
        .as_str()
        .unwrap());
    let (_, pem) = x509_parser::pem::parse_x509_pem(crt.as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    assert!(
        cert.subject()
            .iter_organization()
            .any(|o| o.as_str() == Ok("system:masters")),
        "kubeconfig's user is not an admin: {}",
        cert.subject()
    );
    lab.shutdown().await;
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(s).unwrap()).unwrap()
}

/// `--nodes` routing with the `node` key (client.WithNode), through one endpoint: the call runs
/// on the target (calls.jsonl names it, `via` the endpoint) and answers with its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_key_routes_through_one_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = [("cp1", Role::Controlplane), ("w1", Role::Worker)];
    let test = "node_key_routes_through_one_endpoint";
    let Some((_c, p, lab)) = cluster(test, 81, &nodes, "v1.11.6", dir.path()).await else {
        return;
    };
    let (cp, w) = (addr(81, 1), addr(81, 2));
    let (on_w, on_cp) = (
        calls(&lab, "w1", "/Version").len(),
        calls(&lab, "cp1", "/Version").len(),
    );
    p.run(&cp, &[&w], &["--node-key", "node", "version"])
        .await
        .expect_ok("version routed to w1");
    let rec = calls(&lab, "w1", "/Version");
    assert_eq!(rec.len(), on_w + 1, "the call must reach w1");
    assert_eq!(rec.last().unwrap().detail["via"], "cp1");
    assert_eq!(
        calls(&lab, "cp1", "/Version").len(),
        on_cp,
        "cp1 answered itself"
    );
    // A worker has no etcd: routed to w1, etcd-status must fail there, not answer for cp1.
    let r = p
        .run(&cp, &[&w], &["--node-key", "node", "etcd-status"])
        .await;
    assert!(!r.ok, "etcd status of a worker answered: {}", r.json);
    assert_eq!(calls(&lab, "w1", "/EtcdStatus").len(), 1);
    lab.shutdown().await;
}

/// talosctl's default routing, the `nodes` key (apid's one-to-many mode): the call runs on the
/// target and each reply names the target in Metadata.hostname
/// (internal/app/apid/pkg/director/director.go, backend/apid.go).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_key_routes_and_names_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = [("cp1", Role::Controlplane), ("w1", Role::Worker)];
    let test = "nodes_key_routes_and_names_the_node";
    let Some((_c, p, lab)) = cluster(test, 82, &nodes, "v1.11.6", dir.path()).await else {
        return;
    };
    let (cp, w) = (addr(82, 1), addr(82, 2));
    let before = calls(&lab, "w1", "/Version").len();
    let v = p.run(&cp, &[&w], &["version"]).await.expect_ok("version");
    // apid's remote backend names the reply after the target as the client gave it, here the
    // address (`internal/app/apid/pkg/backend/apid.go`, AppendInfo: `Hostname: a.target`), as
    // `talosctl -n 127.82.0.2 version` prints `NODE: 127.82.0.2`.
    assert_eq!(v["messages"][0]["metadata"]["hostname"], w.as_str());
    assert_eq!(calls(&lab, "w1", "/Version").len(), before + 1);
    let r = p.run(&cp, &[&w], &["etcd-status"]).await;
    assert!(!r.ok, "etcd status of a worker answered: {}", r.json);
    lab.shutdown().await;
}

/// `talosctl services`: each row renders through pkg/machinery's formatters (LastEvent needs
/// `events`), etcd and the API services run, and what has no health check reports unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_render_as_talosctl_prints_them() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = [("cp1", Role::Controlplane)];
    let test = "services_render_as_talosctl_prints_them";
    let Some((_c, p, lab)) = cluster(test, 83, &nodes, "v1.11.6", dir.path()).await else {
        return;
    };
    let cp = addr(83, 1);
    let s = p.on(&cp, &["services"]).await.expect_ok("services");
    let rows = s["services"].as_array().unwrap();
    let row = |id: &str| rows.iter().find(|r| r["id"] == id).cloned();
    for id in ["apid", "etcd", "kubelet", "machined", "trustd"] {
        let r = row(id).unwrap_or_else(|| panic!("no {id} in {rows:?}"));
        assert_eq!(r["state"], "Running", "{r}");
        assert_ne!(r["last_event"], "<none>", "{r}");
    }
    assert_eq!(row("etcd").unwrap()["health"], "OK");
    lab.shutdown().await;
}

/// Watches lab.json while `f` runs: every mode `node` passed through.
async fn modes_during<T>(
    lab: &Lab,
    node: &str,
    f: impl std::future::Future<Output = T>,
) -> (T, Vec<String>) {
    let dir = lab.dir().to_path_buf();
    let node = node.to_string();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watch = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut seen: Vec<String> = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok(s) = LabStatus::load(&dir)
                    && let Some(n) = s.nodes.iter().find(|n| n.name == node)
                    && seen.last() != Some(&n.mode)
                {
                    seen.push(n.mode.clone());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen
        })
    };
    let out = f.await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    (out, watch.await.unwrap())
}

fn boot_ids(track: &Value) -> (String, String) {
    let n = &track["nodes"][0];
    (
        n["boot_id_before"].as_str().unwrap_or("").to_string(),
        n["boot_id_after"].as_str().unwrap_or("").to_string(),
    )
}

/// `talosctl reboot --wait`: Events until the machine is ready again and a changed boot ID
/// (action/tracker.go); the node really went down and came back (lab.json), once (calls.jsonl).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_wait_sees_a_new_boot() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = [("cp1", Role::Controlplane)];
    let test = "reboot_wait_sees_a_new_boot";
    let Some((_c, p, lab)) = cluster(test, 84, &nodes, "v1.11.6", dir.path()).await else {
        return;
    };
    let cp = addr(84, 1);
    let (r, modes) = modes_during(&lab, "cp1", p.on(&cp, &["reboot", "--wait"])).await;
    let track = r.expect_ok("reboot --wait");
    let (before, after) = boot_ids(&track);
    assert!(
        !before.is_empty() && !after.is_empty() && before != after,
        "{track}"
    );
    assert!(
        !track["nodes"][0]["actor_id"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "{track}"
    );
    assert!(modes.contains(&"rebooting".to_string()), "modes {modes:?}");
    assert_eq!(lab_node(&lab, "cp1").mode, "configured");
    assert_eq!(calls(&lab, "cp1", "/Reboot").len(), 1);
    // etcd restarts with the node: polled until it answers again, with its one member.
    until("etcd back", 60, || async { etcd_voters(&cp, 1).await }).await;
    lab.shutdown().await;
}

/// `talosctl upgrade --wait` on 1.13 (upgrade.go): ImageService.Pull, LifecycleService.Upgrade,
/// then a tracked reboot; the node boots the new version (lab.json, Version). An image whose
/// registry does not resolve fails at the pull, before any upgrade call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_wait_on_1_13_pulls_installs_and_reboots() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = [("cp1", Role::Controlplane)];
    let test = "upgrade_wait_on_1_13_pulls_installs_and_reboots";
    let v = "v1.13.0";
    let Some((_c, p, lab)) = cluster(test, 85, &nodes, v, dir.path()).await else {
        return;
    };
    let cp = addr(85, 1);
    let bad = p
        .on(
            &cp,
            &[
                "upgrade",
                "registry.example.invalid/installer:v1.13.9",
                "--wait",
            ],
        )
        .await;
    assert!(!bad.ok, "an unresolvable image must fail: {}", bad.json);
    assert!(calls(&lab, "cp1", "LifecycleService/Upgrade").is_empty());
    assert_eq!(lab_node(&lab, "cp1").talos_version, v);

    let image = "ghcr.io/siderolabs/installer:v1.13.9";
    let (r, modes) = modes_during(&lab, "cp1", p.on(&cp, &["upgrade", image, "--wait"])).await;
    let out = r.expect_ok("upgrade --wait");
    assert_eq!(out["api"], "lifecycle");
    let (before, after) = boot_ids(&out["result"]);
    assert!(!before.is_empty() && before != after, "{out}");
    assert!(modes.contains(&"rebooting".to_string()), "modes {modes:?}");
    assert_eq!(lab_node(&lab, "cp1").talos_version, "v1.13.9");
    let version = p.on(&cp, &["version"]).await.expect_ok("version");
    assert_eq!(version["messages"][0]["version"]["tag"], "v1.13.9");
    let order: Vec<String> = CallRecord::load_all(lab.dir())
        .unwrap()
        .into_iter()
        .filter(|c| c.result == "ok")
        .map(|c| c.method)
        .filter(|m| m.contains("Pull") || m.contains("Upgrade") || m.ends_with("/Reboot"))
        .collect();
    assert_eq!(
        order,
        [
            "/machine.ImageService/Pull",
            "/machine.LifecycleService/Upgrade",
            "/machine.MachineService/Reboot"
        ]
    );
    lab.shutdown().await;
}

/// `talosctl upgrade --wait` on 1.11 takes the legacy MachineService.Upgrade (the version
/// check of upgrade.go), tracked like a reboot: the node boots the new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_wait_on_1_11_uses_the_legacy_api() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = [("cp1", Role::Controlplane)];
    let test = "upgrade_wait_on_1_11_uses_the_legacy_api";
    let Some((_c, p, lab)) = cluster(test, 86, &nodes, "v1.11.6", dir.path()).await else {
        return;
    };
    let cp = addr(86, 1);
    let image = "ghcr.io/siderolabs/installer:v1.12.5";
    let out = p
        .on(&cp, &["upgrade", image, "--wait"])
        .await
        .expect_ok("upgrade --wait");
    assert_eq!(out["api"], "legacy");
    let (before, after) = boot_ids(&out["result"]);
    assert!(!before.is_empty() && before != after, "{out}");
    assert_eq!(lab_node(&lab, "cp1").talos_version, "v1.12.5");
    let up = calls(&lab, "cp1", "MachineService/Upgrade");
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].detail["image"], image);
    assert!(calls(&lab, "cp1", "LifecycleService/Upgrade").is_empty());
    lab.shutdown().await;
}

/// `talosctl reset --graceful --reboot --system-labels-to-wipe STATE,EPHEMERAL --wait`
/// (reset.go): the control plane leaves etcd (etcdctl), the tracker sees stopAllServices, and
/// the node answers in maintenance mode on its maintenance address (lab.json).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_wait_leaves_etcd_and_comes_back_in_maintenance() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = [("cp1", Role::Controlplane), ("cp2", Role::Controlplane)];
    let test = "reset_wait_leaves_etcd_and_comes_back_in_maintenance";
    let Some((_c, p, lab)) = cluster(test, 87, &nodes, "v1.11.6", dir.path()).await else {
        return;
    };
    let (cp1, cp2) = (addr(87, 1), addr(87, 2));
    let args = [
        "reset",
        "--graceful=true",
        "--reboot",
        "--system-labels-to-wipe",
        "STATE,EPHEMERAL",
        "--wait",
    ];
    let out = p.on(&cp2, &args).await.expect_ok("reset --wait");
    assert_eq!(out["nodes"][0]["maintenance_after"], true, "{out}");
    let names: Vec<String> = etcd_members(&cp1).await.into_iter().map(|m| m.0).collect();
    assert_eq!(names, ["cp1"]);
    let s = lab_node(&lab, "cp2");
    assert_eq!(s.mode, "maintenance");
    assert_eq!(
        s.current_address.parse::<IpAddr>().unwrap().to_string(),
        cp2
    );
    let rec = calls(&lab, "cp2", "/Reset");
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].detail["graceful"], true);
    assert_eq!(rec[0].detail["reboot"], true);
    lab.shutdown().await;
}

/// `talosctl get machineconfig`: Talos' own client reads the running config through COSI
/// State.Get, byte for byte as it was applied (a comment too), and loads it with Talos' loader.
/// vixen's client reads the same bytes. Refused as Talos refuses: the sensitive resource to a
/// reader and in maintenance mode, one-to-many `nodes` routing for any COSI method.
/// Fault covered: a lab that served the config to anyone, or rewrote it, would let `vixen
/// import` pass here and fail on real nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_machineconfig_reads_the_config_as_applied_and_only_for_admins() {
    use sha2::Digest as _;

    let dir = tempfile::tempdir().unwrap();
    let test = "get_machineconfig_reads_the_config_as_applied_and_only_for_admins";
    let v = "v1.11.6";
    let c = Cluster::generate();
    let Some(p) = Peer::new(test, &c, dir.path()) else {
        return;
    };
    let nodes = [
        ("cp1", Role::Controlplane),
        ("w1", Role::Worker),
        ("w2", Role::Worker),
    ];
    let lab = start(&spec(198, &nodes, v), dir.path()).await;
    let (cp, w1, w2) = (addr(198, 1), addr(198, 2), addr(198, 3));
    let mut applied = c.config(Role::Controlplane, "cp1", &[&cp], v);
    applied.extend_from_slice(b"# kept as submitted\n");
    let file = lab.dir().join("cp1.yaml");
    std::fs::write(&file, &applied).unwrap();
    p.run(
        &cp,
        &[&cp],
        &["apply", file.to_str().unwrap(), "--insecure"],
    )
    .await
    .expect_ok("apply cp1");
    install(&p, &c, &lab, Role::Worker, "w1", &w1, v).await;
    until("cp1 configured", 60, || async {
        p.on(&cp, &["version"]).await.ok
    })
    .await;

    let hex = |b: &[u8]| format!("{:x}", sha2::Sha256::digest(b));
    // `talosctl get` routes each node with the single-valued `node` key.
    let got = p
        .run(&cp, &[&cp], &["--node-key", "node", "get-machineconfig"])
        .await
        .expect_ok("get-machineconfig");
    assert_eq!(got["sha256"], hex(&applied), "{got}");
    assert_eq!(got["type"], "controlplane");
    assert_eq!(got["id"], "v1alpha1");

    // Through cp1 to w1 (apid proxies to one node).
    let w1_file = lab.dir().join("w1.yaml");
    let w1_applied = std::fs::read(&w1_file).unwrap();
    let got = p
        .run(&cp, &[&w1], &["--node-key", "node", "get-machineconfig"])
        .await
        .expect_ok("get-machineconfig");
    assert_eq!(got["sha256"], hex(&w1_applied), "{got}");
    assert_eq!(got["type"], "worker");

    // One-to-many routing (`nodes`) is refused for COSI.
    let r = p.on(&cp, &["get-machineconfig"]).await;
    assert_eq!(r.code(), "InvalidArgument", "{} {}", r.json, r.stderr);

    // vixen's client reads the same bytes; a reader and maintenance mode may not.
    let admin = common::admin(&c, &cp);
    assert_eq!(
        admin.machine_config().await.unwrap().as_slice(),
        &applied[..]
    );
    let via = common::admin(&c, &cp).with_node(w1.clone());
    assert_eq!(
        via.machine_config().await.unwrap().as_slice(),
        &w1_applied[..]
    );
    let reader_cert = vixen_pki::mint(
        &c.bundle.certs.os,
        "certs.os",
        "reader",
        &vixen_pki::Usage::Client {
            roles: &["os:reader"],
        },
        time::Duration::days(1),
    )
    .unwrap();
    let reader = vixen_talos::Client::connect(
        &cp,
        &vixen_talos::Credentials::from_minted(&c.bundle.certs.os.crt, &reader_cert).unwrap(),
    )
    .unwrap()
    .with_options(common::quick());
    let denied = reader.machine_config().await.unwrap_err().to_string();
    assert!(denied.contains("not authorized"), "{denied}");
    let denied = common::maint(&w2)
        .machine_config()
        .await
        .unwrap_err()
        .to_string();
    assert!(denied.contains("not authorized"), "{denied}");
    let gets = calls(&lab, "cp1", "/cosi.resource.State/Get");
    assert!(gets.len() >= 3, "{gets:?}");
    lab.shutdown().await;
}
