//! Keyspace layout 1 (history keyed by user key, trees `hist` and `revlog`)
//! is refused at open with an error that says so, and the file is left
//! exactly as it was. `fixtures/layout1/kv.db` was written by keel 87a1001:
//! puts of `/config/a` (twice) and `/config/b`, then a delete of `/config/b`.

use std::path::Path;

use keel_engine::btree::{Database, Options};
use keel_engine::mvcc::Store;

/// Opens a copy of `file` as a keyspace; answers the refusal's message and
/// whether the copy is byte for byte unchanged.
fn open_copy(file: &Path) -> (String, bool) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("kv.db");
    std::fs::copy(file, &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    let refusal = match Store::open(&copy, Options::default()) {
        Ok(_) => panic!("a layout-1 keyspace opened"),
        Err(e) => e.to_string(),
    };
    (refusal, std::fs::read(&copy).unwrap() == before)
}

#[test]
fn the_layout1_fixture_is_refused_unchanged() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/layout1/kv.db");
    let (refusal, unchanged) = open_copy(&fixture);
    assert!(
        refusal.contains("cannot read") && refusal.contains("`hist`"),
        "{refusal}"
    );
    assert!(unchanged, "opening changed the file");
}

#[test]
fn any_file_with_a_layout1_tree_is_refused_unchanged() {
    for old_tree in [&b"hist"[..], b"revlog"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.db");
        {
            let db = Database::open(&path, Options::default()).unwrap();
            let mut txn = db.begin_write().unwrap();
            txn.tree(old_tree).unwrap().insert(b"a", b"1").unwrap();
            txn.commit().unwrap();
        }
        let (refusal, unchanged) = open_copy(&path);
        let name = String::from_utf8_lossy(old_tree);
        assert!(refusal.contains(&format!("`{name}`")), "{refusal}");
        assert!(unchanged, "opening changed the file");
    }
}
