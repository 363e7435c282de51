//! Damage to acknowledged bytes is an error naming the file and offset; it is
//! never a wrong answer and never silently cut.
//!
//! A log with several segments is written, then single bits are flipped in
//! copies of it: in sealed segments (header, records, the zeros after the
//! last record), and in early records of the last segment, which later
//! completed writes prove durable. Each copy must fail to open with
//! `Corruption` naming the flipped segment and the offset of the record (or
//! stray byte) that holds the flip, and must be left byte-for-byte as it was.

mod common;

use std::path::{Path, PathBuf};

use common::{payload_for, run_local};
use keel_wal::{Error, Wal, WalConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const FLIPS: usize = 300;

fn config() -> WalConfig {
    WalConfig {
        segment_size: 8 * 4096,
    }
}

/// Writes 250 entries, one write each, and returns the segment paths.
fn build_log(dir: &Path) -> Vec<PathBuf> {
    let path = dir.to_path_buf();
    run_local(move || async move {
        let wal = Wal::open(&path, config()).await.expect("open");
        for index in 1..=250u64 {
            let len = 300 + (index as usize * 53) % 400;
            wal.append(index, 1, &payload_for(index, len))
                .await
                .expect("append");
        }
        wal.close().await.expect("close");
    });
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    segments
}

/// Offsets of the record frames in a segment and the end of the last one.
fn frames(bytes: &[u8]) -> (Vec<usize>, usize) {
    let mut pos = 64;
    let mut starts = Vec::new();
    while pos + 32 <= bytes.len() && bytes[pos..pos + 32].iter().any(|&b| b != 0) {
        starts.push(pos);
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        pos += (32 + len).next_multiple_of(8);
    }
    (starts, pos)
}

/// Where the error must point for a flip at `pos`.
fn expected_offset(bytes: &[u8], pos: usize) -> u64 {
    let (starts, end) = frames(bytes);
    if pos < 64 {
        return 0;
    }
    if pos >= end + 32 {
        // A stray byte in the zeros after the records.
        return pos as u64;
    }
    if pos >= end {
        // The flip makes the next (empty) header slot non-zero.
        return end as u64;
    }
    starts
        .iter()
        .rev()
        .find(|&&s| s <= pos)
        .copied()
        .expect("a frame") as u64
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

fn open_result(dir: &Path) -> Result<u64, Error> {
    let path = dir.to_path_buf();
    run_local(move || async move {
        let wal = Wal::open(&path, config()).await?;
        let last = wal.last_index();
        wal.close().await?;
        Ok(last)
    })
}

fn assert_names_damage(result: Result<u64, Error>, segment: &Path, offset: u64, what: &str) {
    match result {
        Err(Error::Corruption {
            file,
            offset: got,
            reason,
        }) => {
            assert_eq!(
                file.file_name(),
                segment.file_name(),
                "{what}: wrong file ({reason})"
            );
            assert_eq!(got, offset, "{what}: wrong offset ({reason})");
        }
        other => panic!("{what}: expected a corruption error, got {other:?}"),
    }
}

#[test]
fn flipped_bits_in_sealed_segments_are_reported_with_file_and_offset() {
    let original = tempfile::tempdir().expect("dir");
    let segments = build_log(original.path());
    assert!(
        segments.len() >= 4,
        "the workload must seal several segments"
    );
    let sealed = &segments[..segments.len() - 1];
    let mut rng = StdRng::seed_from_u64(7);
    for trial in 0..FLIPS {
        let segment = &sealed[rng.gen_range(0..sealed.len())];
        let bytes = std::fs::read(segment).expect("read segment");
        let (_, end) = frames(&bytes);
        // Mostly inside the data, sometimes in the zeros after it.
        let pos = if end < bytes.len() && rng.gen_ratio(1, 6) {
            rng.gen_range(end..bytes.len())
        } else {
            rng.gen_range(0..end)
        };
        let bit = rng.gen_range(0..8);
        let copy = tempfile::tempdir().expect("dir");
        copy_dir(original.path(), copy.path());
        let target = copy.path().join(segment.file_name().expect("name"));
        let mut damaged = bytes.clone();
        damaged[pos] ^= 1 << bit;
        std::fs::write(&target, &damaged).expect("write damaged");
        let what = format!("trial {trial}: bit {bit} of byte {pos}");
        assert_names_damage(
            open_result(copy.path()),
            segment,
            expected_offset(&bytes, pos),
            &what,
        );
        assert_eq!(
            std::fs::read(&target).expect("reread"),
            damaged,
            "{what}: the log changed a damaged file"
        );
    }
}

#[test]
fn damage_before_a_completed_write_in_the_last_segment_is_an_error() {
    let original = tempfile::tempdir().expect("dir");
    let segments = build_log(original.path());
    let last = segments.last().expect("a segment");
    let bytes = std::fs::read(last).expect("read");
    let (starts, _) = frames(&bytes);
    assert!(starts.len() >= 3, "the last segment needs several writes");
    for (i, &start) in starts[..starts.len() - 1].iter().enumerate() {
        let copy = tempfile::tempdir().expect("dir");
        copy_dir(original.path(), copy.path());
        let mut damaged = bytes.clone();
        damaged[start + 40] ^= 0x10;
        std::fs::write(copy.path().join(last.file_name().expect("name")), &damaged).expect("write");
        let what = format!("record {i} of the last segment");
        assert_names_damage(open_result(copy.path()), last, start as u64, &what);
    }
}

/// The last record's write is the only one that may have been torn, so
/// damage there is indistinguishable from a crash mid-write: it is cut,
/// after being copied aside. FORMAT.md documents this window.
#[test]
fn damage_in_the_final_write_is_cut_as_a_torn_tail_and_kept_aside() {
    let original = tempfile::tempdir().expect("dir");
    let segments = build_log(original.path());
    let last = segments.last().expect("a segment");
    let bytes = std::fs::read(last).expect("read");
    let (starts, _) = frames(&bytes);
    let final_start = *starts.last().expect("a record");
    let mut damaged = bytes.clone();
    damaged[final_start + 40] ^= 0x10;
    std::fs::write(last, &damaged).expect("write");
    assert_eq!(open_result(original.path()).expect("opens"), 249);
    let broken: Vec<_> = std::fs::read_dir(original.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".broken"))
        .collect();
    assert_eq!(broken.len(), 1, "the cut bytes are kept: {broken:?}");
    let kept = std::fs::read(original.path().join(&broken[0])).expect("read broken copy");
    assert_eq!(&kept[..], &damaged[final_start..final_start + kept.len()]);
}
