//! `vixen render`: print a node's machine config, write all of them, or print a talosconfig.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::json;
use vixen_model::Role;
use vixen_model::render::{management_addresses, render_with};

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["node", "all", "talosconfig"])))]
pub struct Args {
    #[command(flatten)]
    pub repo: super::RepoArg,
    /// Print this node's machine config.
    #[arg(long)]
    pub node: Option<String>,
    /// Write every node's config as DIR/<node>.yaml (mode 0600); needs --out.
    #[arg(long, requires = "out")]
    pub all: bool,
    /// Folder for --all.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print a talosconfig with an os:admin client certificate minted from the bundle's OS CA.
    #[arg(long)]
    pub talosconfig: bool,
    /// age identity file (else SOPS_AGE_KEY, SOPS_AGE_KEY_FILE or the sops default keys file).
    #[arg(long, env = "VIXEN_AGE_KEY_FILE")]
    pub age_key: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let repo = super::load_valid_repo(&args.repo.path())?;
    let inputs = vixen_engine::prepare::render_inputs(&repo, args.age_key.as_deref())?;
    let bundle = &inputs.bundle;
    if let Some(name) = &args.node {
        let node = repo.node(name).with_context(|| {
            let names: Vec<_> = repo.nodes.iter().map(|n| n.value.name.as_str()).collect();
            format!("no node `{name}` in the repo (nodes: {})", names.join(", "))
        })?;
        let config = render_with(&repo, node, &inputs).map_err(|d| anyhow::anyhow!("{d}"))?;
        print!("{}", config.to_yaml());
    } else if args.all {
        let out = args.out.expect("clap requires --out with --all");
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        // Render everything first: a failure leaves no half-written folder behind.
        let mut rendered = Vec::new();
        for node in &repo.nodes {
            let config = render_with(&repo, node, &inputs).map_err(|d| anyhow::anyhow!("{d}"))?;
            rendered.push((node.value.name.clone(), config.to_yaml()));
        }
        for (name, yaml) in rendered {
            let path = out.join(format!("{name}.yaml"));
            super::write_private(&path, yaml.as_bytes(), true)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
    } else {
        let minted = vixen_pki::admin_client(bundle)?;
        let cluster = &repo.cluster.value.name;
        let endpoints: Vec<String> = repo
            .nodes
            .iter()
            .filter(|n| n.value.role == Role::Controlplane)
            .filter_map(|n| management_addresses(&n.value).into_iter().next())
            .collect();
        let talosconfig = json!({
            "context": cluster,
            "contexts": { cluster.as_str(): {
                "endpoints": endpoints,
                "nodes": endpoints.first().cloned().into_iter().collect::<Vec<_>>(),
                "ca": bundle.certs.os.crt,
                "crt": vixen_pki::b64(&minted.cert_pem),
                "key": vixen_pki::b64(minted.key_pem.expose()),
            }},
        });
        print!("{}", serde_yaml_ng::to_string(&talosconfig)?);
    }
    Ok(ExitCode::SUCCESS)
}
