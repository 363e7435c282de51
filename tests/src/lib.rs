//! keel's cross-crate tests: integration, cluster, crash and fault tests that
//! span `wal`, `engine` and `net` live in `tests/tests/`.
//!
//! None yet: the write-ahead log's own crash, bit-flip and kill -9 tests are
//! in `wal/tests/`. The first tests here arrive with the engine (issue 3).
