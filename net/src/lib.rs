//! keel's network layer: the server (binary `keel`) that puts a node's
//! cores on the network with the protocol of `keel-proto`, and `keelctl`,
//! the command-line client.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod auth;
mod etcd;
mod listen;
pub mod logging;
pub mod metrics;
pub mod peer;
pub mod restore;
pub mod server;
pub mod snapshot_file;
pub mod tls;
