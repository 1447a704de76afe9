//! `vixen decrypt`: decrypt a SOPS file encrypted to age keys, like `sops decrypt`.
//!
//! Nothing is written unless decryption succeeded; `--output` files are created with mode
//! 0600 and moved into place atomically.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use vixen_sops::{Format, Keyring};

#[derive(clap::Args)]
pub struct Args {
    /// The SOPS file to decrypt.
    file: PathBuf,
    /// Input format; by default from the file extension (.yaml/.yml, .json, .env, .ini,
    /// anything else is binary).
    #[arg(long, value_name = "yaml|json|dotenv|ini|binary")]
    input_type: Option<Format>,
    /// Output format (default: the input's), as sops' `--output-type`: e.g. a YAML file printed
    /// as JSON, or the `data` string of a binary file.
    #[arg(long, value_name = "yaml|json|dotenv|ini|binary")]
    output_type: Option<Format>,
    /// Write the plaintext to this file (mode 0600) instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Age identities file; by default SOPS_AGE_KEY, SOPS_AGE_KEY_FILE and
    /// ~/.config/sops/age/keys.txt are used, as sops does.
    #[arg(long, value_name = "FILE")]
    age_key: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let input = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let format = args
        .input_type
        .unwrap_or_else(|| Format::from_path(&args.file));
    let keys = match &args.age_key {
        Some(path) => Keyring::from_file(path)?,
        None => Keyring::from_env()?,
    };
    let output = args.output_type.unwrap_or(format);
    let plain = vixen_sops::decrypt_to(&input, format, output, &keys)
        .with_context(|| format!("cannot decrypt {}", args.file.display()))?;
    match &args.output {
        Some(path) => write_private(path, plain.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(plain.as_bytes())?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `bytes` to a 0600 temporary file beside `path`, then renames it over `path`.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.vixen-{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
