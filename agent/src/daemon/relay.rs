//! Webhooks that land on a standby replica reach the leader. Both replicas sit behind one
//! Service, so a push webhook may hit the one that does not hold the Lease: that replica records
//! the verified push on ConfigMap `vixen-push` ([`vixen_k8s::PushSignal`]), and the leader, which
//! looks at it on every Lease tick, polls Git at once.
//!
//! ```text
//! standby: verified push ─► Relay::forward ─update─► vixen-push ─┐
//! leader:  watch() every renew tick ─get─────────────────────────┘─ changed ─► poll_now
//! ```
//!
//! An unverified request never gets here (the HTTP handler answers 401 first), so it writes
//! nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use vixen_forge::PushEvent;
use vixen_k8s::PushSignal;

use super::http::Shared;

/// The ConfigMap standbys write verified pushes to.
pub const PUSH_CONFIGMAP: &str = "vixen-push";
/// Longest wait for the write before the webhook is answered 503 (forges time out at 10 s).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// The standby side: records verified pushes for the leader.
pub struct Relay {
    signal: PushSignal,
    leading: watch::Receiver<bool>,
    identity: String,
}

impl Relay {
    /// Records into `signal` as `identity`, unless `leading` says this replica leads.
    pub fn new(signal: PushSignal, leading: watch::Receiver<bool>, identity: &str) -> Self {
        Self {
            signal,
            leading,
            identity: identity.to_owned(),
        }
    }

    /// Whether the leader must be told (this replica does not lead).
    pub fn standby(&self) -> bool {
        !*self.leading.borrow()
    }

    /// Records `push` for the leader.
    ///
    /// # Errors
    /// The API error, or a timeout: the leader was not told, and the forge should retry.
    pub async fn forward(&self, push: &PushEvent) -> anyhow::Result<()> {
        tokio::time::timeout(
            FORWARD_TIMEOUT,
            self.signal
                .record(&push.after, &push.reference, &self.identity),
        )
        .await
        .map_err(|_| {
            anyhow::anyhow!("the API server did not answer within {FORWARD_TIMEOUT:?}")
        })??;
        tracing::info!(revision = %push.after, "webhook on a standby: recorded for the leader on configmap {PUSH_CONFIGMAP}");
        Ok(())
    }
}

/// The leader side: every `every`, while leading, looks at `signal` and wakes the loop when a
/// standby recorded a push. Returns when `shutdown` turns true.
pub async fn watch(
    mut signal: PushSignal,
    leading: watch::Receiver<bool>,
    every: Duration,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if *leading.borrow() {
            match signal.changed().await {
                Ok(Some(push)) => {
                    tracing::info!(revision = %push.revision, from = %push.received_by, received_at = %push.received_at, "a standby received a push webhook: polling now");
                    shared
                        .metrics
                        .webhook_relays
                        .get_or_create(&vec![("result", "received".into())])
                        .inc();
                    shared.poll_now.notify_one();
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "push signal not read"),
            }
        } else {
            // The next term starts from what is there (its first cycle polls anyway).
            signal.forget();
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}
