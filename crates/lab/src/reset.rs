//! MachineService.Reset as Talos does it (v1.11 and v1.13 `v1alpha1_server.go` Reset, the reset
//! sequence's `ResetSystemDisk` / `ResetSystemDiskPartitions` in `v1alpha1_sequencer_tasks.go`):
//!
//! - `system_partitions_to_wipe` names volumes (the lab knows EFI, BOOT, META, STATE and
//!   EPHEMERAL); an unknown label fails the call; labels with mode USER_DISKS are refused.
//! - With labels, only those with `wipe` are wiped: STATE holds the machine config (without it
//!   the node boots into maintenance on its installed version), EPHEMERAL holds /var (etcd data,
//!   the containerd image store).
//! - Without labels and a mode other than USER_DISKS the whole system disk is wiped, boot
//!   partitions included: the installed Talos is gone, and the machine boots its install media
//!   (the lab spec's `talos_version`) into maintenance mode, or nothing when the media was
//!   removed ([`crate::Fault::BootMediaRemoved`]).
//! - Graceful on a control plane leaves etcd first; the call answers at once with an actor ID and
//!   the reset runs afterwards (the `reset` sequence, `stopAllServices`, RESETTING events).

use std::sync::Arc;
use std::time::Duration;

use tonic::Status;
use vixen_talos::api::machine as pb;

use crate::events::Payload;
use crate::node::{Mode, Node};
use crate::{Role, etcd};

const VOLUMES: &[&str] = &["EFI", "BOOT", "META", "STATE", "EPHEMERAL"];

/// What a reset wipes.
#[derive(Debug, Default, PartialEq, Eq)]
struct Wipe {
    state: bool,
    ephemeral: bool,
    whole_disk: bool,
}

fn plan(req: &pb::ResetRequest) -> Result<Wipe, Status> {
    let user_disks = pb::reset_request::WipeMode::UserDisks as i32;
    let system_disk = pb::reset_request::WipeMode::SystemDisk as i32;
    if !req.user_disks_to_wipe.is_empty() && req.mode == system_disk {
        return Err(Status::unknown(
            "reset failed: invalid input, wipe mode SYSTEM_DISK doesn't support UserDisksToWipe \
             parameter",
        ));
    }
    if !req.user_disks_to_wipe.is_empty() {
        return Err(Status::unknown(format!(
            "reset user disk failed: device {} wasn't found",
            req.user_disks_to_wipe[0]
        )));
    }
    let mut wipe = Wipe::default();
    if !req.system_partitions_to_wipe.is_empty() {
        if req.mode == user_disks {
            return Err(Status::unknown(
                "reset failed: invalid input, wipe mode USER_DISKS doesn't support \
                 SystemPartitionsToWipe parameter",
            ));
        }
        for p in &req.system_partitions_to_wipe {
            if !VOLUMES.contains(&p.label.as_str()) {
                return Err(Status::unknown(format!(
                    "failed to get volume status with label {:?}: resource \
                     VolumeStatuses.block.talos.dev(runtime/{}@undefined) doesn't exist",
                    p.label, p.label
                )));
            }
            wipe.state |= p.wipe && p.label == "STATE";
            wipe.ephemeral |= p.wipe && p.label == "EPHEMERAL";
        }
    } else if req.mode != user_disks {
        wipe = Wipe {
            state: true,
            ephemeral: true,
            whole_disk: true,
        };
    }
    Ok(wipe)
}

impl Node {
    /// Reset (see the module docs).
    pub(crate) async fn reset(
        self: &Arc<Self>,
        actor: &str,
        req: &pb::ResetRequest,
    ) -> Result<(), Status> {
        let wipe = plan(req)?;
        if req.graceful
            && self.role() == Role::Controlplane
            && let Some(url) = self.etcd_url()
        {
            let _g = self.etcd_ops.lock().await;
            etcd::leave(&url)
                .await
                .map_err(|e| Status::unknown(format!("failed to leave etcd: {}", e.message())))?;
        }
        use pb::machine_status_event::MachineStage;
        self.events.emit(
            actor,
            Payload::Sequence("reset", pb::sequence_event::Action::Start),
        );
        self.events.emit(
            actor,
            Payload::Task("stopAllServices", pb::task_event::Action::Start),
        );
        self.events
            .emit(actor, Payload::Stage(MachineStage::Resetting, false));
        let node = self.clone();
        let reboot = req.reboot;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            node.go_down(Mode::Rebooting).await;
            let bootable = {
                let mut st = node.st();
                if wipe.ephemeral {
                    st.images.clear();
                }
                if wipe.state {
                    st.config = None;
                    st.staged = None;
                    st.listen = vec![node.spec.maintenance_address];
                }
                if wipe.whole_disk {
                    st.version.clone_from(&node.spec.talos_version);
                    st.pending_version = None;
                    st.installed = false;
                }
                !wipe.whole_disk || !st.faults.boot_media_removed
            };
            if wipe.ephemeral {
                etcd::wipe(&etcd::data_dir(&node.dir));
            }
            tokio::time::sleep(Duration::from_millis(node.lab().map_or(0, |l| l.reboot_ms))).await;
            if !reboot || !bootable {
                node.go_down(Mode::Down).await;
            } else if node.mode() == Mode::Rebooting
                && let Err(e) = node.boot().await
            {
                tracing::warn!(node = %node.spec.name, error = %e, "boot after reset failed");
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(label: &str) -> pb::ResetPartitionSpec {
        pb::ResetPartitionSpec {
            label: label.into(),
            wipe: true,
        }
    }

    #[test]
    fn labels_and_modes_decide_what_is_wiped() {
        let all = pb::ResetRequest::default();
        assert!(plan(&all).unwrap().whole_disk);
        let omni = pb::ResetRequest {
            system_partitions_to_wipe: vec![part("STATE"), part("EPHEMERAL")],
            ..Default::default()
        };
        assert_eq!(
            plan(&omni).unwrap(),
            Wipe {
                state: true,
                ephemeral: true,
                whole_disk: false
            }
        );
        let user = pb::ResetRequest {
            mode: 2,
            ..Default::default()
        };
        assert_eq!(plan(&user).unwrap(), Wipe::default());
        let bad = pb::ResetRequest {
            system_partitions_to_wipe: vec![part("NOPE")],
            ..Default::default()
        };
        assert_eq!(plan(&bad).unwrap_err().code(), tonic::Code::Unknown);
    }
}
