//! `vixen agent` and `vixen plan`: reconcile the cluster with the repo, or show what would change.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use vixen::engine::{self, Connector, Outcome, Timeouts};
use vixen_talos::{Credentials, Talosconfig};

/// Where the cluster is and how to reach it.
#[derive(clap::Args, Clone)]
pub struct Target {
    /// The cluster repo (a local folder).
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// Drive the lab in LABDIR (vixen's state goes to LABDIR/vixen).
    #[arg(long, conflicts_with = "state")]
    pub lab: Option<PathBuf>,
    /// Where vixen keeps its inventory and journal (default ./.vixen-state).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// talosconfig to use (default: an os:admin certificate minted from the secrets bundle).
    #[arg(long)]
    pub talosconfig: Option<PathBuf>,
    /// age identity file (else SOPS_AGE_KEY, SOPS_AGE_KEY_FILE or the sops default keys file).
    #[arg(long, env = "VIXEN_AGE_KEY_FILE")]
    pub age_key: Option<PathBuf>,
}

impl Target {
    pub fn state_dir(&self) -> PathBuf {
        match (&self.lab, &self.state) {
            (Some(lab), _) => lab.join("vixen"),
            (None, Some(state)) => state.clone(),
            (None, None) => PathBuf::from(".vixen-state"),
        }
    }

    pub fn cluster_name(&self) -> anyhow::Result<String> {
        Ok(vixen_model::Repo::load(&self.repo).map_err(|d| anyhow::anyhow!("{d}"))?.cluster.value.name)
    }

    pub fn prepare(&self) -> anyhow::Result<(vixen_plan::Desired, engine::desired::Configs, Connector)> {
        let repo = super::load_valid_repo(&self.repo)?;
        let bundle = super::load_bundle(&repo, self.age_key.as_ref())?;
        let (desired, configs) = engine::desired::desired(&repo, &bundle)?;
        let creds = match &self.talosconfig {
            Some(path) => Talosconfig::load(path)?.credentials(None)?,
            None => Credentials::from_bundle(&bundle)?,
        };
        Ok((desired, configs, Connector::new(creds)))
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// Reconcile once and exit: 0 when the cluster matches Git, 1 otherwise.
    #[arg(long)]
    pub once: bool,
    /// How long a node may take to come back from a reboot, install or upgrade.
    #[arg(long, default_value = "600", value_name = "SECONDS")]
    pub ready_timeout: u64,
}

#[derive(clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub target: Target,
    /// `text` (for reviewers) or `json`.
    #[arg(long, default_value = "text")]
    pub output: String,
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.once, "only `--once` is available so far: run `vixen agent --once` from a loop or a CronJob");
    let (desired, configs, conn) = args.target.prepare()?;
    let store = engine::file_store(&args.target.state_dir());
    let timeouts = Timeouts { ready: Duration::from_secs(args.ready_timeout), member: Duration::from_secs(args.ready_timeout), maintenance: Duration::from_secs(args.ready_timeout), ..Timeouts::default() };
    let outcome = runtime()?.block_on(engine::reconcile(&conn, &desired, &configs, &store, timeouts)).context("reconcile")?;
    Ok(report(&outcome))
}

fn report(outcome: &Outcome) -> ExitCode {
    match outcome {
        Outcome::Converged { steps } => {
            println!("converged: the cluster matches Git ({steps} steps carried out)");
            ExitCode::SUCCESS
        }
        Outcome::Waiting { steps, waiting } => {
            println!("not converged ({steps} steps carried out); waiting on:");
            for w in waiting {
                println!("  {w}");
            }
            ExitCode::FAILURE
        }
        Outcome::Refused(refusal) => {
            eprintln!("refused, nothing was changed: {refusal}");
            ExitCode::FAILURE
        }
        Outcome::Failed { steps, error } => {
            eprintln!("failed after {steps} steps: {error}; no further node was touched");
            ExitCode::FAILURE
        }
    }
}

pub fn plan(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let (desired, _configs, conn) = args.target.prepare()?;
    let store = engine::file_store(&args.target.state_dir());
    let planned = runtime()?.block_on(engine::plan_only(&conn, &desired, &store))?;
    match planned {
        Err(refusal) => {
            eprintln!("refused: {refusal}");
            Ok(ExitCode::FAILURE)
        }
        Ok(plan) if args.output == "json" => {
            println!("{}", serde_json::to_string_pretty(&plan)?);
            Ok(ExitCode::SUCCESS)
        }
        Ok(plan) => {
            if plan.steps.is_empty() {
                println!("no changes: the cluster matches Git");
            }
            for (i, s) in plan.steps.iter().enumerate() {
                println!("{:>3}. {s}", i + 1);
            }
            for w in &plan.waiting {
                println!("waiting: {w}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
