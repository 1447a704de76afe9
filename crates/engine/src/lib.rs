//! vixen-engine: the lifecycle engine. It observes the cluster, asks the pure planner what to
//! do, carries the plan out step by step behind interlocks and gates, and journals every step
//! so that a killed agent resumes where it stopped. It reaches the world only through the
//! ports of [`ports`]; the binary wires the real ones, the tests the fakes of [`fake`].
//!
//! ```text
//! repo ─prepare─► Desired + Configs ─┐
//! NodeApi ─observe─► Observed ───────┼─► vixen_plan::plan() ─► Executor ─► NodeApi, KubeGates
//! StateStore ─────► Inventory ───────┘          ▲                  │
//!                                               └──── journal ◄────┘ (resume after a crash)
//! ```

#![warn(missing_docs)]

pub mod adopt;
pub mod backup;
pub mod bootstrap;
pub mod drift;
pub mod error;
pub mod execute;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
#[cfg(any(test, feature = "fake"))]
pub mod fake_backup;
pub mod gates;
pub mod health;
mod interlock;
pub mod journal;
pub mod kube;
pub mod observe;
pub mod ports;
pub mod preflight;
pub mod prepare;
pub mod progress;
pub mod restore;
pub mod talos;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_backup;
#[cfg(test)]
mod tests_k8s;

use vixen_plan::{Desired, Observed, Plan, Refusal};

pub use drift::Drifted;
pub use error::{EngineError, ExecError, KubeError, StepError, StoreError};
pub use execute::{Executor, Timeouts};
pub use journal::{FileStore, Run, State, fingerprint};
pub use kube::{KubeAccess, KubeLink};
pub use ports::{KubeGates, NodeApi, SnapshotSink, SnapshotSource, StateStore};
pub use prepare::{Configs, PrepareError, PrepareOptions, Prepared};
pub use progress::{Progress, Quiet, StepEvent};
pub use talos::Connector;

/// How a reconcile ended. Every variant carries the last observation, for the status.
#[derive(Debug)]
pub enum Outcome {
    /// The cluster matches Git.
    Converged {
        /// Steps carried out by this reconcile.
        steps: usize,
    },
    /// Nothing more can be done now, but some nodes are not as Git wants them, or a step is
    /// not safe yet (a member unhealthy, a node down): the next reconcile goes on.
    Waiting {
        /// Steps carried out.
        steps: usize,
        /// Why, node by node.
        waiting: Vec<String>,
    },
    /// The planner refused the change; nothing was done.
    Refused(Refusal),
    /// A step failed; nothing after it ran.
    Failed {
        /// Steps carried out before the failure.
        steps: usize,
        /// The failure.
        error: ExecError,
    },
}

impl Outcome {
    /// True when the cluster matches Git.
    pub fn converged(&self) -> bool {
        matches!(self, Outcome::Converged { .. })
    }
}

/// A reconcile's outcome and the last look at the cluster it took.
#[derive(Debug)]
pub struct Report {
    /// How it ended.
    pub outcome: Outcome,
    /// The last observation (for the status: no second look needed).
    pub observed: Observed,
    /// The inventory after the run.
    pub inventory: vixen_plan::Inventory,
    /// Nodes found drifted by this reconcile (empty when drift was not checked).
    pub drift: Vec<Drifted>,
}

/// What `vixen plan` shows: the plan the agent would make now, and what it is based on.
#[derive(Debug)]
pub struct Preview {
    /// The plan, or why there is none.
    pub plan: Result<Plan, Refusal>,
    /// The observation it was made from.
    pub observed: Observed,
    /// Drifted nodes (a resync corrects or reports them).
    pub drift: Vec<Drifted>,
    /// Nodes without a record that run exactly their Git config (adopted, as the agent would).
    pub adopted: usize,
    /// Talos' dry-run answer for each config step, by step index (the diff as Talos computes
    /// it); a node that did not answer has none.
    pub dry_runs: std::collections::BTreeMap<usize, Result<String, String>>,
}

/// The engine, on its ports.
pub struct Engine<'a, T, K, S> {
    /// Talos.
    pub talos: &'a T,
    /// Kubernetes.
    pub kube: &'a K,
    /// Inventory and journal.
    pub store: &'a S,
    /// Gate timeouts.
    pub timeouts: Timeouts,
    /// Told about every step.
    pub progress: &'a dyn Progress,
    /// Where the snapshot before a risky plan goes (`None`: no `backup:` in the repo).
    pub backup: Option<&'a dyn SnapshotSink>,
}

impl<T: NodeApi, K: KubeGates, S: StateStore> Engine<'_, T, K, S> {
    fn executor<'b>(
        &'b self,
        desired: &'b Desired,
        configs: &'b Configs,
        decommission: bool,
    ) -> Executor<'b, T, K, S> {
        Executor {
            talos: self.talos,
            kube: self.kube,
            store: self.store,
            configs,
            desired,
            timeouts: self.timeouts.clone(),
            decommission,
            progress: self.progress,
        }
    }

    /// What a resync would do, without acting: observes, checks drift, adopts what runs
    /// exactly its Git config and plans (as [`Engine::resync`] does), then dry-runs every config
    /// step for Talos' own diff. Read-only: dry runs only, and the store is not written.
    ///
    /// # Errors
    /// Only when vixen's own state store cannot be read.
    pub async fn plan_only(
        &self,
        desired: &Desired,
        configs: &Configs,
    ) -> Result<Preview, EngineError> {
        let mut state = self.store.load().await?;
        let mut observed =
            observe::observe(self.talos, self.kube, &desired.nodes, &state.inventory).await;
        let drift = drift::check(
            self.talos,
            desired,
            configs,
            &mut observed,
            &state.inventory,
        )
        .await;
        let adopted = adopt::adopt(
            self.talos,
            desired,
            configs,
            &observed,
            &mut state.inventory,
        )
        .await;
        if let Some(etcd) = &observed.etcd {
            state.inventory.learn_members(etcd);
        }
        let plan = vixen_plan::plan(desired, &observed, &state.inventory);
        let dry_runs = match &plan {
            Ok(p) => preflight::dry_runs(self.talos, p, configs).await,
            Err(_) => Default::default(),
        };
        Ok(Preview {
            plan,
            observed,
            drift,
            adopted,
            dry_runs,
        })
    }

    /// A reconcile that first looks for drift (see [`drift`]): each configured node's rendered
    /// config is dry-run applied, and a node that does not run it any more is corrected by a
    /// normal config step (or only reported, with `drift: report`). The agent resyncs this
    /// way; an idle poll never does.
    ///
    /// # Errors
    /// Only when vixen's own state store cannot be read or written.
    pub async fn resync(
        &self,
        desired: &Desired,
        configs: &Configs,
    ) -> Result<Report, EngineError> {
        self.run(desired, configs, true).await
    }

    /// One full reconcile: resume a journaled plan if one is unfinished for this desired state,
    /// then observe, plan and execute until nothing is left to do (at most a few passes).
    ///
    /// # Errors
    /// Only when vixen's own state store cannot be read or written.
    pub async fn reconcile(
        &self,
        desired: &Desired,
        configs: &Configs,
    ) -> Result<Report, EngineError> {
        self.run(desired, configs, false).await
    }

    async fn run(
        &self,
        desired: &Desired,
        configs: &Configs,
        check_drift: bool,
    ) -> Result<Report, EngineError> {
        let rev = fingerprint(desired);
        let mut state = self.store.load().await?;
        let exec = self.executor(desired, configs, false);
        let mut steps = 0;
        let mut observed = Observed::default();
        let mut drifted = Vec::new();
        let done = |outcome, observed, state: State, drift| {
            Ok(Report {
                outcome,
                observed,
                inventory: state.inventory,
                drift,
            })
        };
        if let Some(run) = &state.run {
            if run.revision == rev && run.done < run.plan.steps.len() {
                tracing::warn!(
                    done = run.done,
                    total = run.plan.steps.len(),
                    "resuming an unfinished plan"
                );
                let before = run.done;
                let result = exec.run(&mut state).await;
                steps += state.run.as_ref().map_or(0, |r| r.done - before);
                if let Err(error) = result {
                    state.run = None;
                    self.store.save(&state).await?;
                    return done(failed(steps, error), observed, state, drifted);
                }
            }
            state.run = None;
            self.store.save(&state).await?;
        }
        for pass in 0..4 {
            observed =
                observe::observe(self.talos, self.kube, &desired.nodes, &state.inventory).await;
            // Drift is looked for once: a corrected node is seen corrected by the next pass.
            if check_drift && pass == 0 {
                drifted = drift::check(
                    self.talos,
                    desired,
                    configs,
                    &mut observed,
                    &state.inventory,
                )
                .await;
            }
            let adopted = adopt::adopt(
                self.talos,
                desired,
                configs,
                &observed,
                &mut state.inventory,
            )
            .await;
            // Member IDs, learned once a control plane's member is listed.
            let learned = observed
                .etcd
                .as_ref()
                .is_some_and(|etcd| state.inventory.learn_members(etcd));
            if adopted > 0 || learned {
                self.store.save(&state).await?;
            }
            let plan = match vixen_plan::plan(desired, &observed, &state.inventory) {
                Ok(plan) => plan,
                Err(refusal) => {
                    return done(Outcome::Refused(refusal), observed, state, drifted);
                }
            };
            if plan.steps.is_empty() {
                state.inventory.kubernetes_version = Some(desired.kubernetes_version.to_string());
                self.store.save(&state).await?;
                let outcome = if plan.waiting.is_empty() {
                    Outcome::Converged { steps }
                } else {
                    Outcome::Waiting {
                        steps,
                        waiting: plan.waiting,
                    }
                };
                return done(outcome, observed, state, drifted);
            }
            for s in &plan.steps {
                tracing::info!(step = %s, "planned");
            }
            // Every new plan (a plan resumed from the journal was checked when it was made).
            if let Some(refusal) = preflight::preflight(self.talos, &plan, configs).await {
                return done(Outcome::Refused(refusal), observed, state, drifted);
            }
            // A fresh snapshot before a risky plan, after the dry runs and before any change.
            if let Some(refusal) = backup::before_risky(
                self.talos,
                self.backup,
                &plan,
                desired,
                &observed,
                &state.inventory,
            )
            .await
            {
                return done(Outcome::Refused(refusal), observed, state, drifted);
            }
            let total = plan.steps.len();
            state.run = Some(Run {
                revision: rev.clone(),
                plan,
                done: 0,
                in_flight: None,
                ..Default::default()
            });
            self.store.save(&state).await?;
            let result = exec.run(&mut state).await;
            let finished = state.run.as_ref().map_or(0, |r| r.done);
            state.run = None;
            self.store.save(&state).await?;
            match result {
                Ok(()) => steps += total,
                Err(error) => {
                    return done(failed(steps + finished, error), observed, state, drifted);
                }
            }
        }
        done(
            Outcome::Waiting {
                steps,
                waiting: vec!["still changing after 4 passes; the next reconcile continues".into()],
            },
            observed,
            state,
            drifted,
        )
    }

    /// What [`Self::decommission`] would do, observed with read-only calls: nothing is changed
    /// on any node and vixen's state is not written (`vixen decommission --dry-run`).
    ///
    /// # Errors
    /// Only when vixen's own state store cannot be read.
    pub async fn decommission_plan(
        &self,
        desired: &Desired,
    ) -> Result<Result<Plan, Refusal>, EngineError> {
        let state = self.store.load().await?;
        let observed =
            observe::observe(self.talos, self.kube, &desired.nodes, &state.inventory).await;
        Ok(vixen_plan::plan_decommission(desired, &observed))
    }

    /// Resets every node of the cluster to maintenance mode (see
    /// [`vixen_plan::plan_decommission`]).
    ///
    /// # Errors
    /// Only when vixen's own state store cannot be read or written.
    pub async fn decommission(
        &self,
        desired: &Desired,
        configs: &Configs,
    ) -> Result<Outcome, EngineError> {
        let mut state = self.store.load().await?;
        let observed =
            observe::observe(self.talos, self.kube, &desired.nodes, &state.inventory).await;
        let plan = match vixen_plan::plan_decommission(desired, &observed) {
            Ok(plan) => plan,
            Err(refusal) => return Ok(Outcome::Refused(refusal)),
        };
        let total = plan.steps.len();
        state.run = Some(Run {
            revision: format!("decommission-{}", fingerprint(desired)),
            plan,
            done: 0,
            in_flight: None,
            ..Default::default()
        });
        self.store.save(&state).await?;
        let result = self.executor(desired, configs, true).run(&mut state).await;
        let finished = state.run.as_ref().map_or(0, |r| r.done);
        state.run = None;
        if result.is_ok() {
            state.inventory.nodes.clear();
        }
        self.store.save(&state).await?;
        Ok(match result {
            Ok(()) => Outcome::Converged { steps: total },
            Err(error) => failed(finished, error),
        })
    }
}

/// A step that was not safe now is a wait, not a failure: the next reconcile tries again.
fn failed(steps: usize, error: ExecError) -> Outcome {
    match &error.source {
        StepError::Unsafe(reason) => Outcome::Waiting {
            steps,
            waiting: vec![format!("{}: {reason}", error.node)],
        },
        _ => Outcome::Failed { steps, error },
    }
}
