//! The bytes of a keel snapshot: every key-value of the keyspace at one
//! revision and the leases, as etcd's Maintenance.Snapshot streams them to
//! `etcdctl snapshot save` (net/PROTOCOL.md, "Saved snapshots"). Every part is
//! checksummed (CRC-32, as keel's WAL), the whole file too, and a file cut
//! short or changed anywhere is refused by [`read`].
//!
//! Layout: a header (magic, format version, shard count, cluster id,
//! revision, its CRC), then records (tag, body length, body, CRC of the
//! three), pairs in key order, then leases, then an end record with both
//! counts, then the CRC of every byte before it. As etcd's snapshots do,
//! the file then ends with zeros up to a multiple of 512 bytes and the
//! SHA-256 of every byte before it: etcdctl's `snapshot save` refuses a
//! stream whose length is not 32 past a multiple of 512.

use keel_engine::mvcc::{KeyValue, LeaseInfo};

/// The file's first bytes.
pub const MAGIC: &[u8; 8] = b"KEELSAVE";
/// The format this module writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const TAG_PAIR: u8 = 1;
const TAG_LEASE: u8 = 2;
const TAG_END: u8 = 3;
/// Magic, version, shards, cluster id, revision, CRC.
const HEADER_LEN: usize = 8 + 4 + 4 + 8 + 8 + 4;
/// Tag, body length, CRC around a record's body.
const RECORD_OVERHEAD: usize = 1 + 4 + 4;
const TRAILER_LEN: usize = 4;
/// The file's length less its SHA-256 is a multiple of this.
const ALIGN: usize = 512;
/// The SHA-256 that ends the file.
const SHA_LEN: usize = 32;

/// What a snapshot describes besides its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The shard layout it was taken from.
    pub shards: u32,
    /// The cluster's id.
    pub cluster_id: u64,
    /// The revision every pair was read at.
    pub revision: u64,
}

/// A snapshot read back whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Its header.
    pub header: Header,
    /// Every pair at the revision, in key order.
    pub pairs: Vec<KeyValue>,
    /// The leases when it was taken.
    pub leases: Vec<LeaseInfo>,
}

/// Why bytes are not a snapshot.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    /// It does not start as a keel snapshot does.
    #[error("not a keel snapshot (no KEELSAVE header)")]
    NotASnapshot,
    /// Written by a format this build does not read.
    #[error("snapshot format {0} (this keel reads {FORMAT_VERSION})")]
    Version(u32),
    /// Ends before its end record and checksum.
    #[error("the snapshot is cut short at byte {0}")]
    Truncated(usize),
    /// A part's checksum does not match its bytes.
    #[error("the snapshot is damaged at byte {0} (checksum mismatch)")]
    Damaged(usize),
    /// A record that does not parse, or counts that do not add up.
    #[error("the snapshot is malformed at byte {at}: {why}")]
    Malformed {
        /// Where.
        at: usize,
        /// What.
        why: &'static str,
    },
}

/// The header's bytes.
pub fn header_bytes(header: &Header) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&header.shards.to_le_bytes());
    out.extend_from_slice(&header.cluster_id.to_le_bytes());
    out.extend_from_slice(&header.revision.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The length of a pair's record, without making it.
pub fn pair_len(pair: &KeyValue) -> usize {
    RECORD_OVERHEAD + 4 + pair.key.len() + 8 * 4 + 4 + pair.value.len()
}

/// A pair's record.
pub fn pair_bytes(pair: &KeyValue) -> Vec<u8> {
    let mut body = Vec::with_capacity(pair_len(pair) - RECORD_OVERHEAD);
    put_bytes(&mut body, &pair.key);
    body.extend_from_slice(&pair.create_revision.to_le_bytes());
    body.extend_from_slice(&pair.mod_revision.to_le_bytes());
    body.extend_from_slice(&pair.version.to_le_bytes());
    body.extend_from_slice(&pair.lease.to_le_bytes());
    put_bytes(&mut body, &pair.value);
    record(TAG_PAIR, &body)
}

/// The length of a lease's record.
pub const LEASE_LEN: usize = RECORD_OVERHEAD + 8 * 4;

/// A lease's record.
pub fn lease_bytes(lease: &LeaseInfo) -> Vec<u8> {
    let mut body = Vec::with_capacity(LEASE_LEN - RECORD_OVERHEAD);
    body.extend_from_slice(&lease.id.to_le_bytes());
    body.extend_from_slice(&lease.ttl.to_le_bytes());
    body.extend_from_slice(&lease.remaining_ttl.to_le_bytes());
    body.extend_from_slice(&lease.granted_revision.to_le_bytes());
    record(TAG_LEASE, &body)
}

/// The length of the end record and the checksum after it.
pub const END_LEN: usize = RECORD_OVERHEAD + 16 + TRAILER_LEN;

/// The end record (the counts of pairs and leases) and the checksum of
/// every byte of the file before the checksum (`crc` has hashed every
/// byte before the end record).
pub fn end_bytes(pairs: u64, leases: u64, mut crc: crc32fast::Hasher) -> Vec<u8> {
    let mut body = Vec::with_capacity(16);
    body.extend_from_slice(&pairs.to_le_bytes());
    body.extend_from_slice(&leases.to_le_bytes());
    let mut out = record(TAG_END, &body);
    crc.update(&out);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out
}

/// The length of the whole file whose records, end record and CRC take
/// `body` bytes.
pub const fn file_len(body: usize) -> usize {
    body.div_ceil(ALIGN) * ALIGN + SHA_LEN
}

/// What ends a file whose records, end record and CRC took `body` bytes
/// (all of them given to `sha`): zeros to a multiple of 512, then the
/// SHA-256 of every byte before it.
pub fn tail_bytes(body: usize, mut sha: sha2::Sha256) -> Vec<u8> {
    use sha2::Digest;
    let mut out = vec![0u8; file_len(body) - SHA_LEN - body];
    sha.update(&out);
    out.extend_from_slice(&sha.finalize());
    out
}

/// The length of a snapshot's header.
pub const fn header_len() -> usize {
    HEADER_LEN
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn record(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_OVERHEAD + body.len());
    out.push(tag);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Reads and checks a whole snapshot.
///
/// # Errors
/// Why the bytes are not a whole, unchanged snapshot.
pub fn read(file: &[u8]) -> Result<Snapshot, SnapshotError> {
    use sha2::Digest;
    if file.get(..MAGIC.len()) != Some(MAGIC.as_slice()) {
        return Err(SnapshotError::NotASnapshot);
    }
    if file.len() % ALIGN != SHA_LEN {
        return Err(SnapshotError::Truncated(file.len()));
    }
    let (bytes, sha) = file.split_at(file.len() - SHA_LEN);
    if sha2::Sha256::digest(bytes).as_slice() != sha {
        return Err(SnapshotError::Damaged(bytes.len()));
    }
    let mut at = Reader { bytes, at: 0 };
    let head = at.take(HEADER_LEN)?;
    let version = u32_at(head, 8);
    if version != FORMAT_VERSION {
        return Err(SnapshotError::Version(version));
    }
    if crc32fast::hash(head.get(..HEADER_LEN - 4).unwrap_or_default())
        != u32_at(head, HEADER_LEN - 4)
    {
        return Err(SnapshotError::Damaged(0));
    }
    let header = Header {
        shards: u32_at(head, 12),
        cluster_id: u64_at(head, 16),
        revision: u64_at(head, 24),
    };
    let (mut pairs, mut leases) = (Vec::new(), Vec::new());
    loop {
        let start = at.at;
        let tag = at.take(1)?.first().copied().unwrap_or_default();
        let len = u32_at(at.take(4)?, 0) as usize;
        let body = at.take(len)?;
        let crc = u32_at(at.take(4)?, 0);
        let covered = bytes.get(start..start + 5 + len).unwrap_or_default();
        if crc32fast::hash(covered) != crc {
            return Err(SnapshotError::Damaged(start));
        }
        let malformed = |why| SnapshotError::Malformed { at: start, why };
        match tag {
            TAG_PAIR => pairs.push(parse_pair(body).ok_or_else(|| malformed("a pair"))?),
            TAG_LEASE if len == LEASE_LEN - RECORD_OVERHEAD => leases.push(LeaseInfo {
                id: u64_at(body, 0) as i64,
                ttl: u64_at(body, 8) as i64,
                remaining_ttl: u64_at(body, 16) as i64,
                granted_revision: u64_at(body, 24),
            }),
            TAG_END if len == 16 => {
                if (u64_at(body, 0), u64_at(body, 8)) != (pairs.len() as u64, leases.len() as u64) {
                    return Err(malformed("the counts do not match the records"));
                }
                let end = at.at;
                let whole = u32_at(at.take(TRAILER_LEN)?, 0);
                if crc32fast::hash(bytes.get(..end).unwrap_or_default()) != whole {
                    return Err(SnapshotError::Damaged(end));
                }
                let padding = bytes.get(at.at..).unwrap_or_default();
                if padding.len() >= ALIGN || padding.iter().any(|b| *b != 0) {
                    return Err(SnapshotError::Malformed {
                        at: at.at,
                        why: "bytes after the end",
                    });
                }
                return Ok(Snapshot {
                    header,
                    pairs,
                    leases,
                });
            }
            _ => return Err(malformed("an unknown record")),
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], SnapshotError> {
        let part = self
            .bytes
            .get(self.at..self.at.saturating_add(len))
            .ok_or(SnapshotError::Truncated(self.bytes.len()))?;
        self.at += len;
        Ok(part)
    }
}

fn parse_pair(body: &[u8]) -> Option<KeyValue> {
    let mut at = Reader { bytes: body, at: 0 };
    let key_len = u32_at(at.take(4).ok()?, 0) as usize;
    let key = at.take(key_len).ok()?.to_vec();
    let numbers = at.take(32).ok()?;
    let value_len = u32_at(at.take(4).ok()?, 0) as usize;
    let value = at.take(value_len).ok()?.to_vec();
    (at.at == body.len()).then(|| KeyValue {
        key,
        create_revision: u64_at(numbers, 0),
        mod_revision: u64_at(numbers, 8),
        version: u64_at(numbers, 16),
        lease: u64_at(numbers, 24) as i64,
        value,
    })
}

/// The little-endian u32 at `at`; callers took the bytes, so they are there.
fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(part) = bytes.get(at..at + 4) {
        word.copy_from_slice(part);
    }
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    if let Some(part) = bytes.get(at..at + 8) {
        word.copy_from_slice(part);
    }
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let header = Header {
            shards: 2,
            cluster_id: 7,
            revision: 99,
        };
        let pairs = [
            KeyValue {
                key: b"a".to_vec(),
                create_revision: 3,
                mod_revision: 5,
                version: 2,
                lease: 0,
                value: b"one".to_vec(),
            },
            KeyValue {
                key: b"b".to_vec(),
                create_revision: 4,
                mod_revision: 4,
                version: 1,
                lease: 11,
                value: Vec::new(),
            },
        ];
        let lease = LeaseInfo {
            id: 11,
            ttl: 30,
            remaining_ttl: 12,
            granted_revision: 2,
        };
        let mut out = header_bytes(&header);
        for pair in &pairs {
            assert_eq!(pair_bytes(pair).len(), pair_len(pair));
            out.extend(pair_bytes(pair));
        }
        out.extend(lease_bytes(&lease));
        let mut crc = crc32fast::Hasher::new();
        crc.update(&out);
        out.extend(end_bytes(2, 1, crc));
        let mut sha = <sha2::Sha256 as sha2::Digest>::new();
        sha2::Digest::update(&mut sha, &out);
        let body = out.len();
        out.extend(tail_bytes(body, sha));
        assert_eq!(out.len(), file_len(body));
        assert_eq!(out.len() % 512, 32, "as etcdctl checks");
        out
    }

    #[test]
    fn a_snapshot_reads_back_as_written() {
        let bytes = sample();
        let read = read(&bytes).unwrap();
        assert_eq!(read.header.revision, 99);
        assert_eq!(read.pairs.len(), 2);
        assert_eq!(read.pairs[1].lease, 11);
        assert_eq!(read.leases[0].remaining_ttl, 12);
    }

    #[test]
    fn every_cut_and_every_flipped_byte_is_refused() {
        let bytes = sample();
        for len in 0..bytes.len() {
            assert!(read(&bytes[..len]).is_err(), "cut to {len}");
        }
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            assert!(read(&damaged).is_err(), "byte {at} flipped");
        }
    }
}
