//! Revisions are unique across shards: writes on every shard at once, with
//! the wall clock frozen in one millisecond or running, never share a
//! revision, and every one is below 2^53.
//!
//! Regression: revisions were `unix_millis << 16 | logical`, per shard, so
//! two idle shards stamped the first write of a millisecond alike. Lock and
//! election then gave two holders the same fencing revision (issue 17).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future::block_on;
use keel_engine::hlc::{self, ManualClock, WallClock, KEEL_EPOCH_UNIX_MILLIS, REVISION_LIMIT};
use keel_engine::mvcc::{
    Compare, CompareResult, CompareTarget, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use keel_engine::routing::shard_of;
use keel_engine::shard::{Consistency, Node};
use keel_tests::node_config;

const SHARDS: usize = 4;
const WRITERS: usize = 8;

/// A key of `writer`'s own on `shard`.
fn key_on(shard: usize, writer: usize, seq: u64) -> Vec<u8> {
    (0u32..)
        .map(|salt| format!("w{writer}/{seq}/{salt}").into_bytes())
        .find(|key| shard_of(key, SHARDS) == shard)
        .unwrap_or_default()
}

/// Writes from `WRITERS` threads for `how_long`, each writer going round
/// the shards, half puts and half transactions; answers every
/// acknowledged revision with what wrote it.
fn write_everywhere(node: &Node, how_long: Duration) -> Vec<(u64, Vec<u8>)> {
    let deadline = Instant::now() + how_long;
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                scope.spawn(move || {
                    let mut acked = Vec::new();
                    let mut seq = 0u64;
                    while Instant::now() < deadline && seq < 100_000 {
                        let key = key_on(seq as usize % SHARDS, writer, seq);
                        let put = PutRequest {
                            key: key.clone(),
                            value: b"v".to_vec(),
                            ..PutRequest::default()
                        };
                        let applied = if seq.is_multiple_of(2) {
                            block_on(node.put(put))
                        } else {
                            block_on(node.txn(TxnRequest {
                                compare: vec![Compare {
                                    key: key.clone(),
                                    range_end: Vec::new(),
                                    target: CompareTarget::Version(0),
                                    result: CompareResult::Equal,
                                }],
                                success: vec![RequestOp::Put(put)],
                                failure: Vec::new(),
                            }))
                        };
                        acked.push((applied.expect("write").revision, key));
                        seq += 1;
                    }
                    acked
                })
            })
            .collect();
        writers
            .into_iter()
            .flat_map(|w| w.join().expect("writer"))
            .collect()
    })
}

/// Checks that no two acknowledged writes share a revision, that each is
/// below 2^53 and names the shard that stamped it, and that the stored
/// keys carry the same revisions.
fn check_unique(node: &Node, acked: &[(u64, Vec<u8>)], label: &str) {
    let mut by_revision: BTreeMap<u64, &[u8]> = BTreeMap::new();
    for (revision, key) in acked {
        if let Some(other) = by_revision.insert(*revision, key) {
            panic!(
                "{label}: revision {revision} given to {} and {}",
                String::from_utf8_lossy(other),
                String::from_utf8_lossy(key)
            );
        }
        assert!(*revision < REVISION_LIMIT, "{label}: {revision} >= 2^53");
        assert_eq!(
            hlc::shard_of_revision(*revision, SHARDS),
            shard_of(key, SHARDS),
            "{label}: revision {revision} names another shard"
        );
    }
    let all = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..RangeRequest::default()
    };
    let (_, found) = block_on(node.range(all, Consistency::Linearizable)).expect("read");
    let mut mod_revisions = BTreeMap::new();
    for kv in &found.kvs {
        assert_eq!(kv.create_revision, kv.mod_revision, "{label}: written once");
        if let Some(other) = mod_revisions.insert(kv.mod_revision, kv.key.clone()) {
            panic!(
                "{label}: {} and {} share mod revision {}",
                String::from_utf8_lossy(&other),
                String::from_utf8_lossy(&kv.key),
                kv.mod_revision
            );
        }
    }
    assert_eq!(found.kvs.len(), acked.len(), "{label}: every write stored");
}

#[test]
fn concurrent_writes_on_every_shard_never_share_a_revision() {
    // A frozen clock: every shard stamps in the same millisecond, and
    // bursts run past its logical part.
    let dir = tempfile::tempdir().unwrap();
    let frozen = Arc::new(ManualClock::at(KEEL_EPOCH_UNIX_MILLIS + 86_400_000));
    let mut config = node_config(dir.path(), SHARDS, 2);
    config.clock = frozen.clone();
    let node = Node::start(config).unwrap();
    let acked = write_everywhere(&node, Duration::from_secs(2));
    assert!(acked.len() > 100, "only {} writes", acked.len());
    check_unique(&node, &acked, "frozen clock");
    let highest = acked.iter().map(|(r, _)| *r).max().unwrap_or(0);
    // More writes than one millisecond holds: the clock ran ahead.
    if acked.len() > 8192 {
        assert!(hlc::unix_millis_of(highest) > frozen.unix_millis());
    }
    drop(node);

    // The system clock.
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(node_config(dir.path(), SHARDS, 2)).unwrap();
    let acked = write_everywhere(&node, Duration::from_secs(2));
    check_unique(&node, &acked, "system clock");
}

#[test]
fn thirty_years_ahead_a_node_stamps_below_2_to_the_53() {
    let dir = tempfile::tempdir().unwrap();
    let thirty_years_ms = 30 * 36_525 * 86_400 * 10;
    let clock = Arc::new(ManualClock::at(
        hlc::SystemClock.unix_millis() + thirty_years_ms,
    ));
    let mut config = node_config(dir.path(), SHARDS, 2);
    config.clock = clock.clone();
    let node = Node::start(config).unwrap();
    let acked = write_everywhere(&node, Duration::from_millis(300));
    check_unique(&node, &acked, "thirty years ahead");
    for (revision, _) in &acked {
        assert!(hlc::unix_millis_of(*revision) >= clock.unix_millis());
    }
}

/// The header of a read of one shard is a node-wide high-water mark: after
/// a write on one shard is acknowledged, a read of an idle shard reports a
/// header at or above the write's revision, linearizable or serializable
/// (etcd: the header never goes back for a client that reads after it
/// wrote). And a watch from the header onwards sees exactly the later
/// changes of what was read.
///
/// Regression: a read of one shard reported that shard's own current
/// revision, below the write just acknowledged on another (issue 17).
#[test]
fn a_read_after_a_write_elsewhere_never_reports_an_older_header() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(node_config(dir.path(), SHARDS, 2)).unwrap();
    let read_key = key_on(1, 99, 0);
    block_on(node.put(PutRequest {
        key: read_key.clone(),
        value: b"first".to_vec(),
        ..PutRequest::default()
    }))
    .unwrap();
    for round in 0..40u64 {
        let written = block_on(node.put(PutRequest {
            key: key_on(0, 98, round),
            value: b"v".to_vec(),
            ..PutRequest::default()
        }))
        .unwrap()
        .revision;
        for consistency in [Consistency::Linearizable, Consistency::Serializable] {
            let read = RangeRequest {
                key: read_key.clone(),
                ..RangeRequest::default()
            };
            let (header, found) = block_on(node.range(read, consistency)).unwrap();
            assert!(
                header >= written,
                "round {round} {consistency:?}: header {header} below the write at {written}"
            );
            assert_eq!(found.kvs.len(), 1);
        }
        // A watch from now on the other shard starts after the write too
        // (regression, review of issue 17: it started after its own
        // shard's last revision).
        let watch = block_on(node.watch(keel_engine::mvcc::WatchRequest {
            key: read_key.clone(),
            ..keel_engine::mvcc::WatchRequest::default()
        }))
        .unwrap();
        assert!(
            watch.start_revision() > written,
            "round {round}: a watch created after the write at {written} starts at {}",
            watch.start_revision()
        );
    }
    // Resuming from the header misses nothing and repeats nothing.
    let (header, _) = block_on(node.range(
        RangeRequest {
            key: read_key.clone(),
            ..RangeRequest::default()
        },
        Consistency::Linearizable,
    ))
    .unwrap();
    let later = block_on(node.put(PutRequest {
        key: read_key.clone(),
        value: b"second".to_vec(),
        ..PutRequest::default()
    }))
    .unwrap()
    .revision;
    let mut watch = block_on(node.watch(keel_engine::mvcc::WatchRequest {
        key: read_key.clone(),
        start_revision: header + 1,
        ..keel_engine::mvcc::WatchRequest::default()
    }))
    .unwrap();
    let events = keel_tests::watch_events(&mut watch, 1, "resume from the header");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kv.mod_revision, later);
    assert_eq!(events[0].kv.value, b"second");
}

#[test]
fn a_compaction_entry_past_the_last_revision_is_refused_and_stops_nothing() {
    // A compaction's entry observes its revision before it is stamped; one
    // past 2^53 (from a peer of another version, say) would leave the
    // shard's clock there and refuse every later write.
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(node_config(dir.path(), 1, 1)).unwrap();
    let compact = keel_engine::mvcc::Entry::Compact {
        revision: REVISION_LIMIT,
    };
    assert!(block_on(node.write_to(0, compact)).is_err());
    let put = PutRequest {
        key: b"after".to_vec(),
        value: b"v".to_vec(),
        ..PutRequest::default()
    };
    let applied = block_on(node.put(put)).expect("writes go on");
    assert!(applied.revision < REVISION_LIMIT);
}
