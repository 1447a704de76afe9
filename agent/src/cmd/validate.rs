//! `vixen validate`: load and check a repo; print every problem as file:line:col.

use std::path::PathBuf;
use std::process::ExitCode;

use vixen_model::validate::load_and_validate;

#[derive(clap::Args)]
pub struct Args {
    /// The cluster repo (the folder holding cluster.yaml).
    #[arg(default_value = ".")]
    pub repo: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match load_and_validate(&args.repo) {
        Ok(repo) => {
            let cps = repo
                .nodes
                .iter()
                .filter(|n| n.value.role == vixen_model::Role::Controlplane)
                .count();
            println!(
                "{}: valid ({} nodes: {} control planes, {} workers)",
                args.repo.display(),
                repo.nodes.len(),
                cps,
                repo.nodes.len() - cps
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(diags) => {
            let root = args.repo.display().to_string();
            for d in &diags.0 {
                // Paths are shown as the user typed the repo path, so editors can jump to them.
                eprintln!("{}/{d}", root.trim_end_matches('/'));
            }
            eprintln!("{} problem(s) found; nothing was changed", diags.0.len());
            Ok(ExitCode::FAILURE)
        }
    }
}
