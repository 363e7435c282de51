//! Segment file names: `{seq:016x}-{first_index:016x}.wal`.
//!
//! Fixed-width hex makes lexical order equal numeric order, so `ls` shows the
//! log in order. A segment being prepared is `{seq:016x}.tmp` until its first
//! write is durable; leftover `.tmp` files are deleted on open.

use std::path::{Path, PathBuf};

/// What a directory entry of the log is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFile {
    /// A live segment.
    Segment { seq: u64, first_index: u64 },
    /// A segment file prepared ahead of need and never made live.
    Prepared,
    /// Anything else (for example `.broken` copies of cut tails): left alone.
    Other,
}

pub(crate) fn segment_file_name(seq: u64, first_index: u64) -> String {
    format!("{seq:016x}-{first_index:016x}.wal")
}

pub(crate) fn prepared_file_name(seq: u64) -> String {
    format!("{seq:016x}.tmp")
}

/// Where the bytes cut from a torn tail at `offset` are kept.
pub(crate) fn broken_copy_path(segment: &Path, offset: u64) -> PathBuf {
    let mut name = segment
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".{offset:016x}.broken"));
    segment.with_file_name(name)
}

pub(crate) fn classify(file_name: &str) -> LogFile {
    if file_name.ends_with(".tmp") {
        return LogFile::Prepared;
    }
    let Some(stem) = file_name.strip_suffix(".wal") else {
        return LogFile::Other;
    };
    let Some((seq, first)) = stem.split_once('-') else {
        return LogFile::Other;
    };
    if seq.len() != 16 || first.len() != 16 {
        return LogFile::Other;
    }
    match (u64::from_str_radix(seq, 16), u64::from_str_radix(first, 16)) {
        (Ok(seq), Ok(first_index)) => LogFile::Segment { seq, first_index },
        _ => LogFile::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_numerically() {
        let a = segment_file_name(9, 100);
        let b = segment_file_name(10, 5);
        assert!(a < b, "lexical order must follow seq");
        assert_eq!(
            classify(&a),
            LogFile::Segment {
                seq: 9,
                first_index: 100
            }
        );
        assert_eq!(classify(&prepared_file_name(3)), LogFile::Prepared);
        assert_eq!(
            classify("0000000000000001-0000000000000001.wal.0000000000000040.broken"),
            LogFile::Other
        );
        assert_eq!(classify("1-1.wal"), LogFile::Other);
        assert_eq!(
            classify("zzzzzzzzzzzzzzzz-0000000000000001.wal"),
            LogFile::Other
        );
    }

    #[test]
    fn broken_copy_sits_beside_the_segment() {
        let p = broken_copy_path(Path::new("/d/0000000000000001-0000000000000001.wal"), 64);
        assert_eq!(
            p,
            Path::new("/d/0000000000000001-0000000000000001.wal.0000000000000040.broken")
        );
    }
}
