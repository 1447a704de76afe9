//! What vixen remembers between runs: the inventory of nodes it configured, and the operation
//! journal of the plan in progress, so that a killed agent resumes without redoing a reboot.
//!
//! The store is a small trait: a JSON file in the lab and for `--once` runs, a Kubernetes object
//! in the cluster. Only digests and names are stored: never a config or a secret.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use vixen_plan::{Inventory, Plan};

/// A plan being carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// Digest of the desired state the plan was made for.
    pub revision: String,
    /// The plan.
    pub plan: Plan,
    /// Steps finished (a prefix of the plan).
    pub done: usize,
    /// A step that was started and not yet seen finished (its index).
    pub in_flight: Option<usize>,
}

/// Everything vixen keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Nodes vixen configured.
    pub inventory: Inventory,
    /// The plan in progress, if any.
    pub run: Option<Run>,
}

/// Where the state lives.
pub trait StateStore: Send + Sync {
    /// The stored state (empty when there is none).
    ///
    /// # Errors
    /// When the store exists but cannot be read.
    fn load(&self) -> anyhow::Result<State>;
    /// Replaces the stored state (atomically).
    ///
    /// # Errors
    /// When it cannot be written.
    fn save(&self, state: &State) -> anyhow::Result<()>;
}

/// A JSON file, replaced atomically on every save.
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// A store at `path` (its folder is created on first save).
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }
}

impl StateStore for FileStore {
    fn load(&self) -> anyhow::Result<State> {
        match std::fs::read(&self.path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e.into()),
        }
    }

    fn save(&self, state: &State) -> anyhow::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)?;
        // fsync before rename: the journal must survive a SIGKILL right after a step started.
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(())
    }
}
