//! Free pages: the in-memory allocator and the on-disk free-list chain.
//!
//! Free space is a set of extents, coalesced. Allocation is first-fit. On
//! disk, the free list is a chain of one-page units, each listing extents;
//! it records every free page (including those still pending, since after a
//! restart no snapshot can see them), and is rewritten by every commit into
//! freshly allocated pages.

use std::collections::BTreeMap;

use crate::btree::page::{
    put, read_u32, read_u64, seal, Extent, NodeKind, NODE_HEADER_LEN, PAGE_SIZE,
};

const NEXT_OFFSET: usize = NODE_HEADER_LEN;
const ENTRIES_OFFSET: usize = NEXT_OFFSET + 8;
const ENTRY_LEN: usize = 16;
/// Extents one free-list page holds.
pub(crate) const EXTENTS_PER_PAGE: usize = (PAGE_SIZE - ENTRIES_OFFSET) / ENTRY_LEN;

/// A set of free extents, kept coalesced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FreeSpace {
    /// start page -> length in pages. Invariant: no two extents overlap or touch.
    extents: BTreeMap<u64, u32>,
}

impl FreeSpace {
    /// Adds an extent, merging it with free neighbours. Overlap with space
    /// already free is a caller bug (a page freed twice) and is refused.
    pub(crate) fn insert(&mut self, extent: Extent) -> Result<(), String> {
        let (mut start, mut end) = (extent.page, extent.end());
        if let Some((&prev_start, &prev_len)) = self.extents.range(..=start).next_back() {
            let prev_end = prev_start + u64::from(prev_len);
            if prev_end > start {
                return Err(format!("pages {start}..{end} are already free"));
            }
            if prev_end == start {
                self.extents.remove(&prev_start);
                start = prev_start;
            }
        }
        if let Some((&next_start, &next_len)) = self.extents.range(extent.page..).next() {
            if next_start < end {
                return Err(format!("pages {start}..{end} are already free"));
            }
            if next_start == end {
                self.extents.remove(&next_start);
                end = next_start + u64::from(next_len);
            }
        }
        let mut at = start;
        while at < end {
            // Keep lengths within u32 by chaining very long runs.
            let len = u32::try_from(end - at).unwrap_or(u32::MAX);
            self.extents.insert(at, len);
            at += u64::from(len);
        }
        Ok(())
    }

    /// Takes `pages` contiguous pages, first fit.
    pub(crate) fn allocate(&mut self, pages: u32) -> Option<Extent> {
        let (&start, &len) = self.extents.iter().find(|(_, &len)| len >= pages)?;
        self.extents.remove(&start);
        if len > pages {
            self.extents.insert(start + u64::from(pages), len - pages);
        }
        Some(Extent { page: start, pages })
    }

    /// Removes and returns the last extent if it ends at `total_pages` and
    /// holds at least `min_pages`: space that can go back to the file system.
    pub(crate) fn take_tail(&mut self, total_pages: u64, min_pages: u64) -> Option<Extent> {
        let (&start, &len) = self.extents.iter().next_back()?;
        if start + u64::from(len) == total_pages && u64::from(len) >= min_pages {
            self.extents.remove(&start);
            return Some(Extent {
                page: start,
                pages: len,
            });
        }
        None
    }

    pub(crate) fn extents(&self) -> impl Iterator<Item = Extent> + '_ {
        self.extents
            .iter()
            .map(|(&page, &pages)| Extent { page, pages })
    }

    pub(crate) fn len(&self) -> usize {
        self.extents.len()
    }

    /// Free pages in all.
    pub(crate) fn pages(&self) -> u64 {
        self.extents.values().map(|&l| u64::from(l)).sum()
    }
}

/// Encodes one free-list page listing `extents` (at most
/// [`EXTENTS_PER_PAGE`]) and pointing at `next` (0 for the last).
pub(crate) fn encode_page(extents: &[Extent], next: u64, page: u64) -> Vec<u8> {
    let mut buf = vec![0u8; PAGE_SIZE];
    put(&mut buf, NEXT_OFFSET, &next.to_le_bytes());
    for (i, e) in extents.iter().enumerate() {
        let at = ENTRIES_OFFSET + i * ENTRY_LEN;
        put(&mut buf, at, &e.page.to_le_bytes());
        put(&mut buf, at + 8, &e.pages.to_le_bytes());
    }
    seal(
        &mut buf,
        NodeKind::FreeList,
        extents.len() as u16,
        Extent { page, pages: 1 },
    );
    buf
}

/// Parses a verified free-list page: its extents and the next page.
pub(crate) fn decode_page(unit: &[u8], count: u16) -> Result<(Vec<Extent>, u64), String> {
    let count = usize::from(count);
    if count > EXTENTS_PER_PAGE {
        return Err(format!("free-list page claims {count} extents"));
    }
    let extents = (0..count)
        .map(|i| {
            let at = ENTRIES_OFFSET + i * ENTRY_LEN;
            Extent {
                page: read_u64(unit, at),
                pages: read_u32(unit, at + 8),
            }
        })
        .collect();
    Ok((extents, read_u64(unit, NEXT_OFFSET)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ext(page: u64, pages: u32) -> Extent {
        Extent { page, pages }
    }

    #[test]
    fn coalesces_and_allocates_first_fit() {
        let mut space = FreeSpace::default();
        space.insert(ext(10, 2)).unwrap();
        space.insert(ext(14, 1)).unwrap();
        space.insert(ext(12, 2)).unwrap();
        assert_eq!(space.extents().collect::<Vec<_>>(), vec![ext(10, 5)]);
        assert!(space.insert(ext(11, 1)).is_err(), "double free");
        assert_eq!(space.allocate(3), Some(ext(10, 3)));
        assert_eq!(space.allocate(3), None);
        assert_eq!(space.allocate(2), Some(ext(13, 2)));
        assert_eq!(space.len(), 0);
    }

    #[test]
    fn gives_back_the_tail() {
        let mut space = FreeSpace::default();
        space.insert(ext(5, 1)).unwrap();
        space.insert(ext(90, 10)).unwrap();
        assert_eq!(space.take_tail(100, 20), None);
        assert_eq!(space.take_tail(100, 10), Some(ext(90, 10)));
        assert_eq!(space.pages(), 1);
    }

    #[test]
    fn free_list_pages_round_trip() {
        let extents = vec![ext(3, 1), ext(7, 300)];
        let buf = encode_page(&extents, 42, 9);
        assert!(crate::btree::page::verify(&buf));
        assert_eq!(decode_page(&buf, 2).unwrap(), (extents, 42));
        assert!(decode_page(&buf, (EXTENTS_PER_PAGE + 1) as u16).is_err());
    }
}
