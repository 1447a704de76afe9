//! `vixen decommission`: reset every node of the cluster to maintenance mode. Never triggered by
//! Git: it needs the cluster's name typed out.

use std::process::ExitCode;
use std::time::Duration;

use vixen_engine::{Outcome, Timeouts};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: super::agent::Target,
    /// The cluster's name, typed out, to confirm that every node is to be wiped.
    #[arg(long, value_name = "CLUSTER_NAME", required_unless_present = "dry_run")]
    pub confirm: Option<String>,
    /// Print the steps a decommission would carry out, node by node, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How long each node may take to reset.
    #[arg(long, default_value = "600", value_name = "SECONDS")]
    pub timeout: u64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let name = args.target.cluster_name()?;
    if args.dry_run {
        return dry_run(&args, &name);
    }
    if args.confirm.as_deref() != Some(name.as_str()) {
        eprintln!("refused: --confirm must be the cluster's name ({name}); nothing was changed");
        return Ok(ExitCode::FAILURE);
    }
    let w = args.target.prepare()?;
    let t = Duration::from_secs(args.timeout);
    let timeouts = Timeouts {
        ready: t,
        member: t,
        maintenance: t,
        ..Timeouts::default()
    };
    let outcome = super::agent::runtime()?
        .block_on(w.engine(timeouts).decommission(&w.desired, &w.configs))?;
    match outcome {
        Outcome::Converged { steps } => {
            println!(
                "decommissioned {name}: every node is back in maintenance mode ({})",
                super::count(steps, "step", "steps")
            );
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Refused(r) => {
            eprintln!("refused, nothing was changed: {r}");
            Ok(ExitCode::FAILURE)
        }
        Outcome::Failed { steps, error } => {
            eprintln!(
                "failed after {}: {error}; no further node was touched",
                super::count(steps, "step", "steps")
            );
            Ok(ExitCode::FAILURE)
        }
        Outcome::Waiting { .. } => Ok(ExitCode::FAILURE),
    }
}

/// `--dry-run`: the decommission plan from read-only observations; nothing is changed.
fn dry_run(args: &Args, name: &str) -> anyhow::Result<ExitCode> {
    let w = args.target.prepare()?;
    let planned = super::agent::runtime()?
        .block_on(w.engine(Timeouts::default()).decommission_plan(&w.desired))?;
    match planned {
        Ok(plan) => {
            println!(
                "dry run: decommissioning {name} would carry out {} (nothing was changed):",
                super::count(plan.steps.len(), "step", "steps")
            );
            for (i, s) in plan.steps.iter().enumerate() {
                println!("{:>3}. {s}", i + 1);
            }
            println!("to do it: vixen decommission --confirm {name} (same options)");
            Ok(ExitCode::SUCCESS)
        }
        Err(r) => {
            eprintln!("dry run: a decommission would be refused: {r}; nothing was changed");
            Ok(ExitCode::FAILURE)
        }
    }
}
