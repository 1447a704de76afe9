//! Rendering a node's Talos v1alpha1 machine config from the repo and the secrets bundle.
//!
//! ```text
//! base config (role, cluster, node, bundle)
//!   └─► cluster patches.all ─► patches.<role> ─► node patches   (each file in the order listed)
//!         └─► YAML, key order fixed by construction: same input, same bytes
//! ```
//!
//! A patch file holds one or more YAML documents. A mapping is a strategic merge patch: maps
//! merge key by key, `$patch: delete` removes a key, `machine.network.interfaces` merge by
//! `interface` and `vlans` by `vlanId` (as Talos merges them), other lists are appended and
//! scalars replaced. A mapping with `apiVersion` and `kind` is a separate config document
//! (Talos 1.12+ style) and is appended after the v1alpha1 document. A sequence is an RFC 6902
//! JSON patch applied to the v1alpha1 document.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use vixen_pki::SecretsBundle;
use zeroize::Zeroizing;

use crate::repo::{Diagnostic, Repo, Source};
use crate::types::{Interface, NodeFile, Role, Route, TaintEffect};
use crate::yaml::{self, Pos};

/// The namespace vixen runs in; the rendered config lets it reach the Talos API from there.
pub const VIXEN_NAMESPACE: &str = "vixen-system";

/// A rendered machine config: the v1alpha1 document and any extra documents from patches.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineConfig {
    /// The v1alpha1 document.
    pub main: Value,
    /// Further documents (`apiVersion`/`kind`), in patch order.
    pub extra: Vec<Value>,
}

impl MachineConfig {
    /// The config as YAML text (documents separated by `---`). Holds secrets.
    pub fn to_yaml(&self) -> String {
        let mut out = serde_yaml_ng::to_string(&self.main).expect("JSON values always serialize");
        for doc in &self.extra {
            out.push_str("---\n");
            out.push_str(&serde_yaml_ng::to_string(doc).expect("JSON values always serialize"));
        }
        out
    }
}

/// Digests of a rendered config: the whole, and each section whose change decides whether
/// Talos applies live or reboots (`machine.<key>`, `machine.features.<key>`, `cluster`, each
/// extra document). Digests only: no secret reaches the planner or the inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConfigDigest {
    /// Digest of the whole config.
    pub whole: String,
    /// Digest per section path, e.g. `machine.network`, `machine.features.kubePrism`, `cluster`.
    pub sections: std::collections::BTreeMap<String, String>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl MachineConfig {
    /// The config's digests (see [`ConfigDigest`]).
    pub fn digest(&self) -> ConfigDigest {
        let mut sections = std::collections::BTreeMap::new();
        let hash = |v: &Value| {
            sha256_hex(
                serde_json::to_string(v)
                    .expect("JSON values serialize")
                    .as_bytes(),
            )
        };
        if let Some(Value::Object(machine)) = self.main.get("machine") {
            for (k, v) in machine {
                if k == "features" {
                    if let Value::Object(features) = v {
                        for (fk, fv) in features {
                            sections.insert(format!("machine.features.{fk}"), hash(fv));
                        }
                    }
                } else {
                    sections.insert(format!("machine.{k}"), hash(v));
                }
            }
        }
        for (k, v) in self.main.as_object().into_iter().flatten() {
            if k != "machine" {
                sections.insert(k.clone(), hash(v));
            }
        }
        for (i, doc) in self.extra.iter().enumerate() {
            sections.insert(format!("document[{i}]"), hash(doc));
        }
        ConfigDigest {
            whole: sha256_hex(self.to_yaml().as_bytes()),
            sections,
        }
    }
}

/// The Image Factory's schematic without customizations (talosctl's
/// `ImageFactoryEmptySchematicID`, `cmd/talosctl/cmd/constants/constants.go`).
pub const EMPTY_SCHEMATIC: &str =
    "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";

/// The installer image for the repo's Talos version. Without `installer` or `schematic`:
/// `ghcr.io/siderolabs/installer` up to Talos 1.13, and from 1.14, which no longer publishes
/// that image (v1.14 `hack/release.toml`, "Default Installer Image"), the Image Factory's
/// installer of the empty schematic.
pub fn installer_image(repo: &Repo, talos_version: &str) -> String {
    let talos = &repo.cluster.value.talos;
    let from_1_14 = talos_version
        .parse::<crate::version::Version>()
        .is_ok_and(|v| v.minor_pair() >= (1, 14));
    let base = match (&talos.schematic, &talos.installer) {
        (Some(schematic), _) => format!("factory.talos.dev/installer/{schematic}"),
        (None, Some(installer)) => installer.clone(),
        (None, None) if from_1_14 => format!("factory.talos.dev/installer/{EMPTY_SCHEMATIC}"),
        (None, None) => "ghcr.io/siderolabs/installer".to_string(),
    };
    let tag = if talos_version.starts_with('v') {
        talos_version.to_string()
    } else {
        format!("v{talos_version}")
    };
    format!("{base}:{tag}")
}

fn k8s_tag(version: &str) -> String {
    if version.starts_with('v') {
        version.to_string()
    } else {
        format!("v{version}")
    }
}

fn strip_prefix_len(cidr: &str) -> &str {
    cidr.split('/').next().unwrap_or(cidr)
}

/// The addresses vixen uses to reach the configured node, in order of preference: the explicit
/// management addresses, else interface addresses, then VLAN addresses, then the maintenance
/// address (a DHCP-only node keeps its address).
pub fn management_addresses(node: &NodeFile) -> Vec<String> {
    let mut out: Vec<String> = node.management_addresses.clone();
    if out.is_empty() {
        for iface in &node.interfaces {
            out.extend(
                iface
                    .addresses
                    .iter()
                    .map(|a| strip_prefix_len(a).to_string()),
            );
        }
        for iface in &node.interfaces {
            for vlan in &iface.vlans {
                out.extend(
                    vlan.addresses
                        .iter()
                        .map(|a| strip_prefix_len(a).to_string()),
                );
            }
        }
    }
    if !out.contains(&node.maintenance_address) {
        out.push(node.maintenance_address.clone());
    }
    out
}

fn routes(routes: &[Route]) -> Value {
    Value::Array(
        routes
            .iter()
            .map(|r| {
                let mut m = Map::new();
                m.insert("network".into(), json!(r.network));
                m.insert("gateway".into(), json!(r.gateway));
                if let Some(metric) = r.metric {
                    m.insert("metric".into(), json!(metric));
                }
                Value::Object(m)
            })
            .collect(),
    )
}

/// The fields a link and a VLAN share, in Talos' order: addresses, routes, dhcp, mtu, vip.
fn link(
    m: &mut Map<String, Value>,
    addresses: &[String],
    link_routes: &[Route],
    dhcp: bool,
    mtu: Option<u32>,
    vip: Option<&String>,
) {
    if !addresses.is_empty() {
        m.insert("addresses".into(), json!(addresses));
    }
    if !link_routes.is_empty() {
        m.insert("routes".into(), routes(link_routes));
    }
    m.insert("dhcp".into(), json!(dhcp));
    if let Some(mtu) = mtu {
        m.insert("mtu".into(), json!(mtu));
    }
    if let Some(vip) = vip {
        m.insert("vip".into(), json!({ "ip": vip }));
    }
}

pub(crate) fn interface(iface: &Interface) -> Value {
    let mut m = Map::new();
    m.insert("interface".into(), json!(iface.name));
    link(
        &mut m,
        &iface.addresses,
        &iface.routes,
        iface.dhcp,
        iface.mtu,
        iface.vip.as_ref(),
    );
    if !iface.vlans.is_empty() {
        let vlans = iface
            .vlans
            .iter()
            .map(|v| {
                let mut vm = Map::new();
                vm.insert("vlanId".into(), json!(v.id));
                link(
                    &mut vm,
                    &v.addresses,
                    &v.routes,
                    v.dhcp,
                    None,
                    v.vip.as_ref(),
                );
                Value::Object(vm)
            })
            .collect();
        m.insert("vlans".into(), Value::Array(vlans));
    }
    Value::Object(m)
}

fn effect(e: TaintEffect) -> &'static str {
    match e {
        TaintEffect::NoSchedule => "NoSchedule",
        TaintEffect::PreferNoSchedule => "PreferNoSchedule",
        TaintEffect::NoExecute => "NoExecute",
    }
}

/// The base v1alpha1 document before patches.
fn base(repo: &Repo, node: &NodeFile, bundle: &SecretsBundle) -> Value {
    let c = &repo.cluster.value;
    let cp = node.role == Role::Controlplane;
    let certs = &bundle.certs;
    let key_if_cp = |key: &str| if cp { key.to_string() } else { String::new() };
    let k8s = k8s_tag(&c.kubernetes.version);
    let hostname = node.hostname.clone().unwrap_or_else(|| node.name.clone());
    let mgmt = management_addresses(node);

    let taints: Map<String, Value> = node
        .taints
        .iter()
        .map(|t| {
            let v = match &t.value {
                Some(v) => format!("{v}:{}", effect(t.effect)),
                None => effect(t.effect).to_string(),
            };
            (t.key.clone(), json!(v))
        })
        .collect();

    let mut features = json!({
        "rbac": true,
        "stableHostname": true,
        "apidCheckExtKeyUsage": true,
        "diskQuotaSupport": true,
        "kubePrism": { "enabled": true, "port": 7445 },
        "hostDNS": { "enabled": true, "forwardKubeDNSToHost": true },
    });
    if cp {
        // Talos only allows the Kubernetes API access feature on control planes.
        features["kubernetesTalosAPIAccess"] = json!({
            "enabled": true,
            "allowedRoles": ["os:admin"],
            "allowedKubernetesNamespaces": [VIXEN_NAMESPACE],
        });
    }

    let machine = json!({
        "type": node.role.machine_type(),
        "token": bundle.trustdinfo.token.expose(),
        "ca": { "crt": certs.os.crt, "key": key_if_cp(certs.os.key.expose()) },
        "certSANs": mgmt,
        "kubelet": {
            "image": format!("ghcr.io/siderolabs/kubelet:{k8s}"),
            "defaultRuntimeSeccompProfileEnabled": true,
            "disableManifestsDirectory": true,
        },
        "network": {
            "hostname": hostname,
            "interfaces": node.interfaces.iter().map(interface).collect::<Vec<_>>(),
        },
        "install": {
            "disk": node.install_disk,
            "image": installer_image(repo, &c.talos.version),
            "wipe": false,
        },
        "nodeLabels": node.labels,
        "nodeAnnotations": node.annotations,
        "nodeTaints": taints,
        "features": features,
    });

    let network = json!({
        "dnsDomain": c.cluster_network.dns_domain,
        "podSubnets": c.cluster_network.pod_subnets,
        "serviceSubnets": c.cluster_network.service_subnets,
    });
    let discovery = json!({
        "enabled": true,
        "registries": { "kubernetes": { "disabled": true }, "service": {} },
    });
    let cluster = if cp {
        let api_host = endpoint_host(&c.endpoint);
        let mut cluster = json!({
            "id": bundle.cluster.id,
            "secret": bundle.cluster.secret.expose(),
            "controlPlane": { "endpoint": c.endpoint },
            "clusterName": c.name,
            "network": network,
            "token": bundle.secrets.bootstraptoken.expose(),
            "secretboxEncryptionSecret": bundle.secrets.secretboxencryptionsecret.expose(),
            "ca": { "crt": certs.k8s.crt, "key": certs.k8s.key.expose() },
            "aggregatorCA": { "crt": certs.k8saggregator.crt, "key": certs.k8saggregator.key.expose() },
            "serviceAccount": { "key": certs.k8sserviceaccount.key.expose() },
            "apiServer": {
                "image": format!("registry.k8s.io/kube-apiserver:{k8s}"),
                "certSANs": [api_host],
            },
            "controllerManager": { "image": format!("registry.k8s.io/kube-controller-manager:{k8s}") },
            "proxy": { "image": format!("registry.k8s.io/kube-proxy:{k8s}") },
            "scheduler": { "image": format!("registry.k8s.io/kube-scheduler:{k8s}") },
            "discovery": discovery,
            "etcd": { "ca": { "crt": certs.etcd.crt, "key": certs.etcd.key.expose() } },
        });
        // An older bundle also has the AES-CBC key, which Talos' generator
        // puts next to the secretbox one (`generate/controlplane.go`, omitted when empty).
        if let Some(aescbc) = &bundle.secrets.aescbcencryptionsecret {
            cluster["aescbcEncryptionSecret"] = json!(aescbc.expose());
        }
        cluster
    } else {
        json!({
            "id": bundle.cluster.id,
            "secret": bundle.cluster.secret.expose(),
            "controlPlane": { "endpoint": c.endpoint },
            "clusterName": c.name,
            "network": network,
            "token": bundle.secrets.bootstraptoken.expose(),
            "ca": { "crt": certs.k8s.crt, "key": "" },
            "discovery": discovery,
        })
    };

    json!({
        "version": "v1alpha1",
        "debug": false,
        "persist": true,
        "machine": machine,
        "cluster": cluster,
    })
}

/// The host part of an `https://host:port` endpoint.
pub fn endpoint_host(endpoint: &str) -> String {
    let rest = endpoint.split("://").nth(1).unwrap_or(endpoint);
    let authority = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6).to_string();
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(h, _)| h)
        .to_string()
}

/// The patch files that apply to a node, in order, with where each is referenced.
pub fn patch_files(repo: &Repo, node: &Source<NodeFile>) -> Vec<(String, PathBuf, Vec<yaml::Seg>)> {
    let c = &repo.cluster;
    let mut out = Vec::new();
    for (i, p) in c.value.patches.all.iter().enumerate() {
        out.push((p.clone(), c.path.clone(), crate::path!["patches", "all", i]));
    }
    let (group, list) = match node.value.role {
        Role::Controlplane => ("controlplane", &c.value.patches.controlplane),
        Role::Worker => ("worker", &c.value.patches.worker),
    };
    for (i, p) in list.iter().enumerate() {
        out.push((p.clone(), c.path.clone(), crate::path!["patches", group, i]));
    }
    for (i, p) in node.value.patches.iter().enumerate() {
        out.push((p.clone(), node.path.clone(), crate::path!["patches", i]));
    }
    out
}

/// A [`Diagnostic`] at `file`:`pos` (shared by the model's renderers).
pub(crate) fn diag(file: &Path, pos: Pos, message: String, fix: &str) -> Diagnostic {
    Diagnostic {
        file: file.to_path_buf(),
        pos,
        message,
        fix: fix.to_string(),
    }
}

/// True for a patch file vixen decrypts with SOPS before applying it.
pub fn is_sops_patch(rel: &str) -> bool {
    rel.ends_with(".sops.yaml") || rel.ends_with(".sops.yml")
}

/// Everything secret that rendering needs: the bundle and the decrypted `*.sops.yaml` patches
/// (by their path as the repo names them), in buffers wiped on drop. Made by
/// [`crate::secrets::load_render_inputs`].
#[derive(Debug)]
pub struct RenderInputs {
    /// The Talos secrets bundle.
    pub bundle: SecretsBundle,
    /// Decrypted SOPS patches: path -> YAML text.
    pub patches: std::collections::BTreeMap<String, Zeroizing<String>>,
}

/// What to do with a `*.sops.yaml` patch that has no decrypted text.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encrypted {
    /// Refuse: the caller meant to render for real.
    Refuse,
    /// Leave it out (key-less validation checks it separately).
    Skip,
}

/// Renders the machine config of `node` with `bundle`. A node with a `*.sops.yaml` patch needs
/// [`render_with`] and decrypted patches.
///
/// # Errors
/// A [`Diagnostic`] naming the patch file (and line) that could not be read, parsed or applied,
/// or the patch that tried to change the machine type.
pub fn render(
    repo: &Repo,
    node: &Source<NodeFile>,
    bundle: &SecretsBundle,
) -> Result<MachineConfig, Diagnostic> {
    render_inner(repo, node, bundle, None, Encrypted::Refuse)
}

/// Renders the machine config of `node` with the bundle and decrypted patches of `inputs`.
///
/// # Errors
/// As [`render`].
pub fn render_with(
    repo: &Repo,
    node: &Source<NodeFile>,
    inputs: &RenderInputs,
) -> Result<MachineConfig, Diagnostic> {
    render_inner(
        repo,
        node,
        &inputs.bundle,
        Some(&inputs.patches),
        Encrypted::Refuse,
    )
}

pub(crate) fn render_inner(
    repo: &Repo,
    node: &Source<NodeFile>,
    bundle: &SecretsBundle,
    decrypted: Option<&std::collections::BTreeMap<String, Zeroizing<String>>>,
    encrypted: Encrypted,
) -> Result<MachineConfig, Diagnostic> {
    let mut main = base(repo, &node.value, bundle);
    crate::cni::render_into(repo, &node.value, &mut main)?;
    let mut extra = Vec::new();
    let talos_minor = repo
        .cluster
        .value
        .talos
        .version
        .parse::<crate::version::Version>()
        .map_or(13, |v| v.minor);
    let kubernetes_minor = repo
        .cluster
        .value
        .kubernetes
        .version
        .trim_start_matches('v')
        .parse::<crate::version::Version>()
        .map_or(34, |v| v.minor);
    for (rel, referenced_in, at) in patch_files(repo, node) {
        let src = if referenced_in == node.path {
            node.pos(&at)
        } else {
            repo.cluster.pos(&at)
        };
        let text = repo
            .read(&rel)
            .map_err(|r| diag(&referenced_in, src, format!("patch file {r}"), r.fix()))?;
        let file = PathBuf::from(&rel);
        let mut target = crate::patch::Target {
            main: &mut main,
            extra: &mut extra,
            node: &node.value,
            talos_minor,
            kubernetes_minor,
        };
        if is_sops_patch(&rel) {
            let plain = decrypted.and_then(|d| d.get(&rel));
            match (plain, encrypted) {
                (Some(plain), _) => {
                    let positions = yaml::parse_all(&text).ok();
                    crate::patch::apply_file(
                        &mut target,
                        &file,
                        plain,
                        positions.as_deref(),
                        true,
                    )?;
                }
                (None, Encrypted::Skip) => {}
                (None, Encrypted::Refuse) => {
                    return Err(diag(
                        &referenced_in,
                        src,
                        format!("patch file `{rel}` is SOPS-encrypted and was not decrypted"),
                        "render with the cluster's age key (vixen_model::secrets::load_render_inputs)",
                    ));
                }
            }
        } else {
            crate::patch::apply_file(&mut target, &file, &text, None, false)?;
        }
    }
    Ok(MachineConfig { main, extra })
}

/// Strategic merge of `patch` into `base` (see the module doc for the rules).
pub fn merge(base: &mut Value, patch: Value, path: &mut Vec<String>) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                if v.get("$patch").and_then(Value::as_str) == Some("delete") {
                    b.remove(&k);
                    continue;
                }
                match b.get_mut(&k) {
                    Some(existing) => {
                        path.push(k);
                        merge(existing, v, path);
                        path.pop();
                    }
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(p)) => {
            let key = match path.last().map(String::as_str) {
                Some("interfaces") => Some("interface"),
                Some("vlans") => Some("vlanId"),
                _ => None,
            };
            for item in p {
                let same = key.and_then(|key| {
                    let id = item.get(key)?;
                    b.iter_mut().find(|x| x.get(key) == Some(id))
                });
                match same {
                    Some(existing) => merge(existing, item, path),
                    None => b.push(item),
                }
            }
        }
        (b, p) => *b = p,
    }
}
