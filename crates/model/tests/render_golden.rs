//! Render golden tests: every node of the homelab example rendered with a fixed test bundle must
//! match `tests/golden/<node>.yaml` byte for byte. Regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p vixen-model --test render_golden` and review the diff.

use std::path::PathBuf;

use serde_json::Value;
use vixen_model::Repo;
use vixen_model::render::render;
use vixen_pki::SecretsBundle;

fn manifest() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        std::path::PathBuf::from,
    )
}

fn load() -> (Repo, SecretsBundle) {
    let repo = Repo::load(&manifest().join("../../examples/homelab")).unwrap();
    let text = std::fs::read_to_string(manifest().join("tests/testdata/bundle.yaml")).unwrap();
    (repo, serde_yaml_ng::from_str(&text).unwrap())
}

#[test]
fn every_node_matches_its_golden_file() {
    let (repo, bundle) = load();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for node in &repo.nodes {
        let yaml = render(&repo, node, &bundle).unwrap().to_yaml();
        let golden = manifest().join(format!("tests/golden/{}.yaml", node.value.name));
        if update {
            std::fs::write(&golden, &yaml).unwrap();
        } else {
            let want = std::fs::read_to_string(&golden).unwrap();
            assert!(
                want == yaml,
                "{} differs from {}",
                node.value.name,
                golden.display()
            );
        }
    }
}

#[test]
fn rendering_twice_gives_identical_bytes() {
    let (repo, bundle) = load();
    for node in &repo.nodes {
        let a = render(&repo, node, &bundle).unwrap().to_yaml();
        let b = render(&repo, node, &bundle).unwrap().to_yaml();
        assert_eq!(a, b);
    }
}

fn config(name: &str) -> Value {
    let (repo, bundle) = load();
    render(&repo, repo.node(name).unwrap(), &bundle)
        .unwrap()
        .main
}

#[test]
fn control_plane_config_holds_ca_keys_and_vixen_api_access() {
    let cp = config("cp-1");
    assert_eq!(cp["machine"]["type"], "controlplane");
    assert!(!cp["machine"]["ca"]["key"].as_str().unwrap().is_empty());
    assert!(
        !cp["cluster"]["etcd"]["ca"]["key"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    let access = &cp["machine"]["features"]["kubernetesTalosAPIAccess"];
    assert_eq!(access["enabled"], true);
    assert_eq!(access["allowedRoles"][0], "os:admin");
    assert_eq!(access["allowedKubernetesNamespaces"][0], "vixen-system");
    assert_eq!(
        cp["machine"]["install"]["image"],
        "ghcr.io/siderolabs/installer:v1.11.6"
    );
    assert_eq!(
        cp["machine"]["network"]["interfaces"][0]["vip"]["ip"],
        "127.0.10.100"
    );
    assert_eq!(
        cp["machine"]["network"]["interfaces"][0]["vlans"][0]["vlanId"],
        20
    );
    // group patches: all, then controlplane
    assert_eq!(cp["machine"]["sysctls"]["vm.nr_hugepages"], "0");
    assert_eq!(cp["cluster"]["allowSchedulingOnControlPlanes"], false);
}

#[test]
fn worker_config_has_no_ca_keys_and_gets_its_own_json_patch() {
    let w = config("worker-2");
    assert_eq!(w["machine"]["type"], "worker");
    assert_eq!(w["machine"]["ca"]["key"], "");
    assert_eq!(w["cluster"]["ca"]["key"], "");
    assert!(w["cluster"].get("etcd").is_none());
    assert!(
        w["machine"]["features"]
            .get("kubernetesTalosAPIAccess")
            .is_none()
    );
    assert!(
        w["cluster"].get("allowSchedulingOnControlPlanes").is_none(),
        "controlplane patch leaked to a worker"
    );
    assert_eq!(
        w["machine"]["kubelet"]["extraMounts"][0]["destination"],
        "/var/mnt/storage"
    );
    assert_eq!(
        w["machine"]["nodeTaints"]["dedicated"],
        "storage:NoSchedule"
    );
    assert!(
        config("worker-1")["machine"]["kubelet"]
            .get("extraMounts")
            .is_none()
    );
}

#[test]
fn strategic_merge_merges_interfaces_by_name_and_deletes_on_request() {
    let mut base = serde_json::json!({"machine": {"network": {"interfaces": [
        {"interface": "eth0", "addresses": ["127.0.0.2/8"], "mtu": 1500}
    ]}, "sysctls": {"a": "1"}}});
    let patch = serde_json::json!({"machine": {"network": {"interfaces": [
        {"interface": "eth0", "mtu": 9000}, {"interface": "eth1", "dhcp": true}
    ]}, "sysctls": {"$patch": "delete"}}});
    vixen_model::render::merge(&mut base, patch, &mut Vec::new());
    let ifaces = base["machine"]["network"]["interfaces"].as_array().unwrap();
    assert_eq!(ifaces.len(), 2);
    assert_eq!(ifaces[0]["mtu"], 9000);
    assert_eq!(ifaces[0]["addresses"][0], "127.0.0.2/8");
    assert!(base["machine"].get("sysctls").is_none());
}
