//! Runs a plan step by step. Deciding is the planner's; this module acts, checks its interlocks
//! before every dangerous step whatever the plan says, journals each step before and after it
//! runs, and stops at the first failure.
//!
//! Interlocks (checked against a fresh look at etcd, not the plan's assumptions):
//! - a reset targets only a node that left Git or changes role;
//! - a step that takes a control plane down needs every other voting member started, and never
//!   runs with exactly 2 members (one member's loss would leave no quorum);
//! - Bootstrap is never part of a plan: the executor has no way to call it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use vixen_plan::{Action, ApplyMode, Desired, Inventory, InventoryNode, Plan, Role, Step};
use vixen_talos::ApplyMode as WireMode;

use super::desired::Configs;
use super::observe::{Connector, etcd_view, probe_configured, probe_maintenance};
use super::progress::{Progress, StepEvent};
use super::store::{Run, State, StateStore};

/// How long the gates wait.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// A node coming back from a reboot, install or upgrade.
    pub ready: Duration,
    /// An etcd member joining and being promoted.
    pub member: Duration,
    /// A node going back to maintenance mode.
    pub maintenance: Duration,
    /// Draining a Node (PodDisruptionBudgets may hold evictions back).
    pub drain: Duration,
    /// Between two polls.
    pub poll: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            ready: Duration::from_secs(600),
            member: Duration::from_secs(300),
            maintenance: Duration::from_secs(600),
            drain: Duration::from_secs(600),
            poll: Duration::from_millis(250),
        }
    }
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StepError {
    /// An interlock refused the step.
    #[error("refused by interlock: {0}")]
    Interlock(String),
    /// A gate did not open in time.
    #[error("gave up waiting: {0}")]
    Gate(String),
    /// The node refused or failed the call.
    #[error(transparent)]
    Talos(#[from] vixen_talos::Error),
    /// vixen's own state could not be saved.
    #[error("state store: {0}")]
    Store(String),
    /// The Kubernetes API refused or failed a call (a drain that ran out of time included).
    #[error(transparent)]
    Kube(#[from] vixen_k8s::Error),
}

impl StepError {
    /// A fixed label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            StepError::Interlock(_) => "interlock",
            StepError::Gate(_) => "gate",
            StepError::Talos(e) => e.category(),
            StepError::Store(_) => "store",
            StepError::Kube(e) => e.category(),
        }
    }
}

/// A failed run: which step, and why.
#[derive(Debug, thiserror::Error)]
#[error("step {index} ({node}: {action}) failed: {source}")]
pub struct ExecError {
    /// Step index.
    pub index: usize,
    /// Node.
    pub node: String,
    /// The step, as text.
    pub action: String,
    /// Why.
    #[source]
    pub source: StepError,
}

/// Runs plans against real (or lab) nodes.
pub struct Executor<'a> {
    /// Clients.
    pub conn: &'a Connector,
    /// Rendered configs by node name.
    pub configs: &'a Configs,
    /// The desired state the plan was made for.
    pub desired: &'a Desired,
    /// Where progress is journaled.
    pub store: &'a dyn StateStore,
    /// Gate timeouts.
    pub timeouts: Timeouts,
    /// `vixen decommission --confirm`: every node may be reset, the last etcd member with it.
    pub decommission: bool,
    /// Told about every step.
    pub progress: &'a dyn Progress,
}

impl Executor<'_> {
    /// Runs `state.run`'s plan from its first unfinished step, journaling as it goes.
    ///
    /// # Errors
    /// [`ExecError`] for the first step that fails; nothing after it runs.
    pub async fn run(&self, state: &mut State) -> Result<(), ExecError> {
        let Some(run) = state.run.clone() else {
            return Ok(());
        };
        let wanted: BTreeSet<&str> = self.desired.nodes.iter().map(|n| n.name.as_str()).collect();
        // Nodes that Talos said it reboots (the ApplyConfiguration answer names the mode it
        // used): their next readiness gate must first see them go down.
        let mut rebooting: BTreeSet<String> = BTreeSet::new();
        for index in run.done..run.plan.steps.len() {
            let step = &run.plan.steps[index];
            let fail = |source: StepError| {
                self.progress
                    .step(index, step, StepEvent::Failed { error: &source });
                ExecError {
                    index,
                    node: step.node.clone(),
                    action: step.action_text(),
                    source,
                }
            };
            // A fire-once step that was in flight when the agent died is not sent again: its
            // gate (the next step) finds out whether it took.
            let resumed = run.in_flight == Some(index) && fire_once(&step.action);
            if !resumed {
                self.interlocks(step, &run.plan, &wanted, state)
                    .await
                    .map_err(fail)?;
                self.journal(state, |r| r.in_flight = Some(index))
                    .map_err(fail)?;
                tracing::info!(node = %step.node, step = index, action = %step.action_text(), reason = %step.reason, "step started");
                self.progress.step(index, step, StepEvent::Started);
                let started = Instant::now();
                self.act(step, &mut rebooting).await.map_err(fail)?;
                tracing::info!(node = %step.node, step = index, elapsed_ms = started.elapsed().as_millis() as u64, "step done");
                self.progress.step(
                    index,
                    step,
                    StepEvent::Done {
                        elapsed: started.elapsed(),
                    },
                );
            } else {
                tracing::warn!(node = %step.node, step = index, "resuming after a crash: not sending this step again");
                self.progress.step(index, step, StepEvent::Resumed);
            }
            record(&mut state.inventory, step, self.desired);
            self.journal(state, |r| {
                r.done = index + 1;
                r.in_flight = None;
            })
            .map_err(fail)?;
        }
        Ok(())
    }

    fn journal(&self, state: &mut State, f: impl FnOnce(&mut Run)) -> Result<(), StepError> {
        if let Some(run) = state.run.as_mut() {
            f(run);
        }
        self.store
            .save(state)
            .map_err(|e| StepError::Store(e.to_string()))
    }

    async fn interlocks(
        &self,
        step: &Step,
        plan: &Plan,
        wanted: &BTreeSet<&str>,
        state: &State,
    ) -> Result<(), StepError> {
        let role_change = |name: &str| {
            let inv = state.inventory.node(name);
            let want = self.desired.nodes.iter().find(|n| n.name == name);
            matches!((inv, want), (Some(i), Some(w)) if i.role != w.role)
        };
        if let Action::Reset { .. } = step.action
            && wanted.contains(step.node.as_str())
            && !role_change(&step.node)
            && !self.decommission
        {
            return Err(StepError::Interlock(format!(
                "{} is in Git with the same role: it is never reset",
                step.node
            )));
        }
        let disrupts_cp = match &step.action {
            Action::Upgrade { .. } | Action::Reset { .. } => {
                self.is_control_plane(&step.node, state)
            }
            Action::ApplyConfig {
                mode: ApplyMode::Reboot,
                ..
            } => self.is_control_plane(&step.node, state),
            _ => false,
        };
        if disrupts_cp {
            let view = self.any_etcd(plan, state).await.ok_or_else(|| {
                StepError::Interlock("no control plane answers with an etcd member list".into())
            })?;
            let voters: Vec<_> = view.voters().collect();
            let leaving_member = matches!(step.action, Action::Reset { .. });
            if !leaving_member {
                if voters.len() == 2 {
                    return Err(StepError::Interlock(
                        "etcd has exactly 2 members: taking one down would lose quorum".into(),
                    ));
                }
                if let Some(m) = view.members.iter().find(|m| !m.started || m.is_learner) {
                    return Err(StepError::Interlock(format!(
                        "etcd member {} is not started or still a learner",
                        m.name
                    )));
                }
            } else if voters
                .iter()
                .any(|m| m.name == self.hostname(&step.node, state))
                && !(self.decommission && voters.len() == 1)
            {
                return Err(StepError::Interlock(format!(
                    "{} is still an etcd member: it must leave etcd before it is reset",
                    step.node
                )));
            }
        }
        Ok(())
    }

    fn is_control_plane(&self, node: &str, state: &State) -> bool {
        state.inventory.node(node).map(|n| n.role).or_else(|| {
            self.desired
                .nodes
                .iter()
                .find(|n| n.name == node)
                .map(|n| n.role)
        }) == Some(Role::Controlplane)
    }

    fn hostname(&self, node: &str, state: &State) -> String {
        state
            .inventory
            .node(node)
            .map(|n| n.hostname.clone())
            .or_else(|| {
                self.desired
                    .nodes
                    .iter()
                    .find(|n| n.name == node)
                    .map(|n| n.hostname.clone())
            })
            .unwrap_or_else(|| node.to_string())
    }

    /// The address of `node`: its desired management address, else where vixen last reached it.
    fn address(&self, node: &str, state_inventory: Option<&Inventory>) -> String {
        if let Some(d) = self.desired.nodes.iter().find(|n| n.name == node) {
            return d.address().to_string();
        }
        state_inventory
            .and_then(|i| i.node(node))
            .map_or_else(|| node.to_string(), |n| n.address.clone())
    }

    async fn any_etcd(&self, _plan: &Plan, state: &State) -> Option<vixen_plan::EtcdView> {
        let mut candidates: Vec<String> = self
            .desired
            .nodes
            .iter()
            .filter(|n| n.role == Role::Controlplane)
            .flat_map(|n| n.management_addresses.clone())
            .collect();
        candidates.extend(
            state
                .inventory
                .nodes
                .iter()
                .filter(|n| n.role == Role::Controlplane)
                .map(|n| n.address.clone()),
        );
        for a in candidates {
            if let Some(v) = etcd_view(self.conn, &a).await {
                return Some(v);
            }
        }
        None
    }

    async fn act(&self, step: &Step, rebooting: &mut BTreeSet<String>) -> Result<(), StepError> {
        let inv = self.store.load().ok().map(|s| s.inventory);
        match &step.action {
            Action::ApplyConfig {
                mode,
                address,
                maintenance,
            } => {
                let config = self.configs.get(&step.node).ok_or_else(|| {
                    StepError::Interlock(format!("no rendered config for {}", step.node))
                })?;
                let client = if *maintenance {
                    self.conn.maintenance(address, &self.conn.act)?
                } else {
                    self.conn.node(address)?
                };
                let wire = match mode {
                    ApplyMode::Auto => WireMode::Auto,
                    ApplyMode::NoReboot => WireMode::NoReboot,
                    ApplyMode::Reboot => WireMode::Reboot,
                };
                let outcome = client
                    .apply_configuration(config.as_bytes(), wire, false, None)
                    .await?;
                // A configured node answers, then reboots: until it has gone down, it still
                // looks healthy on its old boot. (A node in maintenance mode comes back at
                // another address, which cannot answer before its reboot.)
                if !*maintenance && outcome.mode == Some(WireMode::Reboot) {
                    rebooting.insert(step.node.clone());
                }
            }
            Action::WaitReady { address, version } => {
                let want = version
                    .as_deref()
                    .and_then(|v| v.parse::<vixen_plan::Version>().ok());
                let must_go_down = rebooting.remove(&step.node);
                // A node that went down and came back healthy on another version rolled back
                // (Talos' A/B boot after a failed upgrade): fail now rather than at the timeout.
                let seen_down = std::cell::Cell::new(false);
                let rolled_back = std::cell::Cell::new(None);
                if must_go_down {
                    // Looked at often: a short reboot must not slip between two looks.
                    let what = format!("{} going down for its reboot", step.node);
                    self.wait_every(
                        self.timeouts.ready,
                        Duration::from_millis(20),
                        &what,
                        || async { probe_configured(self.conn, address).await.is_none() },
                    )
                    .await?;
                    seen_down.set(true);
                }
                let result = self
                    .wait(
                        self.timeouts.ready,
                        &format!("{} ready at {address}", step.node),
                        || async {
                            match probe_configured(self.conn, address).await {
                                None => {
                                    seen_down.set(true);
                                    false
                                }
                                Some(p)
                                    if want.is_some()
                                        && p.version != want
                                        && p.healthy
                                        && seen_down.get() =>
                                {
                                    rolled_back.set(p.version);
                                    true
                                }
                                Some(p) => p.healthy && (want.is_none() || p.version == want),
                            }
                        },
                    )
                    .await;
                result?;
                if let Some(v) = rolled_back.get() {
                    return Err(StepError::Gate(format!(
                        "{} came back on v{v}, not {}: the upgrade failed and the node rolled back",
                        step.node,
                        version.as_deref().unwrap_or("?")
                    )));
                }
            }
            Action::WaitEtcdMember => {
                let hostname = self
                    .desired
                    .nodes
                    .iter()
                    .find(|n| n.name == step.node)
                    .map_or(step.node.clone(), |n| n.hostname.clone());
                let address = self.address(&step.node, inv.as_ref());
                self.wait(
                    self.timeouts.member,
                    &format!("{hostname} joined etcd, started and promoted"),
                    || async {
                        etcd_view(self.conn, &address).await.is_some_and(|v| {
                            v.member(&hostname)
                                .is_some_and(|m| m.started && !m.is_learner)
                                && v.members.iter().all(|m| m.started && !m.is_learner)
                        })
                    },
                )
                .await?;
            }
            Action::ForfeitLeadership => {
                self.conn
                    .node(&self.address(&step.node, inv.as_ref()))?
                    .etcd_forfeit_leadership()
                    .await?;
            }
            Action::LeaveEtcd => {
                let address = self.address(&step.node, inv.as_ref());
                match self.conn.node(&address)?.etcd_leave_cluster().await {
                    Ok(()) => {}
                    // Its etcd is not running (crashed, or stopped mid-join): the member cannot
                    // leave by itself, so a healthy peer removes it, as for an unreachable node.
                    Err(e) if e.code() == Some(tonic::Code::FailedPrecondition) => {
                        tracing::warn!(node = %step.node, error = %e, "cannot leave etcd by itself; removing its member through a peer");
                        self.remove_through_peer(&step.node, &address, inv.as_ref())
                            .await?;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Action::RemoveMember { member_id, via } => {
                self.conn
                    .node(&self.address(via, inv.as_ref()))?
                    .etcd_remove_member_by_id(*member_id)
                    .await?;
            }
            Action::CheckMembers { expected } => {
                let mut seen = None;
                for d in self
                    .desired
                    .nodes
                    .iter()
                    .filter(|n| n.role == Role::Controlplane)
                {
                    if let Some(v) = etcd_view(self.conn, d.address()).await {
                        seen = Some(v);
                        break;
                    }
                }
                let view = seen.ok_or_else(|| {
                    StepError::Gate("no control plane answers with an etcd member list".into())
                })?;
                let mut names: Vec<String> = view.voters().map(|m| m.name.clone()).collect();
                names.sort();
                if &names != expected {
                    return Err(StepError::Gate(format!(
                        "etcd members are [{}], expected [{}]",
                        names.join(", "),
                        expected.join(", ")
                    )));
                }
            }
            Action::Reset { graceful } => {
                self.conn
                    .node(&self.address(&step.node, inv.as_ref()))?
                    .reset(*graceful, true)
                    .await?;
            }
            Action::WaitMaintenance { address } => {
                self.wait(
                    self.timeouts.maintenance,
                    &format!("{} in maintenance mode at {address}", step.node),
                    || async { probe_maintenance(self.conn, address).await },
                )
                .await?;
            }
            Action::Upgrade { image, .. } => {
                self.conn
                    .node(&self.address(&step.node, inv.as_ref()))?
                    .upgrade(image)
                    .await?;
            }
            Action::CheckUpgradeSafe => {
                let view = etcd_view(self.conn, &self.address(&step.node, inv.as_ref()))
                    .await
                    .ok_or_else(|| StepError::Gate("etcd does not answer".into()))?;
                let voters = view.voters().count();
                if voters == 2 {
                    return Err(StepError::Interlock(
                        "etcd has exactly 2 members: upgrading one would lose quorum".into(),
                    ));
                }
                if let Some(m) = view.members.iter().find(|m| !m.started || m.is_learner) {
                    return Err(StepError::Interlock(format!(
                        "etcd member {} is not started or still a learner",
                        m.name
                    )));
                }
            }
            Action::Drain { node_name } => {
                let report = self
                    .kube(control_plane_addresses(self.desired, inv.as_ref()))
                    .await?
                    .drain(
                        node_name,
                        self.timeouts.drain,
                        self.timeouts.poll.max(Duration::from_secs(1)),
                    )
                    .await?;
                tracing::info!(node = %node_name, evicted = report.evicted.len(), ignored = report.ignored.len(), "drained");
            }
            Action::WaitNodeReady { node_name, version } => {
                let api = self
                    .kube(control_plane_addresses(self.desired, inv.as_ref()))
                    .await?;
                let what = match version {
                    Some(v) => format!("Node {node_name} Ready in Kubernetes on Talos {v}"),
                    None => format!("Node {node_name} Ready in Kubernetes"),
                };
                self.wait(self.timeouts.ready, &what, || async {
                    // The OS image names the Talos version the kubelet last registered with:
                    // a Ready from before the reboot does not count.
                    api.get(node_name).await.ok().flatten().is_some_and(|n| {
                        n.ready
                            && version
                                .as_ref()
                                .is_none_or(|v| n.os_image.contains(&format!("({v})")))
                    })
                })
                .await?;
            }
            Action::Uncordon { node_name } => {
                self.kube(control_plane_addresses(self.desired, inv.as_ref()))
                    .await?
                    .uncordon(node_name)
                    .await?;
            }
            Action::DeleteNode { node_name } => {
                self.kube(control_plane_addresses(self.desired, inv.as_ref()))
                    .await?
                    .delete(node_name)
                    .await?;
            }
            Action::Stabilize { millis } => {
                let address = self.address(&step.node, inv.as_ref());
                let until = Instant::now() + Duration::from_millis(*millis);
                while Instant::now() < until {
                    tokio::time::sleep(
                        self.timeouts
                            .poll
                            .min(until.saturating_duration_since(Instant::now())),
                    )
                    .await;
                    if *millis > 0
                        && !probe_configured(self.conn, &address)
                            .await
                            .is_some_and(|p| p.healthy)
                    {
                        return Err(StepError::Gate(format!(
                            "{} became unhealthy during the stabilization wait",
                            step.node
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// The Kubernetes client for a Kubernetes step.
    async fn kube(&self, control_planes: Vec<String>) -> Result<vixen_k8s::Nodes, StepError> {
        self.conn.kube_nodes(&control_planes).await.ok_or_else(|| {
            StepError::Gate("no Kubernetes API answers (needed for this step)".into())
        })
    }

    /// Removes `node`'s member through another control plane whose etcd answers.
    async fn remove_through_peer(
        &self,
        node: &str,
        node_address: &str,
        inv: Option<&Inventory>,
    ) -> Result<(), StepError> {
        let hostname = inv
            .and_then(|i| i.node(node))
            .map(|n| n.hostname.clone())
            .or_else(|| {
                self.desired
                    .nodes
                    .iter()
                    .find(|n| n.name == node)
                    .map(|n| n.hostname.clone())
            })
            .unwrap_or_else(|| node.to_string());
        let peers = control_plane_addresses(self.desired, inv);
        for peer in peers.iter().filter(|p| p.as_str() != node_address) {
            let Some(view) = etcd_view(self.conn, peer).await else {
                continue;
            };
            let Some(member) = view.member(&hostname) else {
                return Ok(());
            };
            self.conn
                .node(peer)?
                .etcd_remove_member_by_id(member.id)
                .await?;
            return Ok(());
        }
        Err(StepError::Gate(format!(
            "no healthy peer to remove {hostname}'s etcd member through"
        )))
    }

    async fn wait<F, Fut>(&self, limit: Duration, what: &str, check: F) -> Result<(), StepError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        self.wait_every(limit, self.timeouts.poll, what, check)
            .await
    }

    async fn wait_every<F, Fut>(
        &self,
        limit: Duration,
        poll: Duration,
        what: &str,
        mut check: F,
    ) -> Result<(), StepError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let until = Instant::now() + limit;
        loop {
            if check().await {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(StepError::Gate(format!(
                    "{what} (after {}s)",
                    limit.as_secs()
                )));
            }
            tokio::time::sleep(poll).await;
        }
    }
}

/// Control planes' addresses: Git's, then where vixen last reached the ones it configured.
fn control_plane_addresses(desired: &Desired, inv: Option<&Inventory>) -> Vec<String> {
    let mut out: Vec<String> = desired
        .nodes
        .iter()
        .filter(|n| n.role == Role::Controlplane)
        .map(|n| n.address().to_string())
        .collect();
    out.extend(
        inv.into_iter()
            .flat_map(|i| i.nodes.iter())
            .filter(|n| n.role == Role::Controlplane)
            .map(|n| n.address.clone()),
    );
    out
}

/// Steps whose call must not be repeated after a crash (the node may be rebooting from it).
fn fire_once(action: &Action) -> bool {
    matches!(
        action,
        Action::Upgrade { .. }
            | Action::Reset { .. }
            | Action::ApplyConfig {
                mode: ApplyMode::Reboot | ApplyMode::Auto,
                ..
            }
            | Action::LeaveEtcd
            | Action::RemoveMember { .. }
    )
}

/// Updates the inventory after a finished step.
fn record(inventory: &mut Inventory, step: &Step, desired: &Desired) {
    match &step.action {
        Action::ApplyConfig { .. } => {
            if let Some(d) = desired.nodes.iter().find(|n| n.name == step.node) {
                // A rename: the old entry of the same machine goes.
                inventory
                    .nodes
                    .retain(|i| i.name == d.name || i.maintenance_address != d.maintenance_address);
                let entry = InventoryNode {
                    name: d.name.clone(),
                    hostname: d.hostname.clone(),
                    role: d.role,
                    maintenance_address: d.maintenance_address.clone(),
                    address: d.address().to_string(),
                    config: d.config.clone(),
                };
                match inventory.nodes.iter_mut().find(|i| i.name == d.name) {
                    Some(i) => *i = entry,
                    None => inventory.nodes.push(entry),
                }
            }
        }
        Action::WaitMaintenance { .. } => inventory.nodes.retain(|i| i.name != step.node),
        Action::RemoveMember { .. } if !desired.nodes.iter().any(|d| d.name == step.node) => {
            inventory.nodes.retain(|i| i.name != step.node);
        }
        _ => {}
    }
}

/// Text of a step's action (for errors and logs).
trait ActionText {
    fn action_text(&self) -> String;
}

impl ActionText for Step {
    fn action_text(&self) -> String {
        let full = self.to_string();
        let after_node = full.trim_start_matches(&self.node).trim_start();
        after_node
            .split("  -- ")
            .next()
            .unwrap_or(after_node)
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    //! The interlocks hold whatever the plan says: a crafted plan that resets a node still in
    //! Git with its role is refused before any call.

    use std::time::Duration;

    use vixen_plan::{
        ConfigDigest, Desired, DesiredNode, Inventory, InventoryNode, Plan, Risk, Role, Step,
    };

    use super::*;
    use crate::engine::{FileStore, KubeAccess, Quiet};

    /// Addresses where nothing listens: a call that gets through fails with a transport error.
    fn node(name: &str, role: Role, n: u8) -> DesiredNode {
        DesiredNode {
            name: name.into(),
            hostname: name.into(),
            role,
            maintenance_address: format!("127.254.1.{n}"),
            management_addresses: vec![format!("127.254.0.{n}")],
            config: ConfigDigest {
                whole: name.into(),
                sections: Default::default(),
            },
        }
    }

    fn inventory_entry(d: &DesiredNode, role: Role) -> InventoryNode {
        InventoryNode {
            name: d.name.clone(),
            hostname: d.hostname.clone(),
            role,
            maintenance_address: d.maintenance_address.clone(),
            address: d.management_addresses[0].clone(),
            config: d.config.clone(),
        }
    }

    /// Runs a one-step plan resetting `target`; `git` is what Git holds, `inventory` what vixen
    /// configured (name, role).
    async fn reset(
        target: &str,
        git: &[(&str, Role)],
        inventory: &[(&str, Role)],
    ) -> Result<(), ExecError> {
        let desired = Desired {
            talos_version: "v1.11.6".parse().unwrap(),
            installer_image: "ghcr.io/siderolabs/installer:v1.11.6".into(),
            kubernetes_version: "1.34.1".parse().unwrap(),
            nodes: git
                .iter()
                .enumerate()
                .map(|(i, (n, r))| node(n, *r, i as u8 + 1))
                .collect(),
            stabilization: Duration::ZERO,
            reset_on_removal: true,
        };
        let inv = Inventory {
            nodes: inventory
                .iter()
                .enumerate()
                .map(|(i, (n, r))| inventory_entry(&node(n, *r, i as u8 + 1), *r))
                .collect(),
            kubernetes_version: None,
        };
        let bundle = vixen_pki::SecretsBundle::generate().unwrap();
        let mut conn = Connector::new(vixen_talos::Credentials::from_bundle(&bundle).unwrap())
            .with_kube(KubeAccess::Off);
        conn.act = vixen_talos::CallOptions {
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_millis(200),
            retries: 0,
            ..vixen_talos::CallOptions::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("state.json"));
        let plan = Plan {
            steps: vec![Step {
                node: target.into(),
                action: Action::Reset { graceful: true },
                reason: "crafted".into(),
                risk: Risk {
                    reboot: true,
                    reset: true,
                    etcd: false,
                },
            }],
            waiting: vec![],
        };
        let mut state = State {
            inventory: inv,
            run: Some(Run {
                revision: "r".into(),
                plan,
                done: 0,
                in_flight: None,
            }),
        };
        let configs = Configs::new();
        let exec = Executor {
            conn: &conn,
            configs: &configs,
            desired: &desired,
            store: &store,
            timeouts: Timeouts::default(),
            decommission: false,
            progress: &Quiet,
        };
        exec.run(&mut state).await
    }

    #[tokio::test]
    async fn a_node_in_git_with_its_role_is_never_reset_whatever_the_plan_says() {
        type Nodes<'a> = &'a [(&'a str, Role)];
        let cases: &[(&str, Nodes<'_>, Nodes<'_>, bool)] = &[
            // (target, Git, inventory, refused by the interlock)
            (
                "worker-1",
                &[("worker-1", Role::Worker)],
                &[("worker-1", Role::Worker)],
                true,
            ),
            (
                "worker-1",
                &[("worker-1", Role::Worker), ("worker-2", Role::Worker)],
                &[("worker-1", Role::Worker), ("worker-2", Role::Worker)],
                true,
            ),
            // It left Git: the reset may go (and fails here only because nothing listens).
            (
                "worker-2",
                &[("worker-1", Role::Worker)],
                &[("worker-1", Role::Worker), ("worker-2", Role::Worker)],
                false,
            ),
            // It changes role (worker -> control plane): the reset may go.
            (
                "worker-1",
                &[("worker-1", Role::Controlplane)],
                &[("worker-1", Role::Worker)],
                false,
            ),
        ];
        for (target, git, inventory, refused) in cases {
            let err = reset(target, git, inventory)
                .await
                .expect_err("no node answers here: every case fails somehow");
            let by_interlock = matches!(err.source, StepError::Interlock(_));
            assert_eq!(
                by_interlock, *refused,
                "reset {target} with Git {git:?}, inventory {inventory:?}: {err}"
            );
            if *refused {
                assert!(err.to_string().contains("never reset"), "{err}");
            }
        }
    }
}
