//! keel's per-shard storage engine.
//!
//! [`btree`] is the copy-on-write B+-tree file each shard keeps its state
//! in; [`mvcc`] is one shard's keyspace on it (etcd v3 semantics, leases,
//! watches). [`hlc`] gives revisions and [`routing`] places keys on shards;
//! [`shard`] runs the shards on cores as Raft groups behind a
//! [`shard::Node`].
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod btree;
mod error;
pub mod hlc;
pub mod metrics;
pub mod mvcc;
pub use keel_routing as routing;
pub mod shard;

pub use error::{Error, Result};
