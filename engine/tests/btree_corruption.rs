//! Damaged files give errors that name the page, never wrong answers or
//! panics.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;

use keel_engine::btree::{fuzzing, Database, Options, PAGE_SIZE};
use keel_engine::Error;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn options() -> Options {
    Options {
        max_file_size: 1 << 30,
        ..Default::default()
    }
}

/// Every tree's entries, by tree name.
type Contents = BTreeMap<Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>>;

/// Everything a file holds, or the first error met reading it.
fn read_everything(path: &Path) -> Result<Contents, Error> {
    let db = Database::open(path, options())?;
    let txn = db.begin_read()?;
    let mut all = BTreeMap::new();
    for name in txn.tree_names()? {
        let Some(tree) = txn.tree(&name)? else {
            continue;
        };
        let mut entries = Vec::new();
        for entry in tree.range(Bound::Unbounded, Bound::Unbounded)? {
            let (k, v) = entry?;
            entries.push((k.to_vec(), v.to_vec()));
        }
        for (k, v) in &entries {
            if tree.get(k)? != Some(v.as_slice()) {
                panic!("get disagrees with the scan");
            }
        }
        all.insert(name, entries);
    }
    Ok(all)
}

#[test]
fn flipped_bits_are_reported_with_the_page_never_read_as_data() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("kv.db");
    {
        let db = Database::open(&path, options()).expect("open");
        let mut rng = StdRng::seed_from_u64(8);
        let mut txn = db.begin_write().expect("write");
        for i in 0..3000u32 {
            let len = if i % 50 == 0 { 3000 } else { 100 };
            let value: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            txn.tree(if i % 2 == 0 { b"even" } else { b"odd" })
                .expect("tree")
                .insert(&i.to_be_bytes(), &value)
                .expect("insert");
        }
        txn.commit().expect("commit");
    }
    let pristine = std::fs::read(&path).expect("read file");
    let expected = read_everything(&path).expect("intact file reads");
    let used_pages = {
        let db = Database::open(&path, options()).expect("open");
        db.space().total_pages as usize
    };
    let mut rng = StdRng::seed_from_u64(9);
    let (mut errors, mut harmless) = (0, 0);
    for trial in 0..400 {
        let mut damaged = pristine.clone();
        let byte = rng.gen_range(0..used_pages * PAGE_SIZE);
        damaged[byte] ^= 1 << rng.gen_range(0..8);
        std::fs::write(&path, &damaged).expect("write damaged");
        match read_everything(&path) {
            Ok(got) => {
                // Only bytes nothing reads may change silently: the unused
                // meta slot, padding past a meta slot's fields, free pages.
                assert_eq!(
                    got, expected,
                    "trial {trial}: flip at byte {byte} changed what reads return"
                );
                harmless += 1;
            }
            Err(Error::Corruption { page, .. }) => {
                let flipped = (byte / PAGE_SIZE) as u64;
                assert!(
                    page <= flipped,
                    "trial {trial}: flip in page {flipped} reported at page {page}"
                );
                errors += 1;
            }
            Err(other) => panic!("trial {trial}: expected a corruption error, got {other}"),
        }
    }
    assert!(
        errors > 300,
        "only {errors} of 400 flips were detected ({harmless} harmless)"
    );
}

/// Inputs the fuzzer once crashed on; each must now open, audit and walk
/// without panicking (errors are fine).
#[test]
fn fuzz_found_inputs_do_not_panic() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
    let dir = tempfile::tempdir().expect("dir");
    let mut count = 0;
    for entry in std::fs::read_dir(fixtures).expect("fixtures") {
        let mut bytes = std::fs::read(entry.expect("entry").path()).expect("read fixture");
        fuzzing::reseal(&mut bytes);
        let path = dir.path().join("kv.db");
        std::fs::write(&path, &bytes).expect("write");
        fuzzing::open_and_walk(&path);
        count += 1;
    }
    assert!(count > 0);
}

/// A file with tree `t` holding keys 0..200 (big-endian u32) in several
/// leaves under one branch.
fn write_two_hundred_keys(path: &Path) {
    let db = Database::open(path, options()).expect("open");
    let mut txn = db.begin_write().expect("write");
    let mut tree = txn.tree(b"t").expect("tree");
    for i in 0..200u32 {
        tree.insert(&i.to_be_bytes(), &[1u8; 100]).expect("insert");
    }
    txn.commit().expect("commit");
}

/// A branch whose child points back at itself (a crafted file whose
/// checksums are all valid) must give errors, not walk forever.
#[test]
fn a_node_linking_to_an_ancestor_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("kv.db");
    write_two_hundred_keys(&path);
    let mut bytes = std::fs::read(&path).expect("read");
    let pages = bytes.len() / PAGE_SIZE;
    let branch = (2..pages)
        .find(|&p| bytes[p * PAGE_SIZE] == 2)
        .expect("a branch page");
    let count =
        u16::from_le_bytes([bytes[branch * PAGE_SIZE + 2], bytes[branch * PAGE_SIZE + 3]]) as usize;
    let first_child = branch * PAGE_SIZE + 24 + count * 4;
    bytes[first_child..first_child + 8].copy_from_slice(&(branch as u64).to_le_bytes());
    fuzzing::reseal(&mut bytes);
    std::fs::write(&path, &bytes).expect("write");

    let db = Database::open(&path, options()).expect("open");
    let snapshot = db.begin_read().expect("read");
    let tree = snapshot.tree(b"t").expect("catalog").expect("tree");
    let first_key = 0u32.to_be_bytes();
    assert!(matches!(
        tree.get(&first_key),
        Err(Error::Corruption { .. })
    ));
    assert!(tree.range(Bound::Unbounded, Bound::Unbounded).is_err());
    assert!(matches!(
        tree.seek_le(&first_key),
        Err(Error::Corruption { .. })
    ));
    assert!(db.audit().is_err());
    drop(snapshot);
    let mut txn = db.begin_write().expect("write");
    assert!(txn
        .tree(b"t")
        .expect("tree")
        .insert(&first_key, b"x")
        .is_err());
    assert!(txn.tree(b"t").expect("tree").remove(&first_key).is_err());
}

/// Regression (found in review): a change that failed part-way (here, on a
/// damaged leaf) had already recorded the pages above it as freed; the
/// transaction could still commit, listing reachable pages as free.
#[test]
fn a_transaction_whose_change_failed_cannot_commit() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("kv.db");
    write_two_hundred_keys(&path);
    let mut bytes = std::fs::read(&path).expect("read");
    let first_key = 0u32.to_be_bytes();
    let leaf = (2..bytes.len() / PAGE_SIZE)
        .find(|&p| {
            let at = p * PAGE_SIZE;
            let (off, len) = (
                u16::from_le_bytes([bytes[at + 24], bytes[at + 25]]) as usize,
                u16::from_le_bytes([bytes[at + 26], bytes[at + 27]]) as usize,
            );
            bytes[at] == 1 && len == 4 && bytes.get(at + off..at + off + 4) == Some(&first_key[..])
        })
        .expect("the leaf holding key 0");
    bytes[leaf * PAGE_SIZE + PAGE_SIZE - 1] ^= 0xFF;
    std::fs::write(&path, &bytes).expect("write");

    let db = Database::open(&path, options()).expect("open");
    let mut txn = db.begin_write().expect("write");
    let failed = txn.tree(b"t").expect("tree").insert(&first_key, b"new");
    assert!(
        matches!(failed, Err(Error::Corruption { page, .. }) if page == leaf as u64),
        "{failed:?}"
    );
    assert!(
        matches!(txn.commit(), Err(Error::Failed(_))),
        "a poisoned transaction must not commit"
    );
}
