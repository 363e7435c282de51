//! Checking and running requests, transactions above all, the way etcd
//! does: static checks first (sizes, operation counts, duplicate keys), then
//! every compare, nested ones included, against the state before the
//! transaction, then the state-dependent checks of the branch taken, and
//! only then any write. A refused request writes nothing.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use crate::btree::Storage;
use crate::mvcc::codec;
use crate::mvcc::error::{KvError, KvResult};
use crate::mvcc::read::{
    self, check_key_len, KeyRange, RangePlan, RangeProgress, ReadAt, Revisions,
};
use crate::mvcc::snapshot::Snapshot;
use crate::mvcc::types::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyValue, PutRequest, RangeRequest,
    RangeResponse, RequestOp, ResponseOp, TxnRequest, TxnResponse, MAX_REQUEST_BYTES, MAX_TXN_OPS,
};
use crate::mvcc::write::{lease_row, Writer};

/// Bytes of keys and values a request carries.
fn op_bytes(op: &RequestOp) -> usize {
    match op {
        RequestOp::Range(r) => r.key.len() + r.range_end.len(),
        RequestOp::Put(p) => p.key.len() + p.value.len(),
        RequestOp::DeleteRange(d) => d.key.len() + d.range_end.len(),
        RequestOp::Txn(t) => txn_bytes(t),
    }
}

fn txn_bytes(txn: &TxnRequest) -> usize {
    let compares: usize = txn
        .compare
        .iter()
        .map(|c| {
            c.key.len()
                + c.range_end.len()
                + match &c.target {
                    CompareTarget::Value(v) => v.len(),
                    _ => 0,
                }
        })
        .sum();
    compares
        + txn
            .success
            .iter()
            .chain(&txn.failure)
            .map(op_bytes)
            .sum::<usize>()
}

/// Refuses a request over [`MAX_REQUEST_BYTES`].
pub(crate) fn check_size(bytes: usize) -> KvResult<()> {
    if bytes > MAX_REQUEST_BYTES {
        return Err(KvError::RequestTooLarge {
            len: bytes,
            max: MAX_REQUEST_BYTES,
        });
    }
    Ok(())
}

/// The checks of a put that need no state.
pub(crate) fn check_put_static(put: &PutRequest) -> KvResult<()> {
    if put.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    check_key_len(&put.key)?;
    if put.ignore_value && !put.value.is_empty() {
        return Err(KvError::ValueProvided);
    }
    if put.ignore_lease && put.lease != 0 {
        return Err(KvError::LeaseProvided);
    }
    if put.lease < 0 {
        return Err(KvError::LeaseNotFound(put.lease));
    }
    check_size(put.key.len() + put.value.len())?;
    // The rows apply writes must fit the tree; refused here, before the
    // put is logged, never when it applies.
    if codec::put_row_len(put.key.len(), put.value.len()) > crate::btree::MAX_VALUE_LEN {
        return Err(KvError::PutTooLarge {
            key: put.key.len(),
            value: put.value.len(),
        });
    }
    Ok(())
}

/// The checks of a put against the state it will apply to.
pub(crate) fn check_put<T: Snapshot>(snap: &T, put: &PutRequest) -> KvResult<()> {
    if put.ignore_value || put.ignore_lease {
        let exists = snap.row(crate::mvcc::codec::tree::KV, &put.key)?.is_some();
        if !exists {
            return Err(KvError::KeyNotFound);
        }
    }
    if put.lease != 0 && lease_row(snap, put.lease)?.is_none() {
        return Err(KvError::LeaseNotFound(put.lease));
    }
    Ok(())
}

/// The checks of a transaction that need no state: operation counts (each
/// nesting level gets what its parent left, as etcd's `--max-txn-ops`),
/// empty keys, size.
pub(crate) fn check_txn_static(txn: &TxnRequest) -> KvResult<()> {
    check_size(txn_bytes(txn))?;
    check_ops(txn, MAX_TXN_OPS)
}

fn check_ops(txn: &TxnRequest, budget: usize) -> KvResult<()> {
    let count = txn
        .compare
        .len()
        .max(txn.success.len())
        .max(txn.failure.len());
    if count > budget {
        return Err(KvError::TooManyOps { count, max: budget });
    }
    for compare in &txn.compare {
        KeyRange::new(&compare.key, &compare.range_end)?;
    }
    for op in txn.success.iter().chain(&txn.failure) {
        match op {
            RequestOp::Range(r) => {
                KeyRange::new(&r.key, &r.range_end)?;
            }
            RequestOp::Put(p) => check_put_static(p)?,
            RequestOp::DeleteRange(d) => {
                KeyRange::new(&d.key, &d.range_end)?;
            }
            RequestOp::Txn(nested) => check_ops(nested, budget - count)?,
        }
    }
    Ok(())
}

/// Which branch every transaction on the path takes, decided before any
/// write: the top level's choice and, for each nested transaction of the
/// branch taken, its own.
#[derive(Debug)]
pub(crate) struct Path {
    succeeded: bool,
    nested: Vec<Option<Path>>,
}

/// Evaluates every compare of `txn`, nested ones in the branch taken too.
pub(crate) fn decide<T: Snapshot>(snap: &T, txn: &TxnRequest) -> KvResult<Path> {
    let mut succeeded = true;
    for compare in &txn.compare {
        if !holds(snap, compare)? {
            succeeded = false;
            break;
        }
    }
    let ops = if succeeded {
        &txn.success
    } else {
        &txn.failure
    };
    let nested = ops
        .iter()
        .map(|op| match op {
            RequestOp::Txn(inner) => decide(snap, inner).map(Some),
            _ => Ok(None),
        })
        .collect::<KvResult<Vec<_>>>()?;
    Ok(Path { succeeded, nested })
}

/// Whether every key in the compare's range satisfies it; a range with no
/// key compares zero values, except that a value compare then fails.
fn holds<T: Snapshot>(snap: &T, compare: &Compare) -> KvResult<bool> {
    let range = KeyRange::new(&compare.key, &compare.range_end)?;
    let mut any = false;
    let mut all = true;
    read::walk(snap, &range, ReadAt::Head, false, None, |found| {
        any = true;
        let kv = found.to_key_value(matches!(compare.target, CompareTarget::Value(_)));
        if compare_kv(compare, &kv) {
            Ok(ControlFlow::Continue(()))
        } else {
            all = false;
            Ok(ControlFlow::Break(()))
        }
    })?;
    if !any {
        if matches!(compare.target, CompareTarget::Value(_)) {
            return Ok(false);
        }
        return Ok(compare_kv(compare, &KeyValue::default()));
    }
    Ok(all)
}

fn compare_kv(compare: &Compare, kv: &KeyValue) -> bool {
    let ordering = match &compare.target {
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::Create(r) => kv.create_revision.cmp(r),
        CompareTarget::Mod(r) => kv.mod_revision.cmp(r),
        CompareTarget::Value(v) => kv.value.as_slice().cmp(v.as_slice()),
        CompareTarget::Lease(l) => kv.lease.cmp(l),
    };
    match compare.result {
        CompareResult::Equal => ordering.is_eq(),
        CompareResult::NotEqual => ordering.is_ne(),
        CompareResult::Less => ordering.is_lt(),
        CompareResult::Greater => ordering.is_gt(),
    }
}

/// The checks of the branches `path` takes, nested ones included: puts
/// (keys that must exist, leases), ranges (revisions), and that no key is
/// written twice: put twice, or put and deleted. Deletes may overlap.
///
/// etcd checks every branch for duplicates before evaluating compares; keel
/// checks the branches that run, which refuses the same transactions
/// whenever they would write a key twice and needs no interval tree.
pub(crate) fn check_path<T: Snapshot>(
    snap: &T,
    revisions: Revisions,
    txn: &TxnRequest,
    path: &Path,
) -> KvResult<()> {
    let mut puts = BTreeSet::new();
    let mut deletes = Vec::new();
    check_branch(snap, revisions, txn, path, &mut puts, &mut deletes)?;
    for key in &puts {
        if deletes.iter().any(|range: &KeyRange| range.contains(key)) {
            return Err(KvError::DuplicateKey { key: key.clone() });
        }
    }
    Ok(())
}

fn check_branch<T: Snapshot>(
    snap: &T,
    revisions: Revisions,
    txn: &TxnRequest,
    path: &Path,
    puts: &mut BTreeSet<Vec<u8>>,
    deletes: &mut Vec<KeyRange>,
) -> KvResult<()> {
    let ops = if path.succeeded {
        &txn.success
    } else {
        &txn.failure
    };
    for (op, nested) in ops.iter().zip(&path.nested) {
        match (op, nested) {
            (RequestOp::Put(put), _) => {
                check_put(snap, put)?;
                if !puts.insert(put.key.clone()) {
                    return Err(KvError::DuplicateKey {
                        key: put.key.clone(),
                    });
                }
            }
            (RequestOp::DeleteRange(delete), _) => {
                deletes.push(KeyRange::new(&delete.key, &delete.range_end)?);
            }
            (RequestOp::Range(range), _) => {
                RangePlan::new(range, revisions)?;
            }
            (RequestOp::Txn(inner), Some(inner_path)) => {
                check_branch(snap, revisions, inner, inner_path, puts, deletes)?
            }
            (RequestOp::Txn(_), None) => {}
        }
    }
    Ok(())
}

/// Whether a range inside `txn` (at any depth) could be refused after the
/// transaction's earlier operations wrote: the one way an entry is refused
/// part-way.
pub(crate) fn reads_inside(txn: &TxnRequest) -> bool {
    txn.success.iter().chain(&txn.failure).any(|op| match op {
        RequestOp::Range(_) => true,
        RequestOp::Txn(nested) => reads_inside(nested),
        RequestOp::Put(_) | RequestOp::DeleteRange(_) => false,
    })
}

/// A whole range answer read through `snap`.
pub(crate) fn range_all<T: Snapshot>(
    snap: &T,
    revisions: Revisions,
    request: &RangeRequest,
) -> KvResult<RangeResponse> {
    let plan = RangePlan::new(request, revisions)?;
    let mut progress = RangeProgress::default();
    let mut response = RangeResponse::default();
    // With a limit, pages of it, so that a read past it stops as soon as
    // it has gathered too much.
    let page_bytes = match request.answer_limit {
        0 => usize::MAX,
        limit => limit.saturating_add(1),
    };
    let mut bytes = 0usize;
    loop {
        let page = read::next_page(snap, &plan, &mut progress, page_bytes)?;
        bytes = page
            .kvs
            .iter()
            .map(read::answer_size)
            .fold(bytes, usize::saturating_add);
        read::check_answer_limit(request, bytes)?;
        response.kvs.extend(page.kvs);
        if page.last {
            response.count = page.count;
            response.more = page.more;
            return Ok(response);
        }
    }
}

/// Runs the branch `path` takes. Ranges see the transaction's earlier
/// writes at the head.
pub(crate) fn execute<S: Storage>(
    writer: &mut Writer<'_, S>,
    revisions: Revisions,
    txn: &TxnRequest,
    path: &Path,
) -> KvResult<TxnResponse> {
    let ops = if path.succeeded {
        &txn.success
    } else {
        &txn.failure
    };
    let mut responses = Vec::with_capacity(ops.len());
    for (op, nested) in ops.iter().zip(&path.nested) {
        let response = match (op, nested) {
            (RequestOp::Range(range), _) => {
                ResponseOp::Range(range_all(&*writer.txn, revisions, range)?)
            }
            (RequestOp::Put(put), _) => ResponseOp::Put(writer.put(put)?),
            (RequestOp::DeleteRange(delete), _) => {
                ResponseOp::DeleteRange(writer.delete_range(delete)?)
            }
            (RequestOp::Txn(inner), Some(inner_path)) => {
                ResponseOp::Txn(execute(writer, revisions, inner, inner_path)?)
            }
            (RequestOp::Txn(_), None) => {
                return Err(KvError::Storage(crate::Error::InvalidArgument(
                    "transaction path does not match the request".to_string(),
                )))
            }
        };
        responses.push(response);
    }
    Ok(TxnResponse {
        succeeded: path.succeeded,
        responses,
    })
}

/// The static checks of a delete.
pub(crate) fn check_delete_static(delete: &DeleteRangeRequest) -> KvResult<()> {
    KeyRange::new(&delete.key, &delete.range_end)?;
    check_size(delete.key.len() + delete.range_end.len())
}
