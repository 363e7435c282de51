//! Puts, deletes, transactions and lease grants at and around every limit
//! (key length, value length, key and value together, request size,
//! operations per branch, nesting, TTLs), in batches as a shard applies
//! them, holding its tree transaction across batches: whatever passes the
//! proposer's checks (`check_entry`) applies and reads back; whatever is
//! refused changes nothing; the keyspace never fails.
//!
//! Regression: a put of a 40-byte key and a 1,572,800-byte value passed
//! every check, and its history row (42 bytes more) was too large for the
//! tree when it applied: the shard stopped, and stopped again at every
//! restart, replaying it (issue 17).
//!
//! `KEEL_MODEL_CASES` sets the number of seeds (default 12).

use keel_engine::btree::Options;
use keel_engine::mvcc::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const STEPS: usize = 40;

fn cases() -> u64 {
    std::env::var("KEEL_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
}

/// A length near one of `edges` (within 2 either side).
fn near(rng: &mut StdRng, edges: &[usize]) -> usize {
    let edge = edges[rng.gen_range(0..edges.len())];
    (edge + rng.gen_range(0..5)).saturating_sub(2)
}

/// One of a few keys of each edge length, so that puts meet existing keys.
fn key(rng: &mut StdRng) -> Vec<u8> {
    let len = near(rng, &[1, 7, 8, 40, MAX_KEY_LEN]).max(1);
    let mut key = vec![b'k'; len];
    key[0] = b'a' + rng.gen_range(0..3);
    key
}

fn value_for(rng: &mut StdRng, key_len: usize) -> Vec<u8> {
    let len = near(
        rng,
        &[
            0,
            100,
            MAX_VALUE_LEN,
            MAX_PUT_BYTES.saturating_sub(key_len),
            MAX_REQUEST_BYTES.saturating_sub(key_len),
        ],
    );
    vec![b'v'; len]
}

fn put(rng: &mut StdRng, lease: LeaseId) -> PutRequest {
    let key = key(rng);
    let value = value_for(rng, key.len());
    PutRequest {
        value,
        lease: if rng.gen_bool(0.2) { lease } else { 0 },
        prev_kv: rng.gen_bool(0.3),
        ignore_value: false,
        ignore_lease: false,
        key,
    }
}

fn small_put(i: usize) -> RequestOp {
    RequestOp::Put(PutRequest {
        key: format!("t{i:03}").into_bytes(),
        value: b"x".to_vec(),
        ..PutRequest::default()
    })
}

/// A transaction at a limit: many operations, large puts together, deep
/// nesting, or a key written twice.
fn txn(rng: &mut StdRng, lease: LeaseId) -> TxnRequest {
    match rng.gen_range(0..4) {
        0 => TxnRequest {
            success: (0..near(rng, &[MAX_TXN_OPS])).map(small_put).collect(),
            ..TxnRequest::default()
        },
        1 => {
            let (a, b) = (put(rng, lease), put(rng, lease));
            TxnRequest {
                compare: vec![Compare {
                    key: a.key.clone(),
                    range_end: Vec::new(),
                    target: CompareTarget::Version(0),
                    result: CompareResult::Greater,
                }],
                success: vec![RequestOp::Put(a.clone()), RequestOp::Put(b)],
                failure: vec![RequestOp::Put(a)],
            }
        }
        2 => {
            let mut inner = TxnRequest {
                success: vec![small_put(1)],
                ..TxnRequest::default()
            };
            for _ in 0..near(rng, &[MAX_TXN_OPS]) {
                inner = TxnRequest {
                    success: vec![RequestOp::Txn(inner)],
                    ..TxnRequest::default()
                };
            }
            inner
        }
        _ => {
            let a = put(rng, lease);
            TxnRequest {
                success: vec![
                    RequestOp::Put(a.clone()),
                    RequestOp::DeleteRange(DeleteRangeRequest {
                        key: a.key,
                        ..DeleteRangeRequest::default()
                    }),
                ],
                ..TxnRequest::default()
            }
        }
    }
}

fn entry(rng: &mut StdRng, lease: LeaseId) -> Entry {
    match rng.gen_range(0..10) {
        0..=4 => Entry::Put(put(rng, lease)),
        5 => Entry::Put(PutRequest {
            key: key(rng),
            ignore_value: true,
            lease: if rng.gen_bool(0.5) { lease } else { 0 },
            ..PutRequest::default()
        }),
        6 => Entry::DeleteRange(DeleteRangeRequest {
            key: key(rng),
            range_end: if rng.gen_bool(0.5) {
                vec![0]
            } else {
                Vec::new()
            },
            prev_kv: true,
        }),
        7 | 8 => Entry::Txn(txn(rng, lease)),
        _ => Entry::LeaseGrant {
            id: [0, -1, 7][rng.gen_range(0..3)],
            ttl: near(rng, &[1, MAX_LEASE_TTL as usize]) as i64,
        },
    }
}

/// Everything a client can see: every pair with its metadata, every lease
/// with its keys.
type Dump = (Vec<KeyValue>, Vec<(LeaseInfo, Vec<Vec<u8>>)>);

fn dump(store: &Store) -> Dump {
    let all = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..RangeRequest::default()
    };
    let pairs = store.range(&all).expect("range").kvs;
    let leases = store
        .leases()
        .expect("leases")
        .into_iter()
        .map(|l| (l, store.lease_keys(l.id).expect("lease keys")))
        .collect();
    (pairs, leases)
}

fn describe(entry: &Entry) -> String {
    match entry {
        Entry::Put(p) => format!(
            "put key {} value {} lease {} ignore_value {}",
            p.key.len(),
            p.value.len(),
            p.lease,
            p.ignore_value
        ),
        Entry::Txn(t) => format!(
            "txn of {} ops, {} bytes",
            t.success.len(),
            t.success
                .iter()
                .map(|op| match op {
                    RequestOp::Put(p) => p.key.len() + p.value.len(),
                    _ => 0,
                })
                .sum::<usize>()
        ),
        other => format!("{other:?}"),
    }
}

#[test]
fn what_passes_the_checks_applies_and_what_is_refused_changes_nothing() {
    for seed in 0..cases() {
        let mut rng = StdRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path().join("kv.db"), Options::default()).unwrap();
        // As a shard: one tree transaction held across batches.
        store.defer_syncs(true);
        let mut index = 0;
        let mut revision = 0;
        let mut next = |entry: &Entry| {
            index += 1;
            revision += 10;
            (index, revision, entry.clone())
        };
        let grant = next(&Entry::LeaseGrant { id: 7, ttl: 60 });
        let lease = 7;
        store
            .apply(grant.0, grant.1, &grant.2)
            .expect("grant lease 7");
        for step in 0..STEPS {
            // A batch of one to three entries, as the replica applies them.
            let entries: Vec<(u64, u64, Entry)> = (0..rng.gen_range(1..=3))
                .map(|_| next(&entry(&mut rng, lease)))
                .collect();
            let before = dump(&store);
            let batch: Vec<Indexed> = entries
                .iter()
                .map(|(index, revision, entry)| Indexed {
                    index: *index,
                    revision: *revision,
                    entry,
                })
                .collect();
            let results = store
                .apply_batch(&batch)
                .unwrap_or_else(|e| panic!("seed {seed} step {step}: the keyspace failed: {e}"));
            let mut any_applied = false;
            for ((_, _, entry), result) in entries.iter().zip(&results) {
                let label = format!("seed {seed} step {step}: {}", describe(entry));
                match (check_entry(entry), result) {
                    (Err(checked), Ok(_)) => {
                        panic!("{label}: refused by the checks ({checked}) but applied")
                    }
                    (_, Err(e)) => assert!(!e.is_fatal(), "{label}: fatal {e}"),
                    (Ok(()), Ok(applied)) => {
                        any_applied = true;
                        if let (Entry::Put(put), false) = (entry, put_is_undone(entry, &entries)) {
                            let read = store
                                .range(&RangeRequest {
                                    key: put.key.clone(),
                                    ..RangeRequest::default()
                                })
                                .unwrap();
                            let kv = &read.kvs[0];
                            assert_eq!(kv.mod_revision, applied.revision, "{label}");
                            if !put.ignore_value {
                                assert_eq!(kv.value.len(), put.value.len(), "{label}");
                            }
                        }
                    }
                }
            }
            if !any_applied {
                assert_eq!(
                    dump(&store),
                    before,
                    "seed {seed} step {step}: refused, changed"
                );
            }
            // Now and then the held transaction is committed, so large
            // rows go through the tree's commit as well.
            if step % 7 == 6 {
                store
                    .sync()
                    .unwrap_or_else(|e| panic!("seed {seed} step {step}: sync: {e}"));
            }
        }
        store.sync().unwrap();
        let kept = dump(&store);
        drop(store);
        let store = Store::open(dir.path().join("kv.db"), Options::default()).unwrap();
        assert_eq!(dump(&store), kept, "seed {seed}: reopened");
    }
}

/// Whether a later entry of the same batch deletes or rewrites the put's
/// key (then the put cannot be read back as it was).
fn put_is_undone(entry: &Entry, batch: &[(u64, u64, Entry)]) -> bool {
    let Entry::Put(put) = entry else {
        return false;
    };
    let at = batch
        .iter()
        .position(|(_, _, e)| std::ptr::eq(e, entry))
        .unwrap_or(0);
    batch.iter().skip(at + 1).any(|(_, _, later)| match later {
        Entry::Put(p) => p.key == put.key,
        Entry::DeleteRange(_) | Entry::Txn(_) => true,
        _ => false,
    })
}

/// The put of the bug report: a 40-byte key with a 1,572,800-byte value
/// fits the request limit, but not the tree once stored; it is refused by
/// the checks, and a put of the most that fits applies.
#[test]
fn the_reported_poison_put_is_refused_and_the_largest_that_fits_applies() {
    let poison = Entry::Put(PutRequest {
        key: vec![b'k'; 40],
        value: vec![b'v'; 1_572_800],
        ..PutRequest::default()
    });
    assert!(matches!(
        check_entry(&poison),
        Err(KvError::PutTooLarge {
            key: 40,
            value: 1_572_800
        })
    ));
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path().join("kv.db"), Options::default()).unwrap();
    store.defer_syncs(true);
    let refused = apply_one(&mut store, 1, &poison);
    assert!(
        matches!(refused, Err(KvError::PutTooLarge { .. })),
        "{refused:?}"
    );
    for key_len in [1, 6, 7, 40, MAX_KEY_LEN] {
        let value_len = (MAX_PUT_BYTES - key_len).min(MAX_VALUE_LEN);
        let largest = Entry::Put(PutRequest {
            key: vec![b'a'; key_len],
            value: vec![b'v'; value_len],
            ..PutRequest::default()
        });
        check_entry(&largest).unwrap_or_else(|e| panic!("key {key_len}: {e}"));
        let index = 2 + key_len as u64;
        apply_one(&mut store, index, &largest)
            .unwrap_or_else(|e| panic!("key {key_len}, value {value_len}: {e}"));
        let one_more = Entry::Put(PutRequest {
            key: vec![b'a'; key_len],
            value: vec![b'v'; value_len + 1],
            ..PutRequest::default()
        });
        assert!(
            check_entry(&one_more).is_err(),
            "key {key_len}: one more byte"
        );
    }
    store.sync().unwrap();
}

/// Applies one entry at revision `index * 10`; a failure of the keyspace
/// (not a refusal) fails the test.
fn apply_one(store: &mut Store, index: u64, entry: &Entry) -> KvResult<Applied> {
    let batch = [Indexed {
        index,
        revision: index * 10,
        entry,
    }];
    let mut results = store.apply_batch(&batch).expect("the keyspace failed");
    results.pop().expect("one answer")
}

/// A read with an answer limit is refused once its answer passes the
/// limit, whatever its order; under the limit, or cut short by a count
/// limit, it answers whole.
#[test]
fn a_read_past_its_answer_limit_is_refused_before_it_gathers_more() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path().join("kv.db"), Options::default()).unwrap();
    store.defer_syncs(true);
    for i in 0..100u64 {
        let put = Entry::Put(PutRequest {
            key: format!("k{i:03}").into_bytes(),
            value: vec![b'v'; 1000],
            ..PutRequest::default()
        });
        apply_one(&mut store, i + 1, &put).unwrap();
    }
    // Each pair: 4 bytes of key, 1,000 of value, and the frame's share.
    let pair = 4 + 1000 + ANSWER_BYTES_PER_PAIR;
    let every = |answer_limit: usize, sort_target: SortTarget, limit: u64| RangeRequest {
        key: b"k".to_vec(),
        range_end: b"l".to_vec(),
        sort_target,
        sort_order: SortOrder::Descend,
        limit,
        answer_limit,
        ..RangeRequest::default()
    };
    for target in [SortTarget::Key, SortTarget::Value] {
        let whole = store.range(&every(100 * pair, target, 0)).unwrap();
        assert_eq!(whole.kvs.len(), 100, "{target:?}");
        let refused = store.range(&every(100 * pair - 1, target, 0));
        assert!(
            matches!(refused, Err(KvError::AnswerTooLarge { limit }) if limit == 100 * pair - 1),
            "{target:?}: {refused:?}"
        );
        let limited = store.range(&every(10 * pair, target, 10)).unwrap();
        assert_eq!((limited.kvs.len(), limited.count), (10, 100), "{target:?}");
        let unlimited = store.range(&every(0, target, 0)).unwrap();
        assert_eq!(unlimited.kvs.len(), 100, "{target:?}");
    }
}
