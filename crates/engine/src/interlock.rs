//! The interlocks the executor checks before every step, whatever the plan says, against a
//! fresh look at etcd (see [`crate::execute`]): no reset of a node in Git with its role, no
//! reset of an etcd member, no disruption that breaks the health rule of [`crate::health`], and
//! no more workers down at once than `upgrade.workerConcurrency`.

use vixen_plan::{Action, Disruption, Step};

use crate::error::{KubeError, StepError};
use crate::execute::Executor;
use crate::gates::control_plane_addresses;
use crate::health::{etcd_health, workers_down};
use crate::journal::State;
use crate::ports::{KubeGates, NodeApi, StateStore};

impl<T: NodeApi, K: KubeGates, S: StateStore> Executor<'_, T, K, S> {
    pub(crate) async fn interlocks(&self, step: &Step, state: &State) -> Result<(), StepError> {
        let in_git = self.desired.nodes.iter().find(|n| n.name == step.node);
        let role_change = matches!((state.inventory.node(&step.node), in_git), (Some(i), Some(w)) if i.role != w.role);
        if let Action::Reset { .. } = step.action
            && in_git.is_some()
            && !role_change
            && !self.decommission
        {
            return Err(StepError::Interlock(format!(
                "{} is in Git with the same role: it is never reset",
                step.node
            )));
        }
        let how = match step.action {
            Action::CheckUpgradeSafe => Disruption::Node,
            _ => step.action.class().disrupts,
        };
        if how == Disruption::None {
            return Ok(());
        }
        self.network_allows(step, state).await?;
        if !self.is_control_plane(&step.node, &state.inventory) {
            return match how {
                Disruption::Node => self.workers_allow(step, state).await,
                _ => Ok(()),
            };
        }
        let cps = control_plane_addresses(self.desired, &state.inventory);
        let hostnames = |name: &str| self.addresses_of_hostname(name, &state.inventory);
        let health = etcd_health(self.talos, &cps, hostnames)
            .await
            .ok_or_else(|| {
                StepError::Unsafe("no control plane answers with an etcd member list".into())
            })?;
        let hostname = self.hostname(&step.node, &state.inventory);
        let addresses = self.addresses(&step.node, &state.inventory);
        let target = match &step.action {
            Action::RemoveMember { member_id, .. } => {
                health.members.iter().find(|m| m.id == *member_id)
            }
            // By the member ID recorded when it joined, then by peer URL and hostname.
            _ => state
                .inventory
                .node(&step.node)
                .and_then(|n| n.member_id)
                .and_then(|id| health.members.iter().find(|m| m.id == id))
                .or_else(|| health.member_of(&hostname, &addresses)),
        };
        if let Action::Reset { .. } = step.action {
            let last = health.members.len() == 1;
            return match target {
                Some(_) if self.decommission && last => Ok(()),
                Some(_) => Err(StepError::Interlock(format!(
                    "{} is still an etcd member: it must leave etcd before it is reset",
                    step.node
                ))),
                None => Ok(()),
            };
        }
        let what = format!("{} {}", verb(&step.action), step.node);
        if self.decommission && how == Disruption::Member && health.members.len() == 1 {
            return Ok(());
        }
        match health.refuse(target.map(|m| m.id), how, &what) {
            Some(reason) => Err(StepError::Unsafe(reason)),
            None => Ok(()),
        }
    }

    /// The CNI rule: while the CNI's DaemonSet rolls out (vixen just applied new manifests), no
    /// node is disrupted; a node taken down then could lose its networking for good. Without an
    /// answering API the rule cannot be checked and the other gates decide, as for drains.
    async fn network_allows(&self, step: &Step, state: &State) -> Result<(), StepError> {
        let Some(ds) = &self.desired.network_rollout else {
            return Ok(());
        };
        let cps = control_plane_addresses(self.desired, &state.inventory);
        let progress = match self.kube.daemonset_progress(&cps, ds).await {
            Ok(Some(p)) => p,
            Ok(None) | Err(KubeError::NoApi) => return Ok(()),
            Err(e) => {
                return Err(StepError::Unsafe(format!(
                    "the CNI's rollout cannot be read (DaemonSet {ds}: {e}); {} {} waits",
                    verb(&step.action),
                    step.node
                )));
            }
        };
        let not_ready = self
            .kube
            .view(&cps)
            .await
            .map_or(0, |v| v.nodes.iter().filter(|n| !n.ready).count() as i32);
        match progress.unfinished(not_ready) {
            None => Ok(()),
            Some(why) => Err(StepError::Unsafe(format!(
                "the CNI is rolling out (DaemonSet {ds}: {why}); {} {} waits until it has",
                verb(&step.action),
                step.node
            ))),
        }
    }

    /// The worker rule: a worker in Git is disrupted only while fewer than
    /// `upgrade.workerConcurrency` other workers are down.
    async fn workers_allow(&self, step: &Step, state: &State) -> Result<(), StepError> {
        if !self.desired.nodes.iter().any(|n| n.name == step.node) {
            return Ok(());
        }
        let cps = control_plane_addresses(self.desired, &state.inventory);
        let down = workers_down(
            self.talos,
            self.kube,
            self.desired,
            &state.inventory,
            &cps,
            &step.node,
        )
        .await;
        let limit = self.desired.worker_concurrency.max(1) as usize;
        if down.len() < limit {
            return Ok(());
        }
        Err(StepError::Unsafe(format!(
            "{} {} down; {} {} now would take {} workers down at once (upgrade.workerConcurrency: {limit})",
            down.join(", "),
            if down.len() == 1 { "is" } else { "are" },
            verb(&step.action),
            step.node,
            down.len() + 1
        )))
    }
}

/// The verb of a disrupting action, for interlock messages.
fn verb(action: &Action) -> &'static str {
    match action {
        Action::Upgrade { .. } => "upgrading",
        Action::Reset { .. } => "resetting",
        Action::LeaveEtcd => "removing the member of",
        Action::RemoveMember { .. } => "removing the member of",
        _ => "rebooting",
    }
}
