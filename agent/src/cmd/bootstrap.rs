//! `vixen bootstrap`: the first control plane from its maintenance address to a running etcd.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use vixen_engine::bootstrap::Done;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: super::agent::Target,
    /// The control plane to bootstrap (default: the first control plane of the repo).
    #[arg(long)]
    pub node: Option<String>,
    /// Where to write talosconfig and kubeconfig (mode 0600).
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// How long to wait for the node to install and for etcd.
    #[arg(long, default_value = "600", value_name = "SECONDS")]
    pub timeout: u64,
    /// Then install the in-cluster agent, following this Git URL (once the API answers).
    #[arg(long, value_name = "URL")]
    pub install_repo: Option<String>,
    /// The branch the installed agent follows.
    #[arg(long, default_value = "main", requires = "install_repo")]
    pub install_branch: String,
    /// How long to wait for the Kubernetes API before installing.
    #[arg(
        long,
        default_value = "600",
        value_name = "SECONDS",
        requires = "install_repo"
    )]
    pub api_timeout: u64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let w = args.target.prepare()?;
    let (desired, configs, conn) = (&w.desired, &w.configs, &w.talos);
    let node = match &args.node {
        Some(n) => n.clone(),
        None => desired
            .nodes
            .iter()
            .find(|n| n.role == vixen_plan::Role::Controlplane)
            .map(|n| n.name.clone())
            .context("the repo has no control plane")?,
    };
    eprintln!(
        "[  0.0s] repo valid, secrets decrypted, {} configs rendered",
        configs.len()
    );
    let rt = super::agent::runtime()?;
    let mut progress = |what: &str, took: Duration| {
        eprintln!(
            "[{:>5.1}s] {what} (took {:.1}s)",
            started.elapsed().as_secs_f64(),
            took.as_secs_f64()
        );
    };
    let done = rt.block_on(vixen_engine::bootstrap::bootstrap(
        conn,
        desired,
        configs,
        &node,
        &w.store,
        Duration::from_secs(args.timeout),
        &mut progress,
    ));
    let address = match done {
        Ok(Done::AlreadyBootstrapped { address }) => {
            println!(
                "{node} is already bootstrapped (etcd answers at {address}); nothing was changed"
            );
            address
        }
        Ok(Done::Bootstrapped { address }) => {
            println!("{node} bootstrapped at {address}");
            address
        }
        Err(e) => {
            eprintln!("bootstrap failed: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    std::fs::create_dir_all(&args.out)?;
    let endpoints: Vec<String> = desired
        .nodes
        .iter()
        .filter(|n| n.role == vixen_plan::Role::Controlplane)
        .map(|n| n.address().to_string())
        .collect();
    let talosconfig = conn
        .credentials()
        .to_talosconfig(&args.target.cluster_name()?, &endpoints);
    super::write_private(&args.out.join("talosconfig"), talosconfig.as_bytes(), true)?;
    match rt.block_on(vixen_engine::kube::kubeconfig(conn, &address)) {
        Ok(kubeconfig) => super::write_private(&args.out.join("kubeconfig"), &kubeconfig, true)?,
        Err(e) => eprintln!("no kubeconfig: {e:#}"),
    }
    eprintln!(
        "wrote {}/talosconfig and {}/kubeconfig (mode 0600)",
        args.out.display(),
        args.out.display()
    );
    if let Some(url) = &args.install_repo {
        let install = super::install::Install {
            repo_url: url.clone(),
            branch: args.install_branch.clone(),
            age_key: args.target.age_key.clone(),
            timeout: Duration::from_secs(args.api_timeout),
        };
        eprintln!(
            "[{:>5.1}s] waiting for the Kubernetes API to install vixen",
            started.elapsed().as_secs_f64()
        );
        match rt.block_on(super::install::run(&w.kube, conn, &address, &install)) {
            Ok(kubeconfig) => {
                super::write_private(&args.out.join("kubeconfig"), &kubeconfig, true)?;
                println!(
                    "vixen installed in vixen-system, following {} ({}); from now on every change is a git push",
                    vixen_git::redact_url(url),
                    args.install_branch
                );
                println!(
                    "create the Secrets vixen-git and vixen-forge (see README) if the repo is private or commit statuses are wanted"
                );
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => {
                eprintln!("install failed: {e:#}");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    let lab = args
        .target
        .lab
        .as_ref()
        .map(|l| format!(" --lab {}", l.display()))
        .unwrap_or_default();
    println!(
        "vixen was not installed (--install-repo URL does it once the API answers); until then this command converges the rest:\n  vixen agent --once --repo {}{lab}",
        args.target.repo.display()
    );
    Ok(ExitCode::SUCCESS)
}
