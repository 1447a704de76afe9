//! Integration tests of `vixen-forge` against servers on 127.0.0.1: the webhook receiver, and a
//! fake forge API checking each commit status request. One binary to keep link time low.

mod mock;
mod queue;
mod real_hooks;
mod status;
mod webhooks;
