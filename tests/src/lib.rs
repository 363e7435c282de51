//! keel's cross-crate tests: integration, cluster, crash and fault tests that
//! span `wal`, `engine` and `net` live in `tests/tests/`.
//!
//! None yet: each crate's own tests are in `wal/tests/` and
//! `engine/tests/`. The first tests here arrive with the node (issue 5).
