//! Damage a tree file the way its checksums cannot see: change bytes in a
//! unit, then seal the unit again with a valid CRC (engine/FORMAT.md, "Unit
//! header"), as a bit flip in memory before a write, or a bug, would leave
//! it. Only a comparison with other members' copies can catch it.

use std::path::Path;

const PAGE_SIZE: usize = 4096;
const CRC_AT: usize = 4;
const PAGES_AT: usize = 8;
const PAGE_ID_AT: usize = 16;

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn unit_crc(unit: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&unit[..CRC_AT]);
    crc.update(&[0; 4]);
    crc.update(&unit[PAGES_AT..]);
    crc.finalize()
}

/// The unit (first byte, length) whose pages hold byte `at`, if a valid
/// one does: the nearest page at or before it with a header that names
/// itself, spans `at`, and whose CRC matches.
fn unit_holding(file: &[u8], at: usize) -> Option<(usize, usize)> {
    let page = at / PAGE_SIZE;
    for first in (0..=page).rev() {
        let start = first * PAGE_SIZE;
        let header = file.get(start..start + 24)?;
        let kind = header[0];
        let pages = u32_at(header, PAGES_AT) as usize;
        if (1..=4).contains(&kind)
            && u64_at(header, PAGE_ID_AT) == first as u64
            && pages >= 1
            && first + pages > page
        {
            let unit = file.get(start..start + pages * PAGE_SIZE)?;
            return (u32_at(unit, CRC_AT) == unit_crc(unit)).then_some((start, pages * PAGE_SIZE));
        }
    }
    None
}

/// Replaces the first byte of every copy of `marker` in the tree file at
/// `path` with `replacement`, in every unit whose checksum held, and seals
/// each such unit again. Answers how many copies it changed.
///
/// # Panics
/// When the file cannot be read or written.
pub fn rewrite_and_reseal(path: &Path, marker: &[u8], replacement: u8) -> usize {
    let mut file = std::fs::read(path).expect("read the tree file");
    let mut changed = 0;
    let mut from = 0;
    while let Some(found) = file[from..]
        .windows(marker.len())
        .position(|window| window == marker)
    {
        let at = from + found;
        from = at + 1;
        let Some((start, len)) = unit_holding(&file, at) else {
            continue;
        };
        file[at] = replacement;
        let crc = unit_crc(&file[start..start + len]);
        file[start + CRC_AT..start + CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        changed += 1;
    }
    std::fs::write(path, &file).expect("write the tree file");
    changed
}
