//! The executor's waits: a node back and healthy (on a version), and the polling loop under
//! every gate.

use std::time::{Duration, Instant};

use vixen_plan::{Desired, Inventory, Role};

use crate::error::StepError;
use crate::execute::Timeouts;
use crate::observe::probe_configured;
use crate::ports::NodeApi;

/// Control planes' addresses: Git's, then where vixen last reached the ones it configured.
pub fn control_plane_addresses(desired: &Desired, inv: &Inventory) -> Vec<String> {
    let mut out: Vec<String> = desired
        .nodes
        .iter()
        .filter(|n| n.role == Role::Controlplane)
        .map(|n| n.address().to_string())
        .collect();
    for n in inv.nodes.iter().filter(|n| n.role == Role::Controlplane) {
        if !out.contains(&n.address) {
            out.push(n.address.clone());
        }
    }
    out
}

/// Polls `check` every `timeouts.poll` until it holds or `limit` passed.
///
/// # Errors
/// [`StepError::Gate`] naming `what` when time runs out.
pub async fn wait<F, Fut>(
    timeouts: &Timeouts,
    limit: Duration,
    what: &str,
    check: F,
) -> Result<(), StepError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_every(limit, timeouts.poll, what, check).await
}

/// Polls `check` every `poll` until it holds or `limit` passed.
///
/// # Errors
/// [`StepError::Gate`] naming `what` when time runs out.
pub async fn wait_every<F, Fut>(
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

/// Waits until `node` answers configured at `address`, healthy, on `version` (when given).
/// With `must_go_down`, the node must first be seen down (it answered the call that reboots it
/// and still looks healthy on its old boot until it goes). A node that went down and came back
/// healthy on another version rolled back (Talos' A/B boot after a failed upgrade): that fails
/// at once rather than at the timeout.
///
/// # Errors
/// [`StepError::Gate`] on a timeout or a rollback.
pub async fn ready(
    talos: &impl NodeApi,
    timeouts: &Timeouts,
    node: &str,
    address: &str,
    version: Option<&str>,
    must_go_down: bool,
) -> Result<(), StepError> {
    let want = version.and_then(|v| v.parse::<vixen_plan::Version>().ok());
    let seen_down = std::cell::Cell::new(false);
    let rolled_back = std::cell::Cell::new(None);
    if must_go_down {
        // Looked at often: a short reboot must not slip between two looks.
        let what = format!("{node} going down for its reboot");
        wait_every(timeouts.ready, Duration::from_millis(20), &what, || async {
            probe_configured(talos, address).await.is_none()
        })
        .await?;
        seen_down.set(true);
    }
    wait(
        timeouts,
        timeouts.ready,
        &format!("{node} ready at {address}"),
        || async {
            match probe_configured(talos, address).await {
                None => {
                    seen_down.set(true);
                    false
                }
                Some(p) if want.is_some() && p.version != want && p.healthy && seen_down.get() => {
                    rolled_back.set(p.version);
                    true
                }
                Some(p) => p.healthy && (want.is_none() || p.version == want),
            }
        },
    )
    .await?;
    if let Some(v) = rolled_back.get() {
        return Err(StepError::Gate(format!(
            "{node} came back on v{v}, not {}: the upgrade failed and the node rolled back",
            version.unwrap_or("?")
        )));
    }
    Ok(())
}

/// Waits until `node` answers at `address` on a boot ID other than `before` (the reboot
/// happened: `talosctl reboot --wait` checks the same), healthy, on `version` (when given). A
/// new boot on another version is a rollback and fails at once. Unlike watching the node go
/// down, this holds after a crash too: the boot ID before the reboot is in the journal.
///
/// # Errors
/// [`StepError::Gate`] on a timeout or a rollback.
pub async fn ready_after_boot(
    talos: &impl NodeApi,
    timeouts: &Timeouts,
    node: &str,
    address: &str,
    version: Option<&str>,
    before: &str,
) -> Result<(), StepError> {
    let want = version.and_then(|v| v.parse::<vixen_plan::Version>().ok());
    let rolled_back = std::cell::Cell::new(None);
    let what = format!("{node} rebooted (a new boot ID) and ready at {address}");
    wait(timeouts, timeouts.ready, &what, || async {
        let Ok(boot) = talos.boot_id(address).await else {
            return false;
        };
        if boot == before {
            return false;
        }
        match probe_configured(talos, address).await {
            Some(p) if want.is_some() && p.version != want && p.healthy => {
                rolled_back.set(p.version);
                true
            }
            Some(p) => p.healthy && (want.is_none() || p.version == want),
            None => false,
        }
    })
    .await?;
    if let Some(v) = rolled_back.get() {
        return Err(StepError::Gate(format!(
            "{node} came back on v{v}, not {}: the upgrade failed and the node rolled back",
            version.unwrap_or("?")
        )));
    }
    Ok(())
}

/// A static pod as the planner sees it (its image's tag).
pub fn pod_view(p: &vixen_k8s::StaticPod) -> vixen_plan::StaticPodView {
    vixen_plan::StaticPodView {
        component: p.component.clone(),
        tag: p
            .image
            .rsplit_once(':')
            .map(|(_, t)| t.to_string())
            .unwrap_or_default(),
        ready: p.ready,
    }
}

/// Whether each control-plane component has a Ready static pod on image tag `version`.
pub fn static_pods_on(pods: &[vixen_k8s::StaticPod], version: &str) -> bool {
    let views: Vec<vixen_plan::StaticPodView> = pods.iter().map(pod_view).collect();
    vixen_plan::static_pods_on(&views, version)
}
