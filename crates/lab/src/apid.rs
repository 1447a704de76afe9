//! What apid does around every call of the lab's nodes: the maintenance-mode gate of each
//! version, routing by the `node`/`nodes` metadata keys, and the reply metadata.

use std::sync::Arc;

use tonic::Status;
use tonic::metadata::MetadataMap;
use vixen_talos::api::common::Metadata;

use crate::node::{Mode, Node};
use crate::server::NodeApi;
use crate::versions::Talos;

/// How maintenance mode answers a method.
///
/// Up to 1.12 a separate maintenance server answers (`internal/app/maintenance/server.go`): it
/// implements ApplyConfiguration (and StorageService.Disks, its `storaged.Server`) for anyone;
/// Version, Upgrade and Reset only for admins (over
/// SideroLink), everyone else gets `Unimplemented "API is not implemented in maintenance mode"`
/// (`assertAdminRole`); every other method is the generated `UnimplementedMachineServiceServer`
/// (`method X not implemented`). From 1.13 apid serves maintenance mode: anonymous clients are
/// `os:reader` plus ApplyConfiguration (the lab serves them Version, ServiceList, Events and
/// Disks).
pub(crate) fn maintenance_refusal(method: &str, apid: bool) -> Option<Status> {
    let name = method.rsplit('/').next().unwrap_or(method);
    match (name, apid) {
        // COSI State.Get: both maintenance servers register the filtered state (state_api.rs).
        ("ApplyConfiguration" | "Disks" | "Get", _)
        | ("Version" | "ServiceList" | "Events", true) => None,
        ("EtcdMemberList" | "EtcdStatus", true) => Some(Status::failed_precondition(
            "etcd is not running in maintenance mode",
        )),
        (_, true) => Some(Status::permission_denied("not authorized")),
        ("Version" | "Upgrade" | "Reset", false) => Some(Status::unimplemented(
            "API is not implemented in maintenance mode",
        )),
        (_, false) => Some(Status::unimplemented(format!(
            "method {name} not implemented"
        ))),
    }
}

impl NodeApi {
    /// apid's director (`internal/app/apid/pkg/director/director.go`): `node` must be
    /// single-valued; `nodes` (deprecated, one-to-many) wins over `node`; without either the
    /// local machined answers and the reply carries no hostname. With a key apid proxies through
    /// its remote backend, which sets `Metadata.hostname` to the key as given
    /// (`internal/app/apid/pkg/backend/apid.go`, `AppendInfo`), even for the node itself. Without
    /// forwarding (maintenance mode on 1.13, where apid has no client certificate) a local key is
    /// served directly and any other is `PermissionDenied "no request forwarding"`. The 1.11
    /// maintenance server is not apid and ignores both keys. Lab nodes live in one process, so
    /// the "proxy" calls the target's handlers directly while the target is up; the lab serves
    /// one target per call (one-to-many `nodes` with several values is not simulated).
    pub(crate) fn route(&self, md: &MetadataMap) -> Result<(Arc<Node>, Option<String>), Status> {
        let me = &self.node;
        let values = |k: &str| -> Vec<String> {
            md.get_all(k)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(',').map(|s| s.trim().to_string()))
                .filter(|s| !s.is_empty())
                .collect()
        };
        if self.maintenance && !Talos(me.version()).apid_in_maintenance() {
            return Ok((me.clone(), None));
        }
        let (node, nodes) = (values("node"), values("nodes"));
        if node.len() > 1 {
            return Err(Status::invalid_argument(
                "node metadata must be single-valued",
            ));
        }
        let key = match (node.first(), nodes.as_slice()) {
            (_, [one]) => one.clone(),
            (_, [_, _, ..]) => {
                return Err(Status::unimplemented(
                    "the lab does not simulate one-to-many proxying (several `nodes`)",
                ));
            }
            (Some(k), []) => k.clone(),
            (None, []) => return Ok((me.clone(), None)),
        };
        let ip = key.parse().ok();
        let local =
            ip.is_some_and(|ip| me.listens_on(ip)) || key == me.hostname() || key == me.spec.name;
        if self.maintenance {
            return if local {
                Ok((me.clone(), None))
            } else {
                Err(Status::permission_denied("no request forwarding"))
            };
        }
        if local {
            return Ok((me.clone(), Some(key)));
        }
        let lab = me.lab().ok_or_else(|| Status::unavailable("lab stopped"))?;
        match lab.find(&key) {
            Some(n) if n.mode() == Mode::Configured && n.listens_on(n.current_address()) => {
                Ok((n, Some(key)))
            }
            _ => Err(Status::unavailable(format!(
                "{key}:50000: connection refused"
            ))),
        }
    }
}

/// The reply's metadata: the routing key as hostname (see [`NodeApi::route`]).
pub(crate) fn meta(_target: &Node, key: Option<String>) -> Option<Metadata> {
    Some(Metadata {
        hostname: key.unwrap_or_default(),
        error: String::new(),
    })
}

/// EtcdStatus' `storage_version`: etcd 3.6+ reports its storage schema version (major.minor.0 of
/// the cluster version); the lab's etcd may predate the field, so the lab derives the same value
/// from the member's version rather than leave it empty as no current Talos does.
pub(crate) fn storage_version(reported: &str, version: &str) -> String {
    if !reported.is_empty() {
        return reported.to_string();
    }
    let mut parts = version.split('.');
    match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) => format!("{major}.{minor}.0"),
        _ => String::new(),
    }
}
