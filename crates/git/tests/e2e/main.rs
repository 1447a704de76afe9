//! End-to-end tests of `vixen-git` against real servers on 127.0.0.1: `git http-backend` behind a
//! small HTTP server with basic auth, and a throwaway `sshd`. One binary to keep link time low.

mod fixture;
mod http;
mod http_server;
mod signing;
mod ssh;
mod sshd;
