//! What the agent tells about drift (a node whose running config is not the one from Git, found
//! by the dry runs of a resync, see `vixen_engine::drift`): a gauge and a counter, a Warning
//! Event, the `Drifted` condition of the VixenCluster, and a note in the status message. Node
//! names only: never a config, a diff or a secret.

use k8s_openapi::jiff::Timestamp;
use vixen_engine::Drifted;
use vixen_k8s::{EventRecorder, EventType, VixenClusterStatus};
use vixen_plan::DriftPolicy;

use super::metrics::Metrics;

/// The drift one reconcile found, and how it ended.
pub struct DriftReport<'a> {
    /// Drifted nodes (empty: none found).
    pub drift: &'a [Drifted],
    /// The cluster's policy.
    pub policy: DriftPolicy,
    /// The reconcile converged (with `correct`, the drift was corrected).
    pub converged: bool,
}

impl DriftReport<'_> {
    /// The `Drifted` condition: status, reason and message.
    pub fn condition(&self) -> (bool, &'static str, String) {
        let names = self
            .drift
            .iter()
            .map(|d| d.node.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        match (self.drift.is_empty(), self.policy, self.converged) {
            (true, _, _) => (false, "NoDrift", String::new()),
            (false, DriftPolicy::Report, _) => (
                true,
                "DriftReported",
                format!(
                    "{names}: running config is not the one from Git; reported only (drift: report)"
                ),
            ),
            (false, DriftPolicy::Correct, true) => (
                false,
                "DriftCorrected",
                format!("{names}: running config was not the one from Git; applied again"),
            ),
            (false, DriftPolicy::Correct, false) => (
                true,
                "DriftNotCorrected",
                format!("{names}: running config is not the one from Git; not corrected yet"),
            ),
        }
    }

    /// Metrics, log, status message; with Kubernetes, the condition (written with the next
    /// status) and an Event.
    pub async fn publish(
        &self,
        metrics: &Metrics,
        kube: Option<(&mut VixenClusterStatus, &EventRecorder)>,
        message: &mut String,
    ) {
        metrics.drifted_nodes.set(self.drift.len() as i64);
        let policy = match self.policy {
            DriftPolicy::Correct => "correct",
            DriftPolicy::Report => "report",
        };
        for d in self.drift {
            metrics
                .drift
                .get_or_create(&vec![("node", d.node.clone()), ("policy", policy.into())])
                .inc();
        }
        let (on, reason, note) = self.condition();
        if !self.drift.is_empty() {
            tracing::warn!(policy, "drift: {note}");
            message.push_str(&format!("; drift: {note}"));
        }
        let Some((status, events)) = kube else { return };
        status.set_condition("Drifted", on, reason, &note, Timestamp::now());
        if !self.drift.is_empty()
            && let Err(e) = events
                .publish(EventType::Warning, "Drifted", "DriftCheck", &note)
                .await
        {
            tracing::debug!(error = %e, "drift event not published");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drifted(names: &[&str]) -> Vec<Drifted> {
        names
            .iter()
            .map(|n| Drifted {
                node: (*n).into(),
                reboot: false,
                details: "Config diff:\n\n--- a\n+++ b\n".into(),
            })
            .collect()
    }

    #[test]
    fn the_condition_names_the_nodes_and_says_what_was_done() {
        let d = drifted(&["worker-1", "cp-2"]);
        let r = |policy, converged| {
            DriftReport {
                drift: &d,
                policy,
                converged,
            }
            .condition()
        };
        let (on, reason, msg) = r(DriftPolicy::Report, true);
        assert!(on && reason == "DriftReported" && msg.starts_with("worker-1, cp-2:"));
        let (on, reason, _) = r(DriftPolicy::Correct, true);
        assert!(!on && reason == "DriftCorrected");
        let (on, reason, _) = r(DriftPolicy::Correct, false);
        assert!(on && reason == "DriftNotCorrected");
        let none = DriftReport {
            drift: &[],
            policy: DriftPolicy::Correct,
            converged: true,
        };
        assert_eq!(none.condition(), (false, "NoDrift", String::new()));
    }
}
