//! vixen-talos: the Talos machine API (our own proto subset, generated client and server code) and
//! a client that speaks it the way talosctl does.
//!
//! ```text
//! Talosconfig / SecretsBundle ──► Credentials ──► tls::client_config ──► Client (one per endpoint)
//!                                                    (maintenance: no cert,  │  `node` key proxies
//!                                                     no verification)       ▼
//!                                                      vixen_engine::NodeApi ◄── the engine's port
//! ```
//!
//! The generated code lives in [`api`]; the lab serves the same services with it.

pub mod client;
pub mod config;
pub mod error;
mod etcd;
pub mod health;
pub mod node;
mod recover;
pub mod steps;
pub mod tls;

pub use client::{CallOptions, Client};
pub use config::{Credentials, Talosconfig};
pub use error::{Error, Result};
pub use health::{Health, judge};
pub use node::{
    ApplyMode, ApplyOutcome, BoxFuture, EtcdMember, EtcdMemberStatus, ServiceStatus, TalosNode,
    TalosVersion, UpgradeOutcome, VersionInfo,
};

/// Code generated from `proto/` (client and server).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod api {
    /// Package `common`.
    pub mod common {
        tonic::include_proto!("common");
    }
    /// Package `machine` (MachineService, LifecycleService and ImageService).
    pub mod machine {
        tonic::include_proto!("machine");
    }
    /// Package `storage` (StorageService.Disks).
    pub mod storage {
        tonic::include_proto!("storage");
    }
    /// Package `cosi.resource` (the COSI resource API: State.Get).
    pub mod cosi {
        tonic::include_proto!("cosi.resource");
    }
    /// Package `resource.config` (the MachineConfig resource's spec).
    pub mod resource_config {
        tonic::include_proto!("resource.config");
    }
}

/// The Talos API port, on every node.
pub const API_PORT: u16 = 50000;
