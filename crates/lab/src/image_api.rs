//! The 1.13+ services beside MachineService (v1.13 `v1alpha1_server.go` `Register`):
//! `LifecycleService.Upgrade`, which installs an image already in containerd, and
//! `ImageService` (`api/machine/image.proto`), of which the lab serves List and Pull
//! (roles as in v1.13 `services/machined.go`: Pull for admin and operator).

use std::pin::Pin;

use futures::Stream;
use serde_json::json;
use tonic::{Request, Response, Status, Streaming};
use vixen_talos::api::machine as pb;
use vixen_talos::api::machine::image_service_server::ImageService;
use vixen_talos::api::machine::lifecycle_service_server::LifecycleService;

use crate::server::{ADMIN, NodeApi, OPERATOR, Reply, parts};
use crate::tls::PeerInfo;

const READER: &[&str] = &["os:admin", "os:operator", "os:reader"];

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The containerd instance of a request, as the lab keys its image store.
fn instance(c: Option<vixen_talos::api::common::ContainerdInstance>) -> (i32, i32) {
    c.map_or((0, 0), |c| (c.driver, c.namespace))
}

#[tonic::async_trait]
impl LifecycleService for NodeApi {
    type UpgradeStream = Boxed<pb::LifecycleServiceUpgradeResponse>;

    async fn upgrade(
        &self,
        req: Request<pb::LifecycleServiceUpgradeRequest>,
    ) -> Reply<Self::UpgradeStream> {
        let (md, peer, r) = parts!(req);
        let image = r.source.map(|s| s.image_name).unwrap_or_default();
        let at = instance(r.containerd);
        let detail = json!({"image": image, "containerd": [at.0, at.1]});
        let (_, _, lines) = self
            .run(
                "/machine.LifecycleService/Upgrade",
                &md,
                peer.as_ref(),
                detail,
                ADMIN,
                |n| async move { n.lifecycle_upgrade(&image, at) },
            )
            .await?;
        use pb::lifecycle_service_install_progress::Response as P;
        let progress = |r| pb::LifecycleServiceUpgradeResponse {
            progress: Some(pb::LifecycleServiceInstallProgress { response: Some(r) }),
        };
        let mut items: Vec<Result<pb::LifecycleServiceUpgradeResponse, Status>> = lines
            .into_iter()
            .map(|l| Ok(progress(P::Message(l))))
            .collect();
        items.push(Ok(progress(P::ExitCode(0))));
        Ok(Response::new(Box::pin(futures::stream::iter(items))))
    }
}

#[tonic::async_trait]
impl ImageService for NodeApi {
    type ListStream = Boxed<pb::ImageServiceListResponse>;
    type PullStream = Boxed<pb::ImageServicePullResponse>;

    async fn list(&self, req: Request<pb::ImageServiceListRequest>) -> Reply<Self::ListStream> {
        let (md, peer, r) = parts!(req);
        let at = instance(r.containerd);
        let (_, _, names) = self
            .run(
                "/machine.ImageService/List",
                &md,
                peer.as_ref(),
                json!({"containerd": [at.0, at.1]}),
                READER,
                |n| async move {
                    let mut v: Vec<String> = n
                        .st()
                        .images
                        .iter()
                        .filter(|(d, ns, _)| (*d, *ns) == at)
                        .map(|(_, _, name)| name.clone())
                        .collect();
                    v.sort();
                    Ok(v)
                },
            )
            .await?;
        let items: Vec<Result<pb::ImageServiceListResponse, Status>> = names
            .into_iter()
            .map(|name| {
                Ok(pb::ImageServiceListResponse {
                    digest: crate::images::digest(&name),
                    name,
                    ..Default::default()
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(items))))
    }

    async fn pull(&self, req: Request<pb::ImageServicePullRequest>) -> Reply<Self::PullStream> {
        let (md, peer, r) = parts!(req);
        let at = instance(r.containerd);
        let image = r.image_ref;
        let detail = json!({"image": image, "containerd": [at.0, at.1]});
        let (_, _, name) = self
            .run(
                "/machine.ImageService/Pull",
                &md,
                peer.as_ref(),
                detail,
                OPERATOR,
                |n| async move { n.pull_image(&image, at) },
            )
            .await?;
        let done = pb::ImageServicePullResponse {
            response: Some(pb::image_service_pull_response::Response::Name(name)),
        };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(done)]))))
    }

    async fn import(
        &self,
        _req: Request<Streaming<pb::ImageServiceImportRequest>>,
    ) -> Reply<pb::ImageServiceImportResponse> {
        Err(Status::unimplemented(
            "ImageService.Import is not simulated by the lab",
        ))
    }

    async fn remove(&self, _req: Request<pb::ImageServiceRemoveRequest>) -> Reply<()> {
        Err(Status::unimplemented(
            "ImageService.Remove is not simulated by the lab",
        ))
    }

    async fn verify(
        &self,
        _req: Request<pb::ImageServiceVerifyRequest>,
    ) -> Reply<pb::ImageServiceVerifyResponse> {
        Err(Status::unimplemented(
            "ImageService.Verify is not simulated by the lab",
        ))
    }
}
