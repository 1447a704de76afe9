//! The engine's step events, as metrics and as Kubernetes Events on the `VixenCluster`.
//!
//! ```text
//! executor ─step()─► StepReporter ─count─► vixen_steps_total{action,event}
//!                         │ try_send (never waits)
//!                         ▼
//!                bounded channel ──► poster task ──create──► events.k8s.io/v1 Event
//!                 (full: dropped, counted in vixen_events_total{result="dropped"})
//! ```
//!
//! The executor calls [`Progress::step`] synchronously between Talos calls, so the reporter
//! never waits on the API server: a slow or unreachable API loses Events, never steps. A note
//! names the node and the action (the step as the plan prints it) and never a secret: steps hold
//! names, addresses, versions and image references only.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use vixen_forge::{CommitState, CommitStatus, StatusQueue};
use vixen_k8s::{EventRecorder, EventType};
use vixen_plan::Step;

use super::metrics::Metrics;
use vixen_engine::{Progress, StepEvent};

/// Events waiting to be posted; beyond this they are dropped.
pub const QUEUE: usize = 64;
/// Longest wait for one Event create.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// One Event to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Normal or Warning.
    pub kind: EventType,
    /// `StepStarted`, `StepSucceeded`, `StepResumed` or `StepFailed`.
    pub reason: &'static str,
    /// The step's action kind in CamelCase (`Upgrade`, `ApplyConfig`...).
    pub action: String,
    /// What happened, to which node.
    pub note: String,
}

/// The step's action as the journal's `kind` word (`upgrade`, `apply_config`, ...).
pub fn action_kind(step: &Step) -> String {
    step.action.kind().as_str().to_owned()
}

fn camel(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The step as one line: `cp-1 upgrade to ... [REBOOT] -- why` (the plan pads the node name).
fn one_line(step: &Step) -> String {
    step.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The Event for `event` of step `index`.
pub fn note(index: usize, step: &Step, event: &StepEvent<'_>) -> Note {
    let what = format!("step {}: {}", index + 1, one_line(step));
    let (kind, reason, note) = match event {
        StepEvent::Started => (EventType::Normal, "StepStarted", what),
        StepEvent::Done { elapsed } => (
            EventType::Normal,
            "StepSucceeded",
            format!("{what} (took {:.1}s)", elapsed.as_secs_f64()),
        ),
        StepEvent::Resumed => (
            EventType::Normal,
            "StepResumed",
            format!("{what} (was in flight when the previous leader stopped; not sent again)"),
        ),
        StepEvent::Failed { error } => {
            let error = error.to_string();
            let first = error
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim();
            (
                EventType::Warning,
                "StepFailed",
                format!("{what} failed: {first}"),
            )
        }
    };
    Note {
        kind,
        reason,
        action: camel(&action_kind(step)),
        note,
    }
}

fn event_label(event: &StepEvent<'_>) -> &'static str {
    match event {
        StepEvent::Started => "started",
        StepEvent::Done { .. } => "succeeded",
        StepEvent::Resumed => "resumed",
        StepEvent::Failed { .. } => "failed",
    }
}

/// Posts queued Events in order until every sender is gone.
pub fn spawn_poster(
    recorder: Arc<EventRecorder>,
    shared: Arc<super::http::Shared>,
) -> mpsc::Sender<Note> {
    let (tx, mut rx) = mpsc::channel::<Note>(QUEUE);
    tokio::spawn(async move {
        while let Some(n) = rx.recv().await {
            let result = match tokio::time::timeout(
                POST_TIMEOUT,
                recorder.publish(n.kind, n.reason, &n.action, &n.note),
            )
            .await
            {
                Ok(Ok(())) => "posted",
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, reason = n.reason, "step event not published");
                    "failed"
                }
                Err(_) => "failed",
            };
            shared
                .metrics
                .events
                .get_or_create(&vec![("result", result.into())])
                .inc();
        }
    });
    tx
}

/// Where a started step is announced as a pending commit status.
pub struct PendingStatus<'a> {
    /// The forge's queue (never waits).
    pub queue: &'a StatusQueue,
    /// The commit.
    pub sha: String,
    /// The link shown next to the status.
    pub target_url: Option<String>,
}

/// The daemon's [`Progress`]: counts every step event and queues it as a Kubernetes Event; a
/// started step also becomes the commit's pending status (`upgrading cp-2 (step 3)`).
pub struct StepReporter<'a> {
    metrics: &'a Metrics,
    events: Option<mpsc::Sender<Note>>,
    pending: Option<PendingStatus<'a>>,
    /// Steps in the running plan.
    total: std::sync::atomic::AtomicUsize,
}

impl<'a> StepReporter<'a> {
    /// Counts into `metrics`; with `events`, also queues Kubernetes Events.
    pub fn new(metrics: &'a Metrics, events: Option<mpsc::Sender<Note>>) -> Self {
        Self {
            metrics,
            events,
            pending: None,
            total: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Also posts a pending commit status naming each step as it starts.
    #[must_use]
    pub fn with_pending(mut self, pending: Option<PendingStatus<'a>>) -> Self {
        self.pending = pending;
        self
    }
}

impl Progress for StepReporter<'_> {
    fn plan(&self, total: usize) {
        self.total
            .store(total, std::sync::atomic::Ordering::Relaxed);
    }

    fn step(&self, index: usize, step: &Step, event: StepEvent<'_>) {
        self.metrics
            .steps
            .get_or_create(&vec![
                ("action", action_kind(step)),
                ("event", event_label(&event).into()),
            ])
            .inc();
        if let (Some(p), StepEvent::Started) = (&self.pending, &event) {
            let status = CommitStatus {
                state: CommitState::Pending,
                description: super::verdict::running(
                    index,
                    self.total.load(std::sync::atomic::Ordering::Relaxed),
                    step,
                ),
                target_url: p.target_url.clone(),
            };
            if let Err(e) = p.queue.post(&p.sha, status) {
                tracing::debug!(error = %e, "pending status not queued");
            }
        }
        let Some(tx) = &self.events else { return };
        if let Err(e) = tx.try_send(note(index, step, &event)) {
            self.metrics
                .events
                .get_or_create(&vec![("result", "dropped".into())])
                .inc();
            let why = if matches!(e, mpsc::error::TrySendError::Full(_)) {
                "the API server is slow (queue full)"
            } else {
                "the event poster stopped"
            };
            tracing::warn!(node = %step.node, step = index, why, "step event dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vixen_engine::StepError;
    use vixen_plan::{Action, Risk};

    fn upgrade() -> Step {
        Step {
            node: "cp-1".into(),
            action: Action::Upgrade {
                image: "ghcr.io/siderolabs/installer:v1.12.2".into(),
            },
            reason: "Talos v1.11.6 -> v1.12.2".into(),
            risk: Risk {
                reboot: true,
                ..Risk::default()
            },
        }
    }

    #[test]
    fn each_step_event_becomes_an_event_naming_node_and_action() {
        let s = upgrade();
        let started = note(2, &s, &StepEvent::Started);
        assert_eq!(
            (started.kind, started.reason, started.action.as_str()),
            (EventType::Normal, "StepStarted", "Upgrade")
        );
        assert_eq!(
            started.note,
            "step 3: cp-1 upgrade to ghcr.io/siderolabs/installer:v1.12.2 [REBOOT] -- Talos v1.11.6 -> v1.12.2"
        );
        let done = note(
            2,
            &s,
            &StepEvent::Done {
                elapsed: Duration::from_millis(1500),
            },
        );
        assert_eq!(done.reason, "StepSucceeded");
        assert!(done.note.ends_with("(took 1.5s)"), "{}", done.note);
        assert_eq!(note(2, &s, &StepEvent::Resumed).reason, "StepResumed");
        let error = StepError::Gate("cp-1 did not come back at 127.0.10.1 within 600s".into());
        let failed = note(2, &s, &StepEvent::Failed { error: &error });
        assert_eq!(
            (failed.kind, failed.reason),
            (EventType::Warning, "StepFailed")
        );
        assert!(
            failed.note.contains("cp-1 upgrade")
                && failed
                    .note
                    .contains("gave up waiting: cp-1 did not come back"),
            "{}",
            failed.note
        );
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let metrics = Metrics::default();
        let (tx, mut rx) = mpsc::channel(2);
        let reporter = StepReporter::new(&metrics, Some(tx));
        let s = upgrade();
        for _ in 0..5 {
            reporter.step(0, &s, StepEvent::Started);
        }
        assert_eq!(
            metrics
                .events
                .get_or_create(&vec![("result", "dropped".into())])
                .get(),
            3
        );
        assert_eq!(
            metrics
                .steps
                .get_or_create(&vec![
                    ("action", "upgrade".into()),
                    ("event", "started".into())
                ])
                .get(),
            5
        );
        assert!(rx.try_recv().is_ok() && rx.try_recv().is_ok() && rx.try_recv().is_err());
    }
}
