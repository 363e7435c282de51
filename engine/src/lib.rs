//! keel's per-shard storage engine.
//!
//! Empty for now: the copy-on-write B+-tree file, the MVCC keyspace, leases,
//! the watch hub and the Raft state machine land here (issues 3 to 5).
