//! `vixen import`: a vixen repo made from the configs a cluster's nodes run, such that vixen's
//! render of it is, for every node, what the node runs.
//!
//! ```text
//! running configs ─infer─► bundle (from a control plane), cluster.yaml, nodes/*.yaml
//!        │                       └─render (no patches)─┐
//!        └──────────────── delta::diff ◄───────────────┘
//!                            └─► changes, grouped: every node ─► patches/all*.yaml
//!                                                  every node of a role ─► patches/<role>*.yaml
//!                                                  one node ─► patches/nodes/<name>*.yaml
//!                            └─► secret or identity fields that differ: not reproduced
//!                                (refused; with `force`, a per-node SOPS-encrypted patch)
//! then the staged repo is loaded, validated and rendered again: any node whose render is not
//! its running config fails the import, naming the fields.
//! ```
//!
//! Pure: the caller reads the configs (Talos API) and moves the staged folder into place.

mod delta;
mod infer;
pub mod talhelper;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use serde_json::Value;
use vixen_pki::SecretsBundle;
use zeroize::Zeroizing;

use crate::render::RenderInputs;
use crate::types::{NodeFile, Role};
use crate::{Repo, render};
use delta::{Change, Changes};

/// Where the imported repo keeps the encrypted bundle.
pub const SECRETS_FILE: &str = "secrets/talos.sops.yaml";

/// The config a node runs, as read from it.
pub struct Running {
    /// The address the node was reached at.
    pub address: String,
    /// The config's YAML, as the node returned it (holds secrets).
    pub config: Zeroizing<String>,
    /// The node's name in the source repo (talhelper's `hostname`), if there is one.
    pub name: Option<String>,
}

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The age recipients the bundle (and any secret patch) is encrypted to.
    pub recipients: Vec<String>,
    /// Keep fields that differ from the bundle, or hold secrets, as per-node SOPS patches
    /// instead of refusing.
    pub force: bool,
    /// `lastmodified` of the SOPS files (RFC 3339, UTC).
    pub now: String,
    /// The secrets bundle, when the source has one (talhelper's `talsecret.sops.yaml`);
    /// otherwise it is read from a control plane's config.
    pub bundle: Option<SecretsBundle>,
}

/// What could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A config lacks a field the repo needs, or it has an unusable value.
    #[error("{node}: `{field}` {reason}")]
    Field {
        /// The node (its address).
        node: String,
        /// The field, dotted.
        field: String,
        /// What is wrong (never a value).
        reason: String,
    },
    /// The configs are not those of one cluster with a control plane.
    #[error("{0}")]
    Cluster(String),
    /// Fields vixen would not reproduce; nothing is written.
    #[error(
        "these fields cannot be reproduced, so no repo was written:\n{}\n(fix: --force keeps them \
         as a SOPS-encrypted patch of that node)",
        .0.iter().map(|u| format!("  {}: {} ({})", u.node, u.field, u.why)).collect::<Vec<_>>().join("\n")
    )]
    Unreproduced(Vec<Unreproduced>),
    /// The staged repo does not validate, or does not render what a node runs (a bug).
    #[error("the imported repo does not check out:\n{0}")]
    Check(String),
    /// Writing the staged repo failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// SOPS encryption failed.
    #[error("cannot encrypt: {0}")]
    Sops(#[from] vixen_sops::Error),
}

/// A field that cannot be reproduced without a secret in a plaintext patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreproduced {
    /// The node's name.
    pub node: String,
    /// The field, dotted.
    pub field: String,
    /// Why.
    pub why: &'static str,
}

/// What an import wrote, for the report.
#[derive(Debug, Default)]
pub struct Report {
    /// Node names, with the number of changes kept in each one's own patch.
    pub nodes: Vec<(String, usize)>,
    /// Changes in the patch for every node, and per role.
    pub common: usize,
    /// Changes per role.
    pub roles: BTreeMap<Role, usize>,
    /// Fields kept in a per-node SOPS patch (`force`).
    pub forced: Vec<Unreproduced>,
}

struct Parsed {
    address: String,
    main: Value,
    extra: Vec<Value>,
    role: Role,
}

fn parse(r: &Running) -> Result<Parsed, ImportError> {
    let bad = |reason: &str| ImportError::Field {
        node: r.address.clone(),
        field: "config".into(),
        reason: reason.into(),
    };
    let mut main = None;
    let mut extra = Vec::new();
    for d in serde_yaml_ng::Deserializer::from_str(&r.config) {
        let v = Value::deserialize(d).map_err(|_| bad("is not valid YAML"))?;
        if v.is_null() {
            continue;
        }
        if main.is_none() && v.get("version").and_then(Value::as_str) == Some("v1alpha1") {
            main = Some(v);
        } else {
            extra.push(v);
        }
    }
    let main = main.ok_or_else(|| bad("has no v1alpha1 document"))?;
    let role = infer::role(&main).ok_or_else(|| bad("has no machine.type Talos knows"))?;
    Ok(Parsed {
        address: r.address.clone(),
        main,
        extra,
        role,
    })
}

/// Fields whose value comes from the secrets bundle: a difference there means the node does
/// not share the control plane's secrets.
const BUNDLE_FIELDS: &[&str] = &[
    "machine.token",
    "machine.ca",
    "cluster.id",
    "cluster.secret",
    "cluster.token",
    "cluster.secretboxEncryptionSecret",
    "cluster.aescbcEncryptionSecret",
    "cluster.ca",
    "cluster.aggregatorCA",
    "cluster.serviceAccount",
    "cluster.etcd.ca",
];

fn secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    [
        "key",
        "token",
        "secret",
        "password",
        "auth",
        "identitytoken",
        "bearertoken",
    ]
    .contains(&k.as_str())
        || k.ends_with("secret")
        || k.ends_with("password")
        || k.ends_with("token")
}

fn holds_secret(v: &Value) -> bool {
    match v {
        Value::Object(m) => m
            .iter()
            .any(|(k, v)| secret_key(k) && !v.is_null() || holds_secret(v)),
        Value::Array(a) => a.iter().any(holds_secret),
        _ => false,
    }
}

/// Why a change cannot go into a plaintext patch, if it cannot.
fn why_not_plain(path: &[String], change: &Change) -> Option<&'static str> {
    if path == [delta::DOCUMENTS] {
        return Some("the config documents are not in an order vixen's patches can give");
    }
    let dotted = path.join(".");
    let data = match change {
        Change::Delete => return None,
        Change::Set(v) | Change::Replace(v) | Change::Document(v) => v,
        Change::Append(items) => return items.iter().any(holds_secret).then_some("holds a secret"),
    };
    if BUNDLE_FIELDS
        .iter()
        .any(|f| dotted == *f || dotted.starts_with(&format!("{f}.")))
    {
        return Some(
            "differs from the control plane's secrets bundle: a secret rotated on some nodes only, or another cluster's node",
        );
    }
    let leaf_secret = path.last().is_some_and(|k| secret_key(k)) && !data.is_null();
    (leaf_secret || holds_secret(data)).then_some("holds a secret")
}

/// A node's changes, and which of them are secret.
struct NodeChanges {
    name: String,
    role: Role,
    plain: Changes,
    secret: Vec<(Vec<String>, Change, &'static str)>,
}

/// Imports the running configs into a repo staged at `stage` (an empty folder the caller
/// moves into place once it is satisfied).
///
/// # Errors
/// [`ImportError`]: a config that is unusable, fields that cannot be reproduced (nothing
/// then is left in `stage` but what the caller removes), or a repo that does not check out.
/// Returns the report and, per node in the order of `running`, its name and its render of the
/// staged repo (which holds secrets).
pub fn import(
    running: &[Running],
    stage: &Path,
    opts: &Options,
) -> Result<(Report, Vec<(String, render::MachineConfig)>), ImportError> {
    let parsed: Vec<Parsed> = running.iter().map(parse).collect::<Result<_, _>>()?;
    let cp = parsed
        .iter()
        .find(|p| p.role == Role::Controlplane)
        .ok_or_else(|| ImportError::Cluster("no control plane among the nodes: the secrets bundle is read from one (add a control plane's address)".into()))?;
    let bundle = match &opts.bundle {
        Some(b) => b.clone(),
        None => infer::bundle(&cp.main, &cp.address)?,
    };
    let cluster = infer::cluster(&cp.main, &cp.address, SECRETS_FILE)?;
    for p in &parsed {
        let name = p
            .main
            .pointer("/cluster/clusterName")
            .and_then(Value::as_str);
        if name != Some(cluster.name.as_str()) {
            return Err(ImportError::Cluster(format!(
                "{} is not in cluster {:?} (its cluster.clusterName differs)",
                p.address, cluster.name
            )));
        }
    }
    let mut nodes: Vec<NodeFile> = parsed
        .iter()
        .zip(running)
        .map(|(p, r)| {
            let mut file = infer::node(&p.main, &p.address, p.role);
            if let Some(name) = &r.name
                && *name != file.name
            {
                let running_hostname = p
                    .main
                    .pointer("/machine/network/hostname")
                    .and_then(Value::as_str);
                file.hostname = running_hostname.map(str::to_string);
                file.name.clone_from(name);
            }
            file
        })
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for n in &nodes {
        // The name becomes a file name: a hostname (or talconfig entry) like `../x` must not
        // write outside the repo.
        let plain = !n.name.is_empty()
            && !n.name.starts_with(['.', '-'])
            && n.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !plain {
            return Err(ImportError::Cluster(format!(
                "the node at {} is called {:?}, which is not a hostname vixen can name a file after (fix: set a hostname of letters, digits, `-` and `.`)",
                n.maintenance_address, n.name
            )));
        }
        if !seen.insert(n.name.clone()) {
            return Err(ImportError::Cluster(format!(
                "two nodes are called {:?}; give each its own machine.network.hostname first",
                n.name
            )));
        }
    }

    // First pass: the repo without patches, and what its render lacks.
    write_repo(stage, &cluster, &nodes, &BTreeMap::new())?;
    write(stage, SECRETS_FILE, &encrypt_bundle(&bundle, opts)?)?;
    let repo = load(stage)?;
    let mut all = Vec::new();
    for (p, n) in parsed.iter().zip(&nodes) {
        let node = repo.node(&n.name).expect("written above");
        let out =
            render::render(&repo, node, &bundle).map_err(|d| ImportError::Check(d.to_string()))?;
        let mut nc = NodeChanges {
            name: n.name.clone(),
            role: n.role,
            plain: Vec::new(),
            secret: Vec::new(),
        };
        for (path, change) in delta::diff(&out.main, &p.main, &out.extra, &p.extra) {
            match why_not_plain(&path, &change) {
                None => nc.plain.push((path, change)),
                Some(why) => nc.secret.push((path, change, why)),
            }
        }
        all.push(nc);
    }
    let unreproduced: Vec<Unreproduced> = all
        .iter()
        .flat_map(|n| {
            n.secret.iter().map(|(path, _, why)| Unreproduced {
                node: n.name.clone(),
                field: delta::dotted(path),
                why,
            })
        })
        .collect();
    if !unreproduced.is_empty() && !opts.force {
        return Err(ImportError::Unreproduced(unreproduced));
    }

    // Group: what every node has, then what every node of a role has, then the rest.
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    let mut report = Report {
        forced: unreproduced,
        ..Report::default()
    };
    let mut cluster = cluster;
    let everywhere: Changes = if all.len() > 1 {
        common(all.iter().map(|n| &n.plain))
    } else {
        Vec::new()
    };
    report.common = everywhere.len();
    cluster.patches.all = add_files(&mut files, "patches/all", &everywhere);
    for role in [Role::Controlplane, Role::Worker] {
        let members: Vec<&NodeChanges> = all.iter().filter(|n| n.role == role).collect();
        let shared: Changes = if members.len() > 1 {
            common(members.iter().map(|n| &n.plain))
                .into_iter()
                .filter(|c| !everywhere.contains(c))
                .collect()
        } else {
            Vec::new()
        };
        report.roles.insert(role, shared.len());
        let list = add_files(
            &mut files,
            &format!("patches/{}", role.machine_type()),
            &shared,
        );
        match role {
            Role::Controlplane => cluster.patches.controlplane = list,
            Role::Worker => cluster.patches.worker = list,
        }
        for n in members {
            let own: Changes = n
                .plain
                .iter()
                .filter(|c| !everywhere.contains(c) && !shared.contains(c))
                .cloned()
                .collect();
            report.nodes.push((n.name.clone(), own.len()));
            let file = nodes
                .iter_mut()
                .find(|f| f.name == n.name)
                .expect("same nodes");
            file.patches = add_files(&mut files, &format!("patches/nodes/{}", n.name), &own);
        }
    }
    let mut decrypted = BTreeMap::new();
    for n in &all {
        if n.secret.is_empty() {
            continue;
        }
        let changes: Changes = n
            .secret
            .iter()
            .map(|(p, c, _)| (p.clone(), c.clone()))
            .collect();
        let (_, plain) = delta::patch_texts(&changes)
            .into_iter()
            .find(|(suffix, _)| suffix.is_empty())
            .ok_or_else(|| {
                ImportError::Check(format!(
                    "{}: a secret field is a list item; it cannot be kept as a SOPS patch",
                    n.name
                ))
            })?;
        let rel = format!("patches/nodes/{}.sops.yaml", n.name);
        let tree = sops_tree(&plain).ok_or_else(|| {
            ImportError::Check(format!(
                "{}: a secret field is not a string in a map; it cannot be kept as a SOPS patch",
                n.name
            ))
        })?;
        files.insert(
            rel.clone(),
            vixen_sops::encrypt_yaml(&tree, &opts.recipients, &opts.now)?,
        );
        decrypted.insert(rel.clone(), Zeroizing::new(plain));
        let file = nodes
            .iter_mut()
            .find(|f| f.name == n.name)
            .expect("same nodes");
        file.patches.push(rel);
    }

    // Second pass: the repo with its patches must render what every node runs.
    write_repo(stage, &cluster, &nodes, &files)?;
    let repo = load(stage)?;
    let problems = crate::validate::validate(&repo);
    if !problems.is_empty() {
        return Err(ImportError::Check(problems.to_string()));
    }
    let inputs = RenderInputs {
        bundle,
        patches: decrypted,
    };
    let mut wrong = Vec::new();
    let mut rendered = Vec::new();
    for (p, n) in parsed.iter().zip(&nodes) {
        let node = repo.node(&n.name).expect("written above");
        let out = render::render_with(&repo, node, &inputs)
            .map_err(|d| ImportError::Check(d.to_string()))?;
        for (path, _) in delta::diff(&out.main, &p.main, &out.extra, &p.extra) {
            wrong.push(format!(
                "  {}: {} is not reproduced",
                n.name,
                delta::dotted(&path)
            ));
        }
        rendered.push((n.name.clone(), out));
    }
    if !wrong.is_empty() {
        return Err(ImportError::Check(wrong.join("\n")));
    }
    Ok((report, rendered))
}

/// The changes every one of `sets` has.
fn common<'a>(mut sets: impl Iterator<Item = &'a Changes>) -> Changes {
    let Some(first) = sets.next() else {
        return Vec::new();
    };
    let rest: Vec<&Changes> = sets.collect();
    first
        .iter()
        .filter(|c| rest.iter().all(|s| s.contains(c)))
        .cloned()
        .collect()
}

/// Adds the patch files for `changes` under `stem` and returns their paths.
fn add_files(files: &mut BTreeMap<String, String>, stem: &str, changes: &Changes) -> Vec<String> {
    delta::patch_texts(changes)
        .into_iter()
        .map(|(suffix, text)| {
            let rel = format!("{stem}{suffix}.yaml");
            files.insert(
                rel.clone(),
                format!("# Imported by `vixen import`: what the nodes ran beyond vixen's own render.\n{text}"),
            );
            rel
        })
        .collect()
}

/// A strategic merge patch of maps and strings as a SOPS tree.
fn sops_tree(yaml: &str) -> Option<Vec<(String, vixen_sops::Node)>> {
    fn node(v: &Value) -> Option<vixen_sops::Node> {
        match v {
            Value::String(s) => Some(vixen_sops::Node::Str(Zeroizing::new(s.clone()))),
            Value::Object(m) => Some(vixen_sops::Node::Map(
                m.iter()
                    .map(|(k, v)| Some((k.clone(), node(v)?)))
                    .collect::<Option<_>>()?,
            )),
            _ => None,
        }
    }
    let v: Value = serde_yaml_ng::from_str(yaml).ok()?;
    match node(&v)? {
        vixen_sops::Node::Map(m) => Some(m),
        vixen_sops::Node::Str(_) => None,
    }
}

fn encrypt_bundle(bundle: &SecretsBundle, opts: &Options) -> Result<String, ImportError> {
    let v = Zeroizing::new(serde_yaml_ng::to_string(bundle).expect("the bundle serializes"));
    let tree = sops_tree(&v)
        .ok_or_else(|| ImportError::Check("the secrets bundle is not a map of strings".into()))?;
    Ok(vixen_sops::encrypt_yaml(
        &tree,
        &opts.recipients,
        &opts.now,
    )?)
}

fn load(stage: &Path) -> Result<Repo, ImportError> {
    Repo::load(stage).map_err(|d| ImportError::Check(d.to_string()))
}

fn write(stage: &Path, rel: &str, text: &str) -> Result<(), ImportError> {
    let path = stage.join(rel);
    let fail = |source| ImportError::Write {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    std::fs::write(&path, text).map_err(fail)
}

fn to_yaml<T: serde::Serialize>(v: &T) -> String {
    serde_yaml_ng::to_string(v).expect("repo files serialize")
}

fn write_repo(
    stage: &Path,
    cluster: &crate::types::ClusterFile,
    nodes: &[NodeFile],
    patches: &BTreeMap<String, String>,
) -> Result<(), ImportError> {
    write(
        stage,
        "cluster.yaml",
        &format!("# Imported by `vixen import`.\n{}", to_yaml(cluster)),
    )?;
    let _ = std::fs::remove_dir_all(stage.join("nodes"));
    let _ = std::fs::remove_dir_all(stage.join("patches"));
    for n in nodes {
        write(stage, &format!("nodes/{}.yaml", n.name), &to_yaml(n))?;
    }
    for (rel, text) in patches {
        write(stage, rel, text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(hostname: &str) -> Running {
        let cfg = format!(
            "version: v1alpha1\nmachine:\n  type: controlplane\n  token: t\n  ca: {{crt: c, key: k}}\n  \
             network: {{hostname: {hostname:?}}}\n  install: {{disk: /dev/sda, image: 'ghcr.io/siderolabs/installer:v1.11.6'}}\n  \
             kubelet: {{image: 'ghcr.io/siderolabs/kubelet:v1.34.1'}}\ncluster:\n  id: i\n  secret: s\n  token: a.b\n  \
             secretboxEncryptionSecret: x\n  clusterName: c\n  controlPlane: {{endpoint: 'https://127.0.0.1:6443'}}\n  \
             ca: {{crt: c, key: k}}\n  aggregatorCA: {{crt: c, key: k}}\n  serviceAccount: {{key: k}}\n  etcd: {{ca: {{crt: c, key: k}}}}\n"
        );
        Running {
            address: "127.0.0.9".into(),
            config: Zeroizing::new(cfg),
            name: None,
        }
    }

    /// Fault: a hostile hostname on a node (or in a talconfig) never names a file outside.
    #[test]
    fn a_hostname_that_is_a_path_is_refused_before_anything_is_written() {
        for bad in ["../../escape", "a/b", ".hidden"] {
            let stage = tempfile::tempdir().unwrap();
            let err = import(&[running(bad)], stage.path(), &Options::default()).unwrap_err();
            assert!(err.to_string().contains("not a hostname"), "{bad}: {err}");
            assert_eq!(std::fs::read_dir(stage.path()).unwrap().count(), 0, "{bad}");
        }
    }
}
