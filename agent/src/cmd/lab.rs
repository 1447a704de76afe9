use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Start the lab.
    Up,
}

pub fn run(_command: Command) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
