//! etcd's v3 messages onto the engine's and back. keel's own protocol
//! follows etcd field for field, so this is mostly renaming; what differs
//! is integer widths (etcd's revisions and versions are `int64`, keel's
//! `u64` below 2^53) and enums carried as numbers.

use keel_engine::mvcc as kv;
use keel_etcd_api::etcdserverpb as pb;
use keel_etcd_api::etcdserverpb::{compare, request_op, response_op};
use keel_etcd_api::mvccpb;
use tonic::Status;

/// A revision from a client: etcd's are `int64`, never negative in a valid
/// request.
fn revision(value: i64, what: &str) -> Result<u64, Status> {
    u64::try_from(value)
        .map_err(|_| Status::invalid_argument(format!("etcdserver: {what} is negative")))
}

/// A revision to a client.
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) fn range_request(r: pb::RangeRequest) -> Result<kv::RangeRequest, Status> {
    use pb::range_request::{SortOrder, SortTarget};
    Ok(kv::RangeRequest {
        limit: u64::try_from(r.limit).unwrap_or(0),
        revision: revision(r.revision, "revision")?,
        sort_order: match SortOrder::try_from(r.sort_order) {
            Ok(SortOrder::Ascend) => kv::SortOrder::Ascend,
            Ok(SortOrder::Descend) => kv::SortOrder::Descend,
            _ => kv::SortOrder::None,
        },
        sort_target: match SortTarget::try_from(r.sort_target) {
            Ok(SortTarget::Version) => kv::SortTarget::Version,
            Ok(SortTarget::Create) => kv::SortTarget::Create,
            Ok(SortTarget::Mod) => kv::SortTarget::Mod,
            Ok(SortTarget::Value) => kv::SortTarget::Value,
            _ => kv::SortTarget::Key,
        },
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: revision(r.min_mod_revision, "min_mod_revision")?,
        max_mod_revision: revision(r.max_mod_revision, "max_mod_revision")?,
        min_create_revision: revision(r.min_create_revision, "min_create_revision")?,
        max_create_revision: revision(r.max_create_revision, "max_create_revision")?,
        answer_limit: 0,
        key: r.key,
        range_end: r.range_end,
    })
}

pub(crate) fn put_request(p: pb::PutRequest) -> kv::PutRequest {
    kv::PutRequest {
        key: p.key,
        value: p.value,
        lease: p.lease,
        prev_kv: p.prev_kv,
        ignore_value: p.ignore_value,
        ignore_lease: p.ignore_lease,
    }
}

pub(crate) fn delete_request(d: pb::DeleteRangeRequest) -> kv::DeleteRangeRequest {
    kv::DeleteRangeRequest {
        key: d.key,
        range_end: d.range_end,
        prev_kv: d.prev_kv,
    }
}

fn compare(c: pb::Compare) -> Result<kv::Compare, Status> {
    use compare::{CompareResult, CompareTarget, TargetUnion};
    let target = match (CompareTarget::try_from(c.target), c.target_union) {
        (Ok(CompareTarget::Version), Some(TargetUnion::Version(v))) => {
            kv::CompareTarget::Version(revision(v, "version")?)
        }
        (Ok(CompareTarget::Create), Some(TargetUnion::CreateRevision(v))) => {
            kv::CompareTarget::Create(revision(v, "create_revision")?)
        }
        (Ok(CompareTarget::Mod), Some(TargetUnion::ModRevision(v))) => {
            kv::CompareTarget::Mod(revision(v, "mod_revision")?)
        }
        (Ok(CompareTarget::Value), Some(TargetUnion::Value(v))) => kv::CompareTarget::Value(v),
        (Ok(CompareTarget::Lease), Some(TargetUnion::Lease(v))) => kv::CompareTarget::Lease(v),
        // An unset operand is its zero value, as in etcd.
        (Ok(CompareTarget::Version), None) => kv::CompareTarget::Version(0),
        (Ok(CompareTarget::Create), None) => kv::CompareTarget::Create(0),
        (Ok(CompareTarget::Mod), None) => kv::CompareTarget::Mod(0),
        (Ok(CompareTarget::Value), None) => kv::CompareTarget::Value(Vec::new()),
        (Ok(CompareTarget::Lease), None) => kv::CompareTarget::Lease(0),
        _ => {
            return Err(Status::invalid_argument(
                "etcdserver: a compare's target and its operand differ",
            ))
        }
    };
    let result = match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => kv::CompareResult::Equal,
        Ok(CompareResult::NotEqual) => kv::CompareResult::NotEqual,
        Ok(CompareResult::Less) => kv::CompareResult::Less,
        Ok(CompareResult::Greater) => kv::CompareResult::Greater,
        Err(_) => {
            return Err(Status::invalid_argument(
                "etcdserver: unknown compare result",
            ))
        }
    };
    Ok(kv::Compare {
        key: c.key,
        range_end: c.range_end,
        target,
        result,
    })
}

pub(crate) fn txn_request(t: pb::TxnRequest) -> Result<kv::TxnRequest, Status> {
    fn ops(ops: Vec<pb::RequestOp>) -> Result<Vec<kv::RequestOp>, Status> {
        ops.into_iter()
            .map(|op| match op.request {
                Some(request_op::Request::RequestRange(r)) => {
                    range_request(r).map(kv::RequestOp::Range)
                }
                Some(request_op::Request::RequestPut(p)) => Ok(kv::RequestOp::Put(put_request(p))),
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    Ok(kv::RequestOp::DeleteRange(delete_request(d)))
                }
                Some(request_op::Request::RequestTxn(t)) => txn_request(t).map(kv::RequestOp::Txn),
                None => Err(Status::invalid_argument(
                    "etcdserver: an empty operation in a txn",
                )),
            })
            .collect()
    }
    Ok(kv::TxnRequest {
        compare: t
            .compare
            .into_iter()
            .map(compare)
            .collect::<Result<_, _>>()?,
        success: ops(t.success)?,
        failure: ops(t.failure)?,
    })
}

pub(crate) fn key_value(kv: kv::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: to_i64(kv.create_revision),
        mod_revision: to_i64(kv.mod_revision),
        version: to_i64(kv.version),
        value: kv.value,
        lease: kv.lease,
    }
}

fn key_values(kvs: Vec<kv::KeyValue>) -> Vec<mvccpb::KeyValue> {
    kvs.into_iter().map(key_value).collect()
}

pub(crate) fn range_response(
    header: Option<pb::ResponseHeader>,
    r: kv::RangeResponse,
) -> pb::RangeResponse {
    pb::RangeResponse {
        header,
        kvs: key_values(r.kvs),
        more: r.more,
        count: to_i64(r.count),
    }
}

pub(crate) fn put_response(
    header: Option<pb::ResponseHeader>,
    p: kv::PutResponse,
) -> pb::PutResponse {
    pb::PutResponse {
        header,
        prev_kv: p.prev_kv.map(key_value),
    }
}

pub(crate) fn delete_response(
    header: Option<pb::ResponseHeader>,
    d: kv::DeleteRangeResponse,
) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header,
        deleted: to_i64(d.deleted),
        prev_kvs: key_values(d.prev_kvs),
    }
}

/// A transaction's answer; the header of each inner answer is the
/// transaction's, as etcd gives it.
pub(crate) fn txn_response(header: &pb::ResponseHeader, t: kv::TxnResponse) -> pb::TxnResponse {
    let inner = || Some(*header);
    pb::TxnResponse {
        header: inner(),
        succeeded: t.succeeded,
        responses: t
            .responses
            .into_iter()
            .map(|op| pb::ResponseOp {
                response: Some(match op {
                    kv::ResponseOp::Range(r) => {
                        response_op::Response::ResponseRange(range_response(inner(), r))
                    }
                    kv::ResponseOp::Put(p) => {
                        response_op::Response::ResponsePut(put_response(inner(), p))
                    }
                    kv::ResponseOp::DeleteRange(d) => {
                        response_op::Response::ResponseDeleteRange(delete_response(inner(), d))
                    }
                    kv::ResponseOp::Txn(t) => {
                        response_op::Response::ResponseTxn(txn_response(header, t))
                    }
                }),
            })
            .collect(),
    }
}
