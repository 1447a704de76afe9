//! Runs a plan step by step. Deciding is the planner's; this module acts, checks its interlocks
//! before every dangerous step whatever the plan says, journals each step before and after it
//! runs, and stops at the first failure.
//!
//! Interlocks (in `interlock`, checked against a fresh look at etcd, not the plan's
//! assumptions):
//! - a reset targets only a node that left Git or changes role, and only once it left etcd;
//! - a step that disrupts a control plane or its member passes the health rule of
//!   [`crate::health`] (every other member healthy, a majority kept), else it is not sent and
//!   the rollout waits ([`StepError::Unsafe`]);
//! - Bootstrap is never part of a plan: the executor has no way to call it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use vixen_plan::{Action, ApplyMode, Desired, Inventory, Role, Step};
use vixen_talos::ApplyMode as WireMode;

use crate::error::{ExecError, StepError};
use crate::gates::{control_plane_addresses, wait};
use crate::health::etcd_health;
use crate::journal::{Run, State, record};
use crate::observe::{etcd_view, probe_configured, probe_maintenance};
use crate::ports::{KubeGates, NodeApi, StateStore};
use crate::prepare::Configs;
use crate::progress::{Progress, StepEvent};

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

/// Runs plans through the ports.
pub struct Executor<'a, T, K, S> {
    /// Talos.
    pub talos: &'a T,
    /// Kubernetes.
    pub kube: &'a K,
    /// Where progress is journaled.
    pub store: &'a S,
    /// Rendered configs by node name.
    pub configs: &'a Configs,
    /// The desired state the plan was made for.
    pub desired: &'a Desired,
    /// Gate timeouts.
    pub timeouts: Timeouts,
    /// `vixen decommission --confirm`: every node may be reset, the last etcd member with it.
    pub decommission: bool,
    /// Told about every step.
    pub progress: &'a dyn Progress,
}

impl<T: NodeApi, K: KubeGates, S: StateStore> Executor<'_, T, K, S> {
    /// Runs `state.run`'s plan from its first unfinished step, journaling as it goes.
    ///
    /// # Errors
    /// [`ExecError`] for the first step that fails; nothing after it runs.
    pub async fn run(&self, state: &mut State) -> Result<(), ExecError> {
        let Some(run) = state.run.clone() else {
            return Ok(());
        };
        // Nodes that Talos said it reboots: their next readiness gate must first see them go
        // down (until then they still look healthy on their old boot).
        let mut rebooting: BTreeSet<String> = BTreeSet::new();
        self.progress.plan(run.plan.steps.len());
        for index in run.done..run.plan.steps.len() {
            let step = &run.plan.steps[index];
            let fail = |source: StepError| {
                self.progress
                    .step(index, step, StepEvent::Failed { error: &source });
                ExecError {
                    index,
                    node: step.node.clone(),
                    action: step.action.describe(),
                    source,
                }
            };
            // A fire-once step that was in flight when the agent died is not sent again: its
            // gate (the next step) finds out whether it took. Any other step is sent again.
            let resumed = run.in_flight == Some(index) && step.action.class().fire_once;
            if resumed {
                tracing::warn!(node = %step.node, step = index, "resuming after a crash: not sending this step again");
                self.progress.step(index, step, StepEvent::Resumed);
            } else {
                self.interlocks(step, state).await.map_err(fail)?;
                // The boot ID before a step that reboots the node: its gate waits for a new one.
                let boot = if reboots(&step.action) {
                    self.talos
                        .boot_id(&self.address(&step.node, &state.inventory))
                        .await
                        .ok()
                } else {
                    None
                };
                journal(self.store, state, |r| {
                    r.in_flight = Some(index);
                    if let Some(b) = boot {
                        r.boots.insert(step.node.clone(), b);
                    }
                })
                .await
                .map_err(fail)?;
                tracing::info!(node = %step.node, step = index, action = %step.action.describe(), reason = %step.reason, "step started");
                self.progress.step(index, step, StepEvent::Started);
                let started = Instant::now();
                let boot_before = state
                    .run
                    .as_ref()
                    .and_then(|r| r.boots.get(&step.node).cloned());
                self.act(step, &state.inventory, boot_before, &mut rebooting)
                    .await
                    .map_err(fail)?;
                tracing::info!(node = %step.node, step = index, elapsed_ms = started.elapsed().as_millis() as u64, "step done");
                self.progress.step(
                    index,
                    step,
                    StepEvent::Done {
                        elapsed: started.elapsed(),
                    },
                );
            }
            record(&mut state.inventory, step, self.desired);
            // Talos applied an AUTO config live: no reboot to wait for. A passed readiness gate
            // has seen the new boot.
            let settled = match &step.action {
                Action::ApplyConfig {
                    mode: ApplyMode::Auto,
                    maintenance: false,
                    ..
                } => !rebooting.contains(&step.node),
                Action::WaitReady { .. } => true,
                _ => false,
            };
            journal(self.store, state, |r| {
                r.done = index + 1;
                r.in_flight = None;
                if settled {
                    r.boots.remove(&step.node);
                }
            })
            .await
            .map_err(fail)?;
        }
        Ok(())
    }

    pub(crate) fn is_control_plane(&self, node: &str, inv: &Inventory) -> bool {
        inv.node(node).map(|n| n.role).or_else(|| {
            self.desired
                .nodes
                .iter()
                .find(|n| n.name == node)
                .map(|n| n.role)
        }) == Some(Role::Controlplane)
    }

    pub(crate) fn hostname(&self, node: &str, inv: &Inventory) -> String {
        inv.node(node)
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

    /// Every address `node` may answer at: Git's, then where vixen last reached it.
    pub(crate) fn addresses(&self, node: &str, inv: &Inventory) -> Vec<String> {
        let mut out: Vec<String> = self
            .desired
            .nodes
            .iter()
            .filter(|n| n.name == node)
            .flat_map(|n| n.management_addresses.clone())
            .collect();
        out.extend(inv.node(node).map(|n| n.address.clone()));
        out
    }

    pub(crate) fn addresses_of_hostname(&self, hostname: &str, inv: &Inventory) -> Vec<String> {
        let mut out: Vec<String> = self
            .desired
            .nodes
            .iter()
            .filter(|n| n.hostname == hostname)
            .map(|n| n.address().to_string())
            .collect();
        out.extend(
            inv.nodes
                .iter()
                .filter(|n| n.hostname == hostname)
                .map(|n| n.address.clone()),
        );
        out
    }

    /// The address of `node`: its desired management address, else where vixen last reached it.
    pub(crate) fn address(&self, node: &str, inv: &Inventory) -> String {
        if let Some(d) = self.desired.nodes.iter().find(|n| n.name == node) {
            return d.address().to_string();
        }
        inv.node(node)
            .map_or_else(|| node.to_string(), |n| n.address.clone())
    }

    async fn act(
        &self,
        step: &Step,
        inv: &Inventory,
        boot_before: Option<String>,
        rebooting: &mut BTreeSet<String>,
    ) -> Result<(), StepError> {
        let talos = self.talos;
        let cps = || control_plane_addresses(self.desired, inv);
        let at = || self.address(&step.node, inv);
        match &step.action {
            Action::ApplyConfig {
                mode,
                address,
                maintenance,
                ..
            } => {
                let config = self.configs.get(&step.node).ok_or_else(|| {
                    StepError::Interlock(format!("no rendered config for {}", step.node))
                })?;
                let wire = match mode {
                    ApplyMode::Auto => WireMode::Auto,
                    ApplyMode::NoReboot => WireMode::NoReboot,
                    ApplyMode::Reboot => WireMode::Reboot,
                };
                let outcome = talos
                    .apply(address, config.as_bytes(), wire, false, *maintenance)
                    .await?;
                // A configured node answers, then reboots. (A node in maintenance mode comes
                // back at another address, which cannot answer before its reboot.)
                if !*maintenance && outcome.mode == Some(WireMode::Reboot) {
                    rebooting.insert(step.node.clone());
                }
            }
            Action::WaitReady { address, version } => {
                let must_go_down = rebooting.remove(&step.node);
                match boot_before {
                    Some(boot) => {
                        crate::gates::ready_after_boot(
                            talos,
                            &self.timeouts,
                            &step.node,
                            address,
                            version.as_deref(),
                            &boot,
                        )
                        .await?
                    }
                    None => {
                        crate::gates::ready(
                            talos,
                            &self.timeouts,
                            &step.node,
                            address,
                            version.as_deref(),
                            must_go_down,
                        )
                        .await?
                    }
                }
            }
            Action::WaitEtcdMember => {
                let hostname = self.hostname(&step.node, inv);
                let address = at();
                wait(
                    &self.timeouts,
                    self.timeouts.member,
                    &format!("{hostname} joined etcd, started and promoted"),
                    || async {
                        etcd_view(talos, &address).await.is_some_and(|v| {
                            v.member(&hostname)
                                .is_some_and(|m| m.started && !m.is_learner)
                                && v.members.iter().all(|m| m.started && !m.is_learner)
                        })
                    },
                )
                .await?;
            }
            Action::ForfeitLeadership => talos.etcd_forfeit(&at()).await?,
            Action::LeaveEtcd => self.leave(step, inv).await?,
            Action::RemoveMember { member_id, via } => {
                talos
                    .etcd_remove_member(&self.address(via, inv), *member_id)
                    .await?
            }
            Action::CheckMembers { expected } => {
                let mut seen = None;
                for a in cps() {
                    if let Some(v) = etcd_view(talos, &a).await {
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
            Action::Reset { graceful } => talos.reset(&at(), *graceful).await?,
            Action::WaitMaintenance { address } => {
                let what = format!(
                    "{} in maintenance mode at {address} (a reset node boots its install media: check it is still attached)",
                    step.node
                );
                wait(&self.timeouts, self.timeouts.maintenance, &what, || {
                    probe_maintenance(talos, address)
                })
                .await?;
            }
            Action::Upgrade { image } => talos.upgrade(&at(), image).await?,
            Action::PullImage { image } => talos.pull_image(&at(), image).await?,
            Action::LifecycleUpgrade { image } => talos.lifecycle_upgrade(&at(), image).await?,
            Action::Reboot => {
                talos.reboot(&at()).await?;
                rebooting.insert(step.node.clone());
            }
            // The health rule ran as this step's interlock.
            Action::CheckUpgradeSafe => {}
            Action::Drain { node_name } => {
                let report = self
                    .kube
                    .drain(
                        &cps(),
                        node_name,
                        self.timeouts.drain,
                        self.timeouts.poll.max(Duration::from_secs(1)),
                    )
                    .await?;
                tracing::info!(node = %node_name, evicted = report.evicted.len(), ignored = report.ignored.len(), "drained");
            }
            Action::WaitNodeReady { node_name, version } => {
                let what = match version {
                    Some(v) => format!("Node {node_name} Ready in Kubernetes on Talos {v}"),
                    None => format!("Node {node_name} Ready in Kubernetes"),
                };
                let cps = cps();
                wait(&self.timeouts, self.timeouts.ready, &what, || async {
                    // The OS image names the Talos version the kubelet last registered with:
                    // a Ready from before the reboot does not count.
                    self.kube
                        .node(&cps, node_name)
                        .await
                        .ok()
                        .flatten()
                        .is_some_and(|n| {
                            n.ready
                                && version
                                    .as_ref()
                                    .is_none_or(|v| n.os_image.contains(&format!("({v})")))
                        })
                })
                .await?;
            }
            Action::WaitKubernetes { node_name, version } => {
                let cps = cps();
                // On a control plane, as `talosctl upgrade-k8s` does for each component
                // (pkg/cluster/kubernetes/talos_managed.go, `checkPodStatus`): the static pods
                // of kube-apiserver, kube-controller-manager and kube-scheduler Ready on the
                // new image, before the next node's control plane goes.
                let control_plane = self.is_control_plane(&step.node, inv);
                let what = if control_plane {
                    format!(
                        "Node {node_name} Ready with kubelet {version} and its kube-apiserver, \
                         kube-controller-manager and kube-scheduler Ready on {version}"
                    )
                } else {
                    format!("Node {node_name} Ready with kubelet {version}")
                };
                wait(&self.timeouts, self.timeouts.ready, &what, || async {
                    let node_ok = self
                        .kube
                        .node(&cps, node_name)
                        .await
                        .ok()
                        .flatten()
                        .is_some_and(|n| n.ready && n.kubelet_version == *version);
                    if !node_ok || !control_plane {
                        return node_ok;
                    }
                    let pods = self
                        .kube
                        .static_pods(&cps, node_name)
                        .await
                        .unwrap_or_default();
                    crate::gates::static_pods_on(&pods, version)
                })
                .await?;
            }
            Action::Uncordon { node_name } => self.kube.uncordon(&cps(), node_name).await?,
            Action::DeleteNode { node_name } => self.kube.delete_node(&cps(), node_name).await?,
            Action::Stabilize { millis } => {
                let address = at();
                let until = Instant::now() + Duration::from_millis(*millis);
                while Instant::now() < until {
                    tokio::time::sleep(
                        self.timeouts
                            .poll
                            .min(until.saturating_duration_since(Instant::now())),
                    )
                    .await;
                    if *millis > 0
                        && !probe_configured(talos, &address)
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

    /// The node's member leaves etcd. When its own etcd does not answer (crashed, stopped
    /// mid-join), the member cannot leave by itself: a healthy peer removes it, as for an
    /// unreachable node. Decided from what is observed, not from an error code Talos does not
    /// promise (Talos answers `Unknown` after a long wait there: internal/pkg/etcd/local.go).
    async fn leave(&self, step: &Step, inv: &Inventory) -> Result<(), StepError> {
        let address = self.address(&step.node, inv);
        if self.talos.etcd_status(&address).await.is_ok() {
            match self.talos.etcd_leave(&address).await {
                Ok(()) => return Ok(()),
                Err(e) if self.talos.etcd_status(&address).await.is_ok() => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(node = %step.node, error = %e, "its etcd stopped answering during the leave")
                }
            }
        }
        tracing::warn!(node = %step.node, "its etcd does not answer: removing its member through a peer");
        self.remove_through_peer(&step.node, &address, inv).await
    }

    /// Removes `node`'s member through another control plane whose etcd answers.
    async fn remove_through_peer(
        &self,
        node: &str,
        node_address: &str,
        inv: &Inventory,
    ) -> Result<(), StepError> {
        let hostname = self.hostname(node, inv);
        let addresses = self.addresses(node, inv);
        for peer in control_plane_addresses(self.desired, inv)
            .iter()
            .filter(|p| p.as_str() != node_address)
        {
            let Some(health) =
                etcd_health(self.talos, std::slice::from_ref(peer), |_| vec![]).await
            else {
                continue;
            };
            let Some(member) = health.member_of(&hostname, &addresses) else {
                return Ok(());
            };
            self.talos.etcd_remove_member(peer, member.id).await?;
            return Ok(());
        }
        Err(StepError::Gate(format!(
            "no healthy peer to remove {hostname}'s etcd member through"
        )))
    }
}

/// Whether the action reboots a configured node (its boot ID is read before it is sent).
fn reboots(action: &Action) -> bool {
    matches!(
        action,
        Action::Upgrade { .. }
            | Action::Reboot
            | Action::ApplyConfig {
                maintenance: false,
                mode: ApplyMode::Reboot | ApplyMode::Auto,
                ..
            }
    )
}

async fn journal(
    store: &impl StateStore,
    state: &mut State,
    f: impl FnOnce(&mut Run),
) -> Result<(), StepError> {
    if let Some(run) = state.run.as_mut() {
        f(run);
    }
    Ok(store.save(state).await?)
}
