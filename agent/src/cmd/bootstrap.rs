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
    /// How long to wait for Talos to serve the talos.dev ServiceAccount and create its Secret.
    #[arg(
        long,
        default_value = "300",
        value_name = "SECONDS",
        requires = "install_repo"
    )]
    pub talos_api_timeout: u64,
    /// HTTPS token for the repo, stored as Secret `vixen-git` (none: fetched anonymously).
    #[arg(long, value_name = "FILE", requires = "install_repo")]
    pub git_token_file: Option<PathBuf>,
    /// Token that may post commit statuses, stored as Secret `vixen-forge`.
    #[arg(long, value_name = "FILE", requires = "install_repo")]
    pub forge_token_file: Option<PathBuf>,
    /// The forge of the repo (default: from the URL for github.com, gitlab.com, codeberg.org
    /// and Gitea/Forgejo hosts): github, gitea, forgejo or gitlab.
    #[arg(long, requires_all = ["install_repo", "forge_url", "forge_repo"])]
    pub forge: Option<String>,
    /// Forge API base URL (with --forge).
    #[arg(long, value_name = "URL", requires = "forge")]
    pub forge_url: Option<String>,
    /// Repository on the forge, owner/name (with --forge).
    #[arg(long, value_name = "REPO", requires = "forge")]
    pub forge_repo: Option<String>,
}

/// The forge of `--install-repo`: the flags, else what the URL says.
fn forge_of(args: &Args, url: &str) -> anyhow::Result<Option<vixen_forge::ForgeGuess>> {
    let Some(name) = &args.forge else {
        return Ok(vixen_forge::guess_forge(url));
    };
    let forge = match name.as_str() {
        "github" => vixen_forge::Forge::GitHub,
        "gitea" => vixen_forge::Forge::Gitea,
        "forgejo" => vixen_forge::Forge::Forgejo,
        "gitlab" => vixen_forge::Forge::GitLab,
        other => anyhow::bail!("--forge {other:?}: github, gitea, forgejo or gitlab"),
    };
    Ok(Some(vixen_forge::ForgeGuess {
        forge,
        base_url: args.forge_url.clone().unwrap_or_default(),
        repo: args.forge_repo.clone().unwrap_or_default(),
    }))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    // Everything the install needs is read before any node is touched.
    let install = match &args.install_repo {
        Some(url) => Some(super::install::Install {
            repo_url: url.clone(),
            branch: args.install_branch.clone(),
            age_key: args.target.age_key.clone(),
            timeout: Duration::from_secs(args.api_timeout),
            talos_timeout: Duration::from_secs(args.talos_api_timeout),
            forge: forge_of(&args, url)?,
            git_token: args
                .git_token_file
                .as_deref()
                .map(|p| super::install::read_token(p, "--git-token-file"))
                .transpose()?,
            forge_token: args
                .forge_token_file
                .as_deref()
                .map(|p| super::install::read_token(p, "--forge-token-file"))
                .transpose()?,
            infrastructure: vixen_model::Repo::load(&args.target.repo)
                .is_ok_and(|r| super::install::needs_infrastructure(&r)),
        }),
        None => None,
    };
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
    if let Some(install) = &install {
        let url = &install.repo_url;
        eprintln!(
            "[{:>5.1}s] waiting for the Kubernetes API to install vixen",
            started.elapsed().as_secs_f64()
        );
        match rt.block_on(super::install::run(&w.kube, conn, &address, install)) {
            Ok(done) => {
                super::write_private(&args.out.join("kubeconfig"), &done.kubeconfig, true)?;
                let url = vixen_git::redact_url(url);
                let branch = &args.install_branch;
                if done.blocking.is_empty() {
                    println!(
                        "vixen installed in vixen-system: the agent applies what is pushed to {branch} of {url}"
                    );
                } else {
                    println!(
                        "vixen installed in vixen-system, following {branch} of {url}, but it cannot run yet:"
                    );
                    for b in &done.blocking {
                        println!("  missing: {b}");
                    }
                }
                for o in &done.optional {
                    println!("  optional: {o}");
                }
                return Ok(if done.blocking.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                });
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
