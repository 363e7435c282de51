//! The field numbers and types of etcd's wire format, pinned by bytes
//! written out by hand from etcd's published definitions: a definition in
//! `proto/` that drifts from etcd's fails here, not in a client.

use keel_etcd_api::etcdserverpb::{
    compare, request_op, watch_request, Compare, PutRequest, RangeRequest, RequestOp,
    StatusResponse, TxnRequest, WatchCreateRequest, WatchRequest, WatchResponse,
};
use keel_etcd_api::mvccpb::{event::EventType, Event, KeyValue};
use prost::Message;

#[test]
fn a_put_is_key_1_value_2_lease_3_prev_kv_4() {
    let put = PutRequest {
        key: b"a".to_vec(),
        value: b"1".to_vec(),
        lease: 5,
        prev_kv: true,
        ..PutRequest::default()
    };
    let bytes = [0x0a, 1, b'a', 0x12, 1, b'1', 0x18, 5, 0x20, 1];
    assert_eq!(put.encode_to_vec(), bytes);
    assert_eq!(PutRequest::decode(&bytes[..]).unwrap(), put);
}

#[test]
fn a_range_keeps_serializable_at_7_and_the_revision_filters_at_10_to_13() {
    let range = RangeRequest {
        key: b"k".to_vec(),
        range_end: b"l".to_vec(),
        limit: 2,
        sort_order: 2,
        serializable: true,
        keys_only: true,
        max_create_revision: 9,
        ..RangeRequest::default()
    };
    let bytes = [
        0x0a, 1, b'k', 0x12, 1, b'l', 0x18, 2, 0x28, 2, 0x38, 1, 0x40, 1, 0x68, 9,
    ];
    assert_eq!(range.encode_to_vec(), bytes);
}

#[test]
fn a_watch_create_is_field_1_of_the_request_with_prev_kv_6_and_fragment_8() {
    let watch = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: b"a".to_vec(),
                start_revision: 7,
                prev_kv: true,
                fragment: true,
                ..WatchCreateRequest::default()
            },
        )),
    };
    let bytes = [0x0a, 9, 0x0a, 1, b'a', 0x18, 7, 0x30, 1, 0x40, 1];
    assert_eq!(watch.encode_to_vec(), bytes);
}

#[test]
fn a_watch_answer_carries_its_events_at_11() {
    let answer = WatchResponse {
        watch_id: 3,
        events: vec![Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue {
                key: b"a".to_vec(),
                mod_revision: 4,
                ..KeyValue::default()
            }),
            prev_kv: None,
        }],
        ..WatchResponse::default()
    };
    // watch_id (2), then event (11): type (1) = 1, kv (2) = {key, mod_revision (3)}.
    let bytes = [0x10, 3, 0x5a, 9, 0x08, 1, 0x12, 5, 0x0a, 1, b'a', 0x18, 4];
    assert_eq!(answer.encode_to_vec(), bytes);
}

#[test]
fn a_compare_keeps_its_range_end_at_64() {
    let txn = TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Mod as i32,
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
            target_union: Some(compare::TargetUnion::ModRevision(0)),
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: b"a".to_vec(),
                ..PutRequest::default()
            })),
        }],
        failure: Vec::new(),
    };
    // compare (1) = {target (2) = 2, key (3), mod_revision (6) = 0 (set:
    // a oneof member is written even at its default), range_end (64)};
    // success (2) = {request_put (2) = {key}}.
    let bytes = [
        0x0a, 11, 0x10, 2, 0x1a, 1, b'a', 0x30, 0, 0x82, 0x04, 1, b'b', 0x12, 5, 0x12, 3, 0x0a, 1,
        b'a',
    ];
    assert_eq!(txn.encode_to_vec(), bytes);
}

#[test]
fn a_status_keeps_is_learner_at_10_and_etcd_3_6_s_quota_at_12() {
    let status = StatusResponse {
        version: "3.5.0".to_string(),
        is_learner: true,
        db_size_quota: 1,
        ..StatusResponse::default()
    };
    let mut bytes = vec![0x12, 5];
    bytes.extend_from_slice(b"3.5.0");
    bytes.extend_from_slice(&[0x50, 1, 0x60, 1]);
    assert_eq!(status.encode_to_vec(), bytes);
}
