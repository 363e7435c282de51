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
