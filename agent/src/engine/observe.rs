//! Observing the cluster: which nodes answer where, in which mode, on which version, and what
//! etcd says. Read-only calls only (Version, ServiceList, EtcdMemberList, EtcdStatus).
//!
//! Maintenance detection follows the Terraform provider: try mTLS at the management addresses;
//! else connect without a client certificate and without verifying the server at the
//! maintenance address, and call Version: any gRPC answer (Talos up to 1.12 answers
//! PermissionDenied there) proves a node in maintenance mode.

use std::time::Duration;

use vixen_plan::{
    DesiredNode, EtcdView, Inventory, Member, NodeState, Observed, ObservedNode, Role, Version,
};
use vixen_talos::{CallOptions, Client, Credentials};

/// Builds clients for nodes.
#[derive(Clone)]
pub struct Connector {
    creds: Credentials,
    /// Options for probes (short: an absent node must not slow a reconcile).
    pub probe: CallOptions,
    /// Options for actions.
    pub act: CallOptions,
    /// How Kubernetes is reached (for drains and readiness gates).
    pub kube: super::kube::KubeAccess,
    pub(crate) kube_cache: super::kube::KubeCache,
}

impl Connector {
    /// A connector presenting `creds`.
    pub fn new(creds: Credentials) -> Self {
        let probe = CallOptions {
            timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_millis(800),
            retries: 0,
            ..CallOptions::default()
        };
        Self {
            creds,
            probe,
            act: CallOptions::default(),
            kube: super::kube::KubeAccess::default(),
            kube_cache: super::kube::KubeCache::default(),
        }
    }

    /// The same, reaching Kubernetes through `kube`.
    #[must_use]
    pub fn with_kube(mut self, kube: super::kube::KubeAccess) -> Self {
        self.kube = kube;
        self.kube_cache = super::kube::KubeCache::default();
        self
    }

    /// The credentials presented (for writing a talosconfig).
    pub fn credentials(&self) -> &Credentials {
        &self.creds
    }

    /// An mTLS client for `address` with action options.
    ///
    /// # Errors
    /// When the address or credentials are unusable.
    pub fn node(&self, address: &str) -> vixen_talos::Result<Client> {
        Ok(Client::connect(address, &self.creds)?.with_options(self.act.clone()))
    }

    /// An mTLS client for `address` with probe options.
    ///
    /// # Errors
    /// When the address or credentials are unusable.
    pub fn probe(&self, address: &str) -> vixen_talos::Result<Client> {
        Ok(Client::connect(address, &self.creds)?.with_options(self.probe.clone()))
    }

    /// A maintenance-mode client for `address` with the given options.
    ///
    /// # Errors
    /// When the address is unusable.
    pub fn maintenance(&self, address: &str, opts: &CallOptions) -> vixen_talos::Result<Client> {
        Ok(Client::maintenance(address)?.with_options(opts.clone()))
    }
}

/// What one probe of a configured node found.
pub struct Probe {
    /// Reported version.
    pub version: Option<Version>,
    /// Every service healthy.
    pub healthy: bool,
}

/// Probes a configured node at `address` over mTLS.
pub async fn probe_configured(conn: &Connector, address: &str) -> Option<Probe> {
    let client = conn.probe(address).ok()?;
    let tag = client.version().await.ok()?.tag;
    let services = client.service_list().await.ok()?;
    // As Talos/talosctl judge it: a service without a health check is not unhealthy.
    let healthy = vixen_talos::health::judge(&services).healthy;
    Some(Probe {
        version: tag.parse().ok(),
        healthy,
    })
}

/// Whether a node answers in maintenance mode at `address`.
pub async fn probe_maintenance(conn: &Connector, address: &str) -> bool {
    let Ok(client) = conn.maintenance(address, &conn.probe) else {
        return false;
    };
    match client.version().await {
        Ok(_) => true,
        // An answer with a gRPC status came from a Talos node refusing an anonymous caller.
        Err(e) => e.code().is_some_and(|c| c != tonic::Code::Unavailable),
    }
}

async fn observe_one(
    conn: &Connector,
    name: &str,
    addresses: &[String],
    maintenance: &str,
) -> ObservedNode {
    for address in addresses {
        if let Some(p) = probe_configured(conn, address).await {
            return ObservedNode {
                name: name.into(),
                address: address.clone(),
                state: NodeState::Configured,
                talos_version: p.version,
                healthy: p.healthy,
            };
        }
    }
    if probe_maintenance(conn, maintenance).await {
        return ObservedNode {
            name: name.into(),
            address: maintenance.into(),
            state: NodeState::Maintenance,
            talos_version: None,
            healthy: false,
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
    }
}

/// etcd members and leader as seen through the control plane at `address`.
pub async fn etcd_view(conn: &Connector, address: &str) -> Option<EtcdView> {
    let client = conn.probe(address).ok()?;
    let members = client.etcd_member_list().await.ok()?;
    let status = client.etcd_status().await.ok();
    Some(EtcdView {
        members: members
            .into_iter()
            .map(|m| Member {
                id: m.id,
                name: m.hostname,
                is_learner: m.is_learner,
                started: !m.client_urls.is_empty(),
            })
            .collect(),
        leader: status.map(|s| s.leader).filter(|l| *l != 0),
    })
}

/// Observes every desired node and every inventory node that left Git, then etcd through the
/// first configured control plane that answers.
pub async fn observe(conn: &Connector, desired: &[DesiredNode], inventory: &Inventory) -> Observed {
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
        let o = observe_one(conn, &d.name, &addresses, &d.maintenance_address).await;
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
            conn,
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
        if let Some(view) = etcd_view(conn, address).await {
            etcd = Some(view);
            break;
        }
    }
    let kubernetes = match conn.kube_nodes(&cps).await {
        Some(api) if !cps.is_empty() => super::kube::view(&api).await,
        _ => None,
    };
    Observed {
        nodes,
        etcd,
        kubernetes,
    }
}
