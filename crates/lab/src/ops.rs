//! What a node does for each RPC, independent of the wire: ApplyConfiguration in every mode,
//! upgrades, reset, bootstrap and the etcd operations against the node's real etcd.
//! Each piece says which Talos behaviour it follows.

use std::sync::Arc;
use std::time::Duration;

use tonic::Status;
use vixen_talos::ApplyMode;

use crate::config::{MachineConfig, applies_live, changed_paths, image_tag};
use crate::etcd;
use crate::node::{Mode, Node, machine_ca};
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
    /// reboot into configured mode. Up to 1.12 the maintenance server takes AUTO, REBOOT and TRY;
    /// from 1.13 apid serves maintenance mode, takes AUTO, REBOOT and NO_REBOOT, and reports AUTO
    /// as NO_REBOOT (the boot sequence continues into the install on its own).
    pub(crate) async fn apply_maintenance(
        self: &Arc<Self>,
        data: &[u8],
        mode: ApplyMode,
        dry_run: bool,
    ) -> Result<Applied, Status> {
        let v113 = self.version().has_lifecycle_service();
        let used = match (mode, v113) {
            (ApplyMode::Auto | ApplyMode::Reboot | ApplyMode::Try, false) => ApplyMode::Reboot,
            (ApplyMode::Auto | ApplyMode::NoReboot, true) => ApplyMode::NoReboot,
            (ApplyMode::Reboot, true) => ApplyMode::Reboot,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "apply configuration mode {} is not supported in maintenance mode",
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
                details: format!(
                    "Dry run summary:\nNode is in maintenance mode: the config would be applied, \
                     {version} installed and the node rebooted (skipped in dry-run)."
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
        let needs_reboot: Vec<&String> = changed.iter().filter(|p| !applies_live(p)).collect();
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
            let diff = if changed.is_empty() {
                "No changes.".to_string()
            } else {
                changed.join("\n")
            };
            return Ok(Applied {
                mode: used,
                details: format!(
                    "Dry run summary:\n{details} (skipped in dry-run).\n\nConfig diff:\n{diff}"
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

    /// Legacy MachineService.Upgrade. Unless forced, a control plane first checks etcd as
    /// Talos' ValidateForUpgrade does: refused with exactly 2 members, a member not started, or
    /// an unhealthy member. Then the node reboots into the new version (or stages it).
    pub(crate) async fn upgrade_legacy(
        self: &Arc<Self>,
        image: &str,
        stage: bool,
        force: bool,
    ) -> Result<String, Status> {
        let tag = image_tag(image)
            .ok_or_else(|| Status::invalid_argument(format!("image {image:?} has no tag")))?;
        if self.role() == Role::Controlplane && !force {
            self.validate_for_upgrade().await?;
        }
        self.st().pending_version = Some(tag);
        if !stage {
            self.reboot_later();
        }
        Ok("Upgrade request received".into())
    }

    async fn validate_for_upgrade(&self) -> Result<(), Status> {
        let url = self.local_etcd()?;
        let mut c = etcd::connect(&[url]).await?;
        let members = c.member_list().await.map_err(etcd::to_status)?;
        let members = members.members();
        if members.len() == 2 {
            return Err(Status::failed_precondition(
                "etcd has 2 members: upgrading one would lose quorum",
            ));
        }
        for m in members {
            if m.name().is_empty() || m.client_urls().is_empty() {
                return Err(Status::failed_precondition(format!(
                    "etcd member {:x} is not started",
                    m.id()
                )));
            }
            if !etcd::healthy(&m.client_urls()[0]).await {
                return Err(Status::failed_precondition(format!(
                    "etcd member {} is not healthy",
                    m.name()
                )));
            }
        }
        Ok(())
    }

    /// LifecycleService.Upgrade (1.13+): installs the image; no reboot and no etcd checks.
    pub(crate) fn lifecycle_upgrade(&self, image: &str) -> Result<Vec<String>, Status> {
        let tag = image_tag(image)
            .ok_or_else(|| Status::invalid_argument(format!("image {image:?} has no tag")))?;
        self.st().pending_version = Some(tag.clone());
        Ok(vec![
            format!("pulling {image}"),
            format!("installing Talos {tag}"),
            "done".into(),
        ])
    }

    /// Reset. Graceful on a control plane leaves etcd first (and fails if etcd refuses);
    /// non-graceful just wipes, leaving a dead member behind. Then the node reboots into
    /// maintenance mode on its maintenance address (or halts when `reboot` is false). The
    /// installed Talos version survives: only STATE and EPHEMERAL are wiped.
    pub(crate) async fn reset(
        self: &Arc<Self>,
        graceful: bool,
        reboot: bool,
    ) -> Result<(), Status> {
        if graceful
            && self.role() == Role::Controlplane
            && let Some(url) = self.etcd_url()
        {
            let _g = self.etcd_ops.lock().await;
            etcd::leave(&url).await.map_err(|e| {
                Status::failed_precondition(format!("failed to leave etcd: {}", e.message()))
            })?;
        }
        let node = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            node.go_down(Mode::Rebooting).await;
            etcd::wipe(&etcd::data_dir(&node.dir));
            {
                let mut st = node.st();
                st.config = None;
                st.staged = None;
                st.listen = vec![node.spec.maintenance_address];
            }
            tokio::time::sleep(Duration::from_millis(node.lab().map_or(0, |l| l.reboot_ms))).await;
            if !reboot {
                node.go_down(Mode::Down).await;
            } else if node.mode() == Mode::Rebooting
                && let Err(e) = node.boot().await
            {
                tracing::warn!(node = %node.spec.name, error = %e, "boot after reset failed");
            }
        });
        Ok(())
    }

    /// Bootstrap: a new one-member etcd cluster. Refused on workers, and with AlreadyExists when
    /// etcd already has data (a second Bootstrap, or a member that already joined).
    pub(crate) async fn bootstrap(&self) -> Result<(), Status> {
        let cfg = self
            .config()
            .ok_or_else(|| Status::failed_precondition("not configured"))?;
        if cfg.role != Role::Controlplane {
            return Err(Status::failed_precondition(
                "bootstrap is only allowed on control planes",
            ));
        }
        let _g = self.etcd_ops.lock().await;
        if self.etcd_url().is_some() || etcd::has_data(&etcd::data_dir(&self.dir)) {
            return Err(Status::already_exists("etcd data directory is not empty"));
        }
        let addr = self.current_address();
        let name = self.hostname();
        if !self.start_etcd(
            &name,
            addr,
            &format!("{name}={}", etcd::peer_url(addr)),
            "new",
        ) {
            return Err(Status::internal("cannot start etcd"));
        }
        etcd::wait_ready(&etcd::client_url(addr), Duration::from_secs(15)).await
    }

    /// The local member's client URL, or why there is none.
    pub(crate) fn local_etcd(&self) -> Result<String, Status> {
        if self.role() != Role::Controlplane {
            return Err(Status::failed_precondition(
                "etcd is not running on worker nodes",
            ));
        }
        self.etcd_url()
            .ok_or_else(|| Status::failed_precondition("etcd is not running"))
    }

    /// EtcdLeaveCluster: remove the local member through its own etcd, stop etcd and empty its
    /// data directory; etcd stays stopped until the next boot.
    pub(crate) async fn etcd_leave(&self) -> Result<(), Status> {
        let url = self.local_etcd()?;
        let _g = self.etcd_ops.lock().await;
        etcd::leave(&url).await?;
        self.st().etcd_left = true;
        self.stop_etcd().await;
        etcd::wipe(&etcd::data_dir(&self.dir));
        self.publish();
        Ok(())
    }

    /// EtcdRemoveMemberByID through the local member (NotFound when absent).
    pub(crate) async fn etcd_remove(&self, id: u64) -> Result<(), Status> {
        let mut c = etcd::connect(&[self.local_etcd()?]).await?;
        let list = c.member_list().await.map_err(etcd::to_status)?;
        if !list.members().iter().any(|m| m.id() == id) {
            return Err(Status::not_found(format!("etcd member {id:x} not found")));
        }
        c.member_remove(id).await.map_err(etcd::to_status)?;
        Ok(())
    }

    /// EtcdForfeitLeadership: when this member leads, hand leadership to another started
    /// voting member and return its name; when it does not lead, return an empty name.
    pub(crate) async fn etcd_forfeit(&self) -> Result<String, Status> {
        let mut c = etcd::connect(&[self.local_etcd()?]).await?;
        let status = c.status().await.map_err(etcd::to_status)?;
        let me = status.header().map(|h| h.member_id()).unwrap_or_default();
        let list = c.member_list().await.map_err(etcd::to_status)?;
        if list.members().len() < 2 {
            return Err(Status::failed_precondition(
                "no other etcd members to forfeit leadership to",
            ));
        }
        if status.leader() != me {
            return Ok(String::new());
        }
        let target = list
            .members()
            .iter()
            .find(|m| m.id() != me && !m.is_learner() && !m.name().is_empty())
            .ok_or_else(|| Status::failed_precondition("no started voting member to lead"))?;
        let (id, name) = (target.id(), target.name().to_string());
        c.move_leader(id).await.map_err(etcd::to_status)?;
        Ok(name)
    }
}
