//! Free pages are reused as the tree churns, and a free tail goes back to
//! the file system: the file never needs offline defragmentation.

use keel_engine::btree::{Database, Options};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KEYS: usize = 20_000;
const BATCH: usize = 1_000;

fn load(db: &Database, keys: &[[u8; 16]], round: u8) {
    for chunk in keys.chunks(BATCH) {
        let mut txn = db.begin_write().expect("write");
        let mut tree = txn.tree(b"kv").expect("tree");
        for key in chunk {
            tree.insert(key, &[round; 256]).expect("insert");
        }
        txn.commit().expect("commit");
    }
}

#[test]
fn churn_keeps_the_file_within_twice_one_load() {
    let dir = tempfile::tempdir().expect("dir");
    let db = Database::open(dir.path().join("kv.db"), Options::default()).expect("open");
    let mut rng = StdRng::seed_from_u64(5);
    let keys: Vec<[u8; 16]> = (0..KEYS).map(|_| rng.gen()).collect();
    load(&db, &keys, 0);
    let once = db.space().total_pages;
    // A reader held across a few commits pins their freed pages meanwhile.
    let reader = db.begin_read().expect("read");
    load(&db, &keys[..3 * BATCH], 1);
    drop(reader);
    for round in 1..=10 {
        load(&db, &keys, round);
    }
    let churned = db.space().total_pages;
    assert!(
        churned <= 2 * once,
        "after 10 overwrites the file holds {churned} pages, one load took {once}"
    );
    db.audit().expect("audit");
}

#[test]
fn a_free_tail_is_returned_to_the_file_system() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("kv.db");
    let db = Database::open(&path, Options::default()).expect("open");
    let mut rng = StdRng::seed_from_u64(6);
    let keys: Vec<[u8; 16]> = (0..KEYS).map(|_| rng.gen()).collect();
    load(&db, &keys, 0);
    let full = std::fs::metadata(&path).expect("stat").len();
    for chunk in keys.chunks(BATCH) {
        let mut txn = db.begin_write().expect("write");
        let mut tree = txn.tree(b"kv").expect("tree");
        for key in chunk {
            tree.remove(key).expect("remove");
        }
        txn.commit().expect("commit");
    }
    // Two more commits let the last pending pages become reusable and the
    // tail be given back.
    for _ in 0..2 {
        let txn = db.begin_write().expect("write");
        txn.commit().expect("commit");
    }
    let emptied = std::fs::metadata(&path).expect("stat").len();
    assert!(
        emptied * 4 < full,
        "file still {emptied} bytes after emptying, {full} when full"
    );
    db.audit().expect("audit");
    drop(db);
    let db = Database::open(&path, Options::default()).expect("reopen");
    assert_eq!(
        db.begin_read()
            .expect("read")
            .tree(b"kv")
            .expect("tree")
            .map(|t| t.len()),
        Some(0)
    );
}

#[test]
fn keys_that_only_grow_fill_their_pages() {
    // History is keyed by revision: every insert goes past the last key.
    // Cut in halves, each full leaf would leave one half empty for good.
    let dir = tempfile::tempdir().expect("dir");
    let db = Database::open(dir.path().join("kv.db"), Options::default()).expect("open");
    let rows = 20_000u64;
    let value = [7u8; 200];
    for chunk in (0..rows).collect::<Vec<_>>().chunks(BATCH) {
        let mut txn = db.begin_write().expect("write");
        let mut tree = txn.tree(b"log").expect("tree");
        for n in chunk {
            tree.insert(&n.to_be_bytes(), &value).expect("insert");
        }
        txn.commit().expect("commit");
    }
    let audit = db.audit().expect("audit");
    // Row bytes alone: each row's key, value and slot, at 4 KiB a page.
    let payload_pages = rows * (8 + 200 + 8) / 4096;
    assert!(
        audit.reachable * 10 <= payload_pages * 12,
        "{} pages reachable for {payload_pages} pages of rows",
        audit.reachable
    );
}
