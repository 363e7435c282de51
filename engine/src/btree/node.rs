//! Leaf and branch nodes: their byte layout (clean, on disk) and their
//! decoded form (dirty, in a write transaction).
//!
//! Branch semantics: child `i` holds keys below `keys[i]`; child `i + 1`
//! holds keys at or above it. Keys compare as bytes.

use crate::btree::page::{
    pages_for, put, read_u16, read_u32, read_u64, seal, Extent, NodeKind, NODE_HEADER_LEN,
    PAGE_SIZE,
};

/// The longest key accepted.
pub const MAX_KEY_LEN: usize = 4096;
/// The longest value accepted (etcd's request limit).
pub const MAX_VALUE_LEN: usize = 1536 * 1024;
/// Values longer than this go to an overflow run of their own.
pub(crate) const INLINE_VALUE_MAX: usize = 1024;

const LEAF_SLOT_LEN: usize = 8;
const BRANCH_SLOT_LEN: usize = 4;
const CHILD_LEN: usize = 8;
const OVERFLOW_FLAG: u16 = 0x8000;
const OVERFLOW_REF_LEN: usize = 16;

/// A node in a write transaction: on disk (`Clean`) or decoded (`Dirty`,
/// an index into the transaction's arena).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeRef {
    Clean(u64),
    Dirty(usize),
}

/// Where a value longer than [`INLINE_VALUE_MAX`] lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OverflowRef {
    pub(crate) extent: Extent,
    pub(crate) len: u32,
    /// CRC-32 of the value's bytes.
    pub(crate) crc: u32,
}

/// A value in a dirty leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Inline(Vec<u8>),
    /// A long value written in this transaction; gets its run at commit.
    PendingOverflow(Vec<u8>),
    Overflow(OverflowRef),
}

impl Value {
    /// A value that takes `bytes` without copying them.
    pub(crate) fn owned(bytes: Vec<u8>) -> Value {
        if bytes.len() > INLINE_VALUE_MAX {
            Value::PendingOverflow(bytes)
        } else {
            Value::Inline(bytes)
        }
    }

    fn encoded_len(&self) -> usize {
        match self {
            Value::Inline(v) => v.len(),
            Value::PendingOverflow(_) | Value::Overflow(_) => OVERFLOW_REF_LEN,
        }
    }
}

/// One key and value of a dirty leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeafEntry {
    pub(crate) key: Vec<u8>,
    pub(crate) value: Value,
}

/// A decoded node being changed by a write transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Dirty {
    Leaf(Vec<LeafEntry>),
    Branch {
        keys: Vec<Vec<u8>>,
        children: Vec<NodeRef>,
    },
}

impl Dirty {
    /// Bytes its encoding takes.
    pub(crate) fn encoded_len(&self) -> usize {
        match self {
            Dirty::Leaf(entries) => {
                NODE_HEADER_LEN
                    + entries
                        .iter()
                        .map(|e| LEAF_SLOT_LEN + e.key.len() + e.value.encoded_len())
                        .sum::<usize>()
            }
            Dirty::Branch { keys, children } => {
                NODE_HEADER_LEN
                    + keys
                        .iter()
                        .map(|k| BRANCH_SLOT_LEN + k.len())
                        .sum::<usize>()
                    + children.len() * CHILD_LEN
            }
        }
    }

    /// Whether it should be split: larger than a page, with enough entries
    /// that each part keeps at least one (a leaf needs 1, a branch 1 key).
    pub(crate) fn needs_split(&self) -> bool {
        let splittable = match self {
            Dirty::Leaf(entries) => entries.len() >= 2,
            Dirty::Branch { keys, .. } => keys.len() >= 3,
        };
        splittable && self.encoded_len() > PAGE_SIZE
    }
}

/// Encodes a dirty leaf whose values all have their final place.
/// Returns the sealed extent bytes.
pub(crate) fn encode_leaf(entries: &[LeafEntry], at: Extent) -> Vec<u8> {
    let mut buf = vec![0u8; at.byte_len()];
    let mut data = NODE_HEADER_LEN + entries.len() * LEAF_SLOT_LEN;
    for (i, entry) in entries.iter().enumerate() {
        let slot = NODE_HEADER_LEN + i * LEAF_SLOT_LEN;
        put(&mut buf, slot, &(data as u16).to_le_bytes());
        put(&mut buf, slot + 2, &(entry.key.len() as u16).to_le_bytes());
        put(&mut buf, data, &entry.key);
        data += entry.key.len();
        put(&mut buf, slot + 4, &(data as u16).to_le_bytes());
        match &entry.value {
            Value::Inline(v) => {
                put(&mut buf, slot + 6, &(v.len() as u16).to_le_bytes());
                put(&mut buf, data, v);
                data += v.len();
            }
            Value::Overflow(r) => {
                put(
                    &mut buf,
                    slot + 6,
                    &(OVERFLOW_FLAG | OVERFLOW_REF_LEN as u16).to_le_bytes(),
                );
                put(&mut buf, data, &r.extent.page.to_le_bytes());
                put(&mut buf, data + 8, &r.len.to_le_bytes());
                put(&mut buf, data + 12, &r.crc.to_le_bytes());
                data += OVERFLOW_REF_LEN;
            }
            Value::PendingOverflow(_) => {
                debug_assert!(
                    false,
                    "overflow values are placed before their leaf is encoded"
                );
            }
        }
    }
    seal(&mut buf, NodeKind::Leaf, entries.len() as u16, at);
    buf
}

/// Encodes a dirty branch whose children all have their final pages.
pub(crate) fn encode_branch(keys: &[Vec<u8>], children: &[u64], at: Extent) -> Vec<u8> {
    let mut buf = vec![0u8; at.byte_len()];
    let children_at = NODE_HEADER_LEN + keys.len() * BRANCH_SLOT_LEN;
    let mut data = children_at + children.len() * CHILD_LEN;
    for (i, child) in children.iter().enumerate() {
        put(&mut buf, children_at + i * CHILD_LEN, &child.to_le_bytes());
    }
    for (i, key) in keys.iter().enumerate() {
        let slot = NODE_HEADER_LEN + i * BRANCH_SLOT_LEN;
        put(&mut buf, slot, &(data as u16).to_le_bytes());
        put(&mut buf, slot + 2, &(key.len() as u16).to_le_bytes());
        put(&mut buf, data, key);
        data += key.len();
    }
    seal(&mut buf, NodeKind::Branch, keys.len() as u16, at);
    buf
}

/// Pages a dirty node needs.
pub(crate) fn pages_needed(node: &Dirty) -> u32 {
    pages_for(node.encoded_len())
}

/// A value as stored in a clean leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoredValue<'a> {
    Inline(&'a [u8]),
    Overflow(OverflowRef),
}

/// A verified clean leaf.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LeafView<'a> {
    bytes: &'a [u8],
    count: usize,
}

impl<'a> LeafView<'a> {
    /// Wraps a unit already checked by [`LeafView::check`].
    pub(crate) fn new(bytes: &'a [u8], count: u16) -> LeafView<'a> {
        LeafView {
            bytes,
            count: usize::from(count),
        }
    }

    /// Structural checks done once, with the checksum, so accessors can
    /// trust offsets: every slot in bounds, keys in strictly rising order.
    pub(crate) fn check(bytes: &[u8], count: u16) -> Result<(), String> {
        let view = LeafView::new(bytes, count);
        let table_end = NODE_HEADER_LEN + view.count * LEAF_SLOT_LEN;
        if table_end > bytes.len() {
            return Err(format!("{count} leaf slots do not fit"));
        }
        let mut previous: Option<&[u8]> = None;
        for i in 0..view.count {
            let slot = NODE_HEADER_LEN + i * LEAF_SLOT_LEN;
            let (key_off, key_len) = (
                read_u16(bytes, slot) as usize,
                read_u16(bytes, slot + 2) as usize,
            );
            let (val_off, val_word) = (
                read_u16(bytes, slot + 4) as usize,
                read_u16(bytes, slot + 6),
            );
            let val_len = usize::from(val_word & !OVERFLOW_FLAG);
            if key_off < table_end || key_off + key_len > bytes.len() || key_len > MAX_KEY_LEN {
                return Err(format!("leaf key {i} out of bounds"));
            }
            if val_off < table_end || val_off + val_len > bytes.len() {
                return Err(format!("leaf value {i} out of bounds"));
            }
            if val_word & OVERFLOW_FLAG != 0 && val_len != OVERFLOW_REF_LEN {
                return Err(format!("leaf value {i} has a bad overflow reference"));
            }
            let key = bytes.get(key_off..key_off + key_len).unwrap_or_default();
            if previous.is_some_and(|p| p >= key) {
                return Err(format!("leaf keys out of order at {i}"));
            }
            previous = Some(key);
        }
        Ok(())
    }

    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Bytes the leaf's encoding takes: what [`Dirty::encoded_len`] gives
    /// for its decoded form, without decoding it.
    pub(crate) fn encoded_len(&self) -> usize {
        NODE_HEADER_LEN
            + (0..self.count)
                .map(|i| {
                    let slot = NODE_HEADER_LEN + i * LEAF_SLOT_LEN;
                    let value_len = usize::from(read_u16(self.bytes, slot + 6) & !OVERFLOW_FLAG);
                    LEAF_SLOT_LEN + usize::from(read_u16(self.bytes, slot + 2)) + value_len
                })
                .sum::<usize>()
    }

    pub(crate) fn key(&self, i: usize) -> &'a [u8] {
        let slot = NODE_HEADER_LEN + i * LEAF_SLOT_LEN;
        let (off, len) = (
            read_u16(self.bytes, slot) as usize,
            read_u16(self.bytes, slot + 2) as usize,
        );
        self.bytes.get(off..off + len).unwrap_or_default()
    }

    pub(crate) fn value(&self, i: usize) -> StoredValue<'a> {
        let slot = NODE_HEADER_LEN + i * LEAF_SLOT_LEN;
        let (off, word) = (
            read_u16(self.bytes, slot + 4) as usize,
            read_u16(self.bytes, slot + 6),
        );
        let len = usize::from(word & !OVERFLOW_FLAG);
        let bytes = self.bytes.get(off..off + len).unwrap_or_default();
        if word & OVERFLOW_FLAG == 0 {
            return StoredValue::Inline(bytes);
        }
        let len = read_u32(bytes, 8);
        StoredValue::Overflow(OverflowRef {
            extent: Extent {
                page: read_u64(bytes, 0),
                pages: pages_for(len as usize),
            },
            len,
            crc: read_u32(bytes, 12),
        })
    }

    /// Decodes into a dirty leaf (copy-on-write).
    pub(crate) fn to_dirty(self) -> Vec<LeafEntry> {
        (0..self.count)
            .map(|i| LeafEntry {
                key: self.key(i).to_vec(),
                value: match self.value(i) {
                    StoredValue::Inline(v) => Value::Inline(v.to_vec()),
                    StoredValue::Overflow(r) => Value::Overflow(r),
                },
            })
            .collect()
    }
}

/// A verified clean branch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BranchView<'a> {
    bytes: &'a [u8],
    count: usize,
}

impl<'a> BranchView<'a> {
    /// Wraps a unit already checked by [`BranchView::check`].
    pub(crate) fn new(bytes: &'a [u8], count: u16) -> BranchView<'a> {
        BranchView {
            bytes,
            count: usize::from(count),
        }
    }

    /// Structural checks, as for leaves; children must be data pages.
    pub(crate) fn check(bytes: &[u8], count: u16) -> Result<(), String> {
        let view = BranchView::new(bytes, count);
        if view.count == 0 {
            return Err("branch without keys".to_string());
        }
        let data_start = view.children_at() + (view.count + 1) * CHILD_LEN;
        if data_start > bytes.len() {
            return Err(format!("{count} branch slots do not fit"));
        }
        let mut previous: Option<&[u8]> = None;
        for i in 0..view.count {
            let slot = NODE_HEADER_LEN + i * BRANCH_SLOT_LEN;
            let (off, len) = (
                read_u16(bytes, slot) as usize,
                read_u16(bytes, slot + 2) as usize,
            );
            if off < data_start || off + len > bytes.len() || len > MAX_KEY_LEN {
                return Err(format!("branch key {i} out of bounds"));
            }
            let key = bytes.get(off..off + len).unwrap_or_default();
            if previous.is_some_and(|p| p >= key) {
                return Err(format!("branch keys out of order at {i}"));
            }
            previous = Some(key);
        }
        for i in 0..=view.count {
            if view.child(i) < crate::btree::page::FIRST_DATA_PAGE {
                return Err(format!("branch child {i} points at a meta page"));
            }
        }
        Ok(())
    }

    fn children_at(&self) -> usize {
        NODE_HEADER_LEN + self.count * BRANCH_SLOT_LEN
    }

    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Bytes the branch's encoding takes, as for [`LeafView::encoded_len`].
    pub(crate) fn encoded_len(&self) -> usize {
        NODE_HEADER_LEN
            + (0..self.count)
                .map(|i| {
                    BRANCH_SLOT_LEN
                        + usize::from(read_u16(
                            self.bytes,
                            NODE_HEADER_LEN + i * BRANCH_SLOT_LEN + 2,
                        ))
                })
                .sum::<usize>()
            + (self.count + 1) * CHILD_LEN
    }

    pub(crate) fn key(&self, i: usize) -> &'a [u8] {
        let slot = NODE_HEADER_LEN + i * BRANCH_SLOT_LEN;
        let (off, len) = (
            read_u16(self.bytes, slot) as usize,
            read_u16(self.bytes, slot + 2) as usize,
        );
        self.bytes.get(off..off + len).unwrap_or_default()
    }

    pub(crate) fn child(&self, i: usize) -> u64 {
        read_u64(self.bytes, self.children_at() + i * CHILD_LEN)
    }

    /// Decodes into a dirty branch (copy-on-write).
    pub(crate) fn to_dirty(self) -> Dirty {
        Dirty::Branch {
            keys: (0..self.count).map(|i| self.key(i).to_vec()).collect(),
            children: (0..=self.count)
                .map(|i| NodeRef::Clean(self.child(i)))
                .collect(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;

    fn entry(key: &[u8], value: Value) -> LeafEntry {
        LeafEntry {
            key: key.to_vec(),
            value,
        }
    }

    #[test]
    fn leaf_round_trips() {
        let overflow = OverflowRef {
            extent: Extent { page: 9, pages: 2 },
            len: 5000,
            crc: 77,
        };
        let entries = vec![
            entry(b"a", Value::Inline(b"one".to_vec())),
            entry(b"b", Value::Overflow(overflow)),
            entry(b"c", Value::Inline(vec![])),
        ];
        let node = Dirty::Leaf(entries.clone());
        let at = Extent {
            page: 4,
            pages: pages_needed(&node),
        };
        let buf = encode_leaf(&entries, at);
        assert!(crate::btree::page::verify(&buf));
        LeafView::check(&buf, 3).unwrap();
        let view = LeafView::new(&buf, 3);
        assert_eq!(view.key(1), b"b");
        assert_eq!(view.value(0), StoredValue::Inline(b"one"));
        assert_eq!(view.value(1), StoredValue::Overflow(overflow));
        assert_eq!(view.to_dirty(), entries);
        assert_eq!(view.encoded_len(), Dirty::Leaf(entries).encoded_len());
    }

    #[test]
    fn branch_round_trips() {
        let keys = vec![b"m".to_vec(), b"t".to_vec()];
        let at = Extent { page: 3, pages: 1 };
        let buf = encode_branch(&keys, &[10, 11, 12], at);
        BranchView::check(&buf, 2).unwrap();
        let view = BranchView::new(&buf, 2);
        assert_eq!((view.key(0), view.key(1)), (&b"m"[..], &b"t"[..]));
        assert_eq!((view.child(0), view.child(2)), (10, 12));
        assert_eq!(view.encoded_len(), view.to_dirty().encoded_len());
    }

    #[test]
    fn checks_reject_out_of_order_and_out_of_bounds() {
        let entries = vec![
            entry(b"b", Value::Inline(vec![])),
            entry(b"a", Value::Inline(vec![])),
        ];
        let buf = encode_leaf(&entries, Extent { page: 2, pages: 1 });
        assert!(LeafView::check(&buf, 2).is_err());
        assert!(LeafView::check(&buf, 600).is_err(), "slots past the page");
        let buf = encode_branch(&[b"k".to_vec()], &[0, 5], Extent { page: 2, pages: 1 });
        assert!(
            BranchView::check(&buf, 1).is_err(),
            "child 0 is a meta page"
        );
    }

    #[test]
    fn largest_entries_take_several_pages() {
        let node = Dirty::Leaf(vec![entry(
            &[1u8; MAX_KEY_LEN],
            Value::Inline(vec![2u8; INLINE_VALUE_MAX]),
        )]);
        assert_eq!(pages_needed(&node), 2);
        assert!(!node.needs_split(), "one entry cannot be split");
    }
}
