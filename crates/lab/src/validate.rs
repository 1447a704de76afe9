//! Talos' own config loader and validator on what a lab node receives. When the
//! `talos-validate` test peer is built (`tests/peers/build.sh`, found by [`crate::peers`]), every
//! ApplyConfiguration (dry runs included) is loaded and validated by it in mode metal before the
//! node changes anything, so a config a real node would refuse is refused by the lab too, with
//! Talos' words. Without the peer the lab keeps its own checks only (`MachineConfig::parse`).
//!
//! The config goes to the peer on stdin (`/dev/stdin` as its file argument): secrets never touch
//! the disk. The peer prints `<file>: warning: ...` lines, then either `<file> is valid for metal
//! mode` (exit 0) or `<file>: failed to load config: ...` / `<file>: failed to validate config:
//! ...` (exit 1; the message may span several lines).

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;
use tonic::Status;

/// How long the peer may take (it answers in well under a second).
const TIMEOUT: Duration = Duration::from_secs(10);
const FILE: &str = "/dev/stdin";

/// Talos' answer on a config.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Loads and validates; Talos' warnings, if any.
    Valid(Vec<String>),
    /// Talos' config loader refuses it (YAML, unknown keys, unknown documents...).
    NotLoaded(String),
    /// It loads but fails validation in mode metal.
    Invalid(String),
}

/// Runs Talos' validator on `data`. `Ok(None)` when the peer is not built (said once at debug
/// level).
///
/// # Errors
/// `Internal` when the peer is built but cannot run, times out or answers something else: a lab
/// that silently skipped validation would hide a config Talos refuses.
pub(crate) async fn talos(data: &[u8]) -> Result<Option<Verdict>, Status> {
    static SAID: AtomicBool = AtomicBool::new(false);
    let Some(bin) = crate::peers::binary("talos-validate") else {
        if !SAID.swap(true, Ordering::Relaxed) {
            tracing::debug!(
                "talos-validate peer not built (tests/peers/build.sh): ApplyConfiguration uses \
                 the lab's own checks only"
            );
        }
        return Ok(None);
    };
    let fail = |what: String| Status::internal(format!("lab: talos-validate: {what}"));
    let mut child = Command::new(&bin)
        .args(["--mode", "metal", FILE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("cannot start {}: {e}", bin.display())))?;
    let stdin = child.stdin.take();
    let data = data.to_vec();
    let feed = async move {
        if let Some(mut stdin) = stdin {
            // A write error means the peer stopped reading: its output says why.
            let _ = stdin.write_all(&data).await;
        }
    };
    let run = async { tokio::join!(feed, child.wait_with_output()).1 };
    let out = tokio::time::timeout(TIMEOUT, run)
        .await
        .map_err(|_| fail(format!("no answer within {TIMEOUT:?}")))?
        .map_err(|e| fail(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match (out.status.code(), verdict(&stdout)) {
        (Some(0), Some(v @ Verdict::Valid(_))) => Ok(Some(v)),
        (Some(1), Some(v @ (Verdict::NotLoaded(_) | Verdict::Invalid(_)))) => Ok(Some(v)),
        (code, _) => Err(fail(format!(
            "unexpected answer (exit {code:?}): {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        ))),
    }
}

/// Validates a config as the node's API server does before it changes anything (dry runs
/// included), returning Talos' warnings for the reply. Without the peer: no warnings, and the
/// caller's own checks decide.
///
/// Talos words its refusals by server (facts read in siderolabs/talos, v1.12/v1.13 sources):
/// - maintenance mode (`internal/app/maintenance` ApplyConfiguration): a config that does not
///   load is a plain Go error `failed to parse config: <err>`, which gRPC answers with code
///   Unknown; one that fails validation is InvalidArgument `configuration validation failed:
///   <err>`.
/// - configured mode (machined's `v1alpha1_server.go` ApplyConfiguration): load and validation
///   errors are both InvalidArgument carrying Talos' error text as is, checked before the apply
///   mode is chosen and before a dry run returns.
///
/// # Errors
/// Those refusals, or `Internal` when the peer is built but unusable (see [`talos`]).
pub(crate) async fn check(data: &[u8], maintenance: bool) -> Result<Vec<String>, Status> {
    match talos(data).await? {
        None => Ok(Vec::new()),
        Some(Verdict::Valid(warnings)) => Ok(warnings),
        Some(Verdict::NotLoaded(e)) if maintenance => {
            Err(Status::unknown(format!("failed to parse config: {e}")))
        }
        Some(Verdict::Invalid(e)) if maintenance => Err(Status::invalid_argument(format!(
            "configuration validation failed: {e}"
        ))),
        Some(Verdict::NotLoaded(e) | Verdict::Invalid(e)) => Err(Status::invalid_argument(e)),
    }
}

/// Reads the peer's report (see the module comment).
fn verdict(stdout: &str) -> Option<Verdict> {
    let load = format!("{FILE}: failed to load config: ");
    let validate = format!("{FILE}: failed to validate config: ");
    if let Some(at) = stdout.find(&load) {
        return Some(Verdict::NotLoaded(
            stdout[at + load.len()..].trim_end().to_string(),
        ));
    }
    if let Some(at) = stdout.find(&validate) {
        return Some(Verdict::Invalid(
            stdout[at + validate.len()..].trim_end().to_string(),
        ));
    }
    let warning = format!("{FILE}: warning: ");
    stdout
        .lines()
        .any(|l| l.starts_with(&format!("{FILE} is valid for ")))
        .then(|| {
            stdout
                .lines()
                .filter_map(|l| l.strip_prefix(&warning))
                .map(str::to_string)
                .collect()
        })
        .map(Verdict::Valid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_peer_report() {
        assert_eq!(
            verdict("/dev/stdin: warning: w1\n/dev/stdin is valid for metal mode\n"),
            Some(Verdict::Valid(vec!["w1".into()]))
        );
        assert_eq!(
            verdict(
                "/dev/stdin: failed to validate config: 1 error occurred:\n\t* bad thing\n\n\n"
            ),
            Some(Verdict::Invalid("1 error occurred:\n\t* bad thing".into()))
        );
        assert_eq!(
            verdict("/dev/stdin: failed to load config: config not found\n"),
            Some(Verdict::NotLoaded("config not found".into()))
        );
        assert_eq!(verdict("usage: talos-validate\n"), None);
    }
}
