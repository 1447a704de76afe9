//! vixen-k8s against a real kube-apiserver v1.34 (the lab's `--kube` peer, built by
//! tests/peers/build.sh) with RBAC on: everything runs as the `vixen` ServiceAccount bound to
//! manifests/rbac.yaml, so a missing permission fails here and an excess one is caught by the
//! "forbidden" checks. Skipped loudly without the peer, except in CI where it is required.

#[path = "../../lab/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role as RbacRole, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt as _;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use serde_json::json;
use tokio::sync::watch;
use vixen_k8s::status::StatusApi;
use vixen_k8s::{
    CiliumApi, EventRecorder, EventType, Journal, LeaderElector, LeaseConfig, NetworkObjects,
    Nodes, Phase, PoolVersion, VixenCluster, VixenClusterSpec, VixenClusterStatus,
};
use vixen_lab::{Lab, LabOptions, Role};

const NET: u8 = 243;

/// A one-control-plane `--kube` lab; returns the lab and the admin kubeconfig.
async fn cluster(dir: &std::path::Path, test: &str) -> Option<(Lab, String)> {
    let apiserver = vixen_lab::peers::for_test("kube-apiserver", test)?;
    let spec = spec(NET, &[("cp1", Role::Controlplane, "v1.11.6")]);
    let lab = Lab::start(
        &spec,
        LabOptions {
            dir: dir.to_path_buf(),
            reboot_ms: 1500,
            kube: Some(vixen_lab::KubeOptions { apiserver }),
        },
    )
    .await
    .unwrap();
    let c = Cluster::generate();
    let endpoint = format!("https://127.0.{NET}.100:6443");
    let addr = format!("127.0.{NET}.11");
    let cfg = String::from_utf8(c.config(Role::Controlplane, "cp1", &[&addr], "v1.11.6"))
        .unwrap()
        .replace("https://127.0.0.1:6443", &endpoint);
    install(&c, &format!("127.0.{NET}.1"), cfg.as_bytes(), &addr).await;
    let kubeconfig = bootstrap_kubeconfig(&c, &addr).await;
    let admin_client = kube_client(&kubeconfig, None).await;
    let nodes: Api<Node> = Api::all(admin_client);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while nodes
        .list(&ListParams::default())
        .await
        .map(|l| l.items.len())
        .unwrap_or(0)
        < 1
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the API did not come up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Some((lab, kubeconfig))
}

fn manifest_docs(file: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(
        std::env::var_os("CARGO_MANIFEST_DIR")
            .map_or_else(
                || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
                std::path::PathBuf::from,
            )
            .join(format!("../../manifests/{file}")),
    )
    .unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

async fn create<K>(api: &Api<K>, obj: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(obj).unwrap();
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("{e}"),
    }
}

async fn wait_crd(admin: &kube::Client, name: &str) {
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    for _ in 0..100 {
        if let Ok(c) = crds.get(name).await
            && c.status.and_then(|s| s.conditions).is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            })
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("CRD {name} not established");
}

/// Namespace, ServiceAccount, manifests/rbac.yaml, the VixenCluster CRD and Cilium's CRDs.
async fn install_vixen(admin: &kube::Client) {
    create(
        &Api::<Namespace>::all(admin.clone()),
        json!({ "metadata": { "name": "vixen-system" } }),
    )
    .await;
    create(
        &Api::<ServiceAccount>::namespaced(admin.clone(), "vixen-system"),
        json!({ "metadata": { "name": "vixen" } }),
    )
    .await;
    for doc in manifest_docs("rbac.yaml") {
        match doc["kind"].as_str().unwrap() {
            "Role" => {
                create(
                    &Api::<RbacRole>::namespaced(admin.clone(), "vixen-system"),
                    doc,
                )
                .await
            }
            "RoleBinding" => {
                create(
                    &Api::<RoleBinding>::namespaced(admin.clone(), "vixen-system"),
                    doc,
                )
                .await
            }
            "ClusterRole" => create(&Api::<ClusterRole>::all(admin.clone()), doc).await,
            "ClusterRoleBinding" => {
                create(&Api::<ClusterRoleBinding>::all(admin.clone()), doc).await
            }
            k => panic!("unexpected {k}"),
        }
    }
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    create(&crds, serde_json::to_value(VixenCluster::crd()).unwrap()).await;
    let dir = vixen_lab::peers::cilium_crds().expect("Cilium CRDs (tests/peers/build.sh)");
    for f in [
        "ciliumloadbalancerippools.yaml",
        "ciliuml2announcementpolicies.yaml",
    ] {
        let crd: serde_json::Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap();
        create(&crds, crd).await;
    }
    for n in [
        "vixenclusters.vixen.dev",
        "ciliumloadbalancerippools.cilium.io",
        "ciliuml2announcementpolicies.cilium.io",
    ] {
        wait_crd(admin, n).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_the_vixen_service_account_on_a_real_api_server() {
    let test = "as_the_vixen_service_account_on_a_real_api_server";
    let dir = tempfile::tempdir().unwrap();
    let Some((_lab, kubeconfig)) = cluster(dir.path(), test).await else {
        return;
    };
    let admin = kube_client(&kubeconfig, None).await;
    install_vixen(&admin).await;
    let sa = kube_client(
        &kubeconfig,
        Some("system:serviceaccount:vixen-system:vixen"),
    )
    .await;

    // Leader election: the first replica wins, the second does not; after a release the second
    // takes over at once.
    let mut a = LeaderElector::new(
        sa.clone(),
        LeaseConfig::new("vixen-system", "vixen", "pod-a"),
    );
    let mut b = LeaderElector::new(
        sa.clone(),
        LeaseConfig::new("vixen-system", "vixen", "pod-b"),
    );
    assert!(a.try_acquire_or_renew().await.unwrap());
    assert!(!b.try_acquire_or_renew().await.unwrap());
    assert!(a.try_acquire_or_renew().await.unwrap(), "renewal");
    let a_leads = a.subscribe();
    a.release().await.unwrap();
    assert!(!*a_leads.borrow());
    assert!(
        b.try_acquire_or_renew().await.unwrap(),
        "takeover after release"
    );
    assert!(!a.try_acquire_or_renew().await.unwrap());

    // Journal: the new leader resumes the old leader's journal; the old one is fenced.
    let (_tx_a, leading_a) = watch::channel(true);
    let old = Journal::new(sa.clone(), "vixen-system", "vixen-state", Some(leading_a));
    assert_eq!(old.load().await.unwrap(), None);
    old.save(r#"{"run":{"done":1}}"#).await.unwrap();
    let (_tx_b, leading_b) = watch::channel(true);
    let new = Journal::new(sa.clone(), "vixen-system", "vixen-state", Some(leading_b));
    assert_eq!(
        new.load().await.unwrap().as_deref(),
        Some(r#"{"run":{"done":1}}"#)
    );
    new.save(r#"{"run":{"done":2}}"#).await.unwrap();
    let err = old.save(r#"{"run":{"done":9}}"#).await.unwrap_err();
    assert_eq!(err.category(), "kube_conflict", "{err}");
    assert_eq!(
        new.load().await.unwrap().as_deref(),
        Some(r#"{"run":{"done":2}}"#)
    );

    // Status object and an Event.
    let status = StatusApi::new(sa.clone(), "vixen-system", "homelab");
    status
        .ensure(&VixenClusterSpec {
            source: "https://git.example/infra.git".into(),
            cluster: "homelab".into(),
        })
        .await
        .unwrap();
    let mut st = VixenClusterStatus {
        last_applied_revision: Some("a".repeat(40)),
        ..Default::default()
    };
    st.set_phase(
        Phase::Ready,
        "Applied",
        "applied in 3 steps",
        k8s_openapi::jiff::Timestamp::now(),
    );
    status.write(&st).await.unwrap();
    let got = status.get().await.unwrap().unwrap();
    assert_eq!(got.status.unwrap().phase, "Ready");
    let regarding = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("vixen.dev/v1alpha1".into()),
        kind: Some("VixenCluster".into()),
        name: Some("homelab".into()),
        namespace: Some("vixen-system".into()),
        uid: got.metadata.uid.clone(),
        ..Default::default()
    };
    EventRecorder::new(sa.clone(), "vixen-system", regarding, "pod-b")
        .publish(
            EventType::Normal,
            "Applied",
            "Reconcile",
            "applied in 3 steps",
        )
        .await
        .unwrap();

    // Cilium: apply both kinds in both pool versions' schema; a field another manager owns is a
    // conflict, not forced; strays are pruned, unmanaged objects are not.
    let net: vixen_model::NetworkFile =
        serde_yaml_ng::from_str(include_str!("../../../examples/homelab/network.yaml")).unwrap();
    let cilium = CiliumApi::new(sa.clone(), PoolVersion::V2, false);
    let report = cilium
        .apply(&NetworkObjects::from_network(&net, PoolVersion::V2))
        .await
        .unwrap();
    assert_eq!(report.applied.len(), 3, "{report:?}");
    assert!(report.conflicts.is_empty());
    let pools = ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("cilium.io", "v2", "CiliumLoadBalancerIPPool"),
        "ciliumloadbalancerippools",
    );
    let admin_pools: Api<DynamicObject> = Api::all_with(admin.clone(), &pools);
    let other = json!({ "apiVersion": "cilium.io/v2", "kind": "CiliumLoadBalancerIPPool", "metadata": { "name": "default" }, "spec": { "blocks": [{ "cidr": "127.0.99.0/28" }] } });
    admin_pools
        .patch(
            "default",
            &PatchParams::apply("helm").force(),
            &Patch::Apply(&other),
        )
        .await
        .unwrap();
    let unmanaged = json!({ "apiVersion": "cilium.io/v2", "kind": "CiliumLoadBalancerIPPool", "metadata": { "name": "theirs" }, "spec": { "blocks": [{ "cidr": "127.0.98.0/28" }] } });
    admin_pools
        .create(
            &PostParams::default(),
            &serde_json::from_value(unmanaged).unwrap(),
        )
        .await
        .unwrap();
    let mut fewer = net.clone();
    fewer.pools.retain(|p| p.name == "default");
    let report = cilium
        .apply(&NetworkObjects::from_network(&fewer, PoolVersion::V2))
        .await
        .unwrap();
    assert_eq!(report.conflicts.len(), 1, "{report:?}");
    assert!(
        report.conflicts[0].message.contains("helm"),
        "{}",
        report.conflicts[0].message
    );
    assert_eq!(report.deleted, ["CiliumLoadBalancerIPPool/vlan20"]);
    let names: Vec<String> = admin_pools
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect();
    assert!(
        names.contains(&"theirs".to_owned()) && !names.contains(&"vlan20".to_owned()),
        "{names:?}"
    );
    // v2alpha1 pools are still served by the pinned Cilium CRD.
    CiliumApi::new(sa.clone(), PoolVersion::V2Alpha1, true)
        .apply(&NetworkObjects::from_network(&fewer, PoolVersion::V2Alpha1))
        .await
        .unwrap();

    // Node gates, as the ServiceAccount: drain evicts through the Eviction API and leaves
    // DaemonSet pods; vixen uncordons only its own cordon; deleting a Node is allowed.
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    // The service-account controller's part (no kube-controller-manager in the lab).
    create(
        &Api::<ServiceAccount>::namespaced(admin.clone(), "default"),
        json!({ "metadata": { "name": "default" } }),
    )
    .await;
    let pod = |name: &str, owner: Option<serde_json::Value>| {
        let mut p = json!({ "metadata": { "name": name }, "spec": { "nodeName": "cp1", "containers": [{ "name": "app", "image": "registry.k8s.io/pause:3.10" }] } });
        if let Some(o) = owner {
            p["metadata"]["ownerReferences"] = json!([o]);
        }
        p
    };
    create(&pods, pod("web", None)).await;
    create(&pods, pod("agent-x", Some(json!({ "apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "00000000-0000-0000-0000-000000000001", "controller": true })))).await;
    let gates = Nodes::new(sa.clone());
    let report = gates
        .drain("cp1", Duration::from_secs(60), Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(report.evicted, ["default/web"]);
    // DaemonSet pods and the control plane's mirror pods (the lab kubelet posts them) stay.
    assert!(
        report.ignored.contains(&"default/agent-x".to_owned()),
        "{report:?}"
    );
    assert!(
        report
            .ignored
            .iter()
            .all(|p| p == "default/agent-x" || p.starts_with("kube-system/kube-")),
        "{report:?}"
    );
    assert!(pods.get_opt("web").await.unwrap().is_none());
    let cp1 = gates.get("cp1").await.unwrap().unwrap();
    assert!(cp1.unschedulable && cp1.cordoned_by_vixen, "{cp1:?}");
    gates.uncordon("cp1").await.unwrap();
    let cp1 = gates.get("cp1").await.unwrap().unwrap();
    assert!(!cp1.unschedulable && !cp1.cordoned_by_vixen, "{cp1:?}");
    let admin_nodes: Api<Node> = Api::all(admin.clone());
    admin_nodes
        .patch(
            "cp1",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "unschedulable": true } })),
        )
        .await
        .unwrap();
    gates.cordon("cp1").await.unwrap();
    gates.uncordon("cp1").await.unwrap();
    assert!(
        gates.get("cp1").await.unwrap().unwrap().unschedulable,
        "an operator's cordon stays"
    );
    // Pods are evicted, never deleted outright.
    assert!(forbidden_call(
        Api::<Pod>::namespaced(sa.clone(), "default")
            .delete("agent-x", &DeleteParams::default())
            .await
            .map(|_| ())
    ));

    // Least privilege: no Secrets, nothing outside what vixen calls.
    let forbidden =
        |r: Result<_, kube::Error>| matches!(r, Err(kube::Error::Api(s)) if s.code == 403);
    assert!(forbidden(
        Api::<Secret>::namespaced(sa.clone(), "vixen-system")
            .list(&ListParams::default())
            .await
            .map(|_| ())
    ));
    assert!(forbidden(
        Api::<Secret>::namespaced(sa.clone(), "kube-system")
            .get("any")
            .await
            .map(|_| ())
    ));
    assert!(forbidden(
        Api::<ConfigMap>::namespaced(sa.clone(), "kube-system")
            .get("any")
            .await
            .map(|_| ())
    ));
    assert!(forbidden(
        Api::<ConfigMap>::namespaced(sa.clone(), "vixen-system")
            .delete("vixen-state", &DeleteParams::default())
            .await
            .map(|_| ())
    ));
    assert!(forbidden(
        Api::<Namespace>::all(sa.clone())
            .list(&ListParams::default())
            .await
            .map(|_| ())
    ));
    assert!(forbidden(
        Api::<Node>::all(sa.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({ "metadata": { "name": "rogue" } })).unwrap()
            )
            .await
            .map(|_| ())
    ));
    gates.delete("cp1").await.unwrap();
}

fn forbidden_call(r: Result<(), kube::Error>) -> bool {
    matches!(r, Err(kube::Error::Api(s)) if s.code == 403)
}
