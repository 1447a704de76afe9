//! The lab with a real kube-apiserver (`--kube`, the test peer built by tests/peers/build.sh) on
//! its real etcd: the Kubeconfig RPC reaches it, nodes register and keep `Ready`, go NotReady
//! during a reboot, the API is down while etcd has no quorum, and Cilium's own CRD schemas judge
//! LB-IPAM pools. Skipped loudly without the peers, except in CI where they are required.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use vixen_lab::{Fault, Lab, LabOptions, LabSpec, Role};

/// Starts a lab with kube-apiserver; `None` (after a loud skip) without the peer outside CI.
async fn start_kube(spec: &LabSpec, dir: &std::path::Path, test: &str) -> Option<Lab> {
    let apiserver = vixen_lab::peers::for_test("kube-apiserver", test)?;
    let opts = LabOptions {
        dir: dir.to_path_buf(),
        reboot_ms: 1500,
        kube: Some(vixen_lab::KubeOptions { apiserver }),
    };
    Some(Lab::start(spec, opts).await.unwrap())
}

/// A config of the fixture with its own API endpoint (tests run in parallel).
fn config(c: &Cluster, role: Role, host: &str, addr: &str, endpoint: &str) -> Vec<u8> {
    let text = String::from_utf8(c.config(role, host, &[addr], "v1.11.6")).unwrap();
    text.replace("https://127.0.0.1:6443", endpoint)
        .into_bytes()
}

/// `Some(true/false)`: the node's Ready condition; `None`: no such node or the API is down.
async fn ready(api: &Api<Node>, name: &str) -> Option<bool> {
    let node = api.get(name).await.ok()?;
    let conds = node.status?.conditions?;
    let ready = conds.iter().find(|c| c.type_ == "Ready")?;
    Some(ready.status == "True")
}

/// Bootstraps a one-control-plane cluster (plus workers) in a `--kube` lab and returns a kube-rs
/// client made from the Kubeconfig RPC's kubeconfig, once the API answers.
async fn bootstrap(c: &Cluster, dir: &std::path::Path, net: u8, workers: &[&str]) -> kube::Client {
    let endpoint = format!("https://127.0.{net}.100:6443");
    let cp = config(
        c,
        Role::Controlplane,
        "cp1",
        &format!("127.0.{net}.11"),
        &endpoint,
    );
    let cp_addr = format!("127.0.{net}.11");
    install(c, &format!("127.0.{net}.1"), &cp, &cp_addr).await;
    admin(c, &cp_addr)
        .bootstrap_when_ready(Duration::from_secs(10))
        .await
        .unwrap();
    for (i, w) in workers.iter().enumerate() {
        let addr = format!("127.0.{net}.{}", 21 + i);
        let cfg = config(c, Role::Worker, w, &addr, &endpoint);
        install(c, &format!("127.0.{net}.{}", 2 + i), &cfg, &addr).await;
    }
    let archive = admin(c, &cp_addr).kubeconfig().await.unwrap();
    let kubeconfig = untar_kubeconfig(&archive);
    assert!(
        kubeconfig.contains(&format!("server: {endpoint}")),
        "{kubeconfig}"
    );
    let client = kube_client(&kubeconfig, None).await;
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let res = nodes.list(&ListParams::default()).await;
        match res {
            Ok(l) if l.items.len() == 1 + workers.len() => return client,
            _ if tokio::time::Instant::now() > deadline => {
                let log = std::fs::read_to_string(dir.join("kube/kube-apiserver.log"))
                    .unwrap_or_default();
                let tail: Vec<_> = log.lines().rev().take(40).collect();
                panic!(
                    "the API did not answer with the lab's nodes: {:?}\nkube-apiserver.log (last lines, newest first):\n{}",
                    res.map(|l| l.items.len()),
                    tail.join("\n")
                );
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_register_go_not_ready_in_a_reboot_and_the_api_needs_quorum() {
    let test = "nodes_register_go_not_ready_in_a_reboot_and_the_api_needs_quorum";
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(
        47,
        &[
            ("cp1", Role::Controlplane, "v1.11.6"),
            ("w1", Role::Worker, "v1.11.6"),
        ],
    );
    let Some(lab) = start_kube(&spec, dir.path(), test).await else {
        return;
    };
    let c = Cluster::generate();
    let client = bootstrap(&c, dir.path(), 47, &["w1"]).await;
    assert_eq!(
        lab.status().kube_api.as_deref(),
        Some("https://127.0.47.100:6443")
    );

    // Registered with the labels a kubelet on Talos has, and Ready.
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes.list(&ListParams::default()).await.unwrap();
    let mut names: Vec<_> = list
        .items
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["cp1", "w1"]);
    let cp = nodes.get("cp1").await.unwrap();
    let labels = cp.metadata.labels.unwrap_or_default();
    assert!(labels.contains_key("node-role.kubernetes.io/control-plane"));
    until("both nodes Ready", 30, || {
        let nodes = nodes.clone();
        async move {
            ready(&nodes, "cp1").await == Some(true) && ready(&nodes, "w1").await == Some(true)
        }
    })
    .await;

    // The worker reboots: NotReady while it is down, Ready again once it is back.
    admin(&c, "127.0.47.21").reboot().await.unwrap();
    until("w1 NotReady during its reboot", 20, || {
        let nodes = nodes.clone();
        async move { ready(&nodes, "w1").await == Some(false) }
    })
    .await;
    assert_eq!(ready(&nodes, "cp1").await, Some(true));
    until("w1 Ready after its reboot", 30, || {
        let nodes = nodes.clone();
        async move { ready(&nodes, "w1").await == Some(true) }
    })
    .await;

    // The only etcd member powers off: no quorum, no API. Back up: the API answers again.
    lab.fault("cp1", Fault::Down).await.unwrap();
    until("the API is down without etcd quorum", 30, || {
        let nodes = nodes.clone();
        async move { nodes.get("w1").await.is_err() }
    })
    .await;
    lab.fault("cp1", Fault::Up).await.unwrap();
    until("the API is back with etcd", 90, || {
        let nodes = nodes.clone();
        async move { ready(&nodes, "cp1").await == Some(true) }
    })
    .await;
    lab.shutdown().await;
}

/// The CRDs of the Cilium module pinned in tests/peers/cilium-crds.
fn cilium_crds(test: &str) -> Option<Vec<CustomResourceDefinition>> {
    let dir = match vixen_lab::peers::cilium_crds() {
        Some(d) => d,
        None => {
            assert!(
                !vixen_lab::peers::required(),
                "{test}: Cilium CRDs missing and CI is set: run tests/peers/build.sh"
            );
            eprintln!(
                "\n!!! SKIPPED {test}: Cilium CRDs not extracted (bash tests/peers/build.sh) !!!\n"
            );
            return None;
        }
    };
    let files = [
        "ciliumloadbalancerippools.yaml",
        "ciliuml2announcementpolicies.yaml",
    ];
    Some(
        files
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(dir.join(f)).unwrap();
                serde_yaml_ng::from_str(&text).unwrap()
            })
            .collect(),
    )
}

/// Creates an object of a custom resource from YAML.
async fn create(
    client: &kube::Client,
    gvk: &GroupVersionKind,
    plural: &str,
    yaml: &str,
) -> Result<DynamicObject, kube::Error> {
    let ar = ApiResource::from_gvk_with_plural(gvk, plural);
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let obj: DynamicObject = serde_yaml_ng::from_str(yaml).unwrap();
    api.create(&PostParams::default(), &obj).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cilium_crd_schemas_accept_a_valid_pool_and_refuse_an_invalid_one() {
    let test = "cilium_crd_schemas_accept_a_valid_pool_and_refuse_an_invalid_one";
    let Some(crds) = cilium_crds(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(48, &[("cp1", Role::Controlplane, "v1.11.6")]);
    let Some(lab) = start_kube(&spec, dir.path(), test).await else {
        return;
    };
    let c = Cluster::generate();
    let client = bootstrap(&c, dir.path(), 48, &[]).await;

    // Install Cilium's CRDs as they ship, and wait until they are Established.
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in &crds {
        let name = crd.metadata.name.clone().unwrap();
        api.patch(
            &name,
            &PatchParams::apply("vixen-test").force(),
            &Patch::Apply(crd),
        )
        .await
        .unwrap();
        until(&format!("CRD {name} established"), 30, || {
            let api = api.clone();
            let name = name.clone();
            async move {
                let Ok(crd) = api.get(&name).await else {
                    return false;
                };
                crd.status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            }
        })
        .await;
    }

    let pool = GroupVersionKind::gvk("cilium.io", "v2", "CiliumLoadBalancerIPPool");
    let valid = "apiVersion: cilium.io/v2\nkind: CiliumLoadBalancerIPPool\nmetadata:\n  name: lan\n\
                 spec:\n  blocks:\n  - cidr: 192.168.1.240/28\n  - start: 192.168.2.10\n    stop: 192.168.2.20\n  \
                 allowFirstLastIPs: \"No\"\n  serviceSelector:\n    matchLabels:\n      pool: lan\n";
    create(&client, &pool, "ciliumloadbalancerippools", valid)
        .await
        .unwrap();

    // The v2 CRD also serves the deprecated v2alpha1 (what the agent writes by default).
    let pool_v2alpha1 = GroupVersionKind::gvk("cilium.io", "v2alpha1", "CiliumLoadBalancerIPPool");
    let old_api = valid
        .replace("cilium.io/v2\n", "cilium.io/v2alpha1\n")
        .replace("name: lan", "name: lan-v2alpha1");
    create(
        &client,
        &pool_v2alpha1,
        "ciliumloadbalancerippools",
        &old_api,
    )
    .await
    .unwrap();

    // Refused by the real schema: an unknown enum value and a CIDR that is not one.
    let bad_enum = valid
        .replace("name: lan", "name: bad-enum")
        .replace("\"No\"", "Maybe");
    let err = create(&client, &pool, "ciliumloadbalancerippools", &bad_enum)
        .await
        .unwrap_err();
    let text = err.to_string();
    eprintln!("refused by Cilium's schema: {text}");
    assert!(
        text.contains("allowFirstLastIPs") && text.contains("Unsupported value"),
        "{text}"
    );
    let bad_cidr = valid
        .replace("name: lan", "name: bad-cidr")
        .replace("192.168.1.240/28", "192.168.1.300/28");
    let err = create(&client, &pool, "ciliumloadbalancerippools", &bad_cidr)
        .await
        .unwrap_err();
    eprintln!("refused by Cilium's schema: {err}");
    assert!(err.to_string().contains("cidr"), "{err}");

    // The L2 announcement policy (v2alpha1 only).
    let l2 = GroupVersionKind::gvk("cilium.io", "v2alpha1", "CiliumL2AnnouncementPolicy");
    let policy = "apiVersion: cilium.io/v2alpha1\nkind: CiliumL2AnnouncementPolicy\nmetadata:\n  \
                  name: lan\nspec:\n  loadBalancerIPs: true\n  interfaces:\n  - ^eth[0-9]+\n";
    create(&client, &l2, "ciliuml2announcementpolicies", policy)
        .await
        .unwrap();
    let bad = policy
        .replace("name: lan", "name: bad")
        .replace("loadBalancerIPs: true", "loadBalancerIPs: sometimes");
    let err = create(&client, &l2, "ciliuml2announcementpolicies", &bad)
        .await
        .unwrap_err();
    eprintln!("refused by Cilium's schema: {err}");
    assert!(err.to_string().contains("loadBalancerIPs"), "{err}");
    lab.shutdown().await;
}
