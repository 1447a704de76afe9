//! `vixen`: a GitOps pull agent for Talos Linux clusters. This file only wires the subcommands.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

mod cmd;

/// vixen keeps a Talos Linux cluster in step with one Git repository.
///
/// The repo describes nodes, versions, network and secrets; vixen validates it, renders Talos
/// machine configs, and converges the cluster over the Talos API without breaking etcd quorum.
#[derive(Parser)]
#[command(
    name = "vixen",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr: `text` or `json` (one object per line).
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[derive(Subcommand)]
enum Command {
    /// Check a cluster repo: schema and semantic rules, every error as file:line:col.
    Validate(cmd::validate::Args),
    /// Print the Talos machine config of one node (or write all of them).
    Render(cmd::render::Args),
    /// Decrypt a SOPS file encrypted to age keys, like `sops decrypt`.
    Decrypt(cmd::decrypt::Args),
    /// Generate a new Talos secrets bundle (like `talosctl gen secrets`).
    #[command(name = "gen-secrets")]
    GenSecrets(cmd::gen_secrets::Args),
    /// Configure the first control plane from its maintenance address and bootstrap etcd.
    Bootstrap(cmd::bootstrap::Args),
    /// Write a vixen repo from a running cluster's configs (read over the Talos API), checked
    /// to render exactly what every node runs; no node is changed.
    Import(Box<cmd::import::Args>),
    /// Reset every node of the cluster to maintenance mode (needs --confirm <cluster name>).
    Decommission(cmd::decommission::Args),
    /// Show what a reconcile would change, node by node (no change is made).
    Plan(cmd::agent::PlanArgs),
    /// Reconcile the cluster with the repo: once, or as the long-running in-cluster agent.
    Agent(Box<cmd::agent::Args>),
    /// Show the VixenCluster status the agent writes: revision, phase, nodes, conditions.
    Status(cmd::status::StatusArgs),
    /// etcd snapshots: take one now, list the stored ones.
    #[command(subcommand)]
    Etcd(cmd::etcd::Command),
    /// Write an admin kubeconfig fetched from a control plane (like `talosctl kubeconfig`).
    Kubeconfig(cmd::kubeconfig::Args),
    /// Print a shell completion script: `vixen completion bash > /etc/bash_completion.d/vixen`,
    /// `vixen completion zsh > ~/.zfunc/_vixen`, `vixen completion fish > ~/.config/fish/completions/vixen.fish`.
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Run simulated Talos nodes with real etcd on loopback, for tests and rehearsals.
    #[cfg(feature = "lab")]
    #[command(subcommand)]
    Lab(cmd::lab::Command),
    /// Simulated Talos nodes (not in this build: the shipped image leaves the simulator out).
    #[cfg(not(feature = "lab"))]
    Lab {
        /// Ignored.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut filter =
        tracing_subscriber::EnvFilter::try_from_env("VIXEN_LOG").unwrap_or_else(|_| "info".into());
    // kube's client logs every failed request as an error, expected ones too (an API that is
    // still coming up, a 404); vixen reports the failures that matter itself.
    if !std::env::var("VIXEN_LOG").is_ok_and(|v| v.contains("kube_client")) {
        filter = filter.add_directive(
            "kube_client::client::builder=off"
                .parse()
                .expect("a valid directive"),
        );
    }
    // Colour only for a person at a terminal (and never with NO_COLOR set): a pipe, a file or a
    // pod log gets plain text.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_target(false);
    if cli.log_format == "json" {
        logs.json().flatten_event(true).init();
    } else {
        logs.init();
    }
    let result = match cli.command {
        Command::Validate(args) => cmd::validate::run(args),
        Command::Render(args) => cmd::render::run(args),
        Command::Decrypt(args) => cmd::decrypt::run(args),
        Command::GenSecrets(args) => cmd::gen_secrets::run(args),
        #[cfg(feature = "lab")]
        Command::Lab(command) => cmd::lab::run(command),
        #[cfg(not(feature = "lab"))]
        Command::Lab { .. } => Err(anyhow::anyhow!(
            "the lab is not built into this vixen (the container image leaves the simulator out); build with the default `lab` feature"
        )),
        Command::Bootstrap(args) => cmd::bootstrap::run(args),
        Command::Import(args) => cmd::import::run(*args),
        Command::Decommission(args) => cmd::decommission::run(args),
        Command::Plan(args) => cmd::agent::plan(args),
        Command::Agent(args) => cmd::agent::run(*args),
        Command::Status(args) => cmd::status::status(args),
        Command::Kubeconfig(args) => cmd::kubeconfig::run(args),
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "vixen", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Etcd(command) => cmd::etcd::run(command),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", error_text(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each text once: a cause whose text the message
/// already holds (an error that prints its source, wrapped again) is not repeated.
fn error_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let c = cause.to_string();
        let c = c.trim();
        if c.is_empty() || text.contains(c) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(c);
    }
    text
}
