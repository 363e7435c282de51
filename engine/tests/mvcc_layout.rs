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

/// Copies the `layout2` fixture (a data directory of one shard) into a
/// fresh directory; answers that directory.
fn layout2_copy() -> tempfile::TempDir {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/layout2");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture.join("node.meta"), dir.path().join("node.meta")).unwrap();
    std::fs::create_dir(dir.path().join("shard-000")).unwrap();
    std::fs::copy(
        fixture.join("shard-000/kv.db"),
        dir.path().join("shard-000/kv.db"),
    )
    .unwrap();
    dir
}

/// Keyspace layout 2 (revisions `unix_millis << 16`, above 2^53) is refused
/// at open, unchanged. `fixtures/layout2/` was written by keel 6e310c5
/// (`keel --shards 1`, then `keelctl put /config/a 1`, `put /config/a 2`,
/// `put /config/b x`, `del /config/b`, and a clean stop); its WAL is left out.
#[test]
fn the_layout2_fixture_is_refused_unchanged() {
    let dir = layout2_copy();
    let (refusal, unchanged) = open_copy(&dir.path().join("shard-000/kv.db"));
    assert!(
        refusal.contains("cannot read") && refusal.contains("unix_millis << 16"),
        "{refusal}"
    );
    assert!(unchanged, "opening changed the file");
}

/// A node refuses a data directory of layout 2 by its `node.meta` (version
/// 1), before it opens any shard, and says why.
#[test]
fn a_node_refuses_a_layout2_data_directory_unchanged() {
    let dir = layout2_copy();
    let meta = std::fs::read(dir.path().join("node.meta")).unwrap();
    let tree = std::fs::read(dir.path().join("shard-000/kv.db")).unwrap();
    let mut config = keel_engine::shard::NodeConfig::new(dir.path());
    config.pin = false;
    config.cores = 1;
    let refusal = match keel_engine::shard::Node::start(config) {
        Ok(_) => panic!("a layout-2 data directory started"),
        Err(e) => e.to_string(),
    };
    assert!(
        refusal.contains("unix_millis << 16") && refusal.contains("empty data directory"),
        "{refusal}"
    );
    assert_eq!(std::fs::read(dir.path().join("node.meta")).unwrap(), meta);
    assert_eq!(
        std::fs::read(dir.path().join("shard-000/kv.db")).unwrap(),
        tree
    );
    assert!(!dir.path().join("shard-000/wal").exists());
}
