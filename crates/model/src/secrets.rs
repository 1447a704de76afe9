//! The secrets of a repo: the Talos secrets bundle and `*.sops.yaml` patches, checked without a
//! key by `validate` and decrypted with one for rendering.
//!
//! ```text
//! cluster.yaml secrets ─Sandbox─► bytes ─► YAML? one mapping? ─► `sops:` with mac,
//!   lastmodified, an age recipient ─► vixen_sops::check (every value ENC[...]) ─► bundle shape
//!        └── with a Keyring: vixen_sops::decrypt (MAC verified) ─► SecretsBundle
//! ```
//!
//! No message here ever contains a value of the file: problems are named by path and line.
//! The shape checked is what `vixen_pki::SecretsBundle` reads (the `talosctl gen secrets`
//! layout).

use std::collections::BTreeMap;
use std::path::Path;

use vixen_pki::SecretsBundle;
use vixen_sops::{Format, Keyring};
use zeroize::Zeroizing;

use crate::render::{RenderInputs, is_sops_patch, patch_files};
use crate::repo::{Diagnostics, Repo};
use crate::yaml::{self, Kind, Node, Pos, Seg};

const TOP: Pos = Pos { line: 1, col: 1 };

/// The leaves a bundle must have (`vixen_pki::SecretsBundle` and its parts).
const REQUIRED: &[&[&str]] = &[
    &["cluster", "id"],
    &["cluster", "secret"],
    &["secrets", "bootstraptoken"],
    &["secrets", "secretboxencryptionsecret"],
    &["trustdinfo", "token"],
    &["certs", "etcd", "crt"],
    &["certs", "etcd", "key"],
    &["certs", "k8s", "crt"],
    &["certs", "k8s", "key"],
    &["certs", "k8saggregator", "crt"],
    &["certs", "k8saggregator", "key"],
    &["certs", "k8sserviceaccount", "key"],
    &["certs", "os", "crt"],
    &["certs", "os", "key"],
];
const SECTIONS: [&str; 4] = ["cluster", "secrets", "trustdinfo", "certs"];

/// A sops value path (`certs.os.key`, `a[0].b`) as segments.
fn sops_path(p: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in p.split('.') {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            out.push(Seg::Key(rest[..i].to_string()));
            rest = &rest[i..];
            while let Some(end) = rest.find(']') {
                if let Ok(n) = rest[1..end].parse() {
                    out.push(Seg::Index(n));
                }
                rest = &rest[end + 1..];
            }
        } else {
            out.push(Seg::Key(rest.to_string()));
        }
    }
    out
}

/// Where a sops error points in `tree`, and what to say (never a value).
pub(crate) fn sops_error(
    e: &vixen_sops::Error,
    tree: Option<&Node>,
) -> (Pos, String, &'static str) {
    use vixen_sops::Error as E;
    let at = |segs: &[Seg]| tree.map_or(TOP, |t| t.position(segs));
    let sops_key = tree.map_or(TOP, |t| t.key_position(&crate::path!["sops"]));
    let fix_encrypt = "encrypt the file again with `sops -e` (or restore it from Git)";
    match e {
        E::MalformedValue { path, reason } => {
            let pos = if path == "sops.mac" {
                at(&crate::path!["sops", "mac"])
            } else {
                at(&sops_path(path))
            };
            (
                pos,
                format!("`{path}` is {reason}: a plaintext or damaged value in an encrypted file"),
                fix_encrypt,
            )
        }
        E::MacMismatch => (
            at(&crate::path!["sops", "mac"]),
            "MAC mismatch: the file was changed after sops encrypted it".into(),
            fix_encrypt,
        ),
        E::Parse { line, .. } => (
            line.map_or(TOP, |line| Pos { line, col: 1 }),
            "the file does not parse as YAML (truncated or damaged?)".into(),
            "restore the file from Git",
        ),
        E::NoMatchingKey { .. } | E::NotEnoughKeyGroups { .. } | E::UnsupportedKeyType(_) => (
            sops_key,
            e.to_string(),
            "give vixen an age identity of one of these recipients (--age-key or SOPS_AGE_KEY_FILE)",
        ),
        E::InvalidMetadata(_) => (sops_key, e.to_string(), fix_encrypt),
        _ => (TOP, e.to_string(), fix_encrypt),
    }
}

/// A file read and parsed for checking; `None` when it was refused (and reported).
pub(crate) struct Loaded {
    pub(crate) bytes: Zeroizing<Vec<u8>>,
    pub(crate) tree: Node,
    pub(crate) encrypted: bool,
}

/// Reads `rel` (referenced at `ref_pos` of cluster.yaml or a node file) and parses it,
/// reporting what is wrong without quoting the content.
pub(crate) fn read_parsed(
    repo: &Repo,
    what: &str,
    rel: &str,
    ref_file: &Path,
    ref_pos: Pos,
    d: &mut Diagnostics,
) -> Option<Loaded> {
    let file = Path::new(rel);
    let bytes = match repo.sandbox().read_bytes(rel) {
        Ok(b) => b,
        Err(r) => {
            d.push(ref_file, ref_pos, format!("{what} {r}"), r.fix());
            return None;
        }
    };
    let restore = "restore the file from Git, or write it again";
    if bytes.iter().all(u8::is_ascii_whitespace) {
        d.push(file, TOP, "the file is empty", restore);
        return None;
    }
    let Ok(text) = std::str::from_utf8(&bytes) else {
        d.push(file, TOP, "the file is not UTF-8 text", restore);
        return None;
    };
    let tree = match yaml::parse_one(text) {
        Ok(t) => t,
        Err(e) => {
            d.push(
                file,
                e.pos,
                "the file is not valid YAML here (truncated or damaged?)",
                restore,
            );
            return None;
        }
    };
    if !matches!(tree.kind, Kind::Map(_)) {
        d.push(file, tree.pos, "the file is not a YAML mapping", restore);
        return None;
    }
    let encrypted = tree.get(&crate::path!["sops"]).is_some();
    Some(Loaded {
        bytes,
        tree,
        encrypted,
    })
}

/// The key-less checks of an encrypted file: metadata present, then `vixen_sops::check`.
pub(crate) fn check_encrypted(file: &Path, l: &Loaded, d: &mut Diagnostics) -> bool {
    let sops_at = l.tree.key_position(&crate::path!["sops"]);
    let fix = "encrypt the file again with `sops -e` (or restore it from Git)";
    let sops = l.tree.get(&crate::path!["sops"]);
    for field in ["mac", "lastmodified"] {
        if sops.and_then(|s| s.get(&crate::path![field])).is_none() {
            d.push(
                file,
                sops_at,
                format!("the `sops` metadata has no `{field}`"),
                fix,
            );
            return false;
        }
    }
    if let Err(e) = vixen_sops::check(&l.bytes, Format::Yaml) {
        let (pos, message, fix) = sops_error(&e, Some(&l.tree));
        d.push(file, pos, message, fix);
        return false;
    }
    true
}

/// The bundle's shape: the four sections, no other, and every required leaf a single value.
fn check_shape(file: &Path, tree: &Node, d: &mut Diagnostics) {
    if let Kind::Map(entries) = &tree.kind {
        for (key, pos, _) in entries {
            if key != "sops" && !SECTIONS.contains(&key.as_str()) {
                d.push(
                    file,
                    *pos,
                    format!("`{key}` is not a section of a Talos secrets bundle"),
                    "keep only cluster, secrets, trustdinfo and certs (`vixen gen-secrets` layout)",
                );
            }
        }
    }
    for path in REQUIRED {
        let segs: Vec<Seg> = path.iter().map(|k| Seg::Key((*k).to_string())).collect();
        match tree.get(&segs) {
            None => d.push(
                file,
                tree.position(&segs),
                format!("the bundle has no `{}`", path.join(".")),
                "add it (the `vixen gen-secrets` layout), or restore the file from Git",
            ),
            Some(Node {
                kind: Kind::Scalar(v),
                pos,
            }) if !v.is_string() => d.push(
                file,
                *pos,
                format!("`{}` must be a string", path.join(".")),
                "restore the value from Git",
            ),
            Some(Node {
                kind: Kind::Map(_) | Kind::Seq(_),
                pos,
            }) => d.push(
                file,
                *pos,
                format!("`{}` must be a single value", path.join(".")),
                "restore the value from Git",
            ),
            Some(_) => {}
        }
    }
}

/// Checks the repo's secrets bundle without a key: SOPS metadata, every value encrypted and
/// well-formed, the bundle's shape; a plaintext bundle only with `plaintext: true`.
pub fn check_bundle_file(repo: &Repo) -> Diagnostics {
    let mut d = Diagnostics::default();
    let _ = checked_bundle(repo, &mut d);
    d
}

fn checked_bundle(repo: &Repo, d: &mut Diagnostics) -> Option<Loaded> {
    let c = &repo.cluster;
    let sref = &c.value.secrets;
    let ref_pos = c.pos(&crate::path!["secrets", "file"]);
    let file = Path::new(&sref.file);
    let l = read_parsed(repo, "secrets file", &sref.file, &c.path, ref_pos, d)?;
    let before = d.0.len();
    match (l.encrypted, sref.plaintext) {
        (true, true) => d.push(
            &c.path,
            c.pos(&crate::path!["secrets", "plaintext"]),
            format!("`plaintext: true`, but `{}` is SOPS-encrypted", sref.file),
            "remove `plaintext: true` (write `secrets: <path>`)",
        ),
        (true, false) => {
            check_encrypted(file, &l, d);
        }
        (false, true) => {}
        (false, false) => d.push(
            file,
            TOP,
            "the secrets bundle is not SOPS-encrypted",
            "encrypt it with `sops -e -i <file>` to the cluster's age key, or write \
             `secrets: {file: <path>, plaintext: true}` in cluster.yaml for a throwaway bundle",
        ),
    }
    check_shape(file, &l.tree, d);
    (d.0.len() == before).then_some(l)
}

/// Reads, checks, decrypts (verifying the MAC) and parses the repo's secrets bundle.
///
/// # Errors
/// Every problem as [`Diagnostics`] at the file and line concerned; no message holds a value.
pub fn load_bundle(repo: &Repo, keys: &Keyring) -> Result<SecretsBundle, Diagnostics> {
    let mut d = Diagnostics::default();
    let Some(l) = checked_bundle(repo, &mut d) else {
        return Err(d);
    };
    let file = Path::new(&repo.cluster.value.secrets.file);
    let plain = if l.encrypted {
        match vixen_sops::decrypt(&l.bytes, Format::Yaml, keys) {
            Ok(p) => p.into_inner(),
            Err(e) => {
                let (pos, message, fix) = sops_error(&e, Some(&l.tree));
                d.push(file, pos, message, fix);
                return Err(d);
            }
        }
    } else {
        l.bytes
    };
    let text = std::str::from_utf8(&plain).unwrap_or_default();
    // serde_yaml_ng's messages may quote a value: only its line is used.
    serde_yaml_ng::from_str::<SecretsBundle>(text).map_err(|e| {
        let pos = e.location().map_or(TOP, |l| Pos {
            line: l.line(),
            col: l.column(),
        });
        d.push(
            file,
            pos,
            "the decrypted bundle does not have the form of a Talos secrets bundle here",
            "write it again with `vixen gen-secrets`, or restore it from Git",
        );
        d
    })
}

/// The `*.sops.yaml` patches some node uses, each with where it is first referenced.
fn sops_patches(repo: &Repo) -> BTreeMap<String, (std::path::PathBuf, Pos)> {
    let mut out = BTreeMap::new();
    for n in &repo.nodes {
        for (rel, in_file, at) in patch_files(repo, n) {
            if is_sops_patch(&rel) && !out.contains_key(&rel) {
                let pos = if in_file == n.path {
                    n.pos(&at)
                } else {
                    repo.cluster.pos(&at)
                };
                out.insert(rel, (in_file, pos));
            }
        }
    }
    out
}

/// Key-less checks of the `*.sops.yaml` patches: each is SOPS-encrypted YAML whose values are
/// all well-formed `ENC[...]`.
pub(crate) fn check_sops_patches(repo: &Repo, d: &mut Diagnostics) {
    for (rel, (in_file, pos)) in sops_patches(repo) {
        if let Some(l) = read_parsed(repo, "patch file", &rel, &in_file, pos, d) {
            if l.encrypted {
                check_encrypted(Path::new(&rel), &l, d);
            } else {
                d.push(
                    Path::new(&rel),
                    TOP,
                    "this patch is named *.sops.yaml but is not SOPS-encrypted",
                    "encrypt it with `sops -e -i`, or rename it without `.sops`",
                );
            }
        }
    }
}

/// The bundle and every decrypted `*.sops.yaml` patch, ready for
/// [`crate::render::render_with`].
///
/// # Errors
/// Every problem of the bundle and the patches as [`Diagnostics`]; no message holds a value.
pub fn load_render_inputs(repo: &Repo, keys: &Keyring) -> Result<RenderInputs, Diagnostics> {
    let bundle = load_bundle(repo, keys);
    let mut d = Diagnostics::default();
    let mut patches = BTreeMap::new();
    check_sops_patches(repo, &mut d);
    if d.is_empty() {
        for rel in sops_patches(repo).into_keys() {
            let Ok(bytes) = repo.sandbox().read_bytes(&rel) else {
                continue;
            };
            match vixen_sops::decrypt(&bytes, Format::Yaml, keys) {
                Ok(p) => match String::from_utf8(p.into_inner().to_vec()) {
                    Ok(s) => {
                        patches.insert(rel, Zeroizing::new(s));
                    }
                    Err(_) => d.push(
                        Path::new(&rel),
                        TOP,
                        "the decrypted patch is not UTF-8 text",
                        "write the patch again and encrypt it with sops",
                    ),
                },
                Err(e) => {
                    let tree = std::str::from_utf8(&bytes)
                        .ok()
                        .and_then(|t| yaml::parse_one(t).ok());
                    let (pos, message, fix) = sops_error(&e, tree.as_ref());
                    d.push(Path::new(&rel), pos, message, fix);
                }
            }
        }
    }
    match bundle {
        Ok(bundle) if d.is_empty() => Ok(RenderInputs { bundle, patches }),
        Ok(_) => {
            d.sort();
            Err(d)
        }
        Err(mut b) => {
            b.0.extend(d.0);
            b.sort();
            Err(b)
        }
    }
}
