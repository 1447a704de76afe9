//! One module per subcommand: argument parsing and printing only; the work lives in the crates.

pub mod agent;
pub mod bootstrap;
pub mod decommission;
pub mod decrypt;
pub mod gen_secrets;
pub mod install;
pub mod kubeconfig;
pub mod lab;
pub mod render;
pub mod validate;

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use vixen_model::Repo;
use vixen_pki::SecretsBundle;

/// Writes a file readable by its owner only (it holds secrets).
///
/// # Errors
/// When the file exists and `overwrite` is false, or on any I/O error.
pub fn write_private(path: &Path, bytes: &[u8], overwrite: bool) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if overwrite {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path)?;
    // An existing file keeps its mode on open: make sure it is private too.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(bytes)
}

/// Loads a repo and validates it, turning diagnostics into one error listing them all.
///
/// # Errors
/// Every problem of the repo.
pub fn load_valid_repo(root: &Path) -> anyhow::Result<Repo> {
    vixen_model::validate::load_and_validate(root).map_err(|diags| {
        anyhow::anyhow!(
            "the repo at {} is not valid; nothing was changed:\n{diags}",
            root.display()
        )
    })
}

/// Reads the repo's secrets bundle, decrypting it when it is a SOPS file.
///
/// # Errors
/// When the file cannot be read, decrypted or parsed. Messages never include secret values.
pub fn load_bundle(repo: &Repo, age_key: Option<&PathBuf>) -> anyhow::Result<SecretsBundle> {
    let rel = &repo.cluster.value.secrets;
    let raw = std::fs::read(repo.root.join(rel))
        .with_context(|| format!("reading secrets bundle {rel}"))?;
    let plain = decrypt_if_sops(&raw, rel, age_key)?;
    let text = std::str::from_utf8(&plain).with_context(|| format!("{rel} is not UTF-8"))?;
    // serde_yaml_ng errors show the offending value only for type errors of scalars we
    // deserialize as strings; map them to a fixed message so no secret can leak.
    serde_yaml_ng::from_str::<SecretsBundle>(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(" at line {}", l.line()))
            .unwrap_or_default();
        anyhow::anyhow!(
            "{rel}: not a Talos secrets bundle{at} (expected the `talosctl gen secrets` layout)"
        )
    })
}

fn decrypt_if_sops(
    raw: &[u8],
    rel: &str,
    age_key: Option<&PathBuf>,
) -> anyhow::Result<zeroize::Zeroizing<Vec<u8>>> {
    use vixen_sops::{Format, Keyring};
    if !vixen_sops::is_sops_file(raw, Format::Yaml) {
        // A plaintext bundle (tests, or a repo that keeps secrets elsewhere).
        return Ok(zeroize::Zeroizing::new(raw.to_vec()));
    }
    let keys = match age_key {
        Some(path) => Keyring::from_file(path)?,
        None => Keyring::from_env()?,
    };
    let plain = vixen_sops::decrypt(raw, Format::Yaml, &keys)
        .with_context(|| format!("cannot decrypt {rel}"))?;
    Ok(plain.into_inner())
}

/// The lab's node list for a cluster repo (`vixen lab up --repo DIR`).
///
/// # Errors
/// When the repo does not load or validate.
pub fn lab_spec_for_repo(root: &Path) -> anyhow::Result<vixen_lab::LabSpec> {
    let repo = load_valid_repo(root)?;
    let talos_version = repo.cluster.value.talos.version.clone();
    let nodes = repo
        .nodes
        .iter()
        .map(|n| {
            let v = &n.value;
            Ok(vixen_lab::NodeSpec {
                name: v.name.clone(),
                role: match v.role {
                    vixen_model::Role::Controlplane => vixen_lab::Role::Controlplane,
                    vixen_model::Role::Worker => vixen_lab::Role::Worker,
                },
                maintenance_address: v.maintenance_address.parse()?,
                talos_version: talos_version.clone(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let spec = vixen_lab::LabSpec { nodes };
    spec.validate()?;
    Ok(spec)
}
