//! The repo format: one type per file kind, as users write them. JSON Schemas are generated from
//! these types (`schemas/`), so their doc comments are what editors show.
//!
//! ```text
//! <repo>/cluster.yaml      ClusterFile   name, endpoint, versions, secrets, patches, policies,
//!                                        backup
//! <repo>/nodes/*.yaml      NodeFile      one node per file
//! <repo>/network.yaml      NetworkFile   Cilium LB IP pools and L2 announcement policies
//! <repo>/patches/*.yaml    Talos config patches (strategic merge or RFC 6902)
//! <repo>/secrets/*.sops.yaml  the Talos secrets bundle, SOPS-encrypted
//! ```

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `cluster.yaml`: the cluster as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterFile {
    /// Cluster name (DNS label), written into every machine config as `cluster.clusterName`.
    pub name: String,
    /// Kubernetes API endpoint, e.g. `https://10.0.0.100:6443` (the VIP) or a DNS name.
    pub endpoint: String,
    /// Talos version and installer image.
    pub talos: TalosSpec,
    /// Kubernetes version.
    pub kubernetes: KubernetesSpec,
    /// Path, relative to the repo, of the Talos secrets bundle (`talosctl gen secrets` format),
    /// SOPS-encrypted, e.g. `secrets/talos.sops.yaml`; or `{file: ..., plaintext: true}` for a
    /// bundle kept in clear (tests, throwaway labs).
    #[schemars(with = "SecretsRefForm")]
    pub secrets: SecretsRef,
    /// Pod and service networks of the cluster.
    #[serde(default)]
    pub cluster_network: ClusterNetwork,
    /// The CNI: Talos' default Flannel, or Cilium delivered by vixen from manifests in the repo.
    #[serde(default, skip_serializing_if = "CniSpec::is_default")]
    pub cni: CniSpec,
    /// Manifest files of the infrastructure layer (relative to the repo), applied after the
    /// CNI in this order by server-side apply, and pruned when they leave Git. `*.sops.yaml`
    /// files are decrypted with the cluster's age key first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addons: Vec<String>,
    /// The handover of the apps to Flux or Argo CD: vixen installs the tool, points it at the
    /// apps path and gives it the age key; the tool owns everything it deploys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitops: Option<GitopsSpec>,
    /// Config patches applied to groups of nodes, in the order all -> role -> node.
    #[serde(default)]
    pub patches: GroupPatches,
    /// How upgrades roll out.
    #[serde(default)]
    pub upgrade: UpgradePolicy,
    /// What happens to a node that leaves Git.
    #[serde(default)]
    pub removal: Removal,
    /// What vixen does when a node's running config was changed behind its back (drift), as
    /// Talos' dry-run apply on each resync tells.
    #[serde(default)]
    pub drift: Drift,
    /// etcd snapshots: when, where, how many, and before which risky steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<crate::backup::BackupSpec>,
}

/// Where the secrets bundle is and whether it may be in clear. Reads as the path (`Deref` to
/// `str`), so code that only wants the path keeps working with the plain string form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretsRef {
    /// Path relative to the repo root.
    pub file: String,
    /// The bundle is plaintext on purpose (never for a real cluster).
    pub plaintext: bool,
}

/// The two ways `secrets:` is written (for the schema).
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum SecretsRefForm {
    /// Path, relative to the repo, of the SOPS-encrypted bundle, e.g. `secrets/talos.sops.yaml`.
    Path(String),
    /// The bundle file, with `plaintext: true` when it is deliberately not encrypted.
    File(SecretsFile),
}

/// `secrets: {file: ..., plaintext: true}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SecretsFile {
    /// Path, relative to the repo, of the bundle.
    file: String,
    /// `true` accepts a bundle that is not SOPS-encrypted. Without it, a plaintext bundle is
    /// refused.
    #[serde(default)]
    plaintext: bool,
}

impl std::ops::Deref for SecretsRef {
    type Target = str;
    fn deref(&self) -> &str {
        &self.file
    }
}

impl AsRef<std::path::Path> for SecretsRef {
    fn as_ref(&self) -> &std::path::Path {
        std::path::Path::new(&self.file)
    }
}

impl std::fmt::Display for SecretsRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.file)
    }
}

impl Serialize for SecretsRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.plaintext {
            SecretsFile {
                file: self.file.clone(),
                plaintext: true,
            }
            .serialize(s)
        } else {
            s.serialize_str(&self.file)
        }
    }
}

impl<'de> Deserialize<'de> for SecretsRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SecretsRef;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a path, or a map with `file` and `plaintext`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SecretsRef, E> {
                Ok(SecretsRef {
                    file: v.to_string(),
                    plaintext: false,
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<SecretsRef, A::Error> {
                let f = SecretsFile::deserialize(serde::de::value::MapAccessDeserializer::new(m))?;
                Ok(SecretsRef {
                    file: f.file,
                    plaintext: f.plaintext,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Talos version and where its installer comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TalosSpec {
    /// Talos version, e.g. `v1.11.6`.
    pub version: String,
    /// Installer image repository without tag (default `ghcr.io/siderolabs/installer`, from Talos
    /// 1.14 the Image Factory's installer of the empty schematic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installer: Option<String>,
    /// Image Factory schematic ID (64 hex characters); the installer becomes
    /// `factory.talos.dev/installer/<schematic>`. Exclusive with `installer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schematic: Option<String>,
}

/// Kubernetes version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesSpec {
    /// Kubernetes version, e.g. `1.34.1`.
    pub version: String,
}

/// Pod and service networks (Talos `cluster.network`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterNetwork {
    /// Pod CIDRs.
    #[serde(default = "default_pod_subnets")]
    pub pod_subnets: Vec<String>,
    /// Service CIDRs.
    #[serde(default = "default_service_subnets")]
    pub service_subnets: Vec<String>,
    /// Cluster DNS domain.
    #[serde(default = "default_dns_domain")]
    pub dns_domain: String,
}

fn default_pod_subnets() -> Vec<String> {
    vec!["10.244.0.0/16".into()]
}
fn default_service_subnets() -> Vec<String> {
    vec!["10.96.0.0/12".into()]
}
fn default_dns_domain() -> String {
    "cluster.local".into()
}

impl Default for ClusterNetwork {
    fn default() -> Self {
        Self {
            pod_subnets: default_pod_subnets(),
            service_subnets: default_service_subnets(),
            dns_domain: default_dns_domain(),
        }
    }
}

/// The cluster's CNI (Talos `cluster.network.cni`). The CNI belongs to the infrastructure layer:
/// nodes need networking before any app GitOps tool can run, so vixen owns it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CniSpec {
    /// `flannel` (Talos' default, with kube-proxy), `cilium` (vixen delivers the manifests of
    /// `manifests`), or `none` (the CNI is installed by other means).
    #[serde(default)]
    pub name: CniName,
    /// Cilium replaces kube-proxy: Talos deploys no kube-proxy (`cluster.proxy.disabled`). The
    /// manifests must have been rendered with `kubeProxyReplacement=true` as well.
    #[serde(default)]
    pub kube_proxy_replacement: bool,
    /// Manifest files, relative to the repo, rendered offline and pinned in Git (`helm template
    /// cilium cilium/cilium --namespace kube-system ...` or `cilium install --dry-run`). The
    /// first control plane gets them as Talos inline manifests, so it comes up with networking;
    /// afterwards vixen keeps them in step by server-side apply.
    #[serde(default)]
    pub manifests: Vec<String>,
}

impl CniSpec {
    /// Talos' default Flannel with kube-proxy (nothing written in `cluster.yaml`).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Which CNI the cluster runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CniName {
    /// Talos' built-in Flannel.
    #[default]
    Flannel,
    /// Cilium, from the manifests in the repo.
    Cilium,
    /// No CNI from Talos or vixen.
    None,
}

/// `gitops:`: the app GitOps tool vixen hands the cluster's apps to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitopsSpec {
    /// `flux` or `argocd`.
    pub tool: GitopsTool,
    /// The tool's install manifests, relative to the repo, pinned in Git: the output of
    /// `flux install --export`, or Argo CD's `install.yaml`. They must hold the tool's CRDs.
    pub manifests: Vec<String>,
    /// The Git URL the tool pulls the apps from (`https://`, `http://` or `ssh://`).
    pub url: String,
    /// The branch to follow.
    #[serde(default = "default_gitops_branch")]
    pub branch: String,
    /// The apps folder in that repository, relative to its root (Flux Kustomization
    /// `spec.path`, Argo CD Application `spec.source.path`).
    #[serde(default = "default_gitops_path")]
    pub path: String,
    /// Flux only: how often it pulls and applies, a Go duration such as `1m` (default `1m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// A Secret in the tool's namespace with the Git credentials of a private repository,
    /// delivered by you (e.g. as a SOPS-encrypted addon). Flux: `GitRepository.spec.secretRef`;
    /// Argo CD: the repository Secret itself (vixen then writes none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
}

fn default_gitops_branch() -> String {
    "main".into()
}
fn default_gitops_path() -> String {
    "apps".into()
}

/// Which app GitOps tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GitopsTool {
    /// Flux: a GitRepository and a Kustomization `flux-system/apps`, the age key as
    /// `flux-system/sops-age` (`age.agekey`).
    Flux,
    /// Argo CD: a repository Secret and the root Application `argocd/apps` (app of apps), the
    /// age key as `argocd/sops-age` (`keys.txt`, as KSOPS and helm-secrets read it).
    Argocd,
}

/// Patch files (paths relative to the repo) for groups of nodes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupPatches {
    /// Applied to every node, first.
    #[serde(default)]
    pub all: Vec<String>,
    /// Applied to control planes, after `all`.
    #[serde(default)]
    pub controlplane: Vec<String>,
    /// Applied to workers, after `all`.
    #[serde(default)]
    pub worker: Vec<String>,
}

/// Upgrade rollout policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpgradePolicy {
    /// How long a node must stay healthy after an upgrade before the next node starts, as a
    /// duration such as `30s`, `2m` or `0s`.
    #[serde(default = "default_stabilization")]
    pub stabilization: String,
    /// How many workers may be disrupted at once (control planes always go one at a time).
    #[serde(default = "default_worker_concurrency")]
    pub worker_concurrency: u32,
}

fn default_stabilization() -> String {
    "30s".into()
}
fn default_worker_concurrency() -> u32 {
    1
}

impl Default for UpgradePolicy {
    fn default() -> Self {
        Self {
            stabilization: default_stabilization(),
            worker_concurrency: 1,
        }
    }
}

/// What vixen does to a node removed from Git.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Removal {
    /// Leave etcd (control planes), then reset the node gracefully back to maintenance mode.
    #[default]
    Reset,
    /// Leave etcd (control planes) but do not reset: the node keeps its disks.
    Keep,
}

/// What vixen does about a node whose running config drifted from the one rendered from Git.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Drift {
    /// Report it and apply the rendered config again, as a normal step under the same gates.
    #[default]
    Correct,
    /// Only report it (metric, Event, `Drifted` condition); change nothing.
    Report,
}

/// A node's role.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs etcd and the Kubernetes control plane.
    Controlplane,
    /// Runs workloads only.
    Worker,
}

impl Role {
    /// The Talos `machine.type` value.
    pub fn machine_type(self) -> &'static str {
        match self {
            Role::Controlplane => "controlplane",
            Role::Worker => "worker",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.machine_type())
    }
}

/// `nodes/<name>.yaml`: one machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeFile {
    /// Node name, unique in the cluster; vixen's handle on the node.
    pub name: String,
    /// Hostname (default: the name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `controlplane` or `worker`.
    pub role: Role,
    /// Address the node has in Talos maintenance mode (before it is configured, e.g. by DHCP).
    pub maintenance_address: String,
    /// Addresses vixen uses to reach the configured node, in order of preference (default: the
    /// addresses of the interfaces, then of their VLANs). Each must be one of the node's own.
    #[serde(default)]
    pub management_addresses: Vec<String>,
    /// Disk Talos installs to, e.g. `/dev/sda`.
    pub install_disk: String,
    /// Network interfaces.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// Kubernetes node labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Kubernetes node annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Kubernetes node taints.
    #[serde(default)]
    pub taints: Vec<Taint>,
    /// Patch files for this node alone, applied last.
    #[serde(default)]
    pub patches: Vec<String>,
}

/// A network interface (Talos `machine.network.interfaces[]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Interface {
    /// Link name, e.g. `eth0` or `enp1s0`.
    pub name: String,
    /// Static addresses in CIDR form, e.g. `192.168.1.10/24`.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Static routes.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Shared virtual IP for the Kubernetes API (control planes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<String>,
    /// Use DHCP on this link.
    #[serde(default)]
    pub dhcp: bool,
    /// MTU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// VLANs on this link.
    #[serde(default)]
    pub vlans: Vec<Vlan>,
}

/// A VLAN sub-interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Vlan {
    /// VLAN ID, 1 to 4094.
    pub id: u16,
    /// Static addresses in CIDR form.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Static routes.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Shared virtual IP on this VLAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<String>,
    /// Use DHCP on this VLAN.
    #[serde(default)]
    pub dhcp: bool,
}

/// A static route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    /// Destination in CIDR form (`0.0.0.0/0` for the default route).
    pub network: String,
    /// Gateway address.
    pub gateway: String,
    /// Route metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
}

/// A Kubernetes taint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Taint {
    /// Taint key.
    pub key: String,
    /// Taint value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: TaintEffect,
}

/// Taint effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TaintEffect {
    /// Do not schedule new pods.
    NoSchedule,
    /// Avoid scheduling new pods.
    PreferNoSchedule,
    /// Evict running pods.
    NoExecute,
}

/// `network.yaml`: Cilium load-balancer pools and L2 announcements.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkFile {
    /// `CiliumLoadBalancerIPPool`s.
    #[serde(default)]
    pub pools: Vec<Pool>,
    /// `CiliumL2AnnouncementPolicy`s.
    #[serde(default)]
    pub l2_policies: Vec<L2Policy>,
}

/// A `CiliumLoadBalancerIPPool`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pool {
    /// Object name (DNS subdomain).
    pub name: String,
    /// Blocks in CIDR form.
    #[serde(default)]
    pub cidrs: Vec<String>,
    /// Blocks as inclusive start/stop ranges.
    #[serde(default)]
    pub ranges: Vec<IpRange>,
    /// Only services matching this selector get addresses from the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_selector: Option<LabelSelector>,
    /// Keep the pool but hand out no new addresses.
    #[serde(default)]
    pub disabled: bool,
}

/// An inclusive address range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpRange {
    /// First address.
    pub start: String,
    /// Last address.
    pub stop: String,
}

/// A `CiliumL2AnnouncementPolicy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L2Policy {
    /// Object name (DNS subdomain).
    pub name: String,
    /// Interface name regexes to announce on, e.g. `^eth[0-9]+`.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Nodes that may announce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// Services announced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_selector: Option<LabelSelector>,
    /// Announce load-balancer IPs.
    #[serde(default = "yes", rename = "loadBalancerIPs")]
    pub load_balancer_ips: bool,
    /// Announce external IPs.
    #[serde(default, rename = "externalIPs")]
    pub external_ips: bool,
}

fn yes() -> bool {
    true
}

/// A Kubernetes label selector.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Labels that must match exactly.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One set-based requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    /// Label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: SelectorOperator,
    /// Values for `In` and `NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// Label selector operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SelectorOperator {
    /// Value in the set.
    In,
    /// Value not in the set.
    NotIn,
    /// Key present.
    Exists,
    /// Key absent.
    DoesNotExist,
}
