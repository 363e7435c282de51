//! keel's load generator and benchmarks.
//!
//! The criterion benches live in `bench/benches/`; the `bench` load generator
//! binary lands with the server (issue 7). `shard_memory` measures the
//! memory of one shard holding many keys.

pub mod node_load;
pub mod shard_load;

/// A fresh directory for a bench's files under `$KEEL_BENCH_DIR` (default:
/// the system temp directory), removed when dropped.
///
/// # Panics
/// When the directory cannot be created.
pub fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var_os("KEEL_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    tempfile::tempdir_in(base).expect("create bench directory")
}
