//! The B+-tree against a `BTreeMap` model.
//!
//! Random sequences of insert, remove, get, ranges both ways, commit, abort,
//! reopen and long-lived read snapshots run against the database and against
//! plain maps. After every step the results must agree; after every commit,
//! abort and reopen the page audit must hold (every page reachable once or
//! free once); held snapshots must keep seeing exactly the state they began
//! with, however many commits reuse freed pages meanwhile.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::PathBuf;

use keel_engine::btree::{CommitSync, Database, Options, ReadTxn, WriteTxn, MAX_KEY_LEN};
use proptest::prelude::*;

type Model = BTreeMap<u8, BTreeMap<Vec<u8>, Vec<u8>>>;

const TREES: u8 = 3;

#[derive(Debug, Clone)]
enum Op {
    Insert(u8, Vec<u8>, Vec<u8>),
    Remove(u8, Vec<u8>),
    Get(u8, Vec<u8>),
    Range(u8, Bound<Vec<u8>>, Bound<Vec<u8>>, bool),
    Commit,
    Abort,
    Reopen,
    TakeSnapshot,
    CheckSnapshots,
    DropSnapshot,
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => proptest::collection::vec(0u8..6, 1..5),
        2 => proptest::collection::vec(any::<u8>(), 0..40),
        1 => (0u8..3).prop_map(|b| vec![b; MAX_KEY_LEN - usize::from(b)]),
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => proptest::collection::vec(any::<u8>(), 0..300),
        1 => proptest::collection::vec(any::<u8>(), 1000..1100),
        1 => (1025usize..20_000).prop_map(|n| vec![0x5A; n]),
    ]
}

fn bound() -> impl Strategy<Value = Bound<Vec<u8>>> {
    prop_oneof![
        Just(Bound::Unbounded),
        key().prop_map(Bound::Included),
        key().prop_map(Bound::Excluded),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => (0..TREES, key(), value()).prop_map(|(t, k, v)| Op::Insert(t, k, v)),
        10 => (0..TREES, key()).prop_map(|(t, k)| Op::Remove(t, k)),
        6 => (0..TREES, key()).prop_map(|(t, k)| Op::Get(t, k)),
        6 => (0..TREES, bound(), bound(), any::<bool>()).prop_map(|(t, a, b, r)| Op::Range(t, a, b, r)),
        8 => Just(Op::Commit),
        2 => Just(Op::Abort),
        2 => Just(Op::Reopen),
        2 => Just(Op::TakeSnapshot),
        2 => Just(Op::CheckSnapshots),
        1 => Just(Op::DropSnapshot),
    ]
}

fn tree_name(t: u8) -> Vec<u8> {
    format!("tree-{t}").into_bytes()
}

struct Harness {
    _dir: tempfile::TempDir,
    path: PathBuf,
    options: Options,
    db: Option<Database>,
    txn: Option<WriteTxn>,
    committed: Model,
    working: Model,
    snapshots: Vec<(ReadTxn, Model)>,
}

impl Harness {
    fn new() -> Harness {
        Harness::with_sync(CommitSync::TwoSyncs)
    }

    fn with_sync(commit_sync: CommitSync) -> Harness {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("kv.db");
        let options = Options {
            commit_sync,
            ..Options::default()
        };
        let db = Database::open(&path, options.clone()).expect("open");
        Harness {
            _dir: dir,
            path,
            options,
            db: Some(db),
            txn: None,
            committed: Model::new(),
            working: Model::new(),
            snapshots: Vec::new(),
        }
    }

    fn db(&self) -> &Database {
        self.db.as_ref().expect("open database")
    }

    fn txn(&mut self) -> &mut WriteTxn {
        if self.txn.is_none() {
            self.txn = Some(self.db().begin_write().expect("begin write"));
        }
        self.txn.as_mut().expect("write txn")
    }

    fn audit(&self) {
        let audit = self.db().audit().expect("page audit");
        assert!(audit.reachable > 0 || self.committed.is_empty());
    }

    fn check_snapshot(txn: &ReadTxn, model: &Model) {
        for t in 0..TREES {
            let expected = model.get(&t).cloned().unwrap_or_default();
            let got: Vec<(Vec<u8>, Vec<u8>)> = match txn.tree(&tree_name(t)).expect("tree") {
                Some(tree) => tree
                    .range(Bound::Unbounded, Bound::Unbounded)
                    .expect("range")
                    .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())).expect("entry"))
                    .collect(),
                None => Vec::new(),
            };
            assert_eq!(
                got,
                expected.into_iter().collect::<Vec<_>>(),
                "snapshot of tree {t}"
            );
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Insert(t, k, v) => {
                let replaced = self
                    .txn()
                    .tree(&tree_name(t))
                    .expect("tree")
                    .insert(&k, &v)
                    .expect("insert");
                let previous = self.working.entry(t).or_default().insert(k, v);
                assert_eq!(replaced, previous.is_some());
            }
            Op::Remove(t, k) => {
                let removed = self
                    .txn()
                    .tree(&tree_name(t))
                    .expect("tree")
                    .remove(&k)
                    .expect("remove");
                let previous = self.working.entry(t).or_default().remove(&k);
                assert_eq!(removed, previous.is_some());
            }
            Op::Get(t, k) => {
                let expected = self.working.get(&t).and_then(|m| m.get(&k)).cloned();
                let txn = self.txn();
                let tree = txn.tree(&tree_name(t)).expect("tree");
                assert_eq!(tree.get(&k).expect("get").map(<[u8]>::to_vec), expected);
            }
            Op::Range(t, start, end, reverse) => {
                let model = self.working.get(&t).cloned().unwrap_or_default();
                let valid = match (&start, &end) {
                    (
                        Bound::Included(a) | Bound::Excluded(a),
                        Bound::Included(b) | Bound::Excluded(b),
                    ) => a <= b,
                    _ => true,
                };
                let equal_excluded =
                    matches!((&start, &end), (Bound::Excluded(a), Bound::Excluded(b)) if a == b);
                let expected: Vec<(Vec<u8>, Vec<u8>)> = if valid && !equal_excluded {
                    let mut v: Vec<_> = model
                        .range((start.clone(), end.clone()))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    if reverse {
                        v.reverse();
                    }
                    v
                } else {
                    Vec::new()
                };
                let txn = self.txn();
                let tree = txn.tree(&tree_name(t)).expect("tree");
                let range = tree.range(as_ref(&start), as_ref(&end)).expect("range");
                let collect = |item: keel_engine::Result<(&[u8], &[u8])>| {
                    let (k, v) = item.expect("entry");
                    (k.to_vec(), v.to_vec())
                };
                let got: Vec<_> = if reverse {
                    range.rev().map(collect).collect()
                } else {
                    range.map(collect).collect()
                };
                assert_eq!(got, expected);
            }
            Op::Commit => {
                if let Some(txn) = self.txn.take() {
                    txn.commit().expect("commit");
                }
                self.committed = self.working.clone();
                self.audit();
            }
            Op::Abort => {
                self.txn = None;
                self.working = self.committed.clone();
                self.audit();
            }
            Op::Reopen => {
                self.txn = None;
                self.snapshots.clear();
                self.db = None;
                self.db = Some(Database::open(&self.path, self.options.clone()).expect("reopen"));
                self.working = self.committed.clone();
                self.audit();
                Self::check_snapshot(&self.db().begin_read().expect("read"), &self.committed);
            }
            Op::TakeSnapshot => {
                let snapshot = self.db().begin_read().expect("read");
                self.snapshots.push((snapshot, self.committed.clone()));
            }
            Op::CheckSnapshots => {
                for (txn, model) in &self.snapshots {
                    Self::check_snapshot(txn, model);
                }
            }
            Op::DropSnapshot => {
                if !self.snapshots.is_empty() {
                    self.snapshots.remove(0);
                }
            }
        }
    }
}

fn as_ref(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

proptest! {
    // KEEL_MODEL_CASES=5000 for a soak run outside CI.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("KEEL_MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn btree_matches_a_btreemap_model(one_sync in any::<bool>(), ops in proptest::collection::vec(op(), 1..250)) {
        let mut harness = Harness::with_sync(if one_sync { CommitSync::OneSync } else { CommitSync::TwoSyncs });
        for op in ops {
            harness.apply(op);
        }
        harness.apply(Op::Commit);
        harness.apply(Op::CheckSnapshots);
        harness.apply(Op::Reopen);
    }
}

/// Enough entries for a tree several levels deep, removed again in an order
/// that empties leaves in the middle, with commits and reopens between.
#[test]
fn deep_trees_grow_and_shrink() {
    let mut harness = Harness::new();
    for round in 0..3u32 {
        for i in 0..3000u32 {
            let k = (i.wrapping_mul(2_654_435_761) ^ round)
                .to_be_bytes()
                .to_vec();
            harness.apply(Op::Insert(0, k, vec![round as u8; 100]));
        }
        harness.apply(Op::Commit);
        harness.apply(Op::Range(
            0,
            Bound::Unbounded,
            Bound::Unbounded,
            round % 2 == 1,
        ));
        for i in (0..3000u32).filter(|i| i % 3 != 0) {
            let k = (i.wrapping_mul(2_654_435_761) ^ round)
                .to_be_bytes()
                .to_vec();
            harness.apply(Op::Remove(0, k));
        }
        harness.apply(Op::Commit);
        harness.apply(Op::Reopen);
    }
}

/// Regression (found by the model test): removing entries next to a
/// two-page leaf (a 4 KiB key) left a page both reachable and free.
#[test]
fn removals_beside_a_multi_page_leaf_keep_pages_accounted() {
    let mut harness = Harness::new();
    let big_key = vec![1u8; MAX_KEY_LEN - 1];
    harness.apply(Op::Insert(2, vec![5, 5, 1], vec![]));
    harness.apply(Op::Insert(0, vec![0], vec![]));
    harness.apply(Op::Insert(2, big_key.clone(), vec![0; 1000]));
    harness.apply(Op::Insert(2, vec![1, 5, 4, 2], vec![90; 1350]));
    harness.apply(Op::Commit);
    harness.apply(Op::Insert(2, vec![1, 4], vec![145; 255]));
    harness.apply(Op::Insert(2, vec![0, 1], vec![17; 32]));
    harness.apply(Op::Remove(2, big_key));
    harness.apply(Op::Commit);
    harness.apply(Op::Remove(2, vec![5, 5, 1]));
    harness.apply(Op::Commit);
}
