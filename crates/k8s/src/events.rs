//! Kubernetes Events (`events.k8s.io/v1`) about the `VixenCluster`: one per step and outcome, so
//! `kubectl describe vixencluster` tells the story. Notes are cut to the API's 1 kB limit.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

use crate::{Error, Result};

/// The reporting controller name on every Event.
pub const CONTROLLER: &str = "vixen.dev/agent";

/// Creates Events regarding one object.
pub struct EventRecorder {
    api: Api<Event>,
    namespace: String,
    regarding: ObjectReference,
    instance: String,
}

/// `Normal` or `Warning`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Progress.
    Normal,
    /// Something went wrong.
    Warning,
}

impl EventRecorder {
    /// Events in `namespace` about `regarding`, reported by `instance` (the pod name).
    pub fn new(
        client: kube::Client,
        namespace: &str,
        regarding: ObjectReference,
        instance: &str,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.into(),
            regarding,
            instance: instance.into(),
        }
    }

    /// Publishes one Event. `reason` is a fixed CamelCase word, `action` what vixen did.
    ///
    /// # Errors
    /// API errors (callers log them: an Event is never worth failing a reconcile for).
    pub async fn publish(
        &self,
        kind: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) -> Result<()> {
        let mut note = note.to_owned();
        if note.len() > 1000 {
            let mut cut = 997;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
            note.push_str("...");
        }
        let prefix = self
            .regarding
            .name
            .clone()
            .unwrap_or_else(|| "vixen".into());
        let now = Timestamp::now();
        let ev = Event {
            // `<object>.<time in hex>`, as client-go names them (a generateName may not end in '.').
            metadata: ObjectMeta {
                name: Some(format!("{prefix}.{:x}", now.as_nanosecond())),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            reporting_controller: Some(CONTROLLER.into()),
            reporting_instance: Some(self.instance.clone()),
            action: Some(action.into()),
            reason: Some(reason.into()),
            regarding: Some(self.regarding.clone()),
            note: Some(note),
            type_: Some(
                match kind {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            ..Event::default()
        };
        self.api
            .create(&PostParams::default(), &ev)
            .await
            .map_err(|e| Error::kube("create", "event", e))?;
        Ok(())
    }
}
