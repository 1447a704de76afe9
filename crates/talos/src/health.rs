//! Judging a node's health from its `ServiceList` the way Talos and talosctl do.
//!
//! Talos reports a service without a health check as `health.unknown = true, healthy = false`
//! (`internal/app/machined/pkg/system/health/status.go`, `Status.AsProto`): on metal the
//! `dashboard` service always looks like that (`runtime/v1alpha1/v1alpha1_sequencer.go` starts it
//! unless `talos.dashboard.disabled=1`), and so do extension services. talosctl's readiness checks
//! (`pkg/cluster/check/default.go`, `service.go` `ServiceHealthAssertion`) only look at the
//! services that matter, require their last state to be `Running`, and require them healthy.
//! [`judge`] follows that: the core services must run, those with a health check must pass it,
//! and "unknown" is not "unhealthy"; other services (dashboard, syslogd, auditd, extensions) do
//! not decide a node's health.

use crate::node::ServiceStatus;

/// Services whose failure makes the node unhealthy when present (`etcd` and `trustd` only run on
/// control planes). The list follows `StartAllServices` and the early services of
/// `v1alpha1_sequencer_tasks.go`.
const CORE: &[&str] = &[
    "apid",
    "containerd",
    "cri",
    "etcd",
    "kubelet",
    "machined",
    "trustd",
    "udevd",
];

/// Services every configured node lists (apid serves the API, machined runs everything, and
/// kubelet is loaded by `StartAllServices` on every machine type).
const REQUIRED: &[&str] = &["apid", "kubelet", "machined"];

/// The verdict on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Every core service runs and passes its health check.
    pub healthy: bool,
    /// Why not, one line per service (`etcd: state Preparing`, `kubelet: health check failed`);
    /// empty when healthy.
    pub reasons: Vec<String>,
}

/// Judges a configured node from its services (see the module docs).
pub fn judge(services: &[ServiceStatus]) -> Health {
    let mut reasons = Vec::new();
    for id in REQUIRED {
        if !services.iter().any(|s| s.id == *id) {
            reasons.push(format!("{id}: not listed"));
        }
    }
    for s in services.iter().filter(|s| CORE.contains(&s.id.as_str())) {
        if s.state != "Running" {
            reasons.push(format!("{}: state {}", s.id, s.state));
        } else if !s.health_unknown && !s.healthy {
            reasons.push(format!("{}: health check failed", s.id));
        }
    }
    Health {
        healthy: reasons.is_empty(),
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(id: &str, state: &str, healthy: bool, unknown: bool) -> ServiceStatus {
        ServiceStatus {
            id: id.into(),
            state: state.into(),
            healthy,
            health_unknown: unknown,
            last_event: None,
        }
    }

    fn metal_worker() -> Vec<ServiceStatus> {
        vec![
            svc("apid", "Running", true, false),
            svc("containerd", "Running", true, false),
            svc("cri", "Running", true, false),
            svc("dashboard", "Running", false, true),
            svc("kubelet", "Running", true, false),
            svc("machined", "Running", true, false),
            svc("syslogd", "Running", true, false),
            svc("udevd", "Running", true, false),
        ]
    }

    /// Fault covered: the dashboard (no health check: unknown, healthy=false) made every real
    /// metal node look unhealthy, so no rollout could pass its gate.
    #[test]
    fn a_service_without_health_check_is_not_unhealthy() {
        let h = judge(&metal_worker());
        assert_eq!(h.reasons, Vec::<String>::new());
        assert!(h.healthy);
    }

    /// Fault covered: a core service that is not running (etcd still waiting to join) or fails
    /// its health check must keep the gate closed, with the reason named.
    #[test]
    fn core_services_must_run_and_pass_their_check() {
        let mut s = metal_worker();
        s.push(svc("etcd", "Preparing", false, false));
        s.push(svc("trustd", "Running", true, false));
        s[4] = svc("kubelet", "Running", false, false);
        let h = judge(&s);
        assert!(!h.healthy);
        assert_eq!(
            h.reasons,
            vec!["kubelet: health check failed", "etcd: state Preparing"]
        );
    }

    /// Fault covered: an empty or partial list (a node still booting) is not healthy.
    #[test]
    fn missing_required_services_are_named() {
        assert_eq!(
            judge(&[]).reasons,
            vec![
                "apid: not listed",
                "kubelet: not listed",
                "machined: not listed"
            ]
        );
        let mut s = metal_worker();
        s.retain(|s| s.id != "kubelet");
        assert_eq!(judge(&s).reasons, vec!["kubelet: not listed"]);
    }

    /// Fault covered: an extension or optional service failing does not decide node health, as
    /// talosctl's checks ignore it; an unhealthy unknown-health core service still must run.
    #[test]
    fn only_core_services_decide() {
        let mut s = metal_worker();
        s.push(svc("ext-tailscale", "Failed", false, false));
        s.push(svc("auditd", "Running", false, false));
        assert!(judge(&s).healthy);
        s.push(svc("udevd", "Stopping", false, true));
        assert_eq!(judge(&s).reasons, vec!["udevd: state Stopping"]);
    }
}
