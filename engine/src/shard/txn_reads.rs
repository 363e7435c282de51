//! Transactions whose reads span shards (docs/node.md, "Transactions"):
//! etcd's clients put a prefix read in their transactions (Go's
//! `concurrency.Mutex`, which `etcdctl lock` uses). A transaction's compares and writes must still share one shard;
//! its top-level ranges may read any shards. The transaction runs on its
//! shard, and each range of the branch it took that is not that shard's
//! alone is read again at the transaction's revision R on every shard it
//! spans, and put in its place in the answer.
//!
//! Why R is right: the transaction's writes are all on its shard and are
//! at R, and no other shard has a write at R (revisions are unique across
//! shards), so every shard at R holds what etcd's single keyspace would
//! show a range that comes after the transaction's writes. A range that
//! comes before a write of its branch would see that write at R, so such
//! a transaction is still refused.

use crate::mvcc::{RequestOp, TxnRequest};
use crate::routing::shard_of_range;

/// Where a transaction with spanning reads runs, and which of its
/// top-level ranges are read again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpanningReads {
    /// The shard every compare and write maps to.
    pub(crate) shard: usize,
    /// Indexes in `success` of the ranges read again.
    pub(crate) success: Vec<usize>,
    /// Indexes in `failure` of the ranges read again.
    pub(crate) failure: Vec<usize>,
}

/// The plan for `txn` when its compares, writes and nested transactions
/// map to one shard (or none: shard 0) and every top-level range that
/// reads elsewhere comes after the last write of its branch; `None`
/// otherwise.
pub(crate) fn plan(txn: &TxnRequest, shards: usize) -> Option<SpanningReads> {
    let mut found: Vec<Option<usize>> = Vec::new();
    let mut note = |shard: Option<usize>| {
        if !found.contains(&shard) {
            found.push(shard);
        }
    };
    for compare in &txn.compare {
        note(shard_of_range(&compare.key, &compare.range_end, shards));
    }
    for op in txn.success.iter().chain(&txn.failure) {
        match op {
            RequestOp::Range(_) => {}
            RequestOp::Put(p) => note(shard_of_range(&p.key, &[], shards)),
            RequestOp::DeleteRange(d) => note(shard_of_range(&d.key, &d.range_end, shards)),
            RequestOp::Txn(inner) => {
                let mut inner_shards = std::collections::BTreeSet::new();
                nested_shards(inner, shards, &mut inner_shards);
                for shard in inner_shards {
                    note(shard);
                }
            }
        }
    }
    let shard = match found.as_slice() {
        [] => 0,
        [Some(one)] => *one,
        _ => return None,
    };
    Some(SpanningReads {
        shard,
        success: spanning(&txn.success, shard, shards)?,
        failure: spanning(&txn.failure, shard, shards)?,
    })
}

/// The indexes of `ops`' ranges that read beyond `shard`; `None` when one
/// comes before a write.
fn spanning(ops: &[RequestOp], shard: usize, shards: usize) -> Option<Vec<usize>> {
    let last_write = ops
        .iter()
        .rposition(|op| !matches!(op, RequestOp::Range(_)));
    let mut found = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        if let RequestOp::Range(r) = op {
            if shard_of_range(&r.key, &r.range_end, shards) != Some(shard) {
                if last_write.is_some_and(|w| w > i) {
                    return None;
                }
                found.push(i);
            }
        }
    }
    Some(found)
}

fn nested_shards(
    txn: &TxnRequest,
    shards: usize,
    out: &mut std::collections::BTreeSet<Option<usize>>,
) {
    for compare in &txn.compare {
        out.insert(shard_of_range(&compare.key, &compare.range_end, shards));
    }
    for op in txn.success.iter().chain(&txn.failure) {
        match op {
            RequestOp::Range(r) => {
                out.insert(shard_of_range(&r.key, &r.range_end, shards));
            }
            RequestOp::Put(p) => {
                out.insert(shard_of_range(&p.key, &[], shards));
            }
            RequestOp::DeleteRange(d) => {
                out.insert(shard_of_range(&d.key, &d.range_end, shards));
            }
            RequestOp::Txn(inner) => nested_shards(inner, shards, out),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::mvcc::{Compare, CompareResult, CompareTarget, PutRequest, RangeRequest};

    fn put(key: &str) -> RequestOp {
        RequestOp::Put(PutRequest {
            key: key.as_bytes().to_vec(),
            ..PutRequest::default()
        })
    }

    fn everything() -> RequestOp {
        RequestOp::Range(RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..RangeRequest::default()
        })
    }

    fn missing(key: &str) -> Compare {
        Compare {
            key: key.as_bytes().to_vec(),
            range_end: Vec::new(),
            target: CompareTarget::Create(0),
            result: CompareResult::Equal,
        }
    }

    /// Go's `concurrency.Mutex`: put my key if it is new, then read the
    /// prefix's first holder; else read my key.
    #[test]
    fn a_mutex_s_transaction_runs_on_its_key_s_shard_and_reads_the_prefix_again() {
        let txn = TxnRequest {
            compare: vec![missing("{l}/1")],
            success: vec![put("{l}/1"), everything()],
            failure: vec![everything()],
        };
        let shard = shard_of_range(b"{l}/1", &[], 4).unwrap();
        assert_eq!(
            plan(&txn, 4),
            Some(SpanningReads {
                shard,
                success: vec![1],
                failure: vec![0],
            })
        );
    }

    #[test]
    fn a_read_before_a_write_or_writes_on_two_shards_are_still_refused() {
        let before = TxnRequest {
            success: vec![everything(), put("a")],
            ..TxnRequest::default()
        };
        assert_eq!(plan(&before, 4), None);
        let keys: Vec<String> = (0..64).map(|i| format!("k{i}")).collect();
        let two = keys
            .iter()
            .find(|k| shard_of_range(k.as_bytes(), &[], 4) != shard_of_range(b"k0", &[], 4))
            .unwrap();
        let apart = TxnRequest {
            success: vec![put("k0"), put(two)],
            ..TxnRequest::default()
        };
        assert_eq!(plan(&apart, 4), None);
    }
}
