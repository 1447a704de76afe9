//! Semantic rules over a loaded repo: the second step after [`crate::repo::Repo::load`].
//!
//! Every rule reports at the place in the file that must change, and says how. Rules never stop
//! at the first problem. Patches are checked by rendering every node with a placeholder bundle,
//! so validation needs no key and touches no node.

use std::collections::BTreeMap;
use std::path::Path;

use ipnet::IpNet;

use crate::path;
use crate::render;
use crate::repo::{Diagnostics, Repo, Source};
use crate::types::{NodeFile, Role};
use crate::version::{self, Version};
use crate::yaml::Pos;

/// Runs every rule.
///
/// Without a key, the secrets bundle and `*.sops.yaml` patches are checked for what can be seen
/// without decrypting (see [`crate::secrets`]); [`validate_with_keys`] decrypts them as well.
pub fn validate(repo: &Repo) -> Diagnostics {
    let mut d = Diagnostics::default();
    cluster_rules(repo, &mut d);
    node_rules(repo, &mut d);
    crate::checks::label_rules(repo, &mut d);
    crate::addresses::address_rules(repo, &mut d);
    crate::addresses::network_rules(repo, &mut d);
    crate::backup::backup_rules(repo, &mut d);
    crate::cni::cni_rules(repo, &mut d);
    crate::addons::addon_rules(repo, &mut d);
    crate::gitops::gitops_rules(repo, &mut d);
    d.0.extend(crate::secrets::check_bundle_file(repo).0);
    patch_rules(repo, None, &mut d);
    d.sort();
    d.0.dedup();
    d
}

/// Every rule of [`validate`], and with `keys`: the bundle decrypted (MAC verified) and every
/// node rendered with its decrypted `*.sops.yaml` patches.
pub fn validate_with_keys(repo: &Repo, keys: &vixen_sops::Keyring) -> Diagnostics {
    let mut d = Diagnostics::default();
    cluster_rules(repo, &mut d);
    node_rules(repo, &mut d);
    crate::checks::label_rules(repo, &mut d);
    crate::addresses::address_rules(repo, &mut d);
    crate::addresses::network_rules(repo, &mut d);
    crate::backup::backup_rules(repo, &mut d);
    crate::cni::cni_rules(repo, &mut d);
    crate::addons::addon_rules(repo, &mut d);
    crate::addons::addon_rules_with_keys(repo, keys, &mut d);
    crate::gitops::gitops_rules(repo, &mut d);
    match crate::secrets::load_render_inputs(repo, keys) {
        Ok(inputs) => patch_rules(repo, Some(&inputs), &mut d),
        Err(e) => {
            d.0.extend(e.0);
            patch_rules(repo, None, &mut d);
        }
    }
    d.sort();
    d.0.dedup();
    d
}

/// Loads and validates in one call, as `vixen validate` does.
///
/// # Errors
/// Every problem found, when there is at least one.
pub fn load_and_validate(root: &Path) -> Result<Repo, Diagnostics> {
    let repo = Repo::load(root)?;
    let d = validate(&repo);
    if d.is_empty() { Ok(repo) } else { Err(d) }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A duration like `30s`, `2m`, `1h30m`, `0s`, `500ms`.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    if s == "0" {
        return Some(std::time::Duration::ZERO);
    }
    let mut total = 0u128;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u128 = num.parse().ok()?;
        num.clear();
        let unit_ms = match c {
            'h' => 3_600_000,
            's' => 1_000,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                1
            }
            'm' => 60_000,
            _ => return None,
        };
        total += n * unit_ms;
        any = true;
    }
    if !num.is_empty() || !any {
        return None;
    }
    Some(std::time::Duration::from_millis(u64::try_from(total).ok()?))
}

fn cluster_rules(repo: &Repo, d: &mut Diagnostics) {
    let c = &repo.cluster;
    let f = c.path.as_path();
    if !is_dns_label(&c.value.name) {
        d.push(
            f,
            c.pos(&path!["name"]),
            format!("cluster name `{}` is not a DNS label", c.value.name),
            "use lowercase letters, digits and `-`, at most 63 characters",
        );
    }
    if let Some(problem) = crate::checks::endpoint_problem(&c.value.endpoint) {
        d.push(
            f,
            c.pos(&path!["endpoint"]),
            problem,
            "write it as https://<VIP or DNS name>:6443",
        );
    }
    let talos = c.value.talos.version.parse::<Version>();
    if let Err(e) = &talos {
        d.push(
            f,
            c.pos(&path!["talos", "version"]),
            e.to_string(),
            "write the Talos version as vMAJOR.MINOR.PATCH, e.g. v1.11.6",
        );
    }
    let k8s = c.value.kubernetes.version.parse::<Version>();
    if let Err(e) = &k8s {
        d.push(
            f,
            c.pos(&path!["kubernetes", "version"]),
            e.to_string(),
            "write the Kubernetes version as MAJOR.MINOR.PATCH, e.g. 1.34.1",
        );
    }
    if let (Ok(t), Ok(k)) = (talos, k8s)
        && let Some(problem) = version::compatibility_problem(t, k)
    {
        // An unknown Talos version is the Talos line's fault, not the Kubernetes line's.
        let at = if version::kubernetes_range(t).is_none() {
            path!["talos", "version"]
        } else {
            path!["kubernetes", "version"]
        };
        d.push(
            f,
            c.pos(&at),
            problem,
            "pick a Kubernetes version the Talos version supports, or change the Talos version",
        );
    }
    if c.value.talos.installer.is_some() && c.value.talos.schematic.is_some() {
        d.push(
            f,
            c.pos(&path!["talos", "schematic"]),
            "`installer` and `schematic` are both set",
            "keep one: a schematic implies the Image Factory installer",
        );
    }
    if let Some(s) = &c.value.talos.schematic
        && (s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        d.push(
            f,
            c.pos(&path!["talos", "schematic"]),
            "schematic is not a 64-character hex ID",
            "copy the schematic ID from the Image Factory",
        );
    }
    if parse_duration(&c.value.upgrade.stabilization).is_none() {
        d.push(
            f,
            c.pos(&path!["upgrade", "stabilization"]),
            format!("`{}` is not a duration", c.value.upgrade.stabilization),
            "write it like 30s, 2m or 0s",
        );
    }
    if c.value.upgrade.worker_concurrency == 0 {
        d.push(
            f,
            c.pos(&path!["upgrade", "workerConcurrency"]),
            "workerConcurrency is 0: no worker could ever be upgraded",
            "set it to 1 or more",
        );
    }
    let net = &c.value.cluster_network;
    for (field, list) in [
        ("podSubnets", &net.pod_subnets),
        ("serviceSubnets", &net.service_subnets),
    ] {
        for (i, cidr) in list.iter().enumerate() {
            if cidr.parse::<IpNet>().is_err() {
                d.push(
                    f,
                    c.pos(&path!["clusterNetwork", field, i]),
                    format!("`{cidr}` is not a CIDR"),
                    "write it like 10.244.0.0/16",
                );
            }
        }
    }
    let groups = [
        ("all", &c.value.patches.all),
        ("controlplane", &c.value.patches.controlplane),
        ("worker", &c.value.patches.worker),
    ];
    for (group, list) in groups {
        for (i, p) in list.iter().enumerate() {
            if let Err(r) = repo.sandbox().check_file(p) {
                d.push(
                    f,
                    c.pos(&path!["patches", group, i]),
                    format!("patch file {r}"),
                    r.fix(),
                );
            }
        }
    }
}

fn node_rules(repo: &Repo, d: &mut Diagnostics) {
    let cps: Vec<_> = repo
        .nodes
        .iter()
        .filter(|n| n.value.role == Role::Controlplane)
        .collect();
    if cps.len() % 2 == 0 {
        let (file, pos) = match cps.last() {
            Some(n) => (n.path.clone(), n.pos(&path!["role"])),
            None => (repo.cluster.path.clone(), Pos { line: 1, col: 1 }),
        };
        d.push(
            &file,
            pos,
            format!(
                "{} control planes: etcd needs an odd number (1, 3, 5...) to keep quorum",
                cps.len()
            ),
            "add or remove one control plane",
        );
    }
    let mut names: BTreeMap<&str, &Source<NodeFile>> = BTreeMap::new();
    let mut hostnames: BTreeMap<String, &Source<NodeFile>> = BTreeMap::new();
    for n in &repo.nodes {
        let v = &n.value;
        if !is_dns_label(&v.name) {
            d.push(
                &n.path,
                n.pos(&path!["name"]),
                format!("node name `{}` is not a DNS label", v.name),
                "use lowercase letters, digits and `-`",
            );
        }
        if let Some(first) = names.insert(&v.name, n) {
            d.push(
                &n.path,
                n.pos(&path!["name"]),
                format!(
                    "node name `{}` is also used in {}",
                    v.name,
                    first.path.display()
                ),
                "give every node its own name",
            );
        }
        let host = v.hostname.clone().unwrap_or_else(|| v.name.clone());
        if !is_dns_label(&host) {
            d.push(
                &n.path,
                n.pos(&path!["hostname"]),
                format!("hostname `{host}` is not a DNS label"),
                "use lowercase letters, digits and `-`",
            );
        }
        if let Some(first) = hostnames.insert(host.clone(), n) {
            d.push(
                &n.path,
                n.pos(&path!["hostname"]),
                format!(
                    "hostname `{host}` is also used by node {}",
                    first.value.name
                ),
                "give every node its own hostname",
            );
        }
        if v.install_disk.is_empty() {
            d.push(
                &n.path,
                n.pos(&path!["installDisk"]),
                "installDisk is empty",
                "name the disk Talos installs to, e.g. /dev/sda",
            );
        }
        for (i, p) in v.patches.iter().enumerate() {
            if let Err(r) = repo.sandbox().check_file(p) {
                d.push(
                    &n.path,
                    n.pos(&path!["patches", i]),
                    format!("patch file {r}"),
                    r.fix(),
                );
            }
        }
        for (i, iface) in v.interfaces.iter().enumerate() {
            let mut ids = BTreeMap::new();
            for (j, vlan) in iface.vlans.iter().enumerate() {
                if vlan.id == 0 || vlan.id > 4094 {
                    d.push(
                        &n.path,
                        n.pos(&path!["interfaces", i, "vlans", j, "id"]),
                        format!("VLAN ID {} is out of range", vlan.id),
                        "use an ID from 1 to 4094",
                    );
                }
                if ids.insert(vlan.id, j).is_some() {
                    d.push(
                        &n.path,
                        n.pos(&path!["interfaces", i, "vlans", j, "id"]),
                        format!("VLAN {} appears twice on {}", vlan.id, iface.name),
                        "merge the two VLAN entries",
                    );
                }
            }
        }
    }
}

/// A bundle with placeholder values: enough to render, useless to anyone.
fn placeholder_bundle() -> vixen_pki::SecretsBundle {
    use vixen_pki::*;
    let s = || Secret::new("placeholder".into());
    let ck = || CertAndKey {
        crt: "placeholder".into(),
        key: s(),
    };
    SecretsBundle {
        cluster: ClusterIdentity {
            id: "placeholder".into(),
            secret: s(),
        },
        secrets: BundleSecrets {
            bootstraptoken: s(),
            secretboxencryptionsecret: s(),
            aescbcencryptionsecret: None,
        },
        trustdinfo: TrustdInfo { token: s() },
        certs: BundleCerts {
            etcd: ck(),
            k8s: ck(),
            k8saggregator: ck(),
            k8sserviceaccount: KeyOnly { key: s() },
            os: ck(),
        },
    }
}

fn patch_rules(repo: &Repo, inputs: Option<&render::RenderInputs>, d: &mut Diagnostics) {
    if inputs.is_none() {
        crate::secrets::check_sops_patches(repo, d);
    }
    let placeholder = placeholder_bundle();
    let mut seen = std::collections::BTreeSet::new();
    for n in &repo.nodes {
        // A refused patch file is reported once by the path rules above.
        if render::patch_files(repo, n)
            .iter()
            .any(|(p, _, _)| repo.sandbox().check_file(p).is_err())
        {
            continue;
        }
        let result = match inputs {
            Some(i) => render::render_with(repo, n, i),
            None => render::render_inner(repo, n, &placeholder, None, render::Encrypted::Skip),
        };
        if let Err(e) = result
            && seen.insert(e.to_string())
        {
            d.0.push(e);
        }
    }
}
