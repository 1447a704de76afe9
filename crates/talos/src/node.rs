//! Plain domain types of the Talos API (no tonic or prost types cross them), and `TalosNode`,
//! the client's operations as one object-safe trait. The lifecycle engine does not drive this
//! trait: its port is `vixen_engine::NodeApi`, implemented on [`crate::Client`] by the engine.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::error::Result;

/// A boxed future, so that the trait stays object-safe (`dyn TalosNode`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// ApplyConfiguration modes. There is deliberately no `Default`: the wire default is REBOOT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyMode {
    /// Apply and reboot (deprecated upstream, gone after 1.13).
    Reboot,
    /// Apply live when possible, else reboot (1.14+: never reboots).
    Auto,
    /// Apply live; refused when the change needs a reboot.
    NoReboot,
    /// Apply at the next reboot.
    Staged,
    /// Apply live and revert after a timeout unless confirmed.
    Try,
}

impl ApplyMode {
    /// The wire value (`machine.ApplyConfigurationRequest.Mode`).
    pub fn wire(self) -> i32 {
        match self {
            ApplyMode::Reboot => 0,
            ApplyMode::Auto => 1,
            ApplyMode::NoReboot => 2,
            ApplyMode::Staged => 3,
            ApplyMode::Try => 4,
        }
    }

    /// The mode of a wire value.
    pub fn from_wire(v: i32) -> Option<Self> {
        Some(match v {
            0 => ApplyMode::Reboot,
            1 => ApplyMode::Auto,
            2 => ApplyMode::NoReboot,
            3 => ApplyMode::Staged,
            4 => ApplyMode::Try,
            _ => return None,
        })
    }

    /// The enum name Talos uses (`NO_REBOOT`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ApplyMode::Reboot => "REBOOT",
            ApplyMode::Auto => "AUTO",
            ApplyMode::NoReboot => "NO_REBOOT",
            ApplyMode::Staged => "STAGED",
            ApplyMode::Try => "TRY",
        }
    }
}

/// What an ApplyConfiguration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// The mode the node actually used.
    pub mode: Option<ApplyMode>,
    /// Human-readable details (the diff for dry runs).
    pub mode_details: String,
    /// Validation warnings.
    pub warnings: Vec<String>,
}

/// The node's version report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// Talos tag, e.g. `v1.11.6`.
    pub tag: String,
    /// Platform mode (`metal`, `container`, ...).
    pub platform: String,
}

/// A parsed Talos version tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TalosVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl TalosVersion {
    /// Parses `v1.12.3`, `1.13.0-beta.1` and the like.
    pub fn parse(tag: &str) -> Option<Self> {
        let core = tag.trim().trim_start_matches('v');
        let core = core.split(['-', '+']).next()?;
        let mut parts = core.split('.').map(str::parse::<u32>);
        Some(Self {
            major: parts.next()?.ok()?,
            minor: parts.next()?.ok()?,
            patch: parts.next().unwrap_or(Ok(0)).ok()?,
        })
    }

    /// Talos 1.13 and later: LifecycleService.Upgrade exists (and does not reboot); maintenance
    /// mode is served by apid with anonymous `os:reader`.
    pub fn has_lifecycle_service(self) -> bool {
        (self.major, self.minor) >= (1, 13)
    }
}

impl fmt::Display for TalosVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// One etcd member as the node reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdMember {
    /// Member ID.
    pub id: u64,
    /// Member name (the node's hostname).
    pub hostname: String,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Client URLs (empty for a member that never started).
    pub client_urls: Vec<String>,
    /// Learner flag.
    pub is_learner: bool,
}

/// The local etcd member's status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EtcdMemberStatus {
    /// Local member ID.
    pub member_id: u64,
    /// Current leader's ID (0: none).
    pub leader: u64,
    /// Raft term.
    pub raft_term: u64,
    /// Raft index.
    pub raft_index: u64,
    /// DB size in bytes.
    pub db_size: i64,
    /// Learner flag.
    pub is_learner: bool,
    /// Errors the member reports.
    pub errors: Vec<String>,
    /// The member's storage (data) version, e.g. `3.6.0` (empty from etcd before 3.6).
    pub storage_version: String,
    /// The etcd server version, e.g. `3.5.21`.
    pub protocol_version: String,
}

/// One service of the node (`ServiceList`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStatus {
    /// Service ID (`etcd`, `kubelet`, `apid`, ...).
    pub id: String,
    /// State (`Running`, `Preparing`, ...).
    pub state: String,
    /// Health check result (false as well when the service has no health check).
    pub healthy: bool,
    /// The service has no health check (`ServiceHealth.unknown`): Talos then reports
    /// `healthy = false`, which does not mean unhealthy (see [`crate::health::judge`]).
    pub health_unknown: bool,
    /// The last event, `[State] message` (what talosctl's checks read), if any.
    pub last_event: Option<String>,
}

/// How an upgrade was carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeOutcome {
    /// Legacy MachineService.Upgrade: the node reboots by itself.
    Legacy {
        /// The node's acknowledgement.
        ack: String,
    },
    /// LifecycleService.Upgrade (1.13+) followed by our own Reboot.
    LifecycleThenReboot {
        /// Progress lines the installer streamed.
        progress: Vec<String>,
    },
}

/// What the lifecycle engine needs from one Talos node.
pub trait TalosNode: Send + Sync {
    /// Version of the running Talos.
    fn version(&self) -> BoxFuture<'_, Result<VersionInfo>>;
    /// ApplyConfiguration with an explicit mode.
    fn apply_configuration<'a>(
        &'a self,
        config: &'a [u8],
        mode: ApplyMode,
        dry_run: bool,
        try_timeout: Option<Duration>,
    ) -> BoxFuture<'a, Result<ApplyOutcome>>;
    /// Upgrade to `image`, choosing the API from the node's version.
    fn upgrade<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Result<UpgradeOutcome>>;
    /// Reset (graceful: leave etcd first) and reboot into maintenance mode, or halt.
    fn reset(&self, graceful: bool, reboot: bool) -> BoxFuture<'_, Result<()>>;
    /// Bootstrap etcd on this node.
    fn bootstrap(&self) -> BoxFuture<'_, Result<()>>;
    /// Reboot the node.
    fn reboot(&self) -> BoxFuture<'_, Result<()>>;
    /// The etcd members this node sees.
    fn etcd_members(&self) -> BoxFuture<'_, Result<Vec<EtcdMember>>>;
    /// Remove a member (whose node is gone) through this node.
    fn etcd_remove_member(&self, id: u64) -> BoxFuture<'_, Result<()>>;
    /// Remove this node's own member from etcd.
    fn etcd_leave(&self) -> BoxFuture<'_, Result<()>>;
    /// Move leadership away from this node; returns the new leader's name (may be empty).
    fn etcd_forfeit_leadership(&self) -> BoxFuture<'_, Result<String>>;
    /// This node's etcd member status.
    fn etcd_status(&self) -> BoxFuture<'_, Result<EtcdMemberStatus>>;
    /// The node's services.
    fn services(&self) -> BoxFuture<'_, Result<Vec<ServiceStatus>>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_pick_the_api() {
        let v = TalosVersion::parse("v1.11.6").unwrap();
        assert_eq!(
            v,
            TalosVersion {
                major: 1,
                minor: 11,
                patch: 6
            }
        );
        assert!(!v.has_lifecycle_service());
        assert!(
            TalosVersion::parse("v1.13.0-beta.1")
                .unwrap()
                .has_lifecycle_service()
        );
        assert!(TalosVersion::parse("1.14").unwrap().has_lifecycle_service());
        assert!(TalosVersion::parse("latest").is_none());
    }

    #[test]
    fn apply_modes_round_trip_on_the_wire() {
        for m in [
            ApplyMode::Reboot,
            ApplyMode::Auto,
            ApplyMode::NoReboot,
            ApplyMode::Staged,
            ApplyMode::Try,
        ] {
            assert_eq!(ApplyMode::from_wire(m.wire()), Some(m));
        }
    }
}
