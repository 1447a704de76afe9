//! The lab's own table of what each Talos version offers, read from the siderolabs/talos sources
//! of that version (not from vixen's client, so that a client mistake is not copied into the
//! simulator).

use vixen_talos::TalosVersion;

/// What a node's Talos version serves and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Talos(pub TalosVersion);

impl Talos {
    fn at_least(self, minor: u32) -> bool {
        (self.0.major, self.0.minor) >= (1, minor)
    }

    /// 1.13+: `LifecycleService` is registered next to MachineService
    /// (v1.13 `internal/app/machined/internal/server/v1alpha1/v1alpha1_server.go`, `Register`).
    pub(crate) fn lifecycle_service(self) -> bool {
        self.at_least(13)
    }

    /// 1.13+: `ImageService` (`api/machine/image.proto`) is registered by the same `Register`.
    pub(crate) fn image_service(self) -> bool {
        self.at_least(13)
    }

    /// 1.13+: apid serves maintenance mode and machined's own server answers
    /// (`ConfigCompleteForBoot` decides "in maintenance"); up to 1.12 a separate maintenance
    /// server (`internal/app/maintenance/server.go`) answers.
    pub(crate) fn apid_in_maintenance(self) -> bool {
        self.at_least(13)
    }

    /// 1.13+: LifecycleService.Upgrade only installs an image already in containerd
    /// (v1.13 `internal/app/lifecycle/`), so it must be pulled through ImageService first.
    pub(crate) fn upgrade_needs_pull(self) -> bool {
        self.at_least(13)
    }

    /// 1.14+: ApplyConfiguration no longer reboots: REBOOT is refused and AUTO means NO_REBOOT
    /// (v1.14 `v1alpha1_server.go`, ApplyConfiguration).
    pub(crate) fn apply_never_reboots(self) -> bool {
        self.at_least(14)
    }

    /// The `auditd` service: started among the early services on metal since 1.9
    /// (`v1alpha1_sequencer_tasks.go`, `StartAuditd`); present in 1.11 and later.
    pub(crate) fn has_auditd(self) -> bool {
        self.at_least(9)
    }
}
