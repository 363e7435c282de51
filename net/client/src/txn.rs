//! Building transactions: `Txn::new().when([..]).and_then([..]).or_else([..])`.

use keel_proto::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, LeaseId, PutRequest, RangeRequest,
    RequestOp, Revision, TxnRequest,
};

/// A transaction under construction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    request: TxnRequest,
}

impl Txn {
    /// An empty transaction (no compares: `success` runs).
    pub fn new() -> Txn {
        Txn::default()
    }

    /// Adds conditions; all must hold for the success branch.
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Txn {
        self.request.compare.extend(compares);
        self
    }

    /// Operations to run when every condition holds.
    pub fn and_then(mut self, ops: impl IntoIterator<Item = RequestOp>) -> Txn {
        self.request.success.extend(ops);
        self
    }

    /// Operations to run otherwise.
    pub fn or_else(mut self, ops: impl IntoIterator<Item = RequestOp>) -> Txn {
        self.request.failure.extend(ops);
        self
    }

    /// The request to send with [`crate::Client::txn`].
    pub fn build(self) -> TxnRequest {
        self.request
    }
}

impl From<Txn> for TxnRequest {
    fn from(txn: Txn) -> TxnRequest {
        txn.build()
    }
}

/// Conditions on one key.
#[derive(Debug, Clone)]
pub struct Cmp {
    key: Vec<u8>,
}

impl Cmp {
    /// Conditions on `key`.
    pub fn key(key: impl Into<Vec<u8>>) -> Cmp {
        Cmp { key: key.into() }
    }

    fn with(self, target: CompareTarget, result: CompareResult) -> Compare {
        Compare {
            key: self.key,
            range_end: Vec::new(),
            target,
            result,
        }
    }

    /// The key's version relates to `version` (0: the key does not exist).
    pub fn version(self, result: CompareResult, version: u64) -> Compare {
        self.with(CompareTarget::Version(version), result)
    }

    /// The key's create revision relates to `revision` (0: it does not exist).
    pub fn create_revision(self, result: CompareResult, revision: Revision) -> Compare {
        self.with(CompareTarget::Create(revision), result)
    }

    /// The key's mod revision relates to `revision`.
    pub fn mod_revision(self, result: CompareResult, revision: Revision) -> Compare {
        self.with(CompareTarget::Mod(revision), result)
    }

    /// The key's value relates to `value`.
    pub fn value(self, result: CompareResult, value: impl Into<Vec<u8>>) -> Compare {
        self.with(CompareTarget::Value(value.into()), result)
    }

    /// The key's lease relates to `lease`.
    pub fn lease(self, result: CompareResult, lease: LeaseId) -> Compare {
        self.with(CompareTarget::Lease(lease), result)
    }
}

/// Transaction operations.
pub struct Op;

impl Op {
    /// Read `key`.
    pub fn get(key: impl Into<Vec<u8>>) -> RequestOp {
        RequestOp::Range(RangeRequest {
            key: key.into(),
            ..RangeRequest::default()
        })
    }

    /// Any read.
    pub fn range(request: RangeRequest) -> RequestOp {
        RequestOp::Range(request)
    }

    /// Store `value` under `key`.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> RequestOp {
        RequestOp::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..PutRequest::default()
        })
    }

    /// Store `value` under `key`, attached to `lease`.
    pub fn put_with_lease(
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        lease: LeaseId,
    ) -> RequestOp {
        RequestOp::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            lease,
            ..PutRequest::default()
        })
    }

    /// Delete `key`.
    pub fn delete(key: impl Into<Vec<u8>>) -> RequestOp {
        RequestOp::DeleteRange(DeleteRangeRequest {
            key: key.into(),
            ..DeleteRangeRequest::default()
        })
    }

    /// A nested transaction.
    pub fn txn(txn: Txn) -> RequestOp {
        RequestOp::Txn(txn.build())
    }
}

/// The first key a transaction names, which routes it (all its keys must
/// share that key's shard).
pub(crate) fn first_key(request: &TxnRequest) -> Option<&[u8]> {
    fn in_ops(ops: &[RequestOp]) -> Option<&[u8]> {
        ops.iter().find_map(|op| match op {
            RequestOp::Range(r) => Some(r.key.as_slice()),
            RequestOp::Put(p) => Some(p.key.as_slice()),
            RequestOp::DeleteRange(d) => Some(d.key.as_slice()),
            RequestOp::Txn(t) => first_key(t),
        })
    }
    request
        .compare
        .first()
        .map(|c| c.key.as_slice())
        .or_else(|| in_ops(&request.success))
        .or_else(|| in_ops(&request.failure))
}
