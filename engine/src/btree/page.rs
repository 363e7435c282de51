//! Pages, extents and the node header that opens every node, free-list page
//! and (via the referencing entry) overflow run. Layout: `engine/FORMAT.md`.

/// Bytes per page. Every node and run is a whole number of pages.
pub const PAGE_SIZE: usize = 4096;
/// Pages 0 and 1 hold the two meta slots; data pages start here.
pub(crate) const FIRST_DATA_PAGE: u64 = 2;

// Node header (24 bytes), at the start of a node's first page.
const KIND_OFFSET: usize = 0;
const RESERVED_BYTE_OFFSET: usize = KIND_OFFSET + 1;
const COUNT_OFFSET: usize = RESERVED_BYTE_OFFSET + 1;
const CRC_OFFSET: usize = COUNT_OFFSET + 2;
const PAGES_OFFSET: usize = CRC_OFFSET + 4;
const RESERVED_WORD_OFFSET: usize = PAGES_OFFSET + 4;
const PAGE_ID_OFFSET: usize = RESERVED_WORD_OFFSET + 4;
/// Bytes of the node header; a node's body starts here.
pub(crate) const NODE_HEADER_LEN: usize = PAGE_ID_OFFSET + 8;

/// What a multi-page unit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeKind {
    Leaf = 1,
    Branch = 2,
    FreeList = 3,
    CommitList = 4,
}

impl NodeKind {
    fn from_byte(byte: u8) -> Option<NodeKind> {
        match byte {
            1 => Some(NodeKind::Leaf),
            2 => Some(NodeKind::Branch),
            3 => Some(NodeKind::FreeList),
            4 => Some(NodeKind::CommitList),
            _ => None,
        }
    }
}

/// A run of contiguous pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Extent {
    pub(crate) page: u64,
    pub(crate) pages: u32,
}

/// Extents come from disk too, so their arithmetic saturates: an absurd
/// page number becomes a read past the end of the file (an error), never an
/// overflow.
impl Extent {
    pub(crate) fn offset(self) -> u64 {
        self.page.saturating_mul(PAGE_SIZE as u64)
    }

    pub(crate) fn byte_len(self) -> usize {
        self.pages as usize * PAGE_SIZE
    }

    pub(crate) fn end(self) -> u64 {
        self.page.saturating_add(u64::from(self.pages))
    }
}

/// Pages needed for `bytes` bytes.
pub(crate) fn pages_for(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(PAGE_SIZE).max(1)).unwrap_or(u32::MAX)
}

/// Fills in the header of an encoded unit: kind, count, extent, checksum.
/// `buf` is the whole extent (a multiple of the page size).
pub(crate) fn seal(buf: &mut [u8], kind: NodeKind, count: u16, at: Extent) {
    put(buf, KIND_OFFSET, &[kind as u8]);
    put(buf, RESERVED_BYTE_OFFSET, &[0]);
    put(buf, COUNT_OFFSET, &count.to_le_bytes());
    put(buf, PAGES_OFFSET, &at.pages.to_le_bytes());
    put(buf, RESERVED_WORD_OFFSET, &0u32.to_le_bytes());
    put(buf, PAGE_ID_OFFSET, &at.page.to_le_bytes());
    let crc = unit_crc(buf);
    put(buf, CRC_OFFSET, &crc.to_le_bytes());
}

/// Rewrites a unit's page number, zeroes its reserved bytes and recomputes
/// its checksum, keeping everything else (for the fuzzer: arbitrary bytes
/// that pass the checksums reach the structural checks).
pub(crate) fn reseal(buf: &mut [u8], page: u64) {
    put(buf, RESERVED_BYTE_OFFSET, &[0]);
    put(buf, RESERVED_WORD_OFFSET, &0u32.to_le_bytes());
    put(buf, PAGE_ID_OFFSET, &page.to_le_bytes());
    let crc = unit_crc(buf);
    put(buf, CRC_OFFSET, &crc.to_le_bytes());
}

/// CRC-32 of a unit with its checksum field taken as zero.
fn unit_crc(buf: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(buf.get(..CRC_OFFSET).unwrap_or_default());
    hasher.update(&[0u8; 4]);
    hasher.update(buf.get(PAGES_OFFSET..).unwrap_or_default());
    hasher.finalize()
}

/// The parsed header of a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UnitHeader {
    pub(crate) kind: NodeKind,
    pub(crate) count: u16,
    pub(crate) pages: u32,
}

/// Reads the header in a unit's first page without verifying the checksum
/// (which needs the whole unit, whose length the header gives).
pub(crate) fn read_header(first_page: &[u8], page: u64) -> Result<UnitHeader, String> {
    let kind_byte = first_page.get(KIND_OFFSET).copied().unwrap_or(0);
    let kind =
        NodeKind::from_byte(kind_byte).ok_or_else(|| format!("unknown page kind {kind_byte}"))?;
    let stored_page = read_u64(first_page, PAGE_ID_OFFSET);
    if stored_page != page {
        return Err(format!("page says it is page {stored_page}"));
    }
    if first_page.get(RESERVED_BYTE_OFFSET).copied() != Some(0)
        || read_u32(first_page, RESERVED_WORD_OFFSET) != 0
    {
        return Err("reserved header bytes are not zero".to_string());
    }
    let pages = read_u32(first_page, PAGES_OFFSET);
    if pages == 0 {
        return Err("zero-length unit".to_string());
    }
    Ok(UnitHeader {
        kind,
        count: read_u16(first_page, COUNT_OFFSET),
        pages,
    })
}

/// Whether a whole unit's stored checksum matches its bytes.
pub(crate) fn verify(unit: &[u8]) -> bool {
    read_u32(unit, CRC_OFFSET) == unit_crc(unit)
}

pub(crate) fn put(out: &mut [u8], offset: usize, bytes: &[u8]) {
    if let Some(dst) = out.get_mut(offset..offset + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

pub(crate) fn read_u16(bytes: &[u8], offset: usize) -> u16 {
    let mut word = [0u8; 2];
    if let Some(src) = bytes.get(offset..offset + 2) {
        word.copy_from_slice(src);
    }
    u16::from_le_bytes(word)
}

pub(crate) fn read_u32(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(src) = bytes.get(offset..offset + 4) {
        word.copy_from_slice(src);
    }
    u32::from_le_bytes(word)
}

pub(crate) fn read_u64(bytes: &[u8], offset: usize) -> u64 {
    let mut word = [0u8; 8];
    if let Some(src) = bytes.get(offset..offset + 8) {
        word.copy_from_slice(src);
    }
    u64::from_le_bytes(word)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn golden_node_header() {
        let mut buf = vec![0u8; PAGE_SIZE];
        buf[NODE_HEADER_LEN] = 0xAB;
        seal(
            &mut buf,
            NodeKind::Leaf,
            3,
            Extent {
                page: 0x0102,
                pages: 1,
            },
        );
        assert_eq!(&buf[..4], &[1, 0, 3, 0]);
        assert_eq!(
            &buf[8..24],
            &[1, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x01, 0, 0, 0, 0, 0, 0]
        );
        let mut zeroed = buf.clone();
        zeroed[4..8].copy_from_slice(&[0; 4]);
        assert_eq!(&buf[4..8], &crc32fast::hash(&zeroed).to_le_bytes());
        assert!(verify(&buf));
        assert_eq!(
            read_header(&buf, 0x0102),
            Ok(UnitHeader {
                kind: NodeKind::Leaf,
                count: 3,
                pages: 1
            })
        );
        assert!(
            read_header(&buf, 7).is_err(),
            "a page at the wrong place is caught"
        );
    }

    #[test]
    fn every_flipped_bit_fails_the_checksum() {
        let mut buf = vec![0u8; PAGE_SIZE];
        buf[100] = 7;
        seal(&mut buf, NodeKind::Branch, 1, Extent { page: 5, pages: 1 });
        for bit in (0..PAGE_SIZE * 8).step_by(13) {
            let mut damaged = buf.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(!verify(&damaged), "bit {bit}");
        }
    }
}
