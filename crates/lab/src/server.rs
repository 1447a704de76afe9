//! The node's apid stand-in: MachineService and StorageService (and LifecycleService and
//! ImageService on 1.13+) over the node's TLS, with Talos' role checks, maintenance-mode
//! refusals, `node`-key proxying to another lab node, and one `calls.jsonl` record per RPC
//! received.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt as _};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::transport::Server;
use tonic::{Request, Response, Status};
use vixen_talos::ApplyMode;
use vixen_talos::api::common::{Data, Metadata};
use vixen_talos::api::cosi::state_server::StateServer;
use vixen_talos::api::machine as pb;
use vixen_talos::api::machine::image_service_server::ImageServiceServer;
use vixen_talos::api::machine::lifecycle_service_server::LifecycleServiceServer;
use vixen_talos::api::machine::machine_service_server::{MachineService, MachineServiceServer};
use vixen_talos::api::storage::storage_service_server::StorageServiceServer;

use crate::apid::{maintenance_refusal, meta, storage_version};
use crate::node::{Mode, Node, new_uuid};
use crate::tls::{PeerInfo, TlsConn};
use crate::versions::Talos;
use crate::{Role, etcd, kubeconfig, services};

pub(crate) const ADMIN: &[&str] = &["os:admin"];
pub(crate) const OPERATOR: &[&str] = &["os:admin", "os:operator"];
const READER: &[&str] = &["os:admin", "os:operator", "os:reader"];
const BACKUP: &[&str] = &["os:admin", "os:operator", "os:etcd:backup"];

pub(crate) type Reply<T> = Result<Response<T>, Status>;
type DataStream = Pin<Box<dyn Stream<Item = Result<Data, Status>> + Send>>;

/// Starts serving `incoming` until `cut` fires.
pub(crate) fn spawn(
    node: Arc<Node>,
    incoming: mpsc::Receiver<std::io::Result<TlsConn>>,
    cut: CancellationToken,
    maintenance: bool,
) {
    let v = Talos(node.version());
    let lifecycle = !maintenance && v.lifecycle_service();
    let images = !maintenance && v.image_service();
    let api = NodeApi {
        node,
        cut: cut.clone(),
        maintenance,
    };
    let router = Server::builder()
        .add_service(MachineServiceServer::new(api.clone()))
        .add_service(StorageServiceServer::new(api.clone()))
        .add_service(StateServer::new(api.clone()))
        .add_optional_service(lifecycle.then(|| LifecycleServiceServer::new(api.clone())))
        .add_optional_service(images.then(|| ImageServiceServer::new(api)));
    tokio::spawn(async move {
        let _ = router
            .serve_with_incoming_shutdown(ReceiverStream::new(incoming), cut.cancelled_owned())
            .await;
    });
}

#[derive(Clone)]
pub(crate) struct NodeApi {
    pub(crate) node: Arc<Node>,
    pub(crate) cut: CancellationToken,
    pub(crate) maintenance: bool,
}

impl NodeApi {
    /// Routes by the `node`/`nodes` keys, checks mode and roles, runs `f` on the target, records
    /// the call. Returns the target and the routing key (the reply's `Metadata.hostname`).
    pub(crate) async fn run<T, F, Fut>(
        &self,
        method: &'static str,
        md: &MetadataMap,
        peer: Option<&PeerInfo>,
        mut detail: Value,
        allowed: &[&str],
        f: F,
    ) -> Result<(Arc<Node>, Option<String>, T), Status>
    where
        F: FnOnce(Arc<Node>) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let routed = self.route(md);
        let (target, key) = match &routed {
            Ok((t, k)) => (t.clone(), k.clone()),
            Err(_) => (self.node.clone(), None),
        };
        if !Arc::ptr_eq(&target, &self.node) {
            detail["via"] = json!(self.node.spec.name);
        }
        let result = async {
            routed?;
            if self.cut.is_cancelled() || self.node.mode() == Mode::Rebooting {
                return Err(Status::unavailable("node is rebooting"));
            }
            if self.maintenance {
                if let Some(s) =
                    maintenance_refusal(method, Talos(self.node.version()).apid_in_maintenance())
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
        result.map(|t| (target, key, t))
    }
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

/// Caller, metadata and message of a request (also used by `image_api`).
macro_rules! parts {
    ($req:ident) => {{
        let peer = $req.extensions().get::<PeerInfo>().cloned();
        let md = $req.metadata().clone();
        (md, peer, $req.into_inner())
    }};
}
pub(crate) use parts;

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
        let detail =
            json!({"recover_etcd": r.recover_etcd, "skip_hash_check": r.recover_skip_hash_check});
        let (t, p, ()) = self
            .run(
                "/machine.MachineService/Bootstrap",
                &md,
                peer.as_ref(),
                detail,
                ADMIN,
                |n| async move {
                    if r.recover_etcd {
                        n.recover_bootstrap(r.recover_skip_hash_check).await
                    } else {
                        n.bootstrap().await
                    }
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
                    // Talos asks the cluster through every control plane unless query_local.
                    n.check_controlplane("member list")?;
                    let urls = if r.query_local {
                        vec![n.local_etcd("member list")?]
                    } else {
                        n.cluster_endpoints()?
                    };
                    let mut c = etcd::connect(&urls).await?;
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

    async fn etcd_recover(
        &self,
        req: Request<tonic::Streaming<Data>>,
    ) -> Reply<pb::EtcdRecoverResponse> {
        let (md, peer, mut stream) = parts!(req);
        // The upload is read first (a broken stream fails the call, nothing is kept).
        let mut bytes = Vec::new();
        let read = async {
            while let Some(d) = stream.message().await? {
                bytes.extend_from_slice(&d.bytes);
            }
            Ok::<(), Status>(())
        }
        .await;
        let size = bytes.len();
        let (t, p, ()) = self
            .run(
                "/machine.MachineService/EtcdRecover",
                &md,
                peer.as_ref(),
                json!({"bytes": size}),
                ADMIN,
                |n| async move {
                    read?;
                    n.etcd_recover(&bytes)
                },
            )
            .await?;
        Ok(Response::new(pb::EtcdRecoverResponse {
            messages: vec![pb::EtcdRecover {
                metadata: meta(&t, p),
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
                    let mut c = etcd::connect(&[n.local_etcd("etcd snapshot")?]).await?;
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
                    let mut c = etcd::connect(&[n.local_etcd("etcd status")?]).await?;
                    let s = c.status().await.map_err(etcd::to_status)?;
                    Ok(pb::EtcdMemberStatus {
                        member_id: s.header().map(|h| h.member_id()).unwrap_or_default(),
                        protocol_version: s.version().to_string(),
                        storage_version: storage_version(s.storage_version(), s.version()),
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

    type EventsStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

    /// The node's events (see `events`): the requested history, then live events until the
    /// connection is cut by a reboot, as talosctl's `--wait` expects.
    async fn events(&self, req: Request<pb::EventsRequest>) -> Reply<Self::EventsStream> {
        let (md, peer, r) = parts!(req);
        let detail = json!({"tail_events": r.tail_events, "with_actor_id": r.with_actor_id});
        let actor = Some(r.with_actor_id.clone()).filter(|a| !a.is_empty());
        let (t, p, (history, rx)) = self
            .run(
                "/machine.MachineService/Events",
                &md,
                peer.as_ref(),
                detail,
                READER,
                |n| async move {
                    let hello = n.events.hello(&r.with_actor_id);
                    let (history, rx) = n.events.subscribe(&r);
                    Ok((
                        std::iter::once(hello).chain(history).collect::<Vec<_>>(),
                        rx,
                    ))
                },
            )
            .await?;
        let m = meta(&t, p);
        let stamp = move |mut e: pb::Event| {
            e.metadata.clone_from(&m);
            e
        };
        let stamp2 = stamp.clone();
        let live = tokio_stream::wrappers::BroadcastStream::new(rx)
            .filter_map(move |e| {
                let keep = e
                    .ok()
                    .filter(|e| actor.as_ref().is_none_or(|a| &e.actor_id == a));
                futures::future::ready(keep.map(|e| Ok(stamp2(e))))
            })
            .take_until(self.cut.clone().cancelled_owned());
        let head = futures::stream::iter(history.into_iter().map(move |e| Ok(stamp(e))));
        Ok(Response::new(Box::pin(head.chain(live))))
    }

    type ReadStream = DataStream;

    /// Read: the lab serves `/proc/sys/kernel/random/boot_id` (a new UUID every boot), which
    /// talosctl reads before and after a reboot (`cmd/talosctl/pkg/talos/action`, `getBootID`).
    async fn read(&self, req: Request<pb::ReadRequest>) -> Reply<DataStream> {
        let (md, peer, r) = parts!(req);
        let detail = json!({"path": r.path});
        let (t, p, bytes) = self
            .run(
                "/machine.MachineService/Read",
                &md,
                peer.as_ref(),
                detail,
                ADMIN,
                |n| async move {
                    if r.path == "/proc/sys/kernel/random/boot_id" {
                        Ok(format!("{}\n", n.st().boot_id).into_bytes())
                    } else {
                        Err(Status::unimplemented(format!(
                            "the lab only serves /proc/sys/kernel/random/boot_id, not {}",
                            r.path
                        )))
                    }
                },
            )
            .await?;
        Ok(Response::new(chunks(meta(&t, p), bytes)))
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
        // Reboot, Reset and Upgrade answer with an actor ID that tags the events they cause
        // (`v1alpha1_server.go`: `uuid.New()` per call).
        let actor = new_uuid();
        let id = actor.clone();
        let (t, p, ()) = self
            .run(
                "/machine.MachineService/Reboot",
                &md,
                peer.as_ref(),
                detail,
                OPERATOR,
                |n| async move {
                    n.reboot_later_by(&id, "reboot");
                    Ok(())
                },
            )
            .await?;
        Ok(Response::new(pb::RebootResponse {
            messages: vec![pb::Reboot {
                metadata: meta(&t, p),
                actor_id: actor,
            }],
        }))
    }

    async fn reset(&self, req: Request<pb::ResetRequest>) -> Reply<pb::ResetResponse> {
        let (md, peer, r) = parts!(req);
        let detail = json!({"graceful": r.graceful, "reboot": r.reboot, "mode": r.mode});
        let actor = new_uuid();
        let id = actor.clone();
        let (t, p, ()) = self
            .run(
                "/machine.MachineService/Reset",
                &md,
                peer.as_ref(),
                detail,
                ADMIN,
                |n| async move { n.reset(&id, &r).await },
            )
            .await?;
        Ok(Response::new(pb::ResetResponse {
            messages: vec![pb::Reset {
                metadata: meta(&t, p),
                actor_id: actor,
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
                |n| async move { Ok(services::list(&n, maintenance).await) },
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
        let actor = new_uuid();
        let id = actor.clone();
        let (t, p, ack) = self
            .run(
                "/machine.MachineService/Upgrade",
                &md,
                peer.as_ref(),
                detail,
                ADMIN,
                |n| async move { n.upgrade_legacy(&id, &r.image, r.stage, r.force).await },
            )
            .await?;
        Ok(Response::new(pb::UpgradeResponse {
            messages: vec![pb::Upgrade {
                metadata: meta(&t, p),
                ack,
                actor_id: actor,
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
