//! Client calls that make up the separate steps of an upgrade or a bootstrap, as talosctl takes
//! them: the legacy and 1.13+ upgrade calls, pulling the installer image (Talos 1.13+), reading
//! the boot ID to prove a reboot, and bootstrapping once the node accepts it.

use std::time::Duration;

use tonic::Code;

use crate::api::common::{ContainerDriver, ContainerdInstance, ContainerdNamespace};
use crate::api::machine as pb;
use crate::api::machine::image_service_client::ImageServiceClient;
use crate::api::machine::lifecycle_service_client::LifecycleServiceClient;
use crate::api::machine::machine_service_client::MachineServiceClient;
use crate::client::{Client, collect, first};
use crate::error::{Error, Result};
use crate::node::UpgradeOutcome;

/// The containerd instance talosctl 1.13 uses for installer images (`--namespace system`,
/// `cmd/talosctl/cmd/talos/image.go`): the pull and the upgrade must name the same one.
pub(crate) fn system_containerd() -> ContainerdInstance {
    ContainerdInstance {
        driver: ContainerDriver::Cri as i32,
        namespace: ContainerdNamespace::NsSystem as i32,
    }
}

/// Whether a Bootstrap refusal only means "not yet" (v1alpha1_server.go Bootstrap): CRI is not
/// up, or time is not in sync. Anything else (a worker, existing etcd data) is final.
pub fn bootstrap_not_ready(e: &Error) -> bool {
    matches!(e, Error::Rpc { code: Code::FailedPrecondition, message, .. }
        if message == "bootstrap is not available yet" || message == "time is not in sync yet")
}

impl Client {
    /// Legacy MachineService.Upgrade: the node installs and reboots itself.
    ///
    /// # Errors
    /// As every call; the node refuses when etcd would lose quorum (unless `force`).
    pub async fn upgrade_legacy(&self, image: &str, stage: bool, force: bool) -> Result<String> {
        const M: &str = "/machine.MachineService/Upgrade";
        let msg = pb::UpgradeRequest {
            image: image.to_string(),
            preserve: true,
            stage,
            force,
            reboot_mode: 0,
        };
        let reply = self
            .call(M, msg, |ch, req| async move {
                MachineServiceClient::new(ch)
                    .upgrade(req)
                    .await
                    .map(|r| r.into_inner())
            })
            .await?;
        Ok(first(M, reply.messages, |m| &m.metadata)?.ack)
    }

    /// LifecycleService.Upgrade (Talos 1.13+): installs `image` and streams progress; the node
    /// does not reboot. Returns the progress lines.
    ///
    /// # Errors
    /// As every call; [`Error::Rpc`] (`Internal`) when the installer exits non-zero.
    pub async fn lifecycle_upgrade(&self, image: &str) -> Result<Vec<String>> {
        const M: &str = "/machine.LifecycleService/Upgrade";
        let msg = pb::LifecycleServiceUpgradeRequest {
            containerd: Some(crate::steps::system_containerd()),
            source: Some(pb::InstallArtifactsSource {
                image_name: image.to_string(),
            }),
        };
        let (lines, code) = self
            .call(M, msg, |ch, req| async move {
                let mut stream = LifecycleServiceClient::new(ch)
                    .upgrade(req)
                    .await?
                    .into_inner();
                let (mut lines, mut code) = (Vec::new(), None);
                while let Some(item) = stream.message().await? {
                    use pb::lifecycle_service_install_progress::Response;
                    match item.progress.and_then(|p| p.response) {
                        Some(Response::Message(line)) => lines.push(line),
                        Some(Response::ExitCode(c)) => code = Some(c),
                        None => {}
                    }
                }
                Ok((lines, code))
            })
            .await?;
        match code {
            Some(0) => Ok(lines),
            Some(c) => Err(Error::Rpc {
                method: M,
                code: tonic::Code::Internal,
                message: format!("installer exited with {c}"),
            }),
            None => Err(Error::Protocol {
                method: M,
                message: "no exit code".into(),
            }),
        }
    }

    /// Upgrade to `image` the way the node's version wants it: 1.13+ ImageService.Pull,
    /// LifecycleService.Upgrade, then Reboot; up to 1.12 the legacy Upgrade (which reboots by itself).
    ///
    /// # Errors
    /// As the calls it makes.
    pub async fn upgrade(&self, image: &str) -> Result<UpgradeOutcome> {
        if self.talos_version().await?.has_lifecycle_service() {
            // 1.13+ installs from containerd only: pull first, as talosctl 1.13 does.
            self.pull_image(image).await?;
            let progress = self.lifecycle_upgrade(image).await?;
            self.reboot().await?;
            Ok(UpgradeOutcome::LifecycleThenReboot { progress })
        } else {
            let ack = self.upgrade_legacy(image, false, false).await?;
            Ok(UpgradeOutcome::Legacy { ack })
        }
    }

    /// ImageService.Pull (Talos 1.13+) into the system containerd; returns the pulled name
    /// (with digest). Call it before [`Client::lifecycle_upgrade`].
    ///
    /// # Errors
    /// As every call; `NotFound` when the image cannot be pulled (unknown registry, no such
    /// image); `Unimplemented` before 1.13.
    pub async fn pull_image(&self, image: &str) -> Result<String> {
        const M: &str = "/machine.ImageService/Pull";
        let msg = pb::ImageServicePullRequest {
            containerd: Some(system_containerd()),
            image_ref: image.to_string(),
        };
        let name = self
            .call(M, msg, |ch, req| async move {
                let mut stream = ImageServiceClient::new(ch).pull(req).await?.into_inner();
                let mut name = None;
                while let Some(item) = stream.message().await? {
                    if let Some(pb::image_service_pull_response::Response::Name(n)) = item.response
                    {
                        name = Some(n);
                    }
                }
                Ok(name)
            })
            .await?;
        name.ok_or(Error::Protocol {
            method: M,
            message: "the pull ended without the pulled image's name".into(),
        })
    }

    /// The node's boot ID (`/proc/sys/kernel/random/boot_id` through MachineService.Read): it
    /// changes on every boot, so a different value proves a reboot happened.
    ///
    /// # Errors
    /// As every call; `PermissionDenied` without the admin role.
    pub async fn boot_id(&self) -> Result<String> {
        const M: &str = "/machine.MachineService/Read";
        let msg = pb::ReadRequest {
            path: "/proc/sys/kernel/random/boot_id".into(),
        };
        let bytes = self
            .call(M, msg, |ch, req| async move {
                collect(MachineServiceClient::new(ch).read(req).await?.into_inner()).await
            })
            .await?;
        let id = String::from_utf8_lossy(&bytes).trim().to_string();
        if id.is_empty() {
            return Err(Error::Protocol {
                method: M,
                message: "empty boot id".into(),
            });
        }
        Ok(id)
    }

    /// Bootstrap once the node's `cri` service runs, retrying while the node answers "bootstrap
    /// is not available yet" or "time is not in sync yet" (see [`bootstrap_not_ready`]), for at
    /// most `deadline`.
    ///
    /// # Errors
    /// The last refusal once `deadline` passed; any other error (ServiceList's included) at once.
    pub async fn bootstrap_when_ready(&self, deadline: Duration) -> Result<()> {
        let until = tokio::time::Instant::now() + deadline;
        // Talos allows Bootstrap once CRI is up (`IsBootstrapAllowed`, v1alpha1_runtime.go):
        // wait for the `cri` service to run first, so that a healthy node gets one call.
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
            match self.bootstrap().await {
                Err(e) if bootstrap_not_ready(&e) && tokio::time::Instant::now() < until => {
                    tracing::debug!(endpoint = %self.endpoint(), error = %e, "bootstrap: not yet");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                other => return other,
            }
        }
    }

    /// The `Metadata.hostname` apid puts in a reply it proxied (the `node` key as given; empty
    /// without one), from a Version call.
    ///
    /// # Errors
    /// As every call.
    pub async fn reply_hostname(&self) -> Result<String> {
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
        Ok(msg.metadata.map(|m| m.hostname).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fault covered: retrying every FailedPrecondition would loop on a worker or re-bootstrap
    /// attempts; only Talos' two "not yet" texts are retried.
    #[test]
    fn only_not_yet_refusals_are_retried() {
        let rpc = |code, m: &str| Error::Rpc {
            method: "/machine.MachineService/Bootstrap",
            code,
            message: m.into(),
        };
        assert!(bootstrap_not_ready(&rpc(
            Code::FailedPrecondition,
            "bootstrap is not available yet"
        )));
        assert!(bootstrap_not_ready(&rpc(
            Code::FailedPrecondition,
            "time is not in sync yet"
        )));
        assert!(!bootstrap_not_ready(&rpc(
            Code::FailedPrecondition,
            "bootstrap can only be performed on a control plane node"
        )));
        assert!(!bootstrap_not_ready(&rpc(
            Code::AlreadyExists,
            "etcd data directory is not empty"
        )));
    }
}
