//! keel's per-shard storage engine.
//!
//! [`btree`] is the copy-on-write B+-tree file each shard keeps its state
//! in; [`mvcc`] is one shard's keyspace on it (etcd v3 semantics, leases,
//! watches). [`hlc`] gives revisions and [`routing`] places keys on shards,
//! for the shard runtime and its Raft groups (issue 5, in progress).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod btree;
mod error;
pub mod hlc;
pub mod mvcc;
pub mod routing;

pub use error::{Error, Result};
