//! ServiceList as a real metal node answers it: the services its boot sequence started, each with
//! its event history and health as Talos' service runner reports them.
//!
//! - Early services on metal (`v1alpha1_sequencer.go` `Initialize`, `v1alpha1_sequencer_tasks.go`):
//!   udevd, machined, auditd (1.9+), syslogd, containerd, and `dashboard` unless
//!   `talos.dashboard.disabled=1` (the lab never sets it).
//! - apid: serves the configured node; from 1.13 it also serves maintenance mode.
//! - `StartAllServices` on a configured node: cri, kubelet, and on control planes trustd and etcd.
//! - Health (`internal/app/machined/pkg/system/health/status.go`, `AsProto`): a service without a
//!   health check (dashboard; see `services/dashboard.go`, no `HealthFunc`) reports
//!   `unknown = true, healthy = false`.
//! - Events (`service_runner.go`): "Starting service", then "Health check successful" in state
//!   Running, or "Running pre state" while Preparing; talosctl's `services` and its checks read the
//!   last event (`pkg/cluster/check/service.go`), so events are never empty.

use prost_types::Timestamp;
use vixen_talos::api::machine as pb;

use crate::node::Node;
use crate::versions::Talos;
use crate::{Role, etcd};

/// State and health of one simulated service.
struct Svc {
    id: &'static str,
    state: &'static str,
    /// None: the service has no health check.
    healthy: Option<bool>,
}

fn info(s: &Svc, since: &Timestamp) -> pb::ServiceInfo {
    let mut events = vec![pb::ServiceEvent {
        msg: "Starting service".into(),
        state: "Starting".into(),
        ts: Some(*since),
    }];
    let last = match (s.state, s.healthy) {
        ("Running", Some(true)) => "Health check successful".to_string(),
        ("Running", Some(false)) => "Health check failed: not ready".to_string(),
        ("Running", None) => "Service started as goroutine".to_string(),
        ("Preparing", _) => "Running pre state".to_string(),
        ("Starting", _) => "Starting service".to_string(),
        (other, _) => format!("Service {}", other.to_lowercase()),
    };
    events.push(pb::ServiceEvent {
        msg: last.clone(),
        state: s.state.into(),
        ts: Some(*since),
    });
    pb::ServiceInfo {
        id: s.id.into(),
        state: s.state.into(),
        events: Some(pb::ServiceEvents { events }),
        health: Some(pb::ServiceHealth {
            unknown: s.healthy.is_none(),
            healthy: s.healthy == Some(true),
            last_message: if s.healthy == Some(false) {
                "not ready".into()
            } else {
                String::new()
            },
            last_change: Some(*since),
        }),
    }
}

/// The node's services, sorted by ID as Talos lists them.
pub(crate) async fn list(n: &Node, maintenance: bool) -> Vec<pb::ServiceInfo> {
    let v = Talos(n.version());
    let up = |id| Svc {
        id,
        state: "Running",
        healthy: Some(true),
    };
    let mut out = vec![
        up("udevd"),
        up("machined"),
        up("syslogd"),
        up("containerd"),
        Svc {
            id: "dashboard",
            state: "Running",
            healthy: None,
        },
        up("apid"),
    ];
    if v.has_auditd() {
        out.push(up("auditd"));
    }
    if !maintenance {
        // CRI takes a moment after the boot reaches StartAllServices (Bootstrap waits for it).
        out.push(if n.cri_up() {
            up("cri")
        } else {
            Svc {
                id: "cri",
                state: "Starting",
                healthy: Some(false),
            }
        });
        out.push(Svc {
            id: "kubelet",
            state: "Running",
            healthy: Some(true),
        });
        if n.role() == Role::Controlplane {
            out.push(up("trustd"));
            out.push(match n.etcd_url() {
                Some(url) => Svc {
                    id: "etcd",
                    state: "Running",
                    healthy: Some(etcd::healthy(&url).await),
                },
                // Stopped by EtcdLeaveCluster (`Services.Stop`) or crashed: not running.
                None if n.st().etcd_left => Svc {
                    id: "etcd",
                    state: "Finished",
                    healthy: Some(false),
                },
                None => Svc {
                    id: "etcd",
                    state: "Preparing",
                    healthy: Some(false),
                },
            });
        }
    }
    out.sort_by_key(|s| s.id);
    let since = n.booted_at();
    out.iter().map(|s| info(s, &since)).collect()
}
