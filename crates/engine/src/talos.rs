//! The real [`NodeApi`]: vixen's Talos client over mTLS (or anonymous TLS in maintenance mode).
//!
//! Reads use short probe options and may be retried on Unavailable. Mutating calls are sent
//! once: an Unavailable after a Reset, Upgrade or Apply may mean the node took it and went down,
//! so it is never blindly resent (the step's gate, or the next reconcile, finds out).

use std::time::Duration;

use vixen_talos::{
    ApplyMode, ApplyOutcome, CallOptions, Client, Credentials, EtcdMember, EtcdMemberStatus,
    ServiceStatus, VersionInfo,
};

use crate::ports::{NodeApi, TalosResult};

/// Builds Talos clients for node addresses.
#[derive(Clone)]
pub struct Connector {
    creds: Credentials,
    /// Options for reads (short: an absent node must not slow a reconcile).
    pub probe: CallOptions,
    /// Options for mutating calls (no retry: see the module doc).
    pub act: CallOptions,
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
        let act = CallOptions {
            retries: 0,
            ..CallOptions::default()
        };
        Self { creds, probe, act }
    }

    /// The credentials presented (for writing a talosconfig).
    pub fn credentials(&self) -> &Credentials {
        &self.creds
    }

    /// An mTLS client for `address` with action options.
    ///
    /// # Errors
    /// When the address or credentials are unusable.
    pub fn node(&self, address: &str) -> TalosResult<Client> {
        Ok(Client::connect(address, &self.creds)?.with_options(self.act.clone()))
    }

    fn read(&self, address: &str) -> TalosResult<Client> {
        Ok(Client::connect(address, &self.creds)?.with_options(self.probe.clone()))
    }

    fn anonymous(&self, address: &str, opts: &CallOptions) -> TalosResult<Client> {
        Ok(Client::maintenance(address)?.with_options(opts.clone()))
    }
}

impl NodeApi for Connector {
    async fn version(&self, at: &str) -> TalosResult<VersionInfo> {
        self.read(at)?.version().await
    }

    async fn maintenance_version(&self, at: &str) -> TalosResult<VersionInfo> {
        self.anonymous(at, &self.probe)?.version().await
    }

    async fn services(&self, at: &str) -> TalosResult<Vec<ServiceStatus>> {
        self.read(at)?.service_list().await
    }

    async fn etcd_members(&self, at: &str) -> TalosResult<Vec<EtcdMember>> {
        self.read(at)?.etcd_member_list().await
    }

    async fn etcd_status(&self, at: &str) -> TalosResult<EtcdMemberStatus> {
        self.read(at)?.etcd_status().await
    }

    async fn apply(
        &self,
        at: &str,
        config: &[u8],
        mode: ApplyMode,
        dry_run: bool,
        maintenance: bool,
    ) -> TalosResult<ApplyOutcome> {
        let client = if maintenance {
            self.anonymous(at, &self.act)?
        } else {
            self.node(at)?
        };
        client
            .apply_configuration(config, mode, dry_run, None)
            .await
    }

    async fn upgrade(&self, at: &str, image: &str) -> TalosResult<()> {
        self.node(at)?
            .upgrade_legacy(image, false, false)
            .await
            .map(drop)
    }

    async fn pull_image(&self, at: &str, image: &str) -> TalosResult<()> {
        self.node(at)?.pull_image(image).await.map(drop)
    }

    async fn lifecycle_upgrade(&self, at: &str, image: &str) -> TalosResult<()> {
        self.node(at)?.lifecycle_upgrade(image).await.map(drop)
    }

    async fn reboot(&self, at: &str) -> TalosResult<()> {
        self.node(at)?.reboot().await
    }

    async fn reset(&self, at: &str, graceful: bool) -> TalosResult<()> {
        self.node(at)?.reset(graceful, true).await
    }

    async fn bootstrap(&self, at: &str) -> TalosResult<()> {
        // Talos refuses "bootstrap is not available yet" / "time is not in sync yet" for a
        // while after the node configures; only those are retried (within 2 minutes).
        self.node(at)?
            .bootstrap_when_ready(Duration::from_secs(120))
            .await
    }

    async fn etcd_leave(&self, at: &str) -> TalosResult<()> {
        self.node(at)?.etcd_leave_cluster().await
    }

    async fn etcd_forfeit(&self, at: &str) -> TalosResult<()> {
        self.node(at)?.etcd_forfeit_leadership().await.map(drop)
    }

    async fn etcd_remove_member(&self, at: &str, id: u64) -> TalosResult<()> {
        self.node(at)?.etcd_remove_member_by_id(id).await
    }

    async fn boot_id(&self, at: &str) -> TalosResult<String> {
        self.read(at)?.boot_id().await
    }

    async fn kubeconfig(&self, at: &str) -> TalosResult<Vec<u8>> {
        self.node(at)?.kubeconfig().await
    }

    async fn recover(&self, at: &str, snapshot: &[u8]) -> TalosResult<()> {
        self.node(at)?
            .recover_when_ready(snapshot, Duration::from_secs(120))
            .await
    }

    async fn etcd_snapshot(&self, at: &str) -> TalosResult<Vec<u8>> {
        // A read, but a long one: the action options (no retry, the long timeout).
        self.node(at)?.etcd_snapshot().await
    }
}
