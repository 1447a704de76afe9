//! The CNI's manifests on a real kube-apiserver (issue 17): Talos (the lab, as
//! manifest_apply.go) creates the inline manifests once at bootstrap and never updates them;
//! vixen's `ManifestSets` then takes them over by server-side apply (field manager `vixen`, with
//! force over `talos`), updates them when Git changes and prunes what left Git, only when it is
//! labelled as vixen's. Skipped loudly without the peer, except in CI where it is required.

#[path = "../../lab/tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{Value, json};
use vixen_k8s::ManifestSets;
use vixen_lab::{Fault, Lab, LabOptions, Role};
use vixen_talos::ApplyMode;

const NET: u8 = 233;
/// The lab of the cut-short apply test.
const NET_CUT: u8 = 235;
/// The lab of the preview test.
const NET_PREVIEW: u8 = 236;

const CILIUM: &str = include_str!("../../model/tests/testdata/cilium.yaml");

/// A ConfigMap in a namespace that comes after it in the file (Talos applies namespaces first).
const EXTRA: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\n  namespace: cni-extra\ndata:\n  a: \"1\"\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: cni-extra\n";

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("        {l}\n"))
        .collect::<String>()
}

/// The fixture's control-plane config with the two manifests inline.
fn config_with(c: &Cluster, addr: &str, endpoint: &str, cilium: &str) -> Vec<u8> {
    let mut text = String::from_utf8(c.config(Role::Controlplane, "cp1", &[addr], "v1.11.6"))
        .unwrap()
        .replace("https://127.0.0.1:6443", endpoint);
    text.push_str("  inlineManifests:\n");
    for (name, body) in [("vixen-cni-cilium", cilium), ("vixen-cni-extra", EXTRA)] {
        text.push_str(&format!(
            "    - name: {name}\n      contents: |\n{}",
            indent(body)
        ));
    }
    text.into_bytes()
}

fn docs(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .filter_map(|d| serde::Deserialize::deserialize(d).ok())
        .filter(|v: &Value| v.is_object())
        .collect()
}

async fn wait_for<T, F: AsyncFnMut() -> Option<T>>(what: &str, mut f: F) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn managers(cm: &ConfigMap) -> Vec<String> {
    cm.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect()
}

/// Faults: the control plane's Talos has not applied its manifests yet (nothing appears until
/// it does); a kind the API does not serve (its objects wait, and nothing is pruned meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn talos_creates_the_inline_manifests_once_and_vixen_keeps_them_in_step() {
    let Some(apiserver) = vixen_lab::peers::for_test(
        "kube-apiserver",
        "talos_creates_the_inline_manifests_once_and_vixen_keeps_them_in_step",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(
        &spec(NET, &[("cp1", Role::Controlplane, "v1.11.6")]),
        LabOptions {
            dir: dir.path().to_path_buf(),
            reboot_ms: 1500,
            kube: Some(vixen_lab::KubeOptions { apiserver }),
        },
    )
    .await
    .unwrap();
    let c = Cluster::generate();
    let endpoint = format!("https://127.0.{NET}.100:6443");
    let addr = format!("127.0.{NET}.11");
    lab.fault("cp1", Fault::TalosApiAccessPending)
        .await
        .unwrap();
    install(
        &c,
        &format!("127.0.{NET}.1"),
        &config_with(&c, &addr, &endpoint, CILIUM),
        &addr,
    )
    .await;
    let kubeconfig = bootstrap_kubeconfig(&c, &addr).await;
    let kube = kube_client(&kubeconfig, None).await;
    let system: Api<ConfigMap> = Api::namespaced(kube.clone(), "kube-system");
    let extra: Api<ConfigMap> = Api::namespaced(kube.clone(), "cni-extra");
    // The API answers, but this Talos has not applied its manifests.
    wait_for("the API server", async || {
        system.list(&Default::default()).await.ok()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(system.get_opt("cilium-config").await.unwrap().is_none());

    lab.fault("cp1", Fault::TalosApiAccessReady).await.unwrap();
    let cm = wait_for("cilium-config", async || {
        system.get_opt("cilium-config").await.ok().flatten()
    })
    .await;
    assert_eq!(managers(&cm), ["talos"]);
    assert_eq!(cm.data.unwrap()["kube-proxy-replacement"], "true");
    // The ConfigMap before its namespace in the file: created, the namespace came first.
    wait_for("cni-extra/extra", async || {
        extra.get_opt("extra").await.ok().flatten()
    })
    .await;
    let ds: Api<DaemonSet> = Api::namespaced(kube.clone(), "kube-system");
    assert!(ds.get_opt("cilium").await.unwrap().is_some());

    // Talos never updates an object that exists: a changed inline manifest changes nothing.
    let changed = CILIUM.replace("ipam: kubernetes", "ipam: cluster-pool");
    admin(&c, &addr)
        .apply_configuration(
            &config_with(&c, &addr, &endpoint, &changed),
            ApplyMode::Auto,
            false,
            None,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cm = system.get("cilium-config").await.unwrap();
    assert_eq!(cm.data.unwrap()["ipam"], "kubernetes");

    // vixen takes the set over (force over `talos`) and applies Git's version.
    let ns: Api<Namespace> = Api::all(kube.clone());
    ns.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "vixen-system"}})).unwrap(),
    )
    .await
    .unwrap();
    let sets = ManifestSets::new(kube.clone(), "vixen-system");
    let mut objects = docs(&changed);
    objects.extend(docs(EXTRA));
    let report = sets.apply("cni", &objects).await.unwrap();
    assert_eq!(report.applied.len(), 5, "{report:?}");
    assert!(report.pruned.is_empty() && report.deferred.is_empty());
    let cm = system.get("cilium-config").await.unwrap();
    assert!(
        managers(&cm).contains(&"vixen".to_string()),
        "{:?}",
        managers(&cm)
    );
    assert_eq!(cm.data.as_ref().unwrap()["ipam"], "cluster-pool");
    assert_eq!(
        cm.metadata.labels.unwrap()["vixen.dev/set"],
        "cni",
        "labelled as the set's"
    );

    // An object nobody labelled as vixen's, in the same namespace: never pruned.
    extra
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "theirs", "namespace": "cni-extra"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();

    // Fault: one object of a kind the API does not serve (no Cilium CRDs here): it waits, and
    // nothing is pruned meanwhile, although `extra` left Git.
    let mut next = docs(&changed);
    next.extend(docs(EXTRA).into_iter().filter(|o| o["kind"] == "Namespace"));
    let mut with_pool = next.clone();
    with_pool.push(json!({
        "apiVersion": "cilium.io/v2", "kind": "CiliumLoadBalancerIPPool",
        "metadata": {"name": "lab"}, "spec": {"blocks": [{"cidr": "127.0.233.240/28"}]},
    }));
    let report = sets.apply("cni", &with_pool).await.unwrap();
    assert_eq!(
        report.deferred,
        ["CiliumLoadBalancerIPPool lab"],
        "{report:?}"
    );
    assert!(report.pruned.is_empty(), "{report:?}");
    assert!(extra.get_opt("extra").await.unwrap().is_some());

    let report = sets.apply("cni", &next).await.unwrap();
    assert_eq!(report.pruned, ["ConfigMap cni-extra/extra"], "{report:?}");
    assert!(extra.get_opt("extra").await.unwrap().is_none(), "pruned");
    assert!(
        extra.get_opt("theirs").await.unwrap().is_some(),
        "not vixen's"
    );
    assert!(system.get_opt("cilium-config").await.unwrap().is_some());

    // The lab posts the status the DaemonSet controller would (one pod per registered node,
    // ready while its node is): the rollout on the one node is read as finished, and a missing
    // DaemonSet is told apart.
    let progress = sets
        .daemonset_progress("kube-system", "cilium")
        .await
        .unwrap();
    assert!(
        progress.is_some_and(|p| p.observed && p.desired == 1 && p.unfinished(0).is_none()),
        "{progress:?}"
    );
    assert_eq!(
        sets.daemonset_progress("kube-system", "nope")
            .await
            .unwrap(),
        None
    );
    lab.shutdown().await;
}

/// A bootstrapped one-node lab on 127.0.`net`.x and an admin client, once the API server has
/// created `default` (it does so itself, a moment after it answers).
async fn one_node_api(net: u8, dir: &std::path::Path, test: &str) -> Option<(Lab, kube::Client)> {
    let apiserver = vixen_lab::peers::for_test("kube-apiserver", test)?;
    let lab = Lab::start(
        &spec(net, &[("cp1", Role::Controlplane, "v1.11.6")]),
        LabOptions {
            dir: dir.to_path_buf(),
            reboot_ms: 1500,
            kube: Some(vixen_lab::KubeOptions { apiserver }),
        },
    )
    .await
    .unwrap();
    let c = Cluster::generate();
    let addr = format!("127.0.{net}.11");
    let cfg = String::from_utf8(c.config(Role::Controlplane, "cp1", &[&addr], "v1.11.6"))
        .unwrap()
        .replace(
            "https://127.0.0.1:6443",
            &format!("https://127.0.{net}.100:6443"),
        );
    install(&c, &format!("127.0.{net}.1"), cfg.as_bytes(), &addr).await;
    let kube = kube_client(&bootstrap_kubeconfig(&c, &addr).await, None).await;
    let namespaces: Api<Namespace> = Api::all(kube.clone());
    wait_for("the default namespace", async || {
        namespaces.get_opt("default").await.ok().flatten()
    })
    .await;
    Some((lab, kube))
}

/// Faults: an apply cut short between two objects, and a kind not served when its object was
/// first recorded. The cut is made by the API server refusing the set's second object (a
/// ConfigMap key Kubernetes rejects): that leaves the cluster as an agent SIGKILLed between the
/// two patches would, the first object created and the end of the apply (the inventory) never
/// reached. Once both objects leave Git, the created one must be pruned, not orphaned. The
/// object of a kind served late names no namespace: it goes to `default` once served, and is
/// not then pruned as if it were another object that left Git.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_cut_short_leaves_nothing_a_later_prune_cannot_find() {
    let dir = tempfile::tempdir().unwrap();
    let Some((lab, kube)) = one_node_api(
        NET_CUT,
        dir.path(),
        "an_apply_cut_short_leaves_nothing_a_later_prune_cannot_find",
    )
    .await
    else {
        return;
    };
    let cms: Api<ConfigMap> = Api::namespaced(kube.clone(), "default");
    let sets = ManifestSets::new(kube.clone(), "kube-system");
    let cm = |name: &str, key: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
               "data": {key: "1"}})
    };

    // Commit 1: `early` is created, `refused` is refused; the apply stops there.
    let err = sets
        .apply("addons", &[cm("early", "a"), cm("refused", "not a key!")])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("ConfigMap default/refused"), "{err}");
    assert!(cms.get_opt("early").await.unwrap().is_some());

    // Commit 2: both left Git. What the cut-short apply created is pruned with them.
    let report = sets.apply("addons", &[cm("kept", "a")]).await.unwrap();
    assert_eq!(report.pruned, ["ConfigMap default/early"], "{report:?}");
    assert!(
        cms.get_opt("early").await.unwrap().is_none(),
        "the object the cut-short apply created was orphaned"
    );
    assert!(cms.get_opt("kept").await.unwrap().is_some());

    // A custom object that names no namespace, before its CRD is served: it waits.
    let widget = json!({"apiVersion": "example.com/v1", "kind": "Widget",
                        "metadata": {"name": "w"}, "spec": {"size": 1}});
    let report = sets
        .apply("widgets", std::slice::from_ref(&widget))
        .await
        .unwrap();
    assert_eq!(report.deferred, ["Widget w"], "{report:?}");
    let crds: Api<CustomResourceDefinition> = Api::all(kube.clone());
    crds.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                     "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                     "versions": [{"name": "v1", "served": true, "storage": true,
                                   "schema": {"openAPIV3Schema": {"type": "object",
                                     "x-kubernetes-preserve-unknown-fields": true}}}]},
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let widgets = Api::<DynamicObject>::namespaced_with(
        kube.clone(),
        "default",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("example.com", "v1", "Widget"),
            "widgets",
        ),
    );
    // Served once discovery lists it (as `kubectl api-resources` would; a list by its path
    // answers a moment earlier).
    let gvk = GroupVersionKind::gvk("example.com", "v1", "Widget");
    wait_for("the Widget kind in discovery", async || {
        kube::discovery::pinned_kind(&kube, &gvk).await.ok()
    })
    .await;
    // Served now: applied in `default`, and kept on this apply and the next.
    for _ in 0..2 {
        let report = sets
            .apply("widgets", std::slice::from_ref(&widget))
            .await
            .unwrap();
        assert_eq!(report.applied, ["Widget default/w"], "{report:?}");
        assert!(report.pruned.is_empty(), "{report:?}");
        assert!(widgets.get_opt("w").await.unwrap().is_some(), "pruned");
    }
    lab.shutdown().await;
}

/// `vixen plan`'s view of a set: what an apply would create, change and prune, and what the API
/// server would refuse, read by server-side dry runs; the preview writes nothing (checked on the
/// API server: no object created, none changed, the inventory's resourceVersion kept). Faults:
/// an object the API server refuses, and a kind not served yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_names_what_an_apply_would_do_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some((lab, kube)) = one_node_api(
        NET_PREVIEW,
        dir.path(),
        "a_preview_names_what_an_apply_would_do_and_writes_nothing",
    )
    .await
    else {
        return;
    };
    let cms: Api<ConfigMap> = Api::namespaced(kube.clone(), "default");
    let system: Api<ConfigMap> = Api::namespaced(kube.clone(), "kube-system");
    let sets = ManifestSets::new(kube.clone(), "kube-system");
    let cm = |name: &str, value: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
               "data": {"a": value}})
    };
    sets.apply(
        "addons",
        &[cm("same", "1"), cm("edited", "1"), cm("leaving", "1")],
    )
    .await
    .unwrap();
    let version = |cm: Option<ConfigMap>| cm.and_then(|c| c.metadata.resource_version);
    let inventory = version(system.get_opt("vixen-set-addons").await.unwrap());
    assert!(inventory.is_some());

    let bad = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bad"},
                     "data": {"not a key!": "1"}});
    let widget = json!({"apiVersion": "example.com/v1", "kind": "Widget",
                        "metadata": {"name": "w"}});
    let next = [cm("same", "1"), cm("edited", "2"), cm("new", "1"), bad];
    let preview = sets.preview_in("addons", &next, "default").await.unwrap();
    assert_eq!(preview.create, ["ConfigMap default/new"], "{preview:?}");
    assert_eq!(preview.change, ["ConfigMap default/edited"], "{preview:?}");
    assert_eq!(preview.prune, ["ConfigMap default/leaving"], "{preview:?}");
    assert_eq!(preview.unchanged, 1, "{preview:?}");
    assert_eq!(preview.refused.len(), 1, "{preview:?}");
    assert!(
        preview.refused[0].starts_with("ConfigMap default/bad: "),
        "{preview:?}"
    );
    let line = preview.summary("addons");
    assert!(
        line.starts_with("addons: 1 to create (ConfigMap default/new), 1 to change"),
        "{line}"
    );
    // Nothing was written.
    assert!(cms.get_opt("new").await.unwrap().is_none());
    assert_eq!(cms.get("edited").await.unwrap().data.unwrap()["a"], "1");
    assert!(cms.get_opt("leaving").await.unwrap().is_some());
    assert_eq!(
        version(system.get_opt("vixen-set-addons").await.unwrap()),
        inventory
    );

    // Git as the cluster is: no changes. A kind not served yet: it waits, and nothing is
    // counted as pruned meanwhile (as the apply would not prune).
    let same = [cm("same", "1"), cm("edited", "1"), cm("leaving", "1")];
    let preview = sets.preview_in("addons", &same, "default").await.unwrap();
    assert!(preview.is_empty(), "{preview:?}");
    assert_eq!(preview.unchanged, 3);
    let preview = sets
        .preview_in("addons", &[cm("same", "1"), widget], "default")
        .await
        .unwrap();
    assert_eq!(preview.waiting, ["Widget w"], "{preview:?}");
    assert!(preview.prune.is_empty(), "{preview:?}");
    lab.shutdown().await;
}
