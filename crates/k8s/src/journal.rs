//! The operation journal in a ConfigMap, so that a new leader resumes the old leader's rollout.
//!
//! The journal is opaque JSON (the engine's inventory and plan in progress: names and digests,
//! never a config or a secret) under the key `state.json`. Writes are fenced twice: only while
//! this replica leads, and with the `resourceVersion` of the last read or write, so a deposed
//! leader that still runs gets a conflict instead of overwriting its successor's journal.

use std::sync::Mutex;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use crate::{Error, MANAGED_BY, Result, api_code};

/// The data key holding the journal.
pub const KEY: &str = "state.json";

/// A journal stored in one ConfigMap.
pub struct Journal {
    api: Api<ConfigMap>,
    namespace: String,
    name: String,
    leading: Option<watch::Receiver<bool>>,
    /// resourceVersion of the last read or write; `Some("")` = read and absent.
    version: Mutex<Option<String>>,
}

impl Journal {
    /// The journal in ConfigMap `namespace/name`. With `leading`, writes are refused unless it
    /// says true.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        leading: Option<watch::Receiver<bool>>,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.into(),
            name: name.into(),
            leading,
            version: Mutex::new(None),
        }
    }

    fn what(&self) -> String {
        format!("configmap {}/{}", self.namespace, self.name)
    }

    /// The stored journal, or `None` when there is none yet. Remembers the resourceVersion.
    ///
    /// # Errors
    /// API errors.
    pub async fn load(&self) -> Result<Option<String>> {
        match self.api.get(&self.name).await {
            Ok(cm) => {
                *self.version.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(cm.metadata.resource_version.clone().unwrap_or_default());
                Ok(cm.data.and_then(|mut d| d.remove(KEY)))
            }
            Err(e) if api_code(&e) == Some(404) => {
                *self.version.lock().unwrap_or_else(|e| e.into_inner()) = Some(String::new());
                Ok(None)
            }
            Err(e) => Err(Error::kube("get", self.what(), e)),
        }
    }

    /// Replaces the journal.
    ///
    /// # Errors
    /// [`Error::NotLeader`] when this replica does not lead; [`Error::Conflict`] when someone else
    /// wrote since this replica's last read or write; API errors.
    ///
    /// # Guarantees
    /// Nothing is written unless this replica leads and the object is the one it last saw.
    pub async fn save(&self, json: &str) -> Result<()> {
        if let Some(l) = &self.leading
            && !*l.borrow()
        {
            return Err(Error::NotLeader("journal write"));
        }
        let known = self
            .version
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let known = match known {
            Some(v) => v,
            None => {
                self.load().await?;
                self.version
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
                    .unwrap_or_default()
            }
        };
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())].into()),
                resource_version: (!known.is_empty()).then_some(known.clone()),
                ..ObjectMeta::default()
            },
            data: Some([(KEY.to_owned(), json.to_owned())].into()),
            ..ConfigMap::default()
        };
        let written = if known.is_empty() {
            self.api
                .create(&PostParams::default(), &cm)
                .await
                .map_err(|e| Error::kube("create", self.what(), e))?
        } else {
            self.api
                .replace(&self.name, &PostParams::default(), &cm)
                .await
                .map_err(|e| Error::kube("replace", self.what(), e))?
        };
        *self.version.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(written.metadata.resource_version.unwrap_or_default());
        Ok(())
    }
}
