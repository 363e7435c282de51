//! Opening a log directory: verify every segment, rebuild the log index, and
//! cut a torn tail off the last segment.
//!
//! Nothing is modified unless every segment verifies; the only modification
//! is the cut of the last segment's torn tail, whose bytes are first copied
//! to a `.broken` file beside it and synced.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaFile, OpenOptions};

use crate::error::{Error, Result};
use crate::format::{RecordKind, BLOCK_SIZE, RECORD_HEADER_LEN};
use crate::log_index::{Location, LogIndex};
use crate::scan::{scan_segment, SegmentScan};
use crate::segment_name::{broken_copy_path, classify, LogFile};
use crate::writer::{sync_dir, ActiveSegment, SegmentFile, SEGMENT_OPEN_FLAGS};

/// Reads whole segments in pieces of this size.
const READ_CHUNK: usize = 1 << 20;

/// Everything the log needs to resume.
pub(crate) struct Recovered {
    pub(crate) index: LogIndex,
    pub(crate) state: Option<Vec<u8>>,
    pub(crate) segments: BTreeMap<u64, Rc<SegmentFile>>,
    pub(crate) active: Option<ActiveSegment>,
    pub(crate) next_seq: u64,
    pub(crate) last_crc: u32,
}

pub(crate) async fn recover(dir: &Path) -> Result<Recovered> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    let names = list_segments(dir)?;
    probe_device(dir, &names).await?;
    let mut recovered = Recovered {
        index: LogIndex::for_replay(),
        state: None,
        segments: BTreeMap::new(),
        active: None,
        next_seq: 1,
        last_crc: 0,
    };
    if names.is_empty() {
        recovered.index = LogIndex::new_log();
        return Ok(recovered);
    }
    let last_seq = names.last().map_or(0, |(seq, _, _)| *seq);
    let mut expected_seq = None;
    for (seq, first_index, path) in names {
        if expected_seq.is_some_and(|e| e != seq) {
            return Err(Error::corruption(
                &path,
                0,
                format!(
                    "segment {} is missing before it",
                    expected_seq.unwrap_or(seq)
                ),
            ));
        }
        expected_seq = Some(seq + 1);
        let file = open_segment(&path).await?;
        let bytes = read_whole(&file, &path).await?;
        let scan = scan_segment(&bytes)
            .map_err(|problem| Error::corruption(&path, 0, problem.describe()))?;
        check_header(
            &scan,
            seq,
            first_index,
            &recovered,
            bytes.len() as u64,
            &path,
        )?;
        replay(&scan, &bytes, seq, &mut recovered, &path)?;
        let is_last = seq == last_seq;
        let write_pos = match &scan.damage {
            None => scan.end,
            Some(damage) if !is_last => {
                return Err(Error::corruption(
                    &path,
                    damage.bad_byte,
                    damage.reason.clone(),
                ));
            }
            Some(damage) => match damage.later_durable_record {
                Some(later) => {
                    return Err(Error::corruption(
                        &path,
                        damage.bad_byte,
                        format!(
                            "{}, yet a later write at offset {later} was completed",
                            damage.reason
                        ),
                    ));
                }
                None => {
                    cut_torn_tail(&file, &path, &bytes, damage.offset, damage.nonzero_end).await?;
                    damage.offset
                }
            },
        };
        recovered.last_crc = scan.last_crc;
        recovered.next_seq = seq + 1;
        let segment = Rc::new(SegmentFile { seq, path, file });
        if is_last {
            let block_start = write_pos - write_pos % BLOCK_SIZE;
            let tail = bytes
                .get(block_start as usize..write_pos as usize)
                .unwrap_or_default()
                .to_vec();
            recovered.active = Some(ActiveSegment {
                segment: segment.clone(),
                segment_size: scan.header.segment_size,
                block_start,
                tail,
                durable_end: write_pos,
                rename_from: None,
            });
        }
        recovered.segments.insert(seq, segment);
    }
    make_recovered_durable(dir, &recovered).await?;
    Ok(recovered)
}

/// Syncs what recovery read before anything is built on it.
///
/// A process killed between a write and its sync leaves bytes that a reopen
/// reads (from the device cache) but that a power loss could still drop; the
/// same holds for a rename or a deletion whose directory was never synced.
/// Reporting such records as the log, or appending after them, would let a
/// later power loss lose acknowledged records or look like corruption.
async fn make_recovered_durable(dir: &Path, recovered: &Recovered) -> Result<()> {
    if let Some(active) = &recovered.active {
        let segment = &active.segment;
        segment
            .file
            .fdatasync()
            .await
            .map_err(|e| Error::glommio("fdatasync", &segment.path, e))?;
    }
    sync_dir(dir).await
}

/// Opens a non-empty file with O_DIRECT before any other DMA file on this
/// device.
///
/// glommio decides once per device and process whether reads may use the
/// io_uring poll ring, by reading the first block of the first DMA file
/// opened there. For an empty file (a fresh segment) that read succeeds
/// without reaching the device, the device is wrongly marked pollable, and
/// every later read fails with EOPNOTSUPP on devices without polled I/O.
///
/// An existing segment of a block or more serves; only a log without one
/// writes a probe file. So a log reopens on a full disk (its node then
/// raises NOSPACE rather than failing to start).
async fn probe_device(dir: &Path, segments: &[(u64, u64, PathBuf)]) -> Result<()> {
    // (One left behind by a failed probe is gone: `list_segments` deletes
    // every `.tmp` file first.)
    let probe = dir.join("device-probe.tmp");
    for (_, _, path) in segments {
        let long_enough = std::fs::metadata(path)
            .map_err(|e| Error::io("stat", path, e))?
            .len()
            >= BLOCK_SIZE;
        if long_enough {
            return open_and_close(path).await;
        }
    }
    std::fs::write(&probe, [0u8; BLOCK_SIZE as usize])
        .map_err(|e| Error::io("write", &probe, e))?;
    open_and_close(&probe).await?;
    std::fs::remove_file(&probe).map_err(|e| Error::io("remove", &probe, e))
}

async fn open_and_close(path: &Path) -> Result<()> {
    let file = DmaFile::open(path)
        .await
        .map_err(|e| Error::glommio("open", path, e))?;
    file.close()
        .await
        .map_err(|e| Error::glommio("close", path, e))
}

/// Lists segments in seq order and deletes leftover prepared files.
fn list_segments(dir: &Path) -> Result<Vec<(u64, u64, PathBuf)>> {
    let mut segments = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        let name = entry.file_name();
        let path = entry.path();
        match classify(&name.to_string_lossy()) {
            LogFile::Segment { seq, first_index } => segments.push((seq, first_index, path)),
            LogFile::Prepared => {
                std::fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
            }
            LogFile::Other => {}
        }
    }
    segments.sort_by_key(|(seq, _, _)| *seq);
    Ok(segments)
}

async fn open_segment(path: &Path) -> Result<DmaFile> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(SEGMENT_OPEN_FLAGS)
        .dma_open(path)
        .await
        .map_err(|e| Error::glommio("open", path, e))
}

async fn read_whole(file: &DmaFile, path: &Path) -> Result<Vec<u8>> {
    let size = file
        .file_size()
        .await
        .map_err(|e| Error::glommio("stat", path, e))?;
    let mut bytes = Vec::with_capacity(size as usize);
    let mut pos = 0u64;
    while pos < size {
        let want = READ_CHUNK.min((size - pos) as usize);
        let chunk = file
            .read_at_aligned(pos, want.next_multiple_of(BLOCK_SIZE as usize))
            .await
            .map_err(|e| Error::glommio("read", path, e))?;
        if chunk.is_empty() {
            break;
        }
        let take = chunk.len().min(want);
        bytes.extend_from_slice(chunk.get(..take).unwrap_or_default());
        pos += take as u64;
    }
    Ok(bytes)
}

fn check_header(
    scan: &SegmentScan,
    seq: u64,
    first_index: u64,
    recovered: &Recovered,
    file_len: u64,
    path: &Path,
) -> Result<()> {
    let header = &scan.header;
    if header.seq != seq || header.first_index != first_index {
        return Err(Error::corruption(
            path,
            0,
            "segment header does not match the file name",
        ));
    }
    if file_len < header.segment_size {
        return Err(Error::corruption(
            path,
            file_len,
            format!(
                "segment is {file_len} bytes, its header says {}",
                header.segment_size
            ),
        ));
    }
    if let Some(first) = scan.records.first() {
        if first.header.index != first_index {
            return Err(Error::corruption(
                path,
                first.offset,
                "first record does not match the file name",
            ));
        }
    }
    if !recovered.segments.is_empty() && header.prev_crc != recovered.last_crc {
        return Err(Error::corruption(
            path,
            0,
            "segment does not chain to the end of the previous segment",
        ));
    }
    Ok(())
}

fn replay(
    scan: &SegmentScan,
    bytes: &[u8],
    seq: u64,
    recovered: &mut Recovered,
    path: &Path,
) -> Result<()> {
    for record in &scan.records {
        let header = &record.header;
        let at = Location {
            seq,
            offset: record.offset,
            frame_len: crate::format::frame_len(header.payload_len as usize) as u32,
        };
        recovered
            .index
            .apply(header.kind, header.index, at)
            .map_err(|reason| Error::corruption(path, record.offset, reason))?;
        if header.kind == RecordKind::State {
            let start = record.offset as usize + RECORD_HEADER_LEN;
            let payload = bytes
                .get(start..start + header.payload_len as usize)
                .unwrap_or_default();
            recovered.state = Some(payload.to_vec());
        }
    }
    Ok(())
}

/// Copies `[offset, nonzero_end)` aside, then zeroes it in the segment so
/// stale bytes can never be mistaken for records later.
async fn cut_torn_tail(
    file: &DmaFile,
    path: &Path,
    bytes: &[u8],
    offset: u64,
    nonzero_end: u64,
) -> Result<()> {
    if nonzero_end <= offset {
        return Ok(());
    }
    let cut = bytes
        .get(offset as usize..nonzero_end as usize)
        .unwrap_or_default();
    let copy_path = broken_copy_path(path, offset);
    tracing::warn!(
        segment = %path.display(),
        offset,
        bytes = cut.len(),
        copy = %copy_path.display(),
        "cutting torn tail of the write-ahead log"
    );
    let mut copy =
        std::fs::File::create(&copy_path).map_err(|e| Error::io("create", &copy_path, e))?;
    copy.write_all(cut)
        .map_err(|e| Error::io("write", &copy_path, e))?;
    copy.sync_all()
        .map_err(|e| Error::io("fsync", &copy_path, e))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir).await?;
    }
    let block_start = offset - offset % BLOCK_SIZE;
    let len = (nonzero_end - block_start).next_multiple_of(BLOCK_SIZE) as usize;
    let mut buffer = file.alloc_dma_buffer(len);
    let out = buffer.as_bytes_mut();
    out.fill(0);
    let keep = bytes
        .get(block_start as usize..offset as usize)
        .unwrap_or_default();
    if let Some(dst) = out.get_mut(..keep.len()) {
        dst.copy_from_slice(keep);
    }
    file.write_at(buffer, block_start)
        .await
        .map_err(|e| Error::glommio("write", path, e))?;
    file.fdatasync()
        .await
        .map_err(|e| Error::glommio("fdatasync", path, e))?;
    Ok(())
}
