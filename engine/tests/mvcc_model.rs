//! The keyspace against a plain reference model of etcd semantics: random
//! sequences of puts, deletes, transactions (nested, with duplicate keys,
//! too many ops), compactions and their steps, lease operations, batches
//! with refused entries, reopens, and ranges at random revisions with every
//! option. Every answer and every refusal must be the same.
//!
//! `KEEL_MODEL_CASES` sets the number of seeds (default 24); a failure
//! prints the seed and step.

mod support;

use std::path::Path;

use keel_engine::btree::Options;
use keel_engine::mvcc::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::etcd_model::{normal, Model};

const KEYS: &[&[u8]] = &[
    b"a",
    b"a\x00",
    b"a\x00b",
    b"ab",
    b"b",
    b"\x00",
    b"\x00\x00",
    b"c/1",
    b"c/2",
    b"c/3",
    b"\xff",
];

fn key(rng: &mut StdRng) -> Vec<u8> {
    KEYS[rng.gen_range(0..KEYS.len())].to_vec()
}

fn range_end(rng: &mut StdRng, start: &[u8]) -> Vec<u8> {
    match rng.gen_range(0..6) {
        0 | 1 => Vec::new(),
        2 => vec![0],
        3 => prefix_end(start),
        4 => key(rng),
        _ => b"c/".to_vec(),
    }
}

fn lease(rng: &mut StdRng) -> i64 {
    match rng.gen_range(0..20) {
        0..=5 => 0,
        6 => -1,
        _ => rng.gen_range(1..5),
    }
}

fn value(rng: &mut StdRng) -> Vec<u8> {
    let len = if rng.gen_bool(0.05) {
        3000
    } else {
        rng.gen_range(0..6)
    };
    (0..len).map(|_| rng.gen_range(b'0'..b'4')).collect()
}

fn put(rng: &mut StdRng) -> PutRequest {
    let ignore_value = rng.gen_bool(0.1);
    let ignore_lease = rng.gen_bool(0.1);
    PutRequest {
        key: if rng.gen_bool(0.02) {
            Vec::new()
        } else {
            key(rng)
        },
        value: if ignore_value && rng.gen_bool(0.7) {
            Vec::new()
        } else {
            value(rng)
        },
        lease: if ignore_lease && rng.gen_bool(0.7) {
            0
        } else {
            lease(rng)
        },
        prev_kv: rng.gen_bool(0.5),
        ignore_value,
        ignore_lease,
    }
}

fn delete(rng: &mut StdRng) -> DeleteRangeRequest {
    let key = key(rng);
    DeleteRangeRequest {
        range_end: range_end(rng, &key),
        key,
        prev_kv: rng.gen_bool(0.5),
    }
}

fn range(rng: &mut StdRng, current: u64) -> RangeRequest {
    let key = if rng.gen_bool(0.02) {
        Vec::new()
    } else {
        key(rng)
    };
    let pick_rev = |rng: &mut StdRng| {
        if rng.gen_bool(0.6) {
            0
        } else {
            rng.gen_range(0..=current + 1)
        }
    };
    RangeRequest {
        range_end: range_end(rng, &key),
        key,
        limit: if rng.gen_bool(0.5) {
            0
        } else {
            rng.gen_range(1..4)
        },
        revision: pick_rev(rng),
        sort_order: [SortOrder::None, SortOrder::Ascend, SortOrder::Descend][rng.gen_range(0..3)],
        sort_target: [
            SortTarget::Key,
            SortTarget::Version,
            SortTarget::Create,
            SortTarget::Mod,
            SortTarget::Value,
        ][rng.gen_range(0..5)],
        keys_only: rng.gen_bool(0.2),
        count_only: rng.gen_bool(0.1),
        min_mod_revision: if rng.gen_bool(0.15) { pick_rev(rng) } else { 0 },
        max_mod_revision: if rng.gen_bool(0.15) { pick_rev(rng) } else { 0 },
        min_create_revision: if rng.gen_bool(0.15) { pick_rev(rng) } else { 0 },
        max_create_revision: if rng.gen_bool(0.15) { pick_rev(rng) } else { 0 },
    }
}

fn compare(rng: &mut StdRng, current: u64) -> Compare {
    let key = key(rng);
    Compare {
        range_end: if rng.gen_bool(0.7) {
            Vec::new()
        } else {
            range_end(rng, &key)
        },
        key,
        target: match rng.gen_range(0..5) {
            0 => CompareTarget::Version(rng.gen_range(0..4)),
            1 => CompareTarget::Create(rng.gen_range(0..=current + 1)),
            2 => CompareTarget::Mod(rng.gen_range(0..=current + 1)),
            3 => CompareTarget::Value(value(rng)),
            _ => CompareTarget::Lease(lease(rng)),
        },
        result: [
            CompareResult::Equal,
            CompareResult::NotEqual,
            CompareResult::Less,
            CompareResult::Greater,
        ][rng.gen_range(0..4)],
    }
}

fn ops(rng: &mut StdRng, current: u64, depth: u32) -> Vec<RequestOp> {
    let n = if rng.gen_bool(0.03) {
        129
    } else {
        rng.gen_range(0..4)
    };
    (0..n)
        .map(|_| match rng.gen_range(0..if depth < 2 { 4 } else { 3 }) {
            0 => RequestOp::Range(range(rng, current)),
            1 => RequestOp::Put(put(rng)),
            2 => RequestOp::DeleteRange(delete(rng)),
            _ => RequestOp::Txn(txn(rng, current, depth + 1)),
        })
        .collect()
}

fn txn(rng: &mut StdRng, current: u64, depth: u32) -> TxnRequest {
    TxnRequest {
        compare: (0..rng.gen_range(0..3))
            .map(|_| compare(rng, current))
            .collect(),
        success: ops(rng, current, depth),
        failure: ops(rng, current, depth),
    }
}

fn entry(rng: &mut StdRng, current: u64) -> Entry {
    match rng.gen_range(0..20) {
        0..=6 => Entry::Put(put(rng)),
        7..=8 => Entry::DeleteRange(delete(rng)),
        9..=12 => Entry::Txn(txn(rng, current, 0)),
        13 => Entry::Compact {
            revision: rng.gen_range(0..=current + 1),
        },
        14..=15 => Entry::LeaseGrant {
            id: if rng.gen_bool(0.15) {
                0
            } else {
                rng.gen_range(-1..5)
            },
            ttl: if rng.gen_bool(0.05) {
                0
            } else {
                rng.gen_range(1..100)
            },
        },
        16 if rng.gen_bool(0.5) => Entry::LeaseRevoke {
            id: rng.gen_range(1..6),
        },
        16 => Entry::Put(put(rng)),
        17 if rng.gen_bool(0.5) => Entry::Put(put(rng)),
        17 => Entry::LeaseExpire {
            ids: (0..rng.gen_range(0..4))
                .map(|_| rng.gen_range(1..7))
                .collect(),
        },
        18 => Entry::LeaseCheckpoint {
            checkpoints: (0..rng.gen_range(0..3))
                .map(|_| (rng.gen_range(1..7), rng.gen_range(-5..120)))
                .collect(),
        },
        _ if rng.gen_bool(0.2) => Entry::Put(PutRequest {
            key: key(rng),
            value: vec![
                b'x';
                [
                    MAX_REQUEST_BYTES,
                    MAX_REQUEST_BYTES - 1,
                    MAX_VALUE_LEN,
                    MAX_VALUE_LEN + 1
                ][rng.gen_range(0..4)]
            ],
            ..Default::default()
        }),
        _ => Entry::Put(put(rng)),
    }
}

fn same<T: std::fmt::Debug + PartialEq>(label: &str, store: KvResult<T>, model: Result<T, String>) {
    match (store, model) {
        (Ok(s), Ok(m)) => assert_eq!(s, m, "{label}"),
        (Err(s), Err(m)) => assert_eq!(normal(&s), m, "{label}"),
        (s, m) => panic!("{label}: store {s:?}, model {m:?}"),
    }
}

fn check_leases(store: &Store, model: &Model, label: &str) {
    let leases: Vec<(i64, i64, i64, u64)> = store
        .leases()
        .unwrap()
        .into_iter()
        .map(|l| (l.id, l.ttl, l.remaining_ttl, l.granted_revision))
        .collect();
    let expected: Vec<(i64, i64, i64, u64)> = model
        .leases
        .iter()
        .map(|(id, l)| (*id, l.ttl, l.remaining, l.granted))
        .collect();
    assert_eq!(leases, expected, "{label}: leases");
    let head = model.head();
    for id in model.leases.keys() {
        let keys: Vec<Vec<u8>> = head
            .values()
            .filter(|kv| kv.lease == *id)
            .map(|kv| kv.key.clone())
            .collect();
        assert_eq!(
            store.lease_keys(*id).unwrap(),
            keys,
            "{label}: keys of lease {id}"
        );
    }
}

/// After a finished compaction at C, history holds exactly what reads at C
/// and later can see: per key the versions above C, plus its newest at or
/// below C unless that is a tombstone below C; the revision log holds the
/// changes at C and later.
fn check_compacted_rows(store: &Store, model: &Model, label: &str) {
    let c = model.compact;
    let mut hist = 0;
    let mut log = 0;
    for versions in model.versions.values() {
        hist += versions.iter().filter(|(r, _)| *r > c).count();
        log += versions.iter().filter(|(r, _)| *r >= c).count();
        if let Some((r, kv)) = versions.iter().rev().find(|(r, _)| *r <= c) {
            if kv.is_some() || *r == c {
                hist += 1;
            }
        }
    }
    let snap = store.database().begin_read().unwrap();
    assert_eq!(
        snap.tree(b"hist").unwrap().map_or(0, |t| t.len()),
        hist as u64,
        "{label}: hist rows"
    );
    assert_eq!(
        snap.tree(b"revlog").unwrap().map_or(0, |t| t.len()),
        log as u64,
        "{label}: revlog rows"
    );
}

fn run(seed: u64, steps: usize, dir: &Path) {
    let path = dir.join(format!("kv-{seed}.db"));
    let mut rng = StdRng::seed_from_u64(seed);
    let mut store = Store::open(&path, Options::default()).unwrap();
    let mut model = Model::default();
    let mut rev = 0u64;
    let mut index = 0u64;
    for step in 0..steps {
        let label = format!("seed {seed} step {step}");
        match rng.gen_range(0..20) {
            0..=9 => {
                rev += rng.gen_range(1..4);
                if rng.gen_bool(0.02) {
                    rev = model.current;
                }
                index += 1;
                let e = entry(&mut rng, model.current);
                let s = store.apply(index, rev, &e).map(|a| a.response);
                let m = model.apply(rev, &e);
                same(&format!("{label} apply {e:?}"), s, m);
                rev = rev.max(model.current);
            }
            10..=11 => {
                let mut entries = Vec::new();
                for _ in 0..rng.gen_range(1..5) {
                    rev += rng.gen_range(1..3);
                    index += 1;
                    entries.push((index, rev, entry(&mut rng, model.current)));
                }
                let batch: Vec<Indexed> = entries
                    .iter()
                    .map(|(index, revision, entry)| Indexed {
                        index: *index,
                        revision: *revision,
                        entry,
                    })
                    .collect();
                // Half the batches carry a compaction step in their commit.
                let compact_rows = if rng.gen_bool(0.5) {
                    rng.gen_range(1..8)
                } else {
                    0
                };
                let (results, step) = store.apply_batch_compacting(&batch, compact_rows).unwrap();
                for ((_, r, e), s) in entries.iter().zip(results) {
                    let m = model.apply(*r, e);
                    same(&format!("{label} batch {e:?}"), s.map(|a| a.response), m);
                }
                assert_eq!(store.applied_index(), index);
                if compact_rows > 0 && step.done {
                    check_compacted_rows(&store, &model, &label);
                }
            }
            12..=16 => {
                let r = range(&mut rng, model.current);
                same(
                    &format!("{label} range {r:?}"),
                    store.range(&r),
                    model.range(&r),
                );
            }
            17 => {
                let result = store.compact_step(rng.gen_range(1..8)).unwrap();
                if result.done {
                    check_compacted_rows(&store, &model, &label);
                }
            }
            18 => check_leases(&store, &model, &label),
            _ => {
                drop(store);
                store = Store::open(&path, Options::default()).unwrap();
                assert_eq!(
                    store.current_revision(),
                    model.current,
                    "{label}: revision after reopen"
                );
                assert_eq!(
                    store.compact_revision(),
                    model.compact,
                    "{label}: compaction after reopen"
                );
            }
        }
        assert_eq!(
            store.current_revision(),
            model.current,
            "{label}: current revision"
        );
    }
    // Finish any compaction, then every revision from the compaction point
    // on must read the same, and history must be trimmed exactly.
    while !store.compact_step(5).unwrap().done {}
    check_compacted_rows(&store, &model, &format!("seed {seed} end"));
    for revision in model.compact.max(1)..=model.current {
        let r = RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision,
            ..Default::default()
        };
        same(
            &format!("seed {seed} final read at {revision}"),
            store.range(&r),
            model.range(&r),
        );
    }
    check_leases(&store, &model, &format!("seed {seed} end"));
}

#[test]
fn keyspace_matches_the_reference_model() {
    let cases: u64 = std::env::var("KEEL_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let dir = tempfile::tempdir().unwrap();
    for seed in 0..cases {
        run(seed, 300, dir.path());
    }
}
