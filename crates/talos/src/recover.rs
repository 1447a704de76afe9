//! etcd disaster recovery through Talos: `EtcdRecover` uploads a snapshot (client streaming,
//! `common.Data` chunks) and `Bootstrap{recover_etcd: true}` makes the node restore it into a
//! new one-member cluster (internal/app/machined/internal/server/v1alpha1/v1alpha1_server.go
//! `EtcdRecover` and `Bootstrap`; the restore itself is `recoverFromSnapshot` in
//! internal/app/machined/pkg/system/services/etcd.go).

use crate::api::common::Data;
use crate::api::machine as pb;
use crate::api::machine::machine_service_client::MachineServiceClient;
use crate::client::{Client, first};
use crate::error::Result;

/// Chunk size of the upload (Talos streams 4 KiB chunks the other way; any size is accepted).
const CHUNK: usize = 64 * 1024;

impl Client {
    /// Uploads `snapshot` (as EtcdSnapshot produced it) for a later recovery bootstrap.
    ///
    /// # Errors
    /// As every call; Talos answers `FailedPrecondition` while its etcd service is not waiting
    /// for a bootstrap yet.
    pub async fn etcd_recover(&self, snapshot: &[u8]) -> Result<()> {
        const M: &str = "/machine.MachineService/EtcdRecover";
        let chunks: Vec<Data> = snapshot
            .chunks(CHUNK)
            .map(|c| Data {
                metadata: None,
                bytes: c.to_vec(),
            })
            .collect();
        let reply = self
            .call(M, chunks, |ch, req| async move {
                let (meta, ext, chunks) = req.into_parts();
                let req = tonic::Request::from_parts(meta, ext, tokio_stream::iter(chunks));
                MachineServiceClient::new(ch)
                    .etcd_recover(req)
                    .await
                    .map(|r| r.into_inner())
            })
            .await?;
        first(M, reply.messages, |m| &m.metadata).map(drop)
    }

    /// Bootstrap from the uploaded snapshot (`recover_etcd`), optionally without etcd's hash
    /// check (for a copied data directory instead of a snapshot).
    ///
    /// # Errors
    /// As every call; `AlreadyExists` when the node's etcd has data.
    pub async fn bootstrap_recover(&self, skip_hash_check: bool) -> Result<()> {
        const M: &str = "/machine.MachineService/Bootstrap";
        let msg = pb::BootstrapRequest {
            recover_etcd: true,
            recover_skip_hash_check: skip_hash_check,
        };
        let reply = self
            .call(M, msg, |ch, req| async move {
                MachineServiceClient::new(ch)
                    .bootstrap(req)
                    .await
                    .map(|r| r.into_inner())
            })
            .await?;
        first(M, reply.messages, |m| &m.metadata).map(drop)
    }
}

impl Client {
    /// The whole recovery on a freshly configured control plane, as `talosctl bootstrap
    /// --recover-from` does it: wait for CRI (Bootstrap is not allowed before), upload the
    /// snapshot (retried while Talos answers that its etcd service is not ready for it), then
    /// the recovery bootstrap (retried while "not available yet" / "time is not in sync").
    ///
    /// # Errors
    /// The first error that is not one of those, or the last one at `deadline`.
    pub async fn recover_when_ready(
        &self,
        snapshot: &[u8],
        deadline: std::time::Duration,
    ) -> Result<()> {
        use std::time::Duration;
        let until = tokio::time::Instant::now() + deadline;
        while tokio::time::Instant::now() < until {
            let services = self.service_list().await?;
            if services
                .iter()
                .any(|s| s.id == "cri" && s.state == "Running")
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        loop {
            match self.etcd_recover(snapshot).await {
                Err(e)
                    if e.code() == Some(tonic::Code::FailedPrecondition)
                        && tokio::time::Instant::now() < until =>
                {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                other => {
                    other?;
                    break;
                }
            }
        }
        loop {
            match self.bootstrap_recover(false).await {
                Err(e)
                    if crate::steps::bootstrap_not_ready(&e)
                        && tokio::time::Instant::now() < until =>
                {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                other => return other,
            }
        }
    }
}
