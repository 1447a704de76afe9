//! What a node does for each RPC, independent of the wire: ApplyConfiguration in every mode,
//! upgrades, reset, bootstrap and the etcd operations against the node's real etcd.
//! Each piece says which Talos behaviour it follows.

use std::sync::Arc;
use std::time::Duration;

use tonic::Status;
use vixen_talos::ApplyMode;

use crate::config::{MachineConfig, applies_live, changed_paths, config_diff, image_tag};
use crate::etcd;
use crate::node::{Mode, Node, machine_ca};
use crate::versions::Talos;
use crate::{Role, tls, validate};

/// The answer to an apply: the mode used and the human-readable details.
pub(crate) struct Applied {
    pub mode: ApplyMode,
    pub details: String,
    /// Talos' validation warnings (empty without the talos-validate peer).
    pub warnings: Vec<String>,
}

impl Node {
    /// ApplyConfiguration in maintenance mode: validate (Talos' validator when built, see
    /// [`validate::check`], then the lab's own checks), "install" the installer's version, then
    /// reboot into configured mode.
    ///
    /// Up to 1.12 (`internal/app/maintenance/server.go`) TRY, REBOOT and AUTO are taken, any
    /// other mode is `Unimplemented`, and the reply leaves the mode unset (REBOOT on the wire).
    /// From 1.13 (`v1alpha1_server.go` ApplyConfiguration, `inMaintenance`) REBOOT becomes
    /// NO_REBOOT and AUTO reports NO_REBOOT: the boot sequence continues into the install.
    pub(crate) async fn apply_maintenance(
        self: &Arc<Self>,
        data: &[u8],
        mode: ApplyMode,
        dry_run: bool,
    ) -> Result<Applied, Status> {
        let v113 = Talos(self.version()).apid_in_maintenance();
        let used = match (mode, v113) {
            (ApplyMode::Auto | ApplyMode::Reboot | ApplyMode::Try, false) => ApplyMode::Reboot,
            (ApplyMode::Auto | ApplyMode::NoReboot | ApplyMode::Reboot, true) => {
                ApplyMode::NoReboot
            }
            (_, false) => {
                return Err(Status::unimplemented(format!(
                    "apply configuration --mode='{}' is not supported in maintenance mode",
                    mode.name().to_lowercase().replace('_', "-")
                )));
            }
            _ => {
                return Err(Status::invalid_argument(format!(
                    "apply configuration mode {} is not simulated by the lab in maintenance mode",
                    mode.name()
                )));
            }
        };
        let warnings = validate::check(data, true).await?;
        let cfg = MachineConfig::parse(data).map_err(|e| {
            Status::invalid_argument(format!("configuration validation failed: {e}"))
        })?;
        let version = cfg.talos_version().unwrap_or_default();
        if dry_run {
            return Ok(Applied {
                mode: used,
                // The 1.11 maintenance server's text (the lab keeps it for 1.13 too).
                details: format!(
                    "Dry run summary:\nNode is running in maintenance mode and does not have a \
                     config yet.\n(It would install {version}.)"
                ),
                warnings,
            });
        }
        {
            let mut st = self.st();
            st.config = Some(Arc::new(cfg));
            st.staged = None;
            st.pending_version = Some(version);
            st.apply_gen += 1;
            st.installed = true;
        }
        self.reboot_later();
        Ok(Applied {
            mode: used,
            details: "Applied configuration, installing and rebooting".into(),
            warnings,
        })
    }

    /// ApplyConfiguration on a configured node. Follows Talos 1.12/1.13: the config is loaded and
    /// validated first (Talos' validator when built, see [`validate::check`], then the lab's own
    /// checks), dry runs included, before anything changes; a machine type change is
    /// refused; AUTO applies live when every changed path of the v1alpha1 document is live
    /// (see [`applies_live`]), else reboots; NO_REBOOT and TRY are refused when a reboot is
    /// needed; STAGED applies at the next boot; TRY reverts after its timeout (1 minute by
    /// default) unless another apply came first; dry_run changes nothing and returns the diff.
    pub(crate) async fn apply_configured(
        self: &Arc<Self>,
        data: &[u8],
        mode: ApplyMode,
        dry_run: bool,
        try_timeout: Option<Duration>,
    ) -> Result<Applied, Status> {
        let _one = self.apply_lock.try_lock().map_err(|_| {
            Status::failed_precondition("another apply configuration is in progress")
        })?;
        let warnings = validate::check(data, false).await?;
        let new = MachineConfig::parse(data).map_err(|e| {
            Status::invalid_argument(format!("configuration validation failed: {e}"))
        })?;
        let old = self
            .config()
            .ok_or_else(|| Status::unavailable("node is not configured"))?;
        if new.role != old.role {
            return Err(Status::invalid_argument(format!(
                "machine type can't be changed from {} to {}",
                old.role.as_str(),
                new.role.as_str()
            )));
        }
        let changed = changed_paths(&old.doc, &new.doc);
        let mut needs_reboot: Vec<&String> = changed.iter().filter(|p| !applies_live(p)).collect();
        // 1.14 (v1.14 `v1alpha1_server.go` ApplyConfiguration): no apply reboots any more.
        // REBOOT is refused, AUTO means NO_REBOOT, and NO_REBOOT/TRY are not refused for changes
        // that need a reboot (those take effect at the next boot the caller arranges).
        if Talos(self.version()).apply_never_reboots() {
            if mode == ApplyMode::Reboot {
                return Err(Status::unimplemented(
                    "the REBOOT mode is not supported, please use AUTO or NO_REBOOT modes instead",
                ));
            }
            needs_reboot.clear();
        }
        let used = match mode {
            ApplyMode::Auto if needs_reboot.is_empty() => ApplyMode::NoReboot,
            ApplyMode::Auto => ApplyMode::Reboot,
            ApplyMode::NoReboot | ApplyMode::Try if !needs_reboot.is_empty() => {
                return Err(Status::failed_precondition(format!(
                    "apply configuration failed: the change needs a reboot (fields: {})",
                    needs_reboot
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            m => m,
        };
        let try_for = try_timeout.unwrap_or(Duration::from_secs(60));
        let details = match used {
            ApplyMode::Reboot => "Applied configuration with a reboot".to_string(),
            ApplyMode::Staged => "Staged configuration to be applied after the next reboot".into(),
            ApplyMode::Try => format!(
                "Applied configuration without a reboot, it will be rolled back in {try_for:?}"
            ),
            _ => "Applied configuration without a reboot".to_string(),
        };
        if dry_run {
            // Talos' answer (`v1alpha1_server.go` ApplyConfiguration, `in.DryRun`, and its
            // generateDiff): "Dry run summary:\n<mode details> (skipped in dry-run).\n" then
            // "Config diff:\n\n" and the unified diff of the running and the new config, or
            // "No changes." when they encode the same.
            let diff = config_diff(&old, &new);
            let diff = if diff.is_empty() {
                "No changes.".to_string()
            } else {
                diff
            };
            return Ok(Applied {
                mode: used,
                details: format!(
                    "Dry run summary:\n{details} (skipped in dry-run).\nConfig diff:\n\n{diff}"
                ),
                warnings,
            });
        }
        let new = Arc::new(new);
        match used {
            ApplyMode::Reboot => {
                let mut st = self.st();
                st.config = Some(new);
                st.apply_gen += 1;
                drop(st);
                self.reboot_later();
            }
            ApplyMode::Staged => {
                let mut st = self.st();
                st.staged = Some(new);
                st.apply_gen += 1;
            }
            _ => {
                let generation = self.apply_live(new).await?;
                if used == ApplyMode::Try {
                    let node = self.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(try_for).await;
                        if node.st().apply_gen == generation && node.mode() == Mode::Configured {
                            let _ = node.apply_live(old).await;
                        }
                    });
                }
            }
        }
        Ok(Applied {
            mode: used,
            details,
            warnings,
        })
    }

    /// Applies a config without reboot. A changed address set moves the API to the new
    /// addresses at once; a control plane's etcd follows (MemberUpdate of its peer URL, as Talos
    /// does since 1.3, then etcd restarts on the new address).
    async fn apply_live(self: &Arc<Self>, new: Arc<MachineConfig>) -> Result<u64, Status> {
        let (old_addrs, generation) = {
            let mut st = self.st();
            st.config = Some(new.clone());
            st.apply_gen += 1;
            (st.listen.clone(), st.apply_gen)
        };
        if new.addresses.is_empty() || new.addresses == old_addrs {
            self.publish();
            return Ok(generation);
        }
        let ca = if new.role == Role::Controlplane {
            Some(machine_ca(&new))
        } else {
            None
        };
        let ca = match ca {
            Some(ca) => ca,
            None => self
                .peer_ca(&new)
                .ok_or_else(|| Status::unavailable("no trustd reachable"))?,
        };
        let tls = tls::configured_config(&ca, &new.addresses, &self.hostname())
            .map_err(|e| Status::internal(e.to_string()))?;
        let node = self.clone();
        let addrs = new.addresses.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Err(e) = node.serve(addrs.clone(), tls, false).await {
                tracing::warn!(node = %node.spec.name, error = %e, "address move failed");
            }
            node.move_etcd(addrs[0]).await;
            node.publish();
        });
        Ok(generation)
    }

    fn peer_ca(&self, cfg: &MachineConfig) -> Option<vixen_pki::CertAndKey> {
        let lab = self.lab()?;
        let want = cfg.get("machine.ca.crt")?;
        lab.nodes.iter().find_map(|n| {
            let c = n.config()?;
            (c.role == Role::Controlplane && c.get("machine.ca.crt") == Some(want))
                .then(|| machine_ca(&c))
        })
    }

    async fn move_etcd(&self, addr: std::net::IpAddr) {
        let _g = self.etcd_ops.lock().await;
        let Some(url) = self.etcd_url() else { return };
        if url == etcd::client_url(addr) {
            return;
        }
        if let Ok(mut c) = etcd::connect(&[url]).await
            && let Ok(s) = c.status().await
        {
            let id = s.header().map(|h| h.member_id()).unwrap_or_default();
            let _ = c.member_update(id, vec![etcd::peer_url(addr)]).await;
        }
        self.stop_etcd().await;
        let name = self.hostname();
        self.start_etcd(
            &name,
            addr,
            &format!("{name}={}", etcd::peer_url(addr)),
            "existing",
        );
    }

    /// Legacy MachineService.Upgrade (`v1alpha1_server.go` Upgrade): pull and validate the
    /// installer image (a lab rule: a registry ending in `.invalid` does not resolve), then,
    /// on a control plane unless forced, etcd's `ValidateForUpgrade` (`internal/pkg/etcd/etcd.go`),
    /// both failing as plain errors (gRPC `Unknown`) with Talos' texts. Then the node reboots
    /// into the new version, or stages it and reboots at once (a staged upgrade runs the
    /// `StageUpgrade` sequence, which reboots).
    pub(crate) async fn upgrade_legacy(
        self: &Arc<Self>,
        actor: &str,
        image: &str,
        _stage: bool,
        force: bool,
    ) -> Result<String, Status> {
        crate::images::resolve(image).map_err(|e| {
            Status::unknown(format!("error validating installer image {image:?}: {e}"))
        })?;
        let tag = image_tag(image)
            .ok_or_else(|| Status::invalid_argument(format!("image {image:?} has no tag")))?;
        if self.role() == Role::Controlplane && !force {
            self.validate_for_upgrade()
                .await
                .map_err(|e| Status::unknown(format!("error validating etcd for upgrade: {e}")))?;
        }
        self.st().pending_version = Some(tag);
        self.reboot_later_by(actor, "upgrade");
        Ok("Upgrade request received".into())
    }

    /// `ValidateForUpgrade` through the cluster's members.
    async fn validate_for_upgrade(&self) -> Result<(), String> {
        let urls = self
            .cluster_endpoints()
            .map_err(|s| s.message().to_string())?;
        let mut c = etcd::connect(&urls)
            .await
            .map_err(|s| s.message().to_string())?;
        let members = c.member_list().await.map_err(|e| e.to_string())?;
        let members = members.members();
        if members.len() == 2 {
            return Err(format!(
                "etcd member count({}) is insufficient to maintain quorum if upgrade commences",
                members.len()
            ));
        }
        for m in members {
            if m.name().is_empty() || m.client_urls().is_empty() {
                return Err(format!(
                    "etcd member {:016x} is not started, all members must be running to perform \
                     an upgrade",
                    m.id()
                ));
            }
            if !etcd::healthy(&m.client_urls()[0]).await {
                return Err(format!(
                    "etcd member {:016x} is not healthy; all members must be healthy to perform \
                     an upgrade: context deadline exceeded",
                    m.id()
                ));
            }
        }
        Ok(())
    }

    /// LifecycleService.Upgrade (1.13+): installs the image from the containerd store of the
    /// requested instance, without a reboot and without etcd checks; an image that was never
    /// pulled there fails as in v1.13 `internal/app/lifecycle/container.go` (see
    /// [`crate::images`]).
    pub(crate) fn lifecycle_upgrade(
        &self,
        image: &str,
        instance: (i32, i32),
    ) -> Result<Vec<String>, Status> {
        if image.is_empty() {
            return Err(Status::invalid_argument("installer image name is required"));
        }
        let tag = image_tag(image)
            .ok_or_else(|| Status::invalid_argument(format!("image {image:?} has no tag")))?;
        let needs_pull = Talos(self.version()).upgrade_needs_pull();
        let mut st = self.st();
        if needs_pull
            && !st
                .images
                .contains(&(instance.0, instance.1, image.to_string()))
        {
            return Err(Status::internal(format!(
                "upgrade failed: installer image {image:?} not found in containerd store: \
                 image {image:?}: not found"
            )));
        }
        st.pending_version = Some(tag.clone());
        Ok(vec![
            format!("using installer image {image}"),
            format!("installing Talos {tag}"),
            "done".into(),
        ])
    }

    /// ImageService.Pull (1.13+) into one containerd instance; see [`crate::images`].
    pub(crate) fn pull_image(&self, image: &str, instance: (i32, i32)) -> Result<String, Status> {
        crate::images::resolve(image)
            .map_err(|e| Status::not_found(format!("error pulling image: {e}")))?;
        self.st()
            .images
            .insert((instance.0, instance.1, image.to_string()));
        Ok(crate::images::pulled_name(image))
    }
}
