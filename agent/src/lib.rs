//! The `vixen` library: the lifecycle engine that the binary's subcommands drive.

pub mod daemon;
pub mod engine;
