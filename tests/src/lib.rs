//! keel's cross-crate tests: integration, crash and fault tests that span
//! crates live in `tests/tests/`; this library holds what they share.

use std::path::Path;

use keel_engine::shard::NodeConfig;

/// A node on `dir` with `shards` shards over `cores` unpinned cores (tests
/// share the machine with each other).
pub fn node_config(dir: &Path, shards: usize, cores: usize) -> NodeConfig {
    NodeConfig {
        shards,
        cores,
        pin: false,
        ..NodeConfig::new(dir)
    }
}
