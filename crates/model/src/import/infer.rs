//! What the repo files say, read back from running configs: the secrets bundle from a control
//! plane's config (as `talosctl gen secrets --from-controlplane-config` does, Talos'
//! `secrets.NewBundleFromConfig` in `pkg/machinery/config/generate/secrets/bundle.go`), the
//! cluster file from the cluster section, and each node file from its machine section. What
//! these fields cannot say exactly is left to the patches (see `delta.rs`).

use std::collections::BTreeMap;

use serde_json::Value;
use vixen_pki::{
    BundleCerts, BundleSecrets, CertAndKey, ClusterIdentity, KeyOnly, Secret, SecretsBundle,
    TrustdInfo,
};

use super::ImportError;
use crate::render;
use crate::types::{
    ClusterFile, ClusterNetwork, Interface, NodeFile, Role, Route, SecretsRef, Taint, TaintEffect,
    Vlan,
};

fn text<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    path.split('.').try_fold(v, |v, k| v.get(k))?.as_str()
}

fn need(v: &Value, path: &str, node: &str) -> Result<String, ImportError> {
    text(v, path)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| ImportError::Field {
            node: node.to_string(),
            field: path.to_string(),
            reason: "is missing".into(),
        })
}

/// The role of a config (`init` is an old name of a control plane).
pub(crate) fn role(main: &Value) -> Option<Role> {
    match text(main, "machine.type") {
        Some("controlplane" | "init") => Some(Role::Controlplane),
        Some("worker") => Some(Role::Worker),
        _ => None,
    }
}

/// The secrets bundle of a control plane's config.
pub(crate) fn bundle(main: &Value, node: &str) -> Result<SecretsBundle, ImportError> {
    let s = |p: &str| need(main, p, node).map(Secret::new);
    let pair = |p: &str| -> Result<CertAndKey, ImportError> {
        Ok(CertAndKey {
            crt: need(main, &format!("{p}.crt"), node)?,
            key: s(&format!("{p}.key"))?,
        })
    };
    Ok(SecretsBundle {
        cluster: ClusterIdentity {
            id: need(main, "cluster.id", node)?,
            secret: s("cluster.secret")?,
        },
        secrets: BundleSecrets {
            bootstraptoken: s("cluster.token")?,
            secretboxencryptionsecret: s("cluster.secretboxEncryptionSecret")?,
            aescbcencryptionsecret: text(main, "cluster.aescbcEncryptionSecret")
                .filter(|v| !v.is_empty())
                .map(|v| Secret::new(v.to_string())),
        },
        trustdinfo: TrustdInfo {
            token: s("machine.token")?,
        },
        certs: BundleCerts {
            etcd: pair("cluster.etcd.ca")?,
            k8s: pair("cluster.ca")?,
            k8saggregator: pair("cluster.aggregatorCA")?,
            k8sserviceaccount: KeyOnly {
                key: s("cluster.serviceAccount.key")?,
            },
            os: pair("machine.ca")?,
        },
    })
}

/// The tag of an image (`...:v1.11.6` -> `v1.11.6`).
fn tag(image: &str) -> Option<(&str, &str)> {
    let name = image.split('@').next()?;
    let (repo, tag) = name.rsplit_once(':')?;
    (!tag.contains('/') && !tag.is_empty()).then_some((repo, tag))
}

/// `cluster.yaml` from a control plane's config.
pub(crate) fn cluster(main: &Value, node: &str, secrets: &str) -> Result<ClusterFile, ImportError> {
    let image = need(main, "machine.install.image", node)?;
    let bad = |field: &str, reason: &str| ImportError::Field {
        node: node.to_string(),
        field: field.into(),
        reason: reason.into(),
    };
    let (repo, talos) = tag(&image).ok_or_else(|| bad("machine.install.image", "has no tag"))?;
    let kubelet = need(main, "machine.kubelet.image", node)?;
    let (_, k8s) = tag(&kubelet).ok_or_else(|| bad("machine.kubelet.image", "has no tag"))?;
    let (installer, schematic) = match repo.strip_prefix("factory.talos.dev/installer/") {
        Some(id) => (None, Some(id.to_string())),
        None if repo == "ghcr.io/siderolabs/installer" => (None, None),
        None => (Some(repo.to_string()), None),
    };
    let list = |p: &str| -> Vec<String> {
        p.split('.')
            .try_fold(main, |v, k| v.get(k))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let defaults = ClusterNetwork::default();
    let network = ClusterNetwork {
        pod_subnets: Some(list("cluster.network.podSubnets"))
            .filter(|l| !l.is_empty())
            .unwrap_or(defaults.pod_subnets),
        service_subnets: Some(list("cluster.network.serviceSubnets"))
            .filter(|l| !l.is_empty())
            .unwrap_or(defaults.service_subnets),
        dns_domain: text(main, "cluster.network.dnsDomain")
            .map_or(defaults.dns_domain, str::to_string),
    };
    let value = serde_json::json!({
        "name": need(main, "cluster.clusterName", node)?,
        "endpoint": need(main, "cluster.controlPlane.endpoint", node)?,
        "talos": { "version": talos },
        "kubernetes": { "version": k8s.trim_start_matches('v') },
        "secrets": secrets,
    });
    let mut file: ClusterFile = serde_json::from_value(value)
        .map_err(|e| bad("cluster", &format!("does not make a cluster.yaml: {e}")))?;
    file.talos.installer = installer;
    file.talos.schematic = schematic;
    file.cluster_network = network;
    file.secrets = SecretsRef {
        file: secrets.into(),
        plaintext: false,
    };
    Ok(file)
}

/// `nodes/<name>.yaml` from a node's config, reached at `address`. Interfaces, labels,
/// annotations and taints are taken only when vixen renders them back exactly; otherwise
/// they stay in the node's patch.
pub(crate) fn node(main: &Value, address: &str, role: Role) -> NodeFile {
    let hostname = text(main, "machine.network.hostname").filter(|h| !h.is_empty());
    let name = hostname.map_or_else(
        || format!("node-{}", address.replace(['.', ':'], "-")),
        str::to_string,
    );
    let mut file = NodeFile {
        name,
        hostname: None,
        role,
        maintenance_address: address.to_string(),
        management_addresses: Vec::new(),
        install_disk: text(main, "machine.install.disk")
            .unwrap_or_default()
            .to_string(),
        interfaces: Vec::new(),
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        taints: Vec::new(),
        patches: Vec::new(),
    };
    let machine = main.get("machine");
    if let Some(list) = machine
        .and_then(|m| m.pointer("/network/interfaces"))
        .and_then(Value::as_array)
    {
        let modeled: Option<Vec<Interface>> = list.iter().map(interface).collect();
        if let Some(ifaces) = modeled {
            file.interfaces = ifaces;
        }
    }
    if let Some(m) = machine.and_then(|m| m.get("nodeLabels")).and_then(strings) {
        file.labels = m;
    }
    if let Some(m) = machine
        .and_then(|m| m.get("nodeAnnotations"))
        .and_then(strings)
    {
        file.annotations = m;
    }
    if let Some(m) = machine.and_then(|m| m.get("nodeTaints")).and_then(strings)
        && let Some(taints) = m.iter().map(|(k, v)| taint(k, v)).collect()
    {
        file.taints = taints;
    }
    file
}

fn strings(v: &Value) -> Option<BTreeMap<String, String>> {
    v.as_object()?
        .iter()
        .map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

fn taint(key: &str, v: &str) -> Option<Taint> {
    let (value, effect) = match v.rsplit_once(':') {
        Some((value, effect)) => (Some(value.to_string()), effect),
        None => (None, v),
    };
    let effect = match effect {
        "NoSchedule" => TaintEffect::NoSchedule,
        "PreferNoSchedule" => TaintEffect::PreferNoSchedule,
        "NoExecute" => TaintEffect::NoExecute,
        _ => return None,
    };
    Some(Taint {
        key: key.to_string(),
        value,
        effect,
    })
}

fn routes(v: Option<&Value>) -> Option<Vec<Route>> {
    match v {
        None => Some(Vec::new()),
        Some(v) => serde_json::from_value(v.clone()).ok(),
    }
}

fn addresses(v: Option<&Value>) -> Option<Vec<String>> {
    match v {
        None => Some(Vec::new()),
        Some(v) => serde_json::from_value(v.clone()).ok(),
    }
}

fn vip(v: Option<&Value>) -> Option<Option<String>> {
    match v {
        None => Some(None),
        Some(v) => {
            let m = v.as_object()?;
            (m.len() == 1)
                .then(|| m.get("ip")?.as_str().map(str::to_string))?
                .map(Some)
        }
    }
}

/// An interface as the node file says it, if rendering it gives back exactly `v`.
fn interface(v: &Value) -> Option<Interface> {
    let m = v.as_object()?;
    let vlans = match m.get("vlans") {
        None => Vec::new(),
        Some(list) => list
            .as_array()?
            .iter()
            .map(|x| {
                Some(Vlan {
                    id: u16::try_from(x.get("vlanId")?.as_u64()?).ok()?,
                    addresses: addresses(x.get("addresses"))?,
                    routes: routes(x.get("routes"))?,
                    vip: vip(x.get("vip"))?,
                    dhcp: x.get("dhcp").map_or(Some(false), Value::as_bool)?,
                })
            })
            .collect::<Option<_>>()?,
    };
    let iface = Interface {
        name: m.get("interface")?.as_str()?.to_string(),
        addresses: addresses(m.get("addresses"))?,
        routes: routes(m.get("routes"))?,
        vip: vip(m.get("vip"))?,
        dhcp: m.get("dhcp").map_or(Some(false), Value::as_bool)?,
        mtu: match m.get("mtu") {
            None => None,
            Some(x) => Some(u32::try_from(x.as_u64()?).ok()?),
        },
        vlans,
    };
    (render::interface(&iface) == *v).then_some(iface)
}
