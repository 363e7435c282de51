//! The two meta slots (pages 0 and 1): which committed state is current.
//!
//! Commit `t` writes slot `t % 2`; opening picks the valid slot with the
//! higher transaction id, so a torn meta write falls back to the previous
//! commit, whose pages copy-on-write never touched.

use crate::btree::page::{put, read_u32, read_u64, PAGE_SIZE};

/// Magic bytes that open each meta slot.
pub(crate) const MAGIC: [u8; 8] = [0x89, b'K', b'T', b'R', b'E', 0x0d, 0x0a, 0x1a];
/// The one file format version this code reads and writes.
pub(crate) const FORMAT_VERSION: u32 = 1;

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + 8;
const PAGE_SIZE_OFFSET: usize = VERSION_OFFSET + 4;
const TXN_OFFSET: usize = PAGE_SIZE_OFFSET + 4;
const CATALOG_OFFSET: usize = TXN_OFFSET + 8;
const FREELIST_OFFSET: usize = CATALOG_OFFSET + 8;
const TOTAL_PAGES_OFFSET: usize = FREELIST_OFFSET + 8;
const APPLIED_OFFSET: usize = TOTAL_PAGES_OFFSET + 8;
const COMMIT_LIST_OFFSET: usize = APPLIED_OFFSET + 8;
const RESERVED_OFFSET: usize = COMMIT_LIST_OFFSET + 8;
const CRC_OFFSET: usize = 124;
const META_LEN: usize = CRC_OFFSET + 4;

/// One committed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) txn_id: u64,
    /// Root page of the catalog tree (tree name -> root), 0 when empty.
    pub(crate) catalog_root: u64,
    /// First page of the free-list chain, 0 when there is none.
    pub(crate) freelist_head: u64,
    /// Pages in use or free; the file may be longer (preallocated).
    pub(crate) total_pages: u64,
    /// The caller's applied index (for keel, the Raft applied index).
    pub(crate) applied_index: u64,
    /// First page of this commit's list of written extents when it was made
    /// durable with one sync (opening verifies them); 0 for a two-sync commit.
    pub(crate) commit_list: u64,
}

impl Meta {
    pub(crate) fn empty() -> Meta {
        Meta {
            txn_id: 0,
            catalog_root: 0,
            freelist_head: 0,
            total_pages: crate::btree::page::FIRST_DATA_PAGE,
            applied_index: 0,
            commit_list: 0,
        }
    }

    /// The meta slot page (a whole page, zero after the fields).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut page = vec![0u8; PAGE_SIZE];
        put(&mut page, MAGIC_OFFSET, &MAGIC);
        put(&mut page, VERSION_OFFSET, &FORMAT_VERSION.to_le_bytes());
        put(
            &mut page,
            PAGE_SIZE_OFFSET,
            &(PAGE_SIZE as u32).to_le_bytes(),
        );
        put(&mut page, TXN_OFFSET, &self.txn_id.to_le_bytes());
        put(&mut page, CATALOG_OFFSET, &self.catalog_root.to_le_bytes());
        put(
            &mut page,
            FREELIST_OFFSET,
            &self.freelist_head.to_le_bytes(),
        );
        put(
            &mut page,
            TOTAL_PAGES_OFFSET,
            &self.total_pages.to_le_bytes(),
        );
        put(&mut page, APPLIED_OFFSET, &self.applied_index.to_le_bytes());
        put(
            &mut page,
            COMMIT_LIST_OFFSET,
            &self.commit_list.to_le_bytes(),
        );
        let crc = crc32fast::hash(page.get(..CRC_OFFSET).unwrap_or_default());
        put(&mut page, CRC_OFFSET, &crc.to_le_bytes());
        page
    }

    /// Parses a slot; `Err` says why it is not a valid committed state.
    pub(crate) fn decode(page: &[u8]) -> Result<Meta, String> {
        if page.len() < META_LEN {
            return Err("meta slot shorter than its fields".to_string());
        }
        if page.get(..8) != Some(&MAGIC[..]) {
            return Err("meta magic bytes do not match".to_string());
        }
        if read_u32(page, CRC_OFFSET) != crc32fast::hash(page.get(..CRC_OFFSET).unwrap_or_default())
        {
            return Err("meta checksum mismatch".to_string());
        }
        let version = read_u32(page, VERSION_OFFSET);
        if version != FORMAT_VERSION {
            return Err(format!("unsupported format version {version}"));
        }
        let page_size = read_u32(page, PAGE_SIZE_OFFSET);
        if page_size as usize != PAGE_SIZE {
            return Err(format!("unsupported page size {page_size}"));
        }
        if page
            .get(RESERVED_OFFSET..CRC_OFFSET)
            .unwrap_or_default()
            .iter()
            .any(|&b| b != 0)
        {
            return Err("reserved meta bytes are not zero".to_string());
        }
        Ok(Meta {
            txn_id: read_u64(page, TXN_OFFSET),
            catalog_root: read_u64(page, CATALOG_OFFSET),
            freelist_head: read_u64(page, FREELIST_OFFSET),
            total_pages: read_u64(page, TOTAL_PAGES_OFFSET),
            applied_index: read_u64(page, APPLIED_OFFSET),
            commit_list: read_u64(page, COMMIT_LIST_OFFSET),
        })
    }

    /// The slot page this commit is written to.
    pub(crate) fn slot(&self) -> u64 {
        self.txn_id % 2
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn golden_meta_slot() {
        let meta = Meta {
            txn_id: 7,
            catalog_root: 3,
            freelist_head: 9,
            total_pages: 12,
            applied_index: 0x55,
            commit_list: 10,
        };
        let page = meta.encode();
        assert_eq!(&page[..8], &MAGIC);
        assert_eq!(&page[8..16], &[1, 0, 0, 0, 0x00, 0x10, 0, 0]);
        assert_eq!(&page[16..24], &7u64.to_le_bytes());
        assert_eq!(&page[24..32], &3u64.to_le_bytes());
        assert_eq!(&page[32..40], &9u64.to_le_bytes());
        assert_eq!(&page[40..48], &12u64.to_le_bytes());
        assert_eq!(&page[48..56], &0x55u64.to_le_bytes());
        assert_eq!(&page[56..64], &10u64.to_le_bytes());
        assert!(page[64..124].iter().all(|&b| b == 0));
        assert_eq!(
            &page[124..128],
            &crc32fast::hash(&page[..124]).to_le_bytes()
        );
        assert_eq!(Meta::decode(&page), Ok(meta));
        assert_eq!(meta.slot(), 1);
    }

    #[test]
    fn damaged_slots_are_rejected() {
        let page = Meta::empty().encode();
        for bit in 0..128 * 8 {
            let mut damaged = page.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(Meta::decode(&damaged).is_err(), "bit {bit}");
        }
    }
}
