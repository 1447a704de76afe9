//! Re-learning nodes vixen has no record of (a lost journal; a new in-cluster agent taking over
//! from `vixen bootstrap` on a laptop): a configured node whose running config is exactly the
//! rendered one, as a dry-run apply tells (Talos' dry-run summary says "No changes."), is
//! recorded as applied, so it is not re-applied, let alone rebooted.

use vixen_plan::{Desired, Inventory, InventoryNode, NodeState, Observed};
use vixen_talos::ApplyMode;

use crate::ports::NodeApi;
use crate::prepare::Configs;

/// Adopts every unrecorded configured node that runs its Git config; returns how many.
pub async fn adopt(
    talos: &impl NodeApi,
    desired: &Desired,
    configs: &Configs,
    observed: &Observed,
    inventory: &mut Inventory,
) -> usize {
    let mut adopted = 0;
    for d in &desired.nodes {
        let known = inventory
            .nodes
            .iter()
            .any(|i| i.name == d.name || i.maintenance_address == d.maintenance_address);
        if known {
            continue;
        }
        let Some(o) = observed
            .node(&d.name)
            .filter(|o| o.state == NodeState::Configured)
        else {
            continue;
        };
        let Some(config) = configs.get(&d.name) else {
            continue;
        };
        match talos
            .apply(&o.address, config.as_bytes(), ApplyMode::Auto, true, false)
            .await
        {
            Ok(outcome) if outcome.mode_details.contains("No changes.") => {
                tracing::info!(node = %d.name, address = %o.address, "no record of this node, but it runs exactly its config from Git: adopted");
                inventory.nodes.push(InventoryNode {
                    name: d.name.clone(),
                    hostname: d.hostname.clone(),
                    role: d.role,
                    maintenance_address: d.maintenance_address.clone(),
                    address: o.address.clone(),
                    config: d.config.clone(),
                    member_id: None,
                    reboot_pending: false,
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
