//! The protocol's messages onto the engine's and back. Both follow etcd
//! v3 field for field; what differs is ownership of the types (the
//! protocol crate must not depend on the engine) and the error codes.

use keel_engine::mvcc as kv;
use keel_engine::shard::NodeError;
use keel_proto as proto;

pub(crate) fn range_request(r: proto::RangeRequest) -> kv::RangeRequest {
    kv::RangeRequest {
        key: r.key,
        range_end: r.range_end,
        limit: r.limit,
        revision: r.revision,
        sort_order: match r.sort_order {
            proto::SortOrder::None => kv::SortOrder::None,
            proto::SortOrder::Ascend => kv::SortOrder::Ascend,
            proto::SortOrder::Descend => kv::SortOrder::Descend,
        },
        sort_target: match r.sort_target {
            proto::SortTarget::Key => kv::SortTarget::Key,
            proto::SortTarget::Version => kv::SortTarget::Version,
            proto::SortTarget::Create => kv::SortTarget::Create,
            proto::SortTarget::Mod => kv::SortTarget::Mod,
            proto::SortTarget::Value => kv::SortTarget::Value,
        },
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
        // The connection sets its own (`connection.rs`).
        answer_limit: 0,
    }
}

pub(crate) fn put_request(p: proto::PutRequest) -> kv::PutRequest {
    kv::PutRequest {
        key: p.key,
        value: p.value,
        lease: p.lease,
        prev_kv: p.prev_kv,
        ignore_value: p.ignore_value,
        ignore_lease: p.ignore_lease,
    }
}

pub(crate) fn delete_request(d: proto::DeleteRangeRequest) -> kv::DeleteRangeRequest {
    kv::DeleteRangeRequest {
        key: d.key,
        range_end: d.range_end,
        prev_kv: d.prev_kv,
    }
}

fn compare(c: proto::Compare) -> kv::Compare {
    kv::Compare {
        key: c.key,
        range_end: c.range_end,
        target: match c.target {
            proto::CompareTarget::Version(v) => kv::CompareTarget::Version(v),
            proto::CompareTarget::Create(v) => kv::CompareTarget::Create(v),
            proto::CompareTarget::Mod(v) => kv::CompareTarget::Mod(v),
            proto::CompareTarget::Value(v) => kv::CompareTarget::Value(v),
            proto::CompareTarget::Lease(v) => kv::CompareTarget::Lease(v),
        },
        result: match c.result {
            proto::CompareResult::Equal => kv::CompareResult::Equal,
            proto::CompareResult::NotEqual => kv::CompareResult::NotEqual,
            proto::CompareResult::Less => kv::CompareResult::Less,
            proto::CompareResult::Greater => kv::CompareResult::Greater,
        },
    }
}

/// A transaction; a range inside it is served at the transaction's own
/// consistency, so its `serializable` flag has no meaning and is dropped.
pub(crate) fn txn_request(t: proto::TxnRequest) -> kv::TxnRequest {
    fn ops(ops: Vec<proto::RequestOp>) -> Vec<kv::RequestOp> {
        ops.into_iter()
            .map(|op| match op {
                proto::RequestOp::Range(r) => kv::RequestOp::Range(range_request(r)),
                proto::RequestOp::Put(p) => kv::RequestOp::Put(put_request(p)),
                proto::RequestOp::DeleteRange(d) => kv::RequestOp::DeleteRange(delete_request(d)),
                proto::RequestOp::Txn(t) => kv::RequestOp::Txn(txn_request(t)),
            })
            .collect()
    }
    kv::TxnRequest {
        compare: t.compare.into_iter().map(compare).collect(),
        success: ops(t.success),
        failure: ops(t.failure),
    }
}

pub(crate) fn watch_request(w: &proto::WatchCreate) -> kv::WatchRequest {
    kv::WatchRequest {
        key: w.key.clone(),
        range_end: w.range_end.clone(),
        start_revision: w.start_revision,
        prev_kv: w.prev_kv,
        no_put: w.no_put,
        no_delete: w.no_delete,
    }
}

pub(crate) fn key_value(kv: kv::KeyValue) -> proto::KeyValue {
    proto::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
        value: kv.value,
    }
}

fn key_values(kvs: Vec<kv::KeyValue>) -> Vec<proto::KeyValue> {
    kvs.into_iter().map(key_value).collect()
}

pub(crate) fn range_response(r: kv::RangeResponse) -> proto::RangeResponse {
    proto::RangeResponse {
        kvs: key_values(r.kvs),
        more: r.more,
        count: r.count,
    }
}

fn put_response(p: kv::PutResponse) -> proto::PutResponse {
    proto::PutResponse {
        prev_kv: p.prev_kv.map(key_value),
    }
}

fn delete_response(d: kv::DeleteRangeResponse) -> proto::DeleteRangeResponse {
    proto::DeleteRangeResponse {
        deleted: d.deleted,
        prev_kvs: key_values(d.prev_kvs),
    }
}

fn txn_response(t: kv::TxnResponse) -> proto::TxnResponse {
    proto::TxnResponse {
        succeeded: t.succeeded,
        responses: t
            .responses
            .into_iter()
            .map(|op| match op {
                kv::ResponseOp::Range(r) => proto::ResponseOp::Range(range_response(r)),
                kv::ResponseOp::Put(p) => proto::ResponseOp::Put(put_response(p)),
                kv::ResponseOp::DeleteRange(d) => {
                    proto::ResponseOp::DeleteRange(delete_response(d))
                }
                kv::ResponseOp::Txn(t) => proto::ResponseOp::Txn(txn_response(t)),
            })
            .collect(),
    }
}

/// The answer to an applied write. Writes through the protocol only ever
/// apply puts, deletes, transactions and compactions.
pub(crate) fn write_response(response: kv::Response) -> proto::ResponseBody {
    match response {
        kv::Response::Put(p) => proto::ResponseBody::Put(put_response(p)),
        kv::Response::DeleteRange(d) => proto::ResponseBody::DeleteRange(delete_response(d)),
        kv::Response::Txn(t) => proto::ResponseBody::Txn(txn_response(t)),
        kv::Response::Compact => proto::ResponseBody::Compact,
        other => proto::ResponseBody::Error(proto::ErrorBody {
            code: proto::ErrorCode::Unknown,
            message: format!("unexpected answer to a write: {other:?}"),
            revision: 0,
            leader: 0,
        }),
    }
}

pub(crate) fn event(e: kv::Event) -> proto::Event {
    proto::Event {
        kind: match e.kind {
            kv::EventKind::Put => proto::EventKind::Put,
            kv::EventKind::Delete => proto::EventKind::Delete,
        },
        kv: key_value(e.kv),
        prev_kv: e.prev_kv.map(key_value),
    }
}

/// The protocol's error for an engine refusal or failure.
pub(crate) fn error(error: &NodeError) -> proto::ErrorBody {
    use proto::ErrorCode as Code;
    let (code, revision) = match error {
        NodeError::Kv(kv_error) => match kv_error {
            kv::KvError::KeyNotFound => (Code::KeyNotFound, 0),
            kv::KvError::Compacted { compact_revision } => (Code::Compacted, *compact_revision),
            kv::KvError::FutureRevision { current, .. } => (Code::FutureRevision, *current),
            kv::KvError::LeaseNotFound(_) => (Code::LeaseNotFound, 0),
            kv::KvError::LeaseExists(_) => (Code::LeaseExists, 0),
            kv::KvError::TooManyOps { .. } => (Code::TooManyOps, 0),
            kv::KvError::DuplicateKey { .. } => (Code::DuplicateKey, 0),
            kv::KvError::RequestTooLarge { .. }
            | kv::KvError::PutTooLarge { .. }
            | kv::KvError::KeyTooLarge { .. }
            | kv::KvError::ResultTooLarge(_)
            | kv::KvError::AnswerTooLarge { .. } => (Code::TooLarge, 0),
            kv::KvError::InvalidLease(_)
            | kv::KvError::EmptyKey
            | kv::KvError::ValueProvided
            | kv::KvError::LeaseProvided => (Code::BadRequest, 0),
            kv::KvError::WatchNotFound(_) => (Code::WatchNotFound, 0),
            kv::KvError::NoSpace => (Code::NoSpace, 0),
            kv::KvError::Corrupt => (Code::Corrupt, 0),
            kv::KvError::Storage(_) => (Code::ShardStopped, 0),
            _ => (Code::Unknown, 0),
        },
        NodeError::CrossShardTxn { .. } => (Code::CrossShardTxn, 0),
        NodeError::ShardStopped { .. } => (Code::ShardStopped, 0),
        NodeError::NotLeader { .. } => (Code::NotLeader, 0),
        NodeError::NoLeader { .. } | NodeError::Behind { .. } => (Code::NoLeader, 0),
        NodeError::OutcomeUnknown { .. } => (Code::OutcomeUnknown, 0),
        NodeError::Shutdown => (Code::ShuttingDown, 0),
        NodeError::InvalidRequest(_) => (Code::BadRequest, 0),
        _ => (Code::Unknown, 0),
    };
    let leader = match error {
        NodeError::NotLeader { leader, .. } => *leader,
        _ => 0,
    };
    proto::ErrorBody {
        code,
        message: error.to_string(),
        revision,
        leader,
    }
}
