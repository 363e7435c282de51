//! Alarms in a shard's keyspace: a CORRUPT alarm refuses every client
//! write (etcd's "corrupt cluster") and nothing else, until it is cleared;
//! a NOSPACE alarm refuses only what takes space.

use keel_engine::btree::Options;
use keel_engine::mvcc::*;

fn apply(store: &mut Store, index: u64, entry: &Entry) -> KvResult<Applied> {
    let batch = [Indexed {
        index,
        revision: index * 10,
        entry,
    }];
    let mut results = store.apply_batch(&batch).expect("the keyspace failed");
    results.pop().expect("one answer")
}

fn put(key: &str) -> Entry {
    Entry::Put(PutRequest {
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
        ..PutRequest::default()
    })
}

/// A new store in a temporary directory (kept while the store lives),
/// with key `a` put at index 1.
fn store_holding_a() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path().join("kv.db"), Options::default()).unwrap();
    apply(&mut store, 1, &put("a")).unwrap();
    (dir, store)
}

fn alarm(action: AlarmAction, kind: AlarmKind) -> Entry {
    Entry::Alarm {
        action,
        kind,
        member: 7,
    }
}

fn value_of(store: &Store, key: &str) -> Option<Vec<u8>> {
    let read = store
        .range(&RangeRequest {
            key: key.as_bytes().to_vec(),
            ..RangeRequest::default()
        })
        .unwrap();
    read.kvs.first().map(|kv| kv.value.clone())
}

#[test]
fn a_corrupt_alarm_refuses_every_write_until_it_is_cleared() {
    let (_dir, mut store) = store_holding_a();
    apply(
        &mut store,
        3,
        &alarm(AlarmAction::Activate, AlarmKind::Corrupt),
    )
    .unwrap();
    assert_eq!(store.alarms().unwrap(), vec![(AlarmKind::Corrupt, 7)]);
    let writes = [
        put("b"),
        Entry::DeleteRange(DeleteRangeRequest {
            key: b"a".to_vec(),
            ..DeleteRangeRequest::default()
        }),
        Entry::Txn(TxnRequest::default()),
        Entry::Compact { revision: 10 },
        Entry::LeaseGrant { id: 0, ttl: 60 },
    ];
    for (i, write) in writes.iter().enumerate() {
        let refused = apply(&mut store, 4 + i as u64, write);
        assert!(
            matches!(refused, Err(KvError::Corrupt)),
            "write {i} was not refused: {refused:?}"
        );
    }
    // Nothing changed; reads are served.
    assert_eq!(value_of(&store, "a"), Some(b"v".to_vec()));
    assert_eq!(value_of(&store, "b"), None);
    // Cleared, writes go through again.
    apply(
        &mut store,
        20,
        &alarm(AlarmAction::Deactivate, AlarmKind::Corrupt),
    )
    .unwrap();
    assert!(store.alarms().unwrap().is_empty());
    apply(&mut store, 21, &put("b")).unwrap();
    assert_eq!(value_of(&store, "b"), Some(b"v".to_vec()));
}

#[test]
fn a_no_space_alarm_refuses_only_what_takes_space() {
    let (_dir, mut store) = store_holding_a();
    apply(
        &mut store,
        2,
        &alarm(AlarmAction::Activate, AlarmKind::NoSpace),
    )
    .unwrap();
    assert!(matches!(
        apply(&mut store, 3, &put("b")),
        Err(KvError::NoSpace)
    ));
    let delete = Entry::DeleteRange(DeleteRangeRequest {
        key: b"a".to_vec(),
        ..DeleteRangeRequest::default()
    });
    apply(&mut store, 4, &delete).unwrap();
    assert_eq!(value_of(&store, "a"), None);
}
