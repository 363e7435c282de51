//! The commit list: what a one-sync commit wrote, so that opening can check
//! it all landed.
//!
//! With one sync per commit, the meta slot and the pages it points to reach
//! the disk in no particular order. Each one-sync commit therefore lists
//! every extent it wrote with a CRC of the exact bytes; opening checks the
//! newest commit against its list and, if anything is missing or stale,
//! falls back to the commit before, which was durable before this one began.

use crate::btree::page::{
    put, read_u32, read_u64, seal, Extent, NodeKind, NODE_HEADER_LEN, PAGE_SIZE,
};

const NEXT_OFFSET: usize = NODE_HEADER_LEN;
const TXN_OFFSET: usize = NEXT_OFFSET + 8;
const ENTRIES_OFFSET: usize = TXN_OFFSET + 8;
const ENTRY_LEN: usize = 16;
/// Entries one commit-list page holds.
pub(crate) const ENTRIES_PER_PAGE: usize = (PAGE_SIZE - ENTRIES_OFFSET) / ENTRY_LEN;

/// One extent written by a commit and the CRC-32 of all its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    pub(crate) extent: Extent,
    pub(crate) crc: u32,
}

pub(crate) fn encode_page(entries: &[Written], next: u64, txn_id: u64, page: u64) -> Vec<u8> {
    let mut buf = vec![0u8; PAGE_SIZE];
    put(&mut buf, NEXT_OFFSET, &next.to_le_bytes());
    put(&mut buf, TXN_OFFSET, &txn_id.to_le_bytes());
    for (i, w) in entries.iter().enumerate() {
        let at = ENTRIES_OFFSET + i * ENTRY_LEN;
        put(&mut buf, at, &w.extent.page.to_le_bytes());
        put(&mut buf, at + 8, &w.extent.pages.to_le_bytes());
        put(&mut buf, at + 12, &w.crc.to_le_bytes());
    }
    seal(
        &mut buf,
        NodeKind::CommitList,
        entries.len() as u16,
        Extent { page, pages: 1 },
    );
    buf
}

/// A verified commit-list page: its commit, entries and next page.
pub(crate) fn decode_page(unit: &[u8], count: u16) -> Result<(u64, Vec<Written>, u64), String> {
    let count = usize::from(count);
    if count > ENTRIES_PER_PAGE {
        return Err(format!("commit-list page claims {count} entries"));
    }
    let entries = (0..count)
        .map(|i| {
            let at = ENTRIES_OFFSET + i * ENTRY_LEN;
            Written {
                extent: Extent {
                    page: read_u64(unit, at),
                    pages: read_u32(unit, at + 8),
                },
                crc: read_u32(unit, at + 12),
            }
        })
        .collect();
    Ok((
        read_u64(unit, TXN_OFFSET),
        entries,
        read_u64(unit, NEXT_OFFSET),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn commit_list_pages_round_trip() {
        let entries = vec![Written {
            extent: Extent { page: 4, pages: 2 },
            crc: 9,
        }];
        let buf = encode_page(&entries, 77, 5, 3);
        assert!(crate::btree::page::verify(&buf));
        assert_eq!(decode_page(&buf, 1).unwrap(), (5, entries, 77));
        assert_eq!(ENTRIES_PER_PAGE, 253);
    }
}
