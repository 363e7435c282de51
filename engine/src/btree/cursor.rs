//! Ordered iteration over a key range, from both ends.
//!
//! Nodes have no sibling links (copy-on-write would have to rewrite them),
//! so each end keeps its path from the root: `(node, index)` per level, the
//! index being the child taken in a branch or the entry in the leaf. The two
//! ends stop when they cross; keys are unique, so they meet on one key.

use std::ops::Bound;

use crate::btree::access::{too_deep, NodeSource, NodeView, MAX_DEPTH};
use crate::btree::node::NodeRef;
use crate::error::Result;

type Path<'a> = Vec<(NodeView<'a>, usize)>;

/// An iterator over `(key, value)` pairs of a range, in key order;
/// [`DoubleEndedIterator`] walks it backwards.
pub struct Range<'a, Src> {
    src: Src,
    front: Path<'a>,
    back: Path<'a>,
    done: bool,
}

// `NodeSource` is crate-private on purpose: the only sources are snapshots
// and write transactions, so callers name `Range` but never implement one.
#[allow(private_bounds)]
impl<'a, Src: NodeSource<'a>> Range<'a, Src> {
    pub(crate) fn new(
        src: Src,
        root: Option<NodeRef>,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
    ) -> Result<Self> {
        let mut range = Range {
            src,
            front: Vec::new(),
            back: Vec::new(),
            done: true,
        };
        let Some(root) = root else {
            return Ok(range);
        };
        let front_ok = range.seek_front(root, start)?;
        let back_ok = range.seek_back(root, end)?;
        range.done = !(front_ok && back_ok);
        if !range.done {
            if let (Some(f), Some(b)) = (leaf_key(&range.front), leaf_key(&range.back)) {
                range.done = f > b;
            }
        }
        Ok(range)
    }

    /// Positions the front on the first entry inside `start`.
    fn seek_front(&mut self, root: NodeRef, start: Bound<&[u8]>) -> Result<bool> {
        let mut at = root;
        loop {
            if self.front.len() > MAX_DEPTH {
                return Err(too_deep(self.src.file(), at));
            }
            let node = self.src.node(at)?;
            match node {
                NodeView::Branch(b) => {
                    let i = match start {
                        Bound::Unbounded => 0,
                        Bound::Included(k) | Bound::Excluded(k) => b.child_for(k),
                    };
                    self.front.push((node, i));
                    at = b.child(i);
                }
                NodeView::Leaf(l) => {
                    let i = match start {
                        Bound::Unbounded => 0,
                        Bound::Included(k) => l.search(k).unwrap_or_else(|i| i),
                        Bound::Excluded(k) => l.search(k).map_or_else(|i| i, |i| i + 1),
                    };
                    self.front.push((node, i));
                    if i >= l.len() {
                        return self.advance_front();
                    }
                    return Ok(true);
                }
            }
        }
    }

    /// Positions the back on the last entry inside `end`.
    fn seek_back(&mut self, root: NodeRef, end: Bound<&[u8]>) -> Result<bool> {
        let mut at = root;
        loop {
            if self.back.len() > MAX_DEPTH {
                return Err(too_deep(self.src.file(), at));
            }
            let node = self.src.node(at)?;
            match node {
                NodeView::Branch(b) => {
                    let i = match end {
                        Bound::Unbounded => b.len(),
                        Bound::Included(k) | Bound::Excluded(k) => b.child_for(k),
                    };
                    self.back.push((node, i));
                    at = b.child(i);
                }
                NodeView::Leaf(l) => {
                    // One past the last entry inside the bound.
                    let past = match end {
                        Bound::Unbounded => l.len(),
                        Bound::Included(k) => l.search(k).map_or_else(|i| i, |i| i + 1),
                        Bound::Excluded(k) => l.search(k).unwrap_or_else(|i| i),
                    };
                    if past == 0 {
                        self.back.push((node, 0));
                        return self.retreat_back();
                    }
                    self.back.push((node, past - 1));
                    return Ok(true);
                }
            }
        }
    }

    /// Moves the front to the next entry; `false` when there is none.
    fn advance_front(&mut self) -> Result<bool> {
        if let Some((NodeView::Leaf(l), i)) = self.front.last_mut() {
            *i += 1;
            if *i < l.len() {
                return Ok(true);
            }
        }
        loop {
            self.front.pop();
            let Some((NodeView::Branch(b), i)) = self.front.last_mut() else {
                return Ok(false);
            };
            if *i < b.len() {
                *i += 1;
                let mut at = b.child(*i);
                loop {
                    if self.front.len() > MAX_DEPTH {
                        return Err(too_deep(self.src.file(), at));
                    }
                    let node = self.src.node(at)?;
                    self.front.push((node, 0));
                    match node {
                        NodeView::Branch(b) => at = b.child(0),
                        NodeView::Leaf(l) if l.len() > 0 => return Ok(true),
                        NodeView::Leaf(_) => break,
                    }
                }
            }
        }
    }

    /// Moves the back to the previous entry; `false` when there is none.
    fn retreat_back(&mut self) -> Result<bool> {
        if let Some((NodeView::Leaf(l), i)) = self.back.last_mut() {
            if *i > 0 && *i <= l.len() {
                *i -= 1;
                return Ok(true);
            }
        }
        loop {
            self.back.pop();
            let Some((NodeView::Branch(b), i)) = self.back.last_mut() else {
                return Ok(false);
            };
            if *i > 0 {
                *i -= 1;
                let mut at = b.child(*i);
                loop {
                    if self.back.len() > MAX_DEPTH {
                        return Err(too_deep(self.src.file(), at));
                    }
                    let node = self.src.node(at)?;
                    match node {
                        NodeView::Branch(b) => {
                            self.back.push((node, b.len()));
                            at = b.child(b.len());
                        }
                        NodeView::Leaf(l) if l.len() > 0 => {
                            self.back.push((node, l.len() - 1));
                            return Ok(true);
                        }
                        NodeView::Leaf(_) => {
                            self.back.push((node, 0));
                            break;
                        }
                    }
                }
            }
        }
    }

    fn entry(&self, path: &Path<'a>) -> Result<Option<(&'a [u8], &'a [u8])>> {
        match path.last() {
            Some((NodeView::Leaf(l), i)) if *i < l.len() => {
                let value = self.src.resolve(l.value(*i))?;
                Ok(Some((l.key(*i), value)))
            }
            _ => Ok(None),
        }
    }

    fn step(&mut self, forward: bool) -> Result<Option<(&'a [u8], &'a [u8])>> {
        if self.done {
            return Ok(None);
        }
        let (Some(front), Some(back)) = (leaf_key(&self.front), leaf_key(&self.back)) else {
            self.done = true;
            return Ok(None);
        };
        if front > back {
            self.done = true;
            return Ok(None);
        }
        let item = if forward {
            self.entry(&self.front)?
        } else {
            self.entry(&self.back)?
        };
        if front == back {
            self.done = true;
        } else {
            let moved = if forward {
                self.advance_front()?
            } else {
                self.retreat_back()?
            };
            self.done = !moved;
        }
        Ok(item)
    }
}

fn leaf_key<'a>(path: &Path<'a>) -> Option<&'a [u8]> {
    match path.last() {
        Some((NodeView::Leaf(l), i)) if *i < l.len() => Some(l.key(*i)),
        _ => None,
    }
}

#[allow(private_bounds)]
impl<'a, Src: NodeSource<'a>> Iterator for Range<'a, Src> {
    type Item = Result<(&'a [u8], &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.step(true) {
            Ok(item) => item.map(Ok),
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[allow(private_bounds)]
impl<'a, Src: NodeSource<'a>> DoubleEndedIterator for Range<'a, Src> {
    fn next_back(&mut self) -> Option<Self::Item> {
        match self.step(false) {
            Ok(item) => item.map(Ok),
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
