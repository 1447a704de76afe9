//! Talos as the validator of last resort: before a plan's first mutating call, every config the
//! plan would send is dry-run applied on its node (in maintenance mode too: Talos' maintenance
//! server takes dry runs), and any refusal stops the whole plan with the node's own message.
//! Nothing is changed then (law 5). A node that does not answer is left to its step.

use std::collections::BTreeMap;

use vixen_plan::{Action, ApplyMode, Plan, Refusal};
use vixen_talos::ApplyMode as WireMode;

use crate::ports::NodeApi;
use crate::prepare::Configs;

/// The first refusal of a dry run of the plan's configs, if any.
pub async fn preflight(talos: &impl NodeApi, plan: &Plan, configs: &Configs) -> Option<Refusal> {
    // A plan that changes nothing sends nothing to check.
    plan.mutating().next()?;
    let mut seen = std::collections::BTreeSet::new();
    for step in &plan.steps {
        let Action::ApplyConfig {
            mode,
            address,
            maintenance,
            ..
        } = &step.action
        else {
            continue;
        };
        if !seen.insert(step.node.as_str()) {
            continue;
        }
        let Some(config) = configs.get(&step.node) else {
            continue;
        };
        let wire = wire(*mode);
        match talos
            .apply(address, config.as_bytes(), wire, true, *maintenance)
            .await
        {
            Ok(_) => {}
            // Not there (down, rebooting): its own step will find out.
            Err(e)
                if matches!(
                    e.code(),
                    None | Some(tonic::Code::Unavailable | tonic::Code::DeadlineExceeded)
                ) =>
            {
                tracing::debug!(node = %step.node, error = %e, "dry run: the node does not answer");
            }
            Err(e) => {
                let message = match &e {
                    vixen_talos::Error::Rpc { message, .. } => message.clone(),
                    other => other.to_string(),
                };
                return Some(Refusal::ConfigRefused {
                    node: step.node.clone(),
                    message,
                });
            }
        }
    }
    None
}

fn wire(mode: ApplyMode) -> WireMode {
    match mode {
        ApplyMode::Auto => WireMode::Auto,
        ApplyMode::NoReboot => WireMode::NoReboot,
        ApplyMode::Reboot => WireMode::Reboot,
    }
}

/// Talos' dry-run answer for each config step of `plan`, by step index: its summary and the
/// diff of the running and the new config as Talos computes it (`talosctl apply --dry-run`
/// prints the same text), or the node's error. Dry runs only.
pub async fn dry_runs(
    talos: &impl NodeApi,
    plan: &Plan,
    configs: &Configs,
) -> BTreeMap<usize, Result<String, String>> {
    let mut out = BTreeMap::new();
    for (i, step) in plan.steps.iter().enumerate() {
        let Action::ApplyConfig {
            mode,
            address,
            maintenance,
            ..
        } = &step.action
        else {
            continue;
        };
        let Some(config) = configs.get(&step.node) else {
            continue;
        };
        let answer = talos
            .apply(address, config.as_bytes(), wire(*mode), true, *maintenance)
            .await
            .map(|o| o.mode_details)
            .map_err(|e| match e {
                vixen_talos::Error::Rpc { message, .. } => message,
                other => other.to_string(),
            });
        out.insert(i, answer);
    }
    out
}
