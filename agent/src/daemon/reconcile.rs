//! One reconcile of a prepared commit: the CNI's manifests, the engine on the agent's ports
//! (journal, Kubernetes, snapshots), then Cilium's objects, drift, metrics, the commit status
//! and the status object.

use std::time::Instant;

use vixen_engine::{Engine, KubeAccess, KubeLink, Outcome};
use vixen_forge::CommitState;
use vixen_k8s::{NetworkObjects, NodeStatus, Phase};

use super::Prepared;
use super::cycle::{Agent, Ended, Kube, first_line};
use super::drift::DriftReport;
use super::kube_store::AgentStore;
use super::layers::LayerNote;
use super::steps::{self, StepReporter};
use super::verdict;

impl Agent {
    pub(super) async fn reconcile(
        &mut self,
        p: &Prepared,
        revision: &str,
        sha: Option<&str>,
        started: Instant,
    ) -> Ended {
        let store = match &self.kube {
            Some(k) => AgentStore::Kube(&k.store),
            None => AgentStore::File(&self.file_store),
        };
        // In the cluster, drains and readiness gates go through the agent's own client.
        let access = match &self.kube {
            Some(k) => KubeAccess::Client(k.client.clone()),
            None => p.kube.clone(),
        };
        let kube = KubeLink::new(access, p.conn.clone());
        // The CNI, addons and GitOps handover first; the engine's interlock holds disruptions
        // while the CNI rolls out.
        let layers = self.apply_layers(p, &kube).await;
        let backup = self.backup_port(p, revision).await;
        let progress = StepReporter::new(
            &self.shared.metrics,
            self.kube
                .as_ref()
                .and_then(|k| k.named.as_ref())
                .map(|n| n.steps.clone()),
        )
        .with_pending(self.statuses.as_ref().zip(sha).map(|(queue, sha)| {
            steps::PendingStatus {
                queue,
                sha: sha.to_owned(),
                target_url: self.cfg.forge.as_ref().and_then(|f| f.target_url.clone()),
            }
        }));
        let engine = Engine {
            talos: &p.conn,
            kube: &kube,
            store: &store,
            timeouts: self.cfg.timeouts.clone(),
            progress: &progress,
            backup: backup
                .as_ref()
                .map(|b| b as &dyn vixen_engine::SnapshotSink),
        };
        // Every reconcile the agent runs (a new commit, a retry, a resync) first looks for
        // drift with a dry run per node; an idle poll never gets here.
        let report = engine.resync(&p.desired, &p.configs).await;
        let drift = match &report {
            Ok(r) => r.drift.clone(),
            Err(_) => Vec::new(),
        };
        let observed = match &report {
            Ok(r) => r.observed.clone(),
            Err(_) => vixen_plan::Observed::default(),
        };
        let outcome = report.map(|r| r.outcome);
        let v = verdict::verdict(&outcome, revision);
        if let Some(category) = v.failure {
            self.shared.metrics.fail(category);
        }
        let verdict::Verdict {
            label,
            phase,
            commit_state: state,
            reason,
            mut message,
            ..
        } = v;
        let mut state = state;
        let mut phase = phase;
        let mut rejected = matches!(outcome, Ok(Outcome::Refused(_)));
        for note in layers {
            match note {
                LayerNote::Applied(summary) => message.push_str(&format!("; {summary}")),
                LayerNote::Failed {
                    category,
                    message: why,
                } => {
                    self.shared.metrics.fail(category);
                    message.push_str(&format!("; {why}"));
                    state = CommitState::Error;
                    phase = Phase::Error;
                }
            }
        }
        if matches!(
            outcome,
            Ok(Outcome::Converged { .. } | Outcome::Waiting { .. })
        ) && let Some(k) = &self.kube
        {
            match k
                .cilium
                .apply(&NetworkObjects::from_network(
                    &p.network,
                    k.opts.pool_version,
                ))
                .await
            {
                Ok(r) => {
                    message.push_str(&format!("; {}", r.summary()));
                    if !r.conflicts.is_empty() {
                        self.shared.metrics.fail("cilium_conflict");
                        state = CommitState::Failure;
                        phase = Phase::Failed;
                        rejected = true;
                    }
                }
                Err(e) => {
                    self.shared.metrics.fail(e.category());
                    message.push_str(&format!("; Cilium objects not applied: {}", first_line(&e)));
                    state = CommitState::Error;
                    phase = Phase::Error;
                }
            }
        }
        if let Ok(o) = &outcome {
            let kube = self.kube.as_mut().and_then(|k| {
                let Kube { status, named, .. } = k;
                named.as_ref().map(|n| (status, n.events.as_ref()))
            });
            let report = DriftReport {
                drift: &drift,
                policy: p.desired.drift,
                converged: o.converged(),
            };
            report
                .publish(&self.shared.metrics, kube, &mut message)
                .await;
        }
        self.shared
            .metrics
            .reconcile_duration
            .get_or_create(&vec![("outcome", label.into())])
            .observe(started.elapsed().as_secs_f64());
        let nodes: Vec<NodeStatus> = p
            .desired
            .nodes
            .iter()
            .map(|d| {
                let o = observed.node(&d.name);
                let st = match o.map(|o| (o.state, o.healthy)) {
                    Some((vixen_plan::NodeState::Configured, true)) => "ready",
                    Some((vixen_plan::NodeState::Configured, false)) => "unhealthy",
                    Some((vixen_plan::NodeState::Maintenance, _)) => "maintenance",
                    _ => "unreachable",
                };
                NodeStatus {
                    name: d.name.clone(),
                    role: d.role.to_string(),
                    version: o.and_then(|o| o.talos_version.as_ref().map(ToString::to_string)),
                    state: st.into(),
                }
            })
            .collect();
        self.shared.metrics.set_nodes(
            &nodes
                .iter()
                .map(|n| {
                    (
                        n.state.clone(),
                        n.version.clone().unwrap_or_else(|| "unknown".into()),
                    )
                })
                .collect::<Vec<_>>(),
        );
        let etcd = observed.etcd.as_ref().map(|e| e.members.len() as u32);
        self.shared
            .metrics
            .etcd_members
            .set(i64::from(etcd.unwrap_or(0)));
        if phase == Phase::Ready {
            self.shared.metrics.applied(revision);
            tracing::info!(%revision, %message, "cluster matches Git");
        } else {
            tracing::warn!(%revision, %message, outcome = label, "reconcile did not converge");
        }
        if let Some(port) = &backup {
            self.note_backup(port, false).await;
        }
        self.post(sha, state, message.clone()).await;
        self.report(phase, reason, &message, Some(revision), Some((nodes, etcd)))
            .await;
        if phase == Phase::Ready {
            Ended::Ok
        } else if rejected {
            Ended::Rejected
        } else {
            Ended::Failed
        }
    }
}
