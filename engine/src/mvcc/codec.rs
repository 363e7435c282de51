//! The bytes of every MVCC row (engine/FORMAT.md, "MVCC rows"). Numbers are
//! little-endian inside values and big-endian inside keys, where byte order
//! must be numeric order. Every value starts with a format version byte.

use crate::error::{Error, Result};
use crate::mvcc::types::{EventKind, KeyValue, LeaseId, Revision};

/// Version byte of every value written today.
pub(crate) const ROW_VERSION: u8 = 1;

/// Tree names inside `kv.db`.
pub(crate) mod tree {
    /// User key -> the key's current state.
    pub(crate) const KV: &[u8] = b"kv";
    /// Escaped user key ++ terminator ++ revision -> a version or tombstone.
    pub(crate) const HIST: &[u8] = b"hist";
    /// Revision ++ sequence -> which key changed and how.
    pub(crate) const REVLOG: &[u8] = b"revlog";
    /// Lease id -> lease.
    pub(crate) const LEASES: &[u8] = b"leases";
    /// Lease id ++ user key -> nothing.
    pub(crate) const LEASE_KEYS: &[u8] = b"lease_keys";
    /// Name -> number.
    pub(crate) const META: &[u8] = b"meta";
}

/// Names of the numbers in the `meta` tree.
pub(crate) mod meta_key {
    /// Revision of the last applied entry.
    pub(crate) const CURRENT_REV: &[u8] = b"current_rev";
    /// Reads below this revision fail; history below it is being removed.
    pub(crate) const COMPACT_REV: &[u8] = b"compact_rev";
    /// History below this revision is all removed.
    pub(crate) const COMPACTED_REV: &[u8] = b"compacted_rev";
}

/// Bytes before the value in a `kv` row.
const KV_HEADER: usize = 1 + 8 + 8 + 8 + 8;
/// Bytes before the value in a `hist` put row.
const HIST_PUT_HEADER: usize = 1 + 1 + 8 + 8 + 8;
const HIST_PUT: u8 = 1;
const HIST_TOMBSTONE: u8 = 2;
const EVENT_PUT: u8 = 1;
const EVENT_DELETE: u8 = 2;
/// Ends an escaped key inside a `hist` row key; sorts below an escaped zero
/// byte (`00 ff`) and below every other byte, so escaped keys keep order.
const TERMINATOR: [u8; 2] = [0, 1];

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

/// A key's current state, the value of a `kv` row.
pub(crate) fn encode_kv(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(KV_HEADER + kv.value.len());
    out.push(ROW_VERSION);
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    out.extend_from_slice(&kv.version.to_le_bytes());
    out.extend_from_slice(&kv.lease.to_le_bytes());
    out.extend_from_slice(&kv.value);
    out
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

/// A `kv` row's metadata and value, read in place.
pub(crate) fn kv_view(row: &[u8]) -> Result<(KvMeta, &[u8])> {
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
    Ok((meta, value))
}

/// Reads a `kv` row back as a pair.
pub(crate) fn decode_kv(key: &[u8], row: &[u8]) -> Result<KeyValue> {
    let (meta, value) = kv_view(row)?;
    Ok(meta.with(key, value))
}

/// Appends `key` escaped (`00` becomes `00 ff`) and terminated (`00 01`).
fn push_escaped(out: &mut Vec<u8>, key: &[u8]) {
    for &byte in key {
        out.push(byte);
        if byte == 0 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&TERMINATOR);
}

/// `key` escaped without the terminator: every history row of a key at or
/// after `key` sorts at or after it, every row of a key before it sorts
/// before it. Used as a range bound.
pub(crate) fn hist_bound(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2);
    push_escaped(&mut out, key);
    out.truncate(out.len() - TERMINATOR.len());
    out
}

/// The `hist` row key of `key`'s version written at `rev`.
pub(crate) fn hist_key(key: &[u8], rev: Revision) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 10);
    push_escaped(&mut out, key);
    out.extend_from_slice(&rev.to_be_bytes());
    out
}

/// The first `hist` row key past every row of `key`.
pub(crate) fn hist_key_after(key: &[u8]) -> Vec<u8> {
    let mut out = hist_bound(key);
    out.extend_from_slice(&[0, 2]);
    out
}

/// Splits a `hist` row key into the user key and the revision.
pub(crate) fn split_hist_key(row_key: &[u8]) -> Result<(Vec<u8>, Revision)> {
    let mut key = Vec::with_capacity(row_key.len());
    let mut at = 0;
    loop {
        match (row_key.get(at), row_key.get(at + 1)) {
            (Some(0), Some(0xff)) => {
                key.push(0);
                at += 2;
            }
            (Some(0), Some(1)) => break,
            (Some(0), _) => return Err(bad("hist", "bad escape in row key")),
            (Some(&byte), _) => {
                key.push(byte);
                at += 1;
            }
            (None, _) => return Err(bad("hist", "row key has no terminator")),
        }
    }
    let rev = u64_be(row_key, at + 2).ok_or_else(|| bad("hist", "row key too short"))?;
    if row_key.len() != at + 10 {
        return Err(bad("hist", "row key too long"));
    }
    Ok((key, rev))
}

/// A `hist` row: a version, or `None` for a tombstone.
pub(crate) fn encode_hist(kv: Option<&KeyValue>) -> Vec<u8> {
    match kv {
        None => vec![ROW_VERSION, HIST_TOMBSTONE],
        Some(kv) => {
            let mut out = Vec::with_capacity(HIST_PUT_HEADER + kv.value.len());
            out.push(ROW_VERSION);
            out.push(HIST_PUT);
            out.extend_from_slice(&kv.create_revision.to_le_bytes());
            out.extend_from_slice(&kv.version.to_le_bytes());
            out.extend_from_slice(&kv.lease.to_le_bytes());
            out.extend_from_slice(&kv.value);
            out
        }
    }
}

/// A `hist` row's version written at `rev`, read in place, or `None` for
/// a tombstone.
pub(crate) fn hist_view(rev: Revision, row: &[u8]) -> Result<Option<(KvMeta, &[u8])>> {
    check_version("hist", row)?;
    match row.get(1) {
        Some(&HIST_TOMBSTONE) if row.len() == 2 => Ok(None),
        Some(&HIST_PUT) => {
            let field = |at| u64_le(row, at).ok_or_else(|| bad("hist", "row too short"));
            let value = row
                .get(HIST_PUT_HEADER..)
                .ok_or_else(|| bad("hist", "row too short"))?;
            let meta = KvMeta {
                create_revision: field(2)?,
                mod_revision: rev,
                version: field(10)?,
                lease: field(18)? as LeaseId,
            };
            Ok(Some((meta, value)))
        }
        _ => Err(bad("hist", "unknown row kind")),
    }
}

/// Whether a `hist` row is a tombstone.
pub(crate) fn hist_is_tombstone(row: &[u8]) -> Result<bool> {
    check_version("hist", row)?;
    Ok(row.get(1) == Some(&HIST_TOMBSTONE))
}

/// The `revlog` row key of the `seq`th change at `rev`.
pub(crate) fn revlog_key(rev: Revision, seq: u32) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..8].copy_from_slice(&rev.to_be_bytes());
    out[8..].copy_from_slice(&seq.to_be_bytes());
    out
}

/// The revision and sequence of a `revlog` row key.
pub(crate) fn split_revlog_key(row_key: &[u8]) -> Result<(Revision, u32)> {
    match (row_key.len(), u64_be(row_key, 0), row_key.get(8..12)) {
        (12, Some(rev), Some(seq)) => {
            let mut array = [0u8; 4];
            array.copy_from_slice(seq);
            Ok((rev, u32::from_be_bytes(array)))
        }
        _ => Err(bad("revlog", "row key is not 12 bytes")),
    }
}

/// A `revlog` row value: how `key` changed.
pub(crate) fn encode_event(kind: EventKind, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + key.len());
    out.push(ROW_VERSION);
    out.push(match kind {
        EventKind::Put => EVENT_PUT,
        EventKind::Delete => EVENT_DELETE,
    });
    out.extend_from_slice(key);
    out
}

/// Reads a `revlog` row value back.
pub(crate) fn decode_event(row: &[u8]) -> Result<(EventKind, &[u8])> {
    check_version("revlog", row)?;
    let kind = match row.get(1) {
        Some(&EVENT_PUT) => EventKind::Put,
        Some(&EVENT_DELETE) => EventKind::Delete,
        _ => return Err(bad("revlog", "unknown event kind")),
    };
    let key = row.get(2..).ok_or_else(|| bad("revlog", "row too short"))?;
    Ok((kind, key))
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
    fn escaped_keys_keep_their_order() {
        let keys: Vec<&[u8]> = vec![
            b"",
            b"\x00",
            b"\x00\x00",
            b"\x00\x01",
            b"a",
            b"a\x00",
            b"a\x00b",
            b"a\x01",
            b"ab",
            b"b",
        ];
        let mut rows = Vec::new();
        for key in &keys {
            for rev in [1u64, 256, u64::MAX] {
                rows.push((hist_key(key, rev), key.to_vec(), rev));
            }
        }
        let mut sorted = rows.clone();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(rows, sorted, "row keys sort by user key, then revision");
        for (row, key, rev) in &rows {
            assert_eq!(split_hist_key(row).unwrap(), (key.clone(), *rev));
            assert!(hist_bound(key) <= *row);
            assert!(*row < hist_key_after(key));
            for other in &keys {
                let bound = hist_bound(other);
                assert_eq!(
                    row < &bound,
                    key.as_slice() < *other,
                    "{key:?} vs {other:?}"
                );
            }
        }
    }

    #[test]
    fn rows_round_trip_and_reject_damage() {
        let kv = KeyValue {
            key: b"k".to_vec(),
            create_revision: 3,
            mod_revision: 9,
            version: 4,
            lease: 77,
            value: b"value".to_vec(),
        };
        assert_eq!(decode_kv(b"k", &encode_kv(&kv)).unwrap(), kv);
        let row = encode_hist(Some(&kv));
        let (meta, value) = hist_view(9, &row).unwrap().unwrap();
        assert_eq!(meta.with(b"k", value), kv);
        assert_eq!(hist_view(9, &encode_hist(None)).unwrap(), None);
        let mut wrong_version = encode_kv(&kv);
        wrong_version[0] = 2;
        assert!(decode_kv(b"k", &wrong_version).is_err());
        assert!(decode_kv(b"k", &encode_kv(&kv)[..20]).is_err());
        assert!(split_hist_key(b"abc").is_err());
        assert!(split_hist_key(b"a\x00\x01short").is_err());
        assert!(decode_meta(&encode_meta(5)[..5]).is_err());
        let lease = LeaseRow {
            ttl: 10,
            remaining_ttl: 4,
            granted_rev: 2,
        };
        assert_eq!(decode_lease(&encode_lease(&lease)).unwrap(), lease);
        assert_eq!(
            decode_event(&encode_event(EventKind::Delete, b"x")).unwrap(),
            (EventKind::Delete, &b"x"[..])
        );
    }

    #[test]
    fn rows_have_the_documented_bytes() {
        let kv = KeyValue {
            key: b"k".to_vec(),
            create_revision: 0x0102,
            mod_revision: 0x0304,
            version: 5,
            lease: 6,
            value: b"v".to_vec(),
        };
        let mut expected = vec![1];
        for n in [0x0102u64, 0x0304, 5, 6] {
            expected.extend_from_slice(&n.to_le_bytes());
        }
        expected.push(b'v');
        assert_eq!(encode_kv(&kv), expected);
        let mut hist = vec![1, 1];
        for n in [0x0102u64, 5, 6] {
            hist.extend_from_slice(&n.to_le_bytes());
        }
        hist.push(b'v');
        assert_eq!(encode_hist(Some(&kv)), hist);
        assert_eq!(encode_hist(None), vec![1, 2]);
        assert_eq!(
            hist_key(b"a\x00", 0x0102),
            vec![b'a', 0, 0xff, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2]
        );
        assert_eq!(revlog_key(0x0102, 3), [0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 3]);
        assert_eq!(encode_event(EventKind::Put, b"k"), vec![1, 1, b'k']);
        let lease = LeaseRow {
            ttl: 10,
            remaining_ttl: 4,
            granted_rev: 2,
        };
        let mut lease_bytes = vec![1];
        for n in [10u64, 4, 2] {
            lease_bytes.extend_from_slice(&n.to_le_bytes());
        }
        assert_eq!(encode_lease(&lease), lease_bytes);
        assert_eq!(
            lease_key_row(0x0102, b"k"),
            vec![0, 0, 0, 0, 0, 0, 1, 2, b'k']
        );
        assert_eq!(encode_meta(7), vec![1, 7, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn prefix_end_increments_the_last_byte_below_ff() {
        use crate::mvcc::types::prefix_end;
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
