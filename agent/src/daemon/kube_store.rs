//! The engine's [`StateStore`] on a Kubernetes ConfigMap (vixen-k8s [`Journal`]), so that a new
//! leader resumes the old leader's journal.
//!
//! The engine's store trait is synchronous; each call runs the API request with
//! `block_in_place` on the agent's multi-threaded runtime (a journal write is a few per step).

use vixen_k8s::Journal;

use crate::engine::{State, StateStore};

/// A [`StateStore`] on a [`Journal`].
pub struct KubeStore {
    journal: Journal,
    handle: tokio::runtime::Handle,
}

impl KubeStore {
    /// Wraps `journal`; must be created inside the multi-threaded runtime that will use it.
    pub fn new(journal: Journal) -> Self {
        Self {
            journal,
            handle: tokio::runtime::Handle::current(),
        }
    }
}

impl StateStore for KubeStore {
    fn load(&self) -> anyhow::Result<State> {
        let text = tokio::task::block_in_place(|| self.handle.block_on(self.journal.load()))?;
        Ok(match text {
            Some(t) => serde_json::from_str(&t)?,
            None => State::default(),
        })
    }

    fn save(&self, state: &State) -> anyhow::Result<()> {
        let text = serde_json::to_string(state)?;
        tokio::task::block_in_place(|| self.handle.block_on(self.journal.save(&text)))?;
        Ok(())
    }
}
