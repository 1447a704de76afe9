//! `vixen etcd restore`: the day every control plane is lost. One control plane comes up from
//! maintenance mode with its Git config, receives the snapshot (EtcdRecover) and restores it
//! (Bootstrap{recover_etcd}) into a new one-member etcd; the agent then joins the others as it
//! joins any new control plane.
//!
//! Refused while any control plane's etcd still answers: restoring next to a live member makes
//! two clusters (etcd's recovery guide restores only a cluster that lost its members).

use std::time::{Duration, Instant};

use vixen_plan::{Desired, Role};
use vixen_talos::ApplyMode;

use crate::bootstrap::{first_configured, record, wait_for};
use crate::observe::{etcd_view, probe_maintenance};
use crate::ports::{NodeApi, StateStore};
use crate::prepare::Configs;

/// Why a restore did not happen (or stopped part way, saying where).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// etcd still answers on a control plane.
    #[error(
        "etcd still answers on {node} at {address}{}: refusing to restore next to a live member (reset every control plane to maintenance first, or let `vixen agent` repair the cluster)",
        if *.healthy { " with a leader" } else { " (without quorum)" }
    )]
    EtcdAnswers {
        /// Node.
        node: String,
        /// Where.
        address: String,
        /// It sees a leader.
        healthy: bool,
    },
    /// No control plane of the repo is in maintenance mode.
    #[error(
        "no control plane of the repo answers in maintenance mode (tried {0}): boot one from the Talos ISO or reset it"
    )]
    NoMaintenance(String),
    /// The node refused a call.
    #[error("{stage} on {node}: {source}")]
    Talos {
        /// Which stage.
        stage: &'static str,
        /// Node.
        node: String,
        /// The error.
        #[source]
        source: vixen_talos::Error,
    },
    /// A wait ran out.
    #[error("{0}")]
    Timeout(String),
}

/// Restores `snapshot` (already checked by the caller) on the first control plane of the repo
/// found in maintenance mode; returns its name.
///
/// # Errors
/// [`RestoreError`].
pub async fn restore(
    conn: &impl NodeApi,
    desired: &Desired,
    configs: &Configs,
    store: &impl StateStore,
    snapshot: &[u8],
    timeout: Duration,
    progress: &mut dyn FnMut(&str, Duration),
) -> Result<String, RestoreError> {
    let cps: Vec<_> = desired
        .nodes
        .iter()
        .filter(|n| n.role == Role::Controlplane)
        .collect();
    for cp in &cps {
        for a in &cp.management_addresses {
            if let Ok(s) = conn.etcd_status(a).await {
                return Err(RestoreError::EtcdAnswers {
                    node: cp.name.clone(),
                    address: a.clone(),
                    healthy: s.leader != 0,
                });
            }
            if etcd_view(conn, a)
                .await
                .is_some_and(|v| !v.members.is_empty())
            {
                return Err(RestoreError::EtcdAnswers {
                    node: cp.name.clone(),
                    address: a.clone(),
                    healthy: true,
                });
            }
        }
    }
    let t = Instant::now();
    let mut chosen = None;
    for cp in &cps {
        if probe_maintenance(conn, &cp.maintenance_address).await {
            chosen = Some(*cp);
            break;
        }
    }
    let d = chosen.ok_or_else(|| {
        RestoreError::NoMaintenance(
            cps.iter()
                .map(|c| c.maintenance_address.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        )
    })?;
    let node = d.name.clone();
    progress(
        &format!("{node} is in maintenance mode at {}", d.maintenance_address),
        t.elapsed(),
    );
    let t = Instant::now();
    let config = configs
        .get(&node)
        .expect("desired and configs come from the same repo");
    conn.apply(
        &d.maintenance_address,
        config.as_bytes(),
        ApplyMode::Auto,
        false,
        true,
    )
    .await
    .map_err(|source| RestoreError::Talos {
        stage: "apply config in maintenance mode",
        node: node.clone(),
        source,
    })?;
    let address = wait_for(timeout, || first_configured(conn, &d.management_addresses))
        .await
        .ok_or_else(|| {
            RestoreError::Timeout(format!(
                "{node} did not come back configured at {} within {}s",
                d.management_addresses.join(", "),
                timeout.as_secs()
            ))
        })?;
    progress(
        &format!("{node} answers configured at {address}"),
        t.elapsed(),
    );
    let t = Instant::now();
    conn.recover(&address, snapshot)
        .await
        .map_err(|source| RestoreError::Talos {
            stage: "EtcdRecover and Bootstrap{recover_etcd}",
            node: node.clone(),
            source,
        })?;
    wait_for(timeout, || async {
        etcd_view(conn, &address)
            .await
            .filter(|v| v.members.len() == 1 && v.members[0].started)
    })
    .await
    .ok_or_else(|| {
        RestoreError::Timeout(format!(
            "the restored etcd on {node} did not become healthy within {}s",
            timeout.as_secs()
        ))
    })?;
    progress("etcd restored: one healthy member", t.elapsed());
    record(store, d).await;
    Ok(node)
}
