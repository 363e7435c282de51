//! The write transaction: copy-on-write changes to named trees.
//!
//! Changing a clean node decodes it into the transaction's arena (a dirty
//! node) and records its pages as freed by this commit; its parent is made
//! dirty the same way, up to the root. Nothing is written until commit,
//! which gives every dirty node its pages (`commit.rs`).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::rc::Rc;

use crate::btree::access::{self, NodeSource, NodeView};
use crate::btree::cursor::Range;
use crate::btree::db::{decode_tree_root, Inner};
use crate::btree::free_space::FreeSpace;
use crate::btree::meta::Meta;
use crate::btree::node::{
    Dirty, LeafEntry, NodeRef, OverflowRef, Value, MAX_KEY_LEN, MAX_VALUE_LEN,
};
use crate::btree::page::{Extent, PAGE_SIZE};
use crate::btree::storage::{FileStorage, Storage};
use crate::error::{Error, Result};

/// Below this many bytes a node is merged with a sibling when both fit a page.
const MERGE_BELOW: usize = PAGE_SIZE / 4;

/// A tree's root during a write transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TreeState {
    pub(crate) root: Option<NodeRef>,
    pub(crate) len: u64,
    pub(crate) changed: bool,
}

/// The one open write transaction. Dropping it without [`WriteTxn::commit`]
/// aborts it: nothing it did reaches the file.
pub struct WriteTxn<S: Storage = FileStorage> {
    pub(crate) inner: Rc<Inner<S>>,
    pub(crate) base: Meta,
    /// Decoded nodes changed by this transaction; `None` once merged away or
    /// written.
    pub(crate) arena: Vec<Option<Dirty>>,
    pub(crate) catalog: Option<NodeRef>,
    pub(crate) trees: BTreeMap<Vec<u8>, TreeState>,
    /// Pages this commit frees (old versions of nodes and values).
    pub(crate) freed: Vec<Extent>,
    /// Pages this transaction may allocate from.
    pub(crate) space: FreeSpace,
    pub(crate) total_pages: u64,
    pub(crate) applied_index: u64,
    /// Set when a change failed part-way: pages it recorded as freed may
    /// still be reachable, so this transaction must not commit.
    pub(crate) poisoned: Option<String>,
}

impl<S: Storage> WriteTxn<S> {
    pub(crate) fn begin(inner: Rc<Inner<S>>) -> Result<WriteTxn<S>> {
        inner.check_usable()?;
        let (base, space) = {
            let mut state = inner.state.borrow_mut();
            if state.writer_active {
                return Err(Error::WriterBusy);
            }
            // Pages freed by commit N are unreachable from snapshots >= N,
            // and from the file after a crash once a commit >= N is durable.
            let oldest_reader = state.readers.keys().next().copied().unwrap_or(u64::MAX);
            let reusable_up_to = oldest_reader.min(state.durable.txn_id);
            let ready: Vec<u64> = state
                .pending
                .range(..=reusable_up_to)
                .map(|(&t, _)| t)
                .collect();
            for txn in ready {
                for extent in state.pending.remove(&txn).unwrap_or_default() {
                    state
                        .reusable
                        .insert(extent)
                        .map_err(|r| Error::Failed(format!("free-space bookkeeping: {r}")))?;
                }
            }
            state.writer_active = true;
            (state.committed, state.reusable.clone())
        };
        Ok(WriteTxn {
            inner,
            base,
            arena: Vec::new(),
            catalog: (base.catalog_root != 0).then_some(NodeRef::Clean(base.catalog_root)),
            trees: BTreeMap::new(),
            freed: Vec::new(),
            space,
            total_pages: base.total_pages,
            applied_index: base.applied_index,
            poisoned: None,
        })
    }

    /// How many nodes this transaction has changed so far (each is held
    /// decoded in memory until the commit).
    pub fn dirty_nodes(&self) -> usize {
        self.arena.len()
    }

    /// The applied index this commit will record.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Sets the applied index this commit records (for keel, the Raft index
    /// whose effects the commit includes).
    pub fn set_applied_index(&mut self, index: u64) {
        self.applied_index = index;
    }

    /// The named tree, created (empty) if it does not exist.
    pub fn tree(&mut self, name: &[u8]) -> Result<TreeMut<'_, S>> {
        check_key(name)?;
        if !self.trees.contains_key(name) {
            let found = access::get(&self.source(), self.catalog, name)?.map(decode_tree_root);
            let (root, len) = found.unwrap_or((None, 0));
            let changed = found.is_none();
            self.trees
                .insert(name.to_vec(), TreeState { root, len, changed });
        }
        Ok(TreeMut {
            txn: self,
            name: name.to_vec(),
        })
    }

    /// A read-only view of the named tree as this transaction sees it,
    /// without taking the transaction mutably, so several views can be
    /// read at once. A tree that does not exist reads as empty.
    pub fn view(&self, name: &[u8]) -> Result<TreeView<'_, S>> {
        let root = match self.trees.get(name) {
            Some(state) => state.root,
            None => access::get(&self.source(), self.catalog, name)?
                .map(decode_tree_root)
                .and_then(|(root, _)| root),
        };
        Ok(TreeView { txn: self, root })
    }

    pub(crate) fn source(&self) -> WriteSource<'_, S> {
        WriteSource { txn: self }
    }

    fn state(&self, name: &[u8]) -> Result<TreeState> {
        self.trees
            .get(name)
            .copied()
            .ok_or_else(|| Error::Failed("tree handle outlived its state".to_string()))
    }

    pub(crate) fn node_mut(&mut self, id: usize) -> Result<&mut Dirty> {
        self.arena
            .get_mut(id)
            .and_then(Option::as_mut)
            .ok_or_else(|| Error::Failed(format!("dirty node {id} is gone")))
    }

    /// Passes `result` through, marking the transaction unable to commit if
    /// it is an error.
    fn poison_on_error<T>(&mut self, result: Result<T>) -> Result<T> {
        if let Err(error) = &result {
            self.poisoned.get_or_insert_with(|| error.to_string());
        }
        result
    }

    /// Drops a dirty node that is no longer part of the tree.
    fn discard(&mut self, id: usize) {
        if let Some(slot) = self.arena.get_mut(id) {
            *slot = None;
        }
    }

    fn push(&mut self, node: Dirty) -> usize {
        self.arena.push(Some(node));
        self.arena.len() - 1
    }

    /// The arena index of `at`, decoding (and freeing) it if it is clean.
    fn make_dirty(&mut self, at: NodeRef) -> Result<usize> {
        let page = match at {
            NodeRef::Dirty(id) => return Ok(id),
            NodeRef::Clean(page) => page,
        };
        let inner = self.inner.clone();
        let dirty = match inner.pages.node(page)? {
            NodeView::Leaf(access::LeafAccess::Clean(view)) => Dirty::Leaf(view.to_dirty()),
            NodeView::Branch(access::BranchAccess::Clean(view)) => view.to_dirty(),
            _ => return Err(Error::Failed("clean page decoded as dirty".to_string())),
        };
        let extent = inner.pages.extent_of(page)?;
        self.free(extent)?;
        Ok(self.push(dirty))
    }

    fn free_value(&mut self, value: Value) -> Result<()> {
        if let Value::Overflow(OverflowRef { extent, .. }) = value {
            self.free(extent)?;
        }
        Ok(())
    }

    /// Records pages this commit frees; they must lie within the file's
    /// committed pages (a damaged reference could name others).
    fn free(&mut self, extent: Extent) -> Result<()> {
        if extent.end() > self.base.total_pages || extent.page < crate::btree::page::FIRST_DATA_PAGE
        {
            return Err(self
                .inner
                .pages
                .corruption(extent.page, "reference outside the file's pages"));
        }
        self.freed.push(extent);
        Ok(())
    }

    /// Inserts into the tree rooted at `root`; returns the new root and the
    /// value replaced, if any.
    pub(crate) fn insert_at(
        &mut self,
        root: Option<NodeRef>,
        key: &[u8],
        value: Value,
    ) -> Result<(NodeRef, Option<Value>)> {
        let Some(root) = root else {
            let leaf = Dirty::Leaf(vec![LeafEntry {
                key: key.to_vec(),
                value,
            }]);
            return Ok((NodeRef::Dirty(self.push(leaf)), None));
        };
        let mut root_id = self.make_dirty(root)?;
        let (old, appended) = self.insert_at_depth(root_id, key, value, 0, true)?;
        let mut shape = Split::for_insert(appended);
        loop {
            let parts = self.split(root_id, shape)?;
            shape = Split::Halves;
            if parts.is_empty() {
                break;
            }
            let mut keys = Vec::with_capacity(parts.len());
            let mut children = vec![NodeRef::Dirty(root_id)];
            for (sep, id) in parts {
                keys.push(sep);
                children.push(NodeRef::Dirty(id));
            }
            root_id = self.push(Dirty::Branch { keys, children });
        }
        Ok((NodeRef::Dirty(root_id), old))
    }

    /// Inserts below dirty node `id`. Returns the value replaced and
    /// whether the key went in after every key of the tree (`rightmost`
    /// says whether `id` is on the tree's right edge).
    fn insert_at_depth(
        &mut self,
        id: usize,
        key: &[u8],
        value: Value,
        depth: usize,
        rightmost: bool,
    ) -> Result<(Option<Value>, bool)> {
        let (slot, child_id, child_rightmost) = match self.step_towards(id, key, depth)? {
            Step::Leaf(entries) => {
                return Ok(
                    match entries.binary_search_by(|e| e.key.as_slice().cmp(key)) {
                        Ok(i) => (
                            entries
                                .get_mut(i)
                                .map(|e| std::mem::replace(&mut e.value, value)),
                            false,
                        ),
                        Err(i) => {
                            let appended = rightmost && i == entries.len();
                            entries.insert(
                                i,
                                LeafEntry {
                                    key: key.to_vec(),
                                    value,
                                },
                            );
                            (None, appended)
                        }
                    },
                );
            }
            Step::Child {
                slot,
                child_id,
                last,
            } => (slot, child_id, rightmost && last),
        };
        let (old, appended) =
            self.insert_at_depth(child_id, key, value, depth + 1, child_rightmost)?;
        let parts = self.split(child_id, Split::for_insert(appended))?;
        if !parts.is_empty() {
            if let Dirty::Branch { keys, children } = self.node_mut(id)? {
                for (n, (sep, part)) in parts.into_iter().enumerate() {
                    keys.insert(slot + n, sep);
                    children.insert(slot + n + 1, NodeRef::Dirty(part));
                }
            }
        }
        Ok((old, appended))
    }

    /// One step from dirty node `id` towards `key`: a leaf's entries, or
    /// the branch's child covering `key`, made dirty and linked in.
    fn step_towards(&mut self, id: usize, key: &[u8], depth: usize) -> Result<Step<'_>> {
        if depth > access::MAX_DEPTH {
            return Err(access::too_deep(
                self.inner.pages.storage.path(),
                NodeRef::Dirty(id),
            ));
        }
        let (slot, child, last) = match self.node_mut(id)? {
            Dirty::Branch { keys, children } => {
                let slot = keys.partition_point(|k| k.as_slice() <= key);
                (
                    slot,
                    children.get(slot).copied().unwrap_or(NodeRef::Clean(0)),
                    slot + 1 == children.len(),
                )
            }
            Dirty::Leaf(_) => {
                return match self.node_mut(id)? {
                    Dirty::Leaf(entries) => Ok(Step::Leaf(entries)),
                    Dirty::Branch { .. } => Err(Error::Failed("leaf expected".to_string())),
                };
            }
        };
        let child_id = self.make_dirty(child)?;
        self.set_child(id, slot, NodeRef::Dirty(child_id))?;
        Ok(Step::Child {
            slot,
            child_id,
            last,
        })
    }

    fn set_child(&mut self, id: usize, slot: usize, child: NodeRef) -> Result<()> {
        if let Dirty::Branch { children, .. } = self.node_mut(id)? {
            if let Some(c) = children.get_mut(slot) {
                *c = child;
            }
        }
        Ok(())
    }

    /// Splits an oversized node into parts that fit a page where possible.
    /// The node keeps the first part; returns `(separator, node)` for the
    /// others, in key order.
    fn split(&mut self, id: usize, shape: Split) -> Result<Vec<(Vec<u8>, usize)>> {
        if !self.node_mut(id)?.needs_split() {
            return Ok(Vec::new());
        }
        let node = self.node_mut(id)?;
        let (sep, right) = match shape {
            Split::Halves => split_half(node),
            Split::OffTheEnd => split_off_last(node),
        };
        let right_id = self.push(right);
        let mut parts = self.split(id, Split::Halves)?;
        parts.push((sep, right_id));
        parts.extend(self.split(right_id, Split::Halves)?);
        Ok(parts)
    }

    /// Removes `key` from the tree rooted at `root`; returns the new root and
    /// the removed value. A missing key changes nothing.
    pub(crate) fn remove_at(
        &mut self,
        root: Option<NodeRef>,
        key: &[u8],
    ) -> Result<(Option<NodeRef>, Option<Value>)> {
        let Some(root) = root else {
            return Ok((None, None));
        };
        if access::get(&self.source(), Some(root), key)?.is_none() {
            return Ok((Some(root), None));
        }
        let root_id = self.make_dirty(root)?;
        let old = self.remove_below(root_id, key)?;
        // A branch left with one child gives way to it; an empty leaf root
        // means an empty tree.
        let mut root = NodeRef::Dirty(root_id);
        while let NodeRef::Dirty(id) = root {
            match self.node_mut(id)? {
                Dirty::Branch { keys, children } if keys.is_empty() => {
                    let only = children.first().copied();
                    self.discard(id);
                    match only {
                        Some(child) => root = child,
                        None => return Ok((None, old)),
                    }
                }
                Dirty::Leaf(entries) if entries.is_empty() => {
                    self.discard(id);
                    return Ok((None, old));
                }
                _ => break,
            }
        }
        Ok((Some(root), old))
    }

    fn remove_below(&mut self, id: usize, key: &[u8]) -> Result<Option<Value>> {
        self.remove_at_depth(id, key, 0)
    }

    fn remove_at_depth(&mut self, id: usize, key: &[u8], depth: usize) -> Result<Option<Value>> {
        let (slot, child_id) = match self.step_towards(id, key, depth)? {
            Step::Leaf(entries) => {
                return Ok(
                    match entries.binary_search_by(|e| e.key.as_slice().cmp(key)) {
                        Ok(i) => Some(entries.remove(i).value),
                        Err(_) => None,
                    },
                );
            }
            Step::Child { slot, child_id, .. } => (slot, child_id),
        };
        let old = self.remove_at_depth(child_id, key, depth + 1)?;
        self.fix_child(id, slot, child_id)?;
        Ok(old)
    }

    /// After a removal below `parent`'s child at `slot`: drop it if it is
    /// empty; merge it into a sibling if it is a branch left without keys
    /// (collapsing it in place would lift its subtree a level, and a B+-tree
    /// keeps every leaf at one depth; only the root may collapse); merge it
    /// with a sibling if it is small and both fit one page.
    fn fix_child(&mut self, parent: usize, slot: usize, child_id: usize) -> Result<()> {
        let node = self.node_mut(child_id)?;
        let small = node.encoded_len() < MERGE_BELOW;
        let (empty, keyless) = match node {
            Dirty::Leaf(entries) => (entries.is_empty(), false),
            Dirty::Branch { keys, children } => (children.is_empty(), keys.is_empty()),
        };
        if empty {
            self.discard(child_id);
            if let Dirty::Branch { keys, children } = self.node_mut(parent)? {
                children.remove(slot);
                if !keys.is_empty() {
                    keys.remove(slot.saturating_sub(1));
                }
            }
            return Ok(());
        }
        if keyless || small {
            self.try_merge(parent, slot, keyless)?;
        }
        Ok(())
    }

    /// Merges the child at `slot` with a neighbour when the two fit a page,
    /// or always when `force` (the result is split again if it must be).
    fn try_merge(&mut self, parent: usize, slot: usize, force: bool) -> Result<()> {
        let (left_slot, sep, left, right) = match self.node_mut(parent)? {
            Dirty::Branch { keys, children } if !keys.is_empty() => {
                let left_slot = if slot > 0 { slot - 1 } else { slot };
                let sep = keys.get(left_slot).cloned().unwrap_or_default();
                let left = children
                    .get(left_slot)
                    .copied()
                    .unwrap_or(NodeRef::Clean(0));
                let right = children
                    .get(left_slot + 1)
                    .copied()
                    .unwrap_or(NodeRef::Clean(0));
                (left_slot, sep, left, right)
            }
            _ => return Ok(()),
        };
        // Size the pair before copying anything: a merge that cannot happen
        // must not copy (and free) a clean sibling.
        let size_of = |txn: &Self, at: NodeRef| -> Result<usize> {
            Ok(match at {
                NodeRef::Dirty(id) => txn
                    .arena
                    .get(id)
                    .and_then(Option::as_ref)
                    .map_or(usize::MAX / 4, Dirty::encoded_len),
                NodeRef::Clean(page) => match txn.inner.pages.node(page)? {
                    NodeView::Leaf(access::LeafAccess::Clean(v)) => v.encoded_len(),
                    NodeView::Branch(access::BranchAccess::Clean(v)) => v.encoded_len(),
                    _ => usize::MAX / 4,
                },
            })
        };
        let combined = size_of(self, left)? + size_of(self, right)? + sep.len() + 8;
        if !force && combined > PAGE_SIZE + crate::btree::page::NODE_HEADER_LEN {
            return Ok(());
        }
        let left_id = self.make_dirty(left)?;
        let right_id = self.make_dirty(right)?;
        let right_node = self.arena.get_mut(right_id).and_then(Option::take);
        let merged_fits = {
            let left_node = self.node_mut(left_id)?;
            match (left_node, right_node) {
                (Dirty::Leaf(l), Some(Dirty::Leaf(r))) => {
                    l.extend(r);
                    true
                }
                (
                    Dirty::Branch { keys, children },
                    Some(Dirty::Branch {
                        keys: rk,
                        children: rc,
                    }),
                ) => {
                    keys.push(sep);
                    keys.extend(rk);
                    children.extend(rc);
                    true
                }
                (_, _) => {
                    // Siblings at different levels: the file is damaged.
                    return Err(self
                        .inner
                        .pages
                        .corruption(0, "sibling nodes at different depths"));
                }
            }
        };
        if !merged_fits {
            return Ok(());
        }
        if let Dirty::Branch { keys, children } = self.node_mut(parent)? {
            keys.remove(left_slot);
            children.remove(left_slot + 1);
            if let Some(c) = children.get_mut(left_slot) {
                *c = NodeRef::Dirty(left_id);
            }
        }
        // The merged node may exceed a page by a little; split it again.
        let parts = self.split(left_id, Split::Halves)?;
        if let Dirty::Branch { keys, children } = self.node_mut(parent)? {
            for (n, (sep, part)) in parts.into_iter().enumerate() {
                keys.insert(left_slot + n, sep);
                children.insert(left_slot + n + 1, NodeRef::Dirty(part));
            }
        }
        Ok(())
    }
}

impl<S: Storage> Drop for WriteTxn<S> {
    fn drop(&mut self) {
        self.inner.state.borrow_mut().writer_active = false;
    }
}

/// One step down a write transaction's path (see `WriteTxn::step_towards`).
enum Step<'a> {
    /// The node is a leaf: its entries.
    Leaf(&'a mut Vec<LeafEntry>),
    /// The node is a branch: the child covering the key, dirty, at `slot`;
    /// `last` when it is the branch's last child.
    Child {
        slot: usize,
        child_id: usize,
        last: bool,
    },
}

/// Where an oversized node is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    /// Into halves by bytes: random inserts then find room on both sides.
    Halves,
    /// Just before its last entry (a branch: its last two children). For a
    /// node on the tree's right edge that overflowed because a key went in
    /// past every other: keys that only ever grow (keel's history, keyed by
    /// revision) would otherwise leave every node half empty, and each
    /// commit would write twice the pages its rows need.
    OffTheEnd,
}

impl Split {
    fn for_insert(appended: bool) -> Split {
        if appended {
            Split::OffTheEnd
        } else {
            Split::Halves
        }
    }
}

/// Splits a node in two halves by bytes; the node keeps the left half.
fn split_half(node: &mut Dirty) -> (Vec<u8>, Dirty) {
    let half = node.encoded_len() / 2;
    match node {
        Dirty::Leaf(entries) => {
            let mut acc = 0;
            let mut at = entries.len() - 1;
            for (i, e) in entries.iter().enumerate() {
                acc += e.key.len()
                    + 8
                    + match &e.value {
                        Value::Inline(v) => v.len(),
                        _ => 16,
                    };
                if acc >= half {
                    at = i + 1;
                    break;
                }
            }
            let at = at.clamp(1, entries.len() - 1);
            let right = entries.split_off(at);
            let sep = right.first().map(|e| e.key.clone()).unwrap_or_default();
            (sep, Dirty::Leaf(right))
        }
        Dirty::Branch { keys, children } => {
            let mut acc = 0;
            let mut mid = keys.len() / 2;
            for (i, k) in keys.iter().enumerate() {
                acc += k.len() + 12;
                if acc >= half {
                    mid = i;
                    break;
                }
            }
            let mid = mid.clamp(1, keys.len() - 2);
            let right_keys = keys.split_off(mid + 1);
            let sep = keys.pop().unwrap_or_default();
            let right_children = children.split_off(mid + 1);
            (
                sep,
                Dirty::Branch {
                    keys: right_keys,
                    children: right_children,
                },
            )
        }
    }
}

/// Splits a node before its last entry (a branch before its last two
/// children, so both sides keep a key); the node keeps the rest. Callers
/// check [`Dirty::needs_split`], so a leaf has two entries, a branch three
/// keys.
fn split_off_last(node: &mut Dirty) -> (Vec<u8>, Dirty) {
    match node {
        Dirty::Leaf(entries) => {
            let at = entries.len().saturating_sub(1).max(1);
            let right = entries.split_off(at);
            let sep = right.first().map(|e| e.key.clone()).unwrap_or_default();
            (sep, Dirty::Leaf(right))
        }
        Dirty::Branch { keys, children } => {
            let at = children.len().saturating_sub(2).max(1);
            let right_children = children.split_off(at);
            let right_keys = keys.split_off(at);
            let sep = keys.pop().unwrap_or_default();
            (
                sep,
                Dirty::Branch {
                    keys: right_keys,
                    children: right_children,
                },
            )
        }
    }
}

fn check_key(key: &[u8]) -> Result<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(Error::KeyTooLarge {
            len: key.len(),
            max: MAX_KEY_LEN,
        });
    }
    Ok(())
}

/// Nodes of a write transaction: its dirty nodes and the clean pages below.
#[derive(Clone, Copy)]
pub struct WriteSource<'a, S: Storage> {
    txn: &'a WriteTxn<S>,
}

impl<'a, S: Storage> NodeSource<'a> for WriteSource<'a, S> {
    fn node(&self, at: NodeRef) -> Result<NodeView<'a>> {
        match at {
            NodeRef::Clean(page) => self.txn.inner.pages.node(page),
            NodeRef::Dirty(id) => self
                .txn
                .arena
                .get(id)
                .and_then(Option::as_ref)
                .map(NodeView::of_dirty)
                .ok_or_else(|| Error::Failed(format!("dirty node {id} is gone"))),
        }
    }

    fn overflow(&self, value: OverflowRef) -> Result<&'a [u8]> {
        self.txn.inner.pages.overflow(value)
    }

    fn file(&self) -> &std::path::Path {
        self.txn.inner.pages.storage.path()
    }
}

/// A tree being changed by a write transaction.
pub struct TreeMut<'a, S: Storage> {
    txn: &'a mut WriteTxn<S>,
    name: Vec<u8>,
}

impl<S: Storage> TreeMut<'_, S> {
    /// Records this tree's new root and length. Its entry exists: `tree`
    /// made it, and every caller read it with `state` first.
    fn set_state(&mut self, state: TreeState) {
        if let Some(slot) = self.txn.trees.get_mut(&self.name) {
            *slot = state;
        }
    }

    /// Stores `value` under `key`; returns whether a value was replaced.
    ///
    /// # Errors
    /// [`Error::KeyTooLarge`] beyond 4 KiB, [`Error::ValueTooLarge`] beyond
    /// 1.5 MiB; nothing is changed.
    pub fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<bool> {
        self.insert_owned(key, value.to_vec())
    }

    /// As [`TreeMut::insert`], taking the value's bytes instead of a copy.
    pub fn insert_owned(&mut self, key: &[u8], value: Vec<u8>) -> Result<bool> {
        check_key(key)?;
        if value.len() > MAX_VALUE_LEN {
            return Err(Error::ValueTooLarge {
                len: value.len(),
                max: MAX_VALUE_LEN,
            });
        }
        let mut state = self.txn.state(&self.name)?;
        let result = self.txn.insert_at(state.root, key, Value::owned(value));
        let (root, old) = self.txn.poison_on_error(result)?;
        let replaced = old.is_some();
        if let Some(old) = old {
            let freed = self.txn.free_value(old);
            self.txn.poison_on_error(freed)?;
        } else {
            state.len += 1;
        }
        state.root = Some(root);
        state.changed = true;
        self.set_state(state);
        Ok(replaced)
    }

    /// Removes `key`; returns whether it was there.
    pub fn remove(&mut self, key: &[u8]) -> Result<bool> {
        let mut state = self.txn.state(&self.name)?;
        let result = self.txn.remove_at(state.root, key);
        let (root, old) = self.txn.poison_on_error(result)?;
        let Some(old) = old else {
            return Ok(false);
        };
        let freed = self.txn.free_value(old);
        self.txn.poison_on_error(freed)?;
        state.len = state.len.saturating_sub(1);
        state.root = root;
        state.changed = true;
        self.set_state(state);
        Ok(true)
    }

    /// The value under `key`, as this transaction sees it.
    pub fn get(&self, key: &[u8]) -> Result<Option<&[u8]>> {
        let state = self.txn.state(&self.name)?;
        access::get(&self.txn.source(), state.root, key)
    }

    /// Entries within the bounds, as this transaction sees them.
    pub fn range(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
    ) -> Result<Range<'_, WriteSource<'_, S>>> {
        let state = self.txn.state(&self.name)?;
        Range::new(self.txn.source(), state.root, start, end)
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        self.txn.trees.get(&self.name).map_or(0, |s| s.len)
    }

    /// Whether the tree holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A tree read through a write transaction, by shared reference.
pub struct TreeView<'a, S: Storage> {
    txn: &'a WriteTxn<S>,
    root: Option<NodeRef>,
}

impl<'a, S: Storage> TreeView<'a, S> {
    /// The value under `key`, as the transaction sees it.
    pub fn get(&self, key: &[u8]) -> Result<Option<&'a [u8]>> {
        access::get(&self.txn.source(), self.root, key)
    }

    /// Entries within the bounds, in order (reversible).
    pub fn range(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
    ) -> Result<Range<'a, WriteSource<'a, S>>> {
        Range::new(self.txn.source(), self.root, start, end)
    }
}
