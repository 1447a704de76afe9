//! `vixen import`: a vixen repo from a running cluster, read over the Talos API the way
//! `talosctl get machineconfig` reads it, checked to render exactly what every node runs
//! before anything is written to `--out`, and checked again by each node itself (a dry-run
//! apply of the render must answer "No changes."). No node is changed.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use vixen_model::import::{self, Options, Running};
use vixen_talos::{ApplyMode, Client, Talosconfig};

#[derive(clap::Args)]
pub struct Args {
    /// The talosconfig of the cluster (default: $TALOSCONFIG, then ~/.talos/config).
    #[arg(long)]
    pub talosconfig: Option<PathBuf>,
    /// Its context (default: the talosconfig's current one).
    #[arg(long)]
    pub context: Option<String>,
    /// Every node of the cluster, by address, comma-separated. One control plane at least: the
    /// secrets bundle is read from it. With `--from talhelper`, the talconfig's nodes.
    #[arg(long, value_delimiter = ',', required_unless_present = "from")]
    pub nodes: Vec<String>,
    /// Import from a talhelper folder too: `talhelper:DIR` (talconfig.yaml, talsecret.sops.yaml,
    /// talenv.sops.yaml). Its nodes' names and its bundle are used; the running configs still
    /// decide every field.
    #[arg(long, value_name = "talhelper:DIR")]
    pub from: Option<String>,
    /// The age key that decrypts the talhelper folder's SOPS files (default: sops' own
    /// places, SOPS_AGE_KEY_FILE, SOPS_AGE_KEY, ~/.config/sops/age/keys.txt).
    #[arg(long)]
    pub age_key: Option<PathBuf>,
    /// The folder to write the repo to; it must not exist yet.
    #[arg(long)]
    pub out: PathBuf,
    /// The age recipient(s) the secrets are encrypted to (repeat, or comma-separate).
    #[arg(long = "age-recipient", value_delimiter = ',', required = true)]
    pub recipients: Vec<String>,
    /// Keep fields that differ from the control plane's bundle or hold secrets as a
    /// SOPS-encrypted patch of their node, instead of refusing.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.out.exists() {
        anyhow::bail!(
            "{} exists; vixen import writes a new repo only (fix: name a folder that does not exist)",
            args.out.display()
        );
    }
    for r in &args.recipients {
        anyhow::ensure!(
            vixen_sops::is_age_recipient(r),
            "--age-recipient {r:?} is not an age recipient (fix: the public key age-keygen prints, age1...)"
        );
    }
    let mut names = std::collections::BTreeMap::new();
    let mut bundle = None;
    let mut nodes = args.nodes.clone();
    if let Some(from) = &args.from {
        let dir = from.strip_prefix("talhelper:").ok_or_else(|| {
            anyhow::anyhow!("--from {from:?}: say where from (fix: --from talhelper:DIR)")
        })?;
        let keys = match &args.age_key {
            Some(p) => vixen_sops::Keyring::from_file(p)?,
            None => vixen_sops::Keyring::from_env()?,
        };
        let tal = import::talhelper::read(std::path::Path::new(dir), &keys)?;
        if nodes.is_empty() {
            nodes = tal.nodes.iter().map(|(_, a, _)| a.clone()).collect();
        }
        for (name, address, _) in &tal.nodes {
            names.insert(address.clone(), name.clone());
        }
        bundle = Some(tal.bundle);
    }
    let config = match &args.talosconfig {
        Some(p) => Talosconfig::load(p)?,
        None => Talosconfig::load_default()?.1,
    };
    let creds = config.credentials(args.context.as_deref())?;
    let rt = super::agent::runtime()?;
    // The clients' channels start on this runtime.
    let _entered = rt.enter();
    let clients: Vec<(String, Client)> = nodes
        .iter()
        .map(|a| Ok((a.clone(), Client::connect(a, &creds)?)))
        .collect::<anyhow::Result<_>>()?;
    let mut running = Vec::new();
    for (address, client) in &clients {
        let bytes = rt
            .block_on(client.machine_config())
            .with_context(|| format!("reading the machine config of {address}"))?;
        let text = std::str::from_utf8(&bytes)
            .with_context(|| format!("the machine config of {address} is not UTF-8"))?;
        running.push(Running {
            address: address.clone(),
            config: zeroize::Zeroizing::new(text.to_string()),
            name: names.get(address).cloned(),
        });
    }

    let parent = args
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    let stage = Stage(parent.join(format!(".vixen-import-{}", std::process::id())));
    std::fs::create_dir(&stage.0)
        .with_context(|| format!("making a staging folder in {}", parent.display()))?;
    let opts = Options {
        recipients: args.recipients.clone(),
        force: args.force,
        now: chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        bundle,
    };
    let (report, rendered) = import::import(&running, &stage.0, &opts)?;

    // Each node's own word: the render of the staged repo is what it runs.
    for ((address, client), (name, cfg)) in clients.iter().zip(&rendered) {
        let outcome = rt
            .block_on(client.apply_configuration(
                cfg.to_yaml().as_bytes(),
                ApplyMode::Auto,
                true,
                None,
            ))
            .with_context(|| format!("dry-run apply on {address}"))?;
        anyhow::ensure!(
            outcome.mode_details.contains("No changes."),
            "{address} ({name}) would change with the imported repo, so nothing was written:\n{}",
            outcome.mode_details
        );
    }
    std::fs::rename(&stage.0, &args.out)
        .with_context(|| format!("moving the repo to {}", args.out.display()))?;
    println!(
        "imported {} nodes into {}:",
        report.nodes.len(),
        args.out.display()
    );
    println!("  patches for every node: {} changes", report.common);
    for (role, n) in &report.roles {
        println!("  patches for every {role}: {n} changes");
    }
    for (name, n) in &report.nodes {
        println!("  {name}: {n} changes of its own; a dry-run apply answers \"No changes.\"");
    }
    for f in &report.forced {
        println!(
            "  kept SOPS-encrypted (--force): {}: {} ({})",
            f.node, f.field, f.why
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The staging folder: removed unless it was moved into place (no half-import).
struct Stage(PathBuf);

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
