//! `vixen status`: what the agent last did, from the VixenCluster objects (as tables or JSON);
//! exit 0 only when every one is Ready.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use super::agent::runtime;

#[derive(clap::Args)]
pub struct StatusArgs {
    /// vixen's namespace.
    #[arg(long, default_value = "vixen-system")]
    pub namespace: String,
    /// The VixenCluster (default: every one in the namespace).
    #[arg(long)]
    pub name: Option<String>,
    /// `table` or `json`.
    #[arg(long, default_value = "table")]
    pub output: String,
    /// The kubeconfig to use (default: KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
}

/// `vixen status`: the VixenCluster objects as tables (or JSON).
pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let client = match &args.kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path)
                    .with_context(|| format!("--kubeconfig {}", path.display()))?;
                let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .with_context(|| format!("--kubeconfig {}", path.display()))?;
                kube::Client::try_from(cfg)?
            }
            None => kube::Client::try_default()
                .await
                .context("no Kubernetes client (--kubeconfig, KUBECONFIG or in-cluster)")?,
        };
        let api: kube::Api<vixen_k8s::VixenCluster> =
            kube::Api::namespaced(client, &args.namespace);
        let objs = match &args.name {
            Some(n) => vec![
                api.get(n)
                    .await
                    .with_context(|| format!("vixencluster {}/{n}", args.namespace))?,
            ],
            None => {
                api.list(&Default::default())
                    .await
                    .context("listing vixenclusters")?
                    .items
            }
        };
        if objs.is_empty() {
            eprintln!(
                "no VixenCluster in namespace {} (is the agent running?)",
                args.namespace
            );
            return Ok(ExitCode::FAILURE);
        }
        for (i, o) in objs.iter().enumerate() {
            if args.output == "json" {
                println!("{}", serde_json::to_string_pretty(o)?);
                continue;
            }
            if i > 0 {
                println!();
            }
            print!("{}", vixen_k8s::render_table(o));
        }
        let ready = objs
            .iter()
            .all(|o| o.status.as_ref().is_some_and(|s| s.phase == "Ready"));
        Ok(if ready {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}
