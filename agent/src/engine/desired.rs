//! The desired state: the repo rendered for every node, reduced to what the planner needs.

use std::collections::BTreeMap;
use std::time::Duration;

use vixen_model::Repo;
use vixen_model::render::{installer_image, management_addresses, render};
use vixen_model::validate::parse_duration;
use vixen_pki::SecretsBundle;
use vixen_plan::{Desired, DesiredNode};
use zeroize::Zeroizing;

/// The rendered configs, by node name. They hold secrets: never log them.
pub type Configs = BTreeMap<String, Zeroizing<String>>;

/// Builds the planner's input and the configs to send.
///
/// # Errors
/// When a node does not render or a version does not parse (validation catches both first).
pub fn desired(repo: &Repo, bundle: &SecretsBundle) -> anyhow::Result<(Desired, Configs)> {
    let c = &repo.cluster.value;
    let mut nodes = Vec::new();
    let mut configs = Configs::new();
    for n in &repo.nodes {
        let config = render(repo, n, bundle).map_err(|d| anyhow::anyhow!("{d}"))?;
        let v = &n.value;
        nodes.push(DesiredNode {
            name: v.name.clone(),
            hostname: v.hostname.clone().unwrap_or_else(|| v.name.clone()),
            role: v.role,
            maintenance_address: v.maintenance_address.clone(),
            management_addresses: management_addresses(v),
            config: config.digest(),
        });
        configs.insert(v.name.clone(), Zeroizing::new(config.to_yaml()));
    }
    let desired = Desired {
        talos_version: c.talos.version.parse()?,
        installer_image: installer_image(repo, &c.talos.version),
        kubernetes_version: c.kubernetes.version.parse()?,
        nodes,
        stabilization: parse_duration(&c.upgrade.stabilization).unwrap_or(Duration::from_secs(30)),
        reset_on_removal: c.removal == vixen_model::Removal::Reset,
    };
    Ok((desired, configs))
}
