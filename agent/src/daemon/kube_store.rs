//! The engine's [`StateStore`] on a Kubernetes ConfigMap (vixen-k8s [`Journal`]), so that a new
//! leader resumes the old leader's journal; and [`AgentStore`], the store the daemon uses.

use vixen_engine::{FileStore, State, StateStore, StoreError};
use vixen_k8s::Journal;

/// A [`StateStore`] on a [`Journal`].
pub struct KubeStore {
    journal: Journal,
}

impl KubeStore {
    /// Wraps `journal`.
    pub fn new(journal: Journal) -> Self {
        Self { journal }
    }
}

impl StateStore for KubeStore {
    async fn load(&self) -> Result<State, StoreError> {
        match self
            .journal
            .load()
            .await
            .map_err(|e| StoreError::Read(e.to_string()))?
        {
            Some(t) => serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(e.to_string())),
            None => Ok(State::default()),
        }
    }

    async fn save(&self, state: &State) -> Result<(), StoreError> {
        let text = serde_json::to_string(state).map_err(|e| StoreError::Write(e.to_string()))?;
        self.journal
            .save(&text)
            .await
            .map_err(|e| StoreError::Write(e.to_string()))
    }
}

/// The daemon's store: the ConfigMap in the cluster, else a file.
pub enum AgentStore<'a> {
    /// `--kube`.
    Kube(&'a KubeStore),
    /// A state folder.
    File(&'a FileStore),
}

impl StateStore for AgentStore<'_> {
    async fn load(&self) -> Result<State, StoreError> {
        match self {
            AgentStore::Kube(s) => s.load().await,
            AgentStore::File(s) => s.load().await,
        }
    }

    async fn save(&self, state: &State) -> Result<(), StoreError> {
        match self {
            AgentStore::Kube(s) => s.save(state).await,
            AgentStore::File(s) => s.save(state).await,
        }
    }
}
