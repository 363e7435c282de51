//! A node end to end: writes and reads through Raft on 1 and 4 shards,
//! forwarding between cores, reads across shards at one revision, the
//! cross-shard transaction refusal, and restarts that keep every
//! acknowledged write.

use futures_lite::future::block_on;
use keel_engine::mvcc::*;
use keel_engine::shard::{Consistency, Node, NodeConfig, NodeError};
use keel_tests::node_config;

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..PutRequest::default()
    }
}

fn all() -> RangeRequest {
    RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..RangeRequest::default()
    }
}

fn pairs(response: &RangeResponse) -> Vec<(String, String)> {
    response
        .kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8(kv.key.clone()).unwrap(),
                String::from_utf8(kv.value.clone()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn one_shard_keeps_acknowledged_writes_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    let mut last_revision = 0;
    for round in 0..3 {
        let node = Node::start(node_config(dir.path(), 1, 1)).unwrap();
        let (_, before) = block_on(node.range(all(), Consistency::Linearizable)).unwrap();
        assert_eq!(
            pairs(&before),
            expected,
            "round {round}: state after restart"
        );
        for i in 0..50 {
            let key = format!("k{round}-{i:02}");
            let applied = block_on(node.put(put(&key, "v"))).unwrap();
            assert!(
                applied.revision > last_revision,
                "revisions go up across restarts"
            );
            last_revision = applied.revision;
            expected.push((key, "v".to_string()));
        }
        node.shutdown();
    }
}

#[test]
fn four_shards_on_two_cores_read_as_one_keyspace() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(node_config(dir.path(), 4, 2)).unwrap();
    assert_eq!((node.shard_count(), node.core_count()), (4, 2));
    let mut expected = Vec::new();
    let mut last = 0;
    for i in 0..200 {
        let key = format!("key/{i:03}");
        // Half the writes enter through core 0, so half of those are
        // forwarded to core 1 over the mesh.
        let applied = if i % 2 == 0 {
            block_on(node.via_core(0).unwrap().put(put(&key, &i.to_string()))).unwrap()
        } else {
            block_on(node.put(put(&key, &i.to_string()))).unwrap()
        };
        assert!(
            applied.revision > last,
            "a later write has a higher revision"
        );
        last = applied.revision;
        expected.push((key, i.to_string()));
    }
    let (revision, everything) = block_on(node.range(all(), Consistency::Linearizable)).unwrap();
    assert!(revision >= last);
    assert_eq!(pairs(&everything), expected);
    assert_eq!(everything.count, 200);
    let limited = RangeRequest {
        key: b"key/".to_vec(),
        range_end: prefix_end(b"key/"),
        limit: 10,
        sort_order: SortOrder::Descend,
        ..RangeRequest::default()
    };
    let (_, top) = block_on(node.range(limited, Consistency::Serializable)).unwrap();
    let want: Vec<_> = expected.iter().rev().take(10).cloned().collect();
    assert_eq!((pairs(&top), top.more, top.count), (want, true, 200));

    // A read at an older revision sees the keyspace as it was then.
    let (_, old) = block_on(node.range(
        RangeRequest { revision, ..all() },
        Consistency::Linearizable,
    ))
    .unwrap();
    block_on(node.put(put("key/000", "changed"))).unwrap();
    let (_, again) = block_on(node.range(
        RangeRequest { revision, ..all() },
        Consistency::Linearizable,
    ))
    .unwrap();
    assert_eq!(pairs(&again), pairs(&old));

    let spread = TxnRequest {
        success: (0..8)
            .map(|i| RequestOp::Put(put(&format!("t{i}"), "x")))
            .collect(),
        ..TxnRequest::default()
    };
    match block_on(node.txn(spread)) {
        Err(error @ NodeError::CrossShardTxn { .. }) => {
            assert!(error.to_string().contains("hash tag"));
        }
        other => panic!("expected a cross-shard refusal, got {other:?}"),
    }
    let tagged = TxnRequest {
        compare: vec![Compare {
            key: b"{cart:7}/owner".to_vec(),
            range_end: Vec::new(),
            target: CompareTarget::Version(0),
            result: CompareResult::Equal,
        }],
        success: vec![
            RequestOp::Put(put("{cart:7}/owner", "ann")),
            RequestOp::Put(put("{cart:7}/items", "3")),
        ],
        failure: Vec::new(),
    };
    let applied = block_on(node.txn(tagged)).unwrap();
    assert!(matches!(
        applied.response,
        Response::Txn(TxnResponse {
            succeeded: true,
            ..
        })
    ));

    let deleted = block_on(node.delete_range(DeleteRangeRequest {
        key: b"key/".to_vec(),
        range_end: prefix_end(b"key/"),
        prev_kv: false,
    }))
    .unwrap();
    assert!(matches!(
        deleted.response,
        Response::DeleteRange(DeleteRangeResponse { deleted: 200, .. })
    ));
    node.shutdown();

    let node = Node::start(node_config(dir.path(), 0, 2)).unwrap();
    assert_eq!(node.shard_count(), 4, "the shard count is the directory's");
    let (_, after) = block_on(node.range(all(), Consistency::Linearizable)).unwrap();
    assert_eq!(
        pairs(&after),
        vec![
            ("{cart:7}/items".to_string(), "3".to_string()),
            ("{cart:7}/owner".to_string(), "ann".to_string())
        ]
    );
    node.shutdown();
    assert!(
        Node::start(node_config(dir.path(), 3, 2)).is_err(),
        "shard count is fixed"
    );
}

/// Go's `concurrency.Mutex` (what `etcdctl lock` runs): a transaction
/// puts its own key if new, then reads the lock's prefix, which spans
/// shards; it runs on its key's shard, and the prefix read sees every
/// shard at the transaction's revision, its own key included. A read
/// before a write of its branch is still refused.
#[test]
fn a_transaction_s_reads_may_span_shards_after_its_writes() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(node_config(dir.path(), 4, 2)).unwrap();
    for i in 0..8 {
        block_on(node.put(put(&format!("lock/{i}"), "held"))).unwrap();
    }
    let prefix = RangeRequest {
        key: b"lock/".to_vec(),
        range_end: prefix_end(b"lock/"),
        ..RangeRequest::default()
    };
    let mine = "lock/me";
    let acquire = TxnRequest {
        compare: vec![Compare {
            key: mine.as_bytes().to_vec(),
            range_end: Vec::new(),
            target: CompareTarget::Create(0),
            result: CompareResult::Equal,
        }],
        success: vec![
            RequestOp::Put(put(mine, "me")),
            RequestOp::Range(prefix.clone()),
        ],
        failure: vec![RequestOp::Range(prefix.clone())],
    };
    let applied = block_on(node.txn(acquire.clone())).unwrap();
    let Response::Txn(answer) = applied.response else {
        panic!("not a txn answer");
    };
    assert!(answer.succeeded);
    let ResponseOp::Range(read) = &answer.responses[1] else {
        panic!("not a range: {:?}", answer.responses[1]);
    };
    assert_eq!(read.count, 9, "every shard's keys and the txn's own");
    assert!(read.kvs.iter().any(|kv| kv.key == mine.as_bytes()));
    // Again: the key exists, so the failure branch reads the prefix.
    let again = block_on(node.txn(acquire)).unwrap();
    let Response::Txn(answer) = again.response else {
        panic!("not a txn answer");
    };
    assert!(!answer.succeeded);
    let ResponseOp::Range(read) = &answer.responses[0] else {
        panic!("not a range");
    };
    assert_eq!(read.count, 9);
    // A read that comes before a write would see it: refused.
    let before = TxnRequest {
        success: vec![RequestOp::Range(prefix), RequestOp::Put(put(mine, "x"))],
        ..TxnRequest::default()
    };
    assert!(matches!(
        block_on(node.txn(before)),
        Err(NodeError::CrossShardTxn { .. })
    ));
    node.shutdown();
}

#[test]
fn requests_too_large_for_the_log_are_refused_and_the_shard_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(node_config(dir.path(), 1, 1)).unwrap();
    for len in [MAX_REQUEST_BYTES + 1, 3 << 20, 64 << 20] {
        let refused = block_on(node.put(PutRequest {
            key: b"big".to_vec(),
            value: vec![7; len],
            ..PutRequest::default()
        }));
        assert!(
            matches!(refused, Err(NodeError::Kv(KvError::RequestTooLarge { .. }))),
            "{len}: {refused:?}"
        );
    }
    block_on(node.put(put("small", "ok"))).unwrap();
    let (_, found) = block_on(node.range(all(), Consistency::Linearizable)).unwrap();
    assert_eq!(pairs(&found), vec![("small".to_string(), "ok".to_string())]);
    node.shutdown();
    let small_segments = NodeConfig {
        wal: keel_wal::WalConfig {
            segment_size: 1 << 20,
        },
        ..node_config(dir.path(), 1, 1)
    };
    assert!(
        matches!(Node::start(small_segments), Err(NodeError::Start(_))),
        "segments too small for the largest request"
    );
}

/// Regression: with a relative data directory, opening the second core's
/// WAL failed with EBADF (io_uring resolved the relative path elsewhere).
#[test]
fn a_relative_data_directory_works_on_every_core() {
    let dir = tempfile::tempdir().unwrap();
    // Other tests in this binary use absolute paths, so changing the
    // working directory does not disturb them.
    std::env::set_current_dir(dir.path()).unwrap();
    let node = Node::start(node_config(std::path::Path::new("relative-data"), 2, 2)).unwrap();
    block_on(node.put(put("{x}/a", "1"))).unwrap();
    node.shutdown();
    assert!(dir.path().join("relative-data/shard-001/wal").is_dir());
}

fn nested(levels: usize) -> TxnRequest {
    let mut txn = TxnRequest::default();
    for _ in 1..levels {
        txn = TxnRequest {
            success: vec![RequestOp::Txn(txn)],
            ..TxnRequest::default()
        };
    }
    txn
}

/// Regression (found in review): a transaction nested deeper than the log
/// decoder accepted was logged, then stopped the shard when applied and
/// kept the node from ever starting again.
#[test]
fn deeply_nested_transactions_are_refused_and_the_node_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(node_config(dir.path(), 1, 1)).unwrap();
    for levels in [150, 300] {
        let refused = block_on(node.txn(nested(levels)));
        assert!(
            matches!(refused, Err(NodeError::Kv(KvError::TooManyOps { .. }))),
            "{levels} levels: {refused:?}"
        );
    }
    block_on(node.put(put("after", "ok"))).unwrap();
    node.shutdown();
    let node = Node::start(node_config(dir.path(), 1, 1)).expect("restart");
    let (_, found) = block_on(node.range(all(), Consistency::Linearizable)).unwrap();
    assert_eq!(pairs(&found), vec![("after".to_string(), "ok".to_string())]);
    node.shutdown();
}

/// A range over four shards with an answer limit: the parts add up to the
/// limit, not to the limit on each shard; with a count limit, the parts
/// are cut to it as they come, so the limit holds for what is returned.
#[test]
fn an_answer_limit_holds_for_a_range_over_every_shard() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(node_config(dir.path(), 4, 2)).unwrap();
    for i in 0..40 {
        let value = "v".repeat(1000);
        block_on(node.put(put(&format!("k{i:02}"), &value))).unwrap();
    }
    let pair = 3 + 1000 + ANSWER_BYTES_PER_PAIR;
    let ranged = |answer_limit: usize, limit: u64| {
        block_on(node.range(
            RangeRequest {
                answer_limit,
                limit,
                ..all()
            },
            Consistency::Linearizable,
        ))
    };
    assert_eq!(ranged(40 * pair, 0).unwrap().1.kvs.len(), 40);
    // Each shard holds about 10 pairs: 15 pairs' worth fits every shard's
    // part alone, not their sum.
    let refused = ranged(15 * pair, 0);
    assert!(
        matches!(refused, Err(NodeError::Kv(KvError::AnswerTooLarge { .. }))),
        "{refused:?}"
    );
    let (_, limited) = ranged(15 * pair, 12).unwrap();
    assert_eq!(
        (limited.kvs.len(), limited.count, limited.more),
        (12, 40, true)
    );
    let keys: Vec<String> = pairs(&limited).into_iter().map(|(k, _)| k).collect();
    let expected: Vec<String> = (0..12).map(|i| format!("k{i:02}")).collect();
    assert_eq!(keys, expected, "the first twelve keys in order");
    node.shutdown();
}
