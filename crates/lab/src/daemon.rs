//! The lab as a background daemon (`vixen lab serve`): runs a [`Lab`], answers a Unix control
//! socket at `LABDIR/control.sock` (one JSON request line, one JSON reply line), and stops
//! every process it started on `down`, SIGTERM or SIGINT.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::journal::io;
use crate::{Error, Lab, LabOptions, LabSpec, Result};

/// A request on the control socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Control {
    /// Inject a fault (`down`, `up`, `slow-reboot MS`, `fail-next-upgrade`).
    Fault {
        /// Node name.
        node: String,
        /// The fault, as typed on the command line.
        fault: String,
    },
    /// Stop the lab and exit.
    Down,
}

/// The reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlReply {
    /// Whether it worked.
    pub ok: bool,
    /// Why not.
    #[serde(default)]
    pub error: Option<String>,
}

/// The control socket of a lab directory.
pub fn control_socket(dir: &Path) -> std::path::PathBuf {
    dir.join("control.sock")
}

/// Sends one request to a running daemon and waits for its reply.
///
/// # Errors
/// [`Error::Control`] when no daemon answers.
pub fn send_control(dir: &Path, cmd: &Control) -> Result<ControlReply> {
    let path = control_socket(dir);
    let err = |e: std::io::Error| Error::Control(format!("{}: {e}", path.display()));
    let mut stream = std::os::unix::net::UnixStream::connect(&path).map_err(err)?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .map_err(err)?;
    let mut line = serde_json::to_string(cmd).map_err(|e| Error::Control(e.to_string()))?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(err)?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).map_err(err)?;
    serde_json::from_str(&reply).map_err(|e| Error::Control(format!("bad reply: {e}")))
}

/// Runs the lab until `down`, SIGTERM or SIGINT; then stops every node and etcd process.
/// `ready` is called once all nodes listen.
///
/// # Errors
/// When the lab cannot start or the control socket cannot be bound.
///
/// With `die_with`, the lab also stops when that process is gone (a test run that was killed
/// takes its labs with it instead of leaving etcd processes on its addresses).
pub async fn run_daemon(
    spec: &LabSpec,
    opts: LabOptions,
    die_with: Option<u32>,
    ready: impl FnOnce(),
) -> Result<()> {
    let sock = control_socket(&opts.dir);
    let lab = Lab::start(spec, opts).await?;
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).map_err(|e| io(&sock, e))?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| io(&sock, e))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| io(&sock, e))?;
    ready();
    let mut owner_check = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        let stream = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = owner_check.tick(), if die_with.is_some() => {
                if die_with.is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()) {
                    tracing::warn!(pid = die_with, "the process this lab belongs to is gone: stopping");
                    break;
                }
                continue;
            }
            r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
        };
        let (read, mut write) = stream.into_split();
        let mut line = String::new();
        if tokio::io::BufReader::new(read)
            .read_line(&mut line)
            .await
            .is_err()
        {
            continue;
        }
        let (reply, stop) = match serde_json::from_str::<Control>(&line) {
            Ok(Control::Down) => (
                ControlReply {
                    ok: true,
                    error: None,
                },
                true,
            ),
            Ok(Control::Fault { node, fault }) => {
                let res = match fault.parse() {
                    Ok(f) => lab.fault(&node, f).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                };
                (
                    ControlReply {
                        ok: res.is_ok(),
                        error: res.err(),
                    },
                    false,
                )
            }
            Err(e) => (
                ControlReply {
                    ok: false,
                    error: Some(format!("bad request: {e}")),
                },
                false,
            ),
        };
        if stop {
            lab.shutdown().await;
        }
        let mut text = serde_json::to_string(&reply).unwrap_or_default();
        text.push('\n');
        let _ = write.write_all(text.as_bytes()).await;
        if stop {
            break;
        }
    }
    lab.shutdown().await;
    let _ = std::fs::remove_file(&sock);
    Ok(())
}

/// `LABDIR/ready`: written by the daemon once every node listens (holds its pid).
pub fn ready_file(dir: &Path) -> std::path::PathBuf {
    dir.join("ready")
}

/// The daemon's entry point (`vixen lab serve`): reads `LABDIR/spec.json`, runs the lab on its
/// own runtime until `down` or a signal, and removes the ready file when done. With `kube`, a
/// kube-apiserver runs on the lab's etcd once a control plane is bootstrapped.
///
/// # Errors
/// When the spec cannot be read or the lab cannot start.
pub fn serve_blocking(
    dir: &Path,
    reboot_ms: u64,
    kube: Option<crate::KubeOptions>,
    die_with: Option<u32>,
) -> Result<()> {
    let spec = LabSpec::load(&dir.join("spec.json"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| io(dir, e))?;
    let ready = ready_file(dir);
    let opts = LabOptions {
        dir: dir.to_path_buf(),
        reboot_ms,
        kube,
    };
    let res = rt.block_on(run_daemon(&spec, opts, die_with, || {
        let _ = std::fs::write(&ready, format!("{}\n", std::process::id()));
    }));
    let _ = std::fs::remove_file(&ready);
    res
}
