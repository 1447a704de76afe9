//! What vixen remembers between runs: the inventory of nodes it configured, and the operation
//! journal of the plan in progress, so that a killed agent resumes without redoing a reboot.
//!
//! The store is a port ([`StateStore`]): a JSON file in the lab and for `--once` runs, a
//! Kubernetes ConfigMap in the cluster. Only digests and names are stored: never a config or a
//! secret.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vixen_plan::{Action, Desired, Inventory, InventoryNode, Plan, Step};

use crate::error::StoreError;
use crate::ports::StateStore;

/// A plan being carried out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// Digest of the desired state the plan was made for.
    pub revision: String,
    /// The plan.
    pub plan: Plan,
    /// Steps finished (a prefix of the plan).
    pub done: usize,
    /// A step that was started and not yet seen finished (its index).
    pub in_flight: Option<usize>,
    /// Boot IDs read just before a step that reboots the node, by node: its readiness gate
    /// waits for another one (a changed boot ID proves the reboot happened), also after a crash.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub boots: std::collections::BTreeMap<String, String>,
}

/// Everything vixen keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Nodes vixen configured.
    pub inventory: Inventory,
    /// The plan in progress, if any.
    pub run: Option<Run>,
}

/// A fingerprint of the desired state: a journaled plan is resumed only for the same one.
/// SHA-256 over the serialized [`Desired`], so it is stable across Rust releases and every
/// field counts, a new one included.
pub fn fingerprint(desired: &Desired) -> String {
    use sha2::{Digest as _, Sha256};
    let bytes = serde_json::to_vec(desired).expect("Desired serializes");
    let digest = Sha256::digest(&bytes);
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
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

    /// The state file used by `--lab LABDIR` or `--state DIR`: `DIR/state.json`.
    pub fn in_dir(dir: &Path) -> Self {
        Self::new(dir.join("state.json"))
    }
}

impl StateStore for FileStore {
    async fn load(&self) -> Result<State, StoreError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| StoreError::Corrupt(format!("{}: {e}", self.path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(StoreError::Read(format!("{}: {e}", self.path.display()))),
        }
    }

    async fn save(&self, state: &State) -> Result<(), StoreError> {
        let write = || -> std::io::Result<()> {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = self.path.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)?;
            // fsync before rename: the journal must survive a SIGKILL right after a step
            // started.
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| StoreError::Write(format!("{}: {e}", self.path.display())))
    }
}

/// Updates the inventory after a finished step.
pub(crate) fn record(inventory: &mut Inventory, step: &Step, desired: &Desired) {
    match &step.action {
        Action::ApplyConfig {
            maintenance,
            reboot_after,
            ..
        } => {
            if let Some(d) = desired.nodes.iter().find(|n| n.name == step.node) {
                // The member ID stays with the machine across a rename and a re-address; a
                // node installed from maintenance mode joins etcd as a new member.
                let member_id = inventory
                    .nodes
                    .iter()
                    .find(|i| i.maintenance_address == d.maintenance_address && i.role == d.role)
                    .and_then(|i| i.member_id)
                    .filter(|_| !*maintenance);
                // A rename: the old entry of the same machine goes.
                inventory
                    .nodes
                    .retain(|i| i.name == d.name || i.maintenance_address != d.maintenance_address);
                let entry = InventoryNode {
                    name: d.name.clone(),
                    hostname: d.hostname.clone(),
                    role: d.role,
                    maintenance_address: d.maintenance_address.clone(),
                    address: d.address().to_string(),
                    config: d.config.clone(),
                    member_id,
                    // Applied live on Talos 1.14+: owed a reboot until vixen's Reboot step.
                    reboot_pending: *reboot_after,
                };
                match inventory.nodes.iter_mut().find(|i| i.name == d.name) {
                    Some(i) => *i = entry,
                    None => inventory.nodes.push(entry),
                }
            }
        }
        // Only a node seen back in maintenance mode leaves the inventory: a node whose member
        // was removed while it was unreachable is remembered, and reset when it returns.
        Action::WaitMaintenance { .. } => inventory.nodes.retain(|i| i.name != step.node),
        // The node boots the config it was given: no reboot is owed any more.
        Action::Reboot | Action::Upgrade { .. } => {
            if let Some(i) = inventory.nodes.iter_mut().find(|i| i.name == step.node) {
                i.reboot_pending = false;
            }
        }
        _ => {}
    }
}
