//! keel's load generator and benchmarks.
//!
//! The criterion benches live in `bench/benches/`; the `bench` load generator
//! binary lands with the server (issue 7). `shard_memory` measures the
//! memory of one shard holding many keys.

pub mod shard_load;
