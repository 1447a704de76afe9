//! `addons:` in `cluster.yaml`: the manifests of the infrastructure layer vixen applies after
//! the CNI, in the order given (server-side apply, prune of what left Git). This is how Flux,
//! Argo CD, a storage driver or cert-manager arrive on a new cluster before any app tool runs.
//!
//! A `*.sops.yaml` addon (one document, e.g. a Secret) is decrypted with the cluster's age key
//! first; without the key it is checked for what can be seen (metadata, MAC form), like the
//! encrypted patches. Nothing of an addon's content is ever quoted in a diagnostic.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use vixen_sops::{Format, Keyring};

use crate::cni::{ManifestFile, ManifestObject, objects};
use crate::path;
use crate::render::is_sops_patch;
use crate::repo::{Diagnostics, Repo};
use crate::secrets::{check_encrypted, read_parsed, sops_error};
use crate::yaml::Pos;

/// The objects of every addon, in file order; encrypted addons are decrypted with `keys`
/// (without keys they are left out, and `skipped` counts them).
///
/// # Errors
/// Every problem of the files, at their file and line; no message holds a value.
pub fn addon_objects(repo: &Repo, keys: Option<&Keyring>) -> Result<Addons, Diagnostics> {
    let mut d = Diagnostics::default();
    let mut out = Addons::default();
    for (i, file, at) in entries(repo) {
        let from = repo.cluster.path.as_path();
        if is_sops_patch(&file) {
            let Some(l) = read_parsed(repo, "addon", &file, from, at, &mut d) else {
                continue;
            };
            if !l.encrypted {
                d.push(
                    Path::new(&file),
                    Pos { line: 1, col: 1 },
                    "this addon is named *.sops.yaml but is not SOPS-encrypted",
                    "encrypt it with `sops -e -i`, or rename it without `.sops`",
                );
                continue;
            }
            if !check_encrypted(Path::new(&file), &l, &mut d) {
                continue;
            }
            let Some(keys) = keys else {
                out.skipped += 1;
                continue;
            };
            let plain = match vixen_sops::decrypt(&l.bytes, Format::Yaml, keys) {
                Ok(p) => p,
                Err(e) => {
                    let (pos, message, fix) = sops_error(&e, Some(&l.tree));
                    d.push(Path::new(&file), pos, message, fix);
                    continue;
                }
            };
            let Ok(text) = std::str::from_utf8(plain.as_bytes()) else {
                d.push(
                    Path::new(&file),
                    Pos { line: 1, col: 1 },
                    "the decrypted addon is not UTF-8 text",
                    "write the manifest again and encrypt it with sops",
                );
                continue;
            };
            push_objects(&file, text.to_owned(), &mut out, &mut d);
        } else {
            match repo.read(&file) {
                Ok(text) => push_objects(&file, text, &mut out, &mut d),
                Err(r) => d.push(
                    from,
                    at,
                    format!("addon {r} (cluster.yaml `addons` entry {i})"),
                    r.fix(),
                ),
            }
        }
    }
    if d.is_empty() {
        Ok(out)
    } else {
        d.sort();
        Err(d)
    }
}

/// What [`addon_objects`] read.
#[derive(Debug, Default)]
pub struct Addons {
    /// The objects, in file order, each with the file it came from.
    pub objects: Vec<(String, ManifestObject)>,
    /// Encrypted addons left out for want of a key.
    pub skipped: usize,
}

impl Addons {
    /// The objects alone, for the apply.
    pub fn values(&self) -> Vec<Value> {
        self.objects.iter().map(|(_, o)| o.object.clone()).collect()
    }
}

fn entries(repo: &Repo) -> Vec<(usize, String, Pos)> {
    let c = &repo.cluster;
    c.value
        .addons
        .iter()
        .enumerate()
        .map(|(i, f)| (i, f.clone(), c.pos(&path!["addons", i])))
        .collect()
}

fn push_objects(file: &str, contents: String, out: &mut Addons, d: &mut Diagnostics) {
    let m = ManifestFile {
        name: String::new(),
        file: file.to_owned(),
        contents,
    };
    match objects(&m) {
        Ok(objs) => out
            .objects
            .extend(objs.into_iter().map(|o| (file.to_owned(), o))),
        Err(e) => d.0.push(e),
    }
}

/// The rules of `addons:` (key-less): files inside the repo, no file twice, manifests that are
/// Kubernetes objects, encrypted ones well-formed; and no object that two of the sets vixen
/// applies (CNI, addons, the GitOps tool) both hold, since each apply would take it from the
/// other.
pub(crate) fn addon_rules(repo: &Repo, d: &mut Diagnostics) {
    let c = &repo.cluster;
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, file) in c.value.addons.iter().enumerate() {
        if let Some(j) = seen.insert(file, i) {
            d.push(
                &c.path,
                c.pos(&path!["addons", i]),
                format!("`{file}` is listed twice (entries {j} and {i})"),
                "list each addon file once",
            );
        }
    }
    let addons = match addon_objects(repo, None) {
        Ok(a) => a,
        Err(e) => {
            d.0.extend(e.0);
            return;
        }
    };
    let mut owner: BTreeMap<String, (String, &'static str)> = BTreeMap::new();
    let mut claim = |file: &str, o: &ManifestObject, set: &'static str, d: &mut Diagnostics| {
        let key = identity(o);
        match owner.get(&key) {
            Some((first, other)) if *other != set || first != file => d.push(
                Path::new(file),
                o.pos,
                format!("{} is in {first} as well (the {other} set)", describe(o)),
                "keep every object in one place: the CNI manifests, an addon, or the GitOps \
                 tool's manifests",
            ),
            Some(_) => {}
            None => {
                owner.insert(key, (file.to_owned(), set));
            }
        }
    };
    if let Ok(files) = crate::cni::manifests(repo)
        && repo.cluster.value.cni.name != crate::types::CniName::Flannel
    {
        for m in &files {
            for o in objects(m).unwrap_or_default() {
                claim(&m.file, &o, "CNI", d);
            }
        }
    }
    for (file, o) in &addons.objects {
        claim(file, o, "addons", d);
    }
    if let Ok(files) = crate::gitops::install_files(repo) {
        for m in &files {
            for o in objects(m).unwrap_or_default() {
                claim(&m.file, &o, "GitOps", d);
            }
        }
    }
}

/// Every addon decrypted and parsed (validation with the key).
pub(crate) fn addon_rules_with_keys(repo: &Repo, keys: &Keyring, d: &mut Diagnostics) {
    if let Err(e) = addon_objects(repo, Some(keys)) {
        d.0.extend(e.0);
    }
}

/// `group/Kind namespace/name`: what makes two objects the same one.
fn identity(o: &ManifestObject) -> String {
    let group = o.api_version().rsplit_once('/').map_or("", |(g, _)| g);
    format!(
        "{group}/{} {}/{}",
        o.kind(),
        o.namespace().unwrap_or_default(),
        o.name()
    )
}

fn describe(o: &ManifestObject) -> String {
    match o.namespace() {
        Some(ns) => format!("{} {ns}/{}", o.kind(), o.name()),
        None => format!("{} {}", o.kind(), o.name()),
    }
}
