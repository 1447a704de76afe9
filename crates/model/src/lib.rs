//! vixen-model: the cluster repo format, its loading with positions, validation and rendering.
//!
//! No network, no Kubernetes, no Talos API: this crate reads files and computes.

// `path![...]` builds a Vec because some paths are extended afterwards; borrowing one is fine.
#![allow(clippy::useless_vec)]

pub mod addons;
mod addresses;
pub mod backup;
pub mod checks;
pub mod cni;
pub mod gitops;
pub mod import;
pub mod k8s_removed;
mod patch;
pub mod render;
pub mod repo;
pub mod sandbox;
pub mod schema;
pub mod secrets;
pub mod types;
pub mod validate;
pub mod version;
pub mod yaml;

pub use repo::{Diagnostic, Diagnostics, Repo, Source};
pub use sandbox::{Refusal, Sandbox};
pub use types::*;
