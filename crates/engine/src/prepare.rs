//! From a checkout to what the engine needs: the repo validated, its secrets bundle decrypted,
//! every node rendered, the desired state reduced to what the planner needs, and the Talos
//! credentials. One pipeline for every command and the daemon.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vixen_model::Repo;
use vixen_model::render::{installer_image, management_addresses, render};
use vixen_model::validate::parse_duration;
use vixen_pki::SecretsBundle;
use vixen_plan::{Desired, DesiredNode};
use vixen_talos::{Credentials, Talosconfig};
use zeroize::Zeroizing;

/// The rendered configs, by node name. They hold secrets: never log them.
pub type Configs = BTreeMap<String, Zeroizing<String>>;

/// Builds the planner's input and the configs to send.
///
/// # Errors
/// When a node does not render or a version does not parse (validation catches both first).
pub fn desired(repo: &Repo, bundle: &SecretsBundle) -> Result<(Desired, Configs), String> {
    let c = &repo.cluster.value;
    let mut nodes = Vec::new();
    let mut configs = Configs::new();
    for n in &repo.nodes {
        let config = render(repo, n, bundle).map_err(|d| d.to_string())?;
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

/// Loads, validates, decrypts and renders the repo at `root`.
///
/// # Errors
/// [`PrepareError`] naming the stage.
pub fn prepare(root: &Path, opts: &PrepareOptions) -> Result<Prepared, PrepareError> {
    let repo = vixen_model::validate::load_and_validate(root).map_err(PrepareError::Invalid)?;
    let bundle = load_bundle(&repo, opts.age_key.as_deref())?;
    let (desired, configs) = desired(&repo, &bundle).map_err(PrepareError::Render)?;
    let credentials = match &opts.talosconfig {
        Some(path) => Talosconfig::load(path).and_then(|t| t.credentials(None)),
        None => Credentials::from_bundle(&bundle),
    }
    .map_err(|e| PrepareError::Credentials(e.to_string()))?;
    Ok(Prepared {
        repo,
        desired,
        configs,
        credentials,
    })
}

/// Reads the repo's secrets bundle, decrypting it when it is a SOPS file.
///
/// # Errors
/// When the file cannot be read, decrypted or parsed. Messages never include secret values.
pub fn load_bundle(repo: &Repo, age_key: Option<&Path>) -> Result<SecretsBundle, PrepareError> {
    use vixen_sops::{Format, Keyring};
    let rel = &repo.cluster.value.secrets;
    let raw = repo
        .read(rel)
        .map_err(|e| PrepareError::Secrets(format!("reading secrets bundle {rel}: {e}")))?;
    let plain: Zeroizing<Vec<u8>> = if vixen_sops::is_sops_file(raw.as_bytes(), Format::Yaml) {
        let keys = match age_key {
            Some(path) => Keyring::from_file(path),
            None => Keyring::from_env(),
        }
        .map_err(|e| PrepareError::Secrets(e.to_string()))?;
        vixen_sops::decrypt(raw.as_bytes(), Format::Yaml, &keys)
            .map_err(|e| PrepareError::Secrets(format!("cannot decrypt {rel}: {e}")))?
            .into_inner()
    } else {
        // A plaintext bundle (tests, or a repo that keeps secrets elsewhere).
        Zeroizing::new(raw.into_bytes())
    };
    let text = std::str::from_utf8(&plain)
        .map_err(|_| PrepareError::Secrets(format!("{rel} is not UTF-8")))?;
    // serde_yaml_ng errors show the offending value for type errors of scalars: map them to a
    // fixed message so no secret can leak.
    serde_yaml_ng::from_str::<SecretsBundle>(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(" at line {}", l.line()))
            .unwrap_or_default();
        PrepareError::Secrets(format!(
            "{rel}: not a Talos secrets bundle{at} (expected the `talosctl gen secrets` layout)"
        ))
    })
}
