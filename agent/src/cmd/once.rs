//! `vixen agent --once`: one reconcile of the repo (a folder, or the head of a Git URL) as the
//! long-running agent does it on each commit: the layers above the nodes (CNI, addons, GitOps
//! handover), then the engine. The repo is prepared once, for both.

use std::process::ExitCode;

use vixen::daemon::{self, Prepared};
use vixen_engine::{FileStore, KubeLink};

use super::agent::{Args, DriftArg, Wired, git_options, report, runtime, timeouts};

/// Runs `--once`; exit 0 only when every layer applied and the cluster converged.
///
/// # Errors
/// A repo that cannot be fetched or prepared (the stage and why; never a secret value).
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let mut target = args.target.clone();
    let repo = target.repo.to_string_lossy().into_owned();
    if daemon::source::is_remote(&repo) {
        let mut source = vixen_git::GitSource::new(&git_options(args, &repo).config()?)?;
        let checkout = source.fetch()?;
        eprintln!(
            "fetched {} ({} objects)",
            checkout.commit, checkout.received_objects
        );
        target.repo = checkout.path;
    }
    let p = target
        .prepare_dir(&target.repo)
        .map_err(|e| anyhow::anyhow!("{}: {}", e.stage, e.error))?;
    let rt = runtime()?;
    let layers_ok = rt.block_on(layers(&p));
    let mut w = Wired::from_prepared(p, FileStore::in_dir(&args.target.state_dir()));
    DriftArg::apply(args.drift, &mut w.desired);
    let r = rt.block_on(w.engine(timeouts(args)).resync(&w.desired, &w.configs))?;
    for d in &r.drift {
        println!(
            "drift: {} runs a config that is not the one from Git (Talos' dry run)",
            d.node
        );
    }
    let code = report(&r.outcome);
    Ok(if layers_ok { code } else { ExitCode::FAILURE })
}

/// The layers, one line each (applied on stdout, failed on stderr); `false` when one failed.
async fn layers(p: &Prepared) -> bool {
    let link = KubeLink::new(p.kube.clone(), p.conn.clone());
    let mut ok = true;
    for note in daemon::layers::apply(p, &link, None).await {
        match note {
            daemon::layers::LayerNote::Applied(line) => println!("{line}"),
            daemon::layers::LayerNote::Failed { message, .. } => {
                eprintln!("{message}");
                ok = false;
            }
        }
    }
    ok
}
