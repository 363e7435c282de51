//! keel's cross-crate tests: integration, crash and fault tests that span
//! crates live in `tests/tests/`; this library holds what they share.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use futures_lite::future::{block_on, or};
use keel_engine::mvcc::{Event, WatchRequest};
use keel_engine::shard::{NodeConfig, WatchBatch, WatchStream};

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

/// A watch of every key, from now.
pub fn everything() -> WatchRequest {
    WatchRequest {
        key: vec![0],
        range_end: vec![0],
        ..WatchRequest::default()
    }
}

/// Resolves after `after` (a thread sleeps; works under any executor).
pub fn timeout(after: Duration) -> impl Future<Output = ()> {
    let (tx, rx) = flume::bounded::<()>(1);
    std::thread::spawn(move || {
        std::thread::sleep(after);
        let _ = tx.send(());
    });
    async move {
        let _ = rx.recv_async().await;
    }
}

/// Reads at least `count` events from `stream`.
///
/// # Panics
/// After 30 s without the next batch, or on anything but events; the
/// message names `label`.
pub fn watch_events(stream: &mut WatchStream<'_>, count: usize, label: &str) -> Vec<Event> {
    let mut got = Vec::new();
    while got.len() < count {
        let next = block_on(or(async { Some(stream.next().await) }, async {
            timeout(Duration::from_secs(30)).await;
            None
        }));
        match next {
            Some(Ok(WatchBatch::Events(events))) => got.extend(events),
            other => panic!("{label}: {other:?} after {} of {count} events", got.len()),
        }
    }
    got
}
