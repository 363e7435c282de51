//! Compaction trims history exactly, whatever the step size, including keys
//! whose older version survived an earlier compaction and that change at
//! exactly the new compaction revision (that change must stay, for watches
//! from C, while the version before it goes).

use keel_engine::btree::Options;
use keel_engine::mvcc::*;

fn put(key: &str) -> Entry {
    Entry::Put(PutRequest {
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    })
}

fn rows(store: &Store, tree: &str) -> u64 {
    let snap = store.database().begin_read().unwrap();
    snap.tree(tree.as_bytes()).unwrap().map_or(0, |t| t.len())
}

/// Applies a compaction to `target` as the entry at revision `at`, then
/// steps it to the end.
fn compact_fully(store: &mut Store, at: u64, target: u64, max_rows: usize) {
    store
        .apply(at, at, &Entry::Compact { revision: target })
        .unwrap();
    let mut steps = 0;
    while !store.compact_step(max_rows).unwrap().done {
        steps += 1;
        assert!(steps < 10_000, "compaction makes no progress");
    }
}

#[test]
fn versions_overwritten_exactly_at_the_compaction_revision_are_removed() {
    for max_rows in [1, 2, 3, 1000] {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path().join("kv.db"), Options::default()).unwrap();
        // Revisions 1..=50: one put per key; compaction at 50 keeps them all
        // (each is its key's newest version at or below 50).
        for i in 1..=50u64 {
            store.apply(i, i, &put(&format!("k{i:02}"))).unwrap();
        }
        compact_fully(&mut store, 51, 50, max_rows);
        assert_eq!(rows(&store, "history"), 50);
        // Revision 52 deletes all 50 keys at once; compacting at exactly 52
        // leaves only the 50 tombstones of 52 (a read at 52 needs them).
        store
            .apply(
                52,
                52,
                &Entry::DeleteRange(DeleteRangeRequest {
                    key: b"k".to_vec(),
                    range_end: prefix_end(b"k"),
                    ..Default::default()
                }),
            )
            .unwrap();
        compact_fully(&mut store, 53, 52, max_rows);
        assert_eq!(rows(&store, "history"), 50, "max_rows {max_rows}");
        assert_eq!(rows(&store, "gone"), 50, "max_rows {max_rows}");
        // One more compaction above them drops the tombstones and the
        // keys' `gone` rows.
        store.apply(54, 54, &put("other")).unwrap();
        compact_fully(&mut store, 55, 54, max_rows);
        assert_eq!(rows(&store, "history"), 1, "max_rows {max_rows}");
        assert_eq!(rows(&store, "gone"), 0, "max_rows {max_rows}");
    }
}

#[test]
fn a_reopen_in_the_middle_of_compaction_finishes_it_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.db");
    let mut store = Store::open(&path, Options::default()).unwrap();
    for i in 1..=20u64 {
        store.apply(i, i, &put(&format!("k{:02}", i % 5))).unwrap();
    }
    store
        .apply(21, 21, &Entry::Compact { revision: 20 })
        .unwrap();
    assert!(!store.compact_step(3).unwrap().done);
    drop(store);
    let mut store = Store::open(&path, Options::default()).unwrap();
    while !store.compact_step(3).unwrap().done {}
    // Keys k00..k04 each keep their newest version at or below 20.
    assert_eq!(rows(&store, "history"), 5);
}

#[test]
fn compaction_steps_ride_along_with_apply_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path().join("kv.db"), Options::default()).unwrap();
    let mut rev = 0;
    for _ in 0..4 {
        for i in 0..50 {
            rev += 1;
            store.apply(rev, rev, &put(&format!("k{i:02}"))).unwrap();
        }
    }
    rev += 1;
    store
        .apply(rev, rev, &Entry::Compact { revision: rev - 1 })
        .unwrap();
    let mut batches = 0;
    loop {
        rev += 1;
        let entry = put("other");
        let batch = [Indexed {
            index: rev,
            revision: rev,
            entry: &entry,
        }];
        let (results, step) = store.apply_batch_compacting(&batch, 10).unwrap();
        assert!(results[0].is_ok());
        batches += 1;
        assert!(step.removed <= 11, "a step of {} rows", step.removed);
        if step.done {
            break;
        }
    }
    // 200 changes to visit and 150 superseded versions to remove, about 10
    // rows per batch. Left: each key's newest version and every put of
    // "other" above the compaction point.
    assert!(batches >= 30, "{batches} batches");
    assert_eq!(rows(&store, "history"), 50 + batches);
}
