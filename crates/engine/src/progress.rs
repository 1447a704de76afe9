//! What the executor tells the outside world as it goes: one event per step, so the agent can
//! turn them into Kubernetes Events, metrics or a status line. Observers never influence the
//! run; a slow observer slows it, so they should hand work off rather than block.

use std::time::Duration;

use vixen_plan::Step;

use crate::error::StepError;

/// What happened to a step.
#[derive(Debug)]
pub enum StepEvent<'a> {
    /// The step's call is about to be sent (its interlocks passed).
    Started,
    /// The step finished.
    Done {
        /// How long it took.
        elapsed: Duration,
    },
    /// The step was in flight when the previous run died; it is not sent again.
    Resumed,
    /// The step failed; nothing after it runs.
    Failed {
        /// Why.
        error: &'a StepError,
    },
}

/// Receives step events.
pub trait Progress: Send + Sync {
    /// Step `index` of the plan (`step`) reached `event`.
    fn step(&self, index: usize, step: &Step, event: StepEvent<'_>);

    /// A plan of `total` steps starts (or resumes) running: step events that follow count
    /// against it ("upgrading cp-2 (2/5)").
    fn plan(&self, total: usize) {
        let _ = total;
    }
}

/// An observer that ignores everything (the CLI: its logs say it all).
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

impl Progress for Quiet {
    fn step(&self, _: usize, _: &Step, _: StepEvent<'_>) {}
}
