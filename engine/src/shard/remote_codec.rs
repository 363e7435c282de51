//! The bytes of a request carried to a shard's leader on another member
//! (a write, or a close of a revision for a read across shards), and of
//! the leader's answer (engine/FORMAT.md, "Calls to a leader"). Integers
//! are little-endian; byte strings carry a `u32` length. Decoding checks every length and count against what is left,
//! so bytes damaged past the frame's checksum, or sent by a member of
//! another version, are an error, never a panic or a huge allocation.

use crate::mvcc::{
    Applied, DeleteRangeResponse, Entry, KeyValue, KvError, PutResponse, RangeResponse, Response,
    ResponseOp, Revision, TxnResponse,
};
use crate::shard::entry_codec::{self, DecodeError, Decoded, Reader, Writer, MAX_NESTING};
use crate::shard::error::{NodeError, NodeResult};

/// Version byte of every request and answer written today.
const VERSION: u8 = 1;

/// What a member asks of a shard's leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    /// Propose this write and answer once it applied.
    Write(Entry),
    /// Never stamp `revision` or below again, confirm leadership with a
    /// majority, and answer the log index below which every entry stamped
    /// at or below it lies (a read across shards at `revision`, or a
    /// merged watch, waits for that index; `Replica::close_for`).
    Close(Revision),
    /// Answer how much of the leader's log the learner `member` holds, in
    /// percent (`member promote` waits for 90, as etcd does).
    Progress(u64),
    /// Answer this member's hash of the shard at this revision (any
    /// member, not only the leader; `hash_check.rs`).
    Hash(Revision),
}

/// The bytes of a request: version, kind, then for a write its command
/// with revision 0 (the leader stamps it), for a close the revision.
pub(crate) fn encode_request(request: &Request) -> Vec<u8> {
    let mut out = Writer(Vec::with_capacity(64));
    out.u8(VERSION);
    match request {
        Request::Write(entry) => {
            out.u8(1);
            out.0.extend_from_slice(&entry_codec::encode(0, entry));
        }
        Request::Close(revision) => {
            out.u8(2);
            out.u64(*revision);
        }
        Request::Progress(member) => {
            out.u8(3);
            out.u64(*member);
        }
        Request::Hash(revision) => {
            out.u8(4);
            out.u64(*revision);
        }
    }
    out.0
}

/// Reads what [`encode_request`] wrote.
///
/// # Errors
/// [`DecodeError`] for an unknown version or kind, or bytes that are not
/// a command.
pub(crate) fn decode_request(bytes: &[u8]) -> Decoded<Request> {
    let mut input = Reader(bytes);
    let version = input.u8()?;
    if version != VERSION {
        return Err(DecodeError(format!("unknown request version {version}")));
    }
    match input.u8()? {
        1 => entry_codec::decode(input.0).map(|(_, entry)| Request::Write(entry)),
        2 => {
            let revision = input.u64()?;
            if !input.0.is_empty() {
                return Err(DecodeError("bytes after a close".to_string()));
            }
            if revision >= crate::hlc::REVISION_LIMIT {
                return Err(DecodeError(format!(
                    "a close of revision {revision}, past 2^53"
                )));
            }
            Ok(Request::Close(revision))
        }
        3 => {
            let member = input.u64()?;
            if !input.0.is_empty() {
                return Err(DecodeError("bytes after a progress request".to_string()));
            }
            Ok(Request::Progress(member))
        }
        4 => {
            let revision = input.u64()?;
            if !input.0.is_empty() {
                return Err(DecodeError("bytes after a hash request".to_string()));
            }
            if revision >= crate::hlc::REVISION_LIMIT {
                return Err(DecodeError(format!(
                    "a hash at revision {revision}, past 2^53"
                )));
            }
            Ok(Request::Hash(revision))
        }
        kind => Err(DecodeError(format!("unknown request kind {kind}"))),
    }
}

/// The bytes of a leader's answer to a close: the index, or why not.
pub(crate) fn encode_index_answer(answer: &NodeResult<u64>) -> Vec<u8> {
    let mut out = Writer(Vec::with_capacity(16));
    out.u8(VERSION);
    match answer {
        Ok(index) => {
            out.u8(2);
            out.u64(*index);
        }
        Err(error) => {
            out.u8(1);
            node_error(&mut out, error);
        }
    }
    out.0
}

/// Reads what [`encode_index_answer`] wrote.
///
/// # Errors
/// [`DecodeError`] for anything else.
pub(crate) fn decode_index_answer(bytes: &[u8]) -> Decoded<NodeResult<u64>> {
    let mut input = Reader(bytes);
    let version = input.u8()?;
    if version != VERSION {
        return Err(DecodeError(format!("unknown answer version {version}")));
    }
    let answer = match input.u8()? {
        2 => Ok(input.u64()?),
        1 => Err(read_node_error(&mut input)?),
        tag => return Err(DecodeError(format!("unknown answer tag {tag}"))),
    };
    if !input.0.is_empty() {
        return Err(DecodeError("bytes after the answer".to_string()));
    }
    Ok(answer)
}

/// The bytes of a leader's answer to a carried write.
pub(crate) fn encode_answer(answer: &NodeResult<Applied>) -> Vec<u8> {
    let mut out = Writer(Vec::with_capacity(32));
    out.u8(VERSION);
    match answer {
        Ok(applied) => {
            out.u8(0);
            out.u64(applied.revision);
            response(&mut out, &applied.response);
        }
        Err(error) => {
            out.u8(1);
            node_error(&mut out, error);
        }
    }
    out.0
}

/// Reads what [`encode_answer`] wrote.
///
/// # Errors
/// [`DecodeError`] for an unknown version or tag, a short buffer, or bytes
/// left over.
pub(crate) fn decode_answer(bytes: &[u8]) -> Decoded<NodeResult<Applied>> {
    let mut input = Reader(bytes);
    let version = input.u8()?;
    if version != VERSION {
        return Err(DecodeError(format!("unknown answer version {version}")));
    }
    let answer = match input.u8()? {
        0 => {
            let revision = input.u64()?;
            Ok(Applied {
                revision,
                response: read_response(&mut input)?,
            })
        }
        1 => Err(read_node_error(&mut input)?),
        tag => return Err(DecodeError(format!("unknown answer tag {tag}"))),
    };
    if !input.0.is_empty() {
        return Err(DecodeError(format!(
            "{} bytes after the answer",
            input.0.len()
        )));
    }
    Ok(answer)
}

fn response(out: &mut Writer, response: &Response) {
    match response {
        Response::Put(put) => {
            out.u8(1);
            optional_kv(out, put.prev_kv.as_ref());
        }
        Response::DeleteRange(delete) => {
            out.u8(2);
            out.u64(delete.deleted);
            kvs(out, &delete.prev_kvs);
        }
        Response::Txn(txn) => {
            out.u8(3);
            txn_response(out, txn);
        }
        Response::Compact => out.u8(4),
        Response::LeaseGrant { id, ttl } => {
            out.u8(5);
            out.i64(*id);
            out.i64(*ttl);
        }
        Response::LeaseRevoke => out.u8(6),
        Response::LeaseExpire { revoked } => {
            out.u8(7);
            out.u32(revoked.len() as u32);
            for id in revoked {
                out.i64(*id);
            }
        }
        Response::LeaseCheckpoint => out.u8(8),
        Response::LeaseMirror => out.u8(9),
        Response::LeaseTasksDone => out.u8(10),
        Response::Alarm => out.u8(11),
        Response::Placement => out.u8(12),
        Response::Members => out.u8(13),
        Response::Auth { revision } => {
            out.u8(14);
            out.u64(*revision);
        }
    }
}

fn read_response(input: &mut Reader<'_>) -> Decoded<Response> {
    Ok(match input.u8()? {
        1 => Response::Put(PutResponse {
            prev_kv: read_optional_kv(input)?,
        }),
        2 => Response::DeleteRange(DeleteRangeResponse {
            deleted: input.u64()?,
            prev_kvs: read_kvs(input)?,
        }),
        3 => Response::Txn(read_txn_response(input, 0)?),
        4 => Response::Compact,
        5 => Response::LeaseGrant {
            id: input.i64()?,
            ttl: input.i64()?,
        },
        6 => Response::LeaseRevoke,
        7 => {
            let count = input.count(8)?;
            let revoked = (0..count).map(|_| input.i64()).collect::<Decoded<_>>()?;
            Response::LeaseExpire { revoked }
        }
        8 => Response::LeaseCheckpoint,
        9 => Response::LeaseMirror,
        10 => Response::LeaseTasksDone,
        11 => Response::Alarm,
        12 => Response::Placement,
        13 => Response::Members,
        14 => Response::Auth {
            revision: input.u64()?,
        },
        tag => return Err(DecodeError(format!("unknown response tag {tag}"))),
    })
}

/// A transaction's answer, nested ones pushed depth first without
/// recursion on the encoding side being unbounded: the proposer refused
/// anything nested past [`MAX_NESTING`] before it was logged.
fn txn_response(out: &mut Writer, txn: &TxnResponse) {
    out.u8(u8::from(txn.succeeded));
    out.u32(txn.responses.len() as u32);
    for op in &txn.responses {
        match op {
            ResponseOp::Range(range) => {
                out.u8(1);
                range_response(out, range);
            }
            ResponseOp::Put(put) => {
                out.u8(2);
                optional_kv(out, put.prev_kv.as_ref());
            }
            ResponseOp::DeleteRange(delete) => {
                out.u8(3);
                out.u64(delete.deleted);
                kvs(out, &delete.prev_kvs);
            }
            ResponseOp::Txn(nested) => {
                out.u8(4);
                txn_response(out, nested);
            }
        }
    }
}

fn read_txn_response(input: &mut Reader<'_>, depth: usize) -> Decoded<TxnResponse> {
    if depth >= MAX_NESTING {
        return Err(DecodeError(format!(
            "transaction answers nested past {MAX_NESTING}"
        )));
    }
    let succeeded = match input.u8()? {
        0 => false,
        1 => true,
        v => return Err(DecodeError(format!("bad flag {v}"))),
    };
    let count = input.count(1)?;
    let mut responses = Vec::with_capacity(count);
    for _ in 0..count {
        responses.push(match input.u8()? {
            1 => ResponseOp::Range(read_range_response(input)?),
            2 => ResponseOp::Put(PutResponse {
                prev_kv: read_optional_kv(input)?,
            }),
            3 => ResponseOp::DeleteRange(DeleteRangeResponse {
                deleted: input.u64()?,
                prev_kvs: read_kvs(input)?,
            }),
            4 => ResponseOp::Txn(read_txn_response(input, depth + 1)?),
            tag => return Err(DecodeError(format!("unknown operation answer tag {tag}"))),
        });
    }
    Ok(TxnResponse {
        succeeded,
        responses,
    })
}

fn range_response(out: &mut Writer, range: &RangeResponse) {
    kvs(out, &range.kvs);
    out.u8(u8::from(range.more));
    out.u64(range.count);
}

fn read_range_response(input: &mut Reader<'_>) -> Decoded<RangeResponse> {
    let kvs = read_kvs(input)?;
    let more = match input.u8()? {
        0 => false,
        1 => true,
        v => return Err(DecodeError(format!("bad flag {v}"))),
    };
    Ok(RangeResponse {
        kvs,
        more,
        count: input.u64()?,
    })
}

/// Bytes of a key-value pair with empty key and value.
const KV_MIN_BYTES: usize = 4 + 8 * 4 + 4;

fn kv(out: &mut Writer, kv: &KeyValue) {
    out.bytes(&kv.key);
    out.u64(kv.create_revision);
    out.u64(kv.mod_revision);
    out.u64(kv.version);
    out.i64(kv.lease);
    out.bytes(&kv.value);
}

fn read_kv(input: &mut Reader<'_>) -> Decoded<KeyValue> {
    Ok(KeyValue {
        key: input.bytes()?,
        create_revision: input.u64()?,
        mod_revision: input.u64()?,
        version: input.u64()?,
        lease: input.i64()?,
        value: input.bytes()?,
    })
}

fn kvs(out: &mut Writer, kvs: &[KeyValue]) {
    out.u32(kvs.len() as u32);
    for one in kvs {
        kv(out, one);
    }
}

fn read_kvs(input: &mut Reader<'_>) -> Decoded<Vec<KeyValue>> {
    let count = input.count(KV_MIN_BYTES)?;
    (0..count).map(|_| read_kv(input)).collect()
}

fn optional_kv(out: &mut Writer, kv_or_none: Option<&KeyValue>) {
    match kv_or_none {
        None => out.u8(0),
        Some(one) => {
            out.u8(1);
            kv(out, one);
        }
    }
}

fn read_optional_kv(input: &mut Reader<'_>) -> Decoded<Option<KeyValue>> {
    match input.u8()? {
        0 => Ok(None),
        1 => read_kv(input).map(Some),
        v => Err(DecodeError(format!("bad option tag {v}"))),
    }
}

/// An error, kept as its kind where the caller acts on the kind (a
/// leader moved, an outcome unknown, a compacted or future revision, a
/// lease), and as its message otherwise.
fn node_error(out: &mut Writer, error: &NodeError) {
    match error {
        NodeError::NotLeader { shard, leader } => {
            out.u8(1);
            out.u32(*shard as u32);
            out.u64(*leader);
        }
        NodeError::NoLeader { shard } => {
            out.u8(2);
            out.u32(*shard as u32);
        }
        NodeError::Behind { shard } => {
            out.u8(3);
            out.u32(*shard as u32);
        }
        NodeError::OutcomeUnknown { shard } => {
            out.u8(4);
            out.u32(*shard as u32);
        }
        NodeError::ShardStopped { shard, reason } => {
            out.u8(5);
            out.u32(*shard as u32);
            out.bytes(reason.as_bytes());
        }
        NodeError::Shutdown => out.u8(6),
        NodeError::InvalidRequest(message) => {
            out.u8(7);
            out.bytes(message.as_bytes());
        }
        NodeError::Kv(KvError::Compacted { compact_revision }) => {
            out.u8(10);
            out.u64(*compact_revision);
        }
        NodeError::Kv(KvError::FutureRevision { requested, current }) => {
            out.u8(11);
            out.u64(*requested);
            out.u64(*current);
        }
        NodeError::Kv(KvError::LeaseNotFound(id)) => {
            out.u8(12);
            out.i64(*id);
        }
        NodeError::Kv(KvError::LeaseExists(id)) => {
            out.u8(13);
            out.i64(*id);
        }
        NodeError::Kv(KvError::NoSpace) => out.u8(14),
        NodeError::Kv(KvError::KeyNotFound) => out.u8(15),
        NodeError::Kv(KvError::MembersChanged { base, current }) => {
            out.u8(16);
            out.u64(*base);
            out.u64(*current);
        }
        NodeError::Kv(KvError::Corrupt) => out.u8(17),
        NodeError::Kv(KvError::AuthChanged { base, current }) => {
            out.u8(18);
            out.u64(*base);
            out.u64(*current);
        }
        other => {
            out.u8(255);
            out.bytes(other.to_string().as_bytes());
        }
    }
}

fn read_node_error(input: &mut Reader<'_>) -> Decoded<NodeError> {
    let shard = |input: &mut Reader<'_>| input.u32().map(|s| s as usize);
    Ok(match input.u8()? {
        1 => NodeError::NotLeader {
            shard: shard(input)?,
            leader: input.u64()?,
        },
        2 => NodeError::NoLeader {
            shard: shard(input)?,
        },
        3 => NodeError::Behind {
            shard: shard(input)?,
        },
        4 => NodeError::OutcomeUnknown {
            shard: shard(input)?,
        },
        5 => NodeError::ShardStopped {
            shard: shard(input)?,
            reason: text(input)?,
        },
        6 => NodeError::Shutdown,
        7 => NodeError::InvalidRequest(text(input)?),
        10 => KvError::Compacted {
            compact_revision: input.u64()?,
        }
        .into(),
        11 => KvError::FutureRevision {
            requested: input.u64()?,
            current: input.u64()?,
        }
        .into(),
        12 => KvError::LeaseNotFound(input.i64()?).into(),
        13 => KvError::LeaseExists(input.i64()?).into(),
        14 => KvError::NoSpace.into(),
        15 => KvError::KeyNotFound.into(),
        16 => KvError::MembersChanged {
            base: input.u64()?,
            current: input.u64()?,
        }
        .into(),
        17 => KvError::Corrupt.into(),
        18 => KvError::AuthChanged {
            base: input.u64()?,
            current: input.u64()?,
        }
        .into(),
        255 => NodeError::InvalidRequest(text(input)?),
        tag => return Err(DecodeError(format!("unknown error tag {tag}"))),
    })
}

fn text(input: &mut Reader<'_>) -> Decoded<String> {
    String::from_utf8(input.bytes()?).map_err(|e| DecodeError(format!("not UTF-8: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.as_bytes().to_vec(),
            create_revision: 7,
            mod_revision: 9,
            version: 2,
            lease: -3,
            value: value.as_bytes().to_vec(),
        }
    }

    fn answers() -> Vec<NodeResult<Applied>> {
        let applied = |response| {
            Ok(Applied {
                revision: 1 << 40,
                response,
            })
        };
        let nested = TxnResponse {
            succeeded: true,
            responses: vec![
                ResponseOp::Range(RangeResponse {
                    kvs: vec![pair("a", "1"), pair("b", "")],
                    more: true,
                    count: 5,
                }),
                ResponseOp::Put(PutResponse {
                    prev_kv: Some(pair("c", "x")),
                }),
                ResponseOp::DeleteRange(DeleteRangeResponse {
                    deleted: 1,
                    prev_kvs: vec![pair("d", "y")],
                }),
            ],
        };
        vec![
            applied(Response::Put(PutResponse { prev_kv: None })),
            applied(Response::Put(PutResponse {
                prev_kv: Some(pair("k", "v")),
            })),
            applied(Response::DeleteRange(DeleteRangeResponse {
                deleted: 2,
                prev_kvs: vec![pair("a", "1"), pair("b", "2")],
            })),
            applied(Response::Txn(TxnResponse {
                succeeded: false,
                responses: vec![ResponseOp::Txn(nested)],
            })),
            applied(Response::Compact),
            applied(Response::LeaseGrant { id: 42, ttl: 10 }),
            applied(Response::LeaseRevoke),
            applied(Response::LeaseExpire {
                revoked: vec![1, 2, 3],
            }),
            applied(Response::LeaseCheckpoint),
            applied(Response::LeaseMirror),
            applied(Response::LeaseTasksDone),
            applied(Response::Alarm),
            applied(Response::Placement),
            Err(NodeError::NotLeader {
                shard: 3,
                leader: 0xabc,
            }),
            Err(NodeError::NoLeader { shard: 1 }),
            Err(NodeError::Behind { shard: 2 }),
            Err(NodeError::OutcomeUnknown { shard: 4 }),
            Err(NodeError::ShardStopped {
                shard: 5,
                reason: "fsync failed".to_string(),
            }),
            Err(NodeError::Shutdown),
            Err(KvError::Compacted {
                compact_revision: 99,
            }
            .into()),
            Err(KvError::FutureRevision {
                requested: 10,
                current: 8,
            }
            .into()),
            Err(KvError::LeaseNotFound(12).into()),
            Err(KvError::LeaseExists(13).into()),
            Err(KvError::NoSpace.into()),
            Err(KvError::KeyNotFound.into()),
            Err(KvError::Corrupt.into()),
            Err(KvError::MembersChanged {
                base: 3,
                current: 9,
            }
            .into()),
            Err(KvError::AuthChanged {
                base: 4,
                current: 6,
            }
            .into()),
            Ok(Applied {
                revision: 8,
                response: Response::Auth { revision: 5 },
            }),
            Err(NodeError::InvalidRequest("odd".to_string())),
        ]
    }

    /// Errors compare by what a caller sees: kind and message.
    fn same(a: &NodeResult<Applied>, b: &NodeResult<Applied>) -> bool {
        match (a, b) {
            (Ok(a), Ok(b)) => a == b,
            (Err(a), Err(b)) => {
                std::mem::discriminant(a) == std::mem::discriminant(b)
                    && a.to_string() == b.to_string()
            }
            _ => false,
        }
    }

    #[test]
    fn every_answer_round_trips() {
        for answer in answers() {
            let decoded = decode_answer(&encode_answer(&answer)).unwrap();
            assert!(
                same(&answer, &decoded),
                "{answer:?} came back as {decoded:?}"
            );
        }
    }

    #[test]
    fn an_error_of_another_kind_keeps_its_message() {
        let error = NodeError::Kv(KvError::TooManyOps { count: 9, max: 8 });
        let decoded = decode_answer(&encode_answer(&Err(error))).unwrap();
        match decoded {
            Err(NodeError::InvalidRequest(message)) => {
                assert!(message.contains("too many operations"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_truncation_and_bad_byte_is_an_error_or_another_answer_never_a_panic() {
        for answer in answers() {
            let bytes = encode_answer(&answer);
            for cut in 0..bytes.len() {
                assert!(
                    decode_answer(&bytes[..cut]).is_err(),
                    "{answer:?} cut at {cut}"
                );
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(decode_answer(&longer).is_err());
            for i in 0..bytes.len() {
                for bit in [0x01u8, 0x80] {
                    let mut damaged = bytes.clone();
                    damaged[i] ^= bit;
                    let _ = decode_answer(&damaged);
                }
            }
        }
    }

    #[test]
    fn a_huge_count_is_refused_before_anything_is_allocated() {
        let mut bytes = vec![VERSION, 0];
        bytes.extend_from_slice(&1u64.to_le_bytes());
        bytes.push(2);
        bytes.extend_from_slice(&0u64.to_le_bytes());
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_answer(&bytes).is_err());
    }

    #[test]
    fn requests_round_trip_and_a_write_carries_no_revision() {
        for request in [
            Request::Write(Entry::LeaseGrant { id: 5, ttl: 60 }),
            Request::Close(1 << 44),
            Request::Progress(0xfeed),
            Request::Hash(1 << 44),
        ] {
            let bytes = encode_request(&request);
            assert_eq!(decode_request(&bytes).unwrap(), request);
            for cut in 0..bytes.len() {
                assert!(decode_request(&bytes[..cut]).is_err());
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(decode_request(&longer).is_err());
        }
        let bytes = encode_request(&Request::Write(Entry::LeaseRevoke { id: 1 }));
        assert_eq!(entry_codec::revision_of(&bytes[2..]), Some(0));
    }

    #[test]
    fn a_close_past_the_last_revision_is_refused() {
        let mut bytes = encode_request(&Request::Close(crate::hlc::REVISION_LIMIT));
        assert!(decode_request(&bytes).is_err());
        bytes = encode_request(&Request::Close(u64::MAX));
        assert!(decode_request(&bytes).is_err());
        let last = crate::hlc::REVISION_LIMIT - 1;
        assert_eq!(
            decode_request(&encode_request(&Request::Close(last))).unwrap(),
            Request::Close(last)
        );
    }

    #[test]
    fn index_answers_round_trip() {
        for answer in [Ok(77), Err(NodeError::NoLeader { shard: 2 })] {
            let decoded = decode_index_answer(&encode_index_answer(&answer)).unwrap();
            match (&answer, &decoded) {
                (Ok(a), Ok(b)) => assert_eq!(a, b),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                _ => panic!("{answer:?} came back as {decoded:?}"),
            }
        }
        // An applied answer is not an index, nor the other way round.
        let applied = encode_answer(&Ok(Applied {
            revision: 1,
            response: Response::Compact,
        }));
        assert!(decode_index_answer(&applied).is_err());
        assert!(decode_answer(&encode_index_answer(&Ok(3))).is_err());
    }
}
