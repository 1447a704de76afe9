//! The subcommands, one module each (`once` is `vixen agent --once`): argument parsing
//! and printing only; the work lives in the crates.

pub mod agent;
pub mod bootstrap;
pub mod decommission;
pub mod decrypt;
pub mod etcd;
pub mod gen_secrets;
pub mod import;
pub mod install;
pub mod kubeconfig;
#[cfg(feature = "lab")]
pub mod lab;
pub mod once;
pub mod plan;
pub mod render;
pub mod status;
pub mod validate;

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use vixen_model::Repo;

/// The cluster repo of a command that reads one: `--repo DIR`, as every command takes it, or a
/// positional REPO.
#[derive(clap::Args, Clone, Debug)]
pub struct RepoArg {
    /// The cluster repo (the folder holding cluster.yaml; default: the current folder).
    #[arg(value_name = "REPO", conflicts_with = "repo")]
    pub repo_path: Option<PathBuf>,
    /// The cluster repo, as a flag (the same as the positional REPO).
    #[arg(long = "repo", id = "repo", value_name = "REPO")]
    pub repo_flag: Option<PathBuf>,
}

impl RepoArg {
    /// The folder given, or `.`.
    pub fn path(&self) -> PathBuf {
        self.repo_flag
            .clone()
            .or_else(|| self.repo_path.clone())
            .unwrap_or_else(|| PathBuf::from("."))
    }
}

/// `1 step`, `2 steps`: a count with its noun in the right number.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

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

#[cfg(feature = "lab")]
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
