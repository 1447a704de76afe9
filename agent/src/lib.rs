//! The `vixen` library: the long-running agent (the daemon) that the binary's `agent`
//! subcommand runs, and the etcd snapshot port. The lifecycle engine is the `vixen-engine`
//! crate.

pub mod backup;
pub mod daemon;
