//! Flags and feature gates a Kubernetes version no longer has: a component started with one of
//! them fails to start, so a patch that still sets one is refused before any node is touched
//! (at the line that sets it), not found out by an API server that never comes back.
//!
//! The facts are Kubernetes' (its CHANGELOG-1.N.md "removed" entries and the feature-gates-removed
//! page); `talosctl upgrade-k8s` refuses the same items for each upgrade path
//! (siderolabs/go-kubernetes kubernetes/upgrade/checks.go). vixen checks the target version:
//! whatever was removed at or before it cannot run there, whichever version the cluster comes
//! from.

use serde_json::Value;

use crate::yaml::Seg;

/// Where a component's flags are in the v1alpha1 document.
const COMPONENTS: [(&str, &[&str]); 4] = [
    ("kube-apiserver", &["cluster", "apiServer", "extraArgs"]),
    (
        "kube-controller-manager",
        &["cluster", "controllerManager", "extraArgs"],
    ),
    ("kube-scheduler", &["cluster", "scheduler", "extraArgs"]),
    ("kubelet", &["machine", "kubelet", "extraArgs"]),
];

/// `(minor removed in, component, flag)`.
const REMOVED_FLAGS: &[(u64, &str, &str)] = &[
    (31, "kubelet", "keep-terminated-pod-volumes"),
    (31, "kubelet", "iptables-masquerade-bit"),
    (31, "kubelet", "iptables-drop-bit"),
    (31, "kube-controller-manager", "volume-host-cidr-denylist"),
    (
        31,
        "kube-controller-manager",
        "volume-host-allow-local-loopback",
    ),
    (
        31,
        "kube-controller-manager",
        "horizontal-pod-autoscaler-upscale-delay",
    ),
    (
        31,
        "kube-controller-manager",
        "horizontal-pod-autoscaler-downscale-delay",
    ),
    (33, "kube-apiserver", "cloud-config"),
    (34, "kubelet", "cloud-config"),
    (35, "kubelet", "pod-infra-container-image"),
];

/// `(minor removed in, feature gate)`: common to every component.
const REMOVED_GATES: &[(u64, &str)] = &[
    (30, "ExpandedDNSConfig"),
    (30, "ExperimentalHostUserNamespaceDefaultingGate"),
    (30, "IPTablesOwnershipCleanup"),
    (30, "KubeletPodResources"),
    (30, "KubeletPodResourcesGetAllocatable"),
    (30, "MinimizeIPTablesRestore"),
    (30, "ProxyTerminatingEndpoints"),
    (30, "RemoveSelfLink"),
    (31, "APIPriorityAndFairness"),
    (31, "CSINodeExpandSecret"),
    (31, "ConsistentHTTPGetHandlers"),
    (31, "DefaultHostNetworkHostPortsInPodTemplates"),
    (31, "ServiceNodePortStaticSubrange"),
    (31, "SkipReadOnlyValidationGCE"),
    (32, "AllowServiceLBStatusOnNonLB"),
    (32, "CloudDualStackNodeIPs"),
    (32, "DRAControlPlaneController"),
    (32, "HPAContainerMetrics"),
    (32, "KMSv2"),
    (32, "KMSv2KDF"),
    (32, "LegacyServiceAccountTokenCleanUp"),
    (32, "MinDomainsInPodTopologySpread"),
    (32, "NewVolumeManagerReconstruction"),
    (32, "NodeOutOfServiceVolumeDetach"),
    (32, "ServerSideApply"),
    (32, "ServerSideFieldValidation"),
    (32, "StableLoadBalancerNodeSet"),
    (32, "ValidatingAdmissionPolicy"),
    (32, "ZeroLimitedNominalConcurrencyShares"),
    (33, "AppArmor"),
    (33, "AppArmorFields"),
    (33, "CPUManager"),
    (33, "DisableCloudProviders"),
    (33, "DisableKubeletCloudCredentialProviders"),
    (33, "JobPodFailurePolicy"),
    (33, "KubeProxyDrainingTerminatingNodes"),
    (33, "PDBUnhealthyPodEvictionPolicy"),
    (33, "PersistentVolumeLastPhaseTransitionTime"),
    (33, "VolumeCapacityPriority"),
    (34, "DevicePluginCDIDevices"),
    (34, "LegacySidecarContainers"),
    (34, "PodDisruptionConditions"),
    (35, "SizeMemoryBackedVolumes"),
    (35, "UserNamespacesHostNetworkSupport"),
    (36, "CSIMigrationPortworx"),
    (36, "InTreePluginPortworxUnregister"),
    (36, "WatchFromStorageWithoutResourceVersion"),
];

/// `(minor removed in, admission plugin)` of kube-apiserver's `enable-admission-plugins`.
const REMOVED_ADMISSION: &[(u64, &str)] = &[(30, "SecurityContextDeny")];

/// The first flag, feature gate or admission plugin of `main` that Kubernetes 1.`minor` no
/// longer has: the path that sets it, and why.
pub fn removed_problem(main: &Value, minor: u64) -> Option<(Vec<Seg>, String)> {
    for (component, path) in COMPONENTS {
        let Some(args) = path
            .iter()
            .try_fold(main, |v, k| v.get(*k))
            .and_then(Value::as_object)
        else {
            continue;
        };
        let at = |key: &str| {
            let mut p: Vec<Seg> = path.iter().map(|k| Seg::Key((*k).to_string())).collect();
            p.push(Seg::Key(key.to_string()));
            p
        };
        for (flag, value) in args {
            if let Some((since, ..)) = REMOVED_FLAGS
                .iter()
                .find(|(v, c, f)| *v <= minor && *c == component && f == flag)
            {
                return Some((
                    at(flag),
                    format!(
                        "{component} flag `--{flag}` was removed in Kubernetes 1.{since}: 1.{minor} does not start with it"
                    ),
                ));
            }
            let Some(text) = value.as_str() else { continue };
            if flag == "feature-gates" {
                for gate in text
                    .split(',')
                    .map(|g| g.split('=').next().unwrap_or("").trim())
                {
                    if let Some((since, _)) = REMOVED_GATES
                        .iter()
                        .find(|(v, g)| *v <= minor && *g == gate)
                    {
                        return Some((
                            at(flag),
                            format!(
                                "{component} feature gate `{gate}` was removed in Kubernetes 1.{since}: 1.{minor} does not start with it"
                            ),
                        ));
                    }
                }
            }
            if component == "kube-apiserver" && flag == "enable-admission-plugins" {
                for plugin in text.split(',').map(str::trim) {
                    if let Some((since, _)) = REMOVED_ADMISSION
                        .iter()
                        .find(|(v, p)| *v <= minor && *p == plugin)
                    {
                        return Some((
                            at(flag),
                            format!(
                                "admission plugin `{plugin}` was removed in Kubernetes 1.{since}: 1.{minor} does not start with it"
                            ),
                        ));
                    }
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_flag_removed_at_or_before_the_target_is_found_with_its_path() {
        let main = json!({"machine": {"kubelet": {"extraArgs": {
            "pod-infra-container-image": "registry.k8s.io/pause:3.10", "v": "2"}}}});
        let (path, why) = removed_problem(&main, 35).unwrap();
        assert_eq!(
            path,
            [
                "machine",
                "kubelet",
                "extraArgs",
                "pod-infra-container-image"
            ]
            .map(|k| Seg::Key(k.into()))
        );
        assert!(why.contains("removed in Kubernetes 1.35"), "{why}");
        assert!(removed_problem(&main, 34).is_none(), "still there in 1.34");
    }

    #[test]
    fn feature_gates_and_admission_plugins_are_read_from_their_lists() {
        let main = json!({"cluster": {"apiServer": {"extraArgs": {
            "feature-gates": "UserNamespacesSupport=true, LegacySidecarContainers=false",
            "enable-admission-plugins": "NodeRestriction"}}}});
        let (_, why) = removed_problem(&main, 34).unwrap();
        assert!(
            why.contains("`LegacySidecarContainers`") && why.contains("1.34"),
            "{why}"
        );
        assert!(removed_problem(&main, 33).is_none());
        let main = json!({"cluster": {"apiServer": {"extraArgs": {
            "enable-admission-plugins": "NodeRestriction,SecurityContextDeny"}}}});
        assert!(
            removed_problem(&main, 34)
                .unwrap()
                .1
                .contains("SecurityContextDeny")
        );
    }
}
