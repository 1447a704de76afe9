//! `vixen kubeconfig`: an admin kubeconfig from a control plane over the Talos API, as
//! `talosctl kubeconfig` gets it (written mode 0600).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use vixen_plan::Role;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: super::agent::Target,
    /// Where to write it (mode 0600); `-` prints it.
    #[arg(long, default_value = "kubeconfig")]
    pub out: PathBuf,
    /// Replace an existing file.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let w = args.target.prepare()?;
    let desired = &w.desired;
    let addresses: Vec<String> = desired
        .nodes
        .iter()
        .filter(|n| n.role == Role::Controlplane)
        .map(|n| n.address().to_string())
        .collect();
    let rt = super::agent::runtime()?;
    let mut last = None;
    for address in &addresses {
        match rt.block_on(vixen_engine::kube::kubeconfig(&w.talos, address)) {
            Ok(kubeconfig) => {
                if args.out.as_os_str() == "-" {
                    use std::io::Write as _;
                    std::io::stdout().write_all(&kubeconfig)?;
                } else {
                    super::write_private(&args.out, &kubeconfig, args.force).with_context(
                        || format!("writing {} (--force replaces it)", args.out.display()),
                    )?;
                    eprintln!("wrote {} (mode 0600) from {address}", args.out.display());
                }
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => last = Some(format!("{address}: {e:#}")),
        }
    }
    eprintln!(
        "no control plane handed out a kubeconfig ({})",
        last.unwrap_or_else(|| "the repo has no control plane".into())
    );
    Ok(ExitCode::FAILURE)
}
