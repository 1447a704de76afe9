//! The `vixen` library: the lifecycle engine that the binary's subcommands drive.

pub mod engine;
pub mod daemon;
