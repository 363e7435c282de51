//! Support for the fuzz targets in `fuzz/`; not part of the API.

use crate::btree::meta::MAGIC;
use crate::btree::page::{self, put, read_u32, PAGE_SIZE};

/// Makes arbitrary file bytes pass every checksum: meta slots that start
/// with the magic get a correct CRC, and every page whose first byte is a
/// unit kind becomes a sealed unit at its own page number (its length
/// clamped to the file). What is left to catch is structure, which is the
/// point.
pub fn reseal(file: &mut [u8]) {
    let pages = file.len() / PAGE_SIZE;
    for slot in 0..pages.min(2) {
        if let Some(meta) = file.get_mut(slot * PAGE_SIZE..(slot + 1) * PAGE_SIZE) {
            if meta.starts_with(&MAGIC) {
                let crc = crc32fast::hash(meta.get(..124).unwrap_or_default());
                put(meta, 124, &crc.to_le_bytes());
            }
        }
    }
    for p in 2..pages {
        let start = p * PAGE_SIZE;
        let kind = file.get(start).copied().unwrap_or(0);
        if !(1..=3).contains(&kind) {
            continue;
        }
        let claimed = read_u32(file.get(start..).unwrap_or_default(), 8) as usize;
        let len = claimed.clamp(1, pages - p);
        if let Some(unit) = file.get_mut(start..start + len * PAGE_SIZE) {
            put(unit, 8, &(len as u32).to_le_bytes());
            page::reseal(unit, p as u64);
        }
    }
}

/// What the fuzz target does with one input file, shared with the test that
/// replays inputs the fuzzer once crashed on: open, audit, then walk every
/// tree forwards (looking each key up again) and backwards. Errors are
/// expected; panics and hangs are the bugs.
pub fn open_and_walk(path: &std::path::Path) {
    use std::ops::Bound;
    let Ok(db) = crate::btree::Database::open(
        path,
        crate::btree::Options {
            max_file_size: 1 << 30,
            ..Default::default()
        },
    ) else {
        return;
    };
    let _ = db.audit();
    let Ok(txn) = db.begin_read() else {
        return;
    };
    let Ok(names) = txn.tree_names() else {
        return;
    };
    for name in names {
        let Ok(Some(tree)) = txn.tree(&name) else {
            continue;
        };
        if let Ok(range) = tree.range(Bound::Unbounded, Bound::Unbounded) {
            for (key, _) in range.take(100_000).flatten() {
                let _ = tree.get(key);
            }
        }
        if let Ok(range) = tree.range(Bound::Unbounded, Bound::Unbounded) {
            let _ = range.rev().take(100_000).count();
        }
    }
}
