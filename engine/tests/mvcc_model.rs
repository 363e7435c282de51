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
use rand::Rng;
use support::etcd_model::{normal, Model};
use support::generator::Gen;

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
    for id in model.leases.keys() {
        assert_eq!(
            store.lease_keys(*id).unwrap(),
            model.keys_of_lease(*id),
            "{label}: keys of lease {id}"
        );
    }
}

/// After a finished compaction at C, history holds exactly what reads at C
/// and later, and watches from C, can see: per key the changes above C,
/// plus its newest at or below C unless that is a delete below C. `gone`
/// names the keys whose last change is a delete that history still holds.
fn check_compacted_rows(store: &mut Store, model: &Model, label: &str) {
    // Counted in the file: a held transaction is committed first.
    store.sync().unwrap();
    let c = model.compact;
    let mut history = 0;
    let mut gone = 0;
    for versions in model.versions.values() {
        history += versions.iter().filter(|(r, _)| *r > c).count();
        if let Some((r, kv)) = versions.iter().rev().find(|(r, _)| *r <= c) {
            if kv.is_some() || *r == c {
                history += 1;
            }
        }
        if let Some((r, None)) = versions.last() {
            if *r >= c {
                gone += 1;
            }
        }
    }
    let snap = store.database().begin_read().unwrap();
    assert_eq!(
        snap.tree(b"history").unwrap().map_or(0, |t| t.len()),
        history as u64,
        "{label}: history rows"
    );
    assert_eq!(
        snap.tree(b"gone").unwrap().map_or(0, |t| t.len()),
        gone as u64,
        "{label}: gone rows"
    );
}

/// Odd seeds run the store as a shard does: batches in one transaction held
/// open across them (`defer_syncs`), made durable now and then.
fn run(seed: u64, steps: usize, dir: &Path) {
    let path = dir.join(format!("kv-{seed}.db"));
    let mut gen = Gen::for_store(seed);
    let deferred = seed % 2 == 1;
    let open = |path: &Path| {
        let mut store = Store::open(path, Options::default()).unwrap();
        store.defer_syncs(deferred);
        store
    };
    let mut store = open(&path);
    let mut model = Model::default();
    let mut rev = 0u64;
    let mut index = 0u64;
    for step in 0..steps {
        let label = format!("seed {seed} step {step}");
        match gen.rng.gen_range(0..20) {
            0..=9 => {
                rev += gen.rng.gen_range(1..4);
                if gen.rng.gen_bool(0.02) {
                    rev = model.current;
                }
                index += 1;
                let e = gen.entry(model.current);
                let s = store.apply(index, rev, &e).map(|a| a.response);
                let m = model.apply(rev, &e);
                same(&format!("{label} apply {e:?}"), s, m);
                rev = rev.max(model.current);
            }
            10..=11 => {
                let mut entries = Vec::new();
                for _ in 0..gen.rng.gen_range(1..5) {
                    rev += gen.rng.gen_range(1..3);
                    index += 1;
                    entries.push((index, rev, gen.entry(model.current)));
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
                let compact_rows = if gen.rng.gen_bool(0.5) {
                    gen.rng.gen_range(1..8)
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
                    check_compacted_rows(&mut store, &model, &label);
                }
            }
            12..=16 => {
                let r = gen.range(model.current);
                same(
                    &format!("{label} range {r:?}"),
                    store.range(&r),
                    model.range(&r),
                );
            }
            17 => {
                let result = store.compact_step(gen.rng.gen_range(1..8)).unwrap();
                if result.done {
                    check_compacted_rows(&mut store, &model, &label);
                }
            }
            18 => {
                check_leases(&store, &model, &label);
                if deferred && gen.rng.gen_bool(0.5) {
                    store.sync().unwrap();
                    assert_eq!(store.durable_applied_index(), index, "{label}: synced");
                }
            }
            _ => {
                store.sync().unwrap();
                drop(store);
                store = open(&path);
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
    check_compacted_rows(&mut store, &model, &format!("seed {seed} end"));
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
    let cases = support::generator::model_cases(24);
    let dir = tempfile::tempdir().unwrap();
    for seed in 0..cases {
        run(seed, 300, dir.path());
    }
}
