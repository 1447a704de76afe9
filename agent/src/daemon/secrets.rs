//! Watches the files mounted from Secrets (age key, Git credentials, forge token, webhook secret,
//! talosconfig) with `notify`, and says when their contents changed.
//!
//! Kubernetes updates a mounted Secret by swapping a `..data` symlink in the mount folder, so the
//! folders are watched, not the files, and a change is only reported when the digest of the
//! files' contents differs (the digest is kept, never the contents).

use std::path::PathBuf;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::watch;

fn digest(files: &[PathBuf]) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in files {
        f.hash(&mut h);
        std::fs::read(f).ok().hash(&mut h);
    }
    h.finish()
}

/// Keeps the watcher alive; `changed` ticks once per change of the files' contents.
pub struct SecretWatch {
    _watcher: Option<notify::RecommendedWatcher>,
    /// Held when no file is watched: a dropped sender would make `changed()` return at once,
    /// forever, and wake the agent's loop on every turn (issue 14: an idle agent sent 8,776
    /// Talos calls in 10 s).
    _idle: Option<watch::Sender<u64>>,
    /// A counter bumped on every change.
    pub changed: watch::Receiver<u64>,
}

/// Starts watching `files` (missing ones are watched for creation through their folder).
///
/// # Errors
/// When the platform watcher cannot start.
pub fn watch_files(files: Vec<PathBuf>) -> anyhow::Result<SecretWatch> {
    let (tx, rx) = watch::channel(0u64);
    if files.is_empty() {
        return Ok(SecretWatch {
            _watcher: None,
            _idle: Some(tx),
            changed: rx,
        });
    }
    let mut last = digest(&files);
    let watched = files.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Reading the files below is itself an access event: only writes, creations, renames
        // and removals count, or the watcher would feed itself.
        match res {
            Ok(ev) if !matches!(ev.kind, notify::EventKind::Access(_)) => {}
            _ => return,
        }
        let now = digest(&watched);
        if now != last {
            last = now;
            tx.send_modify(|n| *n += 1);
            tracing::info!("mounted secret files changed; reloading credentials");
        }
    })?;
    let mut dirs: Vec<PathBuf> = files
        .iter()
        .filter_map(|f| {
            f.parent().map(|p| {
                if p.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    p.to_path_buf()
                }
            })
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    for d in dirs {
        if let Err(e) = watcher.watch(&d, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %d.display(), error = %e, "cannot watch folder; changes there are picked up on restart only");
        }
    }
    Ok(SecretWatch {
        _watcher: Some(watcher),
        _idle: None,
        changed: rx,
    })
}
