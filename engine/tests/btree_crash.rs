//! Crash consistency: every file state a crash could leave reopens to
//! exactly the last committed state.
//!
//! A storage backend records every write, sync and resize of a random
//! workload of commits. For every point in that history, crash images are
//! built from the writes before it: those made durable by a sync always
//! land; those after the last sync land all, none, or a random subset, one
//! of them possibly torn at sector granularity. Reopening an image must give
//! exactly the newest commit that landed, and pass the page audit. With two
//! syncs a commit landed when its meta slot's first sector did (its pages
//! were synced before). With one sync it also needs every page it wrote to
//! hold exactly what it wrote; otherwise the commit before it is expected.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use keel_engine::btree::{CommitSync, Database, FileStorage, Options, Storage, PAGE_SIZE};
use keel_engine::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SECTOR: usize = 512;

#[derive(Debug, Clone)]
enum Event {
    Write(u64, Vec<u8>),
    Sync,
    SetLen(u64),
}

/// Forwards to a real file and records what it was asked to do.
struct Recorder {
    file: FileStorage,
    log: Rc<RefCell<Vec<Event>>>,
}

impl Storage for Recorder {
    fn len(&self) -> u64 {
        self.file.len()
    }

    fn capacity(&self) -> u64 {
        self.file.capacity()
    }

    fn set_len(&self, len: u64) -> Result<()> {
        self.log.borrow_mut().push(Event::SetLen(len));
        self.file.set_len(len)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.log
            .borrow_mut()
            .push(Event::Write(offset, data.to_vec()));
        self.file.write_at(offset, data)
    }

    fn sync_data(&self) -> Result<()> {
        self.log.borrow_mut().push(Event::Sync);
        self.file.sync_data()
    }

    fn read(&self, offset: u64, len: usize) -> Result<&[u8]> {
        self.file.read(offset, len)
    }

    fn path(&self) -> &Path {
        self.file.path()
    }
}

type Model = BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>>;

/// What `record` saw: the event log, the model after each commit
/// (`models[k]` is the state after commit `k`, which stores applied index
/// `k`), and the commit each durable meta-slot txn id belongs to.
struct Recording {
    events: Vec<Event>,
    models: Vec<Model>,
    commit_of_txn: BTreeMap<u64, u64>,
}

/// Runs random commits, half of them unsynced when `unsynced` is set.
/// How the recorded workload commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Commits {
    /// Every commit durable.
    Durable,
    /// Half durable, half unsynced.
    SomeUnsynced,
    /// Deferred durable commits (their syncs and meta write run later, as
    /// on a shard's blocking thread) with unsynced commits made meanwhile.
    Deferred,
}

fn record(path: &Path, seed: u64, commit_sync: CommitSync, commits: Commits) -> Recording {
    let log = Rc::new(RefCell::new(Vec::new()));
    let storage = Recorder {
        file: FileStorage::open(path, 1 << 30).expect("file"),
        log: log.clone(),
    };
    let options = Options {
        commit_sync,
        ..Options::default()
    };
    let db = Database::with_storage_options(storage, options).expect("create");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = Model::new();
    let mut models = vec![model.clone()];
    let mut commit_of_txn = BTreeMap::from([(0, 0)]);
    let newest_meta = |log: &Rc<RefCell<Vec<Event>>>| {
        log.borrow()
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::Write(offset, data) => meta_txn(*offset, data),
                _ => None,
            })
            .expect("a durable commit writes its meta")
    };
    // A deferred commit not yet made durable, and the commit it is.
    let mut in_flight = None;
    for _ in 0..30 {
        let mut txn = db.begin_write().expect("write");
        for _ in 0..rng.gen_range(1..40) {
            let name = format!("t{}", rng.gen_range(0..2)).into_bytes();
            let key = format!("key-{:04}", rng.gen_range(0..300)).into_bytes();
            let tree_model = model.entry(name.clone()).or_default();
            let mut tree = txn.tree(&name).expect("tree");
            if rng.gen_ratio(1, 4) {
                tree.remove(&key).expect("remove");
                tree_model.remove(&key);
            } else {
                let len = if rng.gen_ratio(1, 10) {
                    rng.gen_range(1025..6000)
                } else {
                    rng.gen_range(0..200)
                };
                let value: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                tree.insert(&key, &value).expect("insert");
                tree_model.insert(key, value);
            }
        }
        txn.set_applied_index(models.len() as u64);
        match commits {
            Commits::Deferred if in_flight.is_none() && rng.gen_bool(0.5) => {
                let deferred = txn.commit_deferred().expect("deferred commit");
                in_flight = Some((deferred, models.len() as u64));
            }
            Commits::Deferred | Commits::SomeUnsynced if rng.gen_bool(0.5) => {
                txn.commit_unsynced().expect("unsynced commit");
            }
            Commits::Deferred => txn.commit_unsynced().expect("unsynced commit"),
            Commits::Durable | Commits::SomeUnsynced => {
                txn.commit().expect("commit");
                commit_of_txn.insert(newest_meta(&log), models.len() as u64);
            }
        }
        models.push(model.clone());
        if in_flight.is_some() && (rng.gen_bool(0.4) || models.len() == 31) {
            if let Some((deferred, commit)) = in_flight.take() {
                // Only one at a time: a second durable commit is refused.
                assert!(db.begin_write().expect("write").commit().is_err());
                db.complete_deferred(&deferred).expect("complete");
                commit_of_txn.insert(newest_meta(&log), commit);
            }
        }
    }
    drop(db);
    let events = log.borrow().clone();
    Recording {
        events,
        models,
        commit_of_txn,
    }
}

/// Which commit a meta-slot write belongs to, if `write` is one.
fn meta_txn(offset: u64, data: &[u8]) -> Option<u64> {
    if offset >= 2 * PAGE_SIZE as u64 || data.len() < 24 {
        return None;
    }
    Some(u64::from_le_bytes(
        data[16..24].try_into().expect("8 bytes"),
    ))
}

fn apply_write(image: &mut Vec<u8>, offset: u64, data: &[u8], sectors: Option<&[bool]>) {
    let end = offset as usize + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    match sectors {
        None => image[offset as usize..end].copy_from_slice(data),
        Some(keep) => {
            for (i, chunk) in data.chunks(SECTOR).enumerate() {
                if keep.get(i).copied().unwrap_or(false) {
                    let at = offset as usize + i * SECTOR;
                    image[at..at + chunk.len()].copy_from_slice(chunk);
                }
            }
        }
    }
}

fn read_all(db: &Database) -> Model {
    let txn = db.begin_read().expect("read");
    let mut model = Model::new();
    for name in txn.tree_names().expect("names") {
        let tree = txn.tree(&name).expect("tree").expect("listed tree");
        let entries = tree
            .range(Bound::Unbounded, Bound::Unbounded)
            .expect("range")
            .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())).expect("entry"))
            .collect();
        model.insert(name, entries);
    }
    model
}

fn reopen(image: &[u8], path: &PathBuf, commit_sync: CommitSync) -> (Model, u64) {
    std::fs::write(path, image).expect("write image");
    let db = Database::open(
        path,
        Options {
            max_file_size: 1 << 30,
            commit_sync,
        },
    )
    .unwrap_or_else(|e| panic!("image did not open: {e}"));
    db.audit()
        .unwrap_or_else(|e| panic!("image fails the audit: {e}"));
    (read_all(&db), db.applied_index())
}

#[test]
fn every_crash_image_reopens_to_the_last_committed_state_two_syncs() {
    crash_images(CommitSync::TwoSyncs, Commits::Durable);
}

#[test]
fn every_crash_image_reopens_to_the_last_committed_state_one_sync() {
    crash_images(CommitSync::OneSync, Commits::Durable);
}

/// Unsynced commits in between: a crash returns to the last durable commit
/// (or the one being made durable), never to an unsynced one, and never to
/// a file whose pages an unsynced commit overwrote.
#[test]
fn unsynced_commits_never_damage_the_last_durable_commit_two_syncs() {
    crash_images(CommitSync::TwoSyncs, Commits::SomeUnsynced);
}

#[test]
fn unsynced_commits_never_damage_the_last_durable_commit_one_sync() {
    crash_images(CommitSync::OneSync, Commits::SomeUnsynced);
}

/// As a shard syncs its tree: the syncs and meta write of a durable commit
/// run later (on another thread), with unsynced commits made meanwhile.
#[test]
fn deferred_syncs_with_unsynced_commits_meanwhile_never_damage_the_last_durable_commit() {
    crash_images(CommitSync::TwoSyncs, Commits::Deferred);
}

fn crash_images(commit_sync: CommitSync, commits: Commits) {
    let dir = tempfile::tempdir().expect("dir");
    let image_path = dir.path().join("image.db");
    let mut images = 0;
    for seed in 0..3u64 {
        let Recording {
            events,
            models,
            commit_of_txn,
        } = record(
            &dir.path().join(format!("run-{seed}.db")),
            seed,
            commit_sync,
            commits,
        );
        let mut rng = StdRng::seed_from_u64(seed + 100);
        for crash in 0..=events.len() {
            let before = &events[..crash];
            let last_sync = before.iter().rposition(|e| matches!(e, Event::Sync));
            let mut variants: Vec<Vec<(usize, Option<Vec<bool>>)>> = Vec::new();
            let volatile: Vec<usize> = (last_sync.map_or(0, |s| s + 1)..crash)
                .filter(|&i| matches!(events[i], Event::Write(..)))
                .collect();
            variants.push(Vec::new());
            variants.push(volatile.iter().map(|&i| (i, None)).collect());
            for _ in 0..2 {
                let mut subset = Vec::new();
                for &i in &volatile {
                    if rng.gen_bool(0.5) {
                        let torn = if rng.gen_ratio(1, 3) {
                            let Event::Write(_, data) = &events[i] else {
                                unreachable!()
                            };
                            Some(
                                (0..data.len().div_ceil(SECTOR))
                                    .map(|_| rng.gen_bool(0.5))
                                    .collect(),
                            )
                        } else {
                            None
                        };
                        subset.push((i, torn));
                    }
                }
                variants.push(subset);
            }
            for landed in variants {
                let mut image = Vec::new();
                let mut newest_meta = 0;
                for (i, event) in before.iter().enumerate() {
                    let durable = last_sync.is_some_and(|s| i < s);
                    let volatile_choice = landed.iter().find(|(j, _)| *j == i);
                    match event {
                        Event::SetLen(len) => image.resize(*len as usize, 0),
                        Event::Sync => {}
                        Event::Write(offset, data) if durable || volatile_choice.is_some() => {
                            let torn = volatile_choice.and_then(|(_, t)| t.as_deref());
                            apply_write(&mut image, *offset, data, torn);
                            // A meta slot's fields and checksum all sit in its
                            // first sector: if that landed, the commit did.
                            let first_sector_landed =
                                torn.is_none_or(|keep| keep.first().copied().unwrap_or(false));
                            if first_sector_landed {
                                if let Some(txn) = meta_txn(*offset, data) {
                                    newest_meta = newest_meta.max(txn);
                                }
                            }
                        }
                        Event::Write(..) => {}
                    }
                }
                // A one-sync commit still in flight landed only if every
                // page it wrote holds exactly what it wrote.
                let in_flight_meta = volatile.iter().any(|&i| matches!(&events[i], Event::Write(o, d) if meta_txn(*o, d) == Some(newest_meta)));
                if commit_sync == CommitSync::OneSync && in_flight_meta {
                    let whole = volatile.iter().all(|&i| match &events[i] {
                        Event::Write(o, d) if meta_txn(*o, d).is_none() => {
                            image.get(*o as usize..*o as usize + d.len()) == Some(d.as_slice())
                        }
                        _ => true,
                    });
                    if !whole {
                        let (&before, _) = commit_of_txn
                            .range(..newest_meta)
                            .next_back()
                            .expect("an earlier durable commit");
                        newest_meta = before;
                    }
                }
                let (got, applied) = reopen(&image, &image_path, commit_sync);
                images += 1;
                let commit = commit_of_txn[&newest_meta];
                let expected = &models[commit as usize];
                assert_eq!(
                    applied, commit,
                    "seed {seed}, crash at event {crash}: wrong commit"
                );
                assert!(
                    got == *expected,
                    "seed {seed}, crash at event {crash}: contents differ from commit {commit}"
                );
            }
        }
    }
    assert!(images > 500, "only {images} crash images");
}

fn one_sync_db(path: &Path, log: &Rc<RefCell<Vec<Event>>>) -> Database<Recorder> {
    let storage = Recorder {
        file: FileStorage::open(path, 1 << 30).expect("file"),
        log: log.clone(),
    };
    let options = Options {
        commit_sync: CommitSync::OneSync,
        ..Options::default()
    };
    Database::with_storage_options(storage, options).expect("open")
}

fn commit_keys(db: &Database<Recorder>, keys: std::ops::Range<u32>, fill: u8) {
    let mut txn = db.begin_write().expect("write");
    let mut tree = txn.tree(b"t").expect("tree");
    for i in keys {
        tree.insert(&i.to_be_bytes(), &[fill; 100]).expect("insert");
    }
    txn.commit().expect("commit");
}

/// Regression (found in review): after opening fell back from a one-sync
/// commit that did not land whole, the next commit reused its txn id and,
/// allocating the same pages, its commit-list page. A crash before the new
/// meta landed then let the stale meta verify against the new pages,
/// surfacing a state that was never committed.
#[test]
fn a_rejected_one_sync_commit_is_not_revived_by_the_next_one() {
    let dir = tempfile::tempdir().expect("dir");
    let log = Rc::new(RefCell::new(Vec::new()));
    let db = one_sync_db(&dir.path().join("first.db"), &log);
    commit_keys(&db, 0..50, 1);
    commit_keys(&db, 50..120, 2);
    drop(db);
    let events = log.borrow().clone();
    let syncs: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, Event::Sync))
        .map(|(i, _)| i)
        .collect();
    let (commit1_sync, commit2_sync) = (syncs[1], syncs[2]);
    // Commit 2 lands except for its first data page; its meta lands.
    let mut image = Vec::new();
    let mut skipped = false;
    for (i, event) in events[..commit2_sync].iter().enumerate() {
        match event {
            Event::SetLen(len) => image.resize(*len as usize, 0),
            Event::Write(offset, data) => {
                if i > commit1_sync && !skipped && meta_txn(*offset, data).is_none() {
                    skipped = true;
                    continue;
                }
                apply_write(&mut image, *offset, data, None);
            }
            Event::Sync => {}
        }
    }
    let path = dir.path().join("second.db");
    std::fs::write(&path, &image).expect("image");
    let log = Rc::new(RefCell::new(Vec::new()));
    let db = one_sync_db(&path, &log);
    assert_eq!(db.applied_index(), 0);
    let key = 60u32.to_be_bytes();
    assert_eq!(
        db.begin_read()
            .expect("read")
            .tree(b"t")
            .expect("tree")
            .expect("t")
            .get(&key)
            .expect("get"),
        None
    );
    drop(db);
    // The same-shaped commit again (other bytes), crashing before its meta.
    let base = std::fs::read(&path).expect("base");
    let log = Rc::new(RefCell::new(Vec::new()));
    let db = one_sync_db(&path, &log);
    commit_keys(&db, 50..120, 3);
    drop(db);
    let mut image = base;
    for event in log.borrow().iter() {
        match event {
            Event::SetLen(len) => image.resize(*len as usize, 0),
            Event::Write(offset, data) if meta_txn(*offset, data).is_none() => {
                apply_write(&mut image, *offset, data, None)
            }
            _ => {}
        }
    }
    std::fs::write(&path, &image).expect("image");
    let db = Database::open(
        &path,
        Options {
            commit_sync: CommitSync::OneSync,
            ..Options::default()
        },
    )
    .expect("open");
    let snapshot = db.begin_read().expect("read");
    let tree = snapshot.tree(b"t").expect("tree").expect("t");
    assert_eq!(
        tree.get(&key).expect("get"),
        None,
        "only commit 1 was ever durable"
    );
    assert_eq!(tree.len(), 50);
    db.audit().expect("audit");
}
