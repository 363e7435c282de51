//! Watchers against the reference model: random interleavings of writes
//! (including revisions with more events, and batches with more bytes of
//! events, than are kept in memory),
//! compactions, and watchers that poll fast, slowly, or not at all until
//! the end (so their buffers overflow and they catch up from the revision
//! log). Every watcher must see exactly the changes of its range from its
//! start revision, in order, with no loss and no duplicate, whole revisions
//! per update unless marked as a fragment; or a prefix of them followed by
//! the compacted error.

mod support;

use keel_engine::btree::Options;
use keel_engine::mvcc::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::etcd_model::{expected_events, Model};

const KEYS: &[&[u8]] = &[b"a", b"a\x00", b"ab", b"b", b"c/1", b"c/2", b"c/3", b"d"];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Speed {
    Fast,
    Slow,
    Stalled,
}

struct Consumer {
    id: WatchId,
    request: WatchRequest,
    start: u64,
    speed: Speed,
    received: Vec<Event>,
    compacted: Option<u64>,
    /// The revision of the last event received and whether the update that
    /// carried it was a fragment.
    last: Option<(u64, bool)>,
}

impl Consumer {
    fn poll(&mut self, store: &mut Store, max_bytes: usize) -> bool {
        if self.compacted.is_some() {
            return false;
        }
        match store.watch_poll(self.id, max_bytes).unwrap() {
            None => false,
            Some(WatchUpdate::Compacted { compact_revision }) => {
                self.compacted = Some(compact_revision);
                false
            }
            Some(WatchUpdate::Events { events, fragment }) => {
                if let (Some(first), Some((last_rev, last_fragment))) = (events.first(), self.last)
                {
                    if first.kv.mod_revision == last_rev {
                        assert!(
                            last_fragment,
                            "revision {last_rev} split without a fragment mark"
                        );
                    }
                }
                if let Some(last) = events.last() {
                    self.last = Some((last.kv.mod_revision, fragment));
                }
                self.received.extend(events);
                true
            }
        }
    }
}

fn put(rng: &mut StdRng) -> Entry {
    Entry::Put(PutRequest {
        key: KEYS[rng.gen_range(0..KEYS.len())].to_vec(),
        value: vec![b'v'; rng.gen_range(0..300)],
        ..Default::default()
    })
}

fn entry(rng: &mut StdRng) -> Entry {
    match rng.gen_range(0..10) {
        0..=5 => put(rng),
        6 => Entry::DeleteRange(DeleteRangeRequest {
            key: KEYS[rng.gen_range(0..KEYS.len())].to_vec(),
            range_end: if rng.gen_bool(0.5) {
                Vec::new()
            } else {
                b"c/3".to_vec()
            },
            prev_kv: false,
        }),
        _ => Entry::Txn(TxnRequest {
            compare: Vec::new(),
            success: (0..rng.gen_range(1..4))
                .map(|i| {
                    RequestOp::Put(PutRequest {
                        key: format!("c/{i}").into_bytes(),
                        value: vec![b't'; rng.gen_range(0..50)],
                        ..Default::default()
                    })
                })
                .collect(),
            failure: Vec::new(),
        }),
    }
}

fn watch_request(rng: &mut StdRng) -> WatchRequest {
    let key = KEYS[rng.gen_range(0..KEYS.len())].to_vec();
    WatchRequest {
        range_end: match rng.gen_range(0..4) {
            0 => Vec::new(),
            1 => vec![0],
            2 => prefix_end(&key),
            _ => prefix_end(b"c/"),
        },
        key,
        start_revision: 0,
        prev_kv: rng.gen_bool(0.5),
        no_put: rng.gen_bool(0.1),
        no_delete: rng.gen_bool(0.1),
    }
}

fn verify(consumer: &Consumer, model: &Model, label: &str) {
    let expected = expected_events(model, &consumer.request, consumer.start);
    let got = &consumer.received;
    assert!(
        got.len() <= expected.len(),
        "{label}: {} events, {} expected",
        got.len(),
        expected.len()
    );
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!((g.kind, &g.kv), (e.kind, &e.kv), "{label}: event {i}");
        // History before the compaction point may be gone: a catch-up read
        // cannot give a previous pair that compaction removed.
        let prev_compacted = e
            .prev_kv
            .as_ref()
            .is_some_and(|p| p.mod_revision < model.compact);
        if g.prev_kv.is_some() || !prev_compacted {
            assert_eq!(g.prev_kv, e.prev_kv, "{label}: prev of event {i}");
        }
    }
    match consumer.compacted {
        None => assert_eq!(got.len(), expected.len(), "{label}: missing events"),
        Some(c) => {
            // It fell behind the compaction point: what it got must be
            // below that point.
            let last = got.last().map_or(consumer.start, |e| e.kv.mod_revision);
            assert!(
                last < c,
                "{label}: compacted at {c} after an event at {last}"
            );
        }
    }
}

/// Applies `entries` to both as one batch, each at the next revision; every
/// entry must apply.
fn apply_one_batch(
    store: &mut Store,
    model: &mut Model,
    rev: &mut u64,
    index: &mut u64,
    entries: &[Entry],
) {
    let items: Vec<Indexed> = entries
        .iter()
        .map(|entry| {
            *rev += 1;
            *index += 1;
            Indexed {
                index: *index,
                revision: *rev,
                entry,
            }
        })
        .collect();
    for (result, item) in store.apply_batch(&items).unwrap().into_iter().zip(&items) {
        assert!(result.is_ok());
        model.apply(item.revision, item.entry).unwrap();
    }
}

fn run(seed: u64, dir: &std::path::Path) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut store = Store::open(dir.join(format!("w{seed}.db")), Options::default()).unwrap();
    let mut model = Model::default();
    let mut consumers: Vec<Consumer> = Vec::new();
    let mut rev = 0;
    let mut index = 0;
    for step in 0..400 {
        match rng.gen_range(0..20) {
            _ if step == 150 => {
                // A revision with more events than are kept in memory.
                let many: Vec<Entry> = (0..4100)
                    .map(|i| {
                        Entry::Put(PutRequest {
                            key: format!("m/{i:05}").into_bytes(),
                            ..Default::default()
                        })
                    })
                    .collect();
                apply_one_batch(&mut store, &mut model, &mut rev, &mut index, &many);
                let wipe = Entry::DeleteRange(DeleteRangeRequest {
                    key: b"m/".to_vec(),
                    range_end: prefix_end(b"m/"),
                    prev_kv: false,
                });
                rev += 1;
                index += 1;
                store.apply(index, rev, &wipe).unwrap();
                model.apply(rev, &wipe).unwrap();
            }
            _ if step == 200 => {
                // A batch with more bytes of events (values and previous
                // values) than are kept in memory: it overflows midway.
                let large: Vec<Entry> = (0..12)
                    .map(|i| {
                        Entry::Put(PutRequest {
                            key: KEYS[i % KEYS.len()].to_vec(),
                            value: vec![b'L'; 1400 << 10],
                            ..Default::default()
                        })
                    })
                    .collect();
                apply_one_batch(&mut store, &mut model, &mut rev, &mut index, &large);
            }
            _ if step == 100 || step == 250 => {
                // More revisions than a stalled watcher may buffer.
                let burst: Vec<Entry> = (0..MAX_BUFFERED_EVENTS + 100)
                    .map(|i| {
                        Entry::Put(PutRequest {
                            key: KEYS[i % KEYS.len()].to_vec(),
                            ..Default::default()
                        })
                    })
                    .collect();
                apply_one_batch(&mut store, &mut model, &mut rev, &mut index, &burst);
            }
            0..=10 => {
                let batch: Vec<Entry> = (0..rng.gen_range(1..4)).map(|_| entry(&mut rng)).collect();
                let items: Vec<(u64, u64)> = batch
                    .iter()
                    .map(|_| {
                        rev += rng.gen_range(1..3);
                        index += 1;
                        (index, rev)
                    })
                    .collect();
                let indexed: Vec<Indexed> = batch
                    .iter()
                    .zip(&items)
                    .map(|(entry, (index, revision))| Indexed {
                        index: *index,
                        revision: *revision,
                        entry,
                    })
                    .collect();
                for (result, (entry, (_, revision))) in store
                    .apply_batch(&indexed)
                    .unwrap()
                    .into_iter()
                    .zip(batch.iter().zip(&items))
                {
                    assert_eq!(result.is_ok(), model.apply(*revision, entry).is_ok());
                }
            }
            12..=13 => {
                let mut request = watch_request(&mut rng);
                request.start_revision = match rng.gen_range(0..4) {
                    0 => 0,
                    1 => model.current + rng.gen_range(1..4),
                    _ => rng.gen_range(1..=model.current.max(1)),
                };
                let id = store.watch(&request).unwrap();
                let start = if request.start_revision == 0 {
                    model.current + 1
                } else {
                    request.start_revision
                };
                let speed = [Speed::Fast, Speed::Slow, Speed::Stalled][rng.gen_range(0..3)];
                consumers.push(Consumer {
                    id,
                    request,
                    start,
                    speed,
                    received: Vec::new(),
                    compacted: None,
                    last: None,
                });
            }
            14 if model.current > 2 => {
                let revision = rng.gen_range(model.compact + 1..=model.current);
                rev += 1;
                index += 1;
                let compact = Entry::Compact { revision };
                assert_eq!(
                    store.apply(index, rev, &compact).is_ok(),
                    model.apply(rev, &compact).is_ok()
                );
            }
            15 => {
                store.compact_step(rng.gen_range(1..200)).unwrap();
            }
            16 if !consumers.is_empty() => {
                let at = rng.gen_range(0..consumers.len());
                let gone = consumers.swap_remove(at);
                store.watch_cancel(gone.id);
                assert!(matches!(
                    store.watch_poll(gone.id, 100),
                    Err(KvError::WatchNotFound(_))
                ));
            }
            _ => {}
        }
        for consumer in &mut consumers {
            let poll = match consumer.speed {
                Speed::Fast => true,
                Speed::Slow => rng.gen_bool(0.1),
                Speed::Stalled => false,
            };
            if poll {
                let max_bytes = rng.gen_range(1..4096);
                consumer.poll(&mut store, max_bytes);
            }
        }
    }
    for (n, consumer) in consumers.iter_mut().enumerate() {
        while consumer.poll(&mut store, 64 << 10) {}
        let label = format!(
            "seed {seed} watcher {n} ({:?}, {:?}, start {})",
            consumer.speed, consumer.request, consumer.start
        );
        verify(consumer, &model, &label);
        if consumer.compacted.is_none() {
            assert_eq!(
                store.watch_progress(consumer.id).unwrap(),
                Some(model.current),
                "{label}: progress"
            );
        }
    }
}

#[test]
fn watchers_see_exactly_their_events() {
    let dir = tempfile::tempdir().unwrap();
    let cases = support::generator::model_cases(12);
    for seed in 0..cases {
        run(seed, dir.path());
    }
}

#[test]
fn a_watch_below_the_compaction_point_is_refused_with_the_compact_revision() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path().join("kv.db"), Options::default()).unwrap();
    for rev in 1..=5 {
        let put = Entry::Put(PutRequest {
            key: b"k".to_vec(),
            value: vec![rev as u8],
            ..Default::default()
        });
        store.apply(rev, rev, &put).unwrap();
    }
    store.apply(6, 6, &Entry::Compact { revision: 4 }).unwrap();
    let old = store
        .watch(&WatchRequest {
            key: b"k".to_vec(),
            start_revision: 3,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        store.watch_poll(old, 1024).unwrap(),
        Some(WatchUpdate::Compacted {
            compact_revision: 4
        })
    );
    assert!(matches!(
        store.watch_poll(old, 1024),
        Err(KvError::WatchNotFound(_))
    ));
    let at = store
        .watch(&WatchRequest {
            key: b"k".to_vec(),
            start_revision: 4,
            ..Default::default()
        })
        .unwrap();
    let Some(WatchUpdate::Events { events, .. }) = store.watch_poll(at, 1024).unwrap() else {
        panic!("events")
    };
    let revisions: Vec<u64> = events.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(revisions, vec![4, 5]);
}

#[test]
fn one_write_reaches_ten_thousand_watchers_of_one_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path().join("kv.db"), Options::default()).unwrap();
    let request = WatchRequest {
        key: b"svc/".to_vec(),
        range_end: prefix_end(b"svc/"),
        ..Default::default()
    };
    let ids: Vec<WatchId> = (0..10_000)
        .map(|_| store.watch(&request).unwrap())
        .collect();
    let put = Entry::Put(PutRequest {
        key: b"svc/a".to_vec(),
        value: b"1".to_vec(),
        ..Default::default()
    });
    store.apply(1, 10, &put).unwrap();
    let ready = store.watches_ready();
    assert_eq!(ready.len(), ids.len());
    for id in ids {
        let Some(WatchUpdate::Events { events, .. }) = store.watch_poll(id, 1024).unwrap() else {
            panic!("events")
        };
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kv.mod_revision, 10);
    }
}

#[test]
fn a_watcher_from_a_future_revision_gets_nothing_before_it_after_an_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path().join("kv.db"), Options::default()).unwrap();
    let start = 1_000_000;
    let request = WatchRequest {
        key: vec![0],
        range_end: vec![0],
        start_revision: start,
        ..Default::default()
    };
    let id = store.watch(&request).unwrap();
    // One revision with more events than are kept in memory: every synced
    // watcher falls back to the log, this one included.
    let wide = TxnRequest {
        compare: Vec::new(),
        success: (0..100)
            .map(|i| {
                RequestOp::Put(PutRequest {
                    key: format!("k/{i:03}").into_bytes(),
                    ..Default::default()
                })
            })
            .collect(),
        failure: Vec::new(),
    };
    store.apply(1, 10, &Entry::Txn(wide)).unwrap();
    let many = DeleteRangeRequest {
        key: b"k/".to_vec(),
        range_end: prefix_end(b"k/"),
        prev_kv: false,
    };
    for i in 0..50u64 {
        let txn = TxnRequest {
            compare: Vec::new(),
            success: (0..100)
                .map(|j| {
                    RequestOp::Put(PutRequest {
                        key: format!("m/{i:03}/{j:03}").into_bytes(),
                        ..Default::default()
                    })
                })
                .collect(),
            failure: Vec::new(),
        };
        store.apply(2 + i, 11 + i, &Entry::Txn(txn)).unwrap();
    }
    store
        .apply(
            100,
            100,
            &Entry::DeleteRange(DeleteRangeRequest {
                key: b"m/".to_vec(),
                range_end: prefix_end(b"m/"),
                prev_kv: false,
            }),
        )
        .unwrap();
    store.apply(101, 101, &Entry::DeleteRange(many)).unwrap();
    while let Some(update) = store.watch_poll(id, 1 << 20).unwrap() {
        assert_eq!(
            update,
            WatchUpdate::Events {
                events: Vec::new(),
                fragment: false
            },
            "nothing below {start}"
        );
    }
    // Once caught up and live again, a revision between the head and the
    // start must still be left out.
    let early = Entry::Put(PutRequest {
        key: b"early".to_vec(),
        ..Default::default()
    });
    store.apply(102, 500, &early).unwrap();
    let put = Entry::Put(PutRequest {
        key: b"late".to_vec(),
        ..Default::default()
    });
    store.apply(103, start, &put).unwrap();
    let Some(WatchUpdate::Events { events, .. }) = store.watch_poll(id, 1 << 20).unwrap() else {
        panic!("the event at the start")
    };
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kv.mod_revision, start);
}

#[test]
fn catch_up_above_the_compaction_point_gives_the_previous_version_below_it() {
    // Compaction keeps each key's newest change at or below its revision,
    // so an event above it has its previous version, as a live watcher
    // (and etcd) would see it.
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path().join("kv.db"), Options::default()).unwrap();
    let put = |value: &str| {
        Entry::Put(PutRequest {
            key: b"k".to_vec(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        })
    };
    store.apply(1, 5, &put("v1")).unwrap();
    store
        .apply(2, 10, &Entry::Compact { revision: 10 })
        .unwrap();
    while !store.compact_step(100).unwrap().done {}
    store.apply(3, 15, &put("v2")).unwrap();
    let id = store
        .watch(&WatchRequest {
            key: b"k".to_vec(),
            start_revision: 11,
            prev_kv: true,
            ..Default::default()
        })
        .unwrap();
    let Some(WatchUpdate::Events { events, .. }) = store.watch_poll(id, 1 << 20).unwrap() else {
        panic!("the event at 15")
    };
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kv.value, b"v2");
    let prev = events[0].prev_kv.as_ref().expect("the version before");
    assert_eq!((prev.value.as_slice(), prev.mod_revision), (&b"v1"[..], 5));
}
