//! Plain messages into flatbuffers. Children are built before the tables
//! that point at them, as flatbuffers requires.

use std::cell::RefCell;

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};

use crate::codec::size_hint;
use crate::frame::{encode_frame_within, Frame, FrameError, FRAME_HEADER_LEN, MAX_FRAME_LEN};
use crate::generated::keel::proto as fb;
use crate::types::*;

type Builder<'a> = FlatBufferBuilder<'a>;

fn bytes<'a>(
    fbb: &mut Builder<'a>,
    bytes: &[u8],
) -> Option<WIPOffset<flatbuffers::Vector<'a, u8>>> {
    (!bytes.is_empty()).then(|| fbb.create_vector(bytes))
}

/// The thread's builder, and whether the last message built with it got
/// to the end. `reset` does not clear a table left half-built, so after a
/// build that panicked (and was caught) the builder is replaced.
struct Reusable {
    fbb: Builder<'static>,
    finished: bool,
}

thread_local! {
    /// One builder per thread, reset for each message: building a message
    /// then costs no allocation of the builder's own buffers.
    static BUILDER: RefCell<Reusable> = RefCell::new(Reusable {
        fbb: Builder::with_capacity(1024),
        finished: true,
    });
}

/// A builder that built a message larger than this is dropped, so that
/// one large answer does not keep its buffer for good.
const KEPT_BUILDER_BYTES: usize = 64 << 10;

/// Builds a message with the thread's builder (a fresh one if it is busy)
/// and hands its bytes to `take`.
fn build<R>(message: impl FnOnce(&mut Builder<'static>), take: impl FnOnce(&[u8]) -> R) -> R {
    BUILDER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut reusable) => {
            if reusable.finished {
                reusable.fbb.reset();
            } else {
                reusable.fbb = Builder::with_capacity(1024);
            }
            reusable.finished = false;
            message(&mut reusable.fbb);
            let out = take(reusable.fbb.finished_data());
            if reusable.fbb.finished_data().len() > KEPT_BUILDER_BYTES {
                reusable.fbb = Builder::with_capacity(1024);
            }
            reusable.finished = true;
            out
        }
        Err(_) => {
            let mut fbb = Builder::with_capacity(256);
            message(&mut fbb);
            take(fbb.finished_data())
        }
    })
}

fn request_message(fbb: &mut Builder<'_>, id: u64, request: &Request) {
    let (body_type, body) = request_body(fbb, request);
    let root = fb::Request::create(
        fbb,
        &fb::RequestArgs {
            id,
            body_type,
            body: Some(body),
        },
    );
    fbb.finish(root, None);
}

/// The request `request` with id `id`, as a flatbuffer (without its frame
/// header).
pub fn encode_request(id: u64, request: &Request) -> Vec<u8> {
    build(|fbb| request_message(fbb, id, request), <[u8]>::to_vec)
}

/// The request `request` with id `id`, framed.
///
/// # Errors
/// [`FrameError::TooLarge`] when it does not fit a frame.
pub fn encode_request_frame(id: u64, request: &Request) -> Result<Vec<u8>, FrameError> {
    build(
        |fbb| request_message(fbb, id, request),
        |message| encode_frame_within(message, MAX_FRAME_LEN),
    )
}

fn request_body(
    fbb: &mut Builder<'_>,
    request: &Request,
) -> (fb::RequestBody, WIPOffset<UnionWIPOffset>) {
    use fb::RequestBody as B;
    match request {
        Request::Range(r) => (B::RangeRequest, range_request(fbb, r).as_union_value()),
        Request::Put(r) => (B::PutRequest, put_request(fbb, r).as_union_value()),
        Request::DeleteRange(r) => (
            B::DeleteRangeRequest,
            delete_request(fbb, r).as_union_value(),
        ),
        Request::Txn(r) => (B::TxnRequest, txn_request(fbb, r).as_union_value()),
        Request::Compact { revision } => {
            let args = fb::CompactRequestArgs {
                revision: *revision,
            };
            (
                B::CompactRequest,
                fb::CompactRequest::create(fbb, &args).as_union_value(),
            )
        }
        Request::WatchCreate(w) => {
            let args = fb::WatchCreateArgs {
                key: bytes(fbb, &w.key),
                range_end: bytes(fbb, &w.range_end),
                start_revision: w.start_revision,
                prev_kv: w.prev_kv,
                no_put: w.no_put,
                no_delete: w.no_delete,
                progress_notify: w.progress_notify,
                shared_frames: w.shared_frames,
            };
            (
                B::WatchCreate,
                fb::WatchCreate::create(fbb, &args).as_union_value(),
            )
        }
        Request::WatchCancel { watch_id } => {
            let args = fb::WatchCancelArgs {
                watch_id: *watch_id,
            };
            (
                B::WatchCancel,
                fb::WatchCancel::create(fbb, &args).as_union_value(),
            )
        }
        Request::WatchProgress => {
            let args = fb::WatchProgressArgs {};
            (
                B::WatchProgress,
                fb::WatchProgress::create(fbb, &args).as_union_value(),
            )
        }
        Request::LeaseGrant { id, ttl } => {
            let args = fb::LeaseGrantArgs { id: *id, ttl: *ttl };
            (
                B::LeaseGrant,
                fb::LeaseGrant::create(fbb, &args).as_union_value(),
            )
        }
        Request::LeaseRevoke { id } => {
            let args = fb::LeaseRevokeArgs { id: *id };
            (
                B::LeaseRevoke,
                fb::LeaseRevoke::create(fbb, &args).as_union_value(),
            )
        }
        Request::LeaseKeepAlive { id } => {
            let args = fb::LeaseKeepAliveArgs { id: *id };
            (
                B::LeaseKeepAlive,
                fb::LeaseKeepAlive::create(fbb, &args).as_union_value(),
            )
        }
        Request::LeaseTimeToLive { id, keys } => {
            let args = fb::LeaseTimeToLiveArgs {
                id: *id,
                keys: *keys,
            };
            (
                B::LeaseTimeToLive,
                fb::LeaseTimeToLive::create(fbb, &args).as_union_value(),
            )
        }
        Request::LeaseLeases => {
            let args = fb::LeaseLeasesArgs {};
            (
                B::LeaseLeases,
                fb::LeaseLeases::create(fbb, &args).as_union_value(),
            )
        }
        Request::Status => {
            let args = fb::StatusRequestArgs {};
            (
                B::StatusRequest,
                fb::StatusRequest::create(fbb, &args).as_union_value(),
            )
        }
        Request::Authenticate { name, password } => {
            let args = fb::AuthenticateRequestArgs {
                name: Some(fbb.create_string(name)),
                password: Some(fbb.create_string(password)),
            };
            (
                B::AuthenticateRequest,
                fb::AuthenticateRequest::create(fbb, &args).as_union_value(),
            )
        }
        Request::UseToken { token } => {
            let args = fb::UseTokenRequestArgs {
                token: Some(fbb.create_string(token)),
            };
            (
                B::UseTokenRequest,
                fb::UseTokenRequest::create(fbb, &args).as_union_value(),
            )
        }
        Request::Alarm {
            action,
            member_id,
            alarm,
        } => {
            let args = fb::AlarmRequestArgs {
                action: match action {
                    AlarmAction::Get => fb::AlarmAction::Get,
                    AlarmAction::Activate => fb::AlarmAction::Activate,
                    AlarmAction::Deactivate => fb::AlarmAction::Deactivate,
                },
                member_id: *member_id,
                alarm: alarm_type(*alarm),
            };
            (
                B::AlarmRequest,
                fb::AlarmRequest::create(fbb, &args).as_union_value(),
            )
        }
        Request::Leader {
            action,
            shard,
            member_id,
        } => {
            let args = fb::LeaderRequestArgs {
                action: match action {
                    LeaderAction::Move => fb::LeaderAction::Move,
                    LeaderAction::Unpin => fb::LeaderAction::Unpin,
                    LeaderAction::Drain => fb::LeaderAction::Drain,
                    LeaderAction::Undrain => fb::LeaderAction::Undrain,
                },
                shard: *shard,
                member_id: *member_id,
            };
            (
                B::LeaderRequest,
                fb::LeaderRequest::create(fbb, &args).as_union_value(),
            )
        }
        Request::Member {
            action,
            member_id,
            name,
            peer_address,
            learner,
        } => {
            let name = Some(fbb.create_string(name));
            let peer_address = Some(fbb.create_string(peer_address));
            let args = fb::MemberRequestArgs {
                action: match action {
                    MemberAction::List => fb::MemberAction::List,
                    MemberAction::Add => fb::MemberAction::Add,
                    MemberAction::Remove => fb::MemberAction::Remove,
                    MemberAction::Promote => fb::MemberAction::Promote,
                    MemberAction::Update => fb::MemberAction::Update,
                },
                member_id: *member_id,
                name,
                peer_address,
                learner: *learner,
            };
            (
                B::MemberRequest,
                fb::MemberRequest::create(fbb, &args).as_union_value(),
            )
        }
    }
}

fn alarm_type(alarm: AlarmType) -> fb::AlarmType {
    match alarm {
        AlarmType::None => fb::AlarmType::None,
        AlarmType::NoSpace => fb::AlarmType::NoSpace,
        AlarmType::Corrupt => fb::AlarmType::Corrupt,
    }
}

fn alarm_members<'a>(
    fbb: &mut Builder<'a>,
    alarms: &[AlarmMember],
) -> WIPOffset<flatbuffers::Vector<'a, flatbuffers::ForwardsUOffset<fb::AlarmMember<'a>>>> {
    let members: Vec<_> = alarms
        .iter()
        .map(|a| {
            let args = fb::AlarmMemberArgs {
                member_id: a.member_id,
                alarm: alarm_type(a.alarm),
            };
            fb::AlarmMember::create(fbb, &args)
        })
        .collect();
    fbb.create_vector(&members)
}

fn sort_order(order: SortOrder) -> fb::SortOrder {
    match order {
        SortOrder::None => fb::SortOrder::None,
        SortOrder::Ascend => fb::SortOrder::Ascend,
        SortOrder::Descend => fb::SortOrder::Descend,
    }
}

fn sort_target(target: SortTarget) -> fb::SortTarget {
    match target {
        SortTarget::Key => fb::SortTarget::Key,
        SortTarget::Version => fb::SortTarget::Version,
        SortTarget::Create => fb::SortTarget::Create,
        SortTarget::Mod => fb::SortTarget::Mod,
        SortTarget::Value => fb::SortTarget::Value,
    }
}

fn range_request<'a>(fbb: &mut Builder<'a>, r: &RangeRequest) -> WIPOffset<fb::RangeRequest<'a>> {
    let args = fb::RangeRequestArgs {
        key: bytes(fbb, &r.key),
        range_end: bytes(fbb, &r.range_end),
        limit: r.limit,
        revision: r.revision,
        sort_order: sort_order(r.sort_order),
        sort_target: sort_target(r.sort_target),
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
        serializable: r.serializable,
    };
    fb::RangeRequest::create(fbb, &args)
}

fn put_request<'a>(fbb: &mut Builder<'a>, r: &PutRequest) -> WIPOffset<fb::PutRequest<'a>> {
    let args = fb::PutRequestArgs {
        key: bytes(fbb, &r.key),
        value: bytes(fbb, &r.value),
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    };
    fb::PutRequest::create(fbb, &args)
}

fn delete_request<'a>(
    fbb: &mut Builder<'a>,
    r: &DeleteRangeRequest,
) -> WIPOffset<fb::DeleteRangeRequest<'a>> {
    let args = fb::DeleteRangeRequestArgs {
        key: bytes(fbb, &r.key),
        range_end: bytes(fbb, &r.range_end),
        prev_kv: r.prev_kv,
    };
    fb::DeleteRangeRequest::create(fbb, &args)
}

fn compare<'a>(fbb: &mut Builder<'a>, c: &Compare) -> WIPOffset<fb::Compare<'a>> {
    let mut args = fb::CompareArgs {
        key: bytes(fbb, &c.key),
        range_end: bytes(fbb, &c.range_end),
        result: match c.result {
            CompareResult::Equal => fb::CompareResult::Equal,
            CompareResult::NotEqual => fb::CompareResult::NotEqual,
            CompareResult::Less => fb::CompareResult::Less,
            CompareResult::Greater => fb::CompareResult::Greater,
        },
        ..Default::default()
    };
    match &c.target {
        CompareTarget::Version(v) => {
            args.target = fb::CompareTarget::Version;
            args.version = *v;
        }
        CompareTarget::Create(v) => {
            args.target = fb::CompareTarget::Create;
            args.create_revision = *v;
        }
        CompareTarget::Mod(v) => {
            args.target = fb::CompareTarget::Mod;
            args.mod_revision = *v;
        }
        CompareTarget::Value(v) => {
            args.target = fb::CompareTarget::Value;
            // An empty value is still an operand: always present.
            args.value = Some(fbb.create_vector(v));
        }
        CompareTarget::Lease(v) => {
            args.target = fb::CompareTarget::Lease;
            args.lease = *v;
        }
    }
    fb::Compare::create(fbb, &args)
}

fn request_ops<'a>(
    fbb: &mut Builder<'a>,
    ops: &[RequestOp],
) -> WIPOffset<flatbuffers::Vector<'a, flatbuffers::ForwardsUOffset<fb::RequestOp<'a>>>> {
    let mut built = Vec::with_capacity(ops.len());
    for op in ops {
        let (op_type, op) = match op {
            RequestOp::Range(r) => (fb::Op::RangeRequest, range_request(fbb, r).as_union_value()),
            RequestOp::Put(r) => (fb::Op::PutRequest, put_request(fbb, r).as_union_value()),
            RequestOp::DeleteRange(r) => (
                fb::Op::DeleteRangeRequest,
                delete_request(fbb, r).as_union_value(),
            ),
            RequestOp::Txn(r) => (fb::Op::TxnRequest, txn_request(fbb, r).as_union_value()),
        };
        built.push(fb::RequestOp::create(
            fbb,
            &fb::RequestOpArgs {
                op_type,
                op: Some(op),
            },
        ));
    }
    fbb.create_vector(&built)
}

fn txn_request<'a>(fbb: &mut Builder<'a>, r: &TxnRequest) -> WIPOffset<fb::TxnRequest<'a>> {
    let compares: Vec<_> = r.compare.iter().map(|c| compare(fbb, c)).collect();
    let compare = fbb.create_vector(&compares);
    let success = request_ops(fbb, &r.success);
    let failure = request_ops(fbb, &r.failure);
    let args = fb::TxnRequestArgs {
        compare: Some(compare),
        success: Some(success),
        failure: Some(failure),
    };
    fb::TxnRequest::create(fbb, &args)
}

fn response_message(fbb: &mut Builder<'_>, response: &Response) {
    let (body_type, body) = response_body(fbb, &response.body);
    let root = fb::Response::create(
        fbb,
        &fb::ResponseArgs {
            id: response.id,
            revision: response.revision,
            body_type,
            body: Some(body),
        },
    );
    fbb.finish(root, None);
}

/// The response `response` as a flatbuffer (without its frame header).
pub fn encode_response(response: &Response) -> Vec<u8> {
    build(|fbb| response_message(fbb, response), <[u8]>::to_vec)
}

/// Responses whose flatbuffer is expected to be at least this large are
/// built in place (see [`encode_response_frame_within`]).
const IN_PLACE_BYTES: usize = 64 << 10;

/// The largest buffer an answer is built in at once (flatbuffers' own
/// limit is 2 GiB); a larger one grows as it is built.
const MOST_PRESIZED_BYTES: usize = 1 << 30;

/// The response `response`, framed, refused above `max` bytes.
///
/// A large answer (a range of large values) is built in a buffer sized for
/// it once, and its length prefix is written in front of it there: its
/// bytes are written once, into as little fresh memory as it needs. Fresh
/// memory is what such an answer costs most (each page's first touch), and
/// growing the builder by doubling, then copying the message into a frame,
/// took three times as much. Small answers use the thread's builder and
/// are copied out.
///
/// # Errors
/// [`FrameError::TooLarge`] when it is longer than `max`.
pub fn encode_response_frame_within(response: &Response, max: usize) -> Result<Frame, FrameError> {
    let expected = size_hint::response_bytes(&response.body);
    if expected < IN_PLACE_BYTES {
        return build(
            |fbb| response_message(fbb, response),
            |message| encode_frame_within(message, max),
        )
        .map(Frame::from_vec);
    }
    // Room for the prefix in front; no more than the largest frame that
    // is not refused.
    let capacity = expected
        .min(max)
        .saturating_add(FRAME_HEADER_LEN)
        .min(MOST_PRESIZED_BYTES);
    frame_in_place(response, max, capacity)
}

/// `response` built in a buffer of `capacity` bytes (grown if it needs
/// more), framed where it lies when there is room for the prefix in front.
pub(super) fn frame_in_place(
    response: &Response,
    max: usize,
    capacity: usize,
) -> Result<Frame, FrameError> {
    let mut fbb = Builder::with_capacity(capacity);
    response_message(&mut fbb, response);
    let len = fbb.finished_data().len();
    let prefix = u32::try_from(len)
        .ok()
        .filter(|_| len <= max)
        .ok_or(FrameError::TooLarge { len, max })?
        .to_le_bytes();
    let (mut buffer, head) = fbb.collapse();
    let room = head
        .checked_sub(FRAME_HEADER_LEN)
        .and_then(|start| Some((start, buffer.get_mut(start..head)?)));
    match room {
        Some((start, room)) => {
            room.copy_from_slice(&prefix);
            Ok(Frame::starting_at(buffer, start))
        }
        // Less than a prefix in front (the message filled its buffer, or
        // nearly): copy it out.
        None => {
            encode_frame_within(buffer.get(head..).unwrap_or_default(), max).map(Frame::from_vec)
        }
    }
}

fn response_body(
    fbb: &mut Builder<'_>,
    body: &ResponseBody,
) -> (fb::ResponseBody, WIPOffset<UnionWIPOffset>) {
    use fb::ResponseBody as B;
    match body {
        ResponseBody::Range(r) => (B::RangeResponse, range_response(fbb, r).as_union_value()),
        ResponseBody::Put(r) => (B::PutResponse, put_response(fbb, r).as_union_value()),
        ResponseBody::DeleteRange(r) => (
            B::DeleteRangeResponse,
            delete_response(fbb, r).as_union_value(),
        ),
        ResponseBody::Txn(r) => (B::TxnResponse, txn_response(fbb, r).as_union_value()),
        ResponseBody::Compact => {
            let args = fb::CompactResponseArgs {};
            (
                B::CompactResponse,
                fb::CompactResponse::create(fbb, &args).as_union_value(),
            )
        }
        ResponseBody::Watch(w) => {
            let events: Vec<_> = w.events.iter().map(|e| event(fbb, e)).collect();
            let events = (!events.is_empty()).then(|| fbb.create_vector(&events));
            let also_watch_ids =
                (!w.also_watch_ids.is_empty()).then(|| fbb.create_vector(&w.also_watch_ids));
            let args = fb::WatchEventsArgs {
                watch_id: w.watch_id,
                created: w.created,
                canceled: w.canceled,
                compact_revision: w.compact_revision,
                events,
                also_watch_ids,
            };
            (
                B::WatchEvents,
                fb::WatchEvents::create(fbb, &args).as_union_value(),
            )
        }
        ResponseBody::LeaseGrant { id, ttl } => {
            let args = fb::LeaseGrantResponseArgs { id: *id, ttl: *ttl };
            (
                B::LeaseGrantResponse,
                fb::LeaseGrantResponse::create(fbb, &args).as_union_value(),
            )
        }
        ResponseBody::LeaseRevoke => {
            let args = fb::LeaseRevokeResponseArgs {};
            (
                B::LeaseRevokeResponse,
                fb::LeaseRevokeResponse::create(fbb, &args).as_union_value(),
            )
        }
        ResponseBody::LeaseKeepAlive { id, ttl } => {
            let args = fb::LeaseKeepAliveResponseArgs { id: *id, ttl: *ttl };
            (
                B::LeaseKeepAliveResponse,
                fb::LeaseKeepAliveResponse::create(fbb, &args).as_union_value(),
            )
        }
        ResponseBody::LeaseTimeToLive(t) => {
            let keys: Vec<_> = t
                .keys
                .iter()
                .map(|key| {
                    let kv = KeyValue {
                        key: key.clone(),
                        ..KeyValue::default()
                    };
                    key_value(fbb, &kv)
                })
                .collect();
            let keys = (!keys.is_empty()).then(|| fbb.create_vector(&keys));
            let args = fb::LeaseTimeToLiveResponseArgs {
                id: t.id,
                granted_ttl: t.granted_ttl,
                ttl: t.ttl,
                keys,
            };
            (
                B::LeaseTimeToLiveResponse,
                fb::LeaseTimeToLiveResponse::create(fbb, &args).as_union_value(),
            )
        }
        ResponseBody::LeaseLeases(leases) => {
            let leases: Vec<_> = leases
                .iter()
                .map(|l| {
                    fb::LeaseStatus::create(
                        fbb,
                        &fb::LeaseStatusArgs {
                            id: l.id,
                            ttl: l.ttl,
                        },
                    )
                })
                .collect();
            let leases = Some(fbb.create_vector(&leases));
            let args = fb::LeaseLeasesResponseArgs { leases };
            (
                B::LeaseLeasesResponse,
                fb::LeaseLeasesResponse::create(fbb, &args).as_union_value(),
            )
        }
        ResponseBody::Status(s) => (B::StatusResponse, status(fbb, s).as_union_value()),
        ResponseBody::Authenticate { token } => {
            let args = fb::AuthenticateResponseArgs {
                token: Some(fbb.create_string(token)),
            };
            (
                B::AuthenticateResponse,
                fb::AuthenticateResponse::create(fbb, &args).as_union_value(),
            )
        }
        ResponseBody::UseToken => {
            let args = fb::UseTokenResponseArgs {};
            (
                B::UseTokenResponse,
                fb::UseTokenResponse::create(fbb, &args).as_union_value(),
            )
        }
        ResponseBody::Alarm(alarms) => {
            let alarms = Some(alarm_members(fbb, alarms));
            let args = fb::AlarmResponseArgs { alarms };
            (
                B::AlarmResponse,
                fb::AlarmResponse::create(fbb, &args).as_union_value(),
            )
        }
        ResponseBody::Leader { settled } => {
            let args = fb::LeaderResponseArgs { settled: *settled };
            (
                B::LeaderResponse,
                fb::LeaderResponse::create(fbb, &args).as_union_value(),
            )
        }
        ResponseBody::Member {
            member_id,
            members,
            cluster_id,
        } => {
            let members: Vec<_> = members
                .iter()
                .map(|m| {
                    let name = Some(fbb.create_string(&m.name));
                    let peer_address = Some(fbb.create_string(&m.peer_address));
                    let client_address = Some(fbb.create_string(&m.client_address));
                    let args = fb::MemberInfoArgs {
                        id: m.id,
                        name,
                        peer_address,
                        learner: m.learner,
                        started: m.started,
                        client_address,
                    };
                    fb::MemberInfo::create(fbb, &args)
                })
                .collect();
            let members = Some(fbb.create_vector(&members));
            let args = fb::MemberResponseArgs {
                member_id: *member_id,
                members,
                cluster_id: *cluster_id,
            };
            (
                B::MemberResponse,
                fb::MemberResponse::create(fbb, &args).as_union_value(),
            )
        }
        ResponseBody::Error(e) => {
            let message = Some(fbb.create_string(&e.message));
            let args = fb::ErrorArgs {
                code: error_code(e.code),
                message,
                revision: e.revision,
                leader: e.leader,
            };
            (B::Error, fb::Error::create(fbb, &args).as_union_value())
        }
    }
}

fn status<'a>(fbb: &mut Builder<'a>, s: &Status) -> WIPOffset<fb::StatusResponse<'a>> {
    let version = Some(fbb.create_string(&s.version));
    let core_ports = Some(fbb.create_vector(&s.core_ports));
    let shard_info: Vec<_> = s
        .shard_info
        .iter()
        .map(|i| {
            let stopped = (!i.stopped.is_empty()).then(|| fbb.create_string(&i.stopped));
            let voters = Some(fbb.create_vector(&i.voters));
            let learners = Some(fbb.create_vector(&i.learners));
            let avoided = Some(fbb.create_vector(&i.avoided));
            let voters_outgoing = Some(fbb.create_vector(&i.voters_outgoing));
            let args = fb::ShardInfoArgs {
                shard: i.shard,
                core: i.core,
                leader: i.leader,
                raft_index: i.raft_index,
                raft_term: i.raft_term,
                db_size: i.db_size,
                stopped,
                commit_index: i.commit_index,
                applied_index: i.applied_index,
                voters,
                learners,
                pinned_leader: i.pinned_leader,
                avoided,
                voters_outgoing,
            };
            fb::ShardInfo::create(fbb, &args)
        })
        .collect();
    let shard_info = Some(fbb.create_vector(&shard_info));
    let name = Some(fbb.create_string(&s.name));
    let client_address = Some(fbb.create_string(&s.client_address));
    let alarms = Some(alarm_members(fbb, &s.alarms));
    let args = fb::StatusResponseArgs {
        version,
        shards: s.shards,
        cores: s.cores,
        core_ports,
        shard_info,
        member_id: s.member_id,
        name,
        client_address,
        alarms,
    };
    fb::StatusResponse::create(fbb, &args)
}

fn error_code(code: ErrorCode) -> fb::ErrorCode {
    match code {
        ErrorCode::Unknown => fb::ErrorCode::Unknown,
        ErrorCode::BadRequest => fb::ErrorCode::BadRequest,
        ErrorCode::TooLarge => fb::ErrorCode::TooLarge,
        ErrorCode::TooManyOps => fb::ErrorCode::TooManyOps,
        ErrorCode::CrossShardTxn => fb::ErrorCode::CrossShardTxn,
        ErrorCode::Compacted => fb::ErrorCode::Compacted,
        ErrorCode::FutureRevision => fb::ErrorCode::FutureRevision,
        ErrorCode::LeaseNotFound => fb::ErrorCode::LeaseNotFound,
        ErrorCode::LeaseExists => fb::ErrorCode::LeaseExists,
        ErrorCode::KeyNotFound => fb::ErrorCode::KeyNotFound,
        ErrorCode::DuplicateKey => fb::ErrorCode::DuplicateKey,
        ErrorCode::ShardStopped => fb::ErrorCode::ShardStopped,
        ErrorCode::NotLeader => fb::ErrorCode::NotLeader,
        ErrorCode::ShuttingDown => fb::ErrorCode::ShuttingDown,
        ErrorCode::WatchNotFound => fb::ErrorCode::WatchNotFound,
        ErrorCode::NoSpace => fb::ErrorCode::NoSpace,
        ErrorCode::Corrupt => fb::ErrorCode::Corrupt,
        ErrorCode::NoLeader => fb::ErrorCode::NoLeader,
        ErrorCode::OutcomeUnknown => fb::ErrorCode::OutcomeUnknown,
        ErrorCode::Learner => fb::ErrorCode::Learner,
        ErrorCode::PermissionDenied => fb::ErrorCode::PermissionDenied,
        ErrorCode::Unauthenticated => fb::ErrorCode::Unauthenticated,
        ErrorCode::AuthFailed => fb::ErrorCode::AuthFailed,
        ErrorCode::AuthNotEnabled => fb::ErrorCode::AuthNotEnabled,
        ErrorCode::AuthUnavailable => fb::ErrorCode::AuthUnavailable,
    }
}

fn key_value<'a>(fbb: &mut Builder<'a>, kv: &KeyValue) -> WIPOffset<fb::KeyValue<'a>> {
    let args = fb::KeyValueArgs {
        key: bytes(fbb, &kv.key),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
        value: bytes(fbb, &kv.value),
    };
    fb::KeyValue::create(fbb, &args)
}

fn key_values<'a>(
    fbb: &mut Builder<'a>,
    kvs: &[KeyValue],
) -> Option<WIPOffset<flatbuffers::Vector<'a, flatbuffers::ForwardsUOffset<fb::KeyValue<'a>>>>> {
    if kvs.is_empty() {
        return None;
    }
    let built: Vec<_> = kvs.iter().map(|kv| key_value(fbb, kv)).collect();
    Some(fbb.create_vector(&built))
}

fn event<'a>(fbb: &mut Builder<'a>, e: &Event) -> WIPOffset<fb::Event<'a>> {
    let kv = Some(key_value(fbb, &e.kv));
    let prev_kv = e.prev_kv.as_ref().map(|p| key_value(fbb, p));
    let kind = match e.kind {
        EventKind::Put => fb::EventKind::Put,
        EventKind::Delete => fb::EventKind::Delete,
    };
    fb::Event::create(fbb, &fb::EventArgs { kind, kv, prev_kv })
}

fn range_response<'a>(
    fbb: &mut Builder<'a>,
    r: &RangeResponse,
) -> WIPOffset<fb::RangeResponse<'a>> {
    let kvs = key_values(fbb, &r.kvs);
    let args = fb::RangeResponseArgs {
        kvs,
        more: r.more,
        count: r.count,
    };
    fb::RangeResponse::create(fbb, &args)
}

fn put_response<'a>(fbb: &mut Builder<'a>, r: &PutResponse) -> WIPOffset<fb::PutResponse<'a>> {
    let prev_kv = r.prev_kv.as_ref().map(|p| key_value(fbb, p));
    fb::PutResponse::create(fbb, &fb::PutResponseArgs { prev_kv })
}

fn delete_response<'a>(
    fbb: &mut Builder<'a>,
    r: &DeleteRangeResponse,
) -> WIPOffset<fb::DeleteRangeResponse<'a>> {
    let prev_kvs = key_values(fbb, &r.prev_kvs);
    let args = fb::DeleteRangeResponseArgs {
        deleted: r.deleted,
        prev_kvs,
    };
    fb::DeleteRangeResponse::create(fbb, &args)
}

fn txn_response<'a>(fbb: &mut Builder<'a>, r: &TxnResponse) -> WIPOffset<fb::TxnResponse<'a>> {
    let mut built = Vec::with_capacity(r.responses.len());
    for op in &r.responses {
        let (result_type, result) = match op {
            ResponseOp::Range(r) => (
                fb::OpResult::RangeResponse,
                range_response(fbb, r).as_union_value(),
            ),
            ResponseOp::Put(r) => (
                fb::OpResult::PutResponse,
                put_response(fbb, r).as_union_value(),
            ),
            ResponseOp::DeleteRange(r) => (
                fb::OpResult::DeleteRangeResponse,
                delete_response(fbb, r).as_union_value(),
            ),
            ResponseOp::Txn(r) => (
                fb::OpResult::TxnResponse,
                txn_response(fbb, r).as_union_value(),
            ),
        };
        let args = fb::ResponseOpArgs {
            result_type,
            result: Some(result),
        };
        built.push(fb::ResponseOp::create(fbb, &args));
    }
    let responses = Some(fbb.create_vector(&built));
    let args = fb::TxnResponseArgs {
        succeeded: r.succeeded,
        responses,
    };
    fb::TxnResponse::create(fbb, &args)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_build_that_panicked_leaves_nothing_to_the_next_message() {
        let request = Request::Put(PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ..PutRequest::default()
        });
        let mut fresh = Builder::with_capacity(64);
        request_message(&mut fresh, 7, &request);
        let expected = fresh.finished_data().to_vec();
        // A table left half-built by a panic that someone caught, with a
        // field (slot 60) that no request table has.
        let caught = std::panic::catch_unwind(|| {
            build(
                |fbb| {
                    let _table = fbb.start_table();
                    fbb.push_slot::<u64>(60, 99, 0);
                    panic!("half-built");
                },
                |_| (),
            )
        });
        assert!(caught.is_err());
        assert_eq!(encode_request(7, &request), expected);
    }
}
