//! The bytes of every MVCC row (engine/FORMAT.md, "MVCC rows"). Numbers are
//! little-endian inside values and big-endian inside keys, where byte order
//! must be numeric order. Every value starts with a format version byte.

use crate::error::{Error, Result};
use crate::mvcc::types::{
    AlarmKind, ConfIds, EventKind, KeyValue, LeaseId, LeaseTask, LeaseTaskKind, MemberRecord,
    Revision,
};

/// Version byte of every value written today: the keyspace layout. 3 since
/// revisions are below 2^53 and name their shard (engine/FORMAT.md); rows
/// of earlier layouts are refused.
pub(crate) const ROW_VERSION: u8 = 3;

/// The layout whose revisions were `unix_millis << 16` (history keyed by
/// revision already); a file of it is refused at open.
pub(crate) const ROW_VERSION_WIDE_REVISIONS: u8 = 2;

/// Tree names inside `kv.db`.
pub(crate) mod tree {
    /// User key -> the key's current state, with where its history goes on.
    pub(crate) const KV: &[u8] = b"kv";
    /// Revision ++ sequence -> one change: the key, how it changed, the
    /// version it wrote, and where the key's previous change is.
    pub(crate) const HISTORY: &[u8] = b"history";
    /// User key -> where its delete is in `history`, for keys deleted and
    /// not written since (until compaction passes the delete).
    pub(crate) const GONE: &[u8] = b"gone";
    /// Lease id -> lease.
    pub(crate) const LEASES: &[u8] = b"leases";
    /// Lease id ++ user key -> nothing.
    pub(crate) const LEASE_KEYS: &[u8] = b"lease_keys";
    /// Lease id -> what the lease's home must still tell its mirrors (on
    /// the home shard of a node with several shards).
    pub(crate) const LEASE_TASKS: &[u8] = b"lease_tasks";
    /// Name -> number.
    pub(crate) const META: &[u8] = b"meta";
    /// Trees of the layout before `history` (history keyed by user key);
    /// a file that has them is refused.
    pub(crate) const OLD_LAYOUT: [&[u8]; 2] = [b"hist", b"revlog"];
}

/// Names of the numbers in the `meta` tree.
pub(crate) mod meta_key {
    /// Revision of the last applied entry.
    pub(crate) const CURRENT_REV: &[u8] = b"current_rev";
    /// Reads below this revision fail; history below it is being trimmed.
    pub(crate) const COMPACT_REV: &[u8] = b"compact_rev";
    /// Compaction has visited every change below this revision: history
    /// below it holds only each key's newest change.
    pub(crate) const COMPACTED_REV: &[u8] = b"compacted_rev";
    /// `alarm`, the alarm's kind byte, the member id (u64 BE): the revision
    /// that raised it. One row per raised alarm.
    pub(crate) const ALARM: &[u8] = b"alarm";
    /// The member the shard's leadership is pinned to (absent: none).
    pub(crate) const PLACEMENT_PIN: &[u8] = b"placement_pin";
    /// `placement_avoid`, the member id (u64 BE): a member the shard is
    /// never led from. One row per member.
    pub(crate) const PLACEMENT_AVOID: &[u8] = b"placement_avoid";
    /// Shard 0: the auth revision of the auth record (`mvcc::auth`).
    pub(crate) const AUTH_REV: &[u8] = b"auth_rev";
    /// Shard 0: the auth record, as the server encodes it.
    pub(crate) const AUTH_STATE: &[u8] = b"auth_state";
    /// Shard 0: the revision of the entry that last set the member list.
    pub(crate) const MEMBERS_REV: &[u8] = b"members_rev";
    /// Shard 0: `member`, the member id (u64 BE): the member
    /// ([`super::encode_member`]). One row per member.
    pub(crate) const MEMBER: &[u8] = b"member/";
    /// Shard 0: `removed`, the member id (u64 BE): an id once removed.
    pub(crate) const REMOVED: &[u8] = b"removed/";
    /// The shard's Raft configuration as of the applied index
    /// ([`super::encode_conf_state`]), written with it so that a replay
    /// never applies a configuration change twice.
    pub(crate) const CONF_STATE: &[u8] = b"conf_state";
}

/// The `meta` row key `prefix` + `id` (u64 BE).
pub(crate) fn id_key(prefix: &[u8], id: u64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// A member row: row version, learner byte, then the name and the peer
/// address, each as a u8 length and its bytes.
pub(crate) fn encode_member(member: &MemberRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + member.name.len() + member.peer_address.len());
    out.push(ROW_VERSION);
    out.push(u8::from(member.learner));
    for field in [&member.name, &member.peer_address] {
        // Longer fields are refused before an entry is made (node_meta's
        // MAX_FIELD); cut here so that a row never lies about its length.
        let bytes = field.as_bytes().get(..255).unwrap_or(field.as_bytes());
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    out
}

/// Reads what [`encode_member`] wrote, for member `id`.
pub(crate) fn decode_member(id: u64, row: &[u8]) -> Result<MemberRecord> {
    check_version("member", row)?;
    let learner = match row.get(1) {
        Some(0) => false,
        Some(1) => true,
        _ => return Err(bad("member", "no learner byte")),
    };
    let mut at = 2;
    let mut field = || -> Result<String> {
        let len = usize::from(*row.get(at).ok_or_else(|| bad("member", "truncated"))?);
        let bytes = row
            .get(at + 1..at + 1 + len)
            .ok_or_else(|| bad("member", "truncated"))?;
        at += 1 + len;
        String::from_utf8(bytes.to_vec()).map_err(|_| bad("member", "not UTF-8"))
    };
    let name = field()?;
    let peer_address = field()?;
    Ok(MemberRecord {
        id,
        name,
        peer_address,
        learner,
    })
}

/// The Raft configuration row: row version, then voters, learners,
/// outgoing voters and next learners, each a u32 count and u64 ids, then
/// the auto-leave byte and the list revision (u64).
pub(crate) fn encode_conf_state(conf: &ConfIds) -> Vec<u8> {
    let mut out = vec![ROW_VERSION];
    for list in [
        &conf.voters,
        &conf.learners,
        &conf.voters_outgoing,
        &conf.learners_next,
    ] {
        out.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for id in list {
            out.extend_from_slice(&id.to_le_bytes());
        }
    }
    out.push(u8::from(conf.auto_leave));
    out.extend_from_slice(&conf.list_revision.to_le_bytes());
    out
}

/// Reads what [`encode_conf_state`] wrote.
pub(crate) fn decode_conf_state(row: &[u8]) -> Result<ConfIds> {
    check_version("conf_state", row)?;
    let mut at = 1;
    let mut list = || -> Result<Vec<u64>> {
        let count = row
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| bad("conf_state", "truncated"))? as usize;
        at += 4;
        if count > row.len() / 8 {
            return Err(bad("conf_state", "count past the row"));
        }
        let mut ids = Vec::with_capacity(count);
        for _ in 0..count {
            ids.push(u64_le(row, at).ok_or_else(|| bad("conf_state", "truncated"))?);
            at += 8;
        }
        Ok(ids)
    };
    let voters = list()?;
    let learners = list()?;
    let voters_outgoing = list()?;
    let learners_next = list()?;
    // Rows written before the list revision was kept end at auto-leave
    // (their revision reads as 0: nothing to wait for).
    let list_revision = match row.len() {
        len if len == at + 9 => {
            u64_le(row, at + 1).ok_or_else(|| bad("conf_state", "truncated"))?
        }
        len if len == at + 1 => 0,
        _ => return Err(bad("conf_state", "bad end")),
    };
    let auto_leave = match row.get(at) {
        Some(0) => false,
        Some(1) => true,
        _ => return Err(bad("conf_state", "bad auto-leave byte")),
    };
    Ok(ConfIds {
        voters,
        learners,
        voters_outgoing,
        learners_next,
        auto_leave,
        list_revision,
    })
}

/// The `meta` row key that keeps the shard's leadership off `member`.
pub(crate) fn avoid_key(member: u64) -> Vec<u8> {
    let mut key = meta_key::PLACEMENT_AVOID.to_vec();
    key.extend_from_slice(&member.to_be_bytes());
    key
}

/// The `meta` row key of an alarm raised by `member`.
pub(crate) fn alarm_key(kind: AlarmKind, member: u64) -> Vec<u8> {
    let mut key = meta_key::ALARM.to_vec();
    key.push(match kind {
        AlarmKind::NoSpace => 1,
        AlarmKind::Corrupt => 2,
    });
    key.extend_from_slice(&member.to_be_bytes());
    key
}

/// Reads an alarm's `meta` row key back (`None` for another row).
pub(crate) fn decode_alarm_key(row_key: &[u8]) -> Option<(AlarmKind, u64)> {
    let rest = row_key.strip_prefix(meta_key::ALARM)?;
    let (&kind, member) = rest.split_first()?;
    let kind = match kind {
        1 => AlarmKind::NoSpace,
        2 => AlarmKind::Corrupt,
        _ => return None,
    };
    let member: [u8; 8] = member.try_into().ok()?;
    Some((kind, u64::from_be_bytes(member)))
}

/// Bytes before the value in a `kv` row.
const KV_HEADER: usize = 1 + 8 + 8 + 8 + 8 + 4 + 8 + 4;
/// Bytes of a `history` row before the key.
const CHANGE_HEADER: usize = 1 + 1 + 8 + 4 + 4;
/// Bytes of a put's version fields after the key.
const VERSION_FIELDS: usize = 8 + 8 + 8;
const CHANGE_PUT: u8 = 1;

/// Bytes of the largest row a put of a `key_len`-byte key and a
/// `value_len`-byte value writes: its `history` row or its `kv` row,
/// whichever is longer. Both must fit the B+-tree's value limit; a put
/// is checked against it before it is logged, so apply never meets a
/// row too large (see `txn::check_put_static`).
pub(crate) fn put_row_len(key_len: usize, value_len: usize) -> usize {
    let change = CHANGE_HEADER + key_len + VERSION_FIELDS + value_len;
    change.max(KV_HEADER + value_len)
}

// Keys are row keys of `kv` and `gone`, and follow a lease id in
// `lease_keys`: every one must fit the B+-tree's key limit.
const _: () = assert!(
    crate::mvcc::types::MAX_KEY_LEN + 8 <= crate::btree::MAX_KEY_LEN,
    "a lease_keys row key must fit the B+-tree"
);
const CHANGE_DELETE: u8 = 2;

fn bad(tree: &'static str, reason: impl Into<String>) -> Error {
    Error::BadRow {
        tree,
        reason: reason.into(),
    }
}

fn u64_le(bytes: &[u8], at: usize) -> Option<u64> {
    let slice = bytes.get(at..at + 8)?;
    let mut array = [0u8; 8];
    array.copy_from_slice(slice);
    Some(u64::from_le_bytes(array))
}

fn u32_le(bytes: &[u8], at: usize) -> Option<u32> {
    let slice = bytes.get(at..at + 4)?;
    let mut array = [0u8; 4];
    array.copy_from_slice(slice);
    Some(u32::from_le_bytes(array))
}

fn u64_be(bytes: &[u8], at: usize) -> Option<u64> {
    let slice = bytes.get(at..at + 8)?;
    let mut array = [0u8; 8];
    array.copy_from_slice(slice);
    Some(u64::from_be_bytes(array))
}

fn check_version(tree: &'static str, bytes: &[u8]) -> Result<()> {
    match bytes.first() {
        Some(&ROW_VERSION) => Ok(()),
        Some(other) => Err(bad(tree, format!("unknown row version {other}"))),
        None => Err(bad(tree, "empty row")),
    }
}

/// Where a change is in `history`: its revision and its sequence within
/// the revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct At {
    pub(crate) rev: Revision,
    pub(crate) seq: u32,
}

impl At {
    /// The `history` row key: revision and sequence, big-endian.
    pub(crate) fn key(self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..8].copy_from_slice(&self.rev.to_be_bytes());
        out[8..].copy_from_slice(&self.seq.to_be_bytes());
        out
    }

    /// Reads a `history` row key back.
    pub(crate) fn from_key(row_key: &[u8]) -> Result<At> {
        match (row_key.len(), u64_be(row_key, 0), row_key.get(8..12)) {
            (12, Some(rev), Some(seq)) => {
                let mut array = [0u8; 4];
                array.copy_from_slice(seq);
                Ok(At {
                    rev,
                    seq: u32::from_be_bytes(array),
                })
            }
            _ => Err(bad("history", "row key is not 12 bytes")),
        }
    }

    /// A link as stored: revision 0 (never a change's) for none.
    fn encode_link(link: Option<At>, out: &mut Vec<u8>) {
        let at = link.unwrap_or(At { rev: 0, seq: 0 });
        out.extend_from_slice(&at.rev.to_le_bytes());
        out.extend_from_slice(&at.seq.to_le_bytes());
    }

    fn decode_link(tree: &'static str, row: &[u8], at: usize) -> Result<Option<At>> {
        let rev = u64_le(row, at).ok_or_else(|| bad(tree, "row too short"))?;
        let seq = u32_le(row, at + 8).ok_or_else(|| bad(tree, "row too short"))?;
        Ok((rev != 0).then_some(At { rev, seq }))
    }
}

/// A key's metadata, as stored with each version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KvMeta {
    pub(crate) create_revision: Revision,
    pub(crate) mod_revision: Revision,
    pub(crate) version: u64,
    pub(crate) lease: LeaseId,
}

impl KvMeta {
    pub(crate) fn with(self, key: &[u8], value: &[u8]) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: self.lease,
            value: value.to_vec(),
        }
    }
}

/// A `kv` row, read in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KvRow<'a> {
    pub(crate) meta: KvMeta,
    /// Where this version is in `history` (its revision is `mod_revision`).
    pub(crate) at: At,
    /// Where the key's change before this version is, if any is kept.
    pub(crate) prev: Option<At>,
    pub(crate) value: &'a [u8],
}

/// A key's current state, the value of a `kv` row: the version, where it
/// is in `history` (`seq`) and the change before it (`prev`).
pub(crate) fn encode_kv(kv: &KeyValue, seq: u32, prev: Option<At>) -> Vec<u8> {
    let mut out = Vec::with_capacity(KV_HEADER + kv.value.len());
    out.push(ROW_VERSION);
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    out.extend_from_slice(&kv.version.to_le_bytes());
    out.extend_from_slice(&kv.lease.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    At::encode_link(prev, &mut out);
    out.extend_from_slice(&kv.value);
    out
}

/// Reads a `kv` row in place.
pub(crate) fn kv_row(row: &[u8]) -> Result<KvRow<'_>> {
    check_version("kv", row)?;
    let field = |at| u64_le(row, at).ok_or_else(|| bad("kv", "row too short"));
    let value = row
        .get(KV_HEADER..)
        .ok_or_else(|| bad("kv", "row too short"))?;
    let meta = KvMeta {
        create_revision: field(1)?,
        mod_revision: field(9)?,
        version: field(17)?,
        lease: field(25)? as LeaseId,
    };
    let seq = u32_le(row, 33).ok_or_else(|| bad("kv", "row too short"))?;
    Ok(KvRow {
        meta,
        at: At {
            rev: meta.mod_revision,
            seq,
        },
        prev: At::decode_link("kv", row, 37)?,
        value,
    })
}

/// A `kv` row's metadata and value, read in place.
pub(crate) fn kv_view(row: &[u8]) -> Result<(KvMeta, &[u8])> {
    let row = kv_row(row)?;
    Ok((row.meta, row.value))
}

/// One change of `history`, read in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Change<'a> {
    pub(crate) key: &'a [u8],
    /// The key's change before this one, if any is kept.
    pub(crate) prev: Option<At>,
    /// The version a put wrote; `None` for a delete.
    pub(crate) version: Option<(KvMeta, &'a [u8])>,
}

impl Change<'_> {
    pub(crate) fn kind(&self) -> EventKind {
        match self.version {
            Some(_) => EventKind::Put,
            None => EventKind::Delete,
        }
    }
}

/// A `history` row: `kv` written (`Some`) or deleted (`None`) for `key`,
/// after the key's change at `prev`.
pub(crate) fn encode_change(key: &[u8], version: Option<&KeyValue>, prev: Option<At>) -> Vec<u8> {
    let value_len = version.map_or(0, |kv| VERSION_FIELDS + kv.value.len());
    let mut out = Vec::with_capacity(CHANGE_HEADER + key.len() + value_len);
    out.push(ROW_VERSION);
    out.push(match version {
        Some(_) => CHANGE_PUT,
        None => CHANGE_DELETE,
    });
    At::encode_link(prev, &mut out);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    if let Some(kv) = version {
        out.extend_from_slice(&kv.create_revision.to_le_bytes());
        out.extend_from_slice(&kv.version.to_le_bytes());
        out.extend_from_slice(&kv.lease.to_le_bytes());
        out.extend_from_slice(&kv.value);
    }
    out
}

/// Reads the `history` row of the change at `at` in place.
pub(crate) fn decode_change(at: At, row: &[u8]) -> Result<Change<'_>> {
    check_version("history", row)?;
    let short = || bad("history", "row too short");
    let kind = *row.get(1).ok_or_else(short)?;
    let prev = At::decode_link("history", row, 2)?;
    let key_len = u32_le(row, 14).ok_or_else(short)? as usize;
    let key_end = CHANGE_HEADER.checked_add(key_len).ok_or_else(short)?;
    let key = row.get(CHANGE_HEADER..key_end).ok_or_else(short)?;
    let version = match kind {
        CHANGE_DELETE if row.len() == key_end => None,
        CHANGE_DELETE => return Err(bad("history", "delete row too long")),
        CHANGE_PUT => {
            let field = |n: usize| u64_le(row, key_end + 8 * n).ok_or_else(short);
            let value = row.get(key_end + VERSION_FIELDS..).ok_or_else(short)?;
            let meta = KvMeta {
                create_revision: field(0)?,
                mod_revision: at.rev,
                version: field(1)?,
                lease: field(2)? as LeaseId,
            };
            Some((meta, value))
        }
        _ => return Err(bad("history", "unknown change kind")),
    };
    Ok(Change { key, prev, version })
}

/// A `gone` row: where the key's delete is in `history`.
pub(crate) fn encode_gone(delete: At) -> Vec<u8> {
    let mut out = Vec::with_capacity(13);
    out.push(ROW_VERSION);
    At::encode_link(Some(delete), &mut out);
    out
}

/// Reads a `gone` row back.
pub(crate) fn decode_gone(row: &[u8]) -> Result<At> {
    check_version("gone", row)?;
    if row.len() != 13 {
        return Err(bad("gone", "row is not 13 bytes"));
    }
    At::decode_link("gone", row, 1)?.ok_or_else(|| bad("gone", "no delete named"))
}

/// A lease as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeaseRow {
    /// Granted time to live, seconds.
    pub(crate) ttl: i64,
    /// Checkpointed remaining time to live, seconds; 0 when none.
    pub(crate) remaining_ttl: i64,
    /// Revision of the grant.
    pub(crate) granted_rev: Revision,
}

/// A lease row key: the id, big-endian, so ids list in order.
pub(crate) fn lease_key(id: LeaseId) -> [u8; 8] {
    (id as u64).to_be_bytes()
}

/// Reads a lease row key back.
pub(crate) fn decode_lease_key(row_key: &[u8]) -> Result<LeaseId> {
    match (row_key.len(), u64_be(row_key, 0)) {
        (8, Some(id)) => Ok(id as LeaseId),
        _ => Err(bad("leases", "row key is not 8 bytes")),
    }
}

pub(crate) fn encode_lease(lease: &LeaseRow) -> Vec<u8> {
    let mut out = Vec::with_capacity(25);
    out.push(ROW_VERSION);
    out.extend_from_slice(&lease.ttl.to_le_bytes());
    out.extend_from_slice(&lease.remaining_ttl.to_le_bytes());
    out.extend_from_slice(&lease.granted_rev.to_le_bytes());
    out
}

pub(crate) fn decode_lease(row: &[u8]) -> Result<LeaseRow> {
    check_version("leases", row)?;
    let field = |at| u64_le(row, at).ok_or_else(|| bad("leases", "row too short"));
    if row.len() != 25 {
        return Err(bad("leases", "row is not 25 bytes"));
    }
    let ttl = field(1)? as i64;
    if ttl < 1 {
        return Err(bad("leases", format!("TTL {ttl} below 1")));
    }
    Ok(LeaseRow {
        ttl,
        remaining_ttl: field(9)? as i64,
        granted_rev: field(17)?,
    })
}

/// Bytes of a `lease_tasks` row.
const LEASE_TASK_LEN: usize = 1 + 1 + 8 + 8;
const TASK_GRANT: u8 = 1;
const TASK_REVOKE: u8 = 2;

/// A `lease_tasks` row: what the lease's mirrors must do (its key is the
/// lease id, as [`lease_key`]).
pub(crate) fn encode_lease_task(task: &LeaseTask) -> Vec<u8> {
    let mut out = Vec::with_capacity(LEASE_TASK_LEN);
    out.push(ROW_VERSION);
    out.push(match task.kind {
        LeaseTaskKind::Grant => TASK_GRANT,
        LeaseTaskKind::Revoke => TASK_REVOKE,
    });
    out.extend_from_slice(&task.ttl.to_le_bytes());
    out.extend_from_slice(&task.granted_revision.to_le_bytes());
    out
}

/// Reads a `lease_tasks` row back.
pub(crate) fn decode_lease_task(id: LeaseId, row: &[u8]) -> Result<LeaseTask> {
    check_version("lease_tasks", row)?;
    if row.len() != LEASE_TASK_LEN {
        return Err(bad("lease_tasks", "row is not 18 bytes"));
    }
    let kind = match row.get(1) {
        Some(&TASK_GRANT) => LeaseTaskKind::Grant,
        Some(&TASK_REVOKE) => LeaseTaskKind::Revoke,
        other => return Err(bad("lease_tasks", format!("unknown task kind {other:?}"))),
    };
    let field = |at| u64_le(row, at).ok_or_else(|| bad("lease_tasks", "row too short"));
    Ok(LeaseTask {
        id,
        kind,
        ttl: field(2)? as i64,
        granted_revision: field(10)?,
    })
}

/// The `lease_keys` row key tying `key` to `lease`.
pub(crate) fn lease_key_row(lease: LeaseId, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&lease_key(lease));
    out.extend_from_slice(key);
    out
}

/// A `meta` number.
pub(crate) fn encode_meta(value: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    out.push(ROW_VERSION);
    out.extend_from_slice(&value.to_le_bytes());
    out
}

pub(crate) fn decode_meta(row: &[u8]) -> Result<u64> {
    check_version("meta", row)?;
    match (row.len(), u64_le(row, 1)) {
        (9, Some(value)) => Ok(value),
        _ => Err(bad("meta", "row is not 9 bytes")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_row_round_trips_and_an_older_one_reads_revision_0() {
        let conf = ConfIds {
            voters: vec![1, 2, 3],
            learners: vec![4],
            voters_outgoing: vec![1, 2],
            learners_next: Vec::new(),
            auto_leave: false,
            list_revision: 77,
        };
        let row = encode_conf_state(&conf);
        assert_eq!(decode_conf_state(&row).unwrap(), conf);
        let older = &row[..row.len() - 8];
        assert_eq!(
            decode_conf_state(older).unwrap(),
            ConfIds {
                list_revision: 0,
                ..conf
            }
        );
        for cut in [1, row.len() - 9, row.len() - 1] {
            assert!(decode_conf_state(&row[..cut]).is_err(), "{cut}");
        }
    }

    fn sample() -> KeyValue {
        KeyValue {
            key: b"k".to_vec(),
            create_revision: 0x0102,
            mod_revision: 0x0304,
            version: 5,
            lease: 6,
            value: b"v".to_vec(),
        }
    }

    #[test]
    fn history_keys_sort_by_revision_then_sequence() {
        let places = [
            (1u64, 0u32),
            (1, 1),
            (1, 256),
            (2, 0),
            (256, 0),
            (u64::MAX, u32::MAX),
        ];
        let keys: Vec<[u8; 12]> = places
            .iter()
            .map(|&(rev, seq)| At { rev, seq }.key())
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        for (&(rev, seq), key) in places.iter().zip(&keys) {
            assert_eq!(At::from_key(key).unwrap(), At { rev, seq });
        }
        assert!(At::from_key(b"short").is_err());
    }

    #[test]
    fn rows_round_trip_and_reject_damage() {
        let kv = sample();
        let prev = Some(At {
            rev: 0x0200,
            seq: 3,
        });
        let row = encode_kv(&kv, 9, prev);
        let read = kv_row(&row).unwrap();
        assert_eq!(read.meta.with(b"k", read.value), kv);
        assert_eq!(
            read.at,
            At {
                rev: 0x0304,
                seq: 9
            }
        );
        assert_eq!(read.prev, prev);
        assert_eq!(kv_row(&encode_kv(&kv, 0, None)).unwrap().prev, None);
        let mut wrong_version = row.clone();
        wrong_version[0] = 1;
        assert!(kv_row(&wrong_version).is_err());
        assert!(kv_row(&row[..40]).is_err());

        let at = At {
            rev: 0x0304,
            seq: 9,
        };
        let put = encode_change(b"k", Some(&kv), prev);
        let change = decode_change(at, &put).unwrap();
        assert_eq!(change.key, b"k");
        assert_eq!(change.prev, prev);
        assert_eq!(change.kind(), EventKind::Put);
        let (meta, value) = change.version.unwrap();
        assert_eq!(meta.with(b"k", value), kv);
        let delete = encode_change(b"k", None, prev);
        let change = decode_change(at, &delete).unwrap();
        assert_eq!((change.kind(), change.version), (EventKind::Delete, None));
        for cut in 0..put.len() - b"v".len() {
            assert!(decode_change(at, &put[..cut]).is_err(), "cut at {cut}");
        }
        let mut long_delete = delete.clone();
        long_delete.push(0);
        assert!(decode_change(at, &long_delete).is_err());
        let mut unknown_kind = delete;
        unknown_kind[1] = 3;
        assert!(decode_change(at, &unknown_kind).is_err());

        assert_eq!(decode_gone(&encode_gone(at)).unwrap(), at);
        assert!(decode_gone(&encode_gone(at)[..12]).is_err());
        assert!(decode_gone(&[ROW_VERSION, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(decode_meta(&encode_meta(5)[..5]).is_err());
        let lease = LeaseRow {
            ttl: 10,
            remaining_ttl: 4,
            granted_rev: 2,
        };
        assert_eq!(decode_lease(&encode_lease(&lease)).unwrap(), lease);
    }

    #[test]
    fn rows_have_the_documented_bytes() {
        let kv = sample();
        let prev = Some(At {
            rev: 0x0200,
            seq: 3,
        });
        let mut expected = vec![3];
        for n in [0x0102u64, 0x0304, 5, 6] {
            expected.extend_from_slice(&n.to_le_bytes());
        }
        expected.extend_from_slice(&9u32.to_le_bytes());
        expected.extend_from_slice(&0x0200u64.to_le_bytes());
        expected.extend_from_slice(&3u32.to_le_bytes());
        expected.push(b'v');
        assert_eq!(encode_kv(&kv, 9, prev), expected);

        let mut put = vec![3, 1];
        put.extend_from_slice(&0x0200u64.to_le_bytes());
        put.extend_from_slice(&3u32.to_le_bytes());
        put.extend_from_slice(&1u32.to_le_bytes());
        put.push(b'k');
        for n in [0x0102u64, 5, 6] {
            put.extend_from_slice(&n.to_le_bytes());
        }
        put.push(b'v');
        assert_eq!(encode_change(b"k", Some(&kv), prev), put);
        let mut delete = vec![3, 2];
        delete.extend_from_slice(&[0; 12]);
        delete.extend_from_slice(&1u32.to_le_bytes());
        delete.push(b'k');
        assert_eq!(encode_change(b"k", None, None), delete);
        assert_eq!(
            At {
                rev: 0x0102,
                seq: 3
            }
            .key(),
            [0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 3]
        );
        let mut gone = vec![3];
        gone.extend_from_slice(&0x0102u64.to_le_bytes());
        gone.extend_from_slice(&3u32.to_le_bytes());
        assert_eq!(
            encode_gone(At {
                rev: 0x0102,
                seq: 3
            }),
            gone
        );

        let lease = LeaseRow {
            ttl: 10,
            remaining_ttl: 4,
            granted_rev: 2,
        };
        let mut lease_bytes = vec![3];
        for n in [10u64, 4, 2] {
            lease_bytes.extend_from_slice(&n.to_le_bytes());
        }
        assert_eq!(encode_lease(&lease), lease_bytes);
        assert_eq!(
            lease_key_row(0x0102, b"k"),
            vec![0, 0, 0, 0, 0, 0, 1, 2, b'k']
        );
        assert_eq!(encode_meta(7), vec![3, 7, 0, 0, 0, 0, 0, 0, 0]);

        let task = LeaseTask {
            id: 9,
            kind: LeaseTaskKind::Revoke,
            ttl: 10,
            granted_revision: 0x0102,
        };
        let mut task_bytes = vec![3, 2];
        task_bytes.extend_from_slice(&10u64.to_le_bytes());
        task_bytes.extend_from_slice(&0x0102u64.to_le_bytes());
        assert_eq!(encode_lease_task(&task), task_bytes);
        assert_eq!(decode_lease_task(9, &task_bytes).unwrap(), task);
        task_bytes[1] = 3;
        assert!(decode_lease_task(9, &task_bytes).is_err());
    }

    #[test]
    fn prefix_end_increments_the_last_byte_below_ff() {
        use crate::mvcc::types::prefix_end;
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
