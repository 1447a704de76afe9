//! An install that starts: `vixen bootstrap --install-repo URL` with only the age key given (a
//! public repo behind `git http-backend`, no Git token, no forge token), on a `--kube` lab (real
//! etcd, the upstream kube-apiserver). Then the agent is run as the kubelet would run the
//! Deployment bootstrap applied: its exact args with `$(VAR)` expanded from `vixen-config` and
//! the pod's env, each volume mounted from what the API server holds (a Secret volume from its
//! Secret, an optional one left empty when the Secret does not exist, as the kubelet does), and
//! the `vixen` ServiceAccount's token. Only the listen address moves to this test's loopback
//! range.
//!
//! Faults covered: the talos.dev ServiceAccount API is not served at first (the lab's Talos has
//! not applied its manifests yet: fault `talos-api-access-pending`), and no `vixen-git` /
//! `vixen-forge` Secret exists. Everything is observed through the API server, the lab's
//! calls.jsonl and lab.json, not through vixen's report.

mod common;
#[path = "../../crates/git/tests/e2e/fixture.rs"]
#[allow(dead_code)]
mod fixture;
#[path = "../../crates/git/tests/e2e/http_server.rs"]
#[allow(dead_code)]
mod http_server;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::lab::rewrite_all;
use common::{copy_dir, example};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use vixen_k8s::VixenCluster;
use vixen_lab::CallRecord;

const K: u8 = 155;
const NS: &str = "vixen-system";

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

struct Lab(PathBuf);

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = vixen().args(["lab", "down", "--dir"]).arg(&self.0).output();
    }
}

/// Polls `f` every 200 ms until it gives `Some`, or panics after `secs` with `why()`.
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
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Expands `$(VAR)` as the kubelet does: a defined variable is replaced, any other reference
/// is left as written.
fn expand(arg: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(i) = rest.find("$(") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match after.find(')') {
            Some(j) if env.contains_key(&after[..j]) => {
                out.push_str(&env[&after[..j]]);
                rest = &after[j + 1..];
            }
            _ => {
                out.push_str("$(");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The pod of `deploy` on this machine: its args (mount paths mapped into `root`) and env.
async fn pod(
    admin: &kube::Client,
    deploy: &Deployment,
    root: &Path,
    listen: &str,
) -> (Vec<String>, BTreeMap<String, String>) {
    let spec = deploy
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let c = &spec.containers[0];
    let mut env = BTreeMap::new();
    for from in c.env_from.iter().flatten() {
        let name = from.config_map_ref.as_ref().unwrap().name.clone();
        let cm: ConfigMap = Api::namespaced(admin.clone(), NS).get(&name).await.unwrap();
        env.extend(cm.data.unwrap_or_default());
    }
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => match from.field_ref.as_ref().unwrap().field_path.as_str() {
                "metadata.name" => "vixen-7d9f-abcde".to_owned(),
                "metadata.namespace" => NS.to_owned(),
                other => panic!("unexpected fieldRef {other}"),
            },
            _ => String::new(),
        };
        env.insert(e.name.clone(), value);
    }
    // Volumes as the kubelet mounts them.
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NS);
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let v = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == m.name)
            .unwrap();
        let local = root.join(&m.name);
        std::fs::create_dir_all(&local).unwrap();
        if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap();
            match secrets.get_opt(&name).await.unwrap() {
                Some(secret) => {
                    for (k, bytes) in secret.data.unwrap_or_default() {
                        std::fs::write(local.join(k), bytes.0).unwrap();
                    }
                }
                None => assert!(
                    s.optional == Some(true),
                    "the pod would not start: Secret {name} does not exist and its volume is not optional"
                ),
            }
        }
        mounts.push((m.mount_path.clone(), local));
    }
    mounts.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    let args = c
        .args
        .iter()
        .flatten()
        .map(|a| {
            let a = expand(a, &env);
            if a.starts_with("--listen=") {
                return format!("--listen={listen}");
            }
            match a.split_once('=') {
                Some((flag, value)) => {
                    let mapped = mounts.iter().find_map(|(p, local)| {
                        value
                            .strip_prefix(p.as_str())
                            .map(|rest| format!("{}{rest}", local.display()))
                    });
                    format!("{flag}={}", mapped.unwrap_or_else(|| value.to_owned()))
                }
                None => a,
            }
        })
        .collect();
    (args, env)
}

/// A kubeconfig authenticating as `sa` with a bound token, as the pod's mounted token would.
async fn service_account_kubeconfig(admin: &kube::Client, admin_text: &str, sa: &str) -> String {
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), NS)
        .create_token_request(sa, &PostParams::default(), &req)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let kc = kube::config::Kubeconfig::from_yaml(admin_text).unwrap();
    let cluster = kc.clusters[0].cluster.clone().unwrap();
    serde_yaml_ng::to_string(&json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "pod",
        "clusters": [{ "name": "lab", "cluster": { "server": cluster.server, "certificate-authority-data": cluster.certificate_authority_data } }],
        "users": [{ "name": "pod", "user": { "token": token } }],
        "contexts": [{ "name": "pod", "context": { "cluster": "lab", "user": "pod", "namespace": NS } }],
    }))
    .unwrap()
}

/// What a CNI install brings: Cilium's CRDs (pinned by tests/peers/build.sh).
async fn cilium_crds(admin: &kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    let dir = vixen_lab::peers::cilium_crds().expect("Cilium CRDs (tests/peers/build.sh)");
    for f in [
        "ciliumloadbalancerippools.yaml",
        "ciliuml2announcementpolicies.yaml",
    ] {
        let crd: CustomResourceDefinition =
            serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap();
        match crds.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("{e}"),
        }
    }
}

fn ready(addr: &str) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_install_repo_with_only_the_age_key_starts_an_agent_that_converges() {
    let test = "bootstrap_install_repo_with_only_the_age_key_starts_an_agent_that_converges";
    if vixen_lab::peers::for_test("kube-apiserver", test).is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    // A public repo: the homelab example on 127.155.x.x, the age key kept out of Git.
    let remote = fixture::Remote::new();
    copy_dir(&example(), &remote.work);
    std::fs::remove_file(remote.work.join("demo.agekey")).unwrap();
    rewrite_all(&remote.work, "127.0.", &format!("127.{K}."));
    let cluster = remote.work.join("cluster.yaml");
    let text = std::fs::read_to_string(&cluster).unwrap();
    assert!(text.contains("stabilization: 30s"));
    std::fs::write(
        &cluster,
        text.replace("stabilization: 30s", "stabilization: 0s"),
    )
    .unwrap();
    let first = remote.commit(&[], "homelab", None);
    let git = http_server::GitHttpServer::start_public(
        &format!("127.{K}.0.1"),
        remote.bare.parent().unwrap(),
    );
    let url = git.url("repo.git");

    let lab_dir = dir.join("lab");
    ok(vixen()
        .args(["lab", "up", "--kube", "--reboot-ms", "200", "--die-with"])
        .arg(std::process::id().to_string())
        .arg("--repo")
        .arg(&remote.work)
        .arg("--dir")
        .arg(&lab_dir));
    let _lab = Lab(lab_dir.clone());
    // The fault: cp-1's Talos has not applied its Kubernetes manifests yet, so the talos.dev
    // ServiceAccount kind is not served when bootstrap installs vixen.
    ok(vixen()
        .args(["lab", "fault", "--dir"])
        .arg(&lab_dir)
        .args(["cp-1", "talos-api-access-pending"]));

    let (out_file, err_file) = (dir.join("bootstrap.out"), dir.join("bootstrap.err"));
    let mut boot = common::KillOnDrop(
        vixen()
            .args(["bootstrap", "--timeout", "60", "--repo"])
            .arg(&remote.work)
            .arg("--lab")
            .arg(&lab_dir)
            .arg("--out")
            .arg(dir.join("out"))
            .args(["--install-repo", &url, "--api-timeout", "180"])
            .args(["--talos-api-timeout", "600"])
            .stdout(std::fs::File::create(&out_file).unwrap())
            .stderr(std::fs::File::create(&err_file).unwrap())
            .spawn()
            .unwrap(),
    );
    let why = || {
        format!(
            "{}{}",
            common::tail(&out_file, 30),
            common::tail(&err_file, 30)
        )
    };

    // An admin kubeconfig, as `talosctl kubeconfig` gets it, once the API answers.
    let kc_path = dir.join("admin.kubeconfig");
    let admin_text = until("an admin kubeconfig", 180, why, || async {
        let out = vixen()
            .args(["kubeconfig", "--force", "--out"])
            .arg(&kc_path)
            .arg("--repo")
            .arg(&remote.work)
            .arg("--lab")
            .arg(&lab_dir)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| std::fs::read_to_string(&kc_path).ok())?
    })
    .await;
    let admin = common::kubeapi::from_kubeconfig(&admin_text).await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), NS);
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    until("the Deployment applied", 240, why, || async {
        deployments.get_opt("vixen").await.ok().flatten()
    })
    .await;
    assert!(
        crds.get_opt("serviceaccounts.talos.dev")
            .await
            .unwrap()
            .is_none(),
        "the fault did not hold: the talos.dev kind is served already"
    );
    assert!(
        boot.0.try_wait().unwrap().is_none(),
        "bootstrap gave up instead of waiting for the talos.dev ServiceAccount{}",
        why()
    );
    // Talos applies its manifests now; bootstrap applies the ServiceAccount and finishes.
    ok(vixen()
        .args(["lab", "fault", "--dir"])
        .arg(&lab_dir)
        .args(["cp-1", "talos-api-access-ready"]));
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(s) = boot.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "bootstrap did not finish{}",
            why()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (stdout, stderr) = (
        std::fs::read_to_string(&out_file).unwrap(),
        std::fs::read_to_string(&err_file).unwrap(),
    );
    assert!(status.success(), "bootstrap failed{}", why());
    assert!(!stdout.contains("every change is a git push"), "{stdout}");
    assert!(stdout.contains("commit statuses: off"), "{stdout}");
    let age_key = std::fs::read_to_string(example().join("demo.agekey")).unwrap();
    let age_line = age_key
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap();
    assert!(!stdout.contains(age_line) && !stderr.contains(age_line));

    // What the API server holds: vixen-config points at the repo with no placeholder left,
    // only vixen-age was created of vixen's Secrets, and Talos answered the ServiceAccount.
    let cm: ConfigMap = Api::namespaced(admin.clone(), NS)
        .get("vixen-config")
        .await
        .unwrap();
    let data = cm.data.unwrap();
    assert_eq!(data["VIXEN_REPO"], url);
    assert_eq!(data["VIXEN_FORGE"], "", "an unknown forge is none");
    assert!(
        data.values().all(|v| !v.contains("OWNER")),
        "a placeholder was left in vixen-config: {data:?}"
    );
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NS);
    for (name, exists) in [
        ("vixen-age", true),
        ("vixen-talos", true),
        ("vixen-git", false),
        ("vixen-forge", false),
    ] {
        assert_eq!(
            secrets.get_opt(name).await.unwrap().is_some(),
            exists,
            "Secret {name}"
        );
    }

    // The pod, as the kubelet would run it.
    cilium_crds(&admin).await;
    let deploy = deployments.get("vixen").await.unwrap();
    let listen = {
        let l = std::net::TcpListener::bind((format!("127.{K}.0.2").as_str(), 0)).unwrap();
        l.local_addr().unwrap().to_string()
    };
    let (args, env) = pod(&admin, &deploy, &dir.join("pod"), &listen).await;
    assert!(
        args.iter().all(|a| !a.contains("$(")),
        "unexpanded args {args:?}"
    );
    let sa = deploy
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .service_account_name
        .clone()
        .unwrap();
    std::fs::write(
        dir.join("pod.kubeconfig"),
        service_account_kubeconfig(&admin, &admin_text, &sa).await,
    )
    .unwrap();
    let log = dir.join("agent.log");
    let mark = CallRecord::load_all(&lab_dir).unwrap_or_default().len();
    let _agent = common::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_vixen"))
            .args(&args)
            .env_clear()
            .envs(&env)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir.join("pod/home"))
            .env("KUBECONFIG", dir.join("pod.kubeconfig"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let why = || common::tail(&log, 30);
    until("/readyz to answer 200", 120, why, || async {
        ready(&listen).then_some(())
    })
    .await;
    let clusters: Api<VixenCluster> = Api::namespaced(admin.clone(), NS);
    let st = until("the commit applied", 300, why, || async {
        clusters
            .get("homelab")
            .await
            .ok()?
            .status
            .filter(|s| s.last_applied_revision.as_deref() == Some(first.as_str()))
    })
    .await;
    assert_eq!(st.phase, "Ready", "{st:?}");

    // The lab: every node configured, the four that waited in maintenance mode joined, and the
    // calls to configured nodes came with the certificate from Talos' Secret (CN talos-sa).
    let lab: Value =
        serde_json::from_slice(&std::fs::read(lab_dir.join("lab.json")).unwrap()).unwrap();
    for n in lab["nodes"].as_array().unwrap() {
        assert_eq!(n["mode"].as_str(), Some("configured"), "{n}");
    }
    let calls: Vec<CallRecord> = CallRecord::load_all(&lab_dir)
        .unwrap_or_default()
        .into_iter()
        .skip(mark)
        .collect();
    let short = |c: &CallRecord| c.method.rsplit('/').next().unwrap_or(&c.method).to_owned();
    let joined: std::collections::BTreeSet<&str> = calls
        .iter()
        .filter(|c| short(c) == "ApplyConfiguration" && c.result == "ok")
        .map(|c| c.node.as_str())
        .collect();
    for n in ["cp-2", "cp-3", "worker-1", "worker-2"] {
        assert!(joined.contains(n), "{n} not joined: {joined:?}");
    }
    let callers: std::collections::BTreeSet<&str> =
        calls.iter().filter_map(|c| c.client.as_deref()).collect();
    assert_eq!(callers, ["talos-sa"].into(), "callers of the agent");
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(!logs.contains(age_line), "the age key in the agent's log");
}
