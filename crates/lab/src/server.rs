//! The node's apid stand-in: MachineService (and LifecycleService on 1.13+) over the node's TLS,
//! with Talos' role checks, maintenance-mode refusals, `node`-key proxying to another lab node,
//! and one `calls.jsonl` record per RPC received.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::transport::Server;
use tonic::{Request, Response, Status};
use vixen_talos::ApplyMode;
use vixen_talos::api::common::{Data, Metadata};
use vixen_talos::api::machine as pb;
use vixen_talos::api::machine::lifecycle_service_server::{
    LifecycleService, LifecycleServiceServer,
};
use vixen_talos::api::machine::machine_service_server::{MachineService, MachineServiceServer};

use crate::node::{Mode, Node};
use crate::tls::{PeerInfo, TlsConn};
use crate::{Role, etcd, kubeconfig};

const ADMIN: &[&str] = &["os:admin"];
const OPERATOR: &[&str] = &["os:admin", "os:operator"];
const READER: &[&str] = &["os:admin", "os:operator", "os:reader"];
const BACKUP: &[&str] = &["os:admin", "os:operator", "os:etcd:backup"];

type Reply<T> = Result<Response<T>, Status>;
type DataStream = Pin<Box<dyn Stream<Item = Result<Data, Status>> + Send>>;
type UpgradeStream =
    Pin<Box<dyn Stream<Item = Result<pb::LifecycleServiceUpgradeResponse, Status>> + Send>>;

/// Starts serving `incoming` until `cut` fires.
pub(crate) fn spawn(
    node: Arc<Node>,
    incoming: mpsc::Receiver<std::io::Result<TlsConn>>,
    cut: CancellationToken,
    maintenance: bool,
) {
    let lifecycle = !maintenance && node.version().has_lifecycle_service();
    let api = NodeApi {
        node,
        cut: cut.clone(),
        maintenance,
    };
    let router = Server::builder()
        .add_service(MachineServiceServer::new(api.clone()))
        .add_optional_service(lifecycle.then(|| LifecycleServiceServer::new(api)));
    tokio::spawn(async move {
        let _ = router
            .serve_with_incoming_shutdown(ReceiverStream::new(incoming), cut.cancelled_owned())
            .await;
    });
}

#[derive(Clone)]
struct NodeApi {
    node: Arc<Node>,
    cut: CancellationToken,
    maintenance: bool,
}

/// How maintenance mode answers a method. Up to 1.12 a separate maintenance server offers
/// ApplyConfiguration; Version, Upgrade and Reset need admin, which anonymous clients only get
/// over SideroLink; the rest is not implemented there. From 1.13 apid serves maintenance mode:
/// anonymous clients are `os:reader` plus ApplyConfiguration.
fn maintenance_refusal(method: &str, v113: bool) -> Option<Status> {
    let name = method.rsplit('/').next().unwrap_or(method);
    match (name, v113) {
        ("ApplyConfiguration", _) | ("Version" | "ServiceList", true) => None,
        ("EtcdMemberList" | "EtcdStatus", true) => Some(Status::failed_precondition(
            "etcd is not running in maintenance mode",
        )),
        (_, true) => Some(Status::permission_denied("not authorized")),
        ("Version" | "Upgrade" | "Reset", false) => Some(Status::permission_denied(
            "in maintenance mode this API needs admin, available over SideroLink only",
        )),
        (_, false) => Some(Status::unimplemented(format!(
            "{name} is not available in maintenance mode"
        ))),
    }
}

impl NodeApi {
    /// Routes by the `node` key, checks mode and roles, runs `f` on the target, records the call.
    async fn run<T, F, Fut>(
        &self,
        method: &'static str,
        md: &MetadataMap,
        peer: Option<&PeerInfo>,
        mut detail: Value,
        allowed: &[&str],
        f: F,
    ) -> Result<(Arc<Node>, bool, T), Status>
    where
        F: FnOnce(Arc<Node>) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let routed = self.route(md);
        let (target, proxied) = match &routed {
            Ok((t, p)) => (t.clone(), *p),
            Err(_) => (self.node.clone(), false),
        };
        if proxied {
            detail["via"] = json!(self.node.spec.name);
        }
        let result = async {
            routed?;
            if self.cut.is_cancelled() || self.node.mode() == Mode::Rebooting {
                return Err(Status::unavailable("node is rebooting"));
            }
            if self.maintenance {
                if let Some(s) =
                    maintenance_refusal(method, self.node.version().has_lifecycle_service())
                {
                    return Err(s);
                }
            } else {
                let roles = peer.and_then(|p| p.roles.clone()).unwrap_or_default();
                if !roles.iter().any(|r| allowed.contains(&r.as_str())) {
                    return Err(Status::permission_denied(format!(
                        "{method}: not authorized (needs one of {})",
                        allowed.join(", ")
                    )));
                }
            }
            f(target.clone()).await
        }
        .await;
        let text = match &result {
            Ok(_) => "ok".to_string(),
            Err(s) => format!("{:?}: {}", s.code(), s.message()),
        };
        if let Some(lab) = self.node.lab() {
            let client = peer.and_then(|p| p.client.clone());
            lab.journal
                .record(&target.spec.name, method, detail, text, client);
        }
        result.map(|t| (target, proxied, t))
    }

    /// The `node` metadata key: apid proxies one-to-one to that node. Lab nodes live in one
    /// process, so the "proxy" calls the target's handlers directly, as long as the target is up.
    fn route(&self, md: &MetadataMap) -> Result<(Arc<Node>, bool), Status> {
        let Some(key) = md.get("node").and_then(|v| v.to_str().ok()) else {
            return Ok((self.node.clone(), false));
        };
        let me = &self.node;
        let ip = key.parse().ok();
        if ip.is_some_and(|ip| me.listens_on(ip)) || key == me.hostname() || key == me.spec.name {
            return Ok((me.clone(), false));
        }
        if self.maintenance {
            return Err(Status::failed_precondition(
                "proxying is not available in maintenance mode",
            ));
        }
        let lab = me.lab().ok_or_else(|| Status::unavailable("lab stopped"))?;
        match lab.find(key) {
            Some(n) if n.mode() == Mode::Configured && n.listens_on(n.current_address()) => {
                Ok((n, true))
            }
            _ => Err(Status::unavailable(format!(
                "{key}:50000: connection refused"
            ))),
        }
    }
}

fn meta(target: &Node, proxied: bool) -> Option<Metadata> {
    Some(Metadata {
        hostname: if proxied {
            target.hostname()
        } else {
            String::new()
        },
        error: String::new(),
    })
}

fn chunks(meta: Option<Metadata>, bytes: Vec<u8>) -> DataStream {
    let items: Vec<Result<Data, Status>> = bytes
        .chunks(64 * 1024)
        .map(|c| {
            Ok(Data {
                metadata: meta.clone(),
                bytes: c.to_vec(),
            })
        })
        .collect();
    Box::pin(futures::stream::iter(items))
}

macro_rules! parts {
    ($req:ident) => {{
        let peer = $req.extensions().get::<PeerInfo>().cloned();
        let md = $req.metadata().clone();
        (md, peer, $req.into_inner())
    }};
}

#[tonic::async_trait]
impl MachineService for NodeApi {
    async fn apply_configuration(
        &self,
        req: Request<pb::ApplyConfigurationRequest>,
    ) -> Reply<pb::ApplyConfigurationResponse> {
        let (md, peer, r) = parts!(req);
        let mode = ApplyMode::from_wire(r.mode).unwrap_or(ApplyMode::Reboot);
        let try_timeout = r.try_mode_timeout.map(|d| {
            std::time::Duration::new(
                u64::try_from(d.seconds).unwrap_or(0),
                u32::try_from(d.nanos).unwrap_or(0),
            )
        });
        let detail = json!({"mode": mode.name(), "dry_run": r.dry_run,
            "try_mode_timeout_ms": try_timeout.map(|d| d.as_millis() as u64)});
        let maintenance = self.maintenance;
        let (t, p, applied) = self
            .run(
                "/machine.MachineService/ApplyConfiguration",
                &md,
                peer.as_ref(),
                detail,
                ADMIN,
                |n| async move {
                    if maintenance {
                        n.apply_maintenance(&r.data, mode, r.dry_run).await
                    } else {
                        n.apply_configured(&r.data, mode, r.dry_run, try_timeout)
                            .await
                    }
                },
            )
            .await?;
        Ok(Response::new(pb::ApplyConfigurationResponse {
            messages: vec![pb::ApplyConfiguration {
                metadata: meta(&t, p),
                warnings: applied.warnings,
                mode: applied.mode.wire(),
                mode_details: applied.details,
            }],
        }))
    }

    async fn bootstrap(&self, req: Request<pb::BootstrapRequest>) -> Reply<pb::BootstrapResponse> {
        let (md, peer, r) = parts!(req);
        let detail = json!({"recover_etcd": r.recover_etcd});
        let (t, p, ()) = self
            .run(
                "/machine.MachineService/Bootstrap",
                &md,
                peer.as_ref(),
                detail,
                ADMIN,
                |n| async move {
                    if r.recover_etcd {
                        return Err(Status::unimplemented(
                            "etcd recovery is not simulated by the lab",
                        ));
                    }
                    n.bootstrap().await
                },
            )
            .await?;
        Ok(Response::new(pb::BootstrapResponse {
            messages: vec![pb::Bootstrap {
                metadata: meta(&t, p),
            }],
        }))
    }

    async fn etcd_member_list(
        &self,
        req: Request<pb::EtcdMemberListRequest>,
    ) -> Reply<pb::EtcdMemberListResponse> {
        let (md, peer, r) = parts!(req);
        let detail = json!({"query_local": r.query_local});
        let (t, p, members) = self
            .run(
                "/machine.MachineService/EtcdMemberList",
                &md,
                peer.as_ref(),
                detail,
                READER,
                |n| async move {
                    let mut c = etcd::connect(&[n.local_etcd()?]).await?;
                    let list = c.member_list().await.map_err(etcd::to_status)?;
                    Ok(list
                        .members()
                        .iter()
                        .map(|m| pb::EtcdMember {
                            id: m.id(),
                            hostname: m.name().to_string(),
                            peer_urls: m.peer_urls().to_vec(),
                            client_urls: m.client_urls().to_vec(),
                            is_learner: m.is_learner(),
                        })
                        .collect())
                },
            )
            .await?;
        Ok(Response::new(pb::EtcdMemberListResponse {
            messages: vec![pb::EtcdMembers {
                metadata: meta(&t, p),
                legacy_members: vec![],
                members,
            }],
        }))
    }

    async fn etcd_remove_member_by_id(
        &self,
        req: Request<pb::EtcdRemoveMemberByIdRequest>,
    ) -> Reply<pb::EtcdRemoveMemberByIdResponse> {
        let (md, peer, r) = parts!(req);
        let detail = json!({"member_id": format!("{:x}", r.member_id)});
        let (t, p, ()) = self
            .run(
                "/machine.MachineService/EtcdRemoveMemberByID",
                &md,
                peer.as_ref(),
                detail,
                ADMIN,
                |n| async move { n.etcd_remove(r.member_id).await },
            )
            .await?;
        Ok(Response::new(pb::EtcdRemoveMemberByIdResponse {
            messages: vec![pb::EtcdRemoveMemberById {
                metadata: meta(&t, p),
            }],
        }))
    }

    async fn etcd_leave_cluster(
        &self,
        req: Request<pb::EtcdLeaveClusterRequest>,
    ) -> Reply<pb::EtcdLeaveClusterResponse> {
        let (md, peer, _) = parts!(req);
        let (t, p, ()) = self
            .run(
                "/machine.MachineService/EtcdLeaveCluster",
                &md,
                peer.as_ref(),
                json!({}),
                ADMIN,
                |n| async move { n.etcd_leave().await },
            )
            .await?;
        Ok(Response::new(pb::EtcdLeaveClusterResponse {
            messages: vec![pb::EtcdLeaveCluster {
                metadata: meta(&t, p),
            }],
        }))
    }

    async fn etcd_forfeit_leadership(
        &self,
        req: Request<pb::EtcdForfeitLeadershipRequest>,
    ) -> Reply<pb::EtcdForfeitLeadershipResponse> {
        let (md, peer, _) = parts!(req);
        let (t, p, member) = self
            .run(
                "/machine.MachineService/EtcdForfeitLeadership",
                &md,
                peer.as_ref(),
                json!({}),
                ADMIN,
                |n| async move { n.etcd_forfeit().await },
            )
            .await?;
        Ok(Response::new(pb::EtcdForfeitLeadershipResponse {
            messages: vec![pb::EtcdForfeitLeadership {
                metadata: meta(&t, p),
                member,
            }],
        }))
    }

    type EtcdSnapshotStream = DataStream;

    async fn etcd_snapshot(&self, req: Request<pb::EtcdSnapshotRequest>) -> Reply<DataStream> {
        let (md, peer, _) = parts!(req);
        let (t, p, bytes) = self
            .run(
                "/machine.MachineService/EtcdSnapshot",
                &md,
                peer.as_ref(),
                json!({}),
                BACKUP,
                |n| async move {
                    let mut c = etcd::connect(&[n.local_etcd()?]).await?;
                    let mut stream = c.snapshot().await.map_err(etcd::to_status)?;
                    let mut out = Vec::new();
                    while let Some(part) = stream.message().await.map_err(etcd::to_status)? {
                        out.extend_from_slice(part.blob());
                    }
                    Ok(out)
                },
            )
            .await?;
        Ok(Response::new(chunks(meta(&t, p), bytes)))
    }

    async fn etcd_status(&self, req: Request<()>) -> Reply<pb::EtcdStatusResponse> {
        let (md, peer, ()) = parts!(req);
        let (t, p, s) = self
            .run(
                "/machine.MachineService/EtcdStatus",
                &md,
                peer.as_ref(),
                json!({}),
                READER,
                |n| async move {
                    let mut c = etcd::connect(&[n.local_etcd()?]).await?;
                    let s = c.status().await.map_err(etcd::to_status)?;
                    Ok(pb::EtcdMemberStatus {
                        member_id: s.header().map(|h| h.member_id()).unwrap_or_default(),
                        protocol_version: s.version().to_string(),
                        storage_version: s.storage_version().to_string(),
                        db_size: s.db_size(),
                        db_size_in_use: s.raft_used_db_size(),
                        leader: s.leader(),
                        raft_index: s.raft_index(),
                        raft_term: s.raft_term(),
                        raft_applied_index: s.raft_applied_index(),
                        errors: s.errors().to_vec(),
                        is_learner: s.is_learner(),
                    })
                },
            )
            .await?;
        Ok(Response::new(pb::EtcdStatusResponse {
            messages: vec![pb::EtcdStatus {
                metadata: meta(&t, p),
                member_status: Some(s),
            }],
        }))
    }

    type KubeconfigStream = DataStream;

    async fn kubeconfig(&self, req: Request<()>) -> Reply<DataStream> {
        let (md, peer, ()) = parts!(req);
        let (t, p, bytes) = self
            .run(
                "/machine.MachineService/Kubeconfig",
                &md,
                peer.as_ref(),
                json!({}),
                ADMIN,
                |n| async move {
                    let cfg = n
                        .config()
                        .ok_or_else(|| Status::failed_precondition("not configured"))?;
                    if cfg.role != Role::Controlplane {
                        return Err(Status::failed_precondition(
                            "kubeconfig is only available on control planes",
                        ));
                    }
                    let api = n.lab().and_then(|l| l.kube.as_ref().and_then(|k| k.url()));
                    kubeconfig::archive(&cfg, api.as_deref())
                },
            )
            .await?;
        Ok(Response::new(chunks(meta(&t, p), bytes)))
    }

    async fn reboot(&self, req: Request<pb::RebootRequest>) -> Reply<pb::RebootResponse> {
        let (md, peer, r) = parts!(req);
        let detail = json!({"mode": r.mode});
        let (t, p, ()) = self
            .run(
                "/machine.MachineService/Reboot",
                &md,
                peer.as_ref(),
                detail,
                OPERATOR,
                |n| async move {
                    n.reboot_later();
                    Ok(())
                },
            )
            .await?;
        Ok(Response::new(pb::RebootResponse {
            messages: vec![pb::Reboot {
                metadata: meta(&t, p),
                actor_id: String::new(),
            }],
        }))
    }

    async fn reset(&self, req: Request<pb::ResetRequest>) -> Reply<pb::ResetResponse> {
        let (md, peer, r) = parts!(req);
        let detail = json!({"graceful": r.graceful, "reboot": r.reboot, "mode": r.mode});
        let (t, p, ()) = self
            .run(
                "/machine.MachineService/Reset",
                &md,
                peer.as_ref(),
                detail,
                ADMIN,
                |n| async move { n.reset(r.graceful, r.reboot).await },
            )
            .await?;
        Ok(Response::new(pb::ResetResponse {
            messages: vec![pb::Reset {
                metadata: meta(&t, p),
                actor_id: String::new(),
            }],
        }))
    }

    async fn service_list(&self, req: Request<()>) -> Reply<pb::ServiceListResponse> {
        let (md, peer, ()) = parts!(req);
        let maintenance = self.maintenance;
        let (t, p, services) = self
            .run(
                "/machine.MachineService/ServiceList",
                &md,
                peer.as_ref(),
                json!({}),
                READER,
                |n| async move { Ok(services(&n, maintenance).await) },
            )
            .await?;
        Ok(Response::new(pb::ServiceListResponse {
            messages: vec![pb::ServiceList {
                metadata: meta(&t, p),
                services,
            }],
        }))
    }

    async fn upgrade(&self, req: Request<pb::UpgradeRequest>) -> Reply<pb::UpgradeResponse> {
        let (md, peer, r) = parts!(req);
        let detail =
            json!({"image": r.image, "stage": r.stage, "force": r.force, "preserve": r.preserve});
        let (t, p, ack) = self
            .run(
                "/machine.MachineService/Upgrade",
                &md,
                peer.as_ref(),
                detail,
                ADMIN,
                |n| async move { n.upgrade_legacy(&r.image, r.stage, r.force).await },
            )
            .await?;
        Ok(Response::new(pb::UpgradeResponse {
            messages: vec![pb::Upgrade {
                metadata: meta(&t, p),
                ack,
                actor_id: String::new(),
            }],
        }))
    }

    async fn version(&self, req: Request<()>) -> Reply<pb::VersionResponse> {
        let (md, peer, ()) = parts!(req);
        let (t, p, tag) = self
            .run(
                "/machine.MachineService/Version",
                &md,
                peer.as_ref(),
                json!({}),
                READER,
                |n| async move { Ok(n.st().version.clone()) },
            )
            .await?;
        Ok(Response::new(pb::VersionResponse {
            messages: vec![pb::Version {
                metadata: meta(&t, p),
                version: Some(pb::VersionInfo {
                    tag,
                    os: "linux".into(),
                    arch: "amd64".into(),
                    ..Default::default()
                }),
                platform: Some(pb::PlatformInfo {
                    name: "lab".into(),
                    mode: "metal".into(),
                }),
                features: Some(pb::FeaturesInfo { rbac: true }),
            }],
        }))
    }
}

#[tonic::async_trait]
impl LifecycleService for NodeApi {
    type UpgradeStream = UpgradeStream;

    async fn upgrade(
        &self,
        req: Request<pb::LifecycleServiceUpgradeRequest>,
    ) -> Reply<UpgradeStream> {
        let (md, peer, r) = parts!(req);
        let image = r.source.map(|s| s.image_name).unwrap_or_default();
        let detail = json!({"image": image});
        let (_, _, lines) = self
            .run(
                "/machine.LifecycleService/Upgrade",
                &md,
                peer.as_ref(),
                detail,
                ADMIN,
                |n| async move { n.lifecycle_upgrade(&image) },
            )
            .await?;
        use pb::lifecycle_service_install_progress::Response as P;
        let mut items: Vec<Result<pb::LifecycleServiceUpgradeResponse, Status>> = lines
            .into_iter()
            .map(|l| Ok(progress(P::Message(l))))
            .collect();
        items.push(Ok(progress(P::ExitCode(0))));
        Ok(Response::new(Box::pin(futures::stream::iter(items))))
    }
}

fn progress(
    r: pb::lifecycle_service_install_progress::Response,
) -> pb::LifecycleServiceUpgradeResponse {
    pb::LifecycleServiceUpgradeResponse {
        progress: Some(pb::LifecycleServiceInstallProgress { response: Some(r) }),
    }
}

/// ServiceList: machined and apid always; trustd and etcd on control planes (etcd healthy only
/// when its member answers with a leader; "Preparing" while it waits to bootstrap or join);
/// kubelet once configured.
async fn services(n: &Node, maintenance: bool) -> Vec<pb::ServiceInfo> {
    let svc = |id: &str, state: &str, healthy: bool| pb::ServiceInfo {
        id: id.into(),
        state: state.into(),
        events: None,
        health: Some(pb::ServiceHealth {
            unknown: false,
            healthy,
            ..Default::default()
        }),
    };
    let mut out = vec![
        svc("apid", "Running", true),
        svc("machined", "Running", true),
    ];
    if maintenance {
        return out;
    }
    if n.role() == Role::Controlplane {
        match n.etcd_url() {
            Some(url) => {
                let ok = etcd::healthy(&url).await;
                out.push(svc("etcd", "Running", ok));
            }
            None => out.push(svc("etcd", "Preparing", false)),
        }
        out.push(svc("trustd", "Running", true));
    }
    out.push(svc("kubelet", "Running", true));
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}
