//! The lifecycle engine: load the repo, observe the cluster, plan, execute, journal.
//!
//! ```text
//! repo ─validate─► Desired ─┐
//! nodes ─observe─► Observed ├─► plan() ─► Executor ─► nodes
//! store ─────────► Inventory┘      ▲          │
//!                                  └─ journal ◄┘ (resume after a crash)
//! ```

pub mod bootstrap;
pub mod desired;
pub mod execute;
pub mod kube;
pub mod observe;
pub mod progress;
pub mod store;

use std::path::Path;

use vixen_plan::{Desired, Plan, Refusal};

pub use execute::{ExecError, Executor, Timeouts};
pub use kube::KubeAccess;
pub use observe::Connector;
pub use progress::{Progress, Quiet, StepEvent};
pub use store::{FileStore, Run, State, StateStore};

/// How a reconcile ended.
#[derive(Debug)]
pub enum Outcome {
    /// The cluster matches Git.
    Converged {
        /// Steps carried out by this reconcile.
        steps: usize,
    },
    /// Nothing more can be done now, but some nodes are not as Git wants them.
    Waiting {
        /// Steps carried out.
        steps: usize,
        /// Why each waiting node waits.
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

/// A fingerprint of the desired state: a journaled plan is only resumed for the same one.
pub fn revision(desired: &Desired) -> String {
    let mut text = format!(
        "{}|{}|{}|{}",
        desired.talos_version,
        desired.installer_image,
        desired.kubernetes_version,
        desired.reset_on_removal
    );
    for n in &desired.nodes {
        text.push_str(&format!(
            "|{}:{}:{}:{}:{}",
            n.name,
            n.role,
            n.maintenance_address,
            n.management_addresses.join(","),
            n.config.whole
        ));
    }
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Observes and plans, without acting.
///
/// # Errors
/// The planner's refusal.
pub async fn plan_only(
    conn: &Connector,
    desired: &Desired,
    store: &dyn StateStore,
) -> anyhow::Result<Result<Plan, Refusal>> {
    let state = store.load()?;
    let observed = observe::observe(conn, &desired.nodes, &state.inventory).await;
    Ok(vixen_plan::plan(desired, &observed, &state.inventory))
}

/// One full reconcile: resume a journaled plan if one is unfinished for this desired state,
/// then observe, plan and execute until nothing is left to do (at most a few passes).
///
/// # Errors
/// Only when vixen's own state store cannot be read or written.
pub async fn reconcile(
    conn: &Connector,
    desired: &Desired,
    configs: &desired::Configs,
    store: &dyn StateStore,
    timeouts: Timeouts,
    progress: &dyn Progress,
) -> anyhow::Result<Outcome> {
    let rev = revision(desired);
    let mut state = store.load()?;
    let exec = Executor {
        conn,
        configs,
        desired,
        store,
        timeouts,
        decommission: false,
        progress,
    };
    let mut steps = 0;
    if let Some(run) = &state.run {
        if run.revision == rev && run.done < run.plan.steps.len() {
            tracing::warn!(
                done = run.done,
                total = run.plan.steps.len(),
                "resuming an unfinished plan"
            );
            let before = run.done;
            match exec.run(&mut state).await {
                Ok(()) => steps += state.run.as_ref().map_or(0, |r| r.done - before),
                Err(error) => {
                    state.run = None;
                    store.save(&state)?;
                    return Ok(Outcome::Failed { steps, error });
                }
            }
        }
        state.run = None;
        store.save(&state)?;
    }
    for _pass in 0..4 {
        let observed = observe::observe(conn, &desired.nodes, &state.inventory).await;
        if adopt(conn, desired, configs, &observed, &mut state.inventory).await > 0 {
            store.save(&state)?;
        }
        let plan = match vixen_plan::plan(desired, &observed, &state.inventory) {
            Ok(plan) => plan,
            Err(refusal) => return Ok(Outcome::Refused(refusal)),
        };
        if plan.steps.is_empty() {
            state.inventory.kubernetes_version = Some(desired.kubernetes_version.to_string());
            store.save(&state)?;
            return Ok(if plan.waiting.is_empty() {
                Outcome::Converged { steps }
            } else {
                Outcome::Waiting {
                    steps,
                    waiting: plan.waiting,
                }
            });
        }
        for s in &plan.steps {
            tracing::info!(step = %s, "planned");
        }
        let total = plan.steps.len();
        state.run = Some(Run {
            revision: rev.clone(),
            plan,
            done: 0,
            in_flight: None,
        });
        store.save(&state)?;
        let result = exec.run(&mut state).await;
        let done = state.run.as_ref().map_or(0, |r| r.done);
        state.run = None;
        store.save(&state)?;
        match result {
            Ok(()) => steps += total,
            Err(error) => {
                return Ok(Outcome::Failed {
                    steps: steps + done,
                    error,
                });
            }
        }
    }
    Ok(Outcome::Waiting {
        steps,
        waiting: vec!["still changing after 4 passes; the next reconcile continues".into()],
    })
}

/// Re-learns nodes vixen has no record of (a lost journal; a new in-cluster agent taking over
/// from `vixen bootstrap` on a laptop): a configured node whose running config is exactly the
/// rendered one, as a dry-run apply tells (Talos' dry-run summary says "No changes."), is
/// recorded as applied, so it is not re-applied, let alone rebooted. Returns how many.
async fn adopt(
    conn: &Connector,
    desired: &Desired,
    configs: &desired::Configs,
    observed: &vixen_plan::Observed,
    inventory: &mut vixen_plan::Inventory,
) -> usize {
    let mut adopted = 0;
    for d in &desired.nodes {
        let known = inventory
            .nodes
            .iter()
            .any(|i| i.name == d.name || i.maintenance_address == d.maintenance_address);
        let Some(o) = observed
            .node(&d.name)
            .filter(|o| o.state == vixen_plan::NodeState::Configured)
        else {
            continue;
        };
        let Some(config) = configs.get(&d.name) else {
            continue;
        };
        if known {
            continue;
        }
        let Ok(client) = conn.node(&o.address) else {
            continue;
        };
        match client
            .apply_configuration(config.as_bytes(), vixen_talos::ApplyMode::Auto, true, None)
            .await
        {
            Ok(outcome) if outcome.mode_details.contains("No changes.") => {
                tracing::info!(node = %d.name, address = %o.address, "no record of this node, but it runs exactly its config from Git: adopted");
                inventory.nodes.push(vixen_plan::InventoryNode {
                    name: d.name.clone(),
                    hostname: d.hostname.clone(),
                    role: d.role,
                    maintenance_address: d.maintenance_address.clone(),
                    address: o.address.clone(),
                    config: d.config.clone(),
                });
                adopted += 1;
            }
            Ok(_) => {
                tracing::info!(node = %d.name, "no record of this node and its config differs from Git: it is applied")
            }
            Err(e) => tracing::debug!(node = %d.name, error = %e, "dry run for adoption"),
        }
    }
    adopted
}

/// Resets every node of the cluster to maintenance mode (see [`vixen_plan::plan_decommission`]).
///
/// # Errors
/// Only when vixen's own state store cannot be read or written.
pub async fn decommission(
    conn: &Connector,
    desired: &Desired,
    configs: &desired::Configs,
    store: &dyn StateStore,
    timeouts: Timeouts,
    progress: &dyn Progress,
) -> anyhow::Result<Outcome> {
    let mut state = store.load()?;
    let observed = observe::observe(conn, &desired.nodes, &state.inventory).await;
    let plan = match vixen_plan::plan_decommission(desired, &observed) {
        Ok(plan) => plan,
        Err(refusal) => return Ok(Outcome::Refused(refusal)),
    };
    let total = plan.steps.len();
    state.run = Some(Run {
        revision: format!("decommission-{}", revision(desired)),
        plan,
        done: 0,
        in_flight: None,
    });
    store.save(&state)?;
    let exec = Executor {
        conn,
        configs,
        desired,
        store,
        timeouts,
        decommission: true,
        progress,
    };
    let result = exec.run(&mut state).await;
    let done = state.run.as_ref().map_or(0, |r| r.done);
    state.run = None;
    if result.is_ok() {
        state.inventory.nodes.clear();
    }
    store.save(&state)?;
    Ok(match result {
        Ok(()) => Outcome::Converged { steps: total },
        Err(error) => Outcome::Failed { steps: done, error },
    })
}

/// The state file used by `--lab LABDIR` or `--state DIR`.
pub fn file_store(dir: &Path) -> FileStore {
    FileStore::new(dir.join("state.json"))
}
