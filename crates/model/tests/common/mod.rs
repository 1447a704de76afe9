//! Helpers shared by the model's integration tests: a fresh copy of the homelab example, edits,
//! and every output a user could see, as text.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use vixen_model::Repo;
use vixen_sops::Keyring;

/// `crates/model`.
pub fn manifest() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// The homelab example.
pub fn example() -> PathBuf {
    manifest().join("../../examples/homelab")
}

/// A fixture of `tests/testdata`.
pub fn testdata(name: &str) -> PathBuf {
    manifest().join("tests/testdata").join(name)
}

/// The example's (public, lab-only) age key.
pub fn demo_keys() -> Keyring {
    Keyring::from_file(example().join("demo.agekey")).unwrap()
}

/// Copies a folder tree (symlinks are not expected in the example).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Replaces `old` by `new` once in `file` (empty `old`: appends).
pub fn edit(file: &Path, old: &str, new: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    let text = if old.is_empty() {
        format!("{text}{new}")
    } else {
        assert!(
            text.contains(old),
            "{} does not contain {old:?}",
            file.display()
        );
        text.replacen(old, new, 1)
    };
    std::fs::write(file, text).unwrap();
}

/// [`example_copy`] with Talos' default Flannel: the example's `cni:` line taken out (for the
/// tests that add a CNI of their own, and whose line numbers predate it).
pub fn example_copy_flannel() -> (tempfile::TempDir, PathBuf) {
    let (dir, repo) = example_copy();
    let path = repo.join("cluster.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let line =
        "cni: {name: cilium, kubeProxyReplacement: true, manifests: [platform/cilium.yaml]}\n";
    assert!(text.contains(line), "the example's cni line");
    // A comment line in its place keeps every other line where it was.
    std::fs::write(
        &path,
        text.replacen(line, "# (Flannel: Talos' default)\n", 1),
    )
    .unwrap();
    (dir, repo)
}

/// A temp folder holding a copy of the example at `<tmp>/repo`.
pub fn example_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    copy_dir(&example(), &repo);
    (dir, repo)
}

/// Every diagnostic of key-less `load_and_validate`, as `file:line:col: message (fix: ...)`.
pub fn problems(root: &Path) -> Vec<String> {
    match vixen_model::validate::load_and_validate(root) {
        Ok(_) => Vec::new(),
        Err(d) => d.0.iter().map(ToString::to_string).collect(),
    }
}

/// Every text vixen-model would hand to a user for this repo: key-less and keyed validation,
/// the bundle loader's errors, and every node's render result (configs included).
pub fn all_output(root: &Path, keys: &Keyring) -> String {
    let mut out = String::new();
    let repo = match Repo::load(root) {
        Ok(repo) => repo,
        Err(d) => return d.to_string(),
    };
    out.push_str(&vixen_model::validate::validate(&repo).to_string());
    out.push_str(&vixen_model::validate::validate_with_keys(&repo, keys).to_string());
    match vixen_model::secrets::load_render_inputs(&repo, keys) {
        Ok(inputs) => {
            for n in &repo.nodes {
                match vixen_model::render::render_with(&repo, n, &inputs) {
                    Ok(c) => out.push_str(&c.to_yaml()),
                    Err(e) => out.push_str(&e.to_string()),
                }
            }
        }
        Err(d) => out.push_str(&d.to_string()),
    }
    out
}

/// Asserts that one of `found` starts with `location` and contains `words`.
#[track_caller]
pub fn assert_found(found: &[String], location: &str, words: &str) {
    assert!(
        found
            .iter()
            .any(|p| p.starts_with(&format!("{location}: ")) && p.contains(words)),
        "expected `{location}: ...{words}...`, got:\n{}",
        found.join("\n")
    );
}
