//! How many bytes a response's flatbuffer will take, about: enough to
//! build a large answer in a buffer sized once, without the builder
//! doubling (and copying) its buffer on the way.
//!
//! The hint is never low (a low one makes the builder double and copy)
//! and only a little high: each key-value pays its bytes plus
//! [`PER_KEY_VALUE`] for its table, two vector headers and padding.

use crate::types::*;

/// Flatbuffer bytes of one key-value beyond its key and value, at most:
/// the table (four 8-byte fields, two offsets, the vtable offset and
/// padding to 8: 48), two byte-vector length words with up to 3 bytes of
/// padding each (14), and the list's offset to it (4).
const PER_KEY_VALUE: usize = 66;

/// Flatbuffer bytes of one key in a lease's key list beyond its bytes:
/// the key table (vtable offset, one offset, padding: 12), the byte
/// vector's length word and padding (7), the list's offset to it (4).
const PER_LEASE_KEY: usize = 24;

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
            .map(|e| {
                key_value(&e.kv)
                    .saturating_add(e.prev_kv.as_ref().map_or(0, key_value))
                    .saturating_add(32)
            })
            .fold(
                w.also_watch_ids.len().saturating_mul(8),
                usize::saturating_add,
            ),
        ResponseBody::LeaseTimeToLive(t) => t
            .keys
            .iter()
            .map(|k| k.len().saturating_add(PER_LEASE_KEY))
            .fold(0, usize::saturating_add),
        ResponseBody::LeaseLeases(leases) => leases.len().saturating_mul(32),
        ResponseBody::Alarm(alarms) => alarms.len().saturating_mul(32),
        ResponseBody::Leader { .. } => 0,
        ResponseBody::Member { members, .. } => members
            .iter()
            .map(|m| m.name.len() + m.peer_address.len() + m.client_address.len() + 48)
            .fold(0, usize::saturating_add),
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
            let bytes = match op {
                ResponseOp::Range(r) => key_values(&r.kvs),
                ResponseOp::Put(r) => r.prev_kv.as_ref().map_or(0, key_value),
                ResponseOp::DeleteRange(r) => key_values(&r.prev_kvs),
                ResponseOp::Txn(nested) => txn(nested),
            };
            bytes.saturating_add(32)
        })
        .fold(0, usize::saturating_add)
}
