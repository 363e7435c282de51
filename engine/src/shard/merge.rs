//! Requests that span shards: merging per-shard range answers into the
//! answer one keyspace would give, and finding the one shard a
//! transaction's keys share.

use crate::mvcc::{
    sort_cmp, RangeRequest, RangeResponse, RequestOp, SortOrder, SortTarget, TxnRequest,
};
use crate::routing::shard_of_range;
use crate::shard::error::{NodeError, NodeResult};

/// What each shard is asked when a range spans shards: a sort by value
/// needs the values even when the caller wants keys only.
pub(crate) fn per_shard_request(request: &RangeRequest) -> RangeRequest {
    let mut part = request.clone();
    if request.keys_only && request.sort_target == SortTarget::Value {
        part.keys_only = false;
    }
    part
}

/// One answer from the shards' answers to [`per_shard_request`] at the same
/// revision: as a single keyspace sorts (ties in key order), limits and
/// counts.
pub(crate) fn merge_ranges(request: &RangeRequest, parts: Vec<RangeResponse>) -> RangeResponse {
    let mut count = 0;
    let mut any_more = false;
    let mut kvs = Vec::new();
    for part in parts {
        count += part.count;
        any_more |= part.more;
        kvs.extend(part.kvs);
    }
    let target = request.sort_target;
    // As etcd (and the store): a sort by anything but the key with no
    // order given ascends.
    match (target, request.sort_order) {
        (SortTarget::Key, SortOrder::Descend) => kvs.sort_by(|a, b| b.key.cmp(&a.key)),
        (SortTarget::Key, _) => kvs.sort_by(|a, b| a.key.cmp(&b.key)),
        (_, order) => {
            kvs.sort_by(|a, b| a.key.cmp(&b.key));
            if order == SortOrder::Descend {
                kvs.sort_by(|a, b| sort_cmp(target, b, a));
            } else {
                kvs.sort_by(|a, b| sort_cmp(target, a, b));
            }
        }
    }
    let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
    let mut more = any_more;
    if limit != 0 && kvs.len() > limit {
        kvs.truncate(limit);
        more = true;
    }
    if request.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    RangeResponse { kvs, more, count }
}

/// The shard every key of `txn` maps to (compares and operations, nested
/// ones too).
///
/// # Errors
/// [`NodeError::CrossShardTxn`] when they map to more than one.
pub(crate) fn txn_shard(txn: &TxnRequest, shards: usize) -> NodeResult<usize> {
    let mut found: Vec<usize> = Vec::new();
    let mut note = |shard: Option<usize>| {
        // `None`: a range over several shards.
        let shard = shard.unwrap_or(usize::MAX);
        if !found.contains(&shard) {
            found.push(shard);
        }
    };
    visit(txn, shards, &mut note);
    match found.as_slice() {
        [] => Ok(0),
        [one] if *one != usize::MAX => Ok(*one),
        _ => {
            let mut shards: Vec<usize> = if found.contains(&usize::MAX) {
                (0..shards).collect()
            } else {
                found
            };
            shards.sort_unstable();
            Err(NodeError::CrossShardTxn { shards })
        }
    }
}

fn visit(txn: &TxnRequest, shards: usize, note: &mut impl FnMut(Option<usize>)) {
    for compare in &txn.compare {
        note(shard_of_range(&compare.key, &compare.range_end, shards));
    }
    for op in txn.success.iter().chain(&txn.failure) {
        match op {
            RequestOp::Range(r) => note(shard_of_range(&r.key, &r.range_end, shards)),
            RequestOp::Put(p) => note(shard_of_range(&p.key, &[], shards)),
            RequestOp::DeleteRange(d) => note(shard_of_range(&d.key, &d.range_end, shards)),
            RequestOp::Txn(inner) => visit(inner, shards, note),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::{Compare, CompareResult, CompareTarget, KeyValue, PutRequest};

    fn kv(key: &str, version: u64) -> KeyValue {
        KeyValue {
            key: key.as_bytes().to_vec(),
            version,
            value: key.as_bytes().to_vec(),
            ..KeyValue::default()
        }
    }

    #[test]
    fn merged_answers_sort_limit_and_count_as_one_keyspace() {
        let parts = || {
            vec![
                RangeResponse {
                    kvs: vec![kv("a", 2), kv("d", 1)],
                    more: false,
                    count: 2,
                },
                RangeResponse {
                    kvs: vec![kv("b", 1), kv("c", 2)],
                    more: false,
                    count: 2,
                },
            ]
        };
        let keys = |r: &RangeResponse| {
            r.kvs
                .iter()
                .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
                .collect::<Vec<_>>()
                .join("")
        };
        let request = RangeRequest::default();
        let merged = merge_ranges(&request, parts());
        assert_eq!(
            (keys(&merged), merged.count, merged.more),
            ("abcd".into(), 4, false)
        );
        let request = RangeRequest {
            limit: 3,
            sort_order: SortOrder::Descend,
            sort_target: SortTarget::Version,
            ..RangeRequest::default()
        };
        let merged = merge_ranges(&request, parts());
        // Version 2 first (ties in key order), then version 1.
        assert_eq!((keys(&merged), merged.more), ("acb".into(), true));
        // No order with a target other than the key ascends (as etcd).
        let request = RangeRequest {
            sort_target: SortTarget::Version,
            ..RangeRequest::default()
        };
        assert_eq!(keys(&merge_ranges(&request, parts())), "bdac");
    }

    #[test]
    fn a_txn_runs_on_its_one_shard_or_is_refused_with_the_remedy() {
        let put = |key: &str| {
            RequestOp::Put(PutRequest {
                key: key.as_bytes().to_vec(),
                ..PutRequest::default()
            })
        };
        let tagged = TxnRequest {
            compare: vec![Compare {
                key: b"{user:42}/name".to_vec(),
                range_end: Vec::new(),
                target: CompareTarget::Version(0),
                result: CompareResult::Equal,
            }],
            success: vec![put("{user:42}/email"), put("{user:42}/cart")],
            failure: Vec::new(),
        };
        let shard = txn_shard(&tagged, 8).unwrap();
        assert_eq!(shard, crate::routing::shard_of(b"user:42", 8));
        let mixed = TxnRequest {
            success: vec![put("a"), put("b"), put("c"), put("d")],
            ..TxnRequest::default()
        };
        let error = txn_shard(&mixed, 8).unwrap_err();
        assert!(matches!(&error, NodeError::CrossShardTxn { shards } if shards.len() > 1));
        assert!(error.to_string().contains("hash tag"), "{error}");
        assert_eq!(txn_shard(&mixed, 1).unwrap(), 0);
    }
}
