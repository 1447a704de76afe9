//! The in-cluster agent end to end, on a real kube-apiserver: a `--kube` lab (simulated Talos
//! nodes, real etcd, the upstream kube-apiserver on that etcd with RBAC on), bootstrapped by
//! `vixen bootstrap`, then TWO long-running `vixen agent --kube` replicas that authenticate with
//! a token of vixen's ServiceAccount (manifests/rbac.yaml decides what they may do) and follow a
//! Git remote behind `git http-backend`.
//!
//! Everything is observed independently of vixen's own report: the Lease, ConfigMaps, the
//! `VixenCluster`, Events and Cilium objects through the API server as admin; the Talos calls
//! through the lab's calls.jsonl, where each replica is told apart by the name in its own client
//! certificate (`vixen-a`, `vixen-b`, both os:admin from the cluster's CA).
//!
//! Skipped loudly without the peers (tests/peers/build.sh), except in CI where they are required.

mod common;
#[path = "../../crates/git/tests/e2e/fixture.rs"]
#[allow(dead_code)]
mod fixture;
#[path = "../../crates/git/tests/e2e/http_server.rs"]
#[allow(dead_code)]
mod http_server;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::lab::rewrite_all;
use common::{copy_dir, example};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role as RbacRole, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt as _;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use serde_json::{Value, json};
use vixen_k8s::VixenCluster;
use vixen_lab::CallRecord;

const K: u8 = 60;
const NS: &str = "vixen-system";
const HOOK_SECRET: &str = "hook-secret-incluster-5f1e";
const GIT_PASSWORD: &str = "git-password-incluster-77ab";
/// Short, so that a takeover after a crash takes seconds; long enough to ride out the lab
/// restarting kube-apiserver when etcd members join.
const LEASE_SECONDS: u64 = 10;

fn vixen() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vixen"));
    c.env("VIXEN_LOG", "warn")
        .env_remove("SOPS_AGE_KEY")
        .env("SOPS_AGE_KEY_FILE", example().join("demo.agekey"))
        .env_remove("KUBECONFIG");
    c
}

#[track_caller]
fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The lab; stopped when the test ends, pass or fail.
struct Lab(PathBuf);

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = vixen().args(["lab", "down", "--dir"]).arg(&self.0).output();
    }
}

/// One `vixen agent --kube` replica; killed when dropped.
struct Replica {
    name: &'static str,
    child: common::KillOnDrop,
    port: u16,
    log: PathBuf,
}

struct Setup<'a> {
    dir: &'a Path,
    url: String,
    kubeconfig: PathBuf,
}

impl Replica {
    /// Runs with the flags the Deployment uses (manifests/deployment.yaml), on loopback.
    fn start(name: &'static str, s: &Setup<'_>, talosconfig: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = s.dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_vixen"))
            .args([
                "--log-format=json",
                "agent",
                "--kube",
                "--repo",
                &s.url,
                "--branch=main",
                "--interval=3600",
            ])
            .arg("--state")
            .arg(s.dir.join(name))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--webhook-path=/hook",
            ])
            .arg("--webhook-secret-file")
            .arg(s.dir.join("hook"))
            .args(["--git-username", "u"])
            .arg("--git-password-file")
            .arg(s.dir.join("git-password"))
            .arg("--age-key")
            .arg(example().join("demo.agekey"))
            .arg("--talosconfig")
            .arg(talosconfig)
            .args([
                "--namespace",
                NS,
                "--pod-name",
                name,
                "--lease-duration",
                &LEASE_SECONDS.to_string(),
                "--ready-timeout",
                "60",
            ])
            .env("KUBECONFIG", &s.kubeconfig)
            .env("VIXEN_LOG", "info")
            .env_remove("SOPS_AGE_KEY")
            .env_remove("SOPS_AGE_KEY_FILE")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self {
            name,
            child: common::KillOnDrop(child),
            port,
            log,
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn request(&self, path: &str, headers: &[(&str, String)], body: &[u8]) -> u16 {
        common::http(self.port, "POST", path, headers, body).0
    }

    /// A GitHub push webhook for `after`, signed with `secret`.
    fn github_push(&self, after: &str, secret: &str) -> u16 {
        use hmac::Mac as _;
        let body = json!({ "ref": "refs/heads/main", "after": after, "repository": { "full_name": "o/r" } }).to_string();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        self.request(
            "/hook",
            &[
                ("x-github-event", "push".into()),
                ("x-hub-signature-256", sig),
                ("content-type", "application/json".into()),
            ],
            body.as_bytes(),
        )
    }
}

/// The last lines of every replica's log, for failure messages.
fn tails(replicas: &[&Replica]) -> String {
    let mut out = String::new();
    for r in replicas {
        let logs = r.logs();
        let lines: Vec<&str> = logs.lines().collect();
        out.push_str(&format!(
            "\n--- {} (last lines) ---\n{}",
            r.name,
            lines[lines.len().saturating_sub(25)..].join("\n")
        ));
    }
    out
}

/// Polls `f` every 100 ms until it gives `Some`, or panics after `secs` with `why()`.
async fn until<T, F, Fut>(what: &str, secs: u64, why: impl Fn() -> String, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(t) = f().await {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}{}",
            why()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create<R>(api: &Api<R>, obj: Value)
where
    R: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api
        .create(
            &PostParams::default(),
            &serde_json::from_value(obj).unwrap(),
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("{e}"),
    }
}

/// What `kubectl apply -k manifests/` would put in place for the agent's API access: the
/// namespace, the ServiceAccount, manifests/rbac.yaml, vixen's CRD and Cilium's (pinned) CRDs;
/// and, since the example delivers Cilium as its CNI, manifests/infrastructure/rbac.yaml (the
/// opt-in the README asks for).
async fn install_vixen(admin: &kube::Client) {
    create(
        &Api::<Namespace>::all(admin.clone()),
        json!({ "metadata": { "name": NS } }),
    )
    .await;
    create(
        &Api::<ServiceAccount>::namespaced(admin.clone(), NS),
        json!({ "metadata": { "name": "vixen" } }),
    )
    .await;
    let manifests = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(
            || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            std::path::PathBuf::from,
        )
        .join("../manifests");
    let rbac = [
        std::fs::read_to_string(manifests.join("rbac.yaml")).unwrap(),
        std::fs::read_to_string(manifests.join("infrastructure/rbac.yaml")).unwrap(),
    ]
    .join("\n---\n");
    for doc in serde_yaml_ng::Deserializer::from_str(&rbac) {
        let doc: Value = serde::Deserialize::deserialize(doc).unwrap();
        match doc["kind"].as_str().unwrap() {
            "Role" => create(&Api::<RbacRole>::namespaced(admin.clone(), NS), doc).await,
            "RoleBinding" => create(&Api::<RoleBinding>::namespaced(admin.clone(), NS), doc).await,
            "ClusterRole" => create(&Api::<ClusterRole>::all(admin.clone()), doc).await,
            "ClusterRoleBinding" => {
                create(&Api::<ClusterRoleBinding>::all(admin.clone()), doc).await
            }
            k => panic!("unexpected {k} in rbac.yaml"),
        }
    }
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    create(&crds, serde_json::to_value(VixenCluster::crd()).unwrap()).await;
    let dir = vixen_lab::peers::cilium_crds().expect("Cilium CRDs (tests/peers/build.sh)");
    for f in [
        "ciliumloadbalancerippools.yaml",
        "ciliuml2announcementpolicies.yaml",
    ] {
        create(
            &crds,
            serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap(),
        )
        .await;
    }
    for name in [
        "vixenclusters.vixen.dev",
        "ciliumloadbalancerippools.cilium.io",
        "ciliuml2announcementpolicies.cilium.io",
    ] {
        let crds = crds.clone();
        until(&format!("CRD {name} established"), 30, String::new, || {
            let crds = crds.clone();
            async move {
                let c = crds.get(name).await.ok()?;
                c.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            }
        })
        .await;
    }
}

/// A kubeconfig that authenticates as the `vixen` ServiceAccount with a bound token, as a pod's
/// mounted token would.
async fn service_account_kubeconfig(
    admin: &kube::Client,
    admin_kubeconfig: &str,
) -> (String, String) {
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), NS)
        .create_token_request("vixen", &PostParams::default(), &req)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let kc = kube::config::Kubeconfig::from_yaml(admin_kubeconfig).unwrap();
    let cluster = kc.clusters[0].cluster.clone().unwrap();
    let text = serde_yaml_ng::to_string(&json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "vixen",
        "clusters": [{ "name": "lab", "cluster": { "server": cluster.server, "certificate-authority-data": cluster.certificate_authority_data } }],
        "users": [{ "name": "vixen", "user": { "token": token } }],
        "contexts": [{ "name": "vixen", "context": { "cluster": "lab", "user": "vixen", "namespace": NS } }],
    }))
    .unwrap();
    (text, token)
}

/// A talosconfig with an os:admin certificate named `name`, signed by the cluster's OS CA (what
/// Talos' `talos.dev/v1alpha1` ServiceAccount gives a pod).
fn talosconfig(repo: &Path, name: &str, out: &Path) {
    let plain = ok(vixen()
        .arg("decrypt")
        .arg(repo.join("secrets/talos.sops.yaml")));
    let bundle: vixen_pki::SecretsBundle = serde_yaml_ng::from_str(&plain).unwrap();
    let minted = vixen_pki::mint(
        &bundle.certs.os,
        "certs.os",
        name,
        &vixen_pki::Usage::Client {
            roles: &["os:admin"],
        },
        time::Duration::days(1),
    )
    .unwrap();
    let creds = vixen_talos::Credentials::from_minted(&bundle.certs.os.crt, &minted).unwrap();
    std::fs::write(out, creds.to_talosconfig(name, &[format!("127.{K}.10.1")])).unwrap();
}

fn edit(path: &Path, old: &str, new: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(old), "{} lacks {old:?}", path.display());
    std::fs::write(path, text.replace(old, new)).unwrap();
}

fn calls(lab: &Path) -> Vec<CallRecord> {
    CallRecord::load_all(lab).unwrap_or_default()
}

fn short(c: &CallRecord) -> &str {
    c.method.rsplit('/').next().unwrap_or(&c.method)
}

async fn holder(leases: &Api<Lease>) -> Option<(String, i32)> {
    let spec = leases.get("vixen").await.ok()?.spec?;
    Some((spec.holder_identity?, spec.lease_transitions.unwrap_or(0)))
}

async fn status(clusters: &Api<VixenCluster>) -> Option<vixen_k8s::VixenClusterStatus> {
    clusters.get("homelab").await.ok()?.status
}

async fn step_events(events: &Api<Event>) -> Vec<Event> {
    let all = events
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    all.into_iter()
        .filter(|e| e.reason.as_deref().is_some_and(|r| r.starts_with("Step")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_leads_a_webhook_on_the_standby_reaches_it_and_the_standby_takes_over() {
    let test =
        "two_replicas_one_leads_a_webhook_on_the_standby_reaches_it_and_the_standby_takes_over";
    if vixen_lab::peers::for_test("kube-apiserver", test).is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    // The repo: the homelab example on 127.60.x.x, stabilization 0, pushed to a Git remote that
    // `git http-backend` serves with basic auth. The age key stays out of Git.
    let remote = fixture::Remote::new();
    copy_dir(&example(), &remote.work);
    std::fs::remove_file(remote.work.join("demo.agekey")).unwrap();
    rewrite_all(&remote.work, "127.0.", &format!("127.{K}."));
    edit(
        &remote.work.join("cluster.yaml"),
        "stabilization: 30s",
        "stabilization: 0s",
    );
    let first = remote.commit(&[], "homelab", None);
    let git = http_server::GitHttpServer::start(remote.bare.parent().unwrap(), "u", GIT_PASSWORD);
    std::fs::write(dir.join("hook"), HOOK_SECRET).unwrap();
    std::fs::write(dir.join("git-password"), GIT_PASSWORD).unwrap();

    // The lab with its kube-apiserver, and the first control plane bootstrapped.
    let lab_dir = dir.join("lab");
    ok(vixen()
        .args([
            "lab",
            "up",
            "--kube",
            "--reboot-ms",
            "200",
            "--die-with",
            &std::process::id().to_string(),
            "--repo",
        ])
        .arg(&remote.work)
        .arg("--dir")
        .arg(&lab_dir));
    let _lab = Lab(lab_dir.clone());
    ok(vixen()
        .args(["bootstrap", "--timeout", "60", "--repo"])
        .arg(&remote.work)
        .arg("--lab")
        .arg(&lab_dir)
        .arg("--out")
        .arg(dir.join("out")));
    let admin_kubeconfig = std::fs::read_to_string(dir.join("out/kubeconfig")).unwrap();
    let admin = common::kubeapi::from_kubeconfig(&admin_kubeconfig).await;
    until("the API server", 120, String::new, || {
        let ns = Api::<Namespace>::all(admin.clone());
        async move { ns.get("default").await.ok().map(|_| ()) }
    })
    .await;
    install_vixen(&admin).await;
    let (sa_kubeconfig, token) = service_account_kubeconfig(&admin, &admin_kubeconfig).await;
    std::fs::write(dir.join("sa.kubeconfig"), &sa_kubeconfig).unwrap();
    let (tc_a, tc_b) = (dir.join("talosconfig-a"), dir.join("talosconfig-b"));
    talosconfig(&remote.work, "vixen-a", &tc_a);
    talosconfig(&remote.work, "vixen-b", &tc_b);

    let leases: Api<Lease> = Api::namespaced(admin.clone(), NS);
    let clusters: Api<VixenCluster> = Api::namespaced(admin.clone(), NS);
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), NS);
    let events: Api<Event> = Api::namespaced(admin.clone(), NS);
    let pools_gvk = GroupVersionKind::gvk("cilium.io", "v2alpha1", "CiliumLoadBalancerIPPool");
    let pools: Api<DynamicObject> = Api::all_with(
        admin.clone(),
        &ApiResource::from_gvk_with_plural(&pools_gvk, "ciliumloadbalancerippools"),
    );
    let l2_gvk = GroupVersionKind::gvk("cilium.io", "v2alpha1", "CiliumL2AnnouncementPolicy");
    let l2: Api<DynamicObject> = Api::all_with(
        admin.clone(),
        &ApiResource::from_gvk_with_plural(&l2_gvk, "ciliuml2announcementpolicies"),
    );

    // Two replicas. The first one started takes the Lease; the second waits as a standby.
    let setup = Setup {
        dir,
        url: git.url("repo.git"),
        kubeconfig: dir.join("sa.kubeconfig"),
    };
    let mark = calls(&lab_dir).len();
    let a = Replica::start("vixen-a", &setup, &tc_a);
    let leader = until("a Lease holder", 30, || tails(&[&a]), || holder(&leases)).await;
    assert_eq!(leader, ("vixen-a".to_owned(), 0));
    let b = Replica::start("vixen-b", &setup, &tc_b);
    let why = || tails(&[&a, &b]);

    // The leader joins the other four nodes and the cluster converges on the first commit.
    let st = until("the first commit applied", 240, why, || async {
        status(&clusters)
            .await
            .filter(|s| s.last_applied_revision.as_deref() == Some(first.as_str()))
    })
    .await;
    assert_eq!(st.phase, "Ready", "{st:?}");
    assert_eq!(st.leader.as_deref(), Some("vixen-a"));
    let versions: Vec<(String, Option<String>, String)> = st
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.version.clone(), n.state.clone()))
        .collect();
    assert_eq!(versions.len(), 5, "{versions:?}");
    let is = |v: &Option<String>, want: &str| {
        v.as_deref().map(|v| v.trim_start_matches('v')) == Some(want)
    };
    assert!(
        versions
            .iter()
            .all(|(_, v, s)| is(v, "1.11.6") && s == "ready"),
        "{versions:?}"
    );
    // Exactly one replica led all along, and only its calls reached the nodes (maintenance mode
    // sees no client certificate; every configured node's call names its caller).
    assert_eq!(
        holder(&leases).await,
        Some(("vixen-a".to_owned(), 0)),
        "the Lease changed hands{}",
        why()
    );
    let phase1: Vec<CallRecord> = calls(&lab_dir).into_iter().skip(mark).collect();
    let callers: std::collections::BTreeSet<&str> =
        phase1.iter().filter_map(|c| c.client.as_deref()).collect();
    assert_eq!(
        callers,
        ["vixen-a"].into(),
        "callers since the replicas started"
    );
    let joined: std::collections::BTreeSet<&str> = phase1
        .iter()
        .filter(|c| short(c) == "ApplyConfiguration" && c.result == "ok")
        .map(|c| c.node.as_str())
        .collect();
    // The four waiting in maintenance mode joined; cp-1 (bootstrapped from outside, so without a
    // record in the new journal) was given its config again.
    assert_eq!(
        joined,
        ["cp-1", "cp-2", "cp-3", "worker-1", "worker-2"].into()
    );
    // The journal in its ConfigMap: the inventory of the five nodes.
    let journal = configmaps.get("vixen-state").await.unwrap().data.unwrap();
    let journal: Value = serde_json::from_str(&journal["state.json"]).unwrap();
    assert_eq!(
        journal["inventory"]["nodes"].as_array().map(Vec::len),
        Some(5),
        "{journal}"
    );
    // Step Events on the VixenCluster, reported by the leader.
    let evs = step_events(&events).await;
    let started: Vec<&Event> = evs
        .iter()
        .filter(|e| e.reason.as_deref() == Some("StepStarted"))
        .collect();
    assert!(
        started
            .iter()
            .any(|e| e.action.as_deref() == Some("ApplyConfig")
                && e.note
                    .as_deref()
                    .is_some_and(|n| n.contains("cp-2 apply config"))),
        "{evs:#?}"
    );
    assert!(
        evs.iter()
            .any(|e| e.reason.as_deref() == Some("StepSucceeded"))
    );
    for e in &evs {
        let r = e.regarding.as_ref().unwrap();
        assert_eq!(
            (r.kind.as_deref(), r.name.as_deref()),
            (Some("VixenCluster"), Some("homelab"))
        );
        assert_eq!(e.reporting_instance.as_deref(), Some("vixen-a"));
    }
    // Cilium objects from network.yaml, applied by field manager `vixen`.
    let applied_by_vixen = |o: &DynamicObject| {
        o.metadata.managed_fields.iter().flatten().any(|m| {
            m.manager.as_deref() == Some("vixen") && m.operation.as_deref() == Some("Apply")
        })
    };
    let names: Vec<String> = pools
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|o| applied_by_vixen(o))
        .filter_map(|o| o.metadata.name.clone())
        .collect();
    assert_eq!(names, ["default", "vlan20"]);
    assert!(applied_by_vixen(&l2.get("default").await.unwrap()));
    assert!(
        configmaps.get_opt("vixen-push").await.unwrap().is_none(),
        "no webhook yet"
    );

    // A new commit: Talos v1.12.2 and the default pool moved. Reboots are slowed down so that the
    // leader is still rolling out when it dies.
    edit(
        &remote.work.join("cluster.yaml"),
        "version: v1.11.6",
        "version: v1.12.2",
    );
    edit(
        &remote.work.join("network.yaml"),
        &format!("127.{K}.30.0/28"),
        &format!("127.{K}.31.0/28"),
    );
    for n in ["cp-1", "cp-2", "cp-3", "worker-1", "worker-2"] {
        ok(vixen()
            .args(["lab", "fault", "--dir"])
            .arg(&lab_dir)
            .args([n, "slow-reboot", "3000"]));
    }
    let second = remote.commit(&[], "talos v1.12.2, pool moved", None);

    // The push webhook lands on the standby. Forged: 401, and nothing is written for the leader.
    assert_eq!(b.github_push(&second, "not-the-secret"), 401);
    assert!(
        configmaps.get_opt("vixen-push").await.unwrap().is_none(),
        "a forged webhook wrote the push signal"
    );
    // Verified: the standby records it, and the leader (which polls Git hourly) starts at once.
    let sent = Instant::now();
    assert_eq!(b.github_push(&second, HOOK_SECRET), 202);
    let signal = configmaps.get("vixen-push").await.unwrap().data.unwrap();
    assert_eq!(
        (signal["revision"].as_str(), signal["receivedBy"].as_str()),
        (second.as_str(), "vixen-b")
    );
    until(
        "the leader to start on the pushed commit",
        15,
        why,
        || async {
            status(&clusters)
                .await
                .filter(|s| s.revision.as_deref() == Some(second.as_str()))
        },
    )
    .await;
    let picked_up = sent.elapsed();
    println!(
        "BENCH webhook on the standby -> the leader's VixenCluster status names the new commit: {} ms",
        picked_up.as_millis()
    );
    assert!(picked_up < Duration::from_secs(10), "{picked_up:?}");

    // The leader dies in the middle of the upgrade (SIGKILL: no Lease release).
    let upgrading = until("the first Upgrade call", 60, why, || async {
        calls(&lab_dir)
            .into_iter()
            .skip(mark)
            .find(|c| short(c) == "Upgrade")
    })
    .await;
    assert_eq!(upgrading.client.as_deref(), Some("vixen-a"));
    let mut a = a;
    a.child.0.kill().unwrap();
    a.child.0.wait().unwrap();
    let killed_at = calls(&lab_dir).len();
    let why = || tails(&[&a, &b]);
    let took = until(
        "the standby to take the Lease",
        LEASE_SECONDS * 3,
        why,
        || async { holder(&leases).await.filter(|(h, _)| h == "vixen-b") },
    )
    .await;
    assert_eq!(took.1, 1, "one transition");

    // The new leader resumes from the journal and carries the rollout to the end.
    let st = until("the second commit applied", 240, why, || async {
        status(&clusters)
            .await
            .filter(|s| s.last_applied_revision.as_deref() == Some(second.as_str()))
    })
    .await;
    assert_eq!(st.leader.as_deref(), Some("vixen-b"));
    assert!(
        st.nodes.iter().all(|n| is(&n.version, "1.12.2")),
        "{:?}",
        st.nodes
    );
    let lab: Value =
        serde_json::from_slice(&std::fs::read(lab_dir.join("lab.json")).unwrap()).unwrap();
    for n in lab["nodes"].as_array().unwrap() {
        assert_eq!(
            (n["talos_version"].as_str(), n["mode"].as_str()),
            (Some("v1.12.2"), Some("configured")),
            "{n}"
        );
    }
    let all: Vec<CallRecord> = calls(&lab_dir).into_iter().skip(mark).collect();
    // No node was upgraded twice across the handover.
    for n in ["cp-1", "cp-2", "cp-3", "worker-1", "worker-2"] {
        assert_eq!(
            all.iter()
                .filter(|c| c.node == n && short(c) == "Upgrade")
                .count(),
            1,
            "Upgrade calls to {n}"
        );
    }
    // Only the leader's calls: vixen-a's all come before vixen-b's first, none after the kill.
    let first_b = all
        .iter()
        .position(|c| c.client.as_deref() == Some("vixen-b"))
        .expect("the new leader made calls");
    assert!(
        all[first_b..]
            .iter()
            .all(|c| c.client.as_deref() != Some("vixen-a")),
        "vixen-a called after vixen-b started"
    );
    assert!(
        first_b + mark >= killed_at,
        "vixen-b called a node while vixen-a led"
    );
    assert!(
        all.iter()
            .any(|c| c.client.as_deref() == Some("vixen-b") && short(c) == "Upgrade"),
        "the new leader upgraded the remaining nodes"
    );
    // The pool moved, still under field manager vixen.
    let default = pools.get("default").await.unwrap();
    assert!(
        default.data["spec"]
            .to_string()
            .contains(&format!("127.{K}.31.0/28")),
        "{:?}",
        default.data
    );
    assert!(applied_by_vixen(&default));
    // An invalid commit (a 4th control plane, an even count). The fault: the reason stops at a
    // header line or names the agent's checkout folder. The first problem, `file:line:col:
    // message (fix: ...)`, must reach the VixenCluster message and its Stalled condition, the
    // Event, and `vixen status`, with no local path.
    std::fs::write(
        remote.work.join("nodes/cp-4.yaml"),
        format!(
            "name: cp-4\nrole: controlplane\nmaintenanceAddress: 127.{K}.10.14\n\
             installDisk: /dev/sda\ninterfaces:\n  - name: eth0\n    addresses: [127.{K}.10.9/24]\n"
        ),
    )
    .unwrap();
    let bad = remote.commit(&[], "a 4th control plane", None);
    assert_eq!(b.github_push(&bad, HOOK_SECRET), 202);
    let reason = "nodes/cp-4.yaml:2:7: 4 control planes";
    let st_bad = until("the invalid commit reported", 60, why, || async {
        status(&clusters)
            .await
            .filter(|s| s.revision.as_deref() == Some(bad.as_str()) && s.phase == "Failed")
    })
    .await;
    assert!(st_bad.message.contains(reason), "{}", st_bad.message);
    assert!(st_bad.message.contains("(fix: "), "{}", st_bad.message);
    assert!(
        st_bad
            .conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True" && c.message.contains(reason)),
        "{:?}",
        st_bad.conditions
    );
    let notes: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("InvalidRepo"))
        .filter_map(|e| e.note)
        .collect();
    assert!(notes.iter().any(|n| n.contains(reason)), "{notes:?}");
    let shown = vixen()
        .args(["status", "--namespace", NS])
        .env("KUBECONFIG", dir.join("out/kubeconfig"))
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(shown.contains(reason), "vixen status:\n{shown}");
    for text in [&st_bad.message, &shown, &notes.join("\n")] {
        for leak in ["/tmp", "checkouts", &dir.to_string_lossy()] {
            assert!(!text.contains(leak), "{leak} in {text}");
        }
    }
    // Scheduled backups to the S3 peer, credentials from the Secret `vixen-backup` (the one
    // Secret the Role lets the agent read). Fault: the Secret does not exist at the first
    // scheduled time: status.lastBackup and a SnapshotFailed Event name it and the fix. Once it
    // exists, the next scheduled time stores an age-encrypted snapshot in the bucket, and
    // status.lastBackup and a SnapshotStored Event say so.
    std::fs::remove_file(remote.work.join("nodes/cp-4.yaml")).unwrap();
    let s3 = common::s3::S3Peer::start(&format!("127.{K}.50.1"), "etcd-backups");
    let cluster_yaml = remote.work.join("cluster.yaml");
    let mut text = std::fs::read_to_string(&cluster_yaml).unwrap();
    text.push_str(&format!(
        "backup:\n  schedule: \"* * * * *\"\n  beforeRisky: off\n  target:\n    s3:\n      \
         endpoint: {}\n      bucket: etcd-backups\n      prefix: clusters\n      \
         pathStyle: true\n      credentials:\n        secret: vixen-backup\n",
        s3.endpoint
    ));
    std::fs::write(&cluster_yaml, text).unwrap();
    let third = remote.commit(&[], "scheduled etcd backups", None);
    assert_eq!(b.github_push(&third, HOOK_SECRET), 202);
    let failed = until("a failed scheduled snapshot", 100, why, || async {
        status(&clusters)
            .await
            .and_then(|s| s.last_backup)
            .filter(|b| b.result == "Failed")
    })
    .await;
    let error = failed.error.clone().unwrap_or_default();
    assert!(
        error.contains("vixen-backup") && error.contains("fix: "),
        "{failed:?}"
    );
    let snapshot_notes = |reason: &'static str| {
        let events = events.clone();
        async move {
            events
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some(reason))
                .filter_map(|e| e.note)
                .collect::<Vec<String>>()
        }
    };
    assert!(
        snapshot_notes("SnapshotFailed")
            .await
            .iter()
            .any(|n| n.contains("vixen-backup")),
        "{:?}",
        snapshot_notes("SnapshotFailed").await
    );
    assert!(s3.keys("etcd-backups", "clusters/").is_empty());
    create(
        &Api::<k8s_openapi::api::core::v1::Secret>::namespaced(admin.clone(), NS),
        json!({ "metadata": { "name": "vixen-backup" }, "stringData": {
            "accessKeyId": common::s3::ACCESS_KEY, "secretAccessKey": common::s3::SECRET_KEY } }),
    )
    .await;
    let stored = until("a stored scheduled snapshot", 100, why, || async {
        status(&clusters)
            .await
            .and_then(|s| s.last_backup)
            .filter(|b| b.result == "Stored")
    })
    .await;
    assert_eq!(stored.reason, "scheduled", "{stored:?}");
    let keys = s3.keys("etcd-backups", "clusters/homelab/");
    let data: Vec<&String> = keys.iter().filter(|k| k.ends_with(".db.age")).collect();
    assert_eq!(data.len(), 1, "{keys:?}");
    assert_eq!(stored.key.as_deref(), Some(data[0].as_str()), "{keys:?}");
    let (code, cipher) = s3.curl(&[&format!("/etcd-backups/{}", data[0])]);
    assert_eq!(code, 200);
    assert!(common::s3::decrypt_and_status(&cipher, dir) > 0);
    assert!(
        snapshot_notes("SnapshotStored")
            .await
            .iter()
            .any(|n| n.contains(data[0].as_str())),
        "{:?}",
        snapshot_notes("SnapshotStored").await
    );

    // Both leaders reported their steps; no Event, log or status carries a secret.
    let evs = step_events(&events).await;
    assert!(
        evs.iter()
            .any(|e| e.reporting_instance.as_deref() == Some("vixen-b")
                && e.action.as_deref() == Some("Upgrade")),
        "{evs:#?}"
    );
    assert!(
        evs.iter()
            .any(|e| e.reporting_instance.as_deref() == Some("vixen-a")
                && e.action.as_deref() == Some("Upgrade"))
    );
    let age_key = std::fs::read_to_string(example().join("demo.agekey")).unwrap();
    let age_key = age_key
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY"))
        .unwrap();
    let texts = [
        serde_json::to_string(&evs).unwrap(),
        serde_json::to_string(&st).unwrap(),
        a.logs(),
        b.logs(),
    ];
    let all_events =
        serde_json::to_string(&events.list(&ListParams::default()).await.unwrap().items).unwrap();
    let last = serde_json::to_string(&status(&clusters).await).unwrap();
    let texts = [texts.as_slice(), &[all_events, last]].concat();
    for secret in [
        HOOK_SECRET,
        GIT_PASSWORD,
        token.as_str(),
        age_key,
        common::s3::SECRET_KEY,
    ] {
        assert!(texts.iter().all(|t| !t.contains(secret)), "a secret leaked");
    }
}
