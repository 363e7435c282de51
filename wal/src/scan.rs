//! Verifying the bytes of one segment (pure: no I/O).
//!
//! A scan walks the record chain from the segment header and stops at the
//! first offset that is not a valid, chained record. Where it stops decides
//! what the log does (see FORMAT.md, "Recovery"):
//!
//! - everything from there to the end of the segment is zero: a clean end;
//! - otherwise there is *damage*. In a sealed segment that is always an error.
//!   In the last segment it is a torn write, and is cut off, unless a valid
//!   record further on was carried by a write that began after the damage:
//!   that write was only issued once everything before it was durable, so the
//!   damaged bytes had been acknowledged, and the log refuses to open.

use crate::config::WalConfig;
use crate::format::{
    decode_record, FrameProblem, HeaderProblem, RecordHeader, SegmentHeader, RECORD_ALIGN,
    SEGMENT_HEADER_LEN,
};

/// One valid record found by a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScannedRecord {
    /// Offset of the record frame in the segment.
    pub(crate) offset: u64,
    pub(crate) header: RecordHeader,
}

/// Where and why a scan stopped before a clean end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    /// Offset of the first byte that is not part of the valid chain (where a
    /// torn tail is cut).
    pub(crate) offset: u64,
    /// Offset to report as damaged: `offset`, or for a zeroed stretch
    /// followed by stray bytes, the first stray byte.
    pub(crate) bad_byte: u64,
    pub(crate) reason: String,
    /// One past the last non-zero byte of the segment.
    pub(crate) nonzero_end: u64,
    /// Offset of a valid record after `offset` whose write began after
    /// `offset`: proof that the damaged bytes had been made durable.
    pub(crate) later_durable_record: Option<u64>,
}

/// The outcome of scanning one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentScan {
    pub(crate) header: SegmentHeader,
    pub(crate) records: Vec<ScannedRecord>,
    /// Offset just past the last valid record (the header's end if none).
    pub(crate) end: u64,
    /// CRC of the last valid record (the header's `prev_crc` if none).
    pub(crate) last_crc: u32,
    pub(crate) damage: Option<Damage>,
}

/// Verifies `bytes`, a whole segment file. Fails only if the header itself
/// is unusable; damage further on is reported in [`SegmentScan::damage`].
///
/// Record lengths are bounded by the segment's own size (from its header),
/// not by today's configuration, which may have changed since it was written.
pub(crate) fn scan_segment(bytes: &[u8]) -> Result<SegmentScan, HeaderProblem> {
    let header = SegmentHeader::decode(bytes)?;
    let geometry = WalConfig {
        segment_size: header.segment_size,
    };
    if geometry.validate().is_err() {
        return Err(HeaderProblem::BadSegmentSize(header.segment_size));
    }
    let max_payload = geometry.max_payload();
    let limit = bytes
        .len()
        .min(usize::try_from(header.segment_size).unwrap_or(usize::MAX));
    let bytes = bytes.get(..limit).unwrap_or(bytes);
    let mut records = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    let mut last_crc = header.prev_crc;
    let mut bad_byte = 0;
    let stop_reason = loop {
        let rest = bytes.get(pos..).unwrap_or_default();
        let Some(first_nonzero) = rest.iter().position(|&b| b != 0) else {
            break None;
        };
        match decode_record(rest, max_payload) {
            Err(FrameProblem::Zero) => {
                bad_byte = (pos + first_nonzero) as u64;
                break Some(format!(
                    "stray bytes at offset {bad_byte} after the last record"
                ));
            }
            Ok(record) => {
                if record.prev_crc != last_crc {
                    break Some("record does not chain to the one before it".to_string());
                }
                let write_start = u64::from(record.write_start);
                if write_start > pos as u64 || write_start < SEGMENT_HEADER_LEN as u64 {
                    break Some(format!("impossible write start {write_start}"));
                }
                records.push(ScannedRecord {
                    offset: pos as u64,
                    header: record,
                });
                last_crc = record.crc;
                pos += crate::format::frame_len(record.payload_len as usize);
            }
            Err(problem) => break Some(problem.describe()),
        }
    };
    let damage = stop_reason.map(|reason| Damage {
        offset: pos as u64,
        bad_byte: bad_byte.max(pos as u64),
        reason,
        nonzero_end: nonzero_end(bytes),
        later_durable_record: find_later_durable_record(bytes, pos, max_payload),
    });
    Ok(SegmentScan {
        header,
        records,
        end: pos as u64,
        last_crc,
        damage,
    })
}

fn nonzero_end(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |p| p as u64 + 1)
}

/// Looks past damage at `damage` for a valid record carried by a write that
/// started after the damage. Candidates sit at record-aligned offsets.
fn find_later_durable_record(bytes: &[u8], damage: usize, max_payload: usize) -> Option<u64> {
    let align = RECORD_ALIGN as usize;
    let end = nonzero_end(bytes) as usize;
    let mut pos = (damage + align).next_multiple_of(align);
    while pos < end {
        let rest = bytes.get(pos..).unwrap_or_default();
        if let Ok(record) = decode_record(rest, max_payload) {
            let start = record.write_start as usize;
            if start > damage && start <= pos {
                return Some(pos as u64);
            }
        }
        pos += align;
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::format::{encode_record, RecordKind};

    const SIZE: usize = 16 * 4096;

    /// A segment with `writes` writes of `n` records each; returns the bytes
    /// and the offset each write started at.
    fn segment(writes: &[usize]) -> (Vec<u8>, Vec<usize>) {
        let header = SegmentHeader {
            seq: 1,
            first_index: 1,
            segment_size: SIZE as u64,
            prev_crc: 7,
        };
        let mut bytes = header.encode().to_vec();
        let mut crc = 7;
        let mut index = 1;
        let mut starts = Vec::new();
        for &n in writes {
            let start = bytes.len();
            starts.push(start);
            for _ in 0..n {
                let payload = vec![index as u8; 10 + index as usize];
                crc = encode_record(
                    &mut bytes,
                    RecordKind::Entry(1),
                    index,
                    crc,
                    start as u32,
                    &payload,
                );
                index += 1;
            }
        }
        bytes.resize(SIZE, 0);
        (bytes, starts)
    }

    #[test]
    fn clean_segment_scans_to_a_clean_end() {
        let (bytes, _) = segment(&[3, 2]);
        let scan = scan_segment(&bytes).unwrap();
        assert_eq!(scan.records.len(), 5);
        assert!(scan.damage.is_none());
        assert_eq!(scan.records[4].header.index, 5);
        assert_eq!(scan.last_crc, scan.records[4].header.crc);
    }

    #[test]
    fn torn_last_write_is_damage_without_later_durable_records() {
        let (mut bytes, starts) = segment(&[3, 3]);
        // Garbage over the middle of the second write.
        let cut = starts[1] + 50;
        for b in &mut bytes[cut..cut + 30] {
            *b = 0xAB;
        }
        let scan = scan_segment(&bytes).unwrap();
        let damage = scan.damage.unwrap();
        assert_eq!(
            scan.records.len(),
            4,
            "the first record of write 2 survives"
        );
        assert!(
            damage.later_durable_record.is_none(),
            "records after belong to the torn write"
        );
    }

    #[test]
    fn damage_before_a_later_write_is_proven_durable() {
        let (mut bytes, starts) = segment(&[3, 3]);
        bytes[SEGMENT_HEADER_LEN + 40] ^= 1; // inside the first write
        let scan = scan_segment(&bytes).unwrap();
        let damage = scan.damage.unwrap();
        assert_eq!(damage.offset, SEGMENT_HEADER_LEN as u64);
        assert_eq!(damage.later_durable_record, Some(starts[1] as u64));
    }

    #[test]
    fn zeroed_hole_is_damage_not_an_end() {
        let (mut bytes, starts) = segment(&[2, 2]);
        for b in &mut bytes[starts[0]..starts[0] + 40] {
            *b = 0;
        }
        let scan = scan_segment(&bytes).unwrap();
        let damage = scan.damage.unwrap();
        assert_eq!(damage.offset, starts[0] as u64);
        assert_eq!(damage.later_durable_record, Some(starts[1] as u64));
    }

    #[test]
    fn stray_byte_after_the_end_is_damage() {
        let (mut bytes, _) = segment(&[2]);
        bytes[SIZE - 1] = 1;
        let scan = scan_segment(&bytes).unwrap();
        let damage = scan.damage.unwrap();
        assert_eq!(damage.nonzero_end, SIZE as u64);
        assert_eq!(damage.bad_byte, SIZE as u64 - 1);
        assert_eq!(scan.records.len(), 2);
    }

    #[test]
    fn broken_chain_stops_the_scan() {
        let (mut bytes, _) = segment(&[1]);
        let mut second = Vec::new();
        encode_record(&mut second, RecordKind::Entry(1), 2, 12345, 64, b"x");
        let at = SEGMENT_HEADER_LEN + crate::format::frame_len(11);
        bytes[at..at + second.len()].copy_from_slice(&second);
        let scan = scan_segment(&bytes).unwrap();
        assert_eq!(scan.records.len(), 1);
        assert!(scan.damage.unwrap().reason.contains("chain"));
    }
}
