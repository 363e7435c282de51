//! How many bytes a response's flatbuffer will take, about: enough to
//! build a large answer in a buffer sized once, without the builder
//! doubling (and copying) its buffer on the way.
//!
//! The hint may be a little high, never far low for answers dominated by
//! keys and values: each key-value pays its bytes plus [`PER_KEY_VALUE`]
//! for its table, vtable offset, two vector headers and padding.

use crate::types::*;

/// Flatbuffer bytes of one key-value beyond its key and value: the table
/// (four 8-byte fields, two offsets, the vtable offset), two byte-vector
/// length words, the list's offset to it and alignment padding.
const PER_KEY_VALUE: usize = 96;

/// Bytes of a message's fixed part: root, header fields, vtables.
const FIXED: usize = 256;

/// About how many bytes `body` encodes to, inside its response.
pub(crate) fn response_bytes(body: &ResponseBody) -> usize {
    FIXED.saturating_add(body_bytes(body))
}

fn body_bytes(body: &ResponseBody) -> usize {
    match body {
        ResponseBody::Range(r) => key_values(&r.kvs),
        ResponseBody::Put(r) => r.prev_kv.as_ref().map_or(0, key_value),
        ResponseBody::DeleteRange(r) => key_values(&r.prev_kvs),
        ResponseBody::Txn(r) => txn(r),
        ResponseBody::Watch(w) => w
            .events
            .iter()
            .map(|e| key_value(&e.kv) + e.prev_kv.as_ref().map_or(0, key_value) + 32)
            .fold(w.also_watch_ids.len() * 8, usize::saturating_add),
        ResponseBody::LeaseTimeToLive(t) => t
            .keys
            .iter()
            .map(|k| k.len() + 8)
            .fold(0, usize::saturating_add),
        ResponseBody::LeaseLeases(leases) => leases.len() * 32,
        ResponseBody::Alarm(alarms) => alarms.len() * 32,
        ResponseBody::Error(e) => e.message.len(),
        _ => 0,
    }
}

fn key_value(kv: &KeyValue) -> usize {
    kv.key
        .len()
        .saturating_add(kv.value.len())
        .saturating_add(PER_KEY_VALUE)
}

fn key_values(kvs: &[KeyValue]) -> usize {
    kvs.iter().map(key_value).fold(0, usize::saturating_add)
}

fn txn(r: &TxnResponse) -> usize {
    r.responses
        .iter()
        .map(|op| {
            32 + match op {
                ResponseOp::Range(r) => key_values(&r.kvs),
                ResponseOp::Put(r) => r.prev_kv.as_ref().map_or(0, key_value),
                ResponseOp::DeleteRange(r) => key_values(&r.prev_kvs),
                ResponseOp::Txn(nested) => txn(nested),
            }
        })
        .fold(0, usize::saturating_add)
}
