//! `manifests/`: every file parses, the kustomization lists them all, the Deployment meets the
//! restricted Pod Security Standard, its flags exist, and the RBAC grants exactly the API calls
//! the code makes (the table below names the code that makes each call).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::Value;

fn dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(
            || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            std::path::PathBuf::from,
        )
        .join("../manifests")
}

fn docs() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            if v.is_null() {
                continue;
            }
            assert!(
                v["apiVersion"].is_string() && v["kind"].is_string(),
                "{}: no apiVersion/kind",
                f.display()
            );
            out.push((f.file_name().unwrap().to_string_lossy().into_owned(), v));
        }
    }
    out
}

fn find<'a>(docs: &'a [(String, Value)], kind: &str, name: &str) -> &'a Value {
    &docs
        .iter()
        .find(|(_, d)| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
        .1
}

#[test]
fn kustomization_lists_every_manifest_and_every_object_is_named() {
    let k: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(dir().join("kustomization.yaml")).unwrap(),
    )
    .unwrap();
    let listed: BTreeSet<String> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    let on_disk: BTreeSet<String> = docs()
        .into_iter()
        .map(|(f, _)| f)
        .filter(|f| f != "kustomization.yaml")
        .collect();
    assert_eq!(listed, on_disk);
    for (f, d) in docs() {
        if d["kind"] == "Kustomization" {
            continue;
        }
        assert!(d["metadata"]["name"].is_string(), "{f}: unnamed object");
    }
}

#[test]
fn deployment_is_restricted_two_replicas_with_probes_and_secret_mounts() {
    let all = docs();
    let dep = find(&all, "Deployment", "vixen");
    assert_eq!(dep["spec"]["replicas"], 2);
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(sc["capabilities"]["add"].is_null());
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    for v in pod["volumes"].as_array().unwrap() {
        assert!(
            v["hostPath"].is_null(),
            "restricted pods mount no host path"
        );
    }
    let mounts: BTreeMap<String, String> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().into(),
                m["mountPath"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(mounts["talos"], "/var/run/secrets/talos.dev");
    let secrets: BTreeSet<&str> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["secret"]["secretName"].as_str())
        .collect();
    assert_eq!(
        secrets,
        BTreeSet::from(["vixen-age", "vixen-forge", "vixen-git", "vixen-talos"])
    );
    // A public repo needs no Git token and statuses are optional: the pod starts without
    // those two Secrets (the kubelet mounts an empty folder); the age key and Talos' are needed.
    let optional: BTreeSet<&str> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["secret"]["optional"] == true)
        .filter_map(|v| v["secret"]["secretName"].as_str())
        .collect();
    assert_eq!(optional, BTreeSet::from(["vixen-forge", "vixen-git"]));
    // The Talos API access object whose Secret is mounted.
    let tsa = find(&all, "ServiceAccount", "vixen-talos");
    assert_eq!(tsa["apiVersion"], "talos.dev/v1alpha1");
    assert_eq!(tsa["spec"]["roles"], serde_json::json!(["os:admin"]));
    let pdb = find(&all, "PodDisruptionBudget", "vixen");
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        dep["spec"]["selector"]["matchLabels"]
    );
    let svc = find(&all, "Service", "vixen");
    assert_eq!(
        svc["spec"]["selector"],
        dep["spec"]["selector"]["matchLabels"]
    );
    let ns = find(&all, "Namespace", "vixen-system");
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
}

#[test]
fn deployment_flags_exist_in_the_cli() {
    let all = docs();
    let dep = find(&all, "Deployment", "vixen");
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_vixen"))
        .args(["agent", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    for arg in dep["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
    {
        let arg = arg.as_str().unwrap();
        if let Some(flag) = arg.strip_prefix("--") {
            let flag = flag.split('=').next().unwrap();
            assert!(
                help.contains(&format!("--{flag}")),
                "--{flag} is not a flag of `vixen agent`"
            );
        }
    }
}

/// Every API call of the code, as (API group, resource, verb, where).
const CALLS: &[(&str, &str, &str, &str)] = &[
    (
        "coordination.k8s.io",
        "leases",
        "get",
        "vixen_k8s::lease::LeaderElector::attempt",
    ),
    (
        "coordination.k8s.io",
        "leases",
        "create",
        "vixen_k8s::lease::LeaderElector::attempt (no Lease yet)",
    ),
    (
        "coordination.k8s.io",
        "leases",
        "update",
        "vixen_k8s::lease (renew, take over, release: replace)",
    ),
    (
        "",
        "configmaps",
        "get",
        "vixen_k8s::journal::Journal::load; vixen_k8s::push::PushSignal::changed (the leader)",
    ),
    (
        "",
        "configmaps",
        "create",
        "vixen_k8s::journal::Journal::save (first write); PushSignal::record (first push)",
    ),
    (
        "",
        "configmaps",
        "update",
        "vixen_k8s::journal::Journal::save (replace); vixen_k8s::push::PushSignal::record (a standby)",
    ),
    (
        "vixen.dev",
        "vixenclusters",
        "get",
        "vixen_k8s::status::StatusApi::get",
    ),
    (
        "vixen.dev",
        "vixenclusters",
        "patch",
        "vixen_k8s::status::StatusApi::ensure (server-side apply)",
    ),
    (
        "vixen.dev",
        "vixenclusters",
        "create",
        "vixen_k8s::status::StatusApi::ensure (apply creating the object)",
    ),
    (
        "vixen.dev",
        "vixenclusters/status",
        "patch",
        "vixen_k8s::status::StatusApi::write",
    ),
    (
        "events.k8s.io",
        "events",
        "create",
        "vixen_k8s::events::EventRecorder::publish",
    ),
    (
        "cilium.io",
        "ciliumloadbalancerippools",
        "patch",
        "vixen_k8s::cilium (server-side apply)",
    ),
    (
        "cilium.io",
        "ciliumloadbalancerippools",
        "create",
        "vixen_k8s::cilium (apply creating the object)",
    ),
    (
        "cilium.io",
        "ciliumloadbalancerippools",
        "list",
        "vixen_k8s::cilium (prune: list managed)",
    ),
    (
        "cilium.io",
        "ciliumloadbalancerippools",
        "delete",
        "vixen_k8s::cilium (prune)",
    ),
    (
        "cilium.io",
        "ciliuml2announcementpolicies",
        "patch",
        "vixen_k8s::cilium (server-side apply)",
    ),
    (
        "cilium.io",
        "ciliuml2announcementpolicies",
        "create",
        "vixen_k8s::cilium (apply creating the object)",
    ),
    (
        "cilium.io",
        "ciliuml2announcementpolicies",
        "list",
        "vixen_k8s::cilium (prune: list managed)",
    ),
    (
        "cilium.io",
        "ciliuml2announcementpolicies",
        "delete",
        "vixen_k8s::cilium (prune)",
    ),
    (
        "",
        "nodes",
        "get",
        "vixen_k8s::nodes (readiness gate, cordon, uncordon)",
    ),
    (
        "",
        "nodes",
        "list",
        "vixen_k8s::nodes (observe: Ready, cordoned by vixen)",
    ),
    (
        "",
        "nodes",
        "patch",
        "vixen_k8s::nodes (cordon, uncordon: merge patch)",
    ),
    (
        "",
        "nodes",
        "delete",
        "vixen_k8s::nodes (the Node of a reset machine)",
    ),
    (
        "",
        "pods",
        "list",
        "vixen_k8s::nodes (drain: pods on the node)",
    ),
    (
        "",
        "pods/eviction",
        "create",
        "vixen_k8s::nodes (drain: Eviction API)",
    ),
    (
        "",
        "secrets",
        "get",
        "daemon::backup (S3 credentials of backup.target.s3.credentials.secret)",
    ),
];

fn grants(role: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        for g in rule["apiGroups"].as_array().unwrap() {
            for r in rule["resources"].as_array().unwrap() {
                for v in rule["verbs"].as_array().unwrap() {
                    assert_ne!(v, "*", "no wildcard verbs");
                    assert_ne!(r, "*", "no wildcard resources");
                    out.insert((
                        g.as_str().unwrap().into(),
                        r.as_str().unwrap().into(),
                        v.as_str().unwrap().into(),
                    ));
                }
            }
        }
    }
    out
}

#[test]
fn rbac_grants_exactly_the_calls_the_code_makes() {
    let all = docs();
    let mut granted = grants(find(&all, "Role", "vixen"));
    granted.extend(grants(find(&all, "ClusterRole", "vixen")));
    let called: BTreeSet<(String, String, String)> = CALLS
        .iter()
        .map(|(g, r, v, _)| ((*g).into(), (*r).into(), (*v).into()))
        .collect();
    assert_eq!(granted, called, "RBAC and the code's calls differ");
    // Secrets are mounted, never read through the API, except one by name: the S3 key of
    // `backup.target.s3.credentials.secret` (the repo names it, so the Role limits it).
    let secrets: Vec<_> = granted.iter().filter(|(_, r, _)| r == "secrets").collect();
    assert_eq!(secrets, [&("".into(), "secrets".into(), "get".into())]);
    let role = find(&all, "Role", "vixen");
    let rule = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resources"] == serde_json::json!(["secrets"]))
        .unwrap();
    assert_eq!(
        rule["resourceNames"],
        serde_json::json!(["vixen-backup"]),
        "{rule}"
    );
    // Namespaced objects only in vixen's namespace.
    let cluster_wide: BTreeSet<String> = grants(find(&all, "ClusterRole", "vixen"))
        .into_iter()
        .map(|(_, r, _)| r)
        .collect();
    assert_eq!(
        cluster_wide,
        BTreeSet::from([
            "ciliuml2announcementpolicies".into(),
            "ciliumloadbalancerippools".into(),
            "nodes".into(),
            "pods".into(),
            "pods/eviction".into()
        ])
    );
    // ConfigMaps are read and rewritten only by name: the journal and the push signal, never
    // vixen's own settings (vixen-config) or anything else in the namespace.
    let role = find(&all, "Role", "vixen");
    for rule in role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["resources"] == serde_json::json!(["configmaps"]))
    {
        let verbs: BTreeSet<&str> = rule["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        if verbs.contains("get") || verbs.contains("update") {
            assert_eq!(
                rule["resourceNames"],
                serde_json::json!(["vixen-state", "vixen-push"]),
                "{rule}"
            );
        }
    }
}
