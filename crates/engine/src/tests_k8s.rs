//! Kubernetes upgrades on the fakes: each node's kubelet, and on a control plane its static
//! pods, must report the new version before the next node gets its config.

use std::collections::BTreeMap;

use vixen_k8s::NodeView;

use crate::fake::FakeCluster;
use crate::tests::{desired, engine_with, store_of};
use crate::{Configs, Outcome};

const OLD: &str = "kubernetes: v1.34.1\n";
const NEW: &str = "kubernetes: v1.35.0\n";

/// 3 control planes and a worker on Kubernetes 1.34.1, with a Kubernetes API.
fn on_134() -> FakeCluster {
    let c = FakeCluster::new(3, 1, "v1.12.2");
    c.with(|w| {
        let mut views = BTreeMap::new();
        for n in &mut w.nodes {
            n.config = Some(OLD.into());
            n.booted_config = Some(OLD.into());
            views.insert(
                n.name.clone(),
                NodeView {
                    name: n.name.clone(),
                    ready: true,
                    unschedulable: false,
                    cordoned_by_vixen: false,
                    os_image: String::new(),
                    kubelet_version: "v1.34.1".into(),
                },
            );
        }
        w.kube = Some(views);
    });
    c
}

async fn reconcile(
    c: &FakeCluster,
    store: &crate::fake::MemoryStore,
    d: &vixen_plan::Desired,
    configs: &Configs,
) -> Outcome {
    engine_with(c, store, None)
        .reconcile(d, configs)
        .await
        .unwrap()
        .outcome
}

fn applied(c: &FakeCluster) -> Vec<String> {
    c.with(|w| {
        w.calls
            .iter()
            .filter(|c| c.method == "apply")
            .map(|c| c.address.clone())
            .collect()
    })
}

/// Issue 14. Fault: cp-2's new kube-apiserver never becomes Ready (a crash loop after the
/// upgrade). The rollout stops at cp-2 and says why; cp-3 and the worker keep 1.34.1, so two
/// API servers of three still serve. Once cp-2's API server is Ready the rollout goes on.
/// Fails when the static-pod gate is removed (cp-3 then gets the new config at once).
#[tokio::test]
async fn kubernetes_upgrade_waits_for_each_control_planes_static_pods() {
    let c = on_134();
    let (old, _) = desired(&c, "v1.12.2", OLD, "cluster");
    let store = store_of(&c, &old);
    let (mut d, configs) = desired(&c, "v1.12.2", NEW, "cluster");
    d.kubernetes_version = "1.35.0".parse().unwrap();
    c.with(|w| w.apiserver_stuck.insert("cp-2".into()));

    let outcome = reconcile(&c, &store, &d, &configs).await;
    assert!(!outcome.converged(), "{outcome:?}");
    assert_eq!(applied(&c), ["10.0.0.1", "10.0.0.2"], "{outcome:?}");
    let why = format!("{outcome:?}");
    assert!(why.contains("kube-apiserver"), "{why}");

    c.with(|w| w.apiserver_stuck.clear());
    let outcome = reconcile(&c, &store, &d, &configs).await;
    assert!(outcome.converged(), "{outcome:?}");
    let all = applied(&c);
    for at in ["10.0.0.3", "10.0.0.4"] {
        assert!(all.contains(&at.to_string()), "{all:?}");
    }
    c.with(|w| {
        assert!(w.nodes.iter().all(|n| n.config.as_deref() == Some(NEW)));
    });
}

/// Issue 17. Fault: the CNI's DaemonSet is still rolling out (vixen just applied new Cilium
/// manifests). A change that reboots every node waits: no node is touched, and the reason names
/// the DaemonSet. A live change goes on meanwhile. Once the rollout is done the reboots follow.
/// Fails when the CNI gate is removed.
#[tokio::test]
async fn no_node_is_disrupted_while_the_cni_rolls_out() {
    let c = on_134();
    let (old, _) = desired(&c, "v1.12.2", "", "machine.env");
    let store = store_of(&c, &old);
    let (mut d, configs) = desired(&c, "v1.12.2", "env TZ", "machine.env");
    d.network_rollout = Some("kube-system/cilium".into());
    c.with(|w| w.daemonsets.insert("kube-system/cilium".into(), rolling()));
    let outcome = reconcile(&c, &store, &d, &configs).await;
    let why = format!("{outcome:?}");
    assert!(!outcome.converged(), "{why}");
    assert!(
        why.contains("the CNI is rolling out (DaemonSet kube-system/cilium: 1 of 4 pods updated)"),
        "{why}"
    );
    assert!(applied(&c).is_empty(), "no node touched: {why}");

    // A change Talos applies live disrupts nothing: it is not held.
    let l = on_134();
    let (before, _) = desired(&l, "v1.12.2", "", "machine.nodeLabels");
    let (mut live, live_configs) = desired(&l, "v1.12.2", "label", "machine.nodeLabels");
    live.network_rollout = d.network_rollout.clone();
    l.with(|w| w.daemonsets.insert("kube-system/cilium".into(), rolling()));
    let outcome = reconcile(&l, &store_of(&l, &before), &live, &live_configs).await;
    assert!(outcome.converged(), "{outcome:?}");
    assert_eq!(applied(&l).len(), 4);

    c.with(|w| {
        w.daemonsets
            .insert("kube-system/cilium".into(), rolled_out())
    });
    let outcome = reconcile(&c, &store, &d, &configs).await;
    assert!(outcome.converged(), "{outcome:?}");
}

/// Cilium's DaemonSet with 1 of 4 pods on the new template.
fn rolling() -> vixen_k8s::DaemonSetProgress {
    vixen_k8s::DaemonSetProgress {
        observed: true,
        desired: 4,
        updated: 1,
        available: 3,
    }
}

fn rolled_out() -> vixen_k8s::DaemonSetProgress {
    vixen_k8s::DaemonSetProgress {
        observed: true,
        desired: 4,
        updated: 4,
        available: 4,
    }
}
