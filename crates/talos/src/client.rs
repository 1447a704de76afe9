//! The Talos API client: one gRPC channel per endpoint (lazy, reconnecting), the `node` metadata
//! key for proxying through that endpoint, per-call timeouts and retries with backoff on
//! Unavailable, and version-aware choices (Talos 1.13+ upgrades through LifecycleService).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::api::common::Metadata;
use crate::api::machine as pb;
use crate::api::machine::machine_service_client::MachineServiceClient;
use crate::config::Credentials;
use crate::error::{Error, Result};
use crate::node::{
    ApplyMode, ApplyOutcome, BoxFuture, EtcdMember, EtcdMemberStatus, ServiceStatus, TalosNode,
    TalosVersion, UpgradeOutcome, VersionInfo,
};
use crate::{API_PORT, tls};

/// Timeouts and retry policy of every call.
#[derive(Debug, Clone)]
pub struct CallOptions {
    /// Deadline of one attempt (sent as `grpc-timeout` and enforced locally).
    pub timeout: Duration,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Extra attempts after an Unavailable answer.
    pub retries: u32,
    /// First backoff; doubled after each attempt.
    pub backoff: Duration,
    /// Backoff ceiling.
    pub max_backoff: Duration,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            retries: 3,
            backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
        }
    }
}

/// A Talos API client bound to one endpoint (and optionally one target node behind it).
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    endpoint: String,
    node: Option<String>,
    opts: CallOptions,
    maintenance: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("node", &self.node)
            .field("maintenance", &self.maintenance)
            .finish_non_exhaustive()
    }
}

/// Splits `host`, `host:port` or `[v6]:port` into a host and a port (50000 by default).
fn split_endpoint(endpoint: &str) -> Result<(String, u16)> {
    let bad = || Error::InvalidEndpoint(endpoint.to_string());
    if endpoint.parse::<std::net::IpAddr>().is_ok() && endpoint.contains(':') {
        return Ok((format!("[{endpoint}]"), API_PORT));
    }
    match endpoint.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.ends_with(':') => {
            Ok((host.to_string(), port.parse().map_err(|_| bad())?))
        }
        _ if !endpoint.is_empty() => Ok((endpoint.to_string(), API_PORT)),
        _ => Err(bad()),
    }
}

impl Client {
    /// An mTLS client for `endpoint` (`host` or `host:port`), connecting lazily.
    ///
    /// # Errors
    /// [`Error::Tls`] or [`Error::InvalidEndpoint`].
    pub fn connect(endpoint: &str, creds: &Credentials) -> Result<Self> {
        Self::build(
            endpoint,
            tls::client_config(creds)?,
            false,
            CallOptions::default(),
        )
    }

    /// A maintenance-mode client: TLS without client certificate and without verifying the node.
    /// Use it only for maintenance-mode calls (ApplyConfiguration of the first config, Version).
    ///
    /// # Errors
    /// [`Error::InvalidEndpoint`].
    pub fn maintenance(endpoint: &str) -> Result<Self> {
        Self::build(
            endpoint,
            tls::maintenance_config(),
            true,
            CallOptions::default(),
        )
    }

    fn build(
        endpoint: &str,
        tls_config: Arc<ClientConfig>,
        maintenance: bool,
        opts: CallOptions,
    ) -> Result<Self> {
        let (host, port) = split_endpoint(endpoint)?;
        let sni = tls::server_name(&host)?;
        let connector = TlsConnector::from(tls_config);
        let target = format!("{host}:{port}");
        let tcp_target = target.trim_start_matches('[').replace("]:", ":");
        let tcp_target = if host.starts_with('[') {
            target.clone()
        } else {
            tcp_target
        };
        let connect = tower::service_fn(move |_uri: http::Uri| {
            let (connector, sni, addr) = (connector.clone(), sni.clone(), tcp_target.clone());
            async move {
                let tcp = TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let stream = connector.connect(sni, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        });
        let channel = Endpoint::from_shared(format!("http://{target}"))
            .map_err(|_| Error::InvalidEndpoint(endpoint.to_string()))?
            .connect_timeout(opts.connect_timeout)
            .connect_with_connector_lazy(connect);
        Ok(Self {
            channel,
            endpoint: endpoint.to_string(),
            node: None,
            opts,
            maintenance,
        })
    }

    /// Targets `node` through this endpoint (gRPC metadata key `node`, proxied by apid).
    pub fn with_node(mut self, node: impl Into<String>) -> Self {
        self.node = Some(node.into());
        self
    }

    /// Replaces the timeouts and retry policy.
    pub fn with_options(mut self, opts: CallOptions) -> Self {
        self.opts = opts;
        self
    }

    /// The underlying gRPC channel, for RPCs this client does not wrap (tests and tools build
    /// the generated clients of [`crate::api`] on it). Calls made on it bypass the timeouts,
    /// retries and the `node` key of this client.
    pub fn raw_channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The endpoint this client connects to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether this is a maintenance-mode (unauthenticated) client.
    pub fn is_maintenance(&self) -> bool {
        self.maintenance
    }

    fn request<M>(&self, msg: M) -> Request<M> {
        let mut req = Request::new(msg);
        req.set_timeout(self.opts.timeout);
        if let Some(node) = &self.node
            && let Ok(value) = node.parse()
        {
            req.metadata_mut().insert("node", value);
        }
        req
    }

    /// Runs one call with the timeout, retrying Unavailable answers with backoff.
    pub(crate) async fn call<M, R, F, Fut>(&self, method: &'static str, msg: M, f: F) -> Result<R>
    where
        M: Clone,
        F: Fn(Channel, Request<M>) -> Fut,
        Fut: Future<Output = std::result::Result<R, Status>>,
    {
        let mut backoff = self.opts.backoff;
        let mut attempt = 0;
        loop {
            let fut = f(self.channel.clone(), self.request(msg.clone()));
            let limit = self.opts.timeout + self.opts.connect_timeout;
            let status = match tokio::time::timeout(limit, fut).await {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(status)) => status,
                Err(_) => {
                    return Err(Error::Timeout {
                        method,
                        after: limit,
                    });
                }
            };
            if status.code() != tonic::Code::Unavailable || attempt >= self.opts.retries {
                return Err(Error::from_status(method, status));
            }
            attempt += 1;
            tracing::debug!(method, endpoint = %self.endpoint, attempt, "unavailable, retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.opts.max_backoff);
        }
    }

    /// Version of the node.
    ///
    /// # Errors
    /// As every call: [`Error::Unavailable`], [`Error::Timeout`], [`Error::Rpc`].
    pub async fn version(&self) -> Result<VersionInfo> {
        const M: &str = "/machine.MachineService/Version";
        let reply = self
            .call(M, (), |ch, req| async move {
                MachineServiceClient::new(ch)
                    .version(req)
                    .await
                    .map(|r| r.into_inner())
            })
            .await?;
        let msg = first(M, reply.messages, |m| &m.metadata)?;
        Ok(VersionInfo {
            tag: msg.version.map(|v| v.tag).unwrap_or_default(),
            platform: msg.platform.map(|p| p.mode).unwrap_or_default(),
        })
    }

    /// The node's Talos version, parsed.
    ///
    /// # Errors
    /// As [`Client::version`]; [`Error::Protocol`] when the tag does not parse.
    pub async fn talos_version(&self) -> Result<TalosVersion> {
        let tag = self.version().await?.tag;
        TalosVersion::parse(&tag).ok_or(Error::Protocol {
            method: "/machine.MachineService/Version",
            message: format!("unparsable version tag {tag:?}"),
        })
    }

    /// ApplyConfiguration, always with an explicit mode.
    ///
    /// # Errors
    /// As every call; the node refuses invalid configs, NO_REBOOT changes that need a reboot,
    /// machine type changes and concurrent applies.
    pub async fn apply_configuration(
        &self,
        config: &[u8],
        mode: ApplyMode,
        dry_run: bool,
        try_timeout: Option<Duration>,
    ) -> Result<ApplyOutcome> {
        const M: &str = "/machine.MachineService/ApplyConfiguration";
        let msg = pb::ApplyConfigurationRequest {
            data: config.to_vec(),
            mode: mode.wire(),
            dry_run,
            try_mode_timeout: try_timeout.map(|d| prost_types::Duration {
                seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
            }),
        };
        let reply = self
            .call(M, msg, |ch, req| async move {
                MachineServiceClient::new(ch)
                    .apply_configuration(req)
                    .await
                    .map(|r| r.into_inner())
            })
            .await?;
        let msg = first(M, reply.messages, |m| &m.metadata)?;
        Ok(ApplyOutcome {
            mode: ApplyMode::from_wire(msg.mode),
            mode_details: msg.mode_details,
            warnings: msg.warnings,
        })
    }

    /// Reset as Omni does: `graceful` leaves etcd first on control planes, then the STATE
    /// (machine config) and EPHEMERAL (/var, etcd data) volumes are wiped; the installed Talos
    /// stays, so the node comes back in maintenance mode on it (`reboot`; else it halts).
    /// Without these labels Talos would wipe the whole system disk, boot partitions included.
    ///
    /// # Errors
    /// As every call.
    pub async fn reset(&self, graceful: bool, reboot: bool) -> Result<()> {
        const M: &str = "/machine.MachineService/Reset";
        let wipe = |label: &str| pb::ResetPartitionSpec {
            label: label.into(),
            wipe: true,
        };
        let msg = pb::ResetRequest {
            graceful,
            reboot,
            system_partitions_to_wipe: vec![wipe("STATE"), wipe("EPHEMERAL")],
            mode: pb::reset_request::WipeMode::SystemDisk as i32,
            ..Default::default()
        };
        let reply = self
            .call(M, msg, |ch, req| async move {
                MachineServiceClient::new(ch)
                    .reset(req)
                    .await
                    .map(|r| r.into_inner())
            })
            .await?;
        first(M, reply.messages, |m| &m.metadata).map(drop)
    }

    /// Bootstrap etcd on this (first) control plane.
    ///
    /// # Errors
    /// As every call; `AlreadyExists` when etcd already has data.
    pub async fn bootstrap(&self) -> Result<()> {
        const M: &str = "/machine.MachineService/Bootstrap";
        let reply = self
            .call(M, pb::BootstrapRequest::default(), |ch, req| async move {
                MachineServiceClient::new(ch)
                    .bootstrap(req)
                    .await
                    .map(|r| r.into_inner())
            })
            .await?;
        first(M, reply.messages, |m| &m.metadata).map(drop)
    }

    /// Reboot.
    ///
    /// # Errors
    /// As every call.
    pub async fn reboot(&self) -> Result<()> {
        const M: &str = "/machine.MachineService/Reboot";
        let reply = self
            .call(M, pb::RebootRequest::default(), |ch, req| async move {
                MachineServiceClient::new(ch)
                    .reboot(req)
                    .await
                    .map(|r| r.into_inner())
            })
            .await?;
        first(M, reply.messages, |m| &m.metadata).map(drop)
    }

    /// The admin kubeconfig, as the `.tar.gz` the node streams.
    ///
    /// # Errors
    /// As every call.
    pub async fn kubeconfig(&self) -> Result<Vec<u8>> {
        const M: &str = "/machine.MachineService/Kubeconfig";
        self.call(M, (), |ch, req| async move {
            collect(
                MachineServiceClient::new(ch)
                    .kubeconfig(req)
                    .await?
                    .into_inner(),
            )
            .await
        })
        .await
    }

    /// The machine config the node runs, byte for byte as it was submitted, the way `talosctl
    /// get machineconfig` reads it: COSI `State.Get` of `MachineConfigs.config.talos.dev`
    /// `v1alpha1` in namespace `config`, whose protobuf spec carries the YAML
    /// (`pkg/machinery/resources/config/machine_config.go`). The resource is sensitive: only
    /// `os:admin` may read it (`internal/app/resources/access.go`). Holds secrets.
    ///
    /// # Errors
    /// As every call; [`Error::Protocol`] when the reply has no spec.
    pub async fn machine_config(&self) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        use prost::Message as _;

        use crate::api::cosi::GetRequest;
        use crate::api::cosi::state_client::StateClient;
        use crate::api::resource_config::MachineConfigSpec;
        const M: &str = "/cosi.resource.State/Get";
        let msg = GetRequest {
            namespace: "config".into(),
            r#type: "MachineConfigs.config.talos.dev".into(),
            id: "v1alpha1".into(),
            options: None,
        };
        let reply = self
            .call(M, msg, |ch, req| async move {
                StateClient::new(ch).get(req).await.map(|r| r.into_inner())
            })
            .await?;
        let protocol = |message: &str| Error::Protocol {
            method: M,
            message: message.into(),
        };
        let spec = reply
            .resource
            .and_then(|r| r.spec)
            .ok_or_else(|| protocol("the resource has no spec"))?;
        let proto_spec = zeroize::Zeroizing::new(spec.proto_spec);
        let decoded = MachineConfigSpec::decode(proto_spec.as_slice())
            .map_err(|_| protocol("the spec is not a MachineConfigSpec"))?;
        let yaml = zeroize::Zeroizing::new(decoded.yaml_marshalled);
        drop(zeroize::Zeroizing::new(spec.yaml_spec));
        Ok(yaml)
    }

    /// The node's services.
    ///
    /// # Errors
    /// As every call.
    pub async fn service_list(&self) -> Result<Vec<ServiceStatus>> {
        const M: &str = "/machine.MachineService/ServiceList";
        let reply = self
            .call(M, (), |ch, req| async move {
                MachineServiceClient::new(ch)
                    .service_list(req)
                    .await
                    .map(|r| r.into_inner())
            })
            .await?;
        let msg = first(M, reply.messages, |m| &m.metadata)?;
        Ok(msg
            .services
            .into_iter()
            .map(|s| ServiceStatus {
                healthy: s.health.as_ref().is_some_and(|h| h.healthy),
                // No health message at all: nothing is known about the check either.
                health_unknown: s.health.as_ref().is_none_or(|h| h.unknown),
                last_event: s
                    .events
                    .as_ref()
                    .and_then(|e| e.events.last())
                    .map(|e| format!("[{}] {}", e.state, e.msg)),
                id: s.id,
                state: s.state,
            })
            .collect())
    }
}

/// Concatenates a `common.Data` stream.
pub(crate) async fn collect(
    mut stream: tonic::Streaming<crate::api::common::Data>,
) -> std::result::Result<Vec<u8>, Status> {
    let mut out = Vec::new();
    while let Some(chunk) = stream.message().await? {
        out.extend_from_slice(&chunk.bytes);
    }
    Ok(out)
}

/// The single per-node message of a reply; a `metadata.error` set by a proxy becomes an error.
pub(crate) fn first<T>(
    method: &'static str,
    messages: Vec<T>,
    meta: impl Fn(&T) -> &Option<Metadata>,
) -> Result<T> {
    let msg = messages.into_iter().next().ok_or(Error::Protocol {
        method,
        message: "reply has no message".into(),
    })?;
    if let Some(m) = meta(&msg)
        && !m.error.is_empty()
    {
        return Err(Error::Rpc {
            method,
            code: tonic::Code::Unknown,
            message: m.error.clone(),
        });
    }
    Ok(msg)
}

impl TalosNode for Client {
    fn version(&self) -> BoxFuture<'_, Result<VersionInfo>> {
        Box::pin(Client::version(self))
    }
    fn apply_configuration<'a>(
        &'a self,
        config: &'a [u8],
        mode: ApplyMode,
        dry_run: bool,
        try_timeout: Option<Duration>,
    ) -> BoxFuture<'a, Result<ApplyOutcome>> {
        Box::pin(Client::apply_configuration(
            self,
            config,
            mode,
            dry_run,
            try_timeout,
        ))
    }
    fn upgrade<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Result<UpgradeOutcome>> {
        Box::pin(Client::upgrade(self, image))
    }
    fn reset(&self, graceful: bool, reboot: bool) -> BoxFuture<'_, Result<()>> {
        Box::pin(Client::reset(self, graceful, reboot))
    }
    fn bootstrap(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(Client::bootstrap(self))
    }
    fn reboot(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(Client::reboot(self))
    }
    fn etcd_members(&self) -> BoxFuture<'_, Result<Vec<EtcdMember>>> {
        Box::pin(Client::etcd_member_list(self))
    }
    fn etcd_remove_member(&self, id: u64) -> BoxFuture<'_, Result<()>> {
        Box::pin(Client::etcd_remove_member_by_id(self, id))
    }
    fn etcd_leave(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(Client::etcd_leave_cluster(self))
    }
    fn etcd_forfeit_leadership(&self) -> BoxFuture<'_, Result<String>> {
        Box::pin(Client::etcd_forfeit_leadership(self))
    }
    fn etcd_status(&self) -> BoxFuture<'_, Result<EtcdMemberStatus>> {
        Box::pin(Client::etcd_status(self))
    }
    fn services(&self) -> BoxFuture<'_, Result<Vec<ServiceStatus>>> {
        Box::pin(Client::service_list(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_split_with_default_port() {
        assert_eq!(
            split_endpoint("127.0.10.1").unwrap(),
            ("127.0.10.1".into(), 50000)
        );
        assert_eq!(
            split_endpoint("127.0.10.1:5").unwrap(),
            ("127.0.10.1".into(), 5)
        );
        assert_eq!(split_endpoint("::1").unwrap(), ("[::1]".into(), 50000));
        assert_eq!(split_endpoint("[::1]:7").unwrap(), ("[::1]".into(), 7));
        assert!(split_endpoint("").is_err());
    }
}
