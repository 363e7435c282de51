//! Shard 0's auth record: a change applies only from the record it was
//! made from, gets the next auth revision, survives a reopen, and leaves
//! the keyspace's revision order alone otherwise.

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

fn change(base: u64, state: &[u8]) -> Entry {
    Entry::Auth(AuthChange {
        base,
        state: state.to_vec(),
    })
}

#[test]
fn an_auth_change_applies_only_from_its_base_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.db");
    let mut store = Store::open(&path, Options::default()).unwrap();
    assert_eq!(store.auth().unwrap(), AuthRecord::default());

    let first = apply(&mut store, 1, &change(0, b"users: alice")).unwrap();
    assert_eq!(first.response, Response::Auth { revision: 1 });
    // Made from the record before the first: refused, nothing changed.
    let stale = apply(&mut store, 2, &change(0, b"users: mallory"));
    assert!(
        matches!(
            stale,
            Err(KvError::AuthChanged {
                base: 0,
                current: 1
            })
        ),
        "{stale:?}"
    );
    let second = apply(&mut store, 3, &change(1, b"users: alice, bob")).unwrap();
    assert_eq!(second.response, Response::Auth { revision: 2 });
    drop(store);

    let store = Store::open(&path, Options::default()).unwrap();
    assert_eq!(
        store.auth().unwrap(),
        AuthRecord {
            revision: 2,
            state: b"users: alice, bob".to_vec()
        }
    );
}

#[test]
fn an_auth_record_past_its_limit_is_refused_before_it_is_logged() {
    let big = change(0, &vec![b'x'; MAX_AUTH_RECORD_BYTES + 1]);
    assert!(matches!(
        check_entry(&big),
        Err(KvError::RequestTooLarge { .. })
    ));
    assert!(check_entry(&change(0, b"small")).is_ok());
}
