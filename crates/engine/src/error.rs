//! The engine's typed errors. Each has a fixed `category()` for metrics and Events; none
//! carries a config or a secret.

/// vixen's own state could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store could not be read.
    #[error("reading vixen's state: {0}")]
    Read(String),
    /// The stored state is not what this vixen writes.
    #[error("vixen's state is unreadable: {0}")]
    Corrupt(String),
    /// The state could not be written.
    #[error("writing vixen's state: {0}")]
    Write(String),
}

impl StoreError {
    /// A fixed label.
    pub fn category(&self) -> &'static str {
        match self {
            StoreError::Read(_) => "store_read",
            StoreError::Corrupt(_) => "store_corrupt",
            StoreError::Write(_) => "store_write",
        }
    }
}

/// A Kubernetes gate could not be passed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KubeError {
    /// No Kubernetes API answers.
    #[error("no Kubernetes API answers (needed for this step)")]
    NoApi,
    /// The API refused or failed the call (a drain that ran out of time included).
    #[error(transparent)]
    Api(#[from] vixen_k8s::Error),
}

impl KubeError {
    /// A fixed label.
    pub fn category(&self) -> &'static str {
        match self {
            KubeError::NoApi => "kube_unavailable",
            KubeError::Api(e) => e.category(),
        }
    }
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StepError {
    /// An interlock refused the step for good: the plan asks for something that is never safe.
    #[error("refused by interlock: {0}")]
    Interlock(String),
    /// The step is not safe now (a member is unhealthy, a node is down): the rollout waits and
    /// resumes when health returns.
    #[error("waiting: {0}")]
    Unsafe(String),
    /// A gate did not open in time.
    #[error("gave up waiting: {0}")]
    Gate(String),
    /// The node refused or failed the call.
    #[error(transparent)]
    Talos(#[from] vixen_talos::Error),
    /// vixen's own state could not be saved.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The Kubernetes API refused or failed a call.
    #[error(transparent)]
    Kube(#[from] KubeError),
}

impl StepError {
    /// A fixed label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            StepError::Interlock(_) => "interlock",
            StepError::Unsafe(_) => "unsafe",
            StepError::Gate(_) => "gate",
            StepError::Talos(e) => e.category(),
            StepError::Store(e) => e.category(),
            StepError::Kube(e) => e.category(),
        }
    }
}

/// A failed run: which step, and why.
#[derive(Debug, thiserror::Error)]
#[error("step {index} ({node}: {action}) failed: {source}")]
pub struct ExecError {
    /// Step index.
    pub index: usize,
    /// Node.
    pub node: String,
    /// The step's action, in words.
    pub action: String,
    /// Why.
    #[source]
    pub source: StepError,
}

/// An engine call failed before or outside a step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// vixen's state store.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EngineError {
    /// A fixed label.
    pub fn category(&self) -> &'static str {
        match self {
            EngineError::Store(e) => e.category(),
        }
    }
}
