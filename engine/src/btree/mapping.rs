//! The one place the engine uses `unsafe`: a read-only shared mapping of the
//! B+-tree file, reserved once at its maximum size.
#![allow(unsafe_code)]

use memmap2::{MmapOptions, MmapRaw};

/// A read-only view of a file through `mmap(MAP_SHARED)`.
pub(crate) struct Mapping {
    map: MmapRaw,
}

impl Mapping {
    /// Maps `len` bytes of `file`, which may be shorter: the mapping reserves
    /// address space only, so the file can grow without remapping.
    pub(crate) fn new(file: &std::fs::File, len: u64) -> std::io::Result<Mapping> {
        let len = usize::try_from(len).map_err(|_| std::io::Error::other("mapping too large"))?;
        let map = MmapOptions::new().len(len).map_raw_read_only(file)?;
        Ok(Mapping { map })
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The bytes `[offset, offset + len)`.
    ///
    /// The caller (`FileStorage::read`) has checked that the range lies within
    /// both the mapping and the file, so touching it cannot fault.
    pub(crate) fn slice(&self, offset: usize, len: usize) -> &[u8] {
        debug_assert!(offset.saturating_add(len) <= self.map.len());
        // SAFETY: the range is inside the mapping (checked by the caller and
        // asserted above) and inside the file (so no SIGBUS). The mapping
        // lives as long as `self`, and the slice borrows `self`. The bytes do
        // not change while the slice lives: the engine writes only pages that
        // no live snapshot can reach (copy-on-write; freed pages are reused
        // only after every snapshot that could see them has ended), and never
        // shrinks the file below a reachable page.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(offset), len) }
    }
}
