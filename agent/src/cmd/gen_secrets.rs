//! `vixen gen-secrets`: a new Talos secrets bundle, like `talosctl gen secrets`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

#[derive(clap::Args)]
pub struct Args {
    /// Where to write the bundle (mode 0600). Encrypt it with sops before committing it.
    #[arg(short, long, default_value = "secrets.yaml")]
    pub output: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let bundle = vixen_pki::SecretsBundle::generate()?;
    let text = serde_yaml_ng::to_string(&bundle)?;
    super::write_private(&args.output, text.as_bytes(), args.force)
        .with_context(|| format!("writing {}", args.output.display()))?;
    let mut err = std::io::stderr();
    writeln!(
        err,
        "wrote {}; encrypt it before committing: sops encrypt -i --age <recipient> {}",
        args.output.display(),
        args.output.display()
    )?;
    Ok(ExitCode::SUCCESS)
}
