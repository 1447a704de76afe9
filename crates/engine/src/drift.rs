//! Drift: a configured node whose running config is no longer the one vixen applied (someone
//! applied another one behind its back). Talos tells: a dry-run apply of the rendered config
//! answers "No changes." only when the node runs exactly it (`v1alpha1_server.go`
//! ApplyConfiguration, `in.DryRun`, generateDiff). The check is read-only and made on a resync,
//! never on an idle poll; a drifted node is marked in the observation, and the planner decides
//! what to do about it (a normal config step under the same gates, or nothing with
//! `drift: report`).
//!
//! A node that does not answer the dry run (down, rebooting) is not drift: it is skipped, and
//! the others are still checked.

use vixen_plan::{Desired, Drift, Inventory, NodeState, Observed};
use vixen_talos::ApplyMode;

use crate::ports::NodeApi;
use crate::prepare::Configs;

/// One drifted node, as Talos' dry run showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drifted {
    /// Node name.
    pub node: String,
    /// Going back to the rendered config reboots the node (the mode the dry run chose).
    pub reboot: bool,
    /// The dry run's answer (Talos' summary and config diff).
    pub details: String,
}

/// Dry-runs the rendered config on every configured node vixen applied this very config to,
/// marks the drifted ones in `observed` and returns them.
pub async fn check(
    talos: &impl NodeApi,
    desired: &Desired,
    configs: &Configs,
    observed: &mut Observed,
    inventory: &Inventory,
) -> Vec<Drifted> {
    let mut found = Vec::new();
    for d in &desired.nodes {
        // A node whose config changed in Git gets it anyway; an unknown one is adopted or not.
        let recorded = inventory
            .node(&d.name)
            .is_some_and(|i| i.config.whole == d.config.whole);
        let Some(o) = observed
            .nodes
            .iter_mut()
            .find(|o| o.name == d.name && o.state == NodeState::Configured)
        else {
            continue;
        };
        let Some(config) = configs.get(&d.name).filter(|_| recorded) else {
            continue;
        };
        match talos
            .apply(&o.address, config.as_bytes(), ApplyMode::Auto, true, false)
            .await
        {
            Ok(outcome) if outcome.mode_details.contains("No changes.") => {}
            Ok(outcome) => {
                let reboot = outcome.mode == Some(ApplyMode::Reboot);
                tracing::warn!(node = %d.name, reboot, "drift: the node's running config is not the one from Git");
                o.drift = Some(Drift { reboot });
                found.push(Drifted {
                    node: d.name.clone(),
                    reboot,
                    details: outcome.mode_details,
                });
            }
            Err(e) => {
                tracing::info!(node = %d.name, error = %e, "drift check: no answer to the dry run; not counted as drift")
            }
        }
    }
    found
}
