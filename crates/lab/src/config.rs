//! The machine config a lab node receives: the first `version: v1alpha1` YAML document, read
//! generically. Also the live-vs-reboot comparison that AUTO and NO_REBOOT follow.

use std::net::IpAddr;

use serde::Deserialize as _;
use serde_json::Value;

use crate::{Role, is_lab_address};

/// A parsed and validated v1alpha1 machine config.
#[derive(Clone)]
pub struct MachineConfig {
    /// The whole YAML text as applied (all documents).
    pub raw: String,
    /// The v1alpha1 document as JSON.
    pub doc: Value,
    /// `machine.type`.
    pub role: Role,
    /// `machine.network.hostname` (may be empty).
    pub hostname: String,
    /// Every address of every interface and VLAN, in order; the first is the management address.
    pub addresses: Vec<IpAddr>,
    /// `machine.install.image`.
    pub install_image: String,
}

impl std::fmt::Debug for MachineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineConfig")
            .field("role", &self.role)
            .field("hostname", &self.hostname)
            .field("addresses", &self.addresses)
            .finish_non_exhaustive()
    }
}

fn str_at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    path.split('.').try_fold(v, |v, k| v.get(k))?.as_str()
}

/// Interface or VLAN addresses: `127.0.10.1/24` (the prefix is optional).
fn push_addresses(out: &mut Vec<IpAddr>, list: Option<&Value>) -> Result<(), String> {
    for a in list.and_then(Value::as_array).into_iter().flatten() {
        let text = a.as_str().ok_or("address is not a string")?;
        let ip: IpAddr = text
            .split('/')
            .next()
            .unwrap_or_default()
            .parse()
            .map_err(|_| format!("address {text:?} is not an IP"))?;
        if !is_lab_address(ip) {
            return Err(format!("address {text:?} is outside 127.0.0.0/8 (lab)"));
        }
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    Ok(())
}

impl MachineConfig {
    /// Parses and validates a machine config as Talos does before accepting it: YAML, the
    /// v1alpha1 document, machine type, addresses, and what the role requires.
    ///
    /// # Errors
    /// A message saying what is wrong (never secret values).
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let raw = std::str::from_utf8(bytes)
            .map_err(|_| "config is not UTF-8")?
            .to_string();
        let mut doc = None;
        for d in serde_yaml_ng::Deserializer::from_str(&raw) {
            let v = Value::deserialize(d).map_err(|e| format!("config YAML: {e}"))?;
            if v.get("version").and_then(Value::as_str) == Some("v1alpha1") {
                doc = Some(v);
                break;
            }
        }
        let doc = doc.ok_or("no v1alpha1 document")?;
        let role = match str_at(&doc, "machine.type") {
            Some("controlplane" | "init") => Role::Controlplane,
            Some("worker") => Role::Worker,
            other => {
                return Err(format!(
                    "machine.type {other:?} is not controlplane or worker"
                ));
            }
        };
        if str_at(&doc, "machine.ca.crt")
            .unwrap_or_default()
            .is_empty()
        {
            return Err("machine.ca.crt is missing".into());
        }
        if role == Role::Controlplane {
            for field in [
                "machine.ca.key",
                "cluster.etcd.ca.crt",
                "cluster.etcd.ca.key",
            ] {
                if str_at(&doc, field).unwrap_or_default().is_empty() {
                    return Err(format!("{field} is required on a control plane"));
                }
            }
        }
        let install_image = str_at(&doc, "machine.install.image")
            .unwrap_or_default()
            .to_string();
        if image_tag(&install_image).is_none() {
            return Err(format!(
                "machine.install.image {install_image:?} has no version tag"
            ));
        }
        let mut addresses = Vec::new();
        let ifaces = doc
            .pointer("/machine/network/interfaces")
            .and_then(Value::as_array);
        for iface in ifaces.into_iter().flatten() {
            push_addresses(&mut addresses, iface.get("addresses"))?;
            for vlan in iface
                .get("vlans")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                push_addresses(&mut addresses, vlan.get("addresses"))?;
            }
        }
        let hostname = str_at(&doc, "machine.network.hostname")
            .unwrap_or_default()
            .to_string();
        Ok(Self {
            raw,
            doc,
            role,
            hostname,
            addresses,
            install_image,
        })
    }

    /// The management address: the first address of the first interface.
    pub fn management_address(&self) -> Option<IpAddr> {
        self.addresses.first().copied()
    }

    /// A field of the v1alpha1 document by dotted path.
    /// Every document re-encoded, as Talos encodes its config container before it diffs it
    /// (`configdiff.DiffConfigs`: `EncodeBytes` without comments), so that formatting alone is
    /// no change. Talos encodes from its Go structs (`pkg/machinery/config/container`
    /// `encodeToBuf`, the v1alpha1 document first), so the order of keys in the submitted text
    /// is no change either: the lab sorts every mapping's keys. Talos also drops empty fields
    /// its structs mark `omitempty`; the lab keeps them (stricter: `nodeLabels: {}` and no
    /// `nodeLabels` differ here).
    pub fn encoded(&self) -> String {
        let docs: Vec<String> = serde_yaml_ng::Deserializer::from_str(&self.raw)
            .filter_map(|d| serde_yaml_ng::Value::deserialize(d).ok())
            .filter(|v| !v.is_null())
            .map(sorted)
            .filter_map(|v| serde_yaml_ng::to_string(&v).ok())
            .collect();
        docs.join("---\n")
    }

    pub fn get(&self, path: &str) -> Option<&str> {
        str_at(&self.doc, path)
    }

    /// The Talos version the installer image installs (its tag), e.g. `v1.11.6`.
    pub fn talos_version(&self) -> Option<String> {
        image_tag(&self.install_image)
    }

    /// The cluster this node belongs to (`cluster.id`, else the control plane endpoint).
    pub fn cluster_key(&self) -> String {
        self.get("cluster.id")
            .or(self.get("cluster.controlPlane.endpoint"))
            .unwrap_or_default()
            .into()
    }
}

/// `v` with the keys of every mapping in order.
fn sorted(v: serde_yaml_ng::Value) -> serde_yaml_ng::Value {
    use serde_yaml_ng::Value as Y;
    match v {
        Y::Mapping(m) => {
            let mut entries: Vec<(Y, Y)> = m.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            entries.sort_by(|a, b| {
                let key = |k: &Y| serde_yaml_ng::to_string(k).unwrap_or_default();
                key(&a.0).cmp(&key(&b.0))
            });
            Y::Mapping(entries.into_iter().collect())
        }
        Y::Sequence(s) => Y::Sequence(s.into_iter().map(sorted).collect()),
        Y::Tagged(t) => Y::Tagged(Box::new(serde_yaml_ng::value::TaggedValue {
            tag: t.tag,
            value: sorted(t.value),
        })),
        other => other,
    }
}

/// The tag of an image reference (`...installer:v1.11.6` -> `v1.11.6`), ignoring a digest.
pub fn image_tag(image: &str) -> Option<String> {
    let name = image.split('@').next()?;
    let last = name.rsplit('/').next()?;
    let (_, tag) = last.split_once(':')?;
    (!tag.is_empty()).then(|| tag.to_string())
}

/// Leaf paths whose values differ between two documents (`machine.network.hostname`, ...).
/// The change from `old` to `new` as Talos' dry-run apply shows it: a unified diff (headers
/// `a` and `b`, three lines of context) of both encoded configs, "" when they are the same.
/// Talos 1.12 (`pkg/machinery/config/configdiff/configdiff.go` DiffToString: gotextdiff
/// `ToUnified("a", "b", ...)`) and 1.13+ (`pkg/machinery/textdiff/textdiff.go` Diff: a myers
/// unified formatter) both print this form.
pub fn config_diff(old: &MachineConfig, new: &MachineConfig) -> String {
    let (a, b) = (old.encoded(), new.encoded());
    if a == b {
        return String::new();
    }
    similar::TextDiff::from_lines(&a, &b)
        .unified_diff()
        .context_radius(3)
        .header("a", "b")
        .to_string()
}

pub fn changed_paths(old: &Value, new: &Value) -> Vec<String> {
    fn walk(prefix: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<String>) {
        match (a, b) {
            (Some(Value::Object(x)), Some(Value::Object(y))) => {
                let keys: std::collections::BTreeSet<_> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&p, x.get(k), y.get(k), out);
                }
            }
            (a, b) if a != b => out.push(prefix.to_string()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", Some(old), Some(new), &mut out);
    out
}

/// Whether a changed path applies live. Follows Talos 1.12/1.13 (`pkg/machinery/config`
/// "apply without reboot" list): `.debug`, all of `.cluster`, and in `.machine` ca, acceptedCAs,
/// time, certSANs, install, network, sysfs, sysctls, logging, controlPlane, kubelet, kernel,
/// registries (not their auth), pods, seccompProfiles, node labels/annotations/taints and a few
/// features. Anything else needs a reboot. Only the v1alpha1 document is compared: other
/// documents always apply live.
pub fn applies_live(path: &str) -> bool {
    const LIVE_MACHINE: &[&str] = &[
        "ca",
        "acceptedCAs",
        "time",
        "certSANs",
        "install",
        "network",
        "sysfs",
        "sysctls",
        "logging",
        "controlPlane",
        "kubelet",
        "kernel",
        "pods",
        "seccompProfiles",
        "nodeLabels",
        "nodeAnnotations",
        "nodeTaints",
        "features.kubernetesTalosAPIAccess",
        "features.kubePrism",
        "features.hostDNS",
        "features.imageCache",
        "features.nodeAddressSortAlgorithm",
    ];
    if path == "debug" || path == "cluster" || path.starts_with("cluster.") {
        return true;
    }
    let Some(rest) = path.strip_prefix("machine.") else {
        return false;
    };
    if let Some(reg) = rest.strip_prefix("registries") {
        return !reg.contains(".auth");
    }
    LIVE_MACHINE
        .iter()
        .any(|p| rest == *p || rest.starts_with(&format!("{p}.")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_tags() {
        assert_eq!(
            image_tag("ghcr.io/siderolabs/installer:v1.11.6").as_deref(),
            Some("v1.11.6")
        );
        assert_eq!(
            image_tag("factory.talos.dev/installer/abc123:v1.13.0").as_deref(),
            Some("v1.13.0")
        );
        assert_eq!(image_tag("localhost:5000/installer"), None);
    }

    #[test]
    fn live_and_reboot_paths() {
        assert!(applies_live("machine.network.interfaces"));
        assert!(applies_live("cluster.apiServer.image"));
        assert!(applies_live("machine.install.image"));
        assert!(applies_live("machine.registries.mirrors"));
        assert!(!applies_live("machine.registries.config.x.auth"));
        assert!(!applies_live("machine.disks"));
        assert!(!applies_live("machine.features.rbac"));
        assert!(!applies_live("machine.type"));
    }

    #[test]
    fn changed_paths_are_leaves() {
        let a = serde_json::json!({"machine": {"a": 1, "b": {"c": 2}}});
        let b = serde_json::json!({"machine": {"a": 1, "b": {"c": 3}, "d": 4}});
        assert_eq!(changed_paths(&a, &b), ["machine.b.c", "machine.d"]);
    }
}
