//! A verified push webhook that reached a standby replica, handed to the leader through a
//! ConfigMap of its own (`vixen-push`): the standby writes it, the leader reads it on every Lease
//! tick and polls Git at once when it changed.
//!
//! ```text
//! forge ─webhook─► Service ─► standby ──update──► ConfigMap "vixen-push"
//!                                                   revision, ref, receivedAt, receivedBy
//!                             leader ◄──get, every renew tick──┘
//!                               └─ a new resourceVersion: poll Git now
//! ```
//!
//! Why an object of its own: the leader renews the Lease and writes the journal with the
//! resourceVersion it read, so a standby writing either would make the leader's next write fail
//! (a lost renewal, a refused journal step). Only standbys write this ConfigMap and the leader
//! only reads it, so it cannot fight the election or the journal. Writes are unconditional (last
//! writer wins): a write only means "look at Git now"; the leader takes the revision from Git,
//! never from here.

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

use crate::{Error, MANAGED_BY, Result, api_code};

/// A push a standby recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push {
    /// The pushed commit (as the verified webhook said).
    pub revision: String,
    /// The replica that received it.
    pub received_by: String,
    /// When (RFC 3339).
    pub received_at: String,
}

/// The push signal in ConfigMap `namespace/name`.
pub struct PushSignal {
    api: Api<ConfigMap>,
    namespace: String,
    name: String,
    /// resourceVersion at the last look; `Some("")`: looked, absent.
    seen: Option<String>,
}

fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

impl PushSignal {
    /// The signal in ConfigMap `namespace/name`.
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.into(),
            name: name.into(),
            seen: None,
        }
    }

    fn what(&self) -> String {
        format!("configmap {}/{}", self.namespace, self.name)
    }

    /// Records a verified push of `revision` to `reference`, received by `by` (a standby calls
    /// this; the caller has verified the webhook).
    ///
    /// # Errors
    /// API errors.
    ///
    /// # Guarantees
    /// Writes this ConfigMap only: never the Lease or the journal.
    pub async fn record(&self, revision: &str, reference: &str, by: &str) -> Result<()> {
        let data = [
            ("revision".to_owned(), cut(revision, 64)),
            ("ref".to_owned(), cut(reference, 256)),
            ("receivedAt".to_owned(), Timestamp::now().to_string()),
            ("receivedBy".to_owned(), cut(by, 253)),
        ];
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())].into()),
                ..ObjectMeta::default()
            },
            data: Some(data.into_iter().collect()),
            ..ConfigMap::default()
        };
        // Without a resourceVersion the update is unconditional; the first one creates.
        let pp = PostParams::default();
        match self.api.replace(&self.name, &pp, &cm).await {
            Ok(_) => return Ok(()),
            Err(e) if api_code(&e) == Some(404) => {}
            Err(e) => return Err(Error::kube("replace", self.what(), e)),
        }
        match self.api.create(&pp, &cm).await {
            Ok(_) => Ok(()),
            // Another standby created it meanwhile.
            Err(e) if api_code(&e) == Some(409) => self
                .api
                .replace(&self.name, &pp, &cm)
                .await
                .map(|_| ())
                .map_err(|e| Error::kube("replace", self.what(), e)),
            Err(e) => Err(Error::kube("create", self.what(), e)),
        }
    }

    /// The push recorded since the last look, if any (the leader calls this on every tick). The
    /// first look, and the first after [`PushSignal::forget`], only remembers what is there.
    ///
    /// # Errors
    /// API errors (the last look is kept).
    pub async fn changed(&mut self) -> Result<Option<Push>> {
        let (version, push) = match self.api.get(&self.name).await {
            Ok(cm) => {
                let data = cm.data.unwrap_or_default();
                let field = |k: &str| data.get(k).cloned().unwrap_or_default();
                let push = Push {
                    revision: field("revision"),
                    received_by: field("receivedBy"),
                    received_at: field("receivedAt"),
                };
                (cm.metadata.resource_version.unwrap_or_default(), Some(push))
            }
            Err(e) if api_code(&e) == Some(404) => (String::new(), None),
            Err(e) => return Err(Error::kube("get", self.what(), e)),
        };
        let before = self.seen.replace(version.clone());
        Ok(match before {
            Some(b) if b != version => push,
            _ => None,
        })
    }

    /// Forgets the last look (when this replica stops leading).
    pub fn forget(&mut self) {
        self.seen = None;
    }
}
