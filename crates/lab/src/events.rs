//! A node's event stream (MachineService.Events) as talosctl's `--wait` reads it
//! (`cmd/talosctl/pkg/talos/action/tracker.go`, `node.go`): sequence, task and machine-status
//! events in an in-memory log that starts empty on every boot (machined keeps events in memory),
//! each wrapped in an `Any` whose type URL is `talos/runtime/<full message name>`
//! (`pkg/machinery/client/events.go`), with the actor ID of the API call that caused it.
//!
//! Every stream starts with an empty "hello" event (an `Any` with no type URL, the request's
//! actor ID), which tells the client the watch is established (v1.11/v1.13 `v1alpha1_server.go`
//! Events, `sendEmptyEvent`); pkg/machinery's `EventsWatchV2` reads and drops it before it
//! returns, so a server without it makes the client swallow the first real event or hang.
//!
//! What the lab emits: on boot `MachineStatusEvent` BOOTING, the `boot` sequence, then RUNNING
//! ready (configured) or MAINTENANCE; on a reboot, upgrade or reset the sequence START with the
//! caller's actor ID, the `stopAllServices` task (what `talosctl reset --wait` waits for) and
//! REBOOTING / UPGRADING / RESETTING.

use std::sync::Mutex;

use prost::Message as _;
use tokio::sync::broadcast;
use vixen_talos::api::machine as pb;

/// What happened.
pub(crate) enum Payload {
    Sequence(&'static str, pb::sequence_event::Action),
    Task(&'static str, pb::task_event::Action),
    Stage(pb::machine_status_event::MachineStage, bool),
}

fn any(payload: &Payload) -> prost_types::Any {
    let (name, value) = match payload {
        Payload::Sequence(seq, action) => (
            "machine.SequenceEvent",
            pb::SequenceEvent {
                sequence: (*seq).into(),
                action: *action as i32,
                error: None,
            }
            .encode_to_vec(),
        ),
        Payload::Task(task, action) => (
            "machine.TaskEvent",
            pb::TaskEvent {
                task: (*task).into(),
                action: *action as i32,
            }
            .encode_to_vec(),
        ),
        Payload::Stage(stage, ready) => (
            "machine.MachineStatusEvent",
            pb::MachineStatusEvent {
                stage: *stage as i32,
                status: Some(pb::machine_status_event::MachineStatus {
                    ready: *ready,
                    unmet_conditions: vec![],
                }),
            }
            .encode_to_vec(),
        ),
    };
    prost_types::Any {
        type_url: format!("talos/runtime/{name}"),
        value,
    }
}

/// The per-boot event log and its live subscribers.
pub(crate) struct EventLog {
    log: Mutex<(u64, Vec<pb::Event>)>,
    live: broadcast::Sender<pb::Event>,
}

impl EventLog {
    pub(crate) fn new() -> Self {
        Self {
            log: Mutex::new((0, Vec::new())),
            live: broadcast::channel(256).0,
        }
    }

    /// A new boot: the old boot's events are gone.
    pub(crate) fn clear(&self) {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).1.clear();
    }

    pub(crate) fn emit(&self, actor_id: &str, payload: Payload) {
        let mut g = self.log.lock().unwrap_or_else(|e| e.into_inner());
        g.0 += 1;
        let ev = pb::Event {
            metadata: None,
            data: Some(any(&payload)),
            id: format!("{:020}", g.0),
            actor_id: actor_id.to_string(),
        };
        g.1.push(ev.clone());
        let _ = self.live.send(ev);
    }

    /// The empty event a stream starts with (see the module docs).
    pub(crate) fn hello(&self, actor_id: &str) -> pb::Event {
        let mut g = self.log.lock().unwrap_or_else(|e| e.into_inner());
        g.0 += 1;
        pb::Event {
            metadata: None,
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: Vec::new(),
            }),
            id: format!("{:020}", g.0),
            actor_id: actor_id.to_string(),
        }
    }

    /// The history a request asks for (`tail_events`: -1 all, n the last n; 0 none) and a
    /// receiver for what follows, both filtered by `with_actor_id` when set.
    pub(crate) fn subscribe(
        &self,
        req: &pb::EventsRequest,
    ) -> (Vec<pb::Event>, broadcast::Receiver<pb::Event>) {
        let g = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let rx = self.live.subscribe();
        let matches =
            |e: &&pb::Event| req.with_actor_id.is_empty() || e.actor_id == req.with_actor_id;
        let all: Vec<pb::Event> = g.1.iter().filter(matches).cloned().collect();
        let keep = match req.tail_events {
            n if n < 0 => all.len(),
            n => usize::try_from(n).unwrap_or(0).min(all.len()),
        };
        (all[all.len() - keep..].to_vec(), rx)
    }
}
