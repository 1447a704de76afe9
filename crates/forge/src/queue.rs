//! [`StatusQueue`]: commit statuses posted from a background task, so that a reconcile never
//! waits for the forge.
//!
//! ```text
//! reconcile --post(sha, status)--> [bounded queue] --worker task--> seed (GET, first status of a
//!   (sync, never awaits)             full: drop the     commit) --dedup--> POST, retried with
//!                                    oldest of that     backoff; a newer status of the same
//!                                    commit, counted    commit supersedes one being retried
//! ```
//!
//! The worker posts one status at a time, in order. Before the first status of a commit it reads
//! the commit's statuses from the forge ([`StatusClient::seed`]), so that a restarted agent does
//! not post "applied in 0 steps" again; a status equal to the one the forge holds is skipped and
//! counted as deduplicated. Failures are logged with the forge's own message and kept as
//! [`StatusQueue::last_error`]; the token never appears in either.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::status::{Attempt, with_attempts};
use crate::{CommitStatus, StatusClient, StatusError};

/// Counters the daemon can export as metrics; each only grows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Statuses the forge accepted.
    pub posted: u64,
    /// Statuses given up on (refused, or still failing after the last retry).
    pub failed: u64,
    /// Statuses never sent: dropped from a full queue, or superseded by a newer status of the
    /// same commit while being retried.
    pub dropped: u64,
    /// Statuses not sent because the forge already holds the same state and description.
    pub deduplicated: u64,
}

#[derive(Default)]
struct Counters {
    posted: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    deduplicated: AtomicU64,
}

struct Job {
    sha: String,
    status: CommitStatus,
}

struct Shared {
    client: StatusClient,
    capacity: usize,
    pending: Mutex<VecDeque<Job>>,
    wake: Notify,
    /// Statuses queued or being worked on; 0 when the queue is idle.
    outstanding: watch::Sender<usize>,
    counters: Counters,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, VecDeque<Job>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn done(&self) {
        self.outstanding.send_modify(|n| *n = n.saturating_sub(1));
    }

    fn has_newer(&self, sha: &str) -> bool {
        self.pending().iter().any(|j| j.sha == sha)
    }

    fn fail(&self, sha: &str, error: &StatusError) {
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        let forge = self.client.forge();
        tracing::warn!(%forge, %sha, error = %error, "commit status not posted");
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
    }
}

/// Posts commit statuses for one repository and context from a background task. Dropping it
/// stops the task (statuses still queued are lost; call [`StatusQueue::drain`] first to wait).
pub struct StatusQueue {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for StatusQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusQueue")
            .field("client", &self.shared.client)
            .field("capacity", &self.shared.capacity)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl StatusQueue {
    /// Starts the worker task on the current Tokio runtime. `capacity` (at least 1) bounds the
    /// statuses waiting to be sent.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn start(client: StatusClient, capacity: usize) -> Self {
        let shared = Arc::new(Shared {
            client,
            capacity: capacity.max(1),
            pending: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            outstanding: watch::Sender::new(0),
            counters: Counters::default(),
            last_error: Mutex::new(None),
        });
        let task = tokio::spawn(work(shared.clone()));
        Self { shared, task }
    }

    /// Queues `status` for commit `sha` and returns at once: this never touches the network.
    /// When the queue is full the oldest waiting status of the same commit (or, if none, the
    /// oldest waiting status) is dropped and counted.
    ///
    /// # Errors
    /// [`StatusError::InvalidConfig`] for a malformed commit id (nothing is queued).
    pub fn post(&self, sha: &str, status: CommitStatus) -> Result<(), StatusError> {
        if sha.len() != 40 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StatusError::InvalidConfig(format!("bad commit id {sha:?}")));
        }
        let sha = sha.to_ascii_lowercase();
        let mut pending = self.shared.pending();
        if pending.len() >= self.shared.capacity {
            let victim = pending.iter().position(|j| j.sha == sha).unwrap_or(0);
            if let Some(old) = pending.remove(victim) {
                tracing::debug!(sha = %old.sha, state = ?old.status.state, "status queue full: dropped the oldest waiting status");
                self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                self.shared.done();
            }
        }
        pending.push_back(Job { sha, status });
        drop(pending);
        self.shared.outstanding.send_modify(|n| *n += 1);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// The counters so far.
    pub fn stats(&self) -> QueueStats {
        let c = &self.shared.counters;
        QueueStats {
            posted: c.posted.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            deduplicated: c.deduplicated.load(Ordering::Relaxed),
        }
    }

    /// Statuses waiting to be sent (not counting the one being sent).
    pub fn waiting(&self) -> usize {
        self.shared.pending().len()
    }

    /// The last failure, with the forge's own message (for `vixen status` and events).
    pub fn last_error(&self) -> Option<String> {
        self.shared
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until every queued status was posted, deduplicated, dropped or given up on (bound
    /// it with `tokio::time::timeout` at shutdown).
    pub async fn drain(&self) {
        let mut rx = self.shared.outstanding.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

impl Drop for StatusQueue {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn work(shared: Arc<Shared>) {
    loop {
        let job = shared.pending().pop_front();
        let Some(job) = job else {
            shared.wake.notified().await;
            continue;
        };
        send(&shared, &job).await;
        shared.done();
    }
}

async fn send(shared: &Shared, job: &Job) {
    let client = &shared.client;
    let forge = client.forge();
    if !client.knows(&job.sha)
        && let Err(e) = client.seed(&job.sha).await
    {
        // Not fatal: without the forge's view the status is simply posted.
        tracing::debug!(%forge, sha = %job.sha, error = %e, "cannot read the commit's statuses");
    }
    if client.is_unchanged(&job.sha, &job.status) {
        shared.counters.deduplicated.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%forge, sha = %job.sha, state = ?job.status.state, "commit status unchanged; not posted");
        return;
    }
    let max = client.retry_policy().max_attempts.max(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match client.attempt(&job.sha, &job.status).await {
            Attempt::Sent => {
                shared.counters.posted.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%forge, sha = %job.sha, state = ?job.status.state, attempt, "commit status posted");
                return;
            }
            Attempt::Fatal(e) => return shared.fail(&job.sha, &e),
            Attempt::Retry { wait, error } => {
                if attempt >= max {
                    return shared.fail(&job.sha, &with_attempts(error, attempt));
                }
                tracing::info!(%forge, sha = %job.sha, attempt, error = %error, "commit status not accepted; retrying");
                tokio::time::sleep(wait.unwrap_or_else(|| client.backoff(attempt))).await;
                if shared.has_newer(&job.sha) {
                    shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%forge, sha = %job.sha, "a newer status of the commit is queued: not retrying this one");
                    return;
                }
            }
        }
    }
}
