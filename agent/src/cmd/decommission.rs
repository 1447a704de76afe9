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
    #[arg(long, value_name = "CLUSTER_NAME")]
    pub confirm: String,
    /// How long each node may take to reset.
    #[arg(long, default_value = "600", value_name = "SECONDS")]
    pub timeout: u64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let name = args.target.cluster_name()?;
    if args.confirm != name {
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
                "decommissioned {name}: every node is back in maintenance mode ({steps} steps)"
            );
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Refused(r) => {
            eprintln!("refused, nothing was changed: {r}");
            Ok(ExitCode::FAILURE)
        }
        Outcome::Failed { steps, error } => {
            eprintln!("failed after {steps} steps: {error}; no further node was touched");
            Ok(ExitCode::FAILURE)
        }
        Outcome::Waiting { .. } => Ok(ExitCode::FAILURE),
    }
}
