//! `vixen bootstrap`: the first control plane, from its maintenance address to a running etcd.
//!
//! Safe to re-run: a node that is already configured with a running etcd gets no mutating call,
//! and Bootstrap is refused when any control plane of the repo already has etcd members (a
//! second Bootstrap would start a second, split cluster).

use std::time::{Duration, Instant};

use vixen_plan::{Desired, InventoryNode, Role};
use vixen_talos::ApplyMode;

use crate::observe::{etcd_view, probe_configured, probe_maintenance};
use crate::ports::{NodeApi, StateStore};
use crate::prepare::Configs;

/// What bootstrap did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// The node was configured and etcd bootstrapped on it.
    Bootstrapped {
        /// The address that answered after the config was applied.
        address: String,
    },
    /// The cluster was already bootstrapped: nothing was changed.
    AlreadyBootstrapped {
        /// Where the node answered.
        address: String,
    },
}

/// Bootstrap failures. None of them leaves a half-bootstrapped cluster behind without saying so.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootstrapError {
    /// The node is not in the repo or is not a control plane.
    #[error("{0}")]
    NotAControlPlane(String),
    /// The node answers neither configured nor in maintenance mode.
    #[error(
        "{node} does not answer at {tried}: check that it is powered on and booted from the Talos ISO, and that this machine can reach it"
    )]
    Unreachable {
        /// Node.
        node: String,
        /// Addresses tried.
        tried: String,
    },
    /// Another control plane already runs etcd.
    #[error("{0} already runs etcd: this cluster is bootstrapped; let `vixen agent` join {1}")]
    OtherBootstrapped(String, String),
    /// The node refused a call.
    #[error("{stage}: {source}")]
    Talos {
        /// Which stage.
        stage: &'static str,
        /// The error.
        #[source]
        source: vixen_talos::Error,
    },
    /// A wait ran out.
    #[error("{0}")]
    Timeout(String),
}

pub(crate) async fn wait_for<F, Fut, T>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() > until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Bootstraps `node` (see the module doc). `progress` is told each stage and how long it took.
///
/// # Errors
/// [`BootstrapError`], each saying what to check.
pub async fn bootstrap(
    conn: &impl NodeApi,
    desired: &Desired,
    configs: &Configs,
    node: &str,
    store: &impl StateStore,
    timeout: Duration,
    progress: &mut dyn FnMut(&str, Duration),
) -> Result<Done, BootstrapError> {
    let d = desired
        .nodes
        .iter()
        .find(|n| n.name == node)
        .ok_or_else(|| BootstrapError::NotAControlPlane(format!("no node `{node}` in the repo")))?;
    if d.role != Role::Controlplane {
        return Err(BootstrapError::NotAControlPlane(format!(
            "{node} is a worker: bootstrap a control plane"
        )));
    }
    // Already bootstrapped anywhere? Then touch nothing.
    for cp in desired
        .nodes
        .iter()
        .filter(|n| n.role == Role::Controlplane)
    {
        for a in &cp.management_addresses {
            if let Some(view) = etcd_view(conn, a).await
                && !view.members.is_empty()
            {
                if cp.name == node {
                    record(store, d).await;
                    return Ok(Done::AlreadyBootstrapped { address: a.clone() });
                }
                return Err(BootstrapError::OtherBootstrapped(
                    cp.name.clone(),
                    node.to_string(),
                ));
            }
        }
    }
    let t = Instant::now();
    let configured = first_configured(conn, &d.management_addresses).await;
    let address = match configured {
        Some(a) => a,
        None => {
            if !probe_maintenance(conn, &d.maintenance_address).await {
                let mut tried = d.management_addresses.clone();
                tried.push(d.maintenance_address.clone());
                return Err(BootstrapError::Unreachable {
                    node: node.into(),
                    tried: tried.join(", "),
                });
            }
            progress(
                &format!("{node} is in maintenance mode at {}", d.maintenance_address),
                t.elapsed(),
            );
            let t = Instant::now();
            let config = configs
                .get(node)
                .expect("desired and configs come from the same repo");
            conn.apply(
                &d.maintenance_address,
                config.as_bytes(),
                ApplyMode::Auto,
                false,
                true,
            )
            .await
            .map_err(|source| BootstrapError::Talos {
                stage: "apply config in maintenance mode",
                source,
            })?;
            progress("config applied; the node installs and reboots", t.elapsed());
            let t = Instant::now();
            // Follow the node: management addresses in order (interfaces, then VLANs), then
            // the maintenance address again.
            let found = wait_for(timeout, || first_configured(conn, &d.management_addresses)).await;
            let a = found.ok_or_else(|| {
                BootstrapError::Timeout(format!(
                    "{node} did not come back configured at {} within {}s",
                    d.management_addresses.join(", "),
                    timeout.as_secs()
                ))
            })?;
            progress(&format!("{node} answers configured at {a}"), t.elapsed());
            a
        }
    };
    let t = Instant::now();
    conn.bootstrap(&address)
        .await
        .map_err(|source| BootstrapError::Talos {
            stage: "bootstrap etcd",
            source,
        })?;
    let up = wait_for(timeout, || async {
        etcd_view(conn, &address)
            .await
            .filter(|v| v.members.len() == 1 && v.members[0].started)
    })
    .await;
    up.ok_or_else(|| {
        BootstrapError::Timeout(format!(
            "etcd on {node} did not become healthy within {}s",
            timeout.as_secs()
        ))
    })?;
    progress("etcd bootstrapped: one healthy member", t.elapsed());
    record(store, d).await;
    Ok(Done::Bootstrapped { address })
}

pub(crate) async fn first_configured(conn: &impl NodeApi, addresses: &[String]) -> Option<String> {
    for a in addresses {
        if probe_configured(conn, a).await.is_some() {
            return Some(a.clone());
        }
    }
    None
}

/// Records the node in vixen's inventory, so the agent sees its config as applied.
pub(crate) async fn record(store: &impl StateStore, d: &vixen_plan::DesiredNode) {
    if let Ok(mut state) = store.load().await {
        state.inventory.nodes.retain(|n| n.name != d.name);
        state.inventory.nodes.push(InventoryNode {
            name: d.name.clone(),
            hostname: d.hostname.clone(),
            role: d.role,
            maintenance_address: d.maintenance_address.clone(),
            address: d.address().to_string(),
            config: d.config.clone(),
            member_id: None,
            reboot_pending: false,
        });
        if let Err(e) = store.save(&state).await {
            tracing::warn!(error = %e, "could not record the bootstrapped node");
        }
    }
}
