//! The agent's state and one reconcile cycle. See the module above for the picture.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;
use vixen_forge::{CommitState, CommitStatus, RetryPolicy, StatusClient, StatusQueue};
use vixen_k8s::{
    CiliumApi, EventRecorder, EventType, Journal, LeaderElector, LeaseConfig, NodeStatus, Phase,
    PushSignal, StatusApi, VixenClusterSpec, VixenClusterStatus,
};

use super::http::{self, Shared};
use super::kube_store::KubeStore;
use super::relay::{self, PUSH_CONFIGMAP, Relay};
use super::secrets::{SecretWatch, watch_files};
use super::steps::{self, Note};
use super::verdict;
use super::{Backoff, Config, KubeOptions, Prepare, read_forge_secret};
use vixen_engine::FileStore;

/// The Kubernetes clients, once a cluster name is known.
pub(super) struct Kube {
    pub(super) client: kube::Client,
    pub(super) opts: KubeOptions,
    pub(super) store: KubeStore,
    pub(super) cilium: CiliumApi,
    /// Status object and Events of the cluster named in the repo.
    pub(super) named: Option<Named>,
    pub(super) status: VixenClusterStatus,
}

/// What is about the cluster named in the repo.
pub(super) struct Named {
    pub(super) cluster: String,
    pub(super) api: StatusApi,
    pub(super) events: Arc<EventRecorder>,
    /// Step Events, posted in order by their own task.
    pub(super) steps: tokio::sync::mpsc::Sender<Note>,
}

/// The running agent.
pub struct Agent {
    pub(super) cfg: Config,
    pub(super) prepare: Prepare,
    pub(super) shutdown: watch::Receiver<bool>,
    pub(super) shared: Arc<Shared>,
    pub(super) leading: watch::Receiver<bool>,
    /// Commit statuses, posted from a bounded queue that never holds up a reconcile.
    pub(super) statuses: Option<StatusQueue>,
    pub(super) kube: Option<Kube>,
    pub(super) secrets: SecretWatch,
    pub(super) file_store: FileStore,
    /// The revision the cluster last fully matched, and when.
    pub(super) applied: Option<(String, Instant)>,
    /// The last revision rejected, and when.
    pub(super) rejected: Option<(String, Instant)>,
    pub(super) backoff: Backoff,
    /// The cluster name (from `cluster.yaml`), once known.
    pub(super) cluster: Option<String>,
    /// Scheduled etcd snapshots.
    pub(super) backups: super::backup::Backups,
    /// Without election this replica always leads; the sender keeps the channel open.
    pub(super) _always: Option<watch::Sender<bool>>,
}

/// How a cycle ended, for the backoff.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Ended {
    /// Nothing to do, or the cluster matches the commit.
    Ok,
    /// Something transient (network, a node, a step): retry with backoff.
    Failed,
    /// The commit itself cannot be applied (invalid, unsigned, refused by the planner, a Cilium
    /// conflict): not retried until a new commit, a changed secret file, or the resync period.
    Rejected,
}

pub(super) fn short(rev: &str) -> &str {
    if rev.len() == 40 { &rev[..12] } else { rev }
}

/// The first line of an error chain, cut (commit descriptions are short).
pub(super) fn first_line(e: &dyn std::fmt::Display) -> String {
    let s = e.to_string();
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .chars()
        .take(200)
        .collect()
}

impl Agent {
    /// Sets up the server, the secret watch, the forge client and Kubernetes.
    ///
    /// # Errors
    /// See [`super::run`].
    pub async fn start(
        cfg: Config,
        prepare: Prepare,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let (leading, kube, always, push) = match &cfg.kube {
            None => {
                let (tx, rx) = watch::channel(true);
                (rx, None, Some(tx), None)
            }
            Some(opts) => {
                let client = kube::Client::try_default().await?;
                let lease = LeaseConfig::new(&opts.namespace, &opts.lease, &opts.identity)
                    .with_duration(opts.lease_duration);
                let tick = lease.renew_every;
                let elector = LeaderElector::new(client.clone(), lease);
                let leading = elector.subscribe();
                tokio::spawn(elector.run(shutdown.clone()));
                let journal = Journal::new(
                    client.clone(),
                    &opts.namespace,
                    &opts.journal,
                    Some(leading.clone()),
                );
                let relay = Relay::new(
                    PushSignal::new(client.clone(), &opts.namespace, PUSH_CONFIGMAP),
                    leading.clone(),
                    &opts.identity,
                );
                let kube = Kube {
                    cilium: CiliumApi::new(client.clone(), opts.pool_version, opts.force_conflicts),
                    store: KubeStore::new(journal),
                    client: client.clone(),
                    opts: opts.clone(),
                    named: None,
                    status: VixenClusterStatus::default(),
                };
                let watcher = PushSignal::new(client, &opts.namespace, PUSH_CONFIGMAP);
                (leading, Some(kube), None, Some((relay, watcher, tick)))
            }
        };
        let (relay, watcher) = match push {
            Some((relay, watcher, tick)) => (Some(relay), Some((watcher, tick))),
            None => (None, None),
        };
        let shared = Arc::new(Shared::new(&cfg.webhook_path, relay));
        if let Some((watcher, tick)) = watcher {
            tokio::spawn(relay::watch(
                watcher,
                leading.clone(),
                tick,
                shared.clone(),
                shutdown.clone(),
            ));
        }
        if let Some(f) = &cfg.webhook_secret_file {
            let secret = super::optional_webhook_secret(f)?;
            if secret.is_none() {
                tracing::info!(file = %f.display(), "no webhook secret (Secret vixen-forge not created?): the webhook is off; Git is polled");
            }
            *shared.webhook_secret.write().await = secret;
        }
        if let Some(addr) = cfg.listen {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            tracing::info!(address = %listener.local_addr()?, "serving /metrics, /healthz, /readyz and webhooks");
            tokio::spawn(http::serve(listener, shared.clone(), shutdown.clone()));
        }
        let mut files = cfg.watch_files.clone();
        if let super::Source::Git { options, .. } = &cfg.source {
            files.extend(options.secret_files());
        }
        files.extend(cfg.webhook_secret_file.clone());
        files.extend(cfg.forge.as_ref().map(|f| f.token_file.clone()));
        let secrets = watch_files(files)?;
        let cluster = cfg.cluster.clone();
        let statuses = match &cfg.forge {
            Some(f) if super::absent(&f.token_file) => {
                tracing::info!(file = %f.token_file.display(), "no forge token (Secret vixen-forge not created?): no commit status is posted");
                None
            }
            Some(f) => Some(status_client(f, cluster.as_deref().unwrap_or_default())?),
            None => None,
        };
        let file_store = FileStore::in_dir(&cfg.state_dir);
        let backoff = Backoff::new(std::time::Duration::from_secs(5), cfg.backoff_max);
        Ok(Self {
            cfg,
            prepare,
            shutdown,
            shared,
            leading,
            statuses,
            kube,
            secrets,
            file_store,
            applied: None,
            rejected: None,
            backoff,
            cluster,
            backups: Default::default(),
            _always: always,
        })
    }

    /// The loop; returns when `shutdown` turns true.
    ///
    /// # Errors
    /// None so far: failures are reported and retried.
    pub async fn run(mut self) -> anyhow::Result<()> {
        loop {
            if *self.shutdown.borrow() {
                return Ok(());
            }
            let delay = if *self.leading.borrow() {
                self.shared.metrics.leader.set(1);
                let mut leading = self.leading.clone();
                let ended = tokio::select! {
                    e = self.cycle() => Some(e),
                    Ok(_) = leading.wait_for(|l| !*l) => None,
                };
                match ended {
                    Some(Ended::Ok) => {
                        self.backoff.reset();
                        self.cfg.interval
                    }
                    Some(Ended::Failed) => self.backoff.fail(),
                    Some(Ended::Rejected) => {
                        self.backoff.reset();
                        self.cfg.interval
                    }
                    None => {
                        tracing::warn!(
                            "lost the lease: the reconcile in progress was stopped; the new leader resumes from the journal"
                        );
                        self.shared.metrics.fail("lease_lost");
                        self.cfg.interval
                    }
                }
            } else {
                self.shared.metrics.leader.set(0);
                self.cfg.interval
            };
            if *self.leading.borrow() {
                self.scheduled_snapshot().await;
            }
            // Wake for the next scheduled snapshot, however long the poll interval.
            let delay = self.backups.until_next().map_or(delay, |until| {
                delay.min(until + std::time::Duration::from_millis(50))
            });
            self.shared.ready.store(true, Ordering::Relaxed);
            let mut shutdown = self.shutdown.clone();
            let mut leading = self.leading.clone();
            let was_leading = *leading.borrow();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.shared.poll_now.notified() => tracing::info!("webhook: polling now"),
                _ = self.secrets.changed.changed() => self.reload().await,
                Ok(_) = leading.wait_for(|l| *l != was_leading) => {}
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }

    async fn reload(&mut self) {
        if let Err(e) = self.cfg.source.reload() {
            tracing::warn!(error = %first_line(&e), "Git credentials not reloaded; keeping the previous ones");
        }
        if let Some(f) = &self.cfg.webhook_secret_file {
            match super::optional_webhook_secret(f) {
                Ok(s) => *self.shared.webhook_secret.write().await = s,
                Err(e) => tracing::warn!(error = %first_line(&e), "webhook secret not reloaded"),
            }
        }
        if let Some(f) = self
            .cfg
            .forge
            .as_ref()
            .filter(|f| !super::absent(&f.token_file))
        {
            match status_client(f, self.cluster.as_deref().unwrap_or_default()) {
                Ok(c) => self.statuses = Some(c),
                Err(e) => tracing::warn!(error = %first_line(&e), "forge token not reloaded"),
            }
        }
        // A new commit is not needed to retry after a key change.
        self.applied = None;
        self.rejected = None;
    }

    pub(super) async fn post(&self, sha: Option<&str>, state: CommitState, description: String) {
        let (Some(client), Some(sha)) = (&self.statuses, sha) else {
            return;
        };
        let label = format!("{state:?}").to_lowercase();
        let status = CommitStatus {
            state,
            description,
            target_url: self.cfg.forge.as_ref().and_then(|f| f.target_url.clone()),
        };
        // Queued, never awaited: a forge answering 500 is retried in the background.
        let result = match client.post(sha, status) {
            Ok(()) => "queued",
            Err(e) => {
                tracing::warn!(error = %e, "commit status not queued");
                "failed"
            }
        };
        self.shared
            .metrics
            .statuses
            .get_or_create(&vec![("state", label), ("result", result.into())])
            .inc();
    }

    /// Updates the status object and publishes an Event (Kubernetes only; failures are logged).
    pub(super) async fn report(
        &mut self,
        phase: Phase,
        reason: &str,
        message: &str,
        revision: Option<&str>,
        nodes: Option<(Vec<NodeStatus>, Option<u32>)>,
    ) {
        let Some(k) = self.kube.as_mut() else { return };
        let Some(Named { api, events, .. }) = &k.named else {
            return;
        };
        let st = &mut k.status;
        st.set_phase(phase, reason, message, Timestamp::now());
        if let Some(r) = revision {
            st.revision = Some(r.to_owned());
            if phase == Phase::Ready {
                st.last_applied_revision = Some(r.to_owned());
            }
        }
        st.leader = Some(k.opts.identity.clone());
        st.last_reconcile_time = Some(Timestamp::now().to_string());
        if let Some((n, etcd)) = nodes {
            st.set_nodes(n);
            st.etcd_members = etcd;
        }
        if let Err(e) = api.write(st).await {
            tracing::warn!(error = %e, "status object not written");
        }
        let kind = if matches!(phase, Phase::Failed | Phase::Refused | Phase::Error) {
            EventType::Warning
        } else {
            EventType::Normal
        };
        if let Err(e) = events.publish(kind, reason, "Reconcile", message).await {
            tracing::debug!(error = %e, "event not published");
        }
    }

    async fn name_cluster(&mut self, cluster: &str) {
        let source = self.cfg.source_label.clone();
        let Some(k) = self.kube.as_mut() else { return };
        if k.named.as_ref().is_some_and(|n| n.cluster == cluster) {
            return;
        }
        let api = StatusApi::new(k.client.clone(), &k.opts.namespace, cluster);
        if let Err(e) = api
            .ensure(&VixenClusterSpec {
                source,
                cluster: cluster.to_owned(),
            })
            .await
        {
            tracing::warn!(error = %e, "status object not created");
        }
        if let Ok(Some(obj)) = api.get().await {
            k.status = obj.status.unwrap_or_default();
        }
        let regarding = ObjectReference {
            api_version: Some("vixen.dev/v1alpha1".into()),
            kind: Some("VixenCluster".into()),
            name: Some(cluster.into()),
            namespace: Some(k.opts.namespace.clone()),
            ..ObjectReference::default()
        };
        let events = Arc::new(EventRecorder::new(
            k.client.clone(),
            &k.opts.namespace,
            regarding,
            &k.opts.identity,
        ));
        let steps = steps::spawn_poster(events.clone(), self.shared.clone());
        k.named = Some(Named {
            cluster: cluster.to_owned(),
            api,
            events,
            steps,
        });
    }

    /// Points commit statuses at `vixen/<cluster>`.
    fn use_cluster(&mut self, cluster: &str) {
        if self.cluster.as_deref() == Some(cluster) {
            return;
        }
        self.cluster = Some(cluster.to_owned());
        if let Some(f) = self
            .cfg
            .forge
            .as_ref()
            .filter(|f| !super::absent(&f.token_file))
        {
            match status_client(f, cluster) {
                Ok(c) => self.statuses = Some(c),
                Err(e) => {
                    tracing::warn!(error = %first_line(&e), "commit status client not rebuilt")
                }
            }
        }
    }

    /// One poll, and a reconcile when there is something to do.
    async fn cycle(&mut self) -> Ended {
        let head = match self.cfg.source.poll().await {
            Ok(h) => h,
            Err(e) => {
                self.shared
                    .metrics
                    .polls
                    .get_or_create(&vec![("result", "error".into())])
                    .inc();
                self.shared.metrics.fail(e.category);
                tracing::warn!(error = %e.message, category = e.category, "poll failed");
                return Ended::Failed;
            }
        };
        let settled = |s: &Option<(String, Instant)>| {
            s.as_ref()
                .is_some_and(|(rev, at)| *rev == head && at.elapsed() < self.cfg.resync)
        };
        if settled(&self.applied) || settled(&self.rejected) {
            self.shared
                .metrics
                .polls
                .get_or_create(&vec![("result", "unchanged".into())])
                .inc();
            return Ended::Ok;
        }
        self.shared
            .metrics
            .polls
            .get_or_create(&vec![("result", "changed".into())])
            .inc();
        let head_sha = (head.len() == 40).then_some(head.clone());
        let resync = self.applied.as_ref().is_some_and(|(r, _)| *r == head);
        let started = Instant::now();
        let fetched = match self.cfg.source.fetch().await {
            Ok(f) => f,
            Err(e) => {
                self.shared.metrics.fail(e.category);
                tracing::warn!(error = %e.message, category = e.category, "fetch failed");
                let state = if e.commit_at_fault {
                    CommitState::Failure
                } else {
                    CommitState::Error
                };
                self.post(
                    head_sha.as_deref(),
                    state,
                    format!("not applied: {}", e.message),
                )
                .await;
                self.report(Phase::Error, "FetchFailed", &e.message, Some(&head), None)
                    .await;
                if e.commit_at_fault {
                    self.rejected = Some((head, Instant::now()));
                    return Ended::Rejected;
                }
                return Ended::Failed;
            }
        };
        let sha = fetched.commit.clone();
        // The status context names the cluster: read it before saying anything about the commit.
        let checkout = fetched.path.clone();
        if let Ok(Ok(cluster)) = tokio::task::spawn_blocking(move || cluster_name(&checkout)).await
        {
            self.use_cluster(&cluster);
            self.name_cluster(&cluster).await;
        }
        if !resync {
            self.post(
                sha.as_deref(),
                CommitState::Pending,
                format!("vixen started on {}", short(&fetched.revision)),
            )
            .await;
        }
        let prepare = self.prepare.clone();
        let path = fetched.path.clone();
        let prepared = match tokio::task::spawn_blocking(move || prepare(&path)).await {
            Ok(Ok(p)) => p,
            Ok(Err(pe)) => {
                let v = verdict::prepare_verdict(&pe, &fetched.path);
                self.shared.metrics.fail(pe.stage);
                tracing::warn!(error = %verdict::scrub(&format!("{:#}", pe.error), &fetched.path), stage = pe.stage, revision = %fetched.revision, "commit not applied");
                self.post(sha.as_deref(), v.commit_state, v.message.clone())
                    .await;
                self.report(v.phase, v.reason, &v.message, Some(&fetched.revision), None)
                    .await;
                self.rejected = Some((head, Instant::now()));
                return Ended::Rejected;
            }
            Err(e) => {
                self.shared.metrics.fail("internal");
                tracing::error!(error = %e, "prepare panicked");
                return Ended::Failed;
            }
        };
        self.name_cluster(&prepared.cluster).await;
        self.backups.follow(&prepared, &fetched.revision);
        self.report(
            Phase::Reconciling,
            "Progressing",
            &format!("applying {}", short(&fetched.revision)),
            Some(&fetched.revision),
            None,
        )
        .await;
        let ended = self
            .reconcile(&prepared, &fetched.revision, sha.as_deref(), started)
            .await;
        match ended {
            Ended::Ok => self.applied = Some((head, Instant::now())),
            Ended::Rejected => self.rejected = Some((head, Instant::now())),
            Ended::Failed => {}
        }
        ended
    }
}

fn status_client(f: &super::ForgeOptions, cluster: &str) -> anyhow::Result<StatusQueue> {
    let token = read_forge_secret(&f.token_file)?;
    let context = vixen_forge::context_for(if cluster.is_empty() {
        "cluster"
    } else {
        cluster
    });
    // Retries cost the reconcile nothing now: try longer than an inline post could.
    let retry = RetryPolicy {
        max_attempts: 8,
        initial_backoff: std::time::Duration::from_secs(1),
        max_backoff: std::time::Duration::from_secs(60),
        ..RetryPolicy::default()
    };
    let client = StatusClient::new(f.forge, &f.base_url, &f.repo, token, context, retry)?;
    Ok(StatusQueue::start(client, 64))
}

/// The cluster name of a checkout (`cluster.yaml`), without validating the rest.
fn cluster_name(root: &std::path::Path) -> anyhow::Result<String> {
    #[derive(serde::Deserialize)]
    struct Named {
        name: String,
    }
    // Through the repo's sandbox: a symlinked cluster.yaml pointing outside is refused.
    let text = vixen_model::sandbox::Sandbox::open(root)?
        .read_to_string(vixen_model::repo::CLUSTER_FILE)?;
    Ok(serde_yaml_ng::from_str::<Named>(&text)?.name)
}
