//! A shard serves its ready reads a bounded number of bytes (and time) per
//! loop round, so that a write is not held behind a backlog of large
//! reads: the copies of their answers would otherwise run before the
//! write's answer, and on the shard's core nothing else (not even its I/O)
//! would run meanwhile.

use std::pin::Pin;

use futures_lite::future::{block_on, poll_once};
use futures_lite::Future;
use keel_engine::mvcc::{PutRequest, RangeRequest, RangeResponse, Revision};
use keel_engine::shard::{Consistency, Node, NodeResult};
use keel_tests::node_config;

const VALUES: usize = 8;
const VALUE_BYTES: usize = 1 << 20;
const READS: usize = 32;

type Pending<'a, T> = Pin<Box<dyn Future<Output = NodeResult<T>> + 'a>>;

/// Regression: a shard served every read made ready in a round before it
/// answered the writes of that round; 32 reads of 8 MiB each were copied
/// (about a quarter of a second here) before a put queued behind them
/// was answered.
#[test]
fn a_write_is_answered_before_a_backlog_of_large_reads_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(node_config(dir.path(), 1, 1)).unwrap();
    for i in 0..VALUES {
        let put = PutRequest {
            key: format!("big/{i}").into_bytes(),
            value: vec![b'v'; VALUE_BYTES],
            ..PutRequest::default()
        };
        block_on(node.put(put)).expect("put");
    }
    let all_big = RangeRequest {
        key: b"big/".to_vec(),
        range_end: b"big0".to_vec(),
        ..RangeRequest::default()
    };
    // Each read is sent as it is first polled; the put goes last.
    let mut reads: Vec<Pending<'_, (Revision, RangeResponse)>> = (0..READS)
        .map(|_| Box::pin(node.range(all_big.clone(), Consistency::Linearizable)) as Pending<'_, _>)
        .collect();
    for read in &mut reads {
        assert!(block_on(poll_once(read.as_mut())).is_none());
    }
    let steady = PutRequest {
        key: b"steady".to_vec(),
        value: b"v".to_vec(),
        ..PutRequest::default()
    };
    block_on(node.put(steady)).expect("put");
    // The reads answered by the time the put was: a round's worth or
    // two, not the whole backlog (each read left copies 8 MiB).
    let whole = |answer: NodeResult<(Revision, RangeResponse)>| {
        let (_, answer) = answer.expect("range");
        assert_eq!(answer.kvs.len(), VALUES);
    };
    let mut answered = 0;
    let mut unanswered = Vec::new();
    for mut read in reads {
        match block_on(poll_once(read.as_mut())) {
            Some(answer) => {
                answered += 1;
                whole(answer);
            }
            None => unanswered.push(read),
        }
    }
    assert!(
        answered <= READS / 2,
        "{answered} of {READS} reads of {} MiB were served before a put sent after them was answered",
        (VALUES * VALUE_BYTES) >> 20
    );
    // And every read is still answered, whole.
    for read in unanswered {
        whole(block_on(read));
    }
}
