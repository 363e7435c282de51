//! Verified flatbuffers into plain messages. Verification (in
//! [`crate::frame`]) has already checked every offset and the nesting
//! depth, so the walk here is bounded; what it still refuses is a message
//! that is well formed but means nothing: a missing body, an operation
//! this version does not know, an enum value out of range.

use flatbuffers::{ForwardsUOffset, Vector};

use crate::codec::DecodeError;
use crate::frame::{decode_request as verify_request, decode_response as verify_response};
use crate::generated::keel::proto as fb;
use crate::types::*;

type Decoded<T> = Result<T, String>;

fn bytes(v: Option<Vector<'_, u8>>) -> Vec<u8> {
    v.map(|v| v.bytes().to_vec()).unwrap_or_default()
}

/// A request from its flatbuffer bytes: its id and the request.
///
/// # Errors
/// [`DecodeError`], with the request's id when the bytes verified far
/// enough to have one (so the server can answer it with an error).
pub fn decode_request(message: &[u8]) -> Result<(u64, Request), DecodeError> {
    let request = verify_request(message).map_err(|e| DecodeError {
        id: None,
        message: e.to_string(),
    })?;
    let id = request.id();
    request_body(&request)
        .map(|body| (id, body))
        .map_err(|message| DecodeError {
            id: Some(id),
            message,
        })
}

fn missing(what: &str) -> String {
    format!("{what} is missing its body")
}

fn request_body(r: &fb::Request<'_>) -> Decoded<Request> {
    use fb::RequestBody as B;
    let body = r.body_type();
    let decoded = match body {
        B::RangeRequest => r
            .body_as_range_request()
            .map(range_request)
            .transpose()?
            .map(Request::Range),
        B::PutRequest => r
            .body_as_put_request()
            .map(|p| Request::Put(put_request(p))),
        B::DeleteRangeRequest => r
            .body_as_delete_range_request()
            .map(|d| Request::DeleteRange(delete_request(d))),
        B::TxnRequest => r
            .body_as_txn_request()
            .map(txn_request)
            .transpose()?
            .map(Request::Txn),
        B::CompactRequest => r.body_as_compact_request().map(|c| Request::Compact {
            revision: c.revision(),
        }),
        B::WatchCreate => r.body_as_watch_create().map(|w| {
            Request::WatchCreate(WatchCreate {
                key: bytes(w.key()),
                range_end: bytes(w.range_end()),
                start_revision: w.start_revision(),
                prev_kv: w.prev_kv(),
                no_put: w.no_put(),
                no_delete: w.no_delete(),
                progress_notify: w.progress_notify(),
                shared_frames: w.shared_frames(),
            })
        }),
        B::WatchCancel => r.body_as_watch_cancel().map(|w| Request::WatchCancel {
            watch_id: w.watch_id(),
        }),
        B::WatchProgress => r.body_as_watch_progress().map(|_| Request::WatchProgress),
        B::LeaseGrant => r.body_as_lease_grant().map(|l| Request::LeaseGrant {
            id: l.id(),
            ttl: l.ttl(),
        }),
        B::LeaseRevoke => r
            .body_as_lease_revoke()
            .map(|l| Request::LeaseRevoke { id: l.id() }),
        B::LeaseKeepAlive => r
            .body_as_lease_keep_alive()
            .map(|l| Request::LeaseKeepAlive { id: l.id() }),
        B::LeaseTimeToLive => r
            .body_as_lease_time_to_live()
            .map(|l| Request::LeaseTimeToLive {
                id: l.id(),
                keys: l.keys(),
            }),
        B::LeaseLeases => r.body_as_lease_leases().map(|_| Request::LeaseLeases),
        B::StatusRequest => r.body_as_status_request().map(|_| Request::Status),
        B::AuthenticateRequest => r
            .body_as_authenticate_request()
            .map(|a| Request::Authenticate {
                name: a.name().unwrap_or_default().to_string(),
                password: a.password().unwrap_or_default().to_string(),
            }),
        B::UseTokenRequest => r.body_as_use_token_request().map(|u| Request::UseToken {
            token: u.token().unwrap_or_default().to_string(),
        }),
        B::AlarmRequest => r
            .body_as_alarm_request()
            .map(|a| {
                let action = match a.action() {
                    fb::AlarmAction::Get => AlarmAction::Get,
                    fb::AlarmAction::Activate => AlarmAction::Activate,
                    fb::AlarmAction::Deactivate => AlarmAction::Deactivate,
                    other => return Err(format!("unknown alarm action {}", other.0)),
                };
                Ok(Request::Alarm {
                    action,
                    member_id: a.member_id(),
                    alarm: alarm_type(a.alarm())?,
                })
            })
            .transpose()?,
        B::LeaderRequest => r
            .body_as_leader_request()
            .map(|l| {
                let action = match l.action() {
                    fb::LeaderAction::Move => LeaderAction::Move,
                    fb::LeaderAction::Unpin => LeaderAction::Unpin,
                    fb::LeaderAction::Drain => LeaderAction::Drain,
                    fb::LeaderAction::Undrain => LeaderAction::Undrain,
                    other => return Err(format!("unknown leader action {}", other.0)),
                };
                Ok(Request::Leader {
                    action,
                    shard: l.shard(),
                    member_id: l.member_id(),
                })
            })
            .transpose()?,
        B::MemberRequest => r
            .body_as_member_request()
            .map(|m| {
                let action = match m.action() {
                    fb::MemberAction::List => MemberAction::List,
                    fb::MemberAction::Add => MemberAction::Add,
                    fb::MemberAction::Remove => MemberAction::Remove,
                    fb::MemberAction::Promote => MemberAction::Promote,
                    fb::MemberAction::Update => MemberAction::Update,
                    other => return Err(format!("unknown member action {}", other.0)),
                };
                Ok(Request::Member {
                    action,
                    member_id: m.member_id(),
                    name: m.name().unwrap_or_default().to_string(),
                    peer_address: m.peer_address().unwrap_or_default().to_string(),
                    learner: m.learner(),
                })
            })
            .transpose()?,
        other => return Err(format!("unknown operation {}", other.0)),
    };
    decoded.ok_or_else(|| missing("the request"))
}

fn sort_order(order: fb::SortOrder) -> Decoded<SortOrder> {
    Ok(match order {
        fb::SortOrder::None => SortOrder::None,
        fb::SortOrder::Ascend => SortOrder::Ascend,
        fb::SortOrder::Descend => SortOrder::Descend,
        other => return Err(format!("unknown sort order {}", other.0)),
    })
}

fn sort_target(target: fb::SortTarget) -> Decoded<SortTarget> {
    Ok(match target {
        fb::SortTarget::Key => SortTarget::Key,
        fb::SortTarget::Version => SortTarget::Version,
        fb::SortTarget::Create => SortTarget::Create,
        fb::SortTarget::Mod => SortTarget::Mod,
        fb::SortTarget::Value => SortTarget::Value,
        other => return Err(format!("unknown sort target {}", other.0)),
    })
}

fn range_request(r: fb::RangeRequest<'_>) -> Decoded<RangeRequest> {
    Ok(RangeRequest {
        key: bytes(r.key()),
        range_end: bytes(r.range_end()),
        limit: r.limit(),
        revision: r.revision(),
        sort_order: sort_order(r.sort_order())?,
        sort_target: sort_target(r.sort_target())?,
        keys_only: r.keys_only(),
        count_only: r.count_only(),
        min_mod_revision: r.min_mod_revision(),
        max_mod_revision: r.max_mod_revision(),
        min_create_revision: r.min_create_revision(),
        max_create_revision: r.max_create_revision(),
        serializable: r.serializable(),
    })
}

fn put_request(p: fb::PutRequest<'_>) -> PutRequest {
    PutRequest {
        key: bytes(p.key()),
        value: bytes(p.value()),
        lease: p.lease(),
        prev_kv: p.prev_kv(),
        ignore_value: p.ignore_value(),
        ignore_lease: p.ignore_lease(),
    }
}

fn delete_request(d: fb::DeleteRangeRequest<'_>) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: bytes(d.key()),
        range_end: bytes(d.range_end()),
        prev_kv: d.prev_kv(),
    }
}

fn compare(c: fb::Compare<'_>) -> Decoded<Compare> {
    let target = match c.target() {
        fb::CompareTarget::Version => CompareTarget::Version(c.version()),
        fb::CompareTarget::Create => CompareTarget::Create(c.create_revision()),
        fb::CompareTarget::Mod => CompareTarget::Mod(c.mod_revision()),
        fb::CompareTarget::Value => CompareTarget::Value(bytes(c.value())),
        fb::CompareTarget::Lease => CompareTarget::Lease(c.lease()),
        other => return Err(format!("unknown compare target {}", other.0)),
    };
    let result = match c.result() {
        fb::CompareResult::Equal => CompareResult::Equal,
        fb::CompareResult::NotEqual => CompareResult::NotEqual,
        fb::CompareResult::Less => CompareResult::Less,
        fb::CompareResult::Greater => CompareResult::Greater,
        other => return Err(format!("unknown compare result {}", other.0)),
    };
    Ok(Compare {
        key: bytes(c.key()),
        range_end: bytes(c.range_end()),
        target,
        result,
    })
}

fn request_ops(
    ops: Option<Vector<'_, ForwardsUOffset<fb::RequestOp<'_>>>>,
) -> Decoded<Vec<RequestOp>> {
    let Some(ops) = ops else {
        return Ok(Vec::new());
    };
    let mut decoded = Vec::with_capacity(ops.len());
    for op in ops {
        let one = match op.op_type() {
            fb::Op::RangeRequest => op
                .op_as_range_request()
                .map(range_request)
                .transpose()?
                .map(RequestOp::Range),
            fb::Op::PutRequest => op
                .op_as_put_request()
                .map(|p| RequestOp::Put(put_request(p))),
            fb::Op::DeleteRangeRequest => op
                .op_as_delete_range_request()
                .map(|d| RequestOp::DeleteRange(delete_request(d))),
            fb::Op::TxnRequest => op
                .op_as_txn_request()
                .map(txn_request)
                .transpose()?
                .map(RequestOp::Txn),
            other => return Err(format!("unknown transaction operation {}", other.0)),
        };
        decoded.push(one.ok_or_else(|| missing("a transaction operation"))?);
    }
    Ok(decoded)
}

fn txn_request(t: fb::TxnRequest<'_>) -> Decoded<TxnRequest> {
    let compares = match t.compare() {
        Some(compares) => compares.iter().map(compare).collect::<Decoded<Vec<_>>>()?,
        None => Vec::new(),
    };
    Ok(TxnRequest {
        compare: compares,
        success: request_ops(t.success())?,
        failure: request_ops(t.failure())?,
    })
}

/// A response from its flatbuffer bytes.
///
/// # Errors
/// [`DecodeError`] for bytes that do not verify or mean nothing.
pub fn decode_response(message: &[u8]) -> Result<Response, DecodeError> {
    let response = verify_response(message).map_err(|e| DecodeError {
        id: None,
        message: e.to_string(),
    })?;
    let id = response.id();
    let body = response_body(&response).map_err(|message| DecodeError {
        id: Some(id),
        message,
    })?;
    Ok(Response {
        id,
        revision: response.revision(),
        body,
    })
}

fn response_body(r: &fb::Response<'_>) -> Decoded<ResponseBody> {
    use fb::ResponseBody as B;
    let decoded = match r.body_type() {
        B::RangeResponse => r
            .body_as_range_response()
            .map(|x| ResponseBody::Range(range_response(x))),
        B::PutResponse => r
            .body_as_put_response()
            .map(|x| ResponseBody::Put(put_response(x))),
        B::DeleteRangeResponse => r
            .body_as_delete_range_response()
            .map(|x| ResponseBody::DeleteRange(delete_response(x))),
        B::TxnResponse => r
            .body_as_txn_response()
            .map(txn_response)
            .transpose()?
            .map(ResponseBody::Txn),
        B::CompactResponse => r.body_as_compact_response().map(|_| ResponseBody::Compact),
        B::WatchEvents => r
            .body_as_watch_events()
            .map(watch_events)
            .transpose()?
            .map(ResponseBody::Watch),
        B::LeaseGrantResponse => {
            r.body_as_lease_grant_response()
                .map(|l| ResponseBody::LeaseGrant {
                    id: l.id(),
                    ttl: l.ttl(),
                })
        }
        B::LeaseRevokeResponse => r
            .body_as_lease_revoke_response()
            .map(|_| ResponseBody::LeaseRevoke),
        B::LeaseKeepAliveResponse => {
            r.body_as_lease_keep_alive_response()
                .map(|l| ResponseBody::LeaseKeepAlive {
                    id: l.id(),
                    ttl: l.ttl(),
                })
        }
        B::LeaseTimeToLiveResponse => r.body_as_lease_time_to_live_response().map(|l| {
            ResponseBody::LeaseTimeToLive(LeaseTimeToLive {
                id: l.id(),
                granted_ttl: l.granted_ttl(),
                ttl: l.ttl(),
                keys: l
                    .keys()
                    .map(|k| k.iter().map(|kv| bytes(kv.key())).collect())
                    .unwrap_or_default(),
            })
        }),
        B::LeaseLeasesResponse => r.body_as_lease_leases_response().map(|l| {
            ResponseBody::LeaseLeases(
                l.leases()
                    .map(|v| {
                        v.iter()
                            .map(|s| LeaseStatus {
                                id: s.id(),
                                ttl: s.ttl(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        }),
        B::StatusResponse => r
            .body_as_status_response()
            .map(status)
            .transpose()?
            .map(ResponseBody::Status),
        B::AlarmResponse => r
            .body_as_alarm_response()
            .map(|a| alarm_members(a.alarms()))
            .transpose()?
            .map(ResponseBody::Alarm),
        B::Error => r
            .body_as_error()
            .map(|e| ResponseBody::Error(error_body(e))),
        B::AuthenticateResponse => {
            r.body_as_authenticate_response()
                .map(|a| ResponseBody::Authenticate {
                    token: a.token().unwrap_or_default().to_string(),
                })
        }
        B::UseTokenResponse => r
            .body_as_use_token_response()
            .map(|_| ResponseBody::UseToken),
        B::LeaderResponse => r.body_as_leader_response().map(|l| ResponseBody::Leader {
            settled: l.settled(),
        }),
        B::MemberResponse => r.body_as_member_response().map(|m| ResponseBody::Member {
            member_id: m.member_id(),
            cluster_id: m.cluster_id(),
            members: m
                .members()
                .map(|v| {
                    v.iter()
                        .map(|i| MemberInfo {
                            id: i.id(),
                            name: i.name().unwrap_or_default().to_string(),
                            peer_address: i.peer_address().unwrap_or_default().to_string(),
                            learner: i.learner(),
                            started: i.started(),
                            client_address: i.client_address().unwrap_or_default().to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }),
        other => return Err(format!("unknown response {}", other.0)),
    };
    decoded.ok_or_else(|| missing("the response"))
}

fn key_value(kv: fb::KeyValue<'_>) -> KeyValue {
    KeyValue {
        key: bytes(kv.key()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: kv.lease(),
        value: bytes(kv.value()),
    }
}

fn key_values(kvs: Option<Vector<'_, ForwardsUOffset<fb::KeyValue<'_>>>>) -> Vec<KeyValue> {
    kvs.map(|v| v.iter().map(key_value).collect())
        .unwrap_or_default()
}

fn range_response(r: fb::RangeResponse<'_>) -> RangeResponse {
    RangeResponse {
        kvs: key_values(r.kvs()),
        more: r.more(),
        count: r.count(),
    }
}

fn put_response(p: fb::PutResponse<'_>) -> PutResponse {
    PutResponse {
        prev_kv: p.prev_kv().map(key_value),
    }
}

fn delete_response(d: fb::DeleteRangeResponse<'_>) -> DeleteRangeResponse {
    DeleteRangeResponse {
        deleted: d.deleted(),
        prev_kvs: key_values(d.prev_kvs()),
    }
}

fn txn_response(t: fb::TxnResponse<'_>) -> Decoded<TxnResponse> {
    let mut responses = Vec::new();
    for op in t.responses().into_iter().flatten() {
        let one = match op.result_type() {
            fb::OpResult::RangeResponse => op
                .result_as_range_response()
                .map(|x| ResponseOp::Range(range_response(x))),
            fb::OpResult::PutResponse => op
                .result_as_put_response()
                .map(|x| ResponseOp::Put(put_response(x))),
            fb::OpResult::DeleteRangeResponse => op
                .result_as_delete_range_response()
                .map(|x| ResponseOp::DeleteRange(delete_response(x))),
            fb::OpResult::TxnResponse => op
                .result_as_txn_response()
                .map(txn_response)
                .transpose()?
                .map(ResponseOp::Txn),
            other => return Err(format!("unknown transaction result {}", other.0)),
        };
        responses.push(one.ok_or_else(|| missing("a transaction result"))?);
    }
    Ok(TxnResponse {
        succeeded: t.succeeded(),
        responses,
    })
}

fn watch_events(w: fb::WatchEvents<'_>) -> Decoded<WatchEvents> {
    let mut events = Vec::new();
    for e in w.events().into_iter().flatten() {
        let kind = match e.kind() {
            fb::EventKind::Put => EventKind::Put,
            fb::EventKind::Delete => EventKind::Delete,
            other => return Err(format!("unknown event kind {}", other.0)),
        };
        events.push(Event {
            kind,
            kv: e.kv().map(key_value).unwrap_or_default(),
            prev_kv: e.prev_kv().map(key_value),
        });
    }
    Ok(WatchEvents {
        watch_id: w.watch_id(),
        created: w.created(),
        canceled: w.canceled(),
        compact_revision: w.compact_revision(),
        events,
        also_watch_ids: w
            .also_watch_ids()
            .map(|ids| ids.iter().collect())
            .unwrap_or_default(),
    })
}

fn alarm_type(alarm: fb::AlarmType) -> Result<AlarmType, String> {
    match alarm {
        fb::AlarmType::None => Ok(AlarmType::None),
        fb::AlarmType::NoSpace => Ok(AlarmType::NoSpace),
        fb::AlarmType::Corrupt => Ok(AlarmType::Corrupt),
        other => Err(format!("unknown alarm {}", other.0)),
    }
}

fn alarm_members(
    members: Option<flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<fb::AlarmMember<'_>>>>,
) -> Result<Vec<AlarmMember>, String> {
    members
        .map(|v| {
            v.iter()
                .map(|m| {
                    Ok(AlarmMember {
                        member_id: m.member_id(),
                        alarm: alarm_type(m.alarm())?,
                    })
                })
                .collect()
        })
        .unwrap_or(Ok(Vec::new()))
}

fn status(s: fb::StatusResponse<'_>) -> Result<Status, String> {
    Ok(Status {
        version: s.version().unwrap_or_default().to_string(),
        shards: s.shards(),
        cores: s.cores(),
        core_ports: s
            .core_ports()
            .map(|p| p.iter().collect())
            .unwrap_or_default(),
        shard_info: s
            .shard_info()
            .map(|v| {
                v.iter()
                    .map(|i| ShardInfo {
                        shard: i.shard(),
                        core: i.core(),
                        leader: i.leader(),
                        raft_index: i.raft_index(),
                        raft_term: i.raft_term(),
                        db_size: i.db_size(),
                        stopped: i.stopped().unwrap_or_default().to_string(),
                        commit_index: i.commit_index(),
                        applied_index: i.applied_index(),
                        voters: i.voters().map(|v| v.iter().collect()).unwrap_or_default(),
                        learners: i.learners().map(|v| v.iter().collect()).unwrap_or_default(),
                        pinned_leader: i.pinned_leader(),
                        avoided: i.avoided().map(|v| v.iter().collect()).unwrap_or_default(),
                        voters_outgoing: i
                            .voters_outgoing()
                            .map(|v| v.iter().collect())
                            .unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        member_id: s.member_id(),
        name: s.name().unwrap_or_default().to_string(),
        client_address: s.client_address().unwrap_or_default().to_string(),
        alarms: alarm_members(s.alarms())?,
    })
}

fn error_body(e: fb::Error<'_>) -> ErrorBody {
    let code = match e.code() {
        fb::ErrorCode::Unknown => ErrorCode::Unknown,
        fb::ErrorCode::BadRequest => ErrorCode::BadRequest,
        fb::ErrorCode::TooLarge => ErrorCode::TooLarge,
        fb::ErrorCode::TooManyOps => ErrorCode::TooManyOps,
        fb::ErrorCode::CrossShardTxn => ErrorCode::CrossShardTxn,
        fb::ErrorCode::Compacted => ErrorCode::Compacted,
        fb::ErrorCode::FutureRevision => ErrorCode::FutureRevision,
        fb::ErrorCode::LeaseNotFound => ErrorCode::LeaseNotFound,
        fb::ErrorCode::LeaseExists => ErrorCode::LeaseExists,
        fb::ErrorCode::KeyNotFound => ErrorCode::KeyNotFound,
        fb::ErrorCode::DuplicateKey => ErrorCode::DuplicateKey,
        fb::ErrorCode::ShardStopped => ErrorCode::ShardStopped,
        fb::ErrorCode::NotLeader => ErrorCode::NotLeader,
        fb::ErrorCode::ShuttingDown => ErrorCode::ShuttingDown,
        fb::ErrorCode::WatchNotFound => ErrorCode::WatchNotFound,
        fb::ErrorCode::NoSpace => ErrorCode::NoSpace,
        fb::ErrorCode::Corrupt => ErrorCode::Corrupt,
        fb::ErrorCode::NoLeader => ErrorCode::NoLeader,
        fb::ErrorCode::OutcomeUnknown => ErrorCode::OutcomeUnknown,
        fb::ErrorCode::Learner => ErrorCode::Learner,
        fb::ErrorCode::PermissionDenied => ErrorCode::PermissionDenied,
        fb::ErrorCode::Unauthenticated => ErrorCode::Unauthenticated,
        fb::ErrorCode::AuthFailed => ErrorCode::AuthFailed,
        fb::ErrorCode::AuthNotEnabled => ErrorCode::AuthNotEnabled,
        fb::ErrorCode::AuthUnavailable => ErrorCode::AuthUnavailable,
        // A newer server's code: still an error, of a kind this client
        // does not name.
        _ => ErrorCode::Unknown,
    };
    ErrorBody {
        code,
        message: e.message().unwrap_or_default().to_string(),
        revision: e.revision(),
        leader: e.leader(),
    }
}
