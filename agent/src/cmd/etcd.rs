//! `vixen etcd snapshot` (take one now) and `vixen etcd snapshots` (list them): the repo's
//! `backup:` target, through vixen-backup.

use std::process::ExitCode;

use anyhow::Context as _;

use super::agent::{Target, runtime};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Take an etcd snapshot now (Talos EtcdSnapshot on a healthy member), check it, encrypt
    /// it to the repo's age recipients and store it in the `backup:` target; then prune.
    Snapshot(SnapshotArgs),
    /// List the stored snapshots of the cluster, newest first.
    Snapshots(ListArgs),
    /// Disaster recovery, when every control plane is lost: check a stored snapshot, bring one
    /// control plane up from maintenance mode with its config, restore the snapshot on it
    /// (EtcdRecover, Bootstrap{recover_etcd}), then reconcile so the others join. Refused while
    /// any control plane's etcd still answers.
    Restore(RestoreArgs),
}

#[derive(clap::Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub target: Target,
    /// The snapshot: a key as `vixen etcd snapshots` lists it, or `latest`.
    #[arg(long = "from", value_name = "KEY|latest")]
    pub from: String,
    /// How long each wait may take (the node's install and reboot, etcd coming up).
    #[arg(long, default_value = "600", value_name = "SECONDS")]
    pub timeout: u64,
}

#[derive(clap::Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub target: Target,
    /// Recorded as the snapshot's reason.
    #[arg(long, default_value = "manual")]
    pub reason: String,
}

#[derive(clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub target: Target,
    /// `table` or `json`.
    #[arg(long, default_value = "table")]
    pub output: String,
}

pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Snapshot(a) => snapshot(a),
        Command::Snapshots(a) => list(a),
        Command::Restore(a) => restore(a),
    }
}

fn restore(a: RestoreArgs) -> anyhow::Result<ExitCode> {
    let w = a.target.prepare()?;
    let port = w
        .backup
        .clone()
        .context("cluster.yaml has no `backup:` block: no snapshot to restore from")?;
    let keys = vixen_engine::prepare::keyring(a.target.age_key.as_deref())?;
    let rt = runtime()?;
    let (stored, cipher) = rt.block_on(port.resolved.store()?.get(&a.from))?;
    let plain = vixen_backup::decrypt(&cipher, &keys)?;
    let checked = vixen_backup::check(&plain)?;
    anyhow::ensure!(
        checked.sha256 == stored.meta.sha256,
        "{}: the snapshot's etcd hash is not the one recorded when it was taken",
        stored.key
    );
    eprintln!(
        "snapshot {} checked: {} bytes, taken {} from {} ({})",
        stored.key,
        checked.size,
        stored.meta.taken_at.format("%Y-%m-%dT%H:%M:%SZ"),
        stored.meta.member,
        stored.meta.reason
    );
    let timeout = std::time::Duration::from_secs(a.timeout);
    let mut progress = |what: &str, took: std::time::Duration| {
        eprintln!("  {what} ({:.1}s)", took.as_secs_f64());
    };
    let node = match rt.block_on(vixen_engine::restore::restore(
        &w.talos,
        &w.desired,
        &w.configs,
        &w.store,
        &plain,
        timeout,
        &mut progress,
    )) {
        Ok(node) => node,
        Err(e) => {
            eprintln!("not restored: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    println!("etcd restored on {node} from {}", stored.key);
    // The other control planes and the workers join as on any reconcile.
    let timeouts = vixen_engine::Timeouts {
        ready: timeout,
        member: timeout,
        maintenance: timeout,
        ..vixen_engine::Timeouts::default()
    };
    let r = rt.block_on(w.engine(timeouts).reconcile(&w.desired, &w.configs))?;
    Ok(super::agent::report(&r.outcome))
}

fn snapshot(a: SnapshotArgs) -> anyhow::Result<ExitCode> {
    let w = a.target.prepare()?;
    let rt = runtime()?;
    // The members it may be taken from, as the agent picks them (the inventory included).
    match rt.block_on(
        w.engine(vixen_engine::Timeouts::default())
            .snapshot(&w.desired, &a.reason),
    ) {
        Ok(key) => {
            println!("stored {key}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("no snapshot: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn list(a: ListArgs) -> anyhow::Result<ExitCode> {
    let repo = super::load_valid_repo(&a.target.repo)?;
    let port = a
        .target
        .backup_of(&repo)?
        .context("cluster.yaml has no `backup:` block")?;
    let store = port.resolved.store()?;
    let all = runtime()?.block_on(store.list())?;
    if a.output == "json" {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    if all.is_empty() {
        println!("no snapshot in {}", store.describe());
    }
    for s in &all {
        let m = &s.meta;
        println!(
            "{}  {}  {:<12} {:>10} B  {}",
            m.taken_at.format("%Y-%m-%dT%H:%M:%SZ"),
            s.key,
            m.member,
            m.size,
            m.reason
        );
    }
    Ok(ExitCode::SUCCESS)
}
