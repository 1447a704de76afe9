//! The `vixen` library: the long-running agent (the daemon) that the binary's `agent`
//! subcommand runs. The lifecycle engine is the `vixen-engine` crate.

pub mod daemon;
