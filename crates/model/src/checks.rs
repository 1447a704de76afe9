//! vixen's own checks of what Talos would refuse, so that `validate` stops it before any node
//! is touched: label, annotation and taint syntax, the control-plane endpoint, the shape (map
//! or list) of known machine-config fields, and the kinds of extra config documents.
//!
//! Each rule is derived from the Talos sources named next to it (siderolabs/talos, tags
//! v1.11.6, v1.12.11 and v1.13.9).

use serde_json::Value;

use crate::yaml::Seg;

// Label syntax as Talos checks it before it labels the Node: pkg/machinery/labels/validate.go
// (`ValidateQualifiedName`, `ValidateLabelValue`, `ValidateTaints`), which adapts Kubernetes'
// apimachinery validation: an optional DNS-1123 subdomain prefix (at most 253 characters) and
// `/`, then a name of at most 63 characters `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`.

fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// Why `key` is not a valid label, annotation or taint key, or `None`.
pub fn key_problem(key: &str) -> Option<String> {
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() || !is_dns_subdomain(prefix) {
                return Some(format!(
                    "the prefix of key `{key}` is not a DNS subdomain (lowercase letters, digits, `-` and `.`)"
                ));
            }
            name
        }
        _ => return Some(format!("key `{key}` has more than one `/`")),
    };
    if name.is_empty() {
        Some(format!("key `{key}` has an empty name"))
    } else if name.len() > 63 {
        Some(format!(
            "the name of key `{key}` is longer than 63 characters"
        ))
    } else if !is_qualified_name_part(name) {
        Some(format!(
            "the name of key `{key}` must be letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit"
        ))
    } else {
        None
    }
}

/// Why `value` is not a valid label value (empty is valid), or `None`. The value itself is not
/// repeated in the message: the diagnostic's position shows it.
pub fn label_value_problem(value: &str) -> Option<&'static str> {
    if value.is_empty() {
        None
    } else if value.len() > 63 {
        Some("is longer than 63 characters")
    } else if !is_qualified_name_part(value) {
        Some(
            "must be letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit",
        )
    } else {
        None
    }
}

/// Taint effects Talos accepts: `constants.ValidEffects` in pkg/machinery/constants.
pub const TAINT_EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// Annotations Talos reserves for itself (`labels.ValidateAnnotations`, constants
/// `AnnotationOwned*`).
pub const RESERVED_ANNOTATIONS: [&str; 3] = [
    "talos.dev/owned-labels",
    "talos.dev/owned-annotations",
    "talos.dev/owned-taints",
];

/// Why a `machine.nodeTaints` value (`value:Effect` or `Effect`) is invalid, or `None`.
pub fn taint_value_problem(v: &str) -> Option<String> {
    let (value, effect) = match v.split_once(':') {
        Some((value, effect)) => (Some(value), effect),
        None => (None, v),
    };
    if !TAINT_EFFECTS.contains(&effect) {
        return Some(format!(
            "taint effect `{effect}` is not one of NoSchedule, PreferNoSchedule, NoExecute"
        ));
    }
    value
        .and_then(label_value_problem)
        .map(|p| format!("taint value {p}"))
}

/// Why a control-plane endpoint is not `https://host[:port][/path]` with a port in 1..=65535.
/// Talos checks it with `ValidateEndpointURI` (v1alpha1_validation.go, `cluster.controlPlane`).
pub fn endpoint_problem(ep: &str) -> Option<String> {
    let Some(rest) = ep.strip_prefix("https://") else {
        return Some(format!("endpoint `{ep}` is not an https URL"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    if authority.contains('@') {
        return Some(format!("endpoint `{ep}` carries user information"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((host, after)) = v6.split_once(']') else {
            return Some(format!("endpoint `{ep}` has an unclosed `[`"));
        };
        match after {
            "" => (host, None),
            p => match p.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Some(format!("endpoint `{ep}` has text after `]`")),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Some(format!("endpoint `{ep}` has no host"));
    }
    if let Some(port) = port {
        let ok = !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
        if !ok {
            return Some(format!(
                "endpoint `{ep}` has port `{port}`, not a number from 1 to 65535"
            ));
        }
    }
    None
}

/// The shape a field has in Talos' v1alpha1 config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A Go struct or map: a YAML mapping.
    Map,
    /// A Go slice: a YAML sequence.
    List,
    /// A Go string: a YAML scalar.
    Scalar,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Map => "a map",
            Shape::List => "a list",
            Shape::Scalar => "a single value",
        }
    }
    fn of(v: &Value) -> Option<Shape> {
        match v {
            Value::Object(_) => Some(Shape::Map),
            Value::Array(_) => Some(Shape::List),
            Value::Null => None,
            _ => Some(Shape::Scalar),
        }
    }
}

/// Known fields of the v1alpha1 document and their shapes, from
/// pkg/machinery/config/types/v1alpha1/v1alpha1_types.go (same in 1.11.6 and 1.13.9): pointers
/// to structs and `map[string]...` (`Env`, `Args`) are maps; slices (`NetworkDeviceList`,
/// `[]*MachineFile`, `[]string`...) are lists.
pub const SHAPES: &[(&[&str], Shape)] = &[
    (&["machine"], Shape::Map),
    (&["cluster"], Shape::Map),
    (&["machine", "type"], Shape::Scalar),
    (&["machine", "certSANs"], Shape::List),
    (&["machine", "kubelet"], Shape::Map),
    (&["machine", "kubelet", "extraArgs"], Shape::Map),
    (&["machine", "kubelet", "extraMounts"], Shape::List),
    (&["machine", "network"], Shape::Map),
    (&["machine", "network", "interfaces"], Shape::List),
    (&["machine", "network", "nameservers"], Shape::List),
    (&["machine", "network", "extraHostEntries"], Shape::List),
    (&["machine", "install"], Shape::Map),
    (&["machine", "install", "extraKernelArgs"], Shape::List),
    (&["machine", "files"], Shape::List),
    (&["machine", "env"], Shape::Map),
    (&["machine", "sysctls"], Shape::Map),
    (&["machine", "sysfs"], Shape::Map),
    (&["machine", "pods"], Shape::List),
    (&["machine", "time"], Shape::Map),
    (&["machine", "registries"], Shape::Map),
    (&["machine", "features"], Shape::Map),
    (&["machine", "udev"], Shape::Map),
    (&["machine", "logging"], Shape::Map),
    (&["machine", "kernel"], Shape::Map),
    (&["machine", "nodeLabels"], Shape::Map),
    (&["machine", "nodeAnnotations"], Shape::Map),
    (&["machine", "nodeTaints"], Shape::Map),
    (&["cluster", "controlPlane"], Shape::Map),
    (&["cluster", "network"], Shape::Map),
    (&["cluster", "network", "podSubnets"], Shape::List),
    (&["cluster", "network", "serviceSubnets"], Shape::List),
    (&["cluster", "apiServer"], Shape::Map),
    (&["cluster", "apiServer", "certSANs"], Shape::List),
    (&["cluster", "apiServer", "extraArgs"], Shape::Map),
    (&["cluster", "controllerManager"], Shape::Map),
    (&["cluster", "controllerManager", "extraArgs"], Shape::Map),
    (&["cluster", "scheduler"], Shape::Map),
    (&["cluster", "scheduler", "extraArgs"], Shape::Map),
    (&["cluster", "proxy"], Shape::Map),
    (&["cluster", "proxy", "extraArgs"], Shape::Map),
    (&["cluster", "etcd"], Shape::Map),
    (&["cluster", "etcd", "extraArgs"], Shape::Map),
    (&["cluster", "inlineManifests"], Shape::List),
    (&["cluster", "extraManifests"], Shape::List),
];

/// The first known field of `doc` whose shape is not Talos': its path and a message.
pub fn shape_problem(doc: &Value) -> Option<(Vec<Seg>, String)> {
    for (path, want) in SHAPES {
        let mut v = doc;
        let mut found = true;
        for key in *path {
            match v.get(key) {
                Some(next) => v = next,
                None => {
                    found = false;
                    break;
                }
            }
        }
        if !found {
            continue;
        }
        if let Some(have) = Shape::of(v)
            && have != *want
        {
            let segs = path.iter().map(|k| Seg::Key((*k).to_string())).collect();
            return Some((
                segs,
                format!(
                    "`{}` is {} here, but Talos has {} there",
                    path.join("."),
                    have.name(),
                    want.name()
                ),
            ));
        }
    }
    None
}

/// Config document kinds Talos registers, with the first minor of Talos 1 that knows them.
/// Every one is registered for `apiVersion: v1alpha1` only. Derived from the
/// `registry.Register(...)` calls under pkg/machinery/config/types/ at v1.11.6, v1.12.11 and
/// v1.13.9 (the decoder that refuses other kinds: pkg/machinery/config/configloader/internal/
/// decoder/decoder.go, `registry.New(kind, version)`). A Talos newer than 1.13 may know more;
/// they are refused until added here.
pub const KINDS: &[(&str, u64)] = &[
    ("ExistingVolumeConfig", 11),
    ("RawVolumeConfig", 11),
    ("SwapVolumeConfig", 11),
    ("UserVolumeConfig", 11),
    ("VolumeConfig", 11),
    ("ZswapConfig", 11),
    ("PCIDriverRebindConfig", 11),
    ("NetworkDefaultActionConfig", 11),
    ("EthernetConfig", 11),
    ("KubeSpanEndpointsConfig", 11),
    ("NetworkRuleConfig", 11),
    ("EventSinkConfig", 11),
    ("ExtensionServiceConfig", 11),
    ("KmsgLogConfig", 11),
    ("WatchdogTimerConfig", 11),
    ("TrustedRootsConfig", 11),
    ("SideroLinkConfig", 11),
    ("RegistryAuthConfig", 12),
    ("RegistryMirrorConfig", 12),
    ("RegistryTLSConfig", 12),
    ("BondConfig", 12),
    ("BridgeConfig", 12),
    ("DHCPv4Config", 12),
    ("DHCPv6Config", 12),
    ("DummyLinkConfig", 12),
    ("HCloudVIPConfig", 12),
    ("HostnameConfig", 12),
    ("Layer2VIPConfig", 12),
    ("LinkConfig", 12),
    ("LinkAliasConfig", 12),
    ("ResolverConfig", 12),
    ("StaticHostConfig", 12),
    ("TimeSyncConfig", 12),
    ("VLANConfig", 12),
    ("WireguardConfig", 12),
    ("OOMConfig", 12),
    ("ExternalVolumeConfig", 13),
    ("BlackholeRouteConfig", 13),
    ("KubeSpanConfig", 13),
    ("RoutingRuleConfig", 13),
    ("TCPProbeConfig", 13),
    ("VRFConfig", 13),
    ("EnvironmentConfig", 13),
    ("ImageVerificationConfig", 13),
];

/// Why a document of `api_version`/`kind` would be refused by Talos `1.<minor>`, or `None`.
pub fn kind_problem(api_version: &str, kind: &str, minor: u64) -> Option<String> {
    match KINDS.iter().find(|(k, _)| *k == kind) {
        None => Some(format!(
            "`kind: {kind}` is not a config document Talos knows (see `vixen_model::checks::KINDS`)"
        )),
        Some((_, since)) if minor < *since => Some(format!(
            "`kind: {kind}` needs Talos 1.{since} or later; this cluster runs 1.{minor}"
        )),
        Some(_) if api_version != "v1alpha1" => Some(format!(
            "`apiVersion: {api_version}` is not one Talos accepts for {kind} (it takes v1alpha1)"
        )),
        Some(_) => None,
    }
}

/// Label, annotation and taint syntax in the node files.
pub(crate) fn label_rules(repo: &crate::Repo, d: &mut crate::Diagnostics) {
    let fix = "use Kubernetes label syntax: [prefix/]name, name at most 63 letters, digits, `-`, `_`, `.`";
    for n in &repo.nodes {
        let v = &n.value;
        for (field, map) in [("labels", &v.labels), ("annotations", &v.annotations)] {
            for (key, value) in map {
                let p = crate::path![field, key.as_str()];
                if let Some(problem) = key_problem(key) {
                    d.push(&n.path, n.tree.key_position(&p), problem, fix);
                }
                if field == "labels"
                    && let Some(problem) = label_value_problem(value)
                {
                    d.push(
                        &n.path,
                        n.pos(&p),
                        format!("the value of label `{key}` {problem}"),
                        fix,
                    );
                }
                if field == "annotations" && RESERVED_ANNOTATIONS.contains(&key.as_str()) {
                    d.push(
                        &n.path,
                        n.tree.key_position(&p),
                        format!("annotation `{key}` is reserved by Talos"),
                        "pick another annotation key",
                    );
                }
            }
        }
        for (i, t) in v.taints.iter().enumerate() {
            if let Some(problem) = key_problem(&t.key) {
                d.push(
                    &n.path,
                    n.pos(&crate::path!["taints", i, "key"]),
                    problem,
                    fix,
                );
            }
            if let Some(problem) = t.value.as_deref().and_then(label_value_problem) {
                d.push(
                    &n.path,
                    n.pos(&crate::path!["taints", i, "value"]),
                    format!("the value of taint `{}` {problem}", t.key),
                    fix,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys_and_values() {
        for ok in ["rack", "topology.kubernetes.io/zone", "a_b.c-d", "x"] {
            assert_eq!(key_problem(ok), None, "{ok}");
        }
        for bad in ["", "-a", "a/b/c", "/a", "Ex.com/a", "a/", &"x".repeat(64)] {
            assert!(key_problem(bad).is_some(), "{bad}");
        }
        assert_eq!(label_value_problem(""), None);
        assert!(label_value_problem("a b").is_some());
        assert!(label_value_problem(&"v".repeat(64)).is_some());
    }

    #[test]
    fn endpoints_and_taints() {
        assert_eq!(endpoint_problem("https://10.0.0.1:6443"), None);
        assert_eq!(endpoint_problem("https://[fd00::1]:6443/"), None);
        assert_eq!(endpoint_problem("https://api.example"), None);
        for bad in [
            "http://a:6443",
            "https://a:0",
            "https://a:65536",
            "https://a:x",
            "https://:6443",
        ] {
            assert!(endpoint_problem(bad).is_some(), "{bad}");
        }
        assert_eq!(taint_value_problem("NoSchedule"), None);
        assert_eq!(taint_value_problem("v:NoExecute"), None);
        assert!(taint_value_problem("v:Never").is_some());
    }
}
