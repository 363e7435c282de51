//! The keel server.
//!
//! Until the server lands (issue 6) this binary only says what it is and
//! what it will do; it does not pretend to serve.

const PLAN: &str = "\
keel is a strongly consistent, replicated key-value store (etcd v3 semantics,
one Raft group per core). This build has its storage foundations and one
shard's keyspace as a library (the write-ahead log, the B+-tree file, the
MVCC keyspace with leases and watches); the server, which will listen for
clients and serve reads, writes, watches and leases, is not built yet.";

fn main() {
    let version = env!("CARGO_PKG_VERSION");
    let data_dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "keel-data".to_string());
    println!("keel {version}");
    println!("{PLAN}");
    println!("data directory (when serving): {data_dir}");
}
