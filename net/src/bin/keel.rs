//! The keel server.
//!
//! Today it starts a single-node keel on a data directory (default
//! `./keel-data`): every shard on its core, the WAL replayed, leases
//! repaired, and keeps it running until SIGINT or SIGTERM, then shuts down
//! cleanly. The network protocol that lets clients in lands with issue 6;
//! until then the node is reachable only in process (`keel_engine::shard`).

use std::process::ExitCode;

use keel_engine::mvcc::RangeRequest;
use keel_engine::shard::{Consistency, Node, NodeConfig};
use signal_hook::consts::{SIGINT, SIGTERM};

fn main() -> ExitCode {
    let version = env!("CARGO_PKG_VERSION");
    let data_dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "keel-data".to_string());
    // Before any executor thread starts, so that the signals come here.
    let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("keel: cannot handle signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("keel {version}: starting on {data_dir}");
    let node = match Node::start(NodeConfig::new(&data_dir)) {
        Ok(node) => node,
        Err(e) => {
            eprintln!("keel: {e}");
            return ExitCode::FAILURE;
        }
    };
    let everything = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        count_only: true,
        ..RangeRequest::default()
    };
    match futures_lite::future::block_on(node.range(everything, Consistency::Linearizable)) {
        Ok((revision, answer)) => println!(
            "keel: {} shards on {} cores, {} keys, revision {revision}",
            node.shard_count(),
            node.core_count(),
            answer.count
        ),
        Err(e) => eprintln!("keel: reading the keyspace failed: {e}"),
    }
    println!(
        "keel: running (no client port yet: the protocol lands with issue 6); \
         Ctrl-C or SIGTERM stops it"
    );
    let signal = signals.forever().next();
    println!("keel: signal {signal:?}, shutting down");
    node.shutdown();
    println!("keel: stopped cleanly");
    ExitCode::SUCCESS
}
