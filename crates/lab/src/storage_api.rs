//! StorageService.Disks, which a node answers configured and in maintenance mode alike: up to
//! 1.12 the maintenance server registers `storaged.Server` (v1.11
//! `internal/app/maintenance/server.go`, `Register`); from 1.13 apid serves maintenance mode and
//! anonymous callers have `os:reader`, which may call Disks (v1.13
//! `internal/app/machined/pkg/system/services/machined.go`, the method's roles). talosctl's
//! `reset --reboot --wait` asks it over the insecure maintenance client: an answer means the
//! node is back in maintenance mode (`cmd/talosctl/cmd/talos/reset.go`).
//!
//! A lab machine has one disk. `system_disk` follows `internal/app/storaged/server.go`: the
//! disk Talos is installed on, so false on a machine that boots its install media (never
//! installed, or its whole system disk wiped by a reset).

use serde_json::json;
use tonic::{Request, Response};
use vixen_talos::api::storage as pb;
use vixen_talos::api::storage::storage_service_server::StorageService;

use crate::server::{NodeApi, Reply, parts};
use crate::tls::PeerInfo;

const READER: &[&str] = &["os:admin", "os:operator", "os:reader"];

/// The lab machine's disk.
const DISK_BYTES: u64 = 10 * 1024 * 1024 * 1024;

#[tonic::async_trait]
impl StorageService for NodeApi {
    async fn disks(&self, req: Request<()>) -> Reply<pb::DisksResponse> {
        let (md, peer, ()) = parts!(req);
        let (t, p, disk) = self
            .run(
                "/storage.StorageService/Disks",
                &md,
                peer.as_ref(),
                json!({}),
                READER,
                |n| async move {
                    Ok(pb::Disk {
                        size: DISK_BYTES,
                        model: "vixen lab disk".into(),
                        device_name: "/dev/sda".into(),
                        serial: format!("LAB-{}", n.spec.name),
                        r#type: pb::disk::DiskType::Ssd as i32,
                        bus_path: "/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0".into(),
                        system_disk: n.st().installed,
                        subsystem: "/sys/class/block".into(),
                        ..Default::default()
                    })
                },
            )
            .await?;
        Ok(Response::new(pb::DisksResponse {
            messages: vec![pb::Disks {
                metadata: crate::apid::meta(&t, p),
                disks: vec![disk],
            }],
        }))
    }
}
