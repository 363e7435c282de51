//! Comparisons of keel's components with other systems on the same machine
//! and data. The benches are in `benches/`; this crate has no code of its own.
