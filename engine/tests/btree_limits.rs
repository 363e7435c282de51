//! Size limits and seeks: the largest key and value round-trip, anything
//! larger is refused with a typed error and changes nothing.

use std::ops::Bound;

use keel_engine::btree::{Database, Options, MAX_KEY_LEN, MAX_VALUE_LEN};
use keel_engine::Error;

#[test]
fn largest_keys_and_values_round_trip_and_larger_ones_are_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("kv.db");
    let db = Database::open(&path, Options::default()).expect("open");
    let key = vec![b'k'; MAX_KEY_LEN];
    let value: Vec<u8> = (0..MAX_VALUE_LEN).map(|i| (i % 251) as u8).collect();
    let mut txn = db.begin_write().expect("write");
    let mut tree = txn.tree(b"t").expect("tree");
    tree.insert(&key, &value).expect("largest key and value");
    assert!(matches!(
        tree.insert(&vec![b'k'; MAX_KEY_LEN + 1], b"v"),
        Err(Error::KeyTooLarge { len, max }) if len == MAX_KEY_LEN + 1 && max == MAX_KEY_LEN
    ));
    assert!(matches!(
        tree.insert(b"small", &vec![0u8; MAX_VALUE_LEN + 1]),
        Err(Error::ValueTooLarge { .. })
    ));
    assert_eq!(tree.len(), 1, "refused inserts change nothing");
    txn.commit().expect("commit");
    drop(db);
    let db = Database::open(&path, Options::default()).expect("reopen");
    let snapshot = db.begin_read().expect("read");
    let tree = snapshot.tree(b"t").expect("tree").expect("exists");
    assert_eq!(tree.get(&key).expect("get"), Some(value.as_slice()));
    assert_eq!(tree.get(b"small").expect("get"), None);
    db.audit().expect("audit");
}

#[test]
fn seeks_find_the_nearest_keys() {
    let dir = tempfile::tempdir().expect("dir");
    let db = Database::open(dir.path().join("kv.db"), Options::default()).expect("open");
    let mut txn = db.begin_write().expect("write");
    let mut tree = txn.tree(b"t").expect("tree");
    for i in (0..1000u32).map(|i| i * 10) {
        tree.insert(&i.to_be_bytes(), b"v").expect("insert");
    }
    txn.commit().expect("commit");
    let snapshot = db.begin_read().expect("read");
    let tree = snapshot.tree(b"t").expect("tree").expect("exists");
    let key = |i: u32| i.to_be_bytes().to_vec();
    assert_eq!(
        tree.seek_ge(&key(55))
            .expect("seek")
            .map(|(k, _)| k.to_vec()),
        Some(key(60))
    );
    assert_eq!(
        tree.seek_ge(&key(60))
            .expect("seek")
            .map(|(k, _)| k.to_vec()),
        Some(key(60))
    );
    assert_eq!(
        tree.seek_le(&key(55))
            .expect("seek")
            .map(|(k, _)| k.to_vec()),
        Some(key(50))
    );
    assert_eq!(tree.seek_ge(&key(99_991)).expect("seek"), None);
    assert_eq!(tree.seek_le(&[]).expect("seek"), None);
    let between: Vec<_> = tree
        .range(
            Bound::Excluded(&key(100)[..]),
            Bound::Included(&key(130)[..]),
        )
        .expect("range")
        .rev()
        .map(|e| e.expect("entry").0.to_vec())
        .collect();
    assert_eq!(between, vec![key(130), key(120), key(110)]);
}

#[test]
fn a_commit_past_the_size_limit_is_refused_and_the_database_goes_on() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("kv.db");
    let limit = 4 << 20;
    let options = Options {
        max_file_size: limit,
        ..Options::default()
    };
    let db = Database::open(&path, options.clone()).expect("open");
    let value = vec![7u8; 64 << 10];
    let mut stored = 0u32;
    let refusal = loop {
        let mut txn = db.begin_write().expect("write");
        let mut tree = txn.tree(b"t").expect("tree");
        tree.insert(&stored.to_be_bytes(), &value).expect("insert");
        match txn.commit() {
            Ok(()) => stored += 1,
            Err(error) => break error,
        }
        assert!(stored < 1000, "the limit was never reached");
    };
    assert!(
        matches!(refusal, Error::Full { needed, limit: l, .. } if needed > l && l == limit),
        "{refusal:?}"
    );
    assert!(std::fs::metadata(&path).expect("stat").len() <= limit);
    // Still usable: every committed row reads back, and a commit that frees
    // space goes through.
    let snapshot = db.begin_read().expect("read");
    let tree = snapshot.tree(b"t").expect("tree").expect("exists");
    assert_eq!(tree.len(), u64::from(stored));
    drop(snapshot);
    let mut txn = db.begin_write().expect("write after a refusal");
    let mut tree = txn.tree(b"t").expect("tree");
    tree.remove(&0u32.to_be_bytes()).expect("remove");
    txn.commit().expect("a commit that frees space");
    db.audit().expect("audit");
}

#[test]
fn a_file_larger_than_the_limit_is_refused_at_open() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("kv.db");
    drop(Database::open(&path, Options::default()).expect("create"));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("file");
    file.set_len(8 << 20).expect("grow");
    let options = Options {
        max_file_size: 4 << 20,
        ..Options::default()
    };
    let refusal = Database::open(&path, options).err().expect("refused");
    assert!(
        matches!(refusal, Error::FileTooLarge { len, limit, .. } if len == 8 << 20 && limit == 4 << 20),
        "{refusal:?}"
    );
    Database::open(&path, Options::default()).expect("opens with a larger limit");
}

/// Room freed in the middle of a full file counts as headroom: the NOSPACE
/// alarm asks for headroom after every sync, and freed room that only the
/// file's unused tail could give came back as an alarm raised again after
/// the operator had freed half the file and disarmed it.
#[test]
fn pages_freed_inside_a_full_file_count_as_headroom() {
    let dir = tempfile::tempdir().expect("dir");
    let options = Options {
        max_file_size: 4 << 20,
        ..Options::default()
    };
    let db = Database::open(dir.path().join("kv.db"), options).expect("open");
    let value = vec![7u8; 64 << 10];
    let mut stored = 0u32;
    loop {
        let mut txn = db.begin_write().expect("write");
        let mut tree = txn.tree(b"t").expect("tree");
        tree.insert(&stored.to_be_bytes(), &value).expect("insert");
        if txn.commit().is_err() {
            break;
        }
        stored += 1;
        assert!(stored < 1000, "the limit was never reached");
    }
    // Every other value goes, in the middle of the file: about half of it.
    let mut txn = db.begin_write().expect("write");
    let mut tree = txn.tree(b"t").expect("tree");
    for i in (0..stored).step_by(2) {
        tree.remove(&i.to_be_bytes()).expect("remove");
    }
    txn.commit().expect("a commit that frees space");
    // Freed pages are reusable once a commit after the one that freed
    // them is durable.
    let mut txn = db.begin_write().expect("write");
    txn.tree(b"small")
        .expect("tree")
        .insert(b"0", b"v")
        .expect("insert");
    txn.commit().expect("a small commit");
    // Small values, and values of several pages (runs, which first fit
    // places in the freed extents): room for them and a quarter MiB more,
    // and the commits that follow really fit.
    for (round, len) in [(0u32, 10usize), (1, 9000), (2, 30_000)] {
        let mut txn = db.begin_write().expect("write");
        let mut tree = txn.tree(b"small").expect("tree");
        for i in 0..8u32 {
            tree.insert(&(round * 100 + i).to_be_bytes(), &vec![1u8; len])
                .expect("insert");
        }
        drop(tree);
        txn.ensure_room(256 << 10)
            .unwrap_or_else(|e| panic!("values of {len} B in a half-free file: {e:?}"));
        txn.commit().expect("a commit that had room");
    }
    db.audit().expect("audit");
}
