//! Committing a write transaction (the protocol is in `engine/FORMAT.md`):
//!
//! 1. every dirty node and new long value gets pages (reused free pages
//!    first, then the end of the file), children before parents;
//! 2. changed tree roots go into the catalog tree, which is placed the same way;
//! 3. the free list is rewritten into fresh pages;
//! 4. all those pages are written and synced;
//! 5. the meta slot of this commit is written and synced.
//!
//! Until step 5 is durable the previous commit is intact: no page it can
//! reach was written. A failure in steps 4-5 stops the database (fail-stop).
//!
//! With [`CommitSync::OneSync`], steps 4 and 5 share one sync, and step 3
//! also writes a commit list (every extent written, with a CRC of its
//! bytes) that opening checks before trusting the newest meta slot.
//!
//! An unsynced commit does steps 1-4 without the sync and skips step 5:
//! readers see it, the disk still names the last durable commit. Pages it
//! frees wait for a durable commit before reuse (see `WriteTxn::begin`).
//!
//! A deferred commit ([`WriteTxn::commit_deferred`]) is an unsynced commit
//! that also picks its meta slot: the syncs and the meta write of steps 4-5
//! are left to the caller ([`DeferredDurability`]), which may run them on
//! another thread while new transactions go on, unsynced, on top of it.

/// What a written extent is, for the bookkeeping after the commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Data,
    FreeList,
    CommitList,
}

type Writes = Vec<(Extent, Vec<u8>, Role)>;

/// How one commit reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    TwoSyncs,
    OneSync,
    /// Pages written, no sync, no meta slot.
    Unsynced,
    /// Pages written and a meta slot picked; the syncs and the meta write
    /// are the caller's.
    Deferred,
}

/// What is left of a deferred commit to make it durable, in this order:
/// sync the file, write the meta slot, sync again (run by
/// [`crate::btree::Database::deferred_job`] or
/// [`crate::btree::Database::complete_deferred`]); then report it with
/// [`crate::btree::Database::durable_done`] (or a failure with
/// [`crate::btree::Database::durable_failed`]). Until then a crash returns
/// the file to the last durable commit, and no other durable commit may
/// start.
#[derive(Debug, Clone)]
pub struct DeferredDurability {
    pub(crate) meta: Meta,
    /// The meta slot's bytes.
    pub(crate) meta_page: Vec<u8>,
    /// Where they go in the file.
    pub(crate) meta_offset: u64,
}

use crate::btree::commit_list::{self, Written, ENTRIES_PER_PAGE};
use crate::btree::db::{encode_tree_root, CommitSync, Inner};
use crate::btree::free_space::{encode_page, EXTENTS_PER_PAGE};
use crate::btree::meta::Meta;
use crate::btree::node::{
    encode_branch, encode_leaf, pages_needed, Dirty, NodeRef, OverflowRef, Value,
};
use crate::btree::page::{pages_for, Extent, PAGE_SIZE};
use crate::btree::storage::Storage;
use crate::btree::write::WriteTxn;
use crate::error::{Error, Result};

/// The file grows in steps of at least this much, so that most commits do
/// not change its size (a size change makes fdatasync commit metadata).
const GROWTH_STEP: u64 = 1 << 20;

/// Pages a commit's catalog changes may take, counted from above.
const CATALOG_PAGES: u64 = 8;

/// Bytes of adjacent pages gathered into one write.
const WRITE_RUN_BYTES: usize = 1 << 20;
/// The free tail of the file is given back once it is this many pages and
/// an eighth of the file.
const MIN_TAIL_PAGES: u64 = 256;

impl<S: Storage> WriteTxn<S> {
    /// Makes every change durable and visible to new readers.
    ///
    /// After [`WriteTxn::commit_unsynced`] commits, this one also makes
    /// theirs durable, and always with two syncs: the pages they wrote are
    /// not in this commit's commit list.
    ///
    /// # Errors
    /// I/O errors while writing or syncing stop the database (every later
    /// call fails with [`Error::Failed`]); the previous commit stays intact
    /// on disk. [`Error::Full`] refuses the commit before it writes and
    /// leaves the database usable.
    pub fn commit(self) -> Result<()> {
        let caught_up = {
            let state = self.inner.state.borrow();
            state.committed.txn_id == state.durable.txn_id
        };
        let mode = match self.inner.commit_sync {
            CommitSync::OneSync if caught_up => Mode::OneSync,
            _ => Mode::TwoSyncs,
        };
        self.finish(mode).map(drop)
    }

    /// Makes every change visible to new readers without making it durable:
    /// the pages are written (into the page cache) but neither synced nor
    /// named by a meta slot, so a crash returns the file to the last durable
    /// commit. The caller keeps what it needs to redo these changes (keel:
    /// the WAL) until a later [`WriteTxn::commit`] makes them durable.
    ///
    /// Pages these commits free are not reused until a durable commit
    /// follows, so the last durable commit stays intact on disk.
    ///
    /// # Errors
    /// As [`WriteTxn::commit`].
    pub fn commit_unsynced(self) -> Result<()> {
        self.finish(Mode::Unsynced).map(drop)
    }

    /// Makes every change visible to new readers, as
    /// [`WriteTxn::commit_unsynced`], and returns what is left to make this
    /// commit (and the unsynced ones before it) durable: two syncs and a
    /// meta write, which the caller runs where it likes, then reports.
    /// Transactions may begin and commit unsynced meanwhile.
    ///
    /// # Errors
    /// As [`WriteTxn::commit`]; [`Error::InvalidArgument`] while another
    /// deferred commit is not yet reported.
    pub fn commit_deferred(self) -> Result<DeferredDurability> {
        let meta = self.finish(Mode::Deferred)?;
        Ok(DeferredDurability {
            meta,
            meta_page: meta.encode(),
            meta_offset: meta.slot() * PAGE_SIZE as u64,
        })
    }

    /// Makes sure the file has room for this transaction's commit and
    /// `headroom` bytes more, growing it if not: the new bytes are
    /// allocated, so a full file system shows here. Nothing else changes,
    /// so a refusal leaves the transaction and the database as they were,
    /// and a commit after a success needs no room it does not have.
    ///
    /// The room a commit needs is counted from above: every changed node
    /// and new long value placed anew, a new free list, and a few pages for
    /// the catalog. Runs of several pages fit if the file's unused tail
    /// takes them all, or if with single pages they fit the tail and the
    /// free pages any order of placement is sure to use
    /// ([`WriteTxn::surely_usable`]); single pages and the headroom may
    /// come from any free page.
    ///
    /// # Errors
    /// [`Error::Full`] when the file's capacity is too small; an I/O error
    /// for which [`Error::is_no_space`] holds when the file system is full.
    /// Either way nothing changed.
    pub fn ensure_room(&self, headroom: u64) -> Result<()> {
        let (single, runs, longest_run) = self.pages_to_place();
        let page = PAGE_SIZE as u64;
        let storage = &self.inner.pages.storage;
        let tail = (storage.len() / page).saturating_sub(self.total_pages);
        let headroom_pages = headroom.div_ceil(page);
        let wanted = single + runs + headroom_pages;
        // Either bound makes every placement fit: runs all in the tail and
        // singles anywhere, or everything in the tail and the free pages
        // any order of placement fills.
        let fits = (runs <= tail && wanted <= tail + self.space.pages())
            || wanted <= tail + self.surely_usable(longest_run);
        if fits {
            return Ok(());
        }
        let needed = (self.total_pages + single + runs + headroom_pages) * page;
        if needed > storage.capacity() {
            return Err(Error::Full {
                file: storage.path().to_path_buf(),
                needed,
                limit: storage.capacity(),
            });
        }
        let grown = needed
            .max(storage.len() + storage.len() / 8)
            .next_multiple_of(GROWTH_STEP)
            .min(storage.capacity());
        storage.set_len(grown)
    }

    /// Free pages a commit is sure to fill before it takes any of the
    /// tail, when no run it places is longer than `longest_run` pages.
    ///
    /// Every placement takes the first free extent it fits in, else the
    /// tail. A single page goes to the tail only once no free page is
    /// left. A run goes there only when every extent has fewer pages left
    /// than it, so fewer than `longest_run`; an extent's leftovers only
    /// shrink, so each wastes at most `longest_run - 1` pages. Whatever the
    /// order, at least this many free pages are used first.
    fn surely_usable(&self, longest_run: u64) -> u64 {
        let wasted = longest_run.saturating_sub(1);
        self.space
            .extents()
            .map(|extent| u64::from(extent.pages).saturating_sub(wasted))
            .sum()
    }

    /// Pages a commit would place, counted from above: `(single pages,
    /// pages in runs of several, the longest run)`.
    fn pages_to_place(&self) -> (u64, u64, u64) {
        let (mut single, mut runs, mut longest) = (0u64, 0u64, 1u64);
        let mut count = |pages: u32| {
            let pages = u64::from(pages);
            if pages <= 1 {
                single += pages;
            } else {
                runs += pages;
                longest = longest.max(pages);
            }
        };
        for node in self.arena.iter().flatten() {
            count(pages_needed(node));
            if let Dirty::Leaf(entries) = node {
                for entry in entries {
                    if let Value::PendingOverflow(bytes) = &entry.value {
                        count(pages_for(bytes.len()));
                    }
                }
            }
        }
        // The free list lists every free extent (those freed now too), and
        // the catalog changes at commit: a few pages more.
        let pending: usize = self
            .inner
            .state
            .borrow()
            .pending
            .values()
            .map(Vec::len)
            .sum();
        let extents = self.space.len() + self.freed.len() + pending + 1;
        single += extents.div_ceil(EXTENTS_PER_PAGE) as u64 + CATALOG_PAGES;
        (single, runs, longest)
    }

    fn finish(mut self, mode: Mode) -> Result<Meta> {
        // A sync may have failed since this transaction began (a deferred
        // commit's, on another thread): its pages may be lost, so nothing
        // may build on them.
        self.inner.check_usable()?;
        if let Some(reason) = &self.poisoned {
            return Err(Error::Failed(format!(
                "transaction cannot commit after an error: {reason}"
            )));
        }
        if mode != Mode::Unsynced && self.inner.state.borrow().deferred.is_some() {
            // Its slot is not yet the durable one: a second durable commit
            // could pick the same slot.
            return Err(Error::InvalidArgument(
                "a deferred commit is not yet durable".to_string(),
            ));
        }
        let mut txn_id = self
            .base
            .txn_id
            .checked_add(1)
            .ok_or_else(|| Error::Failed("transaction ids exhausted".to_string()))?;
        if mode != Mode::Unsynced && txn_id % 2 == self.inner.state.borrow().durable.slot() {
            // Commit t goes to slot t % 2. Unsynced commits use ids without
            // writing a slot, so skip one id if needed to land in the slot
            // that does not hold the last durable commit. The format already
            // relies on a slot's first sector being written whole; this keeps
            // the last durable slot untouched even on media where it is not.
            txn_id = txn_id
                .checked_add(1)
                .ok_or_else(|| Error::Failed("transaction ids exhausted".to_string()))?;
        }
        let mut writes = Vec::new();
        let meta = self.place_everything(&mut writes, mode == Mode::OneSync, txn_id)?;
        let storage = &self.inner.pages.storage;
        let needed = meta.total_pages * PAGE_SIZE as u64;
        if needed > storage.capacity() {
            // Refused before any byte is written, so the database stays usable.
            return Err(Error::Full {
                file: storage.path().to_path_buf(),
                needed,
                limit: storage.capacity(),
            });
        }
        let result = self.write_out(&mut writes, &meta, mode);
        let inner = self.inner.clone();
        match result {
            Ok(()) => {
                let mut state = inner.state.borrow_mut();
                state.committed = meta;
                match mode {
                    Mode::Unsynced => {}
                    Mode::Deferred => state.deferred = Some(meta.txn_id),
                    Mode::TwoSyncs | Mode::OneSync => state.durable = meta,
                }
                state.reusable = std::mem::take(&mut self.space);
                let of_role =
                    |role: Role| writes.iter().filter(|w| w.2 == role).map(|w| w.0).collect();
                state.freelist_pages = of_role(Role::FreeList);
                state.commit_list_pages = of_role(Role::CommitList);
                state
                    .pending
                    .insert(meta.txn_id, std::mem::take(&mut self.freed));
                drop(state);
                for (extent, _, _) in &writes {
                    inner.pages.mark_verified(extent.page);
                }
                if matches!(mode, Mode::TwoSyncs | Mode::OneSync) {
                    // The durable commit's tail may still be reachable from
                    // the last durable commit until this one is durable.
                    give_back_tail(&inner, &meta);
                }
                Ok(meta)
            }
            Err(error) => {
                inner.state.borrow_mut().failure = Some(error.to_string());
                Err(error)
            }
        }
    }

    /// Steps 1-3: places every dirty node and builds the free list (and the
    /// commit list). Returns the meta of this commit.
    fn place_everything(
        &mut self,
        writes: &mut Writes,
        one_sync: bool,
        txn_id: u64,
    ) -> Result<Meta> {
        let changed: Vec<(Vec<u8>, Option<NodeRef>, u64)> = self
            .trees
            .iter()
            .filter(|(_, s)| s.changed)
            .map(|(name, s)| (name.clone(), s.root, s.len))
            .collect();
        for (name, root, len) in changed {
            let root_page = match root {
                Some(root) => self.place(root, writes)?,
                None => 0,
            };
            let (catalog, _) = self.insert_at(
                self.catalog,
                &name,
                Value::Inline(encode_tree_root(root_page, len)),
            )?;
            self.catalog = Some(catalog);
        }
        let catalog_root = match self.catalog {
            Some(root) => self.place(root, writes)?,
            None => 0,
        };

        let (old_lists, pending) = {
            let state = self.inner.state.borrow();
            let pending: Vec<Extent> = state.pending.values().flatten().copied().collect();
            let old: Vec<Extent> = state
                .freelist_pages
                .iter()
                .chain(&state.commit_list_pages)
                .copied()
                .collect();
            (old, pending)
        };
        self.freed.extend(old_lists);
        let min_tail = MIN_TAIL_PAGES.max(self.total_pages / 8);
        if let Some(tail) = self.space.take_tail(self.total_pages, min_tail) {
            self.total_pages = tail.page;
        }
        // Allocating never adds extents to the free space (first fit takes
        // the front of one), so counts taken before allocating are bounds.
        let listed = self.space.len() + pending.len() + self.freed.len();
        let free_list_pages = listed.div_ceil(EXTENTS_PER_PAGE);
        // The commit list is allocated before the free list is written, so
        // its pages are never listed as free. It names every extent written.
        let commit_list_pages: Vec<Extent> = if one_sync {
            let entries = writes.len() + free_list_pages;
            (0..entries.div_ceil(ENTRIES_PER_PAGE))
                .map(|_| self.allocate(1))
                .collect()
        } else {
            Vec::new()
        };
        let list_pages: Vec<Extent> = (0..free_list_pages).map(|_| self.allocate(1)).collect();
        let entries: Vec<Extent> = self
            .space
            .extents()
            .chain(pending)
            .chain(self.freed.iter().copied())
            .collect();
        let mut chunks = entries.chunks(EXTENTS_PER_PAGE);
        for (i, page) in list_pages.iter().enumerate() {
            let chunk = chunks.next().unwrap_or_default();
            let next = list_pages.get(i + 1).map_or(0, |p| p.page);
            writes.push((*page, encode_page(chunk, next, page.page), Role::FreeList));
        }
        if one_sync {
            let written: Vec<Written> = writes
                .iter()
                .map(|(extent, bytes, _)| Written {
                    extent: *extent,
                    crc: crc32fast::hash(bytes),
                })
                .collect();
            if written.len() > commit_list_pages.len() * ENTRIES_PER_PAGE {
                return Err(Error::Failed("commit list sized too small".to_string()));
            }
            let mut chunks = written.chunks(ENTRIES_PER_PAGE);
            for (i, page) in commit_list_pages.iter().enumerate() {
                let chunk = chunks.next().unwrap_or_default();
                let next = commit_list_pages.get(i + 1).map_or(0, |p| p.page);
                writes.push((
                    *page,
                    commit_list::encode_page(chunk, next, txn_id, page.page),
                    Role::CommitList,
                ));
            }
        }
        Ok(Meta {
            txn_id,
            catalog_root,
            freelist_head: list_pages.first().map_or(0, |p| p.page),
            total_pages: self.total_pages,
            applied_index: self.applied_index,
            commit_list: commit_list_pages.first().map_or(0, |p| p.page),
        })
    }

    /// Gives a dirty node (and its dirty children, and new long values) its
    /// pages and encodes it. Returns its first page.
    fn place(&mut self, at: NodeRef, writes: &mut Writes) -> Result<u64> {
        let id = match at {
            NodeRef::Clean(page) => return Ok(page),
            NodeRef::Dirty(id) => id,
        };
        let node = self
            .arena
            .get_mut(id)
            .and_then(Option::take)
            .ok_or_else(|| Error::Failed(format!("dirty node {id} placed twice")))?;
        match node {
            Dirty::Leaf(mut entries) => {
                for entry in &mut entries {
                    if let Value::PendingOverflow(bytes) = &mut entry.value {
                        let bytes = std::mem::take(bytes);
                        let extent = self.allocate(pages_for(bytes.len()));
                        let value = OverflowRef {
                            extent,
                            len: bytes.len() as u32,
                            crc: crc32fast::hash(&bytes),
                        };
                        let mut padded = bytes;
                        padded.resize(extent.byte_len(), 0);
                        writes.push((extent, padded, Role::Data));
                        entry.value = Value::Overflow(value);
                    }
                }
                let node = Dirty::Leaf(entries);
                let extent = self.allocate(pages_needed(&node));
                if let Dirty::Leaf(entries) = &node {
                    writes.push((extent, encode_leaf(entries, extent), Role::Data));
                }
                Ok(extent.page)
            }
            Dirty::Branch { keys, children } => {
                let mut pages = Vec::with_capacity(children.len());
                for child in &children {
                    pages.push(self.place(*child, writes)?);
                }
                let node = Dirty::Branch { keys, children };
                let extent = self.allocate(pages_needed(&node));
                if let Dirty::Branch { keys, .. } = &node {
                    writes.push((extent, encode_branch(keys, &pages, extent), Role::Data));
                }
                Ok(extent.page)
            }
        }
    }

    /// Free pages first, else the end of the file.
    fn allocate(&mut self, pages: u32) -> Extent {
        self.space.allocate(pages).unwrap_or_else(|| {
            let extent = Extent {
                page: self.total_pages,
                pages,
            };
            self.total_pages += u64::from(pages);
            extent
        })
    }

    /// Steps 4-5 (only step 4's writes for an unsynced commit). The caller
    /// has checked that `meta` fits the capacity.
    fn write_out(&self, writes: &mut Writes, meta: &Meta, mode: Mode) -> Result<()> {
        let storage = &self.inner.pages.storage;
        let needed = meta.total_pages * PAGE_SIZE as u64;
        if needed > storage.len() {
            // Growth ahead of need is capped by the capacity; `needed` fits.
            let grown = needed
                .max(storage.len() + storage.len() / 8)
                .next_multiple_of(GROWTH_STEP)
                .min(storage.capacity());
            storage.set_len(grown)?;
        }
        writes.sort_by_key(|(extent, _, _)| extent.page);
        // Adjacent extents go out as one write of at most about
        // `WRITE_RUN_BYTES`: a longer one would cost a buffer as large as
        // the commit, allocated (and faulted in) anew for each.
        let total: usize = writes.iter().map(|(_, bytes, _)| bytes.len()).sum();
        let mut run: Vec<u8> = Vec::with_capacity(total.min(WRITE_RUN_BYTES));
        let mut run_start = 0u64;
        for (extent, bytes, _) in writes.iter() {
            let adjacent = run_start + (run.len() / PAGE_SIZE) as u64 == extent.page;
            if !run.is_empty() && (!adjacent || run.len() >= WRITE_RUN_BYTES) {
                storage.write_at(run_start * PAGE_SIZE as u64, &run)?;
                run.clear();
            }
            if run.is_empty() {
                run_start = extent.page;
            }
            run.extend_from_slice(bytes);
        }
        if !run.is_empty() {
            storage.write_at(run_start * PAGE_SIZE as u64, &run)?;
        }
        match mode {
            Mode::Unsynced | Mode::Deferred => return Ok(()),
            Mode::TwoSyncs => storage.sync_data()?,
            Mode::OneSync => {}
        }
        storage.write_at(meta.slot() * PAGE_SIZE as u64, &meta.encode())?;
        storage.sync_data()
    }
}

/// After a durable commit that freed the file's tail, returns it to the
/// file system. Best effort: a failure leaves the file longer, nothing
/// else. Only for the last commit: a later one may have allocated there.
pub(crate) fn give_back_tail<S: Storage>(inner: &Inner<S>, meta: &Meta) {
    if inner.state.borrow().committed.txn_id != meta.txn_id {
        return;
    }
    let storage = &inner.pages.storage;
    let used = meta.total_pages * PAGE_SIZE as u64;
    if storage.len() > used + GROWTH_STEP.max(storage.len() / 8)
        && storage.set_len(used.next_multiple_of(GROWTH_STEP)).is_ok()
    {
        inner.pages.forget_from(meta.total_pages);
    }
}
