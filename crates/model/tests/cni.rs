//! Cilium as the CNI (issue 17, item 1): `cni:` in cluster.yaml renders Talos' `cni: none`, no
//! kube-proxy when asked, and the manifests inline on control planes; the rules refuse what
//! would leave nodes without networking, with file:line, and never read outside the repo.

mod common;
use common::{assert_found, edit, example_copy_flannel, problems, testdata};
use vixen_model::{Repo, render, validate};

const CILIUM: &str = "cni:\n  name: cilium\n  kubeProxyReplacement: true\n  manifests:\n    - platform/cilium.yaml\n";

/// The example with `cni` appended to cluster.yaml and the test manifest at platform/cilium.yaml.
fn cilium_repo(cni: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, repo) = example_copy_flannel();
    std::fs::create_dir_all(repo.join("platform")).unwrap();
    std::fs::copy(testdata("cilium.yaml"), repo.join("platform/cilium.yaml")).unwrap();
    edit(&repo.join("cluster.yaml"), "", cni);
    (dir, repo)
}

fn bundle() -> vixen_pki::SecretsBundle {
    let text = std::fs::read_to_string(testdata("bundle.yaml")).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

#[test]
fn cilium_renders_cni_none_no_kube_proxy_and_the_manifests_inline_on_control_planes() {
    let (_dir, root) = cilium_repo(CILIUM);
    assert_eq!(problems(&root), Vec::<String>::new());
    let repo = Repo::load(&root).unwrap();
    let manifest = std::fs::read_to_string(root.join("platform/cilium.yaml")).unwrap();
    let cp = render::render(&repo, repo.node("cp-1").unwrap(), &bundle()).unwrap();
    let c = &cp.main["cluster"];
    assert_eq!(c["network"]["cni"]["name"], "none");
    assert_eq!(c["proxy"]["disabled"], true);
    assert_eq!(c["inlineManifests"][0]["name"], "vixen-cni-cilium");
    assert_eq!(c["inlineManifests"][0]["contents"], manifest.as_str());
    assert_eq!(c["inlineManifests"].as_array().unwrap().len(), 1);

    let w = render::render(&repo, repo.node("worker-1").unwrap(), &bundle()).unwrap();
    let c = &w.main["cluster"];
    assert_eq!(c["network"]["cni"]["name"], "none");
    assert!(c.get("inlineManifests").is_none(), "{c}");
    assert!(c.get("proxy").is_none(), "{c}");
}

#[test]
fn without_kube_proxy_replacement_talos_keeps_kube_proxy() {
    let (_dir, root) = cilium_repo(&CILIUM.replace("true", "false"));
    edit(
        &root.join("platform/cilium.yaml"),
        "kube-proxy-replacement: \"true\"",
        "kube-proxy-replacement: \"false\"",
    );
    assert_eq!(problems(&root), Vec::<String>::new());
    let repo = Repo::load(&root).unwrap();
    let cp = render::render(&repo, repo.node("cp-2").unwrap(), &bundle()).unwrap();
    assert_eq!(cp.main["cluster"]["network"]["cni"]["name"], "none");
    assert!(cp.main["cluster"]["proxy"].get("disabled").is_none());
}

#[test]
fn flannel_is_talos_default_and_writes_nothing() {
    let (_dir, root) = example_copy_flannel();
    let repo = Repo::load(&root).unwrap();
    let cp = render::render(&repo, repo.node("cp-1").unwrap(), &bundle()).unwrap();
    assert!(cp.main["cluster"]["network"].get("cni").is_none());
    assert!(cp.main["cluster"].get("inlineManifests").is_none());
}

#[test]
fn cilium_without_manifests_is_refused_at_the_cni_line() {
    let (_dir, root) = example_copy_flannel();
    edit(&root.join("cluster.yaml"), "", "cni:\n  name: cilium\n");
    assert_found(
        &problems(&root),
        "cluster.yaml:27:3",
        "without `manifests`: the nodes would come up without networking",
    );
}

#[test]
fn flannel_with_manifests_or_kube_proxy_replacement_is_refused() {
    let (_dir, root) = cilium_repo(&CILIUM.replace("cilium\n  kube", "flannel\n  kube"));
    let found = problems(&root);
    assert_found(
        &found,
        "cluster.yaml:28:25",
        "kube-proxy replacement needs Cilium",
    );
    assert_found(&found, "cluster.yaml:30:5", "vixen delivers no manifests");
}

/// Fault: a hostile repo (the manifest path climbs out, or is a symlink to a file outside).
/// Refused at the entry, and nothing of the outside file is read or printed.
#[test]
fn a_manifest_outside_the_repo_is_refused_and_never_read() {
    let (dir, root) = cilium_repo(&CILIUM.replace("platform/cilium.yaml", "../outside.yaml"));
    std::fs::write(dir.path().join("outside.yaml"), "CANARY-7f3a: secret\n").unwrap();
    let found = problems(&root);
    assert_found(&found, "cluster.yaml:30:7", "climbs out with `..`");
    assert!(!found.join("\n").contains("CANARY"), "{found:?}");

    let (dir, root) = cilium_repo(CILIUM);
    std::fs::write(dir.path().join("outside.yaml"), "CANARY-7f3a: secret\n").unwrap();
    std::fs::remove_file(root.join("platform/cilium.yaml")).unwrap();
    std::os::unix::fs::symlink(
        dir.path().join("outside.yaml"),
        root.join("platform/cilium.yaml"),
    )
    .unwrap();
    let found = problems(&root);
    assert_found(&found, "cluster.yaml:30:7", "leads outside the repo");
    assert!(!found.join("\n").contains("CANARY"), "{found:?}");
    // Rendering refuses it the same way.
    let repo = Repo::load(&root).unwrap();
    let e = render::render(&repo, repo.node("cp-1").unwrap(), &bundle()).unwrap_err();
    assert!(e.to_string().contains("leads outside the repo"), "{e}");
    assert!(!e.to_string().contains("CANARY"), "{e}");
}

#[test]
fn broken_manifests_are_refused_at_their_own_line() {
    let (_dir, root) = cilium_repo(CILIUM);
    edit(
        &root.join("platform/cilium.yaml"),
        "  ipam: kubernetes\n",
        "  ipam: [kubernetes\n",
    );
    assert_found(
        &problems(&root),
        "platform/cilium.yaml:17:25",
        "invalid YAML",
    );

    let (_dir, root) = cilium_repo(CILIUM);
    edit(
        &root.join("platform/cilium.yaml"),
        "apiVersion: apps/v1\nkind: DaemonSet\n",
        "kind: DaemonSet\n",
    );
    assert_found(
        &problems(&root),
        "platform/cilium.yaml:21:1",
        "not a Kubernetes object",
    );
}

#[test]
fn manifests_without_the_cilium_agent_are_refused() {
    let (_dir, root) = cilium_repo(CILIUM);
    edit(
        &root.join("platform/cilium.yaml"),
        "kind: DaemonSet\nmetadata:\n  name: cilium\n",
        "kind: DaemonSet\nmetadata:\n  name: cilium-envoy\n",
    );
    assert_found(
        &problems(&root),
        "cluster.yaml:30:5",
        "no DaemonSet `cilium`",
    );
}

#[test]
fn kube_proxy_replacement_must_agree_with_the_rendered_cilium_config() {
    let (_dir, root) = cilium_repo(&CILIUM.replace("true", "false"));
    assert_found(
        &problems(&root),
        "platform/cilium.yaml:17:3",
        "kube-proxy-replacement: \"true\", but cluster.yaml says kubeProxyReplacement: false",
    );
}

#[test]
fn a_pool_inside_the_pod_or_service_network_is_refused() {
    let (_dir, root) = cilium_repo(CILIUM);
    edit(&root.join("network.yaml"), "127.0.30.0/28", "10.96.1.0/28");
    let found = problems(&root);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("network.yaml:") && p.contains("serviceSubnets 10.96.0.0/12")),
        "{found:?}"
    );
}

#[test]
fn validate_on_the_loaded_repo_agrees() {
    let (_dir, root) = cilium_repo(CILIUM);
    let repo = Repo::load(&root).unwrap();
    assert!(validate::validate(&repo).is_empty());
}
