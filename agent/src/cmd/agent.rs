//! `vixen agent`: reconcile the cluster with the repo, as the long-running in-cluster agent (or
//! once, in `once`), and the [`Target`] every command that reaches the cluster takes. `vixen
//! plan` is in `plan`, `vixen status` in `status`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use vixen::backup::BackupPort;
use vixen::daemon::{self, ForgeOptions, GitOptions, KubeOptions, PrepareError, Prepared, Source};
use vixen_engine::{
    Configs, Connector, Engine, FileStore, KubeAccess, KubeLink, Outcome, PrepareOptions, Quiet,
    Timeouts,
};

pub use super::plan::{PlanArgs, plan};

/// Where the cluster is and how to reach it.
#[derive(clap::Args, Clone)]
pub struct Target {
    /// The cluster repo: a local folder, or a Git URL (`https://...`, `ssh://...`, `git@host:path`)
    /// fetched with the Git options of `vixen agent`.
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
    /// Kubernetes API for drains and readiness gates (default: an admin kubeconfig from a
    /// control plane, as `talosctl kubeconfig` gets it; `off` for none).
    #[arg(long, value_name = "FILE|off")]
    pub kubeconfig: Option<PathBuf>,
    /// A folder a `backup.target.local` path may be in (repeatable). The repo is untrusted:
    /// vixen writes snapshots only inside folders its operator allows (and the lab folder with
    /// `--lab`).
    #[arg(
        long = "backup-dir",
        value_name = "DIR",
        env = "VIXEN_BACKUP_DIRS",
        value_delimiter = ','
    )]
    pub backup_dirs: Vec<PathBuf>,
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
        Ok(vixen_model::Repo::load(&self.repo)
            .map_err(|d| anyhow::anyhow!("{d}"))?
            .cluster
            .value
            .name)
    }

    fn prepare_options(&self) -> PrepareOptions {
        PrepareOptions {
            age_key: self.age_key.clone(),
            talosconfig: self.talosconfig.clone(),
        }
    }

    /// Loads, validates, decrypts and renders the repo checked out in `dir` (the daemon's
    /// [`daemon::Prepare`]), saying which stage failed.
    ///
    /// # Errors
    /// [`PrepareError`] naming the stage; messages never include secret values.
    pub fn prepare_dir(&self, dir: &Path) -> Result<Prepared, PrepareError> {
        let p = vixen_engine::prepare::prepare(dir, &self.prepare_options()).map_err(|e| {
            PrepareError {
                stage: e.stage(),
                summary: prepare_summary(&e),
                error: anyhow::anyhow!("{e}"),
            }
        })?;
        let backup = self.resolve_backup(&p.repo).map_err(|e| PrepareError {
            stage: "backup",
            summary: format!("cluster.yaml: {e}"),
            error: e,
        })?;
        let cni = vixen_model::cni::all_objects(&p.repo).map_err(|d| PrepareError {
            stage: "validate",
            summary: d.to_string(),
            error: anyhow::anyhow!("{d}"),
        })?;
        let keys = vixen_engine::prepare::keyring(self.age_key.as_deref()).ok();
        let addons = vixen_model::addons::addon_objects(&p.repo, keys.as_ref()).map_err(|d| {
            PrepareError {
                stage: "decrypt",
                summary: d.0.first().map(ToString::to_string).unwrap_or_default(),
                error: anyhow::anyhow!("{d}"),
            }
        })?;
        if addons.skipped > 0 {
            return Err(PrepareError {
                stage: "decrypt",
                summary: format!(
                    "cluster.yaml: {} encrypted addon(s) and no age key to decrypt them",
                    addons.skipped
                ),
                error: anyhow::anyhow!("no age key for the encrypted addons"),
            });
        }
        let gitops = match &p.repo.cluster.value.gitops {
            None => None,
            Some(g) => Some(daemon::GitopsLayer {
                tool: g.tool,
                objects: vixen_model::gitops::gitops_objects(&p.repo).map_err(|d| {
                    PrepareError {
                        stage: "validate",
                        summary: d.to_string(),
                        error: anyhow::anyhow!("{d}"),
                    }
                })?,
                age_keys: keys.as_ref().and_then(vixen_sops::Keyring::age_keys_file),
            }),
        };
        Ok(Prepared {
            cni,
            addons: addons.values(),
            gitops,
            backup,
            desired: p.desired,
            configs: p.configs,
            conn: Connector::new(p.credentials),
            kube: self.kube_access(),
            network: p.repo.network.value.clone(),
            cluster: p.repo.cluster.value.name.clone(),
        })
    }

    /// The repo at `--repo`, ready for the engine, with its ports.
    ///
    /// # Errors
    /// Every problem of the repo, its secrets or the credentials.
    pub fn prepare(&self) -> anyhow::Result<Wired> {
        let p = vixen_engine::prepare::prepare(&self.repo, &self.prepare_options())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let talos = Connector::new(p.credentials);
        let backup = self.backup_of(&p.repo)?;
        Ok(Wired {
            kube: KubeLink::new(self.kube_access(), talos.clone()),
            talos,
            desired: p.desired,
            configs: p.configs,
            store: FileStore::in_dir(&self.state_dir()),
            backup,
        })
    }

    /// The repo's `backup:` as the engine's snapshot port (None without one).
    ///
    /// # Errors
    /// When credentials or recipients cannot be had (the message holds no secret).
    pub fn backup_of(&self, repo: &vixen_model::Repo) -> anyhow::Result<Option<BackupPort>> {
        Ok(self.resolve_backup(repo)?.map(BackupPort::new))
    }

    /// The repo's `backup:` resolved with the age key and the folders this run allows.
    ///
    /// # Errors
    /// See [`Self::backup_of`].
    pub fn resolve_backup(
        &self,
        repo: &vixen_model::Repo,
    ) -> anyhow::Result<Option<vixen_backup::Resolved>> {
        let keys = vixen_engine::prepare::keyring(self.age_key.as_deref()).ok();
        let mut allowed = vixen_backup::Allowed {
            local_roots: self.backup_dirs.clone(),
        };
        if let Some(lab) = &self.lab {
            allowed.local_roots.push(lab.clone());
        }
        vixen_backup::resolve(repo, keys.as_ref(), &allowed)
            .map_err(|e| anyhow::anyhow!("backup: {e}"))
    }

    fn kube_access(&self) -> KubeAccess {
        match &self.kubeconfig {
            Some(p) if p.as_os_str() == "off" => KubeAccess::Off,
            Some(p) => KubeAccess::Kubeconfig(p.clone()),
            None => KubeAccess::FromTalos,
        }
    }
}

/// The first problem of a failed prepare in one line: for an invalid repo the first diagnostic
/// (`file:line:col: message (fix: ...)`, relative to the repo) and how many more there are.
fn prepare_summary(e: &vixen_engine::PrepareError) -> String {
    match e {
        vixen_engine::PrepareError::Invalid(d) => match d.0.split_first() {
            Some((first, [])) => first.to_string(),
            Some((first, rest)) => format!(
                "{first} (and {} more problem{})",
                rest.len(),
                if rest.len() == 1 { "" } else { "s" }
            ),
            None => e.to_string(),
        },
        other => other.to_string(),
    }
    .lines()
    .map(str::trim)
    .find(|l| !l.is_empty())
    .unwrap_or_default()
    .to_owned()
}

/// A prepared repo and the real ports of the engine.
pub struct Wired {
    /// Desired state.
    pub desired: vixen_plan::Desired,
    /// Rendered configs.
    pub configs: Configs,
    /// Talos.
    pub talos: Connector,
    /// Kubernetes.
    pub kube: KubeLink,
    /// vixen's state (`--lab`/`--state`).
    pub store: FileStore,
    /// The snapshot port (`backup:` in cluster.yaml).
    pub backup: Option<BackupPort>,
}

impl Wired {
    /// The ports of a repo prepared with [`Target::prepare_dir`], vixen's state in `store`.
    pub fn from_prepared(p: Prepared, store: FileStore) -> Self {
        Self {
            kube: KubeLink::new(p.kube, p.conn.clone()),
            talos: p.conn,
            desired: p.desired,
            configs: p.configs,
            store,
            backup: p.backup.map(BackupPort::new),
        }
    }

    /// The engine on these ports.
    pub fn engine(&self, timeouts: Timeouts) -> Engine<'_, Connector, KubeLink, FileStore> {
        Engine {
            talos: &self.talos,
            kube: &self.kube,
            store: &self.store,
            timeouts,
            progress: &Quiet,
            backup: self
                .backup
                .as_ref()
                .map(|b| b as &dyn vixen_engine::SnapshotSink),
        }
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
    /// How long draining a Node may take (PodDisruptionBudgets may hold evictions back).
    #[arg(long, default_value = "600", value_name = "SECONDS")]
    pub drain_timeout: u64,
    /// What to do about a node whose running config was changed behind vixen's back, as the
    /// dry run of each reconcile tells (default: cluster.yaml's `drift:`, else correct).
    #[arg(long, value_enum)]
    pub drift: Option<DriftArg>,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

/// `--drift`: over cluster.yaml's `drift:`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum DriftArg {
    /// Apply the rendered config again, as a normal step under the same gates.
    Correct,
    /// Only report it (metric, Event, the `Drifted` condition).
    Report,
}

impl DriftArg {
    /// Sets the policy of `desired` when the flag was given.
    pub fn apply(flag: Option<Self>, desired: &mut vixen_plan::Desired) {
        match flag {
            Some(Self::Correct) => desired.drift = vixen_plan::DriftPolicy::Correct,
            Some(Self::Report) => desired.drift = vixen_plan::DriftPolicy::Report,
            None => {}
        }
    }
}

/// Options of the long-running agent (without `--once`).
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Long-running agent")]
pub struct DaemonArgs {
    /// Git poll interval.
    #[arg(long, default_value = "60", value_name = "SECONDS")]
    pub interval: u64,
    /// Reconcile an already applied commit again this often: each node's config is dry-run to
    /// find drift, which is corrected or reported (--drift).
    #[arg(long, default_value = "600", value_name = "SECONDS")]
    pub resync: u64,
    /// Longest wait between retries after errors (backoff starts at 5 s and doubles).
    #[arg(long, default_value = "300", value_name = "SECONDS")]
    pub backoff_max: u64,
    /// Serve /metrics, /healthz, /readyz and the webhook on this address (e.g. 0.0.0.0:8080).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Path of the push webhook.
    #[arg(long, default_value = "/hook")]
    pub webhook_path: String,
    /// File holding the webhook secret (HMAC key or GitLab token); without it the webhook is off.
    #[arg(long, value_name = "FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Git branch to follow (default main).
    #[arg(long, conflicts_with_all = ["tag", "commit"])]
    pub branch: Option<String>,
    /// Git tag to follow.
    #[arg(long, conflicts_with = "commit")]
    pub tag: Option<String>,
    /// Pinned Git commit.
    #[arg(long)]
    pub commit: Option<String>,
    /// Sub-path of the Git repository holding the cluster repo.
    #[arg(long, value_name = "DIR")]
    pub git_path: Option<PathBuf>,
    /// Git cache folder (default STATE/git).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// HTTPS access token file.
    #[arg(long, value_name = "FILE")]
    pub git_token_file: Option<PathBuf>,
    /// HTTPS basic-auth user name (with --git-password-file).
    #[arg(long)]
    pub git_username: Option<String>,
    /// HTTPS basic-auth password file.
    #[arg(long, value_name = "FILE")]
    pub git_password_file: Option<PathBuf>,
    /// SSH deploy key file.
    #[arg(long, value_name = "FILE")]
    pub git_ssh_key_file: Option<PathBuf>,
    /// SSH known_hosts file (required with an SSH key; host keys are always checked).
    #[arg(long, value_name = "FILE")]
    pub git_known_hosts: Option<PathBuf>,
    /// Allowed-signers file: only apply SSH-signed commits from these keys.
    #[arg(long, value_name = "FILE")]
    pub git_allowed_signers: Option<PathBuf>,
    /// Post commit statuses to this forge: github, gitea, forgejo or gitlab (empty: none).
    #[arg(long, requires_all = ["forge_url", "forge_repo", "forge_token_file"])]
    pub forge: Option<String>,
    /// Forge API base URL (https://api.github.com, the Gitea root, https://gitlab.com/api/v4).
    #[arg(long, value_name = "URL")]
    pub forge_url: Option<String>,
    /// Repository on the forge: owner/name (GitLab: project path or id).
    #[arg(long, value_name = "REPO")]
    pub forge_repo: Option<String>,
    /// File holding the forge token.
    #[arg(long, value_name = "FILE")]
    pub forge_token_file: Option<PathBuf>,
    /// Link shown next to commit statuses.
    #[arg(long, value_name = "URL")]
    pub status_url: Option<String>,
    /// Run inside Kubernetes: Lease election, journal in a ConfigMap, VixenCluster status,
    /// Events, Cilium pools and L2 policies.
    #[arg(long)]
    pub kube: bool,
    /// vixen's namespace.
    #[arg(long, env = "POD_NAMESPACE", default_value = "vixen-system")]
    pub namespace: String,
    /// This replica's name in the Lease.
    #[arg(long, env = "POD_NAME", default_value = "vixen")]
    pub pod_name: String,
    /// How long the Lease lasts without renewal: a standby takes over this long after the
    /// leader died (renewals, and the leader's look for webhooks a standby received, follow).
    #[arg(long, default_value = "15", value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(3..))]
    pub lease_duration: u64,
    /// API version of CiliumLoadBalancerIPPool: v2alpha1 (Cilium 1.16+) or v2 (1.18+).
    #[arg(long, default_value = "v2alpha1")]
    pub cilium_pool_version: vixen_k8s::PoolVersion,
    /// Take over Cilium fields another manager owns instead of reporting a conflict.
    #[arg(long)]
    pub cilium_force_conflicts: bool,
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !args.once {
        return run_daemon(args);
    }
    super::once::run(&args)
}

pub fn report(outcome: &Outcome) -> ExitCode {
    match outcome {
        Outcome::Converged { steps } => {
            println!(
                "converged: the cluster matches Git ({} carried out)",
                super::count(*steps, "step", "steps")
            );
            ExitCode::SUCCESS
        }
        Outcome::Waiting { steps, waiting } => {
            println!(
                "not converged ({} carried out); waiting on:",
                super::count(*steps, "step", "steps")
            );
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
            eprintln!(
                "failed after {}: {error}; no further node was touched",
                super::count(*steps, "step", "steps")
            );
            ExitCode::FAILURE
        }
    }
}

pub(super) fn timeouts(args: &Args) -> Timeouts {
    let t = Duration::from_secs(args.ready_timeout);
    Timeouts {
        ready: t,
        member: t,
        maintenance: t,
        drain: Duration::from_secs(args.drain_timeout),
        ..Timeouts::default()
    }
}

pub(super) fn git_options(args: &Args, url: &str) -> GitOptions {
    let d = &args.daemon;
    let reference = match (&d.branch, &d.tag, &d.commit) {
        (_, Some(t), _) => vixen_git::GitRef::Tag(t.clone()),
        (_, _, Some(c)) => vixen_git::GitRef::Commit(c.clone()),
        (b, _, _) => vixen_git::GitRef::Branch(b.clone().unwrap_or_else(|| "main".into())),
    };
    GitOptions {
        url: url.to_owned(),
        reference,
        sub_path: d.git_path.clone(),
        cache_dir: d
            .cache_dir
            .clone()
            .unwrap_or_else(|| args.target.state_dir().join("git")),
        token_file: d.git_token_file.clone(),
        username: d.git_username.clone(),
        password_file: d.git_password_file.clone(),
        ssh_key_file: d.git_ssh_key_file.clone(),
        known_hosts: d.git_known_hosts.clone(),
        allowed_signers: d.git_allowed_signers.clone(),
    }
}

fn forge_options(d: &DaemonArgs) -> anyhow::Result<Option<ForgeOptions>> {
    // `--forge=` (an empty VIXEN_FORGE in vixen-config): no commit statuses.
    let Some(name) = d.forge.as_deref().filter(|f| !f.is_empty()) else {
        return Ok(None);
    };
    let forge = match name {
        "github" => vixen_forge::Forge::GitHub,
        "gitea" => vixen_forge::Forge::Gitea,
        "forgejo" => vixen_forge::Forge::Forgejo,
        "gitlab" => vixen_forge::Forge::GitLab,
        other => anyhow::bail!("unknown forge {other:?}: github, gitea, forgejo or gitlab"),
    };
    Ok(Some(ForgeOptions {
        forge,
        base_url: d.forge_url.clone().unwrap_or_default(),
        repo: d.forge_repo.clone().unwrap_or_default(),
        token_file: d.forge_token_file.clone().unwrap_or_default(),
        target_url: d.status_url.clone(),
    }))
}

fn run_daemon(args: Args) -> anyhow::Result<ExitCode> {
    let repo = args.target.repo.to_string_lossy().into_owned();
    let d = args.daemon.clone();
    let rt = runtime()?;
    let _guard = rt.enter();
    let remote = daemon::source::is_remote(&repo);
    let (source, source_label) = if remote {
        (
            Source::git(git_options(&args, &repo))?,
            vixen_git::redact_url(&repo),
        )
    } else {
        (
            Source::Local(args.target.repo.clone()),
            args.target.repo.display().to_string(),
        )
    };
    let kube = d.kube.then(|| KubeOptions {
        namespace: d.namespace.clone(),
        identity: d.pod_name.clone(),
        lease: "vixen".into(),
        journal: "vixen-state".into(),
        pool_version: d.cilium_pool_version,
        force_conflicts: d.cilium_force_conflicts,
        lease_duration: Duration::from_secs(d.lease_duration),
    });
    let cfg = daemon::Config {
        source,
        interval: Duration::from_secs(d.interval.max(1)),
        resync: Duration::from_secs(d.resync),
        backoff_max: Duration::from_secs(d.backoff_max.max(5)),
        timeouts: timeouts(&args),
        listen: d.listen,
        webhook_path: d.webhook_path.clone(),
        webhook_secret_file: d.webhook_secret_file.clone(),
        forge: forge_options(&d)?,
        kube,
        state_dir: args.target.state_dir(),
        // The key sops would find through SOPS_AGE_KEY_FILE is watched too (a mounted Secret).
        watch_files: [
            args.target.age_key.clone(),
            std::env::var_os("SOPS_AGE_KEY_FILE")
                .filter(|_| args.target.age_key.is_none())
                .map(PathBuf::from),
            args.target.talosconfig.clone(),
        ]
        .into_iter()
        .flatten()
        .collect(),
        source_label,
        cluster: if remote {
            None
        } else {
            args.target.cluster_name().ok()
        },
    };
    let target = args.target.clone();
    let drift = args.drift;
    let prepare: daemon::Prepare = Arc::new(move |dir: &Path| {
        let mut p = target.prepare_dir(dir)?;
        DriftArg::apply(drift, &mut p.desired);
        Ok(p)
    });
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    rt.spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let sigterm = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = sigterm => {}
        }
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });
    rt.block_on(daemon::run(cfg, prepare, shutdown))?;
    // Let the Lease release go out.
    rt.shutdown_timeout(Duration::from_secs(2));
    Ok(ExitCode::SUCCESS)
}
