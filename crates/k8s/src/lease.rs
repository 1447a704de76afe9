//! Lease-based leader election (`coordination.k8s.io/v1`): of all replicas, only the holder of the
//! Lease acts on the cluster.
//!
//! The algorithm is the one client-go uses: the holder renews `renewTime` every `renew_every`;
//! another replica takes the Lease over only after it saw the record unchanged for a whole
//! `lease_duration` by its own monotonic clock (so clock skew between nodes does not matter).
//! Every write carries the `resourceVersion` it read, so two candidates never both win.
//! A leader that cannot renew steps down after `renew_deadline`, before the Lease expires for
//! the others (`renew_deadline < lease_duration`).

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use crate::{Error, MANAGED_BY, Result, api_code};

/// Where the Lease is and how long it lasts.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease (vixen's own, `vixen-system`).
    pub namespace: String,
    /// Lease name.
    pub name: String,
    /// This replica (the pod name).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long stops acting.
    pub renew_deadline: Duration,
    /// How often to renew or retry.
    pub renew_every: Duration,
}

impl LeaseConfig {
    /// Defaults of 15 s / 10 s / 2 s, like client-go's.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            renew_every: Duration::from_secs(2),
        }
    }

    /// The same with a Lease of `lease_duration`, the other two in the defaults' proportions
    /// (deadline 2/3 of it, a renewal every 2/15 of it).
    pub fn with_duration(mut self, lease_duration: Duration) -> Self {
        self.lease_duration = lease_duration;
        self.renew_deadline = lease_duration * 2 / 3;
        self.renew_every = lease_duration * 2 / 15;
        self
    }
}

/// Holds or waits for the Lease. [`LeaderElector::subscribe`] tells the rest of the agent
/// whether it may act.
pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    leading: watch::Sender<bool>,
    /// The other holder's record and when this replica first saw it.
    observed: Option<(String, Instant)>,
    last_renew: Option<Instant>,
}

fn holder_record(spec: &LeaseSpec) -> String {
    format!(
        "{}|{}|{}",
        spec.holder_identity.as_deref().unwrap_or(""),
        spec.renew_time
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
        spec.lease_transitions.unwrap_or(0)
    )
}

impl LeaderElector {
    /// An elector for `cfg`; not leading until [`LeaderElector::try_acquire_or_renew`] wins.
    pub fn new(client: kube::Client, cfg: LeaseConfig) -> Self {
        let api = Api::namespaced(client, &cfg.namespace);
        Self {
            api,
            cfg,
            leading: watch::Sender::new(false),
            observed: None,
            last_renew: None,
        }
    }

    /// True while this replica holds the Lease, updated by every attempt.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    /// Whether this replica currently leads.
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    fn what(&self) -> String {
        format!("lease {}/{}", self.cfg.namespace, self.cfg.name)
    }

    fn spec(&self, acquire: Timestamp, now: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.cfg.identity.clone()),
            lease_duration_seconds: Some(self.cfg.lease_duration.as_secs().max(1) as i32),
            acquire_time: Some(MicroTime(acquire)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One round: create, renew or take over the Lease. Returns whether this replica leads now.
    ///
    /// # Errors
    /// API errors other than a lost race (a lost race is `Ok(false)`).
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool> {
        let won = self.attempt().await;
        match &won {
            Ok(true) => {
                self.last_renew = Some(Instant::now());
                self.set(true);
            }
            Ok(false) => self.set(false),
            Err(_) => {
                // Keep leading only while the last renewal is recent enough.
                let fresh = self
                    .last_renew
                    .is_some_and(|t| t.elapsed() < self.cfg.renew_deadline);
                if !fresh {
                    self.set(false);
                }
            }
        }
        won
    }

    fn set(&self, leading: bool) {
        let was = self.leading.send_replace(leading);
        if was != leading {
            if leading {
                tracing::info!(identity = %self.cfg.identity, lease = %self.cfg.name, "became the leader");
            } else {
                tracing::warn!(identity = %self.cfg.identity, lease = %self.cfg.name, "not the leader any more");
            }
        }
    }

    async fn attempt(&mut self) -> Result<bool> {
        let now = Timestamp::now();
        let current = match self.api.get(&self.cfg.name).await {
            Ok(l) => l,
            Err(e) if api_code(&e) == Some(404) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.name.clone()),
                        namespace: Some(self.cfg.namespace.clone()),
                        labels: Some([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())].into()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(now, now, 0)),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(e) if api_code(&e) == Some(409) => Ok(false),
                    Err(e) => Err(Error::kube("create", self.what(), e)),
                };
            }
            Err(e) => return Err(Error::kube("get", self.what(), e)),
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().unwrap_or("");
        let transitions = spec.lease_transitions.unwrap_or(0);
        let mut next = current.clone();
        if holder == self.cfg.identity {
            let acquire = spec.acquire_time.as_ref().map_or(now, |t| t.0);
            next.spec = Some(self.spec(acquire, now, transitions));
        } else {
            let record = holder_record(&spec);
            let duration =
                Duration::from_secs(spec.lease_duration_seconds.unwrap_or(15).max(0) as u64);
            let seen_since = match &self.observed {
                Some((r, t)) if *r == record => *t,
                _ => {
                    let t = Instant::now();
                    self.observed = Some((record, t));
                    t
                }
            };
            let expired = holder.is_empty() || seen_since.elapsed() >= duration;
            if !expired {
                return Ok(false);
            }
            tracing::info!(previous = %holder, "taking over the lease");
            next.spec = Some(self.spec(now, now, transitions + 1));
        }
        // `replace` sends the resourceVersion we read: a concurrent writer makes it fail with 409.
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if api_code(&e) == Some(409) => Ok(false),
            Err(e) => Err(Error::kube("replace", self.what(), e)),
        }
    }

    /// Gives the Lease up (on shutdown) so that another replica takes over at once.
    ///
    /// # Errors
    /// API errors; a Lease that someone else holds is left alone.
    pub async fn release(&mut self) -> Result<()> {
        if !self.is_leader() {
            return Ok(());
        }
        self.set(false);
        let mut current = self
            .api
            .get(&self.cfg.name)
            .await
            .map_err(|e| Error::kube("get", self.what(), e))?;
        let Some(spec) = current.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &current)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if api_code(&e) == Some(409) => Ok(()),
            Err(e) => Err(Error::kube("replace", self.what(), e)),
        }
    }

    /// Renews or competes every `renew_every` until `shutdown` fires, then releases the Lease.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.try_acquire_or_renew().await {
                tracing::warn!(error = %e, category = e.category(), "lease round failed");
            }
            tokio::select! {
                () = tokio::time::sleep(self.cfg.renew_every) => {}
                _ = shutdown.changed() => break,
            }
        }
        if let Err(e) = self.release().await {
            tracing::warn!(error = %e, "could not release the lease");
        }
    }
}
