//! Watches over several shards against a reference: a node of 4 shards on
//! 2 cores takes sequential writes (puts, deletes of one key and of a
//! hash-tagged prefix); every merged watch must report exactly the events
//! those writes made, in revision order: one started before the writes,
//! ones resumed from a revision in the middle or from the first write (read
//! from history), one on one hash tag (one shard), and one below the
//! compaction point (which must report "compacted").

use futures_lite::future::block_on;
use keel_engine::mvcc::*;
use keel_engine::shard::{Node, NodeError, WatchBatch, WatchStream};
use keel_tests::{everything, node_config, watch_events};
use rand::{Rng, SeedableRng};

/// What the test compares: kind, key, revision, value.
type Seen = (EventKind, Vec<u8>, Revision, Vec<u8>);

fn seen(event: &Event) -> Seen {
    (
        event.kind,
        event.kv.key.clone(),
        event.kv.mod_revision,
        event.kv.value.clone(),
    )
}

/// Reads `count` events (panics after 30 s without them).
fn collect(stream: &mut WatchStream<'_>, count: usize) -> Vec<Seen> {
    watch_events(stream, count, "watch")
        .iter()
        .map(seen)
        .collect()
}

#[test]
fn merged_watches_match_the_writes() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(node_config(dir.path(), 4, 2)).unwrap();
    let mut live = block_on(node.watch(everything())).unwrap();
    let tag = b"{g1}/".to_vec();
    let mut tagged = block_on(node.watch(WatchRequest {
        key: tag.clone(),
        range_end: prefix_end(&tag),
        ..WatchRequest::default()
    }))
    .unwrap();

    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut expected: Vec<Seen> = Vec::new();
    let mut revisions = Vec::new();
    for step in 0..300u32 {
        let key = if rng.gen_bool(0.3) {
            format!("{{g1}}/{}", rng.gen_range(0..6))
        } else {
            format!("k{}", rng.gen_range(0..30))
        }
        .into_bytes();
        match rng.gen_range(0..10) {
            0 => {
                let applied = block_on(node.delete_range(DeleteRangeRequest {
                    key: tag.clone(),
                    range_end: prefix_end(&tag),
                    prev_kv: true,
                }))
                .unwrap();
                let Response::DeleteRange(deleted) = applied.response else {
                    panic!("delete answer")
                };
                for kv in deleted.prev_kvs {
                    expected.push((EventKind::Delete, kv.key, applied.revision, Vec::new()));
                }
                revisions.push(applied.revision);
            }
            1 | 2 => {
                let applied = block_on(node.delete_range(DeleteRangeRequest {
                    key: key.clone(),
                    ..DeleteRangeRequest::default()
                }))
                .unwrap();
                let Response::DeleteRange(deleted) = applied.response else {
                    panic!("delete answer")
                };
                if deleted.deleted == 1 {
                    expected.push((EventKind::Delete, key, applied.revision, Vec::new()));
                }
                revisions.push(applied.revision);
            }
            _ => {
                let value = format!("v{step}").into_bytes();
                let applied = block_on(node.put(PutRequest {
                    key: key.clone(),
                    value: value.clone(),
                    ..PutRequest::default()
                }))
                .unwrap();
                expected.push((EventKind::Put, key, applied.revision, value));
                revisions.push(applied.revision);
            }
        }
    }
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "sequential writes, rising revisions"
    );

    assert_eq!(collect(&mut live, expected.len()), expected, "live watch");
    let in_tag: Vec<Seen> = expected
        .iter()
        .filter(|e| e.1.starts_with(&tag))
        .cloned()
        .collect();
    assert_eq!(collect(&mut tagged, in_tag.len()), in_tag, "one hash tag");

    let middle = revisions[150];
    let mut resumed = block_on(node.watch(WatchRequest {
        start_revision: middle,
        ..everything()
    }))
    .unwrap();
    let from_middle: Vec<Seen> = expected.iter().filter(|e| e.2 >= middle).cloned().collect();
    assert_eq!(
        collect(&mut resumed, from_middle.len()),
        from_middle,
        "resumed mid-way"
    );
    let mut replay = block_on(node.watch(WatchRequest {
        start_revision: revisions[0],
        ..everything()
    }))
    .unwrap();
    assert_eq!(
        collect(&mut replay, expected.len()),
        expected,
        "read from history"
    );

    // A write after all that reaches every live stream, and only it.
    let last = block_on(node.put(PutRequest {
        key: b"k-last".to_vec(),
        value: b"x".to_vec(),
        ..PutRequest::default()
    }))
    .unwrap();
    let want = vec![(
        EventKind::Put,
        b"k-last".to_vec(),
        last.revision,
        b"x".to_vec(),
    )];
    assert_eq!(collect(&mut live, 1), want);
    assert_eq!(collect(&mut replay, 1), want);

    // Compact every shard, then a watch from below the point is refused.
    for shard in 0..node.shard_count() {
        block_on(node.write_to(shard, Entry::Compact { revision: middle })).unwrap();
    }
    let mut old = block_on(node.watch(WatchRequest {
        start_revision: revisions[10],
        ..everything()
    }))
    .unwrap();
    match block_on(old.next()) {
        Ok(WatchBatch::Compacted { compact_revision }) => assert_eq!(compact_revision, middle),
        other => panic!("expected compacted, got {other:?}"),
    }
    drop((live, tagged, resumed, replay, old));
    node.shutdown();
}

#[test]
fn an_idle_shard_does_not_hold_back_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(node_config(dir.path(), 4, 2)).unwrap();
    let mut stream = block_on(node.watch(everything())).unwrap();
    // Every write lands on the one shard of one hash tag; the other three
    // shards never write, and must still let the events through.
    for i in 0..20 {
        let key = format!("{{only}}/{i}").into_bytes();
        let applied = block_on(node.put(PutRequest {
            key: key.clone(),
            value: b"v".to_vec(),
            ..PutRequest::default()
        }))
        .unwrap();
        let got = collect(&mut stream, 1);
        assert_eq!(
            got,
            vec![(EventKind::Put, key, applied.revision, b"v".to_vec())]
        );
    }
    assert!(matches!(
        block_on(node.watch(WatchRequest {
            key: Vec::new(),
            ..WatchRequest::default()
        })),
        Err(NodeError::Kv(_))
    ));
    drop(stream);
    node.shutdown();
}

#[test]
fn concurrent_writes_on_every_shard_arrive_in_revision_order() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(node_config(dir.path(), 4, 2)).unwrap();
    let mut stream = block_on(node.watch(everything())).unwrap();
    let mut acked: Vec<Seen> = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..8)
            .map(|writer| {
                let node = &node;
                scope.spawn(move || {
                    (0..50)
                        .map(|i| {
                            let key = format!("w{writer}/{i}").into_bytes();
                            let applied = block_on(node.put(PutRequest {
                                key: key.clone(),
                                value: b"v".to_vec(),
                                ..PutRequest::default()
                            }))
                            .unwrap();
                            (EventKind::Put, key, applied.revision, b"v".to_vec())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let got = collect(&mut stream, acked.len());
    assert!(
        got.windows(2).all(|w| w[0].2 <= w[1].2),
        "events out of revision order"
    );
    let mut got_sorted = got.clone();
    got_sorted.sort_by(|a, b| (a.2, &a.1).cmp(&(b.2, &b.1)));
    acked.sort_by(|a, b| (a.2, &a.1).cmp(&(b.2, &b.1)));
    assert_eq!(got_sorted, acked);
    drop(stream);
    node.shutdown();
}

#[test]
fn a_progress_notification_comes_after_every_event_up_to_its_revision() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(node_config(dir.path(), 4, 2)).unwrap();
    let mut stream = block_on(node.watch(everything())).unwrap();
    let mut written = Vec::new();
    for i in 0..40u32 {
        let key = format!("progress/{i}").into_bytes();
        let applied = block_on(node.put(PutRequest {
            key: key.clone(),
            value: b"v".to_vec(),
            ..PutRequest::default()
        }))
        .unwrap();
        written.push((key, applied.revision));
    }
    let at = block_on(node.client().current_revision()).unwrap();
    stream.request_progress(at);
    let mut seen = Vec::new();
    let progress = loop {
        match block_on(futures_lite::future::or(
            async { Some(stream.next().await) },
            async {
                keel_tests::timeout(std::time::Duration::from_secs(30)).await;
                None
            },
        )) {
            Some(Ok(WatchBatch::Events(events))) => {
                seen.extend(events.into_iter().map(|e| (e.kv.key, e.kv.mod_revision)))
            }
            Some(Ok(WatchBatch::Progress(revision))) => break revision,
            other => panic!("expected events or progress, got {other:?}"),
        }
    };
    assert_eq!(progress, at);
    written.sort_by_key(|(_, revision)| *revision);
    assert_eq!(
        seen, written,
        "every event up to the progress revision comes first"
    );
    drop(stream);
    node.shutdown();
}
