//! From a checkout to what the engine needs: the repo validated, its secrets bundle decrypted,
//! every node rendered, the desired state reduced to what the planner needs, and the Talos
//! credentials. One pipeline for every command and the daemon.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vixen_model::Repo;
use vixen_model::render::{RenderInputs, installer_image, management_addresses, render_with};
use vixen_model::validate::parse_duration;
use vixen_plan::{Desired, DesiredNode};
use vixen_talos::{Credentials, Talosconfig};
use zeroize::Zeroizing;

/// The rendered configs, by node name. They hold secrets: never log them.
pub type Configs = BTreeMap<String, Zeroizing<String>>;

/// Builds the planner's input and the configs to send.
///
/// # Errors
/// When a node does not render or a version does not parse (validation catches both first).
pub fn desired(repo: &Repo, inputs: &RenderInputs) -> Result<(Desired, Configs), String> {
    let c = &repo.cluster.value;
    let mut nodes = Vec::new();
    let mut configs = Configs::new();
    for n in &repo.nodes {
        let config = render_with(repo, n, inputs).map_err(|d| d.to_string())?;
        let v = &n.value;
        nodes.push(DesiredNode {
            name: v.name.clone(),
            hostname: v.hostname.clone().unwrap_or_else(|| v.name.clone()),
            role: v.role,
            maintenance_address: v.maintenance_address.clone(),
            management_addresses: management_addresses(v),
            config: config.digest(),
        });
        configs.insert(v.name.clone(), Zeroizing::new(config.to_yaml()));
    }
    let desired = Desired {
        talos_version: c
            .talos
            .version
            .parse()
            .map_err(|e| format!("talos.version: {e}"))?,
        installer_image: installer_image(repo, &c.talos.version),
        kubernetes_version: c
            .kubernetes
            .version
            .parse()
            .map_err(|e| format!("kubernetes.version: {e}"))?,
        nodes,
        stabilization: parse_duration(&c.upgrade.stabilization).unwrap_or(Duration::from_secs(30)),
        reset_on_removal: c.removal == vixen_model::Removal::Reset,
        worker_concurrency: c.upgrade.worker_concurrency.max(1),
        drift: match c.drift {
            vixen_model::Drift::Correct => vixen_plan::DriftPolicy::Correct,
            vixen_model::Drift::Report => vixen_plan::DriftPolicy::Report,
        },
        network_rollout: vixen_model::cni::agent_daemonset(
            repo,
            &vixen_model::cni::all_objects(repo).map_err(|d| d.to_string())?,
        ),
    };
    Ok((desired, configs))
}

/// How to prepare a checkout.
#[derive(Debug, Clone, Default)]
pub struct PrepareOptions {
    /// age identity file (else the keys sops finds: `SOPS_AGE_KEY`, `SOPS_AGE_KEY_FILE`, ...).
    pub age_key: Option<PathBuf>,
    /// talosconfig to present (else an `os:admin` certificate minted from the bundle).
    pub talosconfig: Option<PathBuf>,
}

/// What a checkout gives.
pub struct Prepared {
    /// The repo, validated.
    pub repo: Repo,
    /// Desired state.
    pub desired: Desired,
    /// Rendered configs (secret: never log them).
    pub configs: Configs,
    /// The Talos credentials to present.
    pub credentials: Credentials,
}

/// Why a checkout cannot be applied. Messages never include a secret value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrepareError {
    /// The repo is not valid: every problem as `file:line:col: message (fix: ...)`.
    #[error("the repo is not valid; nothing was changed:\n{0}")]
    Invalid(vixen_model::Diagnostics),
    /// The secrets bundle cannot be read, decrypted or parsed.
    #[error("{0}")]
    Secrets(String),
    /// A node does not render.
    #[error("{0}")]
    Render(String),
    /// The credentials cannot be built.
    #[error("credentials: {0}")]
    Credentials(String),
}

impl PrepareError {
    /// The stage that failed (a fixed label: `validate`, `decrypt`, `render`, `credentials`).
    pub fn stage(&self) -> &'static str {
        match self {
            PrepareError::Invalid(_) => "validate",
            PrepareError::Secrets(_) => "decrypt",
            PrepareError::Render(_) => "render",
            PrepareError::Credentials(_) => "credentials",
        }
    }
}

/// Loads, validates, decrypts and renders the repo at `root`. Every file is read through the
/// repo's sandbox (vixen-model): nothing outside the repo is read, and no message shows a
/// secret.
///
/// # Errors
/// [`PrepareError`] naming the stage.
pub fn prepare(root: &Path, opts: &PrepareOptions) -> Result<Prepared, PrepareError> {
    let repo = vixen_model::validate::load_and_validate(root).map_err(PrepareError::Invalid)?;
    let keys = keys_for(&repo, opts.age_key.as_deref())?;
    let inputs =
        vixen_model::secrets::load_render_inputs(&repo, &keys).map_err(PrepareError::Invalid)?;
    let (desired, configs) = desired(&repo, &inputs).map_err(PrepareError::Render)?;
    let credentials = match &opts.talosconfig {
        Some(path) => Talosconfig::load(path).and_then(|t| t.credentials(None)),
        None => Credentials::from_bundle(&inputs.bundle),
    }
    .map_err(|e| PrepareError::Credentials(e.to_string()))?;
    Ok(Prepared {
        repo,
        desired,
        configs,
        credentials,
    })
}

/// The age keys: `age_key`, else those sops finds (`SOPS_AGE_KEY`, `SOPS_AGE_KEY_FILE`, ...).
///
/// # Errors
/// When the key file cannot be read.
pub fn keyring(age_key: Option<&Path>) -> Result<vixen_sops::Keyring, PrepareError> {
    match age_key {
        Some(path) => vixen_sops::Keyring::from_file(path),
        None => vixen_sops::Keyring::from_env(),
    }
    .map_err(|e| PrepareError::Secrets(e.to_string()))
}

/// The repo's secrets bundle and decrypted patches (for `vixen render`).
///
/// # Errors
/// Every problem of the secrets file, at its file and line, never with a value.
pub fn render_inputs(repo: &Repo, age_key: Option<&Path>) -> Result<RenderInputs, PrepareError> {
    vixen_model::secrets::load_render_inputs(repo, &keys_for(repo, age_key)?)
        .map_err(PrepareError::Invalid)
}

/// The keys for `repo`: none are needed for a bundle declared plaintext (an encrypted patch
/// then reports that it cannot be decrypted, at its line).
fn keys_for(repo: &Repo, age_key: Option<&Path>) -> Result<vixen_sops::Keyring, PrepareError> {
    match keyring(age_key) {
        Err(_) if age_key.is_none() && repo.cluster.value.secrets.plaintext => {
            Ok(vixen_sops::Keyring::empty())
        }
        other => other,
    }
}
