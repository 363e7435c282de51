//! Reading nodes: clean ones from the file (verified on first read) and
//! dirty ones from a write transaction's arena, behind one view type.

use std::cell::RefCell;

use crate::btree::node::{
    BranchView, Dirty, LeafEntry, LeafView, NodeRef, OverflowRef, StoredValue, Value,
};
use crate::btree::page::{
    read_header, verify, Extent, NodeKind, UnitHeader, FIRST_DATA_PAGE, PAGE_SIZE,
};
use crate::btree::storage::Storage;
use crate::error::{Error, Result};

/// Reads and verifies clean units of one file.
///
/// A unit's checksum and structure are checked the first time it is read
/// after open (or trusted because this process wrote it); a bitmap
/// remembers which units passed, so steady-state reads cost no hashing.
pub(crate) struct PageReader<S: Storage> {
    pub(crate) storage: S,
    /// Bit `p` set: the unit starting at page `p` verified (or was written
    /// by this process). Owned by the database; one core.
    verified: RefCell<Vec<u64>>,
}

impl<S: Storage> PageReader<S> {
    pub(crate) fn new(storage: S) -> PageReader<S> {
        PageReader {
            storage,
            verified: RefCell::new(Vec::new()),
        }
    }

    fn is_verified(&self, page: u64) -> bool {
        let (word, bit) = ((page / 64) as usize, page % 64);
        self.verified
            .borrow()
            .get(word)
            .is_some_and(|w| w & (1 << bit) != 0)
    }

    pub(crate) fn mark_verified(&self, page: u64) {
        let (word, bit) = ((page / 64) as usize, page % 64);
        let mut bits = self.verified.borrow_mut();
        if bits.len() <= word {
            bits.resize(word + 1, 0);
        }
        if let Some(w) = bits.get_mut(word) {
            *w |= 1 << bit;
        }
    }

    /// Forgets verification of pages at or after `page` (they were freed
    /// and may be rewritten by another process before we read them again).
    pub(crate) fn forget_from(&self, page: u64) {
        let mut bits = self.verified.borrow_mut();
        let word = (page / 64) as usize;
        if word < bits.len() {
            bits.truncate(word + 1);
            if let Some(w) = bits.get_mut(word) {
                *w &= (1u64 << (page % 64)).wrapping_sub(1);
            }
        }
    }

    pub(crate) fn corruption(&self, page: u64, reason: impl Into<String>) -> Error {
        Error::Corruption {
            file: self.storage.path().to_path_buf(),
            page,
            reason: reason.into(),
        }
    }

    /// The verified unit starting at `page` and its header. The header is
    /// read once; checksum and structure are checked on first read only.
    fn verified_unit(&self, page: u64) -> Result<(UnitHeader, &[u8])> {
        if page < FIRST_DATA_PAGE {
            return Err(self.corruption(page, "reference to a meta page"));
        }
        let offset = page
            .checked_mul(PAGE_SIZE as u64)
            .ok_or_else(|| self.corruption(page, "page number overflows"))?;
        let first = self.storage.read(offset, PAGE_SIZE)?;
        let header = read_header(first, page).map_err(|reason| self.corruption(page, reason))?;
        let unit = self
            .storage
            .read(offset, header.pages as usize * PAGE_SIZE)?;
        if !self.is_verified(page) {
            if !verify(unit) {
                return Err(self.corruption(page, "page checksum mismatch"));
            }
            let structure = match header.kind {
                NodeKind::Leaf => LeafView::check(unit, header.count),
                NodeKind::Branch => BranchView::check(unit, header.count),
                NodeKind::FreeList | NodeKind::CommitList => Ok(()),
            };
            structure.map_err(|reason| self.corruption(page, reason))?;
            self.mark_verified(page);
        }
        Ok((header, unit))
    }

    /// The verified unit starting at `page`, expected to be of `kind`.
    pub(crate) fn unit(&self, page: u64, kind: NodeKind) -> Result<(&[u8], u16)> {
        let (header, unit) = self.verified_unit(page)?;
        if header.kind != kind {
            return Err(self.corruption(
                page,
                format!("expected a {kind:?} page, found {:?}", header.kind),
            ));
        }
        Ok((unit, header.count))
    }

    /// A clean node, leaf or branch.
    pub(crate) fn node(&self, page: u64) -> Result<NodeView<'_>> {
        let (header, unit) = self.verified_unit(page)?;
        match header.kind {
            NodeKind::Leaf => Ok(NodeView::Leaf(LeafAccess::Clean(LeafView::new(
                unit,
                header.count,
            )))),
            NodeKind::Branch => Ok(NodeView::Branch(BranchAccess::Clean(BranchView::new(
                unit,
                header.count,
            )))),
            NodeKind::FreeList | NodeKind::CommitList => {
                Err(self.corruption(page, "tree points at a free-list or commit-list page"))
            }
        }
    }

    /// The bytes of a long value, verified against the CRC its leaf holds.
    pub(crate) fn overflow(&self, value: OverflowRef) -> Result<&[u8]> {
        let page = value.extent.page;
        if page < FIRST_DATA_PAGE {
            return Err(self.corruption(page, "overflow value at a meta page"));
        }
        let bytes = self
            .storage
            .read(value.extent.offset(), value.len as usize)?;
        if !self.is_verified(page) {
            if crc32fast::hash(bytes) != value.crc {
                return Err(self.corruption(page, "overflow value checksum mismatch"));
            }
            self.mark_verified(page);
        }
        Ok(bytes)
    }

    /// The extent of the clean unit at `page` (for freeing it).
    pub(crate) fn extent_of(&self, page: u64) -> Result<Extent> {
        let first = self
            .storage
            .read(page.saturating_mul(PAGE_SIZE as u64), PAGE_SIZE)?;
        let header = read_header(first, page).map_err(|reason| self.corruption(page, reason))?;
        Ok(Extent {
            page,
            pages: header.pages,
        })
    }
}

/// A leaf, clean or dirty.
#[derive(Clone, Copy)]
pub(crate) enum LeafAccess<'a> {
    Clean(LeafView<'a>),
    Dirty(&'a [LeafEntry]),
}

/// A value as a reader sees it before resolving overflow runs.
pub(crate) enum ValueAccess<'a> {
    Bytes(&'a [u8]),
    Overflow(OverflowRef),
}

impl<'a> LeafAccess<'a> {
    pub(crate) fn len(&self) -> usize {
        match self {
            LeafAccess::Clean(v) => v.len(),
            LeafAccess::Dirty(e) => e.len(),
        }
    }

    pub(crate) fn key(&self, i: usize) -> &'a [u8] {
        match self {
            LeafAccess::Clean(v) => v.key(i),
            LeafAccess::Dirty(e) => e.get(i).map(|e| e.key.as_slice()).unwrap_or_default(),
        }
    }

    pub(crate) fn value(&self, i: usize) -> ValueAccess<'a> {
        match self {
            LeafAccess::Clean(v) => match v.value(i) {
                StoredValue::Inline(b) => ValueAccess::Bytes(b),
                StoredValue::Overflow(r) => ValueAccess::Overflow(r),
            },
            LeafAccess::Dirty(e) => match e.get(i).map(|e| &e.value) {
                Some(Value::Inline(b)) | Some(Value::PendingOverflow(b)) => ValueAccess::Bytes(b),
                Some(Value::Overflow(r)) => ValueAccess::Overflow(*r),
                None => ValueAccess::Bytes(&[]),
            },
        }
    }

    /// `Ok(i)` if `key` is at `i`, else `Err(i)` where it would go.
    pub(crate) fn search(&self, key: &[u8]) -> std::result::Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.key(mid).cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }
}

/// A branch, clean or dirty.
#[derive(Clone, Copy)]
pub(crate) enum BranchAccess<'a> {
    Clean(BranchView<'a>),
    Dirty {
        keys: &'a [Vec<u8>],
        children: &'a [NodeRef],
    },
}

impl<'a> BranchAccess<'a> {
    /// Number of keys (children are one more).
    pub(crate) fn len(&self) -> usize {
        match self {
            BranchAccess::Clean(v) => v.len(),
            BranchAccess::Dirty { keys, .. } => keys.len(),
        }
    }

    pub(crate) fn key(&self, i: usize) -> &'a [u8] {
        match self {
            BranchAccess::Clean(v) => v.key(i),
            BranchAccess::Dirty { keys, .. } => keys.get(i).map(Vec::as_slice).unwrap_or_default(),
        }
    }

    pub(crate) fn child(&self, i: usize) -> NodeRef {
        match self {
            BranchAccess::Clean(v) => NodeRef::Clean(v.child(i)),
            BranchAccess::Dirty { children, .. } => {
                children.get(i).copied().unwrap_or(NodeRef::Clean(0))
            }
        }
    }

    /// Index of the child whose range holds `key`.
    pub(crate) fn child_for(&self, key: &[u8]) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.key(mid) <= key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

/// A node, clean or dirty.
#[derive(Clone, Copy)]
pub(crate) enum NodeView<'a> {
    Leaf(LeafAccess<'a>),
    Branch(BranchAccess<'a>),
}

impl<'a> NodeView<'a> {
    pub(crate) fn of_dirty(node: &'a Dirty) -> NodeView<'a> {
        match node {
            Dirty::Leaf(entries) => NodeView::Leaf(LeafAccess::Dirty(entries)),
            Dirty::Branch { keys, children } => {
                NodeView::Branch(BranchAccess::Dirty { keys, children })
            }
        }
    }
}

/// Anything nodes can be read from: a snapshot (clean nodes only) or a
/// write transaction (clean and dirty).
pub(crate) trait NodeSource<'a> {
    fn node(&self, at: NodeRef) -> Result<NodeView<'a>>;
    fn overflow(&self, value: OverflowRef) -> Result<&'a [u8]>;
    /// The file the nodes come from, for errors.
    fn file(&self) -> &std::path::Path;

    fn resolve(&self, value: ValueAccess<'a>) -> Result<&'a [u8]> {
        match value {
            ValueAccess::Bytes(b) => Ok(b),
            ValueAccess::Overflow(r) => self.overflow(r),
        }
    }
}

/// Looks `key` up in the tree rooted at `root`.
pub(crate) fn get<'a>(
    src: &impl NodeSource<'a>,
    root: Option<NodeRef>,
    key: &[u8],
) -> Result<Option<&'a [u8]>> {
    let Some(mut at) = root else {
        return Ok(None);
    };
    for _ in 0..=MAX_DEPTH {
        match src.node(at)? {
            NodeView::Branch(b) => at = b.child(b.child_for(key)),
            NodeView::Leaf(l) => {
                return match l.search(key) {
                    Ok(i) => src.resolve(l.value(i)).map(Some),
                    Err(_) => Ok(None),
                };
            }
        }
    }
    Err(too_deep(src.file(), at))
}

/// No real tree is this deep: every branch has at least two children, so
/// 64 levels would hold more than 2^64 entries. A deeper path means the file
/// links a node back to an ancestor; walking on would never end.
pub(crate) const MAX_DEPTH: usize = 64;

/// The error for a path longer than [`MAX_DEPTH`] ending at `at`.
pub(crate) fn too_deep(file: &std::path::Path, at: NodeRef) -> Error {
    let page = match at {
        NodeRef::Clean(page) => page,
        NodeRef::Dirty(_) => 0,
    };
    Error::Corruption {
        file: file.to_path_buf(),
        page,
        reason: format!("tree deeper than {MAX_DEPTH} levels: a node links back to an ancestor"),
    }
}
