//! The platform layer from the same Git repo (issue 17), end to end on a `--kube` lab (real etcd,
//! the upstream kube-apiserver) with Flux's own controllers (source-controller and
//! kustomize-controller v1.9.6, built from their Go modules by tests/peers/build.sh) running as
//! local processes against the lab's API, and the repo served by `git http-backend`:
//!
//! 1. `vixen bootstrap` brings the first control plane up with the example's Cilium from Talos'
//!    inline manifests; `vixen agent --once` takes Cilium over (server-side apply), applies the
//!    SOPS-encrypted addon decrypted, installs Flux from its manifests in Git, points a
//!    Kustomization at `apps/` and hands it the age key.
//! 2. kustomize-controller applies the apps path, decrypting its SOPS Secret with that key; the
//!    test reads the Secret back through the API server, and vixen's status says "Flux: Ready,
//!    apps at main@sha1:<commit>".
//! 3. A Cilium change in Git is applied (an object that left Git is pruned) with no node rebooted,
//!    reset or upgraded (the lab's calls.jsonl). `vixen plan` names the change and the prune
//!    first (server-side dry runs) and changes nothing.
//!
//! Faults covered: Flux's CRDs do not exist when vixen first applies the handover (the kinds are
//! not served until the same apply has created them); the `flux-system/sops-age` Secret is
//! deleted behind vixen's back (the next reconcile puts it back). Everything is observed through
//! the API server and the lab's calls.jsonl.

mod common;
#[path = "../../crates/git/tests/e2e/fixture.rs"]
#[allow(dead_code)]
mod fixture;
#[path = "../../crates/git/tests/e2e/http_server.rs"]
#[allow(dead_code)]
mod http_server;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::KillOnDrop;
use common::kubeapi::{client, runtime};
use common::lab::Lab;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind};
use serde_json::Value;

const K: u8 = 201;

/// Flux's `flux install --export` as the test's stand-in: the namespace and Flux's real CRDs
/// (the controllers run as local processes, so their Deployments are left out).
fn flux_install(crds: &Path) -> String {
    let mut files: Vec<_> = std::fs::read_dir(crds)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: flux-system\n  labels:\n    app.kubernetes.io/part-of: flux\n",
    );
    for f in files {
        out.push_str("---\n");
        out.push_str(&std::fs::read_to_string(f).unwrap());
    }
    out
}

/// `vixen agent --once` with info logs: its output (the reconcile's summary is in it).
#[track_caller]
fn agent_once(lab: &Lab) -> String {
    let mut args: Vec<String> = vec![
        "agent".into(),
        "--once".into(),
        "--ready-timeout".into(),
        "60".into(),
    ];
    args.extend(lab.target());
    let out = Command::new(env!("CARGO_BIN_EXE_vixen"))
        .args(&args)
        .env("SOPS_AGE_KEY_FILE", common::example().join("demo.agekey"))
        .env("VIXEN_LOG", "info")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "agent --once: {text}");
    text
}

/// A Flux controller as a local process against the lab's API (admin kubeconfig), its
/// addresses on this test's loopback range, logging to `log`.
fn controller(bin: &Path, kubeconfig: &Path, log: &Path, args: &[String]) -> KillOnDrop {
    let log = std::fs::File::create(log).unwrap();
    KillOnDrop(
        Command::new(bin)
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUNTIME_NAMESPACE", "flux-system")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn git(dir: &Path, args: &[&str]) {
    let out = fixture::git(dir).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn flux_handover_applies_the_apps_path_with_the_age_key_vixen_injected() {
    let test = "flux_handover_applies_the_apps_path_with_the_age_key_vixen_injected";
    if vixen_lab::peers::for_test("kube-apiserver", test).is_none() {
        return;
    }
    let Some(source_bin) = vixen_lab::peers::for_test("flux-source-controller", test) else {
        return;
    };
    let Some(kustomize_bin) = vixen_lab::peers::for_test("flux-kustomize-controller", test) else {
        return;
    };
    let crds = vixen_lab::peers::share("flux-crds").expect("build.sh copies Flux's CRDs");
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("srv");
    std::fs::create_dir_all(&served).unwrap();
    let git_ip = format!("127.{K}.3.1");
    let http = http_server::GitHttpServer::start_public(&git_ip, &served);
    let url = http.url("cluster.git");

    let lab = Lab::start_full(
        K,
        &["--kube"],
        |lab| {
            let r = &lab.repo;
            std::fs::create_dir_all(r.join("flux")).unwrap();
            std::fs::write(r.join("flux/gotk-components.yaml"), flux_install(&crds)).unwrap();
            std::fs::create_dir_all(r.join("addons")).unwrap();
            let addon = common::sops_encrypt(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: backup-credentials\n  namespace: kube-system\nstringData:\n  token: addon-token-5150\n",
                r,
                Some("^(data|stringData)$"),
            );
            std::fs::write(r.join("addons/backup.sops.yaml"), addon).unwrap();
            std::fs::create_dir_all(r.join("apps")).unwrap();
            std::fs::write(
                r.join("apps/namespace.yaml"),
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n",
            )
            .unwrap();
            let secret = common::sops_encrypt(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: demo\nstringData:\n  password: hunter2-from-git\n",
                r,
                Some("^(data|stringData)$"),
            );
            std::fs::write(r.join("apps/db.sops.yaml"), secret).unwrap();
            let cluster = r.join("cluster.yaml");
            let mut text = std::fs::read_to_string(&cluster).unwrap();
            text.push_str(&format!(
                "addons:\n  - addons/backup.sops.yaml\n\
                 gitops:\n  tool: flux\n  manifests:\n    - flux/gotk-components.yaml\n  url: {url}\n  path: apps\n  interval: 5s\n"
            ));
            std::fs::write(&cluster, text).unwrap();
        },
        |_| {},
    );
    // The repo is also the Git repository Flux pulls (its apps/ path).
    git(&lab.repo, &["init", "-q", "-b", "main"]);
    git(&lab.repo, &["add", "-A"]);
    git(&lab.repo, &["commit", "-q", "-m", "cluster"]);
    let bare = served.join("cluster.git");
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            "--bare",
            lab.repo.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    let head = String::from_utf8(
        fixture::git(&lab.repo)
            .args(["rev-parse", "HEAD"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();

    lab.bootstrap();
    let rt = runtime();
    let admin = client(&lab, &rt, 1);
    // Talos (the lab) creates Cilium's objects from the inline manifests once its API answers
    // (its manifest controller runs on its own, so the test waits for it).
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "kube-system");
    let deadline = Instant::now() + Duration::from_secs(60);
    let cilium = loop {
        if let Some(cm) = rt.block_on(cms.get_opt("cilium-config")).unwrap() {
            break cm;
        }
        assert!(
            Instant::now() < deadline,
            "Talos never created cilium-config"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        cilium
            .metadata
            .managed_fields
            .unwrap_or_default()
            .iter()
            .any(|m| m.manager.as_deref() == Some("talos")),
        "cilium-config was not created by Talos' inline manifests"
    );

    // First reconcile: every node configured, Cilium taken over, the addon, Flux installed.
    let first = agent_once(&lab);
    assert!(first.contains("cni: 7 applied"), "{first}");
    assert!(first.contains("addons: 1 applied"), "{first}");
    assert!(first.contains("Flux: apps not reconciled yet"), "{first}");
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "kube-system");
    let addon = rt.block_on(secrets.get("backup-credentials")).unwrap();
    assert_eq!(
        addon.data.unwrap()["token"].0,
        b"addon-token-5150",
        "the addon was not decrypted before it was applied"
    );
    let flux_secrets: Api<Secret> = Api::namespaced(admin.clone(), "flux-system");
    let handed = rt.block_on(flux_secrets.get("sops-age")).unwrap();
    let key = std::fs::read_to_string(common::example().join("demo.agekey")).unwrap();
    let key_line = key
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap();
    assert_eq!(
        String::from_utf8(handed.data.unwrap()["age.agekey"].0.clone())
            .unwrap()
            .trim(),
        key_line
    );

    // Flux's controllers, as the Deployments of flux install would run them.
    let kubeconfig = lab.lab.join("kubeconfig");
    let flux_ip = format!("127.{K}.3.2");
    let storage = format!("{flux_ip}:{}", free_port(&flux_ip));
    let addr = |p: &str| format!("--{p}={flux_ip}:{}", free_port(&flux_ip));
    let source_log = tmp.path().join("source-controller.log");
    std::fs::create_dir_all(tmp.path().join("storage")).unwrap();
    let kustomize_log = tmp.path().join("kustomize-controller.log");
    let _source = controller(
        &source_bin,
        &kubeconfig,
        &source_log,
        &[
            "--enable-leader-election=false".into(),
            format!("--storage-path={}", tmp.path().join("storage").display()),
            format!("--storage-addr={storage}"),
            format!("--storage-adv-addr={storage}"),
            addr("metrics-addr"),
            addr("health-addr"),
            "--watch-all-namespaces=true".into(),
        ],
    );
    let _kustomize = controller(
        &kustomize_bin,
        &kubeconfig,
        &kustomize_log,
        &[
            "--enable-leader-election=false".into(),
            addr("metrics-addr"),
            addr("health-addr"),
            "--watch-all-namespaces=true".into(),
        ],
    );
    let why = || {
        format!(
            "{}{}",
            common::tail(&source_log, 20),
            common::tail(&kustomize_log, 20)
        )
    };

    // kustomize-controller applies apps/, decrypting the Secret with the key vixen handed over.
    let ks = Api::<DynamicObject>::namespaced_with(
        admin.clone(),
        "flux-system",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("kustomize.toolkit.fluxcd.io", "v1", "Kustomization"),
            "kustomizations",
        ),
    );
    let demo: Api<Secret> = Api::namespaced(admin.clone(), "demo");
    let deadline = Instant::now() + Duration::from_secs(180);
    let password = loop {
        if let Ok(Some(s)) = rt.block_on(demo.get_opt("db")) {
            break s.data.unwrap()["password"].0.clone();
        }
        assert!(
            Instant::now() < deadline,
            "Flux never applied apps/db.sops.yaml{}",
            why()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(password, b"hunter2-from-git");
    // The Secret lands before kustomize-controller finishes its drift check and marks the
    // Kustomization Ready; wait for Ready as `flux get kustomizations` would show it.
    let k = loop {
        let k = serde_json::to_value(rt.block_on(ks.get("apps")).unwrap()).unwrap();
        let ready = k["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned())
            .unwrap_or(Value::Null);
        if ready["status"] == "True" {
            break k;
        }
        assert!(
            Instant::now() < deadline,
            "Flux never marked apps Ready: {k:#}{}",
            why()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        k["status"]["lastAppliedRevision"],
        format!("main@sha1:{head}")
    );

    // The fault: the age key Secret is deleted behind vixen's back; vixen reports Flux Ready
    // at the commit Flux applied, and puts the Secret back.
    rt.block_on(flux_secrets.delete("sops-age", &DeleteParams::default()))
        .unwrap();
    // `vixen plan` sees it: nothing in Git changed, so the only change is the Secret's return.
    let plan = lab.run(&["plan", "--detailed-exitcode"]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        text.contains("no changes: the cluster matches Git")
            && text.contains("gitops: 1 to create (Secret flux-system/sops-age)"),
        "{text}"
    );
    assert_eq!(plan.status.code(), Some(2), "{text}");
    let mark = lab.mark();
    let second = agent_once(&lab);
    assert!(
        second.contains(&format!("Flux: Ready, apps at main@sha1:{head}")),
        "{second}"
    );
    assert!(
        rt.block_on(flux_secrets.get_opt("sops-age"))
            .unwrap()
            .is_some()
    );

    // A Cilium change: a value changes and the ServiceAccount leaves Git.
    let manifest = lab.repo.join("platform/cilium.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let docs: Vec<&str> = text.splitn(3, "---\n").collect();
    assert!(docs[1].contains("kind: ServiceAccount"), "{text}");
    let changed = docs[2].replace(
        "kube-proxy-replacement: \"true\"",
        "kube-proxy-replacement: \"true\"\n  debug: \"true\"",
    );
    assert_ne!(changed, docs[2]);
    std::fs::write(&manifest, format!("{}---\n{changed}", docs[0])).unwrap();
    // A reviewer's `vixen plan` names the change and the prune before anything is applied
    // (server-side dry runs), exits 2 for "changes", and writes nothing.
    let plan = lab.run(&["plan", "--detailed-exitcode"]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert_eq!(
        plan.status.code(),
        Some(2),
        "{text}{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    assert!(
        text.contains(
            "cni: 1 to change (ConfigMap kube-system/cilium-config), \
             1 to prune (ServiceAccount kube-system/cilium), 5 unchanged"
        ),
        "{text}"
    );
    assert!(text.contains("addons: no changes (1 unchanged)"), "{text}");
    assert!(text.contains("gitops: no changes"), "{text}");
    let cm = rt.block_on(cms.get("cilium-config")).unwrap();
    assert!(
        !cm.data.unwrap().contains_key("debug"),
        "plan applied the change"
    );
    let third = agent_once(&lab);
    assert!(third.contains("cni: 6 applied, 1 pruned"), "{third}");
    let cm = rt.block_on(cms.get("cilium-config")).unwrap();
    assert_eq!(cm.data.unwrap()["debug"], "true");
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(admin.clone(), "kube-system");
    assert!(
        rt.block_on(sas.get_opt("cilium")).unwrap().is_none(),
        "the ServiceAccount that left Git was not pruned"
    );
    let plan = lab.run(&["plan", "--detailed-exitcode"]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(text.contains("cni: no changes (6 unchanged)"), "{text}");
    assert_eq!(plan.status.code(), Some(0), "{text}");
    // No node was disrupted by any of it.
    for c in lab.calls().into_iter().skip(mark) {
        let disrupts = matches!(c.short(), "Reboot" | "Reset" | "Upgrade" | "Bootstrap")
            || (c.short() == "ApplyConfiguration" && c.detail["mode"] == "reboot");
        assert!(
            !disrupts,
            "a node was disrupted: {} {} {}",
            c.node, c.method, c.detail
        );
    }
    // Flux's own objects (what it deployed) carry no vixen label: vixen does not own them.
    let ns = rt
        .block_on(Api::<k8s_openapi::api::core::v1::Namespace>::all(admin.clone()).get("demo"))
        .unwrap();
    assert!(
        !ns.metadata
            .labels
            .unwrap_or_default()
            .contains_key("vixen.dev/set"),
        "vixen labelled what Flux deployed"
    );
}

/// Argo CD's handover: its real install manifests (v3.5.8's `manifests/install.yaml`, written
/// for `kubectl apply -n argocd`), the repository Secret, the root Application and the age key
/// go into the API server; Argo CD itself does not run here, so vixen reports the Application
/// as not reconciled yet. Fault covered: an object the user added to the `argocd` namespace by
/// hand (no vixen labels) survives the prune when an install object leaves Git.
#[test]
fn argo_cd_handover_applies_its_install_the_root_application_and_the_age_key() {
    let test = "argo_cd_handover_applies_its_install_the_root_application_and_the_age_key";
    if vixen_lab::peers::for_test("kube-apiserver", test).is_none() {
        return;
    }
    let argocd = vixen_lab::peers::share("argocd");
    if argocd.is_none() {
        assert!(
            !vixen_lab::peers::required(),
            "{test}: Argo CD's manifests are missing: run tests/peers/build.sh"
        );
        return;
    }
    let install = argocd.unwrap().join("install.yaml");
    let lab = Lab::start_full(
        202,
        &["--kube"],
        |lab| {
            let r = &lab.repo;
            std::fs::create_dir_all(r.join("argocd")).unwrap();
            std::fs::copy(&install, r.join("argocd/install.yaml")).unwrap();
            let cluster = r.join("cluster.yaml");
            let mut text = std::fs::read_to_string(&cluster).unwrap();
            text.push_str(
                "gitops:\n  tool: argocd\n  manifests:\n    - argocd/install.yaml\n  url: https://git.example/home/apps.git\n  branch: prod\n  path: clusters/home\n",
            );
            std::fs::write(&cluster, text).unwrap();
        },
        |_| {},
    );
    lab.bootstrap();
    let rt = runtime();
    let admin = client(&lab, &rt, 1);
    let first = agent_once(&lab);
    assert!(
        first.contains("Argo CD: apps not reconciled yet"),
        "{first}"
    );

    let apps = Api::<DynamicObject>::namespaced_with(
        admin.clone(),
        "argocd",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application"),
            "applications",
        ),
    );
    let app = serde_json::to_value(rt.block_on(apps.get("apps")).unwrap()).unwrap();
    assert_eq!(
        app["spec"]["source"]["repoURL"],
        "https://git.example/home/apps.git"
    );
    assert_eq!(app["spec"]["source"]["targetRevision"], "prod");
    assert_eq!(app["spec"]["source"]["path"], "clusters/home");
    assert_eq!(app["spec"]["syncPolicy"]["automated"]["selfHeal"], true);
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "argocd");
    let repo = rt.block_on(secrets.get("vixen-apps-repo")).unwrap();
    assert_eq!(
        repo.metadata.labels.unwrap()["argocd.argoproj.io/secret-type"],
        "repository"
    );
    assert_eq!(
        repo.data.unwrap()["url"].0,
        b"https://git.example/home/apps.git"
    );
    let key = rt.block_on(secrets.get("sops-age")).unwrap();
    assert!(
        String::from_utf8(key.data.unwrap()["keys.txt"].0.clone())
            .unwrap()
            .starts_with("AGE-SECRET-KEY-1")
    );
    // install.yaml names no namespace: its namespaced objects went into argocd.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(admin.clone(), "argocd");
    assert!(
        rt.block_on(deployments.get_opt("argocd-server"))
            .unwrap()
            .is_some()
    );
    assert!(
        rt.block_on(deployments.get_opt("argocd-repo-server"))
            .unwrap()
            .is_some()
    );

    // The fault: a ConfigMap added by hand in argocd; then an install object leaves Git.
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "argocd");
    let mine: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "my-notes" }, "data": { "a": "b" }
    }))
    .unwrap();
    rt.block_on(cms.create(&Default::default(), &mine)).unwrap();
    let path = lab.repo.join("argocd/install.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let kept: Vec<&str> = text
        .split("\n---\n")
        .filter(|d| {
            !(d.contains("kind: ConfigMap")
                && d.lines().any(|l| l == "  name: argocd-notifications-cm"))
        })
        .collect();
    assert!(kept.len() < text.split("\n---\n").count());
    std::fs::write(&path, kept.join("\n---\n")).unwrap();
    let second = agent_once(&lab);
    assert!(second.contains("1 pruned"), "{second}");
    assert!(
        rt.block_on(cms.get_opt("argocd-notifications-cm"))
            .unwrap()
            .is_none()
    );
    assert!(rt.block_on(cms.get_opt("my-notes")).unwrap().is_some());
}
