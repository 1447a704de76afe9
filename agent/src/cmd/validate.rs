//! `vixen validate`: load and check a repo; print every problem as file:line:col.

use std::path::PathBuf;
use std::process::ExitCode;

use vixen_model::validate::load_and_validate;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub repo: super::RepoArg,
    /// age identity file: with a key (this, or one sops finds) the secrets' MAC is verified and
    /// encrypted patches are checked too.
    #[arg(long, env = "VIXEN_AGE_KEY_FILE")]
    pub age_key: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Without a key the key-less checks still run (metadata, ENC[...] values, layout).
    let keys = vixen_engine::prepare::keyring(args.age_key.as_deref()).ok();
    let root = args.repo.path();
    let checked = load_and_validate(&root).and_then(|repo| match &keys {
        Some(k) => {
            let diags = vixen_model::validate::validate_with_keys(&repo, k);
            if diags.is_empty() {
                Ok(repo)
            } else {
                Err(diags)
            }
        }
        None => Ok(repo),
    });
    match checked {
        Ok(repo) => {
            let cps = repo
                .nodes
                .iter()
                .filter(|n| n.value.role == vixen_model::Role::Controlplane)
                .count();
            println!(
                "{}: valid ({}: {}, {})",
                root.display(),
                super::count(repo.nodes.len(), "node", "nodes"),
                super::count(cps, "control plane", "control planes"),
                super::count(repo.nodes.len() - cps, "worker", "workers")
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(diags) => {
            let root = root.display().to_string();
            for d in &diags.0 {
                // Paths are shown as the user typed the repo path, so editors can jump to them.
                eprintln!("{}/{d}", root.trim_end_matches('/'));
            }
            eprintln!(
                "{} found; nothing was changed",
                super::count(diags.0.len(), "problem", "problems")
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
