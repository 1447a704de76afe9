//! The Kubernetes side of a disruption: cordon and drain before it, Ready (on the new
//! version) before uncordon, and the kubelet and static-pod gates of a Kubernetes upgrade.

use super::*;

/// After a config change (or none), when Kubernetes lists the node with another kubelet
/// version than Git's: wait until the Node reports Git's version and is Ready, before the next
/// node, as `talosctl upgrade-k8s` waits for each kubelet.
pub(super) fn kubelet_gate(
    plan: &mut Plan,
    m: &Match<'_>,
    desired: &Desired,
    kube: Option<&KubeView>,
) {
    let want = format!("v{}", desired.kubernetes_version);
    let Some(node) = kube.and_then(|k| k.node(&m.desired.hostname)) else {
        return;
    };
    let kubelet_off = !node.kubelet_version.is_empty() && node.kubelet_version != want;
    // Listed static pods that are not all Ready on Git's version (none listed: no gate).
    let pods_off = m.desired.role == Role::Controlplane
        && !node.static_pods.is_empty()
        && !crate::state::static_pods_on(&node.static_pods, &want);
    if !kubelet_off && !pods_off {
        return;
    }
    let reason = if kubelet_off {
        format!(
            "Kubernetes {} -> {want}: the kubelet must report it before the next node",
            node.kubelet_version
        )
    } else {
        format!(
            "Kubernetes {want}: kube-apiserver, kube-controller-manager and kube-scheduler \
             must be Ready on it before the next node"
        )
    };
    plan.steps.push(step(
        &m.desired.name,
        Action::WaitKubernetes {
            node_name: m.desired.hostname.clone(),
            version: want.clone(),
        },
        reason,
        NONE,
    ));
}

/// Cordon and drain before a disruption, when Kubernetes knows the node.
pub(super) fn drain(
    plan: &mut Plan,
    name: &str,
    hostname: &str,
    kube: Option<&KubeView>,
    why: &str,
) {
    if kube.is_some_and(|k| k.node(hostname).is_some()) {
        plan.steps.push(step(
            name,
            Action::Drain {
                node_name: hostname.to_string(),
            },
            format!("{why}: its pods move first"),
            NONE,
        ));
    }
}

/// After a disruption: the Node must be Ready (on `version`) before it is uncordoned.
pub(super) fn back_in_kubernetes(
    plan: &mut Plan,
    name: &str,
    hostname: &str,
    kube: Option<&KubeView>,
    version: Option<String>,
) {
    if kube.is_some_and(|k| k.node(hostname).is_some()) {
        plan.steps.push(step(
            name,
            Action::WaitNodeReady {
                node_name: hostname.to_string(),
                version,
            },
            "Kubernetes must see the node Ready before the next one",
            NONE,
        ));
        plan.steps.push(step(
            name,
            Action::Uncordon {
                node_name: hostname.to_string(),
            },
            "Ready: it takes pods again",
            NONE,
        ));
    }
}
