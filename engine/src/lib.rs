//! keel's per-shard storage engine.
//!
//! Today: [`btree`], the copy-on-write B+-tree file each shard keeps its
//! state in. The MVCC keyspace, leases, watches and the Raft state machine
//! build on it (issues 4 and 5).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod btree;
mod error;
pub mod mvcc;

pub use error::{Error, Result};
