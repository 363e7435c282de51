//! A storage failure stops the keyspace for good: with batches held in an
//! open transaction (as a shard runs it), the failed commit takes them
//! with it, so carrying on would apply later entries over a gap.

use keel_engine::btree::Options;
use keel_engine::mvcc::*;

#[test]
fn after_a_failed_sync_every_call_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        max_file_size: 4 << 20,
        ..Options::default()
    };
    let mut store = Store::open(dir.path().join("kv.db"), options).unwrap();
    store.defer_syncs(true);
    let mut index = 0;
    let failure = loop {
        index += 1;
        let put = Entry::Put(PutRequest {
            key: format!("key/{index:06}").into_bytes(),
            value: vec![7; 64 << 10],
            ..PutRequest::default()
        });
        let batch = [Indexed {
            index,
            revision: index,
            entry: &put,
        }];
        store.apply_batch_compacting(&batch, 0).unwrap();
        if index % 10 == 0 {
            if let Err(e) = store.sync() {
                break e;
            }
        }
        assert!(index < 1000, "the file never filled");
    };
    assert!(failure.is_fatal(), "{failure:?}");
    let put = Entry::Put(PutRequest {
        key: b"after".to_vec(),
        ..PutRequest::default()
    });
    let batch = [Indexed {
        index: index + 1,
        revision: index + 1,
        entry: &put,
    }];
    assert!(matches!(
        store.apply_batch_compacting(&batch, 0),
        Err(KvError::Storage(_))
    ));
    assert!(matches!(store.sync(), Err(KvError::Storage(_))));
    let all = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..RangeRequest::default()
    };
    assert!(matches!(store.range(&all), Err(KvError::Storage(_))));
}

#[test]
fn a_durable_sync_asked_for_while_a_deferred_one_is_in_flight_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.db");
    let mut store = Store::open(&path, keel_engine::btree::Options::default()).unwrap();
    store.defer_syncs(true);
    let put = |key: &str| {
        Entry::Put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            ..PutRequest::default()
        })
    };
    store.apply(1, 1, &put("a")).unwrap();
    let deferred = store.sync_deferred().unwrap().expect("a deferred commit");
    store.apply(2, 2, &put("b")).unwrap();
    assert!(matches!(store.sync(), Err(KvError::SyncInFlight)));
    assert!(matches!(store.sync_deferred(), Err(KvError::SyncInFlight)));
    // Nothing was lost: the store goes on, and after the report a sync
    // makes both writes durable.
    store.apply(3, 3, &put("c")).unwrap();
    let job = store.database().deferred_job(&deferred).unwrap();
    store.sync_finished(&deferred, job()).unwrap();
    store.sync().unwrap();
    drop(store);
    let store = Store::open(&path, keel_engine::btree::Options::default()).unwrap();
    let all = store
        .range(&RangeRequest {
            key: b"a".to_vec(),
            range_end: b"z".to_vec(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(all.count, 3);
}

#[test]
fn a_failed_deferred_sync_stops_transactions_already_open() {
    use keel_engine::btree::{Database, Options};
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("kv.db"), Options::default()).unwrap();
    let mut txn = db.begin_write().unwrap();
    txn.tree(b"t").unwrap().insert(b"a", b"1").unwrap();
    let _deferred = txn.commit_deferred().unwrap();
    // Begun on top of the deferred commit, as a shard does meanwhile.
    let mut open = db.begin_write().unwrap();
    open.tree(b"t").unwrap().insert(b"b", b"2").unwrap();
    db.durable_failed("injected: fdatasync failed");
    // The deferred commit's pages may be lost: nothing may build on them.
    assert!(open.commit().is_err());
    assert!(db.begin_write().is_err());
}
