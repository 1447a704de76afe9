//! The CNI of `cluster.yaml` (`cni:`): what it makes of the machine configs, and its rules.
//!
//! Talos facts this follows (siderolabs/talos):
//! - `cluster.network.cni.name: none` makes Talos deploy no CNI of its own, and
//!   `cluster.proxy.disabled: true` no kube-proxy DaemonSet (`pkg/machinery/config/types/v1alpha1`,
//!   `CNIConfig` and `ProxyConfig`; Talos' Cilium guide sets both for kube-proxy replacement).
//! - `cluster.inlineManifests` are applied by the control planes' `k8s.ManifestApplyController`
//!   (`internal/app/machined/pkg/controllers/k8s/manifest_apply.go`): namespaces first, then
//!   CRDs, then the rest, under an etcd mutex; an object is only created when it does not exist
//!   (field manager `talos`), never updated. So Talos brings the CNI up at bootstrap, before
//!   anything else can run, and vixen keeps it in step afterwards by server-side apply.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::path;
use crate::render::{diag, is_sops_patch};
use crate::repo::{Diagnostic, Diagnostics, Repo};
use crate::types::{CniName, NodeFile, Role};
use crate::yaml::{self, Kind, Node, Pos};

/// One manifest file (of `cni.manifests`, `addons` or `gitops.manifests`) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    /// The inline manifest's name: `vixen-cni-<file stem>` (CNI manifests only).
    pub name: String,
    /// The file, relative to the repo.
    pub file: String,
    /// Its text.
    pub contents: String,
}

/// One Kubernetes object of a manifest file, with where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestObject {
    /// The object.
    pub object: Value,
    /// Where its document starts in the file.
    pub pos: Pos,
}

impl ManifestObject {
    fn str_at(&self, keys: &[&str]) -> Option<&str> {
        let mut v = &self.object;
        for k in keys {
            v = v.get(*k)?;
        }
        v.as_str()
    }
    /// `apiVersion`.
    pub fn api_version(&self) -> &str {
        self.str_at(&["apiVersion"]).unwrap_or_default()
    }
    /// `kind`.
    pub fn kind(&self) -> &str {
        self.str_at(&["kind"]).unwrap_or_default()
    }
    /// `metadata.name`.
    pub fn name(&self) -> &str {
        self.str_at(&["metadata", "name"]).unwrap_or_default()
    }
    /// `metadata.namespace`, when it has one.
    pub fn namespace(&self) -> Option<&str> {
        self.str_at(&["metadata", "namespace"])
    }
}

/// The inline manifest name of `file`.
pub fn manifest_name(file: &str) -> String {
    let stem = Path::new(file)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(file);
    let stem = stem
        .trim_end_matches(".yaml")
        .trim_end_matches(".yml")
        .to_ascii_lowercase();
    format!("vixen-cni-{stem}")
}

/// Reads the files of `cni.manifests` through the repo's sandbox, in order.
///
/// # Errors
/// A [`Diagnostic`] at the `cni.manifests` entry whose file is refused or cannot be read.
pub fn manifests(repo: &Repo) -> Result<Vec<ManifestFile>, Diagnostic> {
    let c = &repo.cluster;
    let mut out = Vec::new();
    for (i, file) in c.value.cni.manifests.iter().enumerate() {
        let contents = repo.read(file).map_err(|r| {
            diag(
                &c.path,
                c.pos(&path!["cni", "manifests", i]),
                format!("CNI manifest file {r}"),
                r.fix(),
            )
        })?;
        out.push(ManifestFile {
            name: manifest_name(file),
            file: file.clone(),
            contents,
        });
    }
    Ok(out)
}

/// The objects of a manifest file (empty documents skipped).
///
/// # Errors
/// A [`Diagnostic`] in the manifest file at the bad YAML, or at a document that is not a
/// Kubernetes object (no `apiVersion`, `kind` or `metadata.name`).
pub fn objects(m: &ManifestFile) -> Result<Vec<ManifestObject>, Diagnostic> {
    let file = PathBuf::from(&m.file);
    let docs = yaml::parse_all(&m.contents).map_err(|e| {
        diag(
            &file,
            e.pos,
            format!("invalid YAML: {}", e.message),
            "render the manifests again (helm template or cilium install --dry-run)",
        )
    })?;
    let mut out = Vec::new();
    for doc in docs {
        if matches!(doc.kind, Kind::Scalar(Value::Null)) {
            continue;
        }
        let obj = ManifestObject {
            object: doc.to_json(),
            pos: doc.pos,
        };
        if !obj.object.is_object()
            || obj.api_version().is_empty()
            || obj.kind().is_empty()
            || obj.name().is_empty()
        {
            return Err(diag(
                &file,
                doc.pos,
                "this document is not a Kubernetes object (apiVersion, kind and metadata.name)"
                    .into(),
                "keep only Kubernetes objects in the manifest file",
            ));
        }
        out.push(obj);
    }
    Ok(out)
}

/// Writes the CNI into `main` (the v1alpha1 document of `node`): nothing for Flannel; for
/// Cilium and `none`, `cluster.network.cni.name: none`, and on control planes no kube-proxy when
/// asked and the manifests as inline manifests.
///
/// # Errors
/// As [`manifests`].
pub(crate) fn render_into(
    repo: &Repo,
    node: &NodeFile,
    main: &mut Value,
) -> Result<(), Diagnostic> {
    let cni = &repo.cluster.value.cni;
    if cni.name == CniName::Flannel {
        return Ok(());
    }
    main["cluster"]["network"]["cni"] = json!({ "name": "none" });
    if node.role != Role::Controlplane {
        return Ok(());
    }
    if cni.kube_proxy_replacement {
        main["cluster"]["proxy"]["disabled"] = json!(true);
    }
    let inline: Vec<Value> = manifests(repo)?
        .into_iter()
        .map(|m| json!({ "name": m.name, "contents": m.contents }))
        .collect();
    if !inline.is_empty() {
        main["cluster"]["inlineManifests"] = Value::Array(inline);
    }
    Ok(())
}

/// The rules of `cni:`: names and files that fit the CNI, manifests that are Kubernetes objects
/// with the Cilium agent among them, and kube-proxy replacement the same in `cluster.yaml` and in
/// the rendered Cilium config.
pub(crate) fn cni_rules(repo: &Repo, d: &mut Diagnostics) {
    let c = &repo.cluster;
    let f = c.path.as_path();
    let cni = &c.value.cni;
    match cni.name {
        CniName::Flannel => {
            if !cni.manifests.is_empty() {
                d.push(
                    f,
                    c.pos(&path!["cni", "manifests"]),
                    "Flannel is Talos' own CNI: vixen delivers no manifests for it",
                    "set `cni.name: cilium`, or remove `cni.manifests`",
                );
            }
            if cni.kube_proxy_replacement {
                d.push(
                    f,
                    c.pos(&path!["cni", "kubeProxyReplacement"]),
                    "kube-proxy replacement needs Cilium; Flannel relies on kube-proxy",
                    "set `cni.name: cilium`, or remove `kubeProxyReplacement`",
                );
            }
            return;
        }
        CniName::Cilium if cni.manifests.is_empty() => {
            d.push(
                f,
                c.pos(&path!["cni"]),
                "`cni.name: cilium` without `manifests`: the nodes would come up without networking",
                "render Cilium offline (helm template cilium cilium/cilium --namespace kube-system) \
                 into a file of the repo and list it under `cni.manifests`",
            );
            return;
        }
        _ => {}
    }
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for (i, file) in cni.manifests.iter().enumerate() {
        let at = c.pos(&path!["cni", "manifests", i]);
        if is_sops_patch(file) {
            d.push(
                f,
                at,
                format!("CNI manifest `{file}` is SOPS-encrypted"),
                "keep the CNI's manifests in clear: they go into the machine configs as they are",
            );
        }
        let name = manifest_name(file);
        if let Some(j) = names.insert(name.clone(), i) {
            d.push(
                f,
                at,
                format!("`{file}` and entry {j} both become the inline manifest `{name}`"),
                "give the manifest files different names",
            );
        }
    }
    let files = match manifests(repo) {
        Ok(files) => files,
        Err(e) => {
            d.0.push(e);
            return;
        }
    };
    let mut all = Vec::new();
    let mut unreadable = false;
    for m in &files {
        match objects(m) {
            Ok(objs) => all.extend(objs.into_iter().map(|o| (m.file.clone(), o))),
            Err(e) => {
                unreadable = true;
                d.0.push(e);
            }
        }
    }
    if cni.name != CniName::Cilium || unreadable {
        return;
    }
    if !all
        .iter()
        .any(|(_, o)| o.kind() == "DaemonSet" && o.name() == "cilium")
    {
        d.push(
            f,
            c.pos(&path!["cni", "manifests"]),
            "the Cilium manifests hold no DaemonSet `cilium` (the agent every node needs)",
            "render the whole Cilium chart into the file, not only its CRDs or values",
        );
    }
    for (file, o) in &all {
        if o.kind() != "ConfigMap" || o.name() != "cilium-config" {
            continue;
        }
        let Some(kpr) = o
            .object
            .pointer("/data/kube-proxy-replacement")
            .and_then(Value::as_str)
        else {
            continue;
        };
        let on = kpr == "true" || kpr == "strict";
        if on != cni.kube_proxy_replacement {
            let pos = key_line(m_text(&files, file), o.pos, "kube-proxy-replacement");
            d.push(
                Path::new(file),
                pos,
                format!(
                    "the Cilium config says kube-proxy-replacement: {kpr:?}, but cluster.yaml \
                     says kubeProxyReplacement: {}",
                    cni.kube_proxy_replacement
                ),
                "render Cilium with the same kubeProxyReplacement as `cni.kubeProxyReplacement`",
            );
        }
    }
}

fn m_text<'a>(files: &'a [ManifestFile], file: &str) -> &'a str {
    files
        .iter()
        .find(|m| m.file == file)
        .map_or("", |m| m.contents.as_str())
}

/// The position of `key:` in the document of `text` that starts at `start` (or `start`).
fn key_line(text: &str, start: Pos, key: &str) -> Pos {
    let Ok(docs) = yaml::parse_all(text) else {
        return start;
    };
    docs.iter()
        .find(|n| n.pos == start)
        .and_then(|n| find_key(n, key))
        .unwrap_or(start)
}

fn find_key(n: &Node, key: &str) -> Option<Pos> {
    match &n.kind {
        Kind::Map(entries) => entries.iter().find_map(|(k, kpos, v)| {
            if k == key {
                Some(*kpos)
            } else {
                find_key(v, key)
            }
        }),
        Kind::Seq(items) => items.iter().find_map(|v| find_key(v, key)),
        Kind::Scalar(_) => None,
    }
}

/// Every object of `cni.manifests`, in file order (empty for Flannel).
///
/// # Errors
/// As [`manifests`] and [`objects`].
pub fn all_objects(repo: &Repo) -> Result<Vec<Value>, Diagnostic> {
    if repo.cluster.value.cni.name == CniName::Flannel {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for m in manifests(repo)? {
        out.extend(objects(&m)?.into_iter().map(|o| o.object));
    }
    Ok(out)
}

/// The Cilium agent's DaemonSet (`namespace/name`) among `objects`, when the CNI is Cilium.
pub fn agent_daemonset(repo: &Repo, objects: &[Value]) -> Option<String> {
    if repo.cluster.value.cni.name != CniName::Cilium {
        return None;
    }
    objects.iter().find_map(|o| {
        let kind = o.get("kind").and_then(Value::as_str)?;
        let name = o.pointer("/metadata/name").and_then(Value::as_str)?;
        (kind == "DaemonSet" && name == "cilium").then(|| {
            let ns = o
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("kube-system");
            format!("{ns}/{name}")
        })
    })
}
