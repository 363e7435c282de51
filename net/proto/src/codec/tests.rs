use super::*;
use crate::frame::{FrameDecoder, FrameError, FRAME_HEADER_LEN};
use crate::types::*;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.as_bytes().to_vec(),
        create_revision: 7,
        mod_revision: 9,
        version: 2,
        lease: 42,
        value: value.as_bytes().to_vec(),
    }
}

fn every_request() -> Vec<Request> {
    let range = RangeRequest {
        key: b"a".to_vec(),
        range_end: b"b".to_vec(),
        limit: 3,
        revision: 5,
        sort_order: SortOrder::Descend,
        sort_target: SortTarget::Mod,
        keys_only: true,
        count_only: false,
        min_mod_revision: 1,
        max_mod_revision: 2,
        min_create_revision: 3,
        max_create_revision: 4,
        serializable: true,
    };
    let put = PutRequest {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        lease: 7,
        prev_kv: true,
        ignore_value: false,
        ignore_lease: true,
    };
    let delete = DeleteRangeRequest {
        key: b"a".to_vec(),
        range_end: vec![0],
        prev_kv: true,
    };
    let compares = vec![
        Compare {
            key: b"a".to_vec(),
            range_end: Vec::new(),
            target: CompareTarget::Value(Vec::new()),
            result: CompareResult::Equal,
        },
        Compare {
            key: b"b".to_vec(),
            range_end: b"c".to_vec(),
            target: CompareTarget::Mod(12),
            result: CompareResult::Greater,
        },
        Compare {
            key: b"b".to_vec(),
            range_end: Vec::new(),
            target: CompareTarget::Version(0),
            result: CompareResult::Less,
        },
        Compare {
            key: b"b".to_vec(),
            range_end: Vec::new(),
            target: CompareTarget::Create(3),
            result: CompareResult::NotEqual,
        },
        Compare {
            key: b"b".to_vec(),
            range_end: Vec::new(),
            target: CompareTarget::Lease(-1),
            result: CompareResult::Equal,
        },
    ];
    let nested = TxnRequest {
        compare: compares.clone(),
        success: vec![RequestOp::Put(put.clone())],
        failure: vec![],
    };
    let txn = TxnRequest {
        compare: compares,
        success: vec![
            RequestOp::Range(range.clone()),
            RequestOp::Put(put.clone()),
            RequestOp::DeleteRange(delete.clone()),
            RequestOp::Txn(nested),
        ],
        failure: vec![RequestOp::Range(RangeRequest::default())],
    };
    vec![
        Request::Range(range),
        Request::Put(put),
        Request::DeleteRange(delete),
        Request::Txn(txn),
        Request::Compact { revision: 99 },
        Request::WatchCreate(WatchCreate {
            key: b"w".to_vec(),
            range_end: b"x".to_vec(),
            start_revision: 4,
            prev_kv: true,
            no_put: true,
            no_delete: false,
            progress_notify: true,
            shared_frames: true,
        }),
        Request::WatchCancel { watch_id: 8 },
        Request::WatchProgress,
        Request::LeaseGrant { id: 5, ttl: 60 },
        Request::LeaseRevoke { id: 5 },
        Request::LeaseKeepAlive { id: 5 },
        Request::LeaseTimeToLive { id: 5, keys: true },
        Request::LeaseLeases,
        Request::Status,
        Request::Authenticate {
            name: "alice".into(),
            password: "secret".into(),
        },
        Request::UseToken {
            token: "keel1.abc.def".into(),
        },
        Request::Alarm {
            action: AlarmAction::Get,
            member_id: 0,
            alarm: AlarmType::None,
        },
        Request::Alarm {
            action: AlarmAction::Deactivate,
            member_id: 0x8e9e_05c5_2164_694d,
            alarm: AlarmType::NoSpace,
        },
        Request::Leader {
            action: LeaderAction::Move,
            shard: 3,
            member_id: 0x8e9e_05c5_2164_694d,
        },
        Request::Leader {
            action: LeaderAction::Move,
            shard: ALL_SHARDS,
            member_id: 7,
        },
        Request::Leader {
            action: LeaderAction::Unpin,
            shard: 0,
            member_id: 0,
        },
        Request::Leader {
            action: LeaderAction::Drain,
            shard: 0,
            member_id: 9,
        },
        Request::Leader {
            action: LeaderAction::Undrain,
            shard: 0,
            member_id: 9,
        },
        Request::Member {
            action: MemberAction::List,
            member_id: 0,
            name: String::new(),
            peer_address: String::new(),
            learner: false,
        },
        Request::Member {
            action: MemberAction::Add,
            member_id: 0,
            name: "infra4".into(),
            peer_address: "10.0.0.4:2380".into(),
            learner: true,
        },
        Request::Member {
            action: MemberAction::Remove,
            member_id: 0x8e9e_05c5_2164_694d,
            name: String::new(),
            peer_address: String::new(),
            learner: false,
        },
        Request::Member {
            action: MemberAction::Promote,
            member_id: 5,
            name: String::new(),
            peer_address: String::new(),
            learner: false,
        },
        Request::Member {
            action: MemberAction::Update,
            member_id: 5,
            name: String::new(),
            peer_address: "10.0.0.5:2380".into(),
            learner: false,
        },
    ]
}

fn every_response_body() -> Vec<ResponseBody> {
    let range = RangeResponse {
        kvs: vec![kv("a", "1"), kv("b", "")],
        more: true,
        count: 10,
    };
    let put = PutResponse {
        prev_kv: Some(kv("k", "old")),
    };
    let delete = DeleteRangeResponse {
        deleted: 2,
        prev_kvs: vec![kv("a", "1")],
    };
    let txn = TxnResponse {
        succeeded: true,
        responses: vec![
            ResponseOp::Range(range.clone()),
            ResponseOp::Put(put.clone()),
            ResponseOp::DeleteRange(delete.clone()),
            ResponseOp::Txn(TxnResponse::default()),
        ],
    };
    vec![
        ResponseBody::Range(range),
        ResponseBody::Put(put),
        ResponseBody::Put(PutResponse::default()),
        ResponseBody::DeleteRange(delete),
        ResponseBody::Txn(txn),
        ResponseBody::Compact,
        ResponseBody::Watch(WatchEvents {
            watch_id: 3,
            created: true,
            canceled: true,
            compact_revision: 17,
            also_watch_ids: vec![4, 9],
            events: vec![
                Event {
                    kind: EventKind::Put,
                    kv: kv("a", "1"),
                    prev_kv: Some(kv("a", "0")),
                },
                Event {
                    kind: EventKind::Delete,
                    kv: KeyValue {
                        key: b"a".to_vec(),
                        mod_revision: 20,
                        ..KeyValue::default()
                    },
                    prev_kv: None,
                },
            ],
        }),
        ResponseBody::LeaseGrant { id: 5, ttl: 60 },
        ResponseBody::LeaseRevoke,
        ResponseBody::LeaseKeepAlive { id: 5, ttl: 0 },
        ResponseBody::LeaseTimeToLive(LeaseTimeToLive {
            id: 5,
            granted_ttl: 60,
            ttl: 59,
            keys: vec![b"a".to_vec(), b"b".to_vec()],
        }),
        ResponseBody::LeaseLeases(vec![LeaseStatus { id: 1, ttl: 2 }]),
        ResponseBody::LeaseLeases(vec![]),
        ResponseBody::Alarm(vec![]),
        ResponseBody::Alarm(vec![AlarmMember {
            member_id: 1,
            alarm: AlarmType::NoSpace,
        }]),
        ResponseBody::Leader { settled: true },
        ResponseBody::Leader { settled: false },
        ResponseBody::Member {
            member_id: 0,
            members: Vec::new(),
            cluster_id: 0,
        },
        ResponseBody::Member {
            member_id: 9,
            cluster_id: 0xc1,
            members: vec![
                MemberInfo {
                    id: 9,
                    name: "infra4".into(),
                    peer_address: "10.0.0.4:2380".into(),
                    learner: true,
                    started: false,
                    client_address: String::new(),
                },
                MemberInfo {
                    id: 1,
                    name: "default".into(),
                    peer_address: "127.0.0.1:2380".into(),
                    learner: false,
                    started: true,
                    client_address: "127.0.0.1:2379".into(),
                },
            ],
        },
        ResponseBody::Status(Status {
            version: "0.1.0".into(),
            shards: 4,
            cores: 2,
            core_ports: vec![2380, 2381],
            shard_info: vec![
                ShardInfo {
                    shard: 1,
                    core: 1,
                    leader: 1,
                    raft_index: 100,
                    raft_term: 2,
                    db_size: 4096,
                    stopped: String::new(),
                    commit_index: 99,
                    applied_index: 98,
                    voters: vec![1, 2, 3],
                    learners: vec![4],
                    pinned_leader: 2,
                    avoided: vec![3],
                    voters_outgoing: vec![1, 2],
                },
                ShardInfo {
                    shard: 2,
                    stopped: "WAL: fdatasync failed".into(),
                    ..ShardInfo::default()
                },
            ],
            member_id: 1,
            name: "default".into(),
            client_address: "127.0.0.1:2379".into(),
            alarms: vec![AlarmMember {
                member_id: 7,
                alarm: AlarmType::NoSpace,
            }],
        }),
        ResponseBody::Error(ErrorBody {
            code: ErrorCode::Compacted,
            message: "compacted".into(),
            revision: 12,
            leader: 0,
        }),
        ResponseBody::Error(ErrorBody {
            code: ErrorCode::NotLeader,
            message: "not led here".into(),
            revision: 0,
            leader: 0xfeed_f00d,
        }),
        ResponseBody::Error(ErrorBody {
            code: ErrorCode::Learner,
            message: "rpc not supported for learner".into(),
            revision: 0,
            leader: 0,
        }),
        ResponseBody::Authenticate {
            token: "keel1.abc.def".into(),
        },
        ResponseBody::UseToken,
        ResponseBody::Error(ErrorBody {
            code: ErrorCode::PermissionDenied,
            message: "etcdserver: permission denied".into(),
            revision: 0,
            leader: 0,
        }),
        ResponseBody::Error(ErrorBody {
            code: ErrorCode::Unauthenticated,
            message: "etcdserver: invalid auth token".into(),
            revision: 0,
            leader: 0,
        }),
        ResponseBody::Error(ErrorBody {
            code: ErrorCode::AuthNotEnabled,
            message: "etcdserver: authentication is not enabled".into(),
            revision: 0,
            leader: 0,
        }),
        ResponseBody::Error(ErrorBody {
            code: ErrorCode::AuthUnavailable,
            message: "not read yet".into(),
            revision: 0,
            leader: 0,
        }),
        ResponseBody::Error(ErrorBody {
            code: ErrorCode::AuthFailed,
            message: "etcdserver: authentication failed, invalid user ID or password".into(),
            revision: 0,
            leader: 0,
        }),
    ]
}

#[test]
fn every_request_round_trips() {
    for (id, request) in every_request().into_iter().enumerate() {
        let bytes = encode_request(id as u64, &request);
        assert_eq!(decode_request(&bytes), Ok((id as u64, request)));
    }
}

#[test]
fn every_response_round_trips() {
    for (id, body) in every_response_body().into_iter().enumerate() {
        let response = Response {
            id: id as u64,
            revision: 1000 + id as u64,
            body,
        };
        let bytes = encode_response(&response);
        assert_eq!(decode_response(&bytes), Ok(response));
    }
}

#[test]
fn framed_messages_are_the_messages_with_their_length_whatever_came_before() {
    // The thread's builder is reused: a message built after a large one,
    // or after one of another kind, must not carry anything of it.
    let large = Response {
        id: 1,
        revision: 2,
        body: ResponseBody::Range(RangeResponse {
            kvs: vec![kv("big", &"x".repeat(200 << 10))],
            more: false,
            count: 1,
        }),
    };
    let small = Response {
        id: 3,
        revision: 4,
        body: ResponseBody::Range(RangeResponse::default()),
    };
    for response in [&large, &small, &large, &small] {
        let frame = encode_response_frame_within(response, 1 << 20).unwrap();
        let mut frames = FrameDecoder::with_limit(1 << 20);
        frames.extend(&frame);
        let message = frames.next_frame().unwrap().unwrap();
        assert_eq!(decode_response(&message), Ok(response.clone()));
        assert_eq!(frames.next_frame(), Ok(None));
    }
    assert!(encode_response_frame_within(&large, 100 << 10).is_err());
    for (id, request) in every_request().into_iter().enumerate() {
        let frame = encode_request_frame(id as u64, &request).unwrap();
        assert_eq!(
            frame.len(),
            FRAME_HEADER_LEN + encode_request(id as u64, &request).len()
        );
        let mut frames = FrameDecoder::new();
        frames.extend(&frame);
        let message = frames.next_frame().unwrap().unwrap();
        assert_eq!(decode_request(&message), Ok((id as u64, request)));
    }
}

#[test]
fn a_request_of_an_unknown_operation_is_refused_with_its_id() {
    use crate::generated::keel::proto as fb;
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let status = fb::StatusRequest::create(&mut fbb, &fb::StatusRequestArgs {});
    let request = fb::Request::create(
        &mut fbb,
        &fb::RequestArgs {
            id: 77,
            body_type: fb::RequestBody(200),
            body: Some(status.as_union_value()),
        },
    );
    fbb.finish(request, None);
    let error = decode_request(fbb.finished_data()).unwrap_err();
    assert_eq!(error.id, Some(77));
    assert!(error.message.contains("unknown operation 200"), "{error}");

    // No body at all.
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let request = fb::Request::create(
        &mut fbb,
        &fb::RequestArgs {
            id: 78,
            ..Default::default()
        },
    );
    fbb.finish(request, None);
    let error = decode_request(fbb.finished_data()).unwrap_err();
    assert_eq!(error.id, Some(78));
}

#[test]
fn mutated_and_random_messages_decode_or_fail_without_panicking() {
    let mut rng = StdRng::seed_from_u64(7);
    let originals: Vec<Vec<u8>> = every_request()
        .iter()
        .map(|r| encode_request(1, r))
        .collect();
    let mut decoded = 0;
    for round in 0..20_000 {
        let mut bytes = originals[round % originals.len()].clone();
        match rng.next_u64() % 3 {
            0 => {
                for _ in 0..1 + rng.next_u64() % 4 {
                    let at = rng.next_u64() as usize % bytes.len();
                    bytes[at] = rng.next_u64() as u8;
                }
            }
            1 => bytes.truncate(rng.next_u64() as usize % bytes.len()),
            _ => {
                let len = rng.next_u64() as usize % 200;
                bytes = (0..len).map(|_| rng.next_u64() as u8).collect();
            }
        }
        if decode_request(&bytes).is_ok() {
            decoded += 1;
        }
        let _ = decode_response(&bytes);
        let mut frames = FrameDecoder::new();
        frames.extend(&bytes);
        while let Ok(Some(frame)) = frames.next_frame() {
            let _ = decode_request(&frame);
        }
    }
    // Some single-byte changes leave a valid message (a changed flag).
    assert!(decoded > 0);
}

/// Large answers of every kind that carries keys, with keys and values of
/// odd lengths (so padding shows), few large or many small.
fn large_response_bodies() -> Vec<ResponseBody> {
    let big = |i: usize| kv(&"k".repeat(i * 7 + 1), &"v".repeat((40 << 10) + i * 13));
    let kvs: Vec<KeyValue> = (0..5).map(big).collect();
    let small: Vec<KeyValue> = (0..3_000u64)
        .map(|i| KeyValue {
            key: format!("{i}").into_bytes(),
            create_revision: i,
            mod_revision: i + 1,
            version: 1,
            lease: 7,
            value: vec![b'v'; (i % 3) as usize],
        })
        .collect();
    let range = RangeResponse {
        kvs: kvs.clone(),
        more: true,
        count: 9,
    };
    let put = PutResponse {
        prev_kv: Some(kv("p", &"o".repeat((96 << 10) + 3))),
    };
    let delete = DeleteRangeResponse {
        deleted: 5,
        prev_kvs: kvs.clone(),
    };
    let nested = TxnResponse {
        succeeded: false,
        responses: vec![ResponseOp::DeleteRange(delete.clone())],
    };
    vec![
        ResponseBody::Range(range.clone()),
        ResponseBody::Range(RangeResponse {
            kvs: small,
            more: false,
            count: 3_000,
        }),
        ResponseBody::Put(put.clone()),
        ResponseBody::DeleteRange(delete),
        ResponseBody::Txn(TxnResponse {
            succeeded: true,
            responses: vec![
                ResponseOp::Range(range),
                ResponseOp::Put(put),
                ResponseOp::Txn(nested),
            ],
        }),
        ResponseBody::Watch(WatchEvents {
            watch_id: 1,
            events: kvs
                .iter()
                .map(|kv| Event {
                    kind: EventKind::Put,
                    kv: kv.clone(),
                    prev_kv: Some(kv.clone()),
                })
                .collect(),
            ..WatchEvents::default()
        }),
        ResponseBody::LeaseTimeToLive(LeaseTimeToLive {
            id: 3,
            granted_ttl: 4,
            ttl: 5,
            keys: (0..12_000u32)
                .map(|i| format!("{i:0>5}").into_bytes())
                .collect(),
        }),
    ]
}

/// `message` with its length prefix, as a frame must read.
fn framed(message: &[u8]) -> Vec<u8> {
    let mut frame = (message.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(message);
    frame
}

#[test]
fn large_answers_are_sized_once_and_framed_in_place() {
    for (id, body) in large_response_bodies().into_iter().enumerate() {
        let hint = size_hint::response_bytes(&body);
        let response = Response {
            id: id as u64,
            revision: 7,
            body,
        };
        let message = encode_response(&response);
        assert!(hint >= 64 << 10, "{id}: takes the in-place path");
        // Never low: a low hint makes the builder double and copy; only a
        // little high: the excess is memory the answer holds.
        assert!(hint >= message.len(), "{id}: {hint} < {}", message.len());
        assert!(
            hint <= message.len() + message.len() / 4 + (1 << 10),
            "{id}: {hint} far above {}",
            message.len()
        );
        let frame = encode_response_frame_within(&response, 1 << 20).unwrap();
        assert_eq!(frame.as_bytes(), framed(&message), "{id}");
        let mut frames = FrameDecoder::with_limit(1 << 20);
        frames.extend(&frame);
        let decoded = frames.next_frame().unwrap().unwrap();
        assert_eq!(decode_response(&decoded), Ok(response.clone()));
        let refused = encode_response_frame_within(&response, message.len() - 1);
        assert!(matches!(refused, Err(FrameError::TooLarge { .. })));
    }
}

#[test]
fn a_frame_built_in_place_is_the_same_whatever_room_its_buffer_had() {
    let response = Response {
        id: 1,
        revision: 2,
        body: large_response_bodies().swap_remove(0),
    };
    let message = encode_response(&response);
    let expected = framed(&message);
    // Too small (the builder grows), exactly the message (no room for the
    // prefix), short of the prefix, just enough, and more.
    for capacity in [
        1 << 10,
        message.len(),
        message.len() + 2,
        message.len() + 4,
        1 << 20,
    ] {
        let frame = super::encode::frame_in_place(&response, 1 << 20, capacity).unwrap();
        assert_eq!(frame.as_bytes(), expected, "capacity {capacity}");
    }
    let refused = super::encode::frame_in_place(&response, message.len() - 1, 1 << 20);
    assert!(matches!(refused, Err(FrameError::TooLarge { .. })));
}
