//! The on-disk layout of a segment: the segment header and the record frame.
//!
//! `wal/FORMAT.md` is the prose for these constants; the golden-bytes test at
//! the bottom of this file pins both. All integers are little-endian. Offsets
//! are chained so that a change to one field moves every field after it.

/// Magic bytes that open every segment (PNG-style: a high byte, the name, and
/// CR LF / SUB / LF so that text-mode transfers and truncation are caught).
pub(crate) const SEGMENT_MAGIC: [u8; 8] = [0x89, b'K', b'W', b'A', b'L', 0x0d, 0x0a, 0x1a];
/// The one format version this code reads and writes.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Every write is whole blocks at block-aligned offsets (O_DIRECT).
pub(crate) const BLOCK_SIZE: u64 = 4096;
/// Records start and end on multiples of this, so a length word never spans
/// two sectors and can never be torn.
pub(crate) const RECORD_ALIGN: u64 = 8;

// Segment header fields.
const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + SEGMENT_MAGIC.len();
const BLOCK_SIZE_OFFSET: usize = VERSION_OFFSET + 4;
const SEQ_OFFSET: usize = BLOCK_SIZE_OFFSET + 4;
const FIRST_INDEX_OFFSET: usize = SEQ_OFFSET + 8;
const SEGMENT_SIZE_OFFSET: usize = FIRST_INDEX_OFFSET + 8;
const PREV_CRC_OFFSET: usize = SEGMENT_SIZE_OFFSET + 8;
const HEADER_RESERVED_OFFSET: usize = PREV_CRC_OFFSET + 4;
const HEADER_CRC_OFFSET: usize = 60;
/// Bytes of the segment header; the first record starts here.
pub(crate) const SEGMENT_HEADER_LEN: usize = HEADER_CRC_OFFSET + 4;

// Record frame fields.
const LEN_OFFSET: usize = 0;
const CRC_OFFSET: usize = LEN_OFFSET + 4;
const INDEX_OFFSET: usize = CRC_OFFSET + 4;
const REC_PREV_CRC_OFFSET: usize = INDEX_OFFSET + 8;
const WRITE_START_OFFSET: usize = REC_PREV_CRC_OFFSET + 4;
const KIND_OFFSET: usize = WRITE_START_OFFSET + 4;
const REC_RESERVED_OFFSET: usize = KIND_OFFSET + 1;
/// Bytes of a record header; the payload follows it.
pub(crate) const RECORD_HEADER_LEN: usize = 32;

/// The largest payload a record can carry (a 24-bit length keeps a corrupt
/// length word from asking for gigabytes).
pub const MAX_PAYLOAD_LEN: usize = (1 << 24) - 1;

/// What a record means to the log. Kinds below [`RecordKind::FIRST_INTERNAL`]
/// are the caller's; the others are the log's own markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordKind {
    /// A caller's entry with its caller-chosen type (1..=127).
    Entry(u8),
    /// Drops every entry above `index`.
    Truncate,
    /// Drops every entry; the next entry will carry `index + 1`.
    Reset,
    /// The caller's latest-wins state blob (for Raft, its HardState).
    State,
}

impl RecordKind {
    const FIRST_INTERNAL: u8 = 0x80;
    const TRUNCATE: u8 = 0x80;
    const RESET: u8 = 0x81;
    const STATE: u8 = 0x82;

    pub(crate) fn to_byte(self) -> u8 {
        match self {
            RecordKind::Entry(kind) => kind,
            RecordKind::Truncate => Self::TRUNCATE,
            RecordKind::Reset => Self::RESET,
            RecordKind::State => Self::STATE,
        }
    }

    pub(crate) fn from_byte(byte: u8) -> Option<RecordKind> {
        match byte {
            0 => None,
            1..Self::FIRST_INTERNAL => Some(RecordKind::Entry(byte)),
            Self::TRUNCATE => Some(RecordKind::Truncate),
            Self::RESET => Some(RecordKind::Reset),
            Self::STATE => Some(RecordKind::State),
            _ => None,
        }
    }

    /// Whether `kind` may be passed by a caller as an entry type.
    pub(crate) fn is_entry_kind(kind: u8) -> bool {
        (1..Self::FIRST_INTERNAL).contains(&kind)
    }
}

/// The fixed fields of a segment, as written at its offset 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    /// Position of the segment in the log; consecutive segments differ by 1.
    pub(crate) seq: u64,
    /// Index of the segment's first record (informational; also in the name).
    pub(crate) first_index: u64,
    /// Size the segment was preallocated to.
    pub(crate) segment_size: u64,
    /// CRC of the last record of the previous segment (0 for the first ever):
    /// the first record of this segment must name it as its `prev_crc`.
    pub(crate) prev_crc: u32,
}

/// Why a segment header was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderProblem {
    TooShort,
    BadMagic,
    BadChecksum,
    UnsupportedVersion(u32),
    BadBlockSize(u32),
    BadSegmentSize(u64),
    ReservedNotZero,
}

impl HeaderProblem {
    pub(crate) fn describe(self) -> String {
        match self {
            HeaderProblem::TooShort => "file shorter than a segment header".to_string(),
            HeaderProblem::BadMagic => "segment magic bytes do not match".to_string(),
            HeaderProblem::BadChecksum => "segment header checksum mismatch".to_string(),
            HeaderProblem::UnsupportedVersion(v) => format!("unsupported format version {v}"),
            HeaderProblem::BadBlockSize(b) => format!("unsupported block size {b}"),
            HeaderProblem::BadSegmentSize(s) => format!("impossible segment size {s}"),
            HeaderProblem::ReservedNotZero => "reserved header bytes are not zero".to_string(),
        }
    }
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut out = [0u8; SEGMENT_HEADER_LEN];
        put(&mut out, MAGIC_OFFSET, &SEGMENT_MAGIC);
        put(&mut out, VERSION_OFFSET, &FORMAT_VERSION.to_le_bytes());
        put(
            &mut out,
            BLOCK_SIZE_OFFSET,
            &(BLOCK_SIZE as u32).to_le_bytes(),
        );
        put(&mut out, SEQ_OFFSET, &self.seq.to_le_bytes());
        put(
            &mut out,
            FIRST_INDEX_OFFSET,
            &self.first_index.to_le_bytes(),
        );
        put(
            &mut out,
            SEGMENT_SIZE_OFFSET,
            &self.segment_size.to_le_bytes(),
        );
        put(&mut out, PREV_CRC_OFFSET, &self.prev_crc.to_le_bytes());
        reseal_header(&mut out);
        out
    }

    /// Parses and verifies a header from the start of a segment.
    pub(crate) fn decode(bytes: &[u8]) -> Result<SegmentHeader, HeaderProblem> {
        let header = bytes
            .get(..SEGMENT_HEADER_LEN)
            .ok_or(HeaderProblem::TooShort)?;
        if header.get(..SEGMENT_MAGIC.len()) != Some(&SEGMENT_MAGIC[..]) {
            return Err(HeaderProblem::BadMagic);
        }
        let crc = crc32fast::hash(header.get(..HEADER_CRC_OFFSET).unwrap_or_default());
        if read_u32(header, HEADER_CRC_OFFSET) != crc {
            return Err(HeaderProblem::BadChecksum);
        }
        let version = read_u32(header, VERSION_OFFSET);
        if version != FORMAT_VERSION {
            return Err(HeaderProblem::UnsupportedVersion(version));
        }
        let block = read_u32(header, BLOCK_SIZE_OFFSET);
        if u64::from(block) != BLOCK_SIZE {
            return Err(HeaderProblem::BadBlockSize(block));
        }
        let reserved = header
            .get(HEADER_RESERVED_OFFSET..HEADER_CRC_OFFSET)
            .unwrap_or_default();
        if reserved.iter().any(|&b| b != 0) {
            return Err(HeaderProblem::ReservedNotZero);
        }
        Ok(SegmentHeader {
            seq: read_u64(header, SEQ_OFFSET),
            first_index: read_u64(header, FIRST_INDEX_OFFSET),
            segment_size: read_u64(header, SEGMENT_SIZE_OFFSET),
            prev_crc: read_u32(header, PREV_CRC_OFFSET),
        })
    }
}

/// A record as it is framed on disk, minus its payload bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub(crate) payload_len: u32,
    /// CRC32 of the whole frame (header with this field zeroed, then payload).
    pub(crate) crc: u32,
    pub(crate) index: u64,
    /// `crc` of the record before this one: the chain.
    pub(crate) prev_crc: u32,
    /// Segment offset of the first record of the write that carried this
    /// record. Recovery uses it to tell a torn write from damage to an
    /// earlier, completed write (FORMAT.md, "Recovery").
    pub(crate) write_start: u32,
    pub(crate) kind: RecordKind,
}

/// Why the bytes at an offset are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameProblem {
    /// Fewer bytes than a frame needs before the end of the segment.
    Truncated,
    /// The header is all zero: nothing was written here.
    Zero,
    BadKind(u8),
    BadLength(u32),
    ReservedNotZero,
    BadChecksum,
    PaddingNotZero,
}

impl FrameProblem {
    pub(crate) fn describe(self) -> String {
        match self {
            FrameProblem::Truncated => "record runs past the end of the segment".to_string(),
            FrameProblem::Zero => "zeroed record header".to_string(),
            FrameProblem::BadKind(k) => format!("unknown record kind {k:#04x}"),
            FrameProblem::BadLength(l) => format!("impossible record length {l}"),
            FrameProblem::ReservedNotZero => "reserved record bytes are not zero".to_string(),
            FrameProblem::BadChecksum => "record checksum mismatch".to_string(),
            FrameProblem::PaddingNotZero => "record padding is not zero".to_string(),
        }
    }
}

/// Bytes a record with `payload_len` bytes of payload occupies on disk.
pub(crate) fn frame_len(payload_len: usize) -> usize {
    let raw = RECORD_HEADER_LEN + payload_len;
    raw.next_multiple_of(RECORD_ALIGN as usize)
}

/// Appends the frame of one record to `out`, returning its CRC.
///
/// `out.len()` must be a multiple of [`RECORD_ALIGN`] (records are aligned).
pub(crate) fn encode_record(
    out: &mut Vec<u8>,
    kind: RecordKind,
    index: u64,
    prev_crc: u32,
    write_start: u32,
    payload: &[u8],
) -> u32 {
    debug_assert_eq!(out.len() % RECORD_ALIGN as usize, 0);
    debug_assert!(payload.len() <= MAX_PAYLOAD_LEN);
    let start = out.len();
    let mut header = [0u8; RECORD_HEADER_LEN];
    put(
        &mut header,
        LEN_OFFSET,
        &(payload.len() as u32).to_le_bytes(),
    );
    put(&mut header, INDEX_OFFSET, &index.to_le_bytes());
    put(&mut header, REC_PREV_CRC_OFFSET, &prev_crc.to_le_bytes());
    put(&mut header, WRITE_START_OFFSET, &write_start.to_le_bytes());
    put(&mut header, KIND_OFFSET, &[kind.to_byte()]);
    let crc = frame_crc(&header, payload);
    put(&mut header, CRC_OFFSET, &crc.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    out.resize(start + frame_len(payload.len()), 0);
    crc
}

/// CRC over a header (its CRC field treated as zero) and a payload.
fn frame_crc(header: &[u8; RECORD_HEADER_LEN], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(header.get(..CRC_OFFSET).unwrap_or_default());
    hasher.update(&[0u8; 4]);
    hasher.update(header.get(INDEX_OFFSET..).unwrap_or_default());
    hasher.update(payload);
    hasher.finalize()
}

/// Parses and verifies the record frame at the start of `bytes`.
///
/// On success returns the header; its payload is
/// `bytes[RECORD_HEADER_LEN..RECORD_HEADER_LEN + payload_len]` and the next
/// record starts at `frame_len(payload_len)`. `max_payload` bounds the length
/// word (a record can never be larger than its segment).
pub(crate) fn decode_record(
    bytes: &[u8],
    max_payload: usize,
) -> Result<RecordHeader, FrameProblem> {
    let header: &[u8; RECORD_HEADER_LEN] = bytes
        .get(..RECORD_HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(FrameProblem::Truncated)?;
    if header.iter().all(|&b| b == 0) {
        return Err(FrameProblem::Zero);
    }
    let kind_byte = header.get(KIND_OFFSET).copied().unwrap_or(0);
    let kind = RecordKind::from_byte(kind_byte).ok_or(FrameProblem::BadKind(kind_byte))?;
    let payload_len = read_u32(header, LEN_OFFSET);
    if payload_len as usize > max_payload.min(MAX_PAYLOAD_LEN) {
        return Err(FrameProblem::BadLength(payload_len));
    }
    if header
        .get(REC_RESERVED_OFFSET..)
        .unwrap_or_default()
        .iter()
        .any(|&b| b != 0)
    {
        return Err(FrameProblem::ReservedNotZero);
    }
    let payload_end = RECORD_HEADER_LEN + payload_len as usize;
    let frame_end = frame_len(payload_len as usize);
    let payload = bytes
        .get(RECORD_HEADER_LEN..payload_end)
        .ok_or(FrameProblem::Truncated)?;
    let padding = bytes
        .get(payload_end..frame_end)
        .ok_or(FrameProblem::Truncated)?;
    let crc = read_u32(header, CRC_OFFSET);
    if frame_crc(header, payload) != crc {
        return Err(FrameProblem::BadChecksum);
    }
    if padding.iter().any(|&b| b != 0) {
        return Err(FrameProblem::PaddingNotZero);
    }
    Ok(RecordHeader {
        payload_len,
        crc,
        index: read_u64(header, INDEX_OFFSET),
        prev_crc: read_u32(header, REC_PREV_CRC_OFFSET),
        write_start: read_u32(header, WRITE_START_OFFSET),
        kind,
    })
}

/// Rewrites the frame at the start of `bytes` so that it chains to
/// `prev_crc` and its checksum holds, keeping everything else. Returns its
/// new CRC and length, or `None` if no frame fits there (for the fuzzer).
pub(crate) fn reseal_frame(bytes: &mut [u8], prev_crc: u32) -> Option<(u32, usize)> {
    let payload_len = read_u32(bytes, LEN_OFFSET) as usize;
    if payload_len > MAX_PAYLOAD_LEN || frame_len(payload_len) > bytes.len() {
        return None;
    }
    put(bytes, REC_PREV_CRC_OFFSET, &prev_crc.to_le_bytes());
    let header: [u8; RECORD_HEADER_LEN] = bytes.get(..RECORD_HEADER_LEN)?.try_into().ok()?;
    let payload = bytes.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + payload_len)?;
    let crc = frame_crc(&header, payload);
    put(bytes, CRC_OFFSET, &crc.to_le_bytes());
    Some((crc, frame_len(payload_len)))
}

/// Recomputes a segment header's checksum in place (for encoding and the
/// fuzzer).
pub(crate) fn reseal_header(bytes: &mut [u8]) {
    let crc = crc32fast::hash(bytes.get(..HEADER_CRC_OFFSET).unwrap_or_default());
    put(bytes, HEADER_CRC_OFFSET, &crc.to_le_bytes());
}

/// The `prev_crc` field of a segment header.
pub(crate) fn header_prev_crc(bytes: &[u8]) -> u32 {
    read_u32(bytes, PREV_CRC_OFFSET)
}

fn put(out: &mut [u8], offset: usize, bytes: &[u8]) {
    if let Some(dst) = out.get_mut(offset..offset + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

fn read_u32(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(src) = bytes.get(offset..offset + 4) {
        word.copy_from_slice(src);
    }
    u32::from_le_bytes(word)
}

fn read_u64(bytes: &[u8], offset: usize) -> u64 {
    let mut word = [0u8; 8];
    if let Some(src) = bytes.get(offset..offset + 8) {
        word.copy_from_slice(src);
    }
    u64::from_le_bytes(word)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// Pins the byte layout documented in FORMAT.md. If this test fails, the
    /// format changed: bump FORMAT_VERSION and log the change in FORMAT.md.
    #[test]
    fn golden_segment_header() {
        let header = SegmentHeader {
            seq: 0x0102030405060708,
            first_index: 0x1112131415161718,
            segment_size: 64 << 20,
            prev_crc: 0xAABBCCDD,
        };
        let bytes = header.encode();
        let expected_prefix: [u8; 44] = [
            0x89, b'K', b'W', b'A', b'L', 0x0d, 0x0a, 0x1a, // magic
            1, 0, 0, 0, // version
            0x00, 0x10, 0, 0, // block size 4096
            0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // seq
            0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11, // first index
            0, 0, 0, 4, 0, 0, 0, 0, // segment size 64 MiB
            0xDD, 0xCC, 0xBB, 0xAA, // prev crc
        ];
        assert_eq!(&bytes[..44], &expected_prefix);
        assert_eq!(&bytes[44..60], &[0u8; 16]);
        let crc = crc32fast::hash(&bytes[..60]);
        assert_eq!(&bytes[60..64], &crc.to_le_bytes());
        assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
    }

    #[test]
    fn golden_record_frame() {
        let mut out = Vec::new();
        let crc = encode_record(
            &mut out,
            RecordKind::Entry(7),
            0x2A,
            0x01020304,
            64,
            b"hello",
        );
        assert_eq!(
            out.len(),
            40,
            "32-byte header + 5 payload bytes, padded to 8"
        );
        let expected: [u8; 40] = [
            5, 0, 0, 0, // payload length
            0, 0, 0, 0, // crc, checked below
            0x2A, 0, 0, 0, 0, 0, 0, 0, // index
            0x04, 0x03, 0x02, 0x01, // prev crc
            64, 0, 0, 0, // write start
            7, // kind
            0, 0, 0, 0, 0, 0, 0, // reserved
            b'h', b'e', b'l', b'l', b'o', 0, 0, 0, // payload and padding
        ];
        let mut without_crc = out.clone();
        without_crc[4..8].copy_from_slice(&[0; 4]);
        assert_eq!(without_crc, expected);
        assert_eq!(crc32fast::hash(&without_crc[..37]), crc);
        assert_eq!(&out[4..8], &crc.to_le_bytes());
    }

    #[test]
    fn record_round_trips_and_every_flipped_bit_is_caught() {
        let mut out = Vec::new();
        encode_record(&mut out, RecordKind::State, 9, 1, 2, b"payload bytes");
        let header = decode_record(&out, 1 << 20).unwrap();
        assert_eq!(header.index, 9);
        assert_eq!(header.kind, RecordKind::State);
        assert_eq!(header.payload_len, 13);
        for bit in 0..out.len() * 8 {
            let mut damaged = out.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_record(&damaged, 1 << 20).is_err(),
                "flipping bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn zero_and_short_frames_are_told_apart() {
        assert_eq!(decode_record(&[0u8; 64], 100), Err(FrameProblem::Zero));
        assert_eq!(decode_record(&[1u8; 8], 100), Err(FrameProblem::Truncated));
        let mut out = Vec::new();
        encode_record(&mut out, RecordKind::Entry(1), 1, 0, 0, &[5u8; 100]);
        assert_eq!(
            decode_record(&out[..60], 1000),
            Err(FrameProblem::Truncated)
        );
        assert_eq!(decode_record(&out, 99), Err(FrameProblem::BadLength(100)));
    }

    #[test]
    fn header_rejects_damage() {
        let bytes = SegmentHeader {
            seq: 1,
            first_index: 1,
            segment_size: 8192,
            prev_crc: 0,
        }
        .encode();
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes;
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(SegmentHeader::decode(&damaged).is_err(), "bit {bit}");
        }
        assert_eq!(
            SegmentHeader::decode(&bytes[..10]),
            Err(HeaderProblem::TooShort)
        );
    }

    #[test]
    fn kinds_round_trip() {
        for byte in 0..=255u8 {
            if let Some(kind) = RecordKind::from_byte(byte) {
                assert_eq!(kind.to_byte(), byte);
            }
        }
        assert!(RecordKind::is_entry_kind(1));
        assert!(!RecordKind::is_entry_kind(0));
        assert!(!RecordKind::is_entry_kind(0x80));
    }
}
