//! The bytes of a keel command inside a Raft entry's `data`: the revision
//! the leader chose and the [`Entry`] to apply (engine/FORMAT.md, "Raft
//! log"). Integers are little-endian; byte strings carry a `u32` length.
//! Decoding checks every length against what is left, so a damaged entry is
//! an error, never a panic or a huge allocation.

use crate::mvcc::{
    AlarmAction, AlarmKind, AuthChange, Compare, CompareResult, CompareTarget, DeleteRangeRequest,
    Entry, LeaseTask, LeaseTaskKind, MemberRecord, MembersChange, PlacementChange, PutRequest,
    RangeRequest, RequestOp, Revision, SortOrder, SortTarget, TxnRequest,
};

/// Version byte of every command written today: 2 since revisions are
/// below 2^53 (version 1 carried `unix_millis << 16` revisions and is
/// refused).
const COMMAND_VERSION: u8 = 2;
/// Transactions nest at most this deep in a command. The keyspace refuses
/// (with `TooManyOps`) anything nested deeper than its op budget allows,
/// about 130 levels, but only when it applies the entry; the proposer
/// refuses deeper ones before they are logged ([`nesting_depth`]), so the
/// decoder accepts everything that can reach the log.
pub const MAX_NESTING: usize = 160;

/// A command that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad command in a Raft entry: {0}")]
pub struct DecodeError(pub String);

pub(crate) type Decoded<T> = Result<T, DecodeError>;

/// How deep `entry`'s transactions nest (0 for anything but a
/// transaction), counted without recursion, so a hostile request cannot
/// overflow the stack here. Stops counting past [`MAX_NESTING`].
pub fn nesting_depth(entry: &Entry) -> usize {
    let Entry::Txn(txn) = entry else {
        return 0;
    };
    let mut deepest = 0;
    let mut pending = vec![(txn, 1usize)];
    while let Some((txn, depth)) = pending.pop() {
        deepest = deepest.max(depth);
        if depth > MAX_NESTING {
            break;
        }
        for op in txn.success.iter().chain(&txn.failure) {
            if let RequestOp::Txn(nested) = op {
                pending.push((nested, depth + 1));
            }
        }
    }
    deepest
}

/// Encodes `entry` at `revision`.
pub fn encode(revision: Revision, entry: &Entry) -> Vec<u8> {
    let mut out = Writer(Vec::with_capacity(64));
    out.u8(COMMAND_VERSION);
    out.u64(revision);
    match entry {
        Entry::Put(put) => {
            out.u8(1);
            out.put(put);
        }
        Entry::DeleteRange(delete) => {
            out.u8(2);
            out.delete(delete);
        }
        Entry::Txn(txn) => {
            out.u8(3);
            out.txn(txn);
        }
        Entry::Compact { revision } => {
            out.u8(4);
            out.u64(*revision);
        }
        Entry::LeaseGrant { id, ttl } => {
            out.u8(5);
            out.i64(*id);
            out.i64(*ttl);
        }
        Entry::LeaseRevoke { id } => {
            out.u8(6);
            out.i64(*id);
        }
        Entry::LeaseExpire { ids } => {
            out.u8(7);
            out.u32(ids.len() as u32);
            for id in ids {
                out.i64(*id);
            }
        }
        Entry::LeaseCheckpoint { checkpoints } => {
            out.u8(8);
            out.u32(checkpoints.len() as u32);
            for (id, remaining) in checkpoints {
                out.i64(*id);
                out.i64(*remaining);
            }
        }
        Entry::LeaseMirror { tasks } => {
            out.u8(9);
            out.tasks(tasks);
        }
        Entry::LeaseTasksDone { tasks } => {
            out.u8(10);
            out.tasks(tasks);
        }
        Entry::Alarm {
            action,
            kind,
            member,
        } => {
            out.u8(11);
            out.u8(match action {
                AlarmAction::Activate => 1,
                AlarmAction::Deactivate => 2,
            });
            out.u8(match kind {
                AlarmKind::NoSpace => 1,
                AlarmKind::Corrupt => 2,
            });
            out.u64(*member);
        }
        Entry::Placement(change) => {
            out.u8(12);
            let (kind, member) = match change {
                PlacementChange::Pin(member) => (1, *member),
                PlacementChange::Unpin => (2, 0),
                PlacementChange::Avoid(member) => (3, *member),
                PlacementChange::Unavoid(member) => (4, *member),
            };
            out.u8(kind);
            out.u64(member);
        }
        Entry::Auth(change) => {
            out.u8(14);
            out.u64(change.base);
            out.bytes(&change.state);
        }
        Entry::Members(change) => {
            out.u8(13);
            out.u64(change.base);
            out.u32(change.members.len() as u32);
            for member in &change.members {
                out.u64(member.id);
                out.bytes(member.name.as_bytes());
                out.bytes(member.peer_address.as_bytes());
                out.u8(u8::from(member.learner));
            }
            out.u32(change.removed.len() as u32);
            for id in &change.removed {
                out.u64(*id);
            }
        }
    }
    out.0
}

/// The revision an encoded command was stamped with, read without
/// decoding the rest (followers observe it as they append).
pub fn revision_of(bytes: &[u8]) -> Option<Revision> {
    let mut input = Reader(bytes);
    if input.u8().ok()? != COMMAND_VERSION {
        return None;
    }
    input.u64().ok()
}

/// Decodes what [`encode`] wrote.
///
/// # Errors
/// [`DecodeError`] for an unknown version or tag, a short buffer, or bytes
/// left over.
pub fn decode(bytes: &[u8]) -> Decoded<(Revision, Entry)> {
    let mut input = Reader(bytes);
    let version = input.u8()?;
    if version != COMMAND_VERSION {
        return Err(DecodeError(format!("unknown command version {version}")));
    }
    let revision = input.u64()?;
    let entry = match input.u8()? {
        1 => Entry::Put(input.put()?),
        2 => Entry::DeleteRange(input.delete()?),
        3 => Entry::Txn(input.txn(0)?),
        4 => Entry::Compact {
            revision: input.u64()?,
        },
        5 => Entry::LeaseGrant {
            id: input.i64()?,
            ttl: input.i64()?,
        },
        6 => Entry::LeaseRevoke { id: input.i64()? },
        7 => {
            let count = input.count(8)?;
            let ids = (0..count).map(|_| input.i64()).collect::<Decoded<_>>()?;
            Entry::LeaseExpire { ids }
        }
        8 => {
            let count = input.count(16)?;
            let checkpoints = (0..count)
                .map(|_| Ok((input.i64()?, input.i64()?)))
                .collect::<Decoded<_>>()?;
            Entry::LeaseCheckpoint { checkpoints }
        }
        9 => Entry::LeaseMirror {
            tasks: input.tasks()?,
        },
        10 => Entry::LeaseTasksDone {
            tasks: input.tasks()?,
        },
        11 => {
            let action = match input.u8()? {
                1 => AlarmAction::Activate,
                2 => AlarmAction::Deactivate,
                v => return Err(DecodeError(format!("unknown alarm action {v}"))),
            };
            let kind = match input.u8()? {
                1 => AlarmKind::NoSpace,
                2 => AlarmKind::Corrupt,
                v => return Err(DecodeError(format!("unknown alarm {v}"))),
            };
            Entry::Alarm {
                action,
                kind,
                member: input.u64()?,
            }
        }
        12 => {
            let kind = input.u8()?;
            let member = input.u64()?;
            Entry::Placement(match kind {
                1 => PlacementChange::Pin(member),
                2 => PlacementChange::Unpin,
                3 => PlacementChange::Avoid(member),
                4 => PlacementChange::Unavoid(member),
                v => return Err(DecodeError(format!("unknown placement change {v}"))),
            })
        }
        13 => Entry::Members(input.members()?),
        14 => Entry::Auth(AuthChange {
            base: input.u64()?,
            state: input.bytes()?,
        }),
        tag => return Err(DecodeError(format!("unknown command tag {tag}"))),
    };
    if !input.0.is_empty() {
        return Err(DecodeError(format!(
            "{} bytes after the command",
            input.0.len()
        )));
    }
    Ok((revision, entry))
}

pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
    }
    pub(crate) fn flags(&mut self, bits: &[bool]) {
        let mut v = 0u8;
        for (i, bit) in bits.iter().enumerate() {
            v |= u8::from(*bit) << i;
        }
        self.u8(v);
    }

    pub(crate) fn tasks(&mut self, tasks: &[LeaseTask]) {
        self.u32(tasks.len() as u32);
        for task in tasks {
            self.i64(task.id);
            self.u8(match task.kind {
                LeaseTaskKind::Grant => 1,
                LeaseTaskKind::Revoke => 2,
            });
            self.i64(task.ttl);
            self.u64(task.granted_revision);
        }
    }

    pub(crate) fn put(&mut self, put: &PutRequest) {
        self.bytes(&put.key);
        self.bytes(&put.value);
        self.i64(put.lease);
        self.flags(&[put.prev_kv, put.ignore_value, put.ignore_lease]);
    }

    pub(crate) fn delete(&mut self, delete: &DeleteRangeRequest) {
        self.bytes(&delete.key);
        self.bytes(&delete.range_end);
        self.flags(&[delete.prev_kv]);
    }

    pub(crate) fn range(&mut self, range: &RangeRequest) {
        self.bytes(&range.key);
        self.bytes(&range.range_end);
        self.u64(range.limit);
        self.u64(range.revision);
        self.u8(match range.sort_order {
            SortOrder::None => 0,
            SortOrder::Ascend => 1,
            SortOrder::Descend => 2,
        });
        self.u8(match range.sort_target {
            SortTarget::Key => 0,
            SortTarget::Version => 1,
            SortTarget::Create => 2,
            SortTarget::Mod => 3,
            SortTarget::Value => 4,
        });
        self.flags(&[range.keys_only, range.count_only]);
        self.u64(range.min_mod_revision);
        self.u64(range.max_mod_revision);
        self.u64(range.min_create_revision);
        self.u64(range.max_create_revision);
    }

    pub(crate) fn txn(&mut self, txn: &TxnRequest) {
        self.u32(txn.compare.len() as u32);
        for compare in &txn.compare {
            self.bytes(&compare.key);
            self.bytes(&compare.range_end);
            match &compare.target {
                CompareTarget::Version(v) => {
                    self.u8(1);
                    self.u64(*v);
                }
                CompareTarget::Create(v) => {
                    self.u8(2);
                    self.u64(*v);
                }
                CompareTarget::Mod(v) => {
                    self.u8(3);
                    self.u64(*v);
                }
                CompareTarget::Value(v) => {
                    self.u8(4);
                    self.bytes(v);
                }
                CompareTarget::Lease(v) => {
                    self.u8(5);
                    self.i64(*v);
                }
            }
            self.u8(match compare.result {
                CompareResult::Equal => 0,
                CompareResult::NotEqual => 1,
                CompareResult::Less => 2,
                CompareResult::Greater => 3,
            });
        }
        for ops in [&txn.success, &txn.failure] {
            self.u32(ops.len() as u32);
            for op in ops {
                match op {
                    RequestOp::Range(range) => {
                        self.u8(1);
                        self.range(range);
                    }
                    RequestOp::Put(put) => {
                        self.u8(2);
                        self.put(put);
                    }
                    RequestOp::DeleteRange(delete) => {
                        self.u8(3);
                        self.delete(delete);
                    }
                    RequestOp::Txn(inner) => {
                        self.u8(4);
                        self.txn(inner);
                    }
                }
            }
        }
    }
}

pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl Reader<'_> {
    pub(crate) fn take(&mut self, len: usize) -> Decoded<&[u8]> {
        if self.0.len() < len {
            return Err(DecodeError(format!(
                "{len} bytes wanted, {} left",
                self.0.len()
            )));
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Decoded<[u8; N]> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }
    pub(crate) fn u8(&mut self) -> Decoded<u8> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u32(&mut self) -> Decoded<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Decoded<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub(crate) fn i64(&mut self) -> Decoded<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    pub(crate) fn bytes(&mut self) -> Decoded<Vec<u8>> {
        let len = self.u32()? as usize;
        Ok(self.take(len)?.to_vec())
    }
    fn string(&mut self) -> Decoded<String> {
        String::from_utf8(self.bytes()?).map_err(|_| DecodeError("a name is not UTF-8".to_string()))
    }
    fn members(&mut self) -> Decoded<MembersChange> {
        let base = self.u64()?;
        let count = self.count(17)?;
        let mut members = Vec::with_capacity(count);
        for _ in 0..count {
            let id = self.u64()?;
            let name = self.string()?;
            let peer_address = self.string()?;
            let learner = match self.u8()? {
                0 => false,
                1 => true,
                v => return Err(DecodeError(format!("unknown learner flag {v}"))),
            };
            members.push(MemberRecord {
                id,
                name,
                peer_address,
                learner,
            });
        }
        let count = self.count(8)?;
        let removed = (0..count).map(|_| self.u64()).collect::<Decoded<_>>()?;
        Ok(MembersChange {
            base,
            members,
            removed,
        })
    }
    /// A count of items of at least `min_item_len` bytes each, checked
    /// against what is left so a bad count cannot allocate much.
    pub(crate) fn count(&mut self, min_item_len: usize) -> Decoded<usize> {
        let count = self.u32()? as usize;
        if count.saturating_mul(min_item_len) > self.0.len() {
            return Err(DecodeError(format!(
                "{count} items cannot fit in {} bytes",
                self.0.len()
            )));
        }
        Ok(count)
    }
    pub(crate) fn flags<const N: usize>(&mut self) -> Decoded<[bool; N]> {
        let v = self.u8()?;
        if v >> N != 0 {
            return Err(DecodeError(format!("unknown flags {v:#x}")));
        }
        Ok(std::array::from_fn(|i| v & (1 << i) != 0))
    }

    pub(crate) fn tasks(&mut self) -> Decoded<Vec<LeaseTask>> {
        let count = self.count(25)?;
        (0..count)
            .map(|_| {
                let id = self.i64()?;
                let kind = match self.u8()? {
                    1 => LeaseTaskKind::Grant,
                    2 => LeaseTaskKind::Revoke,
                    v => return Err(DecodeError(format!("unknown lease task kind {v}"))),
                };
                Ok(LeaseTask {
                    id,
                    kind,
                    ttl: self.i64()?,
                    granted_revision: self.u64()?,
                })
            })
            .collect()
    }

    pub(crate) fn put(&mut self) -> Decoded<PutRequest> {
        let key = self.bytes()?;
        let value = self.bytes()?;
        let lease = self.i64()?;
        let [prev_kv, ignore_value, ignore_lease] = self.flags()?;
        Ok(PutRequest {
            key,
            value,
            lease,
            prev_kv,
            ignore_value,
            ignore_lease,
        })
    }

    pub(crate) fn delete(&mut self) -> Decoded<DeleteRangeRequest> {
        let key = self.bytes()?;
        let range_end = self.bytes()?;
        let [prev_kv] = self.flags()?;
        Ok(DeleteRangeRequest {
            key,
            range_end,
            prev_kv,
        })
    }

    pub(crate) fn range(&mut self) -> Decoded<RangeRequest> {
        let key = self.bytes()?;
        let range_end = self.bytes()?;
        let limit = self.u64()?;
        let revision = self.u64()?;
        let sort_order = match self.u8()? {
            0 => SortOrder::None,
            1 => SortOrder::Ascend,
            2 => SortOrder::Descend,
            v => return Err(DecodeError(format!("unknown sort order {v}"))),
        };
        let sort_target = match self.u8()? {
            0 => SortTarget::Key,
            1 => SortTarget::Version,
            2 => SortTarget::Create,
            3 => SortTarget::Mod,
            4 => SortTarget::Value,
            v => return Err(DecodeError(format!("unknown sort target {v}"))),
        };
        let [keys_only, count_only] = self.flags()?;
        Ok(RangeRequest {
            key,
            range_end,
            limit,
            revision,
            sort_order,
            sort_target,
            keys_only,
            count_only,
            min_mod_revision: self.u64()?,
            max_mod_revision: self.u64()?,
            min_create_revision: self.u64()?,
            max_create_revision: self.u64()?,
            answer_limit: 0,
        })
    }

    pub(crate) fn txn(&mut self, depth: usize) -> Decoded<TxnRequest> {
        // `depth` counts from 0: this transaction is level `depth + 1`.
        if depth >= MAX_NESTING {
            return Err(DecodeError(format!(
                "transactions nested deeper than {MAX_NESTING}"
            )));
        }
        let count = self.count(4 + 4 + 1 + 1)?;
        let mut compare = Vec::with_capacity(count);
        for _ in 0..count {
            let key = self.bytes()?;
            let range_end = self.bytes()?;
            let target = match self.u8()? {
                1 => CompareTarget::Version(self.u64()?),
                2 => CompareTarget::Create(self.u64()?),
                3 => CompareTarget::Mod(self.u64()?),
                4 => CompareTarget::Value(self.bytes()?),
                5 => CompareTarget::Lease(self.i64()?),
                v => return Err(DecodeError(format!("unknown compare target {v}"))),
            };
            let result = match self.u8()? {
                0 => CompareResult::Equal,
                1 => CompareResult::NotEqual,
                2 => CompareResult::Less,
                3 => CompareResult::Greater,
                v => return Err(DecodeError(format!("unknown compare result {v}"))),
            };
            compare.push(Compare {
                key,
                range_end,
                target,
                result,
            });
        }
        let mut branches = [Vec::new(), Vec::new()];
        for ops in &mut branches {
            let count = self.count(1)?;
            ops.reserve(count);
            for _ in 0..count {
                ops.push(match self.u8()? {
                    1 => RequestOp::Range(self.range()?),
                    2 => RequestOp::Put(self.put()?),
                    3 => RequestOp::DeleteRange(self.delete()?),
                    4 => RequestOp::Txn(self.txn(depth + 1)?),
                    v => return Err(DecodeError(format!("unknown txn op {v}"))),
                });
            }
        }
        let [success, failure] = branches;
        Ok(TxnRequest {
            compare,
            success,
            failure,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Entry> {
        let put = PutRequest {
            key: b"k".to_vec(),
            value: vec![0, 1, 2],
            lease: 7,
            prev_kv: true,
            ignore_value: false,
            ignore_lease: true,
        };
        let delete = DeleteRangeRequest {
            key: b"a".to_vec(),
            range_end: b"z".to_vec(),
            prev_kv: true,
        };
        let range = RangeRequest {
            key: b"r".to_vec(),
            range_end: vec![0],
            limit: 3,
            revision: 9,
            sort_order: SortOrder::Descend,
            sort_target: SortTarget::Value,
            keys_only: true,
            count_only: false,
            min_mod_revision: 1,
            max_mod_revision: 2,
            min_create_revision: 3,
            max_create_revision: 4,
            answer_limit: 0,
        };
        let inner = TxnRequest {
            compare: vec![Compare {
                key: b"c".to_vec(),
                range_end: Vec::new(),
                target: CompareTarget::Value(b"v".to_vec()),
                result: CompareResult::Greater,
            }],
            success: vec![RequestOp::Put(put.clone())],
            failure: Vec::new(),
        };
        let txn = TxnRequest {
            compare: vec![
                Compare {
                    key: b"x".to_vec(),
                    range_end: b"y".to_vec(),
                    target: CompareTarget::Version(3),
                    result: CompareResult::Equal,
                },
                Compare {
                    key: b"x".to_vec(),
                    range_end: Vec::new(),
                    target: CompareTarget::Lease(-1),
                    result: CompareResult::NotEqual,
                },
            ],
            success: vec![
                RequestOp::Range(range),
                RequestOp::DeleteRange(delete.clone()),
            ],
            failure: vec![RequestOp::Txn(inner)],
        };
        vec![
            Entry::Put(put),
            Entry::DeleteRange(delete),
            Entry::Txn(txn),
            Entry::Compact { revision: 5 },
            Entry::LeaseGrant { id: 3, ttl: 10 },
            Entry::LeaseRevoke { id: 3 },
            Entry::LeaseExpire { ids: vec![1, 2] },
            Entry::LeaseCheckpoint {
                checkpoints: vec![(1, 5), (2, 0)],
            },
            Entry::LeaseMirror {
                tasks: vec![
                    LeaseTask {
                        id: 4,
                        kind: LeaseTaskKind::Grant,
                        ttl: 30,
                        granted_revision: 77,
                    },
                    LeaseTask {
                        id: 5,
                        kind: LeaseTaskKind::Revoke,
                        ttl: 10,
                        granted_revision: 66,
                    },
                ],
            },
            Entry::LeaseTasksDone {
                tasks: vec![LeaseTask {
                    id: 4,
                    kind: LeaseTaskKind::Grant,
                    ttl: 30,
                    granted_revision: 77,
                }],
            },
            Entry::Alarm {
                action: AlarmAction::Activate,
                kind: AlarmKind::NoSpace,
                member: 0x0102,
            },
            Entry::Alarm {
                action: AlarmAction::Deactivate,
                kind: AlarmKind::NoSpace,
                member: 7,
            },
            Entry::Placement(PlacementChange::Pin(0xabc)),
            Entry::Placement(PlacementChange::Unpin),
            Entry::Placement(PlacementChange::Avoid(9)),
            Entry::Placement(PlacementChange::Unavoid(9)),
            Entry::Members(MembersChange {
                base: 77,
                members: vec![MemberRecord {
                    id: 5,
                    name: "e".to_string(),
                    peer_address: "127.0.0.1:2380".to_string(),
                    learner: true,
                }],
                removed: vec![3, 4],
            }),
            Entry::Auth(AuthChange {
                base: 4,
                state: b"auth record".to_vec(),
            }),
        ]
    }

    #[test]
    fn every_entry_round_trips() {
        for (at, entry) in samples().into_iter().enumerate() {
            let bytes = encode(at as u64 + 100, &entry);
            assert_eq!(decode(&bytes), Ok((at as u64 + 100, entry)));
        }
    }

    #[test]
    fn a_put_has_pinned_bytes() {
        let put = Entry::Put(PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            lease: 2,
            prev_kv: true,
            ..PutRequest::default()
        });
        let mut expected = vec![2];
        expected.extend_from_slice(&0x0102u64.to_le_bytes());
        expected.push(1);
        expected.extend_from_slice(&[1, 0, 0, 0, b'k', 1, 0, 0, 0, b'v']);
        expected.extend_from_slice(&2i64.to_le_bytes());
        expected.push(1);
        assert_eq!(encode(0x0102, &put), expected);
    }

    #[test]
    fn every_truncation_and_bad_byte_is_an_error_not_a_panic() {
        for entry in samples() {
            let bytes = encode(1, &entry);
            for len in 0..bytes.len() {
                assert!(decode(&bytes[..len]).is_err(), "prefix of {len} decoded");
            }
            for at in 0..bytes.len() {
                let mut damaged = bytes.clone();
                damaged[at] ^= 0xff;
                // Any answer but a panic is fine: a changed operand decodes.
                let _ = decode(&damaged);
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(decode(&longer).is_err());
        }
        assert!(decode(&[2]).is_err(), "unknown version");
    }

    #[test]
    fn transactions_nested_as_deep_as_the_proposer_allows_round_trip() {
        let mut txn = TxnRequest::default();
        for _ in 1..MAX_NESTING {
            txn = TxnRequest {
                success: vec![RequestOp::Txn(txn)],
                ..TxnRequest::default()
            };
        }
        let entry = Entry::Txn(txn);
        assert_eq!(nesting_depth(&entry), MAX_NESTING);
        let bytes = encode(1, &entry);
        assert_eq!(decode(&bytes), Ok((1, entry.clone())));
        let Entry::Txn(inner) = entry else {
            unreachable!()
        };
        let deeper = Entry::Txn(TxnRequest {
            failure: vec![RequestOp::Txn(inner)],
            ..TxnRequest::default()
        });
        assert_eq!(nesting_depth(&deeper), MAX_NESTING + 1);
        assert!(decode(&encode(1, &deeper)).is_err());
    }
}
