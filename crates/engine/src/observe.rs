//! Observing the cluster: which nodes answer where, in which mode, on which version, and what
//! etcd says. Read-only calls only (Version, ServiceList, EtcdMemberList, EtcdStatus).
//!
//! Maintenance detection follows the Terraform provider: try mTLS at the management addresses;
//! else connect without a client certificate and without verifying the server at the
//! maintenance address, and call Version: any gRPC answer (Talos refuses an anonymous Version
//! with a status) proves a node in maintenance mode.

use vixen_plan::{
    DesiredNode, EtcdView, Inventory, Member, NodeState, Observed, ObservedNode, Role, Version,
};
use vixen_talos::ServiceStatus;

use crate::ports::{KubeGates, NodeApi};

/// What one probe of a configured node found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Reported version.
    pub version: Option<Version>,
    /// The services that matter are up (see [`services_healthy`]).
    pub healthy: bool,
}

/// Whether a node's services are healthy, as Talos and talosctl judge it: the services that
/// matter run, and those with a health check pass it; a service without one (`dashboard`,
/// extensions: `health.unknown`) is not unhealthy ([`vixen_talos::health::judge`]).
pub fn services_healthy(services: &[ServiceStatus]) -> bool {
    vixen_talos::health::judge(services).healthy
}

/// Probes a configured node at `address` over mTLS.
pub async fn probe_configured(talos: &impl NodeApi, address: &str) -> Option<Probe> {
    let tag = talos.version(address).await.ok()?.tag;
    let services = talos.services(address).await.ok()?;
    Some(Probe {
        version: tag.parse().ok(),
        healthy: services_healthy(&services),
    })
}

/// Whether a node answers in maintenance mode at `address`.
pub async fn probe_maintenance(talos: &impl NodeApi, address: &str) -> bool {
    match talos.maintenance_version(address).await {
        Ok(_) => true,
        // An answer with a gRPC status came from a Talos node refusing an anonymous caller.
        Err(e) => e
            .code()
            .is_some_and(|c| c != tonic::Code::Unavailable && c != tonic::Code::DeadlineExceeded),
    }
}

async fn observe_one(
    talos: &impl NodeApi,
    name: &str,
    addresses: &[String],
    maintenance: &str,
) -> ObservedNode {
    for address in addresses {
        if let Some(p) = probe_configured(talos, address).await {
            return ObservedNode {
                name: name.into(),
                address: address.clone(),
                state: NodeState::Configured,
                talos_version: p.version,
                healthy: p.healthy,
                drift: None,
            };
        }
    }
    if probe_maintenance(talos, maintenance).await {
        return ObservedNode {
            name: name.into(),
            address: maintenance.into(),
            state: NodeState::Maintenance,
            talos_version: None,
            healthy: false,
            drift: None,
        };
    }
    ObservedNode {
        name: name.into(),
        address: addresses
            .first()
            .cloned()
            .unwrap_or_else(|| maintenance.to_string()),
        state: NodeState::Unreachable,
        talos_version: None,
        healthy: false,
        drift: None,
    }
}

/// etcd members and leader as seen through the control plane at `address`.
pub async fn etcd_view(talos: &impl NodeApi, address: &str) -> Option<EtcdView> {
    let members = talos.etcd_members(address).await.ok()?;
    let status = talos.etcd_status(address).await.ok();
    Some(EtcdView {
        members: members
            .into_iter()
            .map(|m| Member {
                id: m.id,
                name: m.hostname,
                is_learner: m.is_learner,
                started: !m.client_urls.is_empty(),
                peer_urls: m.peer_urls,
            })
            .collect(),
        leader: status.map(|s| s.leader).filter(|l| *l != 0),
    })
}

/// Observes every desired node and every inventory node that left Git, then etcd through the
/// first configured control plane that answers, then Kubernetes.
pub async fn observe(
    talos: &impl NodeApi,
    kube: &impl KubeGates,
    desired: &[DesiredNode],
    inventory: &Inventory,
) -> Observed {
    let mut nodes = Vec::new();
    let mut cps = Vec::new();
    for d in desired {
        // A renamed or re-addressed node may still be where vixen last configured it.
        let mut addresses = d.management_addresses.clone();
        let prior = inventory.node(&d.name).or_else(|| {
            inventory
                .nodes
                .iter()
                .find(|i| i.maintenance_address == d.maintenance_address)
        });
        if let Some(p) = prior
            && !addresses.contains(&p.address)
        {
            addresses.push(p.address.clone());
        }
        let o = observe_one(talos, &d.name, &addresses, &d.maintenance_address).await;
        if o.state == NodeState::Configured
            && (d.role == Role::Controlplane || prior.is_some_and(|p| p.role == Role::Controlplane))
        {
            cps.push(o.address.clone());
        }
        nodes.push(o);
    }
    for i in &inventory.nodes {
        if desired
            .iter()
            .any(|d| d.name == i.name || d.maintenance_address == i.maintenance_address)
        {
            continue;
        }
        let o = observe_one(
            talos,
            &i.name,
            std::slice::from_ref(&i.address),
            &i.maintenance_address,
        )
        .await;
        if o.state == NodeState::Configured && i.role == Role::Controlplane {
            cps.push(o.address.clone());
        }
        nodes.push(o);
    }
    let mut etcd = None;
    for address in &cps {
        if let Some(view) = etcd_view(talos, address).await {
            etcd = Some(view);
            break;
        }
    }
    let kubernetes = if cps.is_empty() {
        None
    } else {
        kube.view(&cps).await
    };
    Observed {
        nodes,
        etcd,
        kubernetes,
    }
}
