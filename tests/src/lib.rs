//! keel's cross-crate tests: integration, crash and fault tests that span
//! crates live in `tests/tests/`; this library holds what they share.

use std::path::Path;

use keel_engine::shard::NodeConfig;

/// A node on `dir` with `shards` shards over `cores` unpinned cores (tests
/// share the machine with each other), with 4 MiB WAL segments (the least
/// that holds the largest request) so that
/// many nodes fit on a test machine's disk.
pub fn node_config(dir: &Path, shards: usize, cores: usize) -> NodeConfig {
    NodeConfig {
        shards,
        cores,
        pin: false,
        wal: keel_wal::WalConfig {
            segment_size: 4 << 20,
        },
        ..NodeConfig::new(dir)
    }
}
