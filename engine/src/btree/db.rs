//! The database: one B+-tree file, its committed state, its readers.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::rc::Rc;

use crate::btree::access::{self, NodeSource, NodeView, PageReader};
use crate::btree::commit::DeferredDurability;
use crate::btree::cursor::Range;
use crate::btree::free_space::{decode_page, FreeSpace};
use crate::btree::meta::Meta;
use crate::btree::node::{NodeRef, OverflowRef};
use crate::btree::page::{read_u64, Extent, NodeKind, FIRST_DATA_PAGE, PAGE_SIZE};
use crate::btree::storage::{FileStorage, Storage};
use crate::btree::write::WriteTxn;
use crate::error::{Error, Result};

/// How a database file is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The largest the file may grow; that much address space is reserved
    /// for the read mapping. Default 64 GiB.
    pub max_file_size: u64,
    /// How commits are made durable. Default [`CommitSync::TwoSyncs`].
    pub commit_sync: CommitSync,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_file_size: 64 << 30,
            commit_sync: CommitSync::TwoSyncs,
        }
    }
}

/// How a commit is made durable (both are crash-safe; see FORMAT.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitSync {
    /// Write the pages, sync, then write the meta slot and sync.
    TwoSyncs,
    /// Write the pages, a list of them with checksums, and the meta slot,
    /// then sync once; opening checks the newest commit against its list.
    OneSync,
}

/// Committed state and bookkeeping, owned by one core.
pub(crate) struct State {
    /// What new readers see: the last commit, durable or not.
    pub(crate) committed: Meta,
    /// The last commit whose meta slot is durable: what a crash returns to.
    pub(crate) durable: Meta,
    /// Pages holding the committed free list; the next commit frees them.
    pub(crate) freelist_pages: Vec<Extent>,
    /// Pages holding the last commit's commit list (one-sync commits); the
    /// next commit frees them, and until it is durable they must stay intact.
    pub(crate) commit_list_pages: Vec<Extent>,
    /// Free pages no snapshot can see: the next writer may use them.
    pub(crate) reusable: FreeSpace,
    /// Pages freed by commit N, reusable once no reader is older than N.
    pub(crate) pending: BTreeMap<u64, Vec<Extent>>,
    /// Open read snapshots: txn id -> count.
    pub(crate) readers: BTreeMap<u64, usize>,
    pub(crate) writer_active: bool,
    /// A deferred commit (its txn id) not yet reported durable.
    pub(crate) deferred: Option<u64>,
    /// Set by a failed write or sync: every later call fails.
    pub(crate) failure: Option<String>,
}

pub(crate) struct Inner<S: Storage> {
    pub(crate) pages: PageReader<S>,
    pub(crate) commit_sync: CommitSync,
    pub(crate) state: RefCell<State>,
}

impl<S: Storage> Inner<S> {
    pub(crate) fn check_usable(&self) -> Result<()> {
        match &self.state.borrow().failure {
            Some(f) => Err(Error::Failed(f.clone())),
            None => Ok(()),
        }
    }
}

/// One B+-tree file holding named trees. Not `Send`: it belongs to the core
/// that opened it. One write transaction at a time; any number of readers,
/// each seeing the state committed when it began.
pub struct Database<S: Storage = FileStorage> {
    inner: Rc<Inner<S>>,
}

impl Database<FileStorage> {
    /// What is left of a deferred commit, as a job for another thread: sync
    /// the file, write the meta slot, sync again, on a copy of the file
    /// handle. Report its outcome with [`Database::durable_done`] or
    /// [`Database::durable_failed`].
    ///
    /// # Errors
    /// The file handle could not be copied.
    pub fn deferred_job(
        &self,
        deferred: &DeferredDurability,
    ) -> Result<impl FnOnce() -> std::io::Result<()> + Send + 'static> {
        use std::os::unix::fs::FileExt;
        let file = self.inner.pages.storage.clone_file()?;
        let (page, offset) = (deferred.meta_page.clone(), deferred.meta_offset);
        Ok(move || {
            file.sync_data()?;
            file.write_all_at(&page, offset)?;
            file.sync_data()
        })
    }

    /// Opens (creating if needed) the file at `path`.
    ///
    /// # Errors
    /// [`Error::Corruption`] names the page if neither meta slot is valid or
    /// the free list does not verify.
    pub fn open(path: impl AsRef<Path>, options: Options) -> Result<Database<FileStorage>> {
        let storage = FileStorage::open(path, options.max_file_size)?;
        Database::with_storage_options(storage, options)
    }
}

impl<S: Storage> Database<S> {
    /// Opens a database on any [`Storage`] (tests record and crash it).
    pub fn with_storage(storage: S) -> Result<Database<S>> {
        Database::with_storage_options(storage, Options::default())
    }

    /// [`Database::with_storage`] with options (`max_file_size` is the
    /// storage's business and ignored here).
    pub fn with_storage_options(storage: S, options: Options) -> Result<Database<S>> {
        let pages = PageReader::new(storage);
        let (committed, commit_list_pages) = if never_committed(&pages) {
            (create(&pages)?, Vec::new())
        } else {
            let picked = pick_meta(&pages)?;
            if let Some(slot) = picked.rejected_slot {
                // The rejected commit's txn id will be reused by the next
                // commit, whose pages may land where its list said. Erase it
                // so that it can never verify against them later.
                pages
                    .storage
                    .write_at(slot * PAGE_SIZE as u64, &[0u8; PAGE_SIZE])?;
                pages.storage.sync_data()?;
            }
            (picked.meta, picked.commit_list_pages)
        };
        if committed.total_pages.saturating_mul(PAGE_SIZE as u64) > pages.storage.len() {
            return Err(pages.corruption(
                committed.total_pages,
                format!(
                    "file holds {} bytes, the last commit used {} pages",
                    pages.storage.len(),
                    committed.total_pages
                ),
            ));
        }
        let (reusable, freelist_pages) = load_free_list(&pages, &committed)?;
        Ok(Database {
            inner: Rc::new(Inner {
                pages,
                commit_sync: options.commit_sync,
                state: RefCell::new(State {
                    committed,
                    durable: committed,
                    freelist_pages,
                    commit_list_pages,
                    reusable,
                    pending: BTreeMap::new(),
                    readers: BTreeMap::new(),
                    writer_active: false,
                    deferred: None,
                    failure: None,
                }),
            }),
        })
    }

    /// Starts the one write transaction.
    ///
    /// # Errors
    /// [`Error::WriterBusy`] if one is open; [`Error::Failed`] after an I/O failure.
    pub fn begin_write(&self) -> Result<WriteTxn<S>> {
        WriteTxn::begin(self.inner.clone())
    }

    /// Starts a read snapshot of the last committed state.
    pub fn begin_read(&self) -> Result<ReadTxn<S>> {
        self.inner.check_usable()?;
        let meta = {
            let mut state = self.inner.state.borrow_mut();
            let meta = state.committed;
            *state.readers.entry(meta.txn_id).or_insert(0) += 1;
            meta
        };
        Ok(ReadTxn {
            inner: self.inner.clone(),
            meta,
        })
    }

    /// The applied index stored by the last commit.
    pub fn applied_index(&self) -> u64 {
        self.inner.state.borrow().committed.applied_index
    }

    /// Makes every unsynced commit durable (a durable commit with no changes
    /// of its own); does nothing when there is none.
    ///
    /// # Errors
    /// As [`WriteTxn::commit`]; [`Error::WriterBusy`] if a writer is open.
    pub fn sync(&self) -> Result<()> {
        if self.is_durable() {
            return Ok(());
        }
        self.begin_write()?.commit()
    }

    /// Records that a deferred commit's syncs and meta write are done: a
    /// crash now returns to it, and the pages it freed may be reused once
    /// no reader needs them.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `done` is not the deferred commit in
    /// flight.
    pub fn durable_done(&self, done: &DeferredDurability) -> Result<()> {
        {
            let mut state = self.inner.state.borrow_mut();
            if state.deferred != Some(done.meta.txn_id) {
                return Err(Error::InvalidArgument(format!(
                    "commit {} is not the deferred commit in flight",
                    done.meta.txn_id
                )));
            }
            state.deferred = None;
            state.durable = done.meta;
        }
        crate::btree::commit::give_back_tail(&self.inner, &done.meta);
        Ok(())
    }

    /// Records that a deferred commit's syncs or meta write failed: the
    /// database stops, as after any failed sync (fail-stop).
    pub fn durable_failed(&self, reason: &str) {
        let mut state = self.inner.state.borrow_mut();
        state.deferred = None;
        state
            .failure
            .get_or_insert_with(|| format!("deferred sync: {reason}"));
    }

    /// Runs what is left of a deferred commit here, through the storage,
    /// and reports it: the same steps another thread would run on a copy
    /// of the file handle.
    ///
    /// # Errors
    /// I/O errors, which stop the database.
    pub fn complete_deferred(&self, deferred: &DeferredDurability) -> Result<()> {
        let storage = &self.inner.pages.storage;
        let result = storage
            .sync_data()
            .and_then(|()| storage.write_at(deferred.meta_offset, &deferred.meta_page))
            .and_then(|()| storage.sync_data());
        match result {
            Ok(()) => self.durable_done(deferred),
            Err(error) => {
                self.durable_failed(&error.to_string());
                Err(error)
            }
        }
    }

    /// Whether a deferred commit is waiting for its report.
    pub fn deferred_in_flight(&self) -> bool {
        self.inner.state.borrow().deferred.is_some()
    }

    /// Whether the last commit is durable (no unsynced commit since).
    pub fn is_durable(&self) -> bool {
        let state = self.inner.state.borrow();
        state.committed.txn_id == state.durable.txn_id
    }

    /// The applied index of the last durable commit: after a crash the
    /// file opens at this index, so whatever redoes later changes (the WAL)
    /// must be kept from just above it.
    pub fn durable_applied_index(&self) -> u64 {
        self.inner.state.borrow().durable.applied_index
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.inner.pages.storage.path()
    }

    /// The most bytes the file may grow to (its mapping's size).
    pub fn capacity(&self) -> u64 {
        self.inner.pages.storage.capacity()
    }

    /// Sizes of the file, for monitoring and tests.
    pub fn space(&self) -> SpaceStats {
        let state = self.inner.state.borrow();
        SpaceStats {
            file_bytes: self.inner.pages.storage.len(),
            total_pages: state.committed.total_pages,
            reusable_pages: state.reusable.pages(),
            pending_pages: state
                .pending
                .values()
                .flatten()
                .map(|e| u64::from(e.pages))
                .sum(),
        }
    }

    /// Walks every page of the last commit and checks the structure: each
    /// page reachable exactly once or free exactly once, every leaf at one
    /// depth, every key within the range its parents give it.
    pub fn audit(&self) -> Result<PageAudit> {
        let txn = self.begin_read()?;
        txn.audit()
    }
}

/// How the file's pages are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceStats {
    /// Bytes of the file (it may be preallocated past `total_pages`).
    pub file_bytes: u64,
    /// Pages the last commit accounts for.
    pub total_pages: u64,
    /// Free pages a writer may use now.
    pub reusable_pages: u64,
    /// Free pages waiting for older readers to finish.
    pub pending_pages: u64,
}

/// The result of [`Database::audit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageAudit {
    /// Pages reachable from the committed roots (nodes, values, free list).
    pub reachable: u64,
    /// Pages free (reusable or pending).
    pub free: u64,
}

/// Whether the file never completed its creation: empty, or just the two
/// meta pages, both still zero (a crash while creating it). Anything else,
/// zeroed slots on a longer file included, must verify.
fn never_committed<S: Storage>(pages: &PageReader<S>) -> bool {
    let len = pages.storage.len();
    if len == 0 {
        return true;
    }
    if len > FIRST_DATA_PAGE * PAGE_SIZE as u64 {
        return false;
    }
    let slots = (FIRST_DATA_PAGE * PAGE_SIZE as u64).min(len) as usize;
    pages
        .storage
        .read(0, slots)
        .is_ok_and(|b| b.iter().all(|&x| x == 0))
}

fn create<S: Storage>(pages: &PageReader<S>) -> Result<Meta> {
    let meta = Meta::empty();
    pages.storage.set_len(FIRST_DATA_PAGE * PAGE_SIZE as u64)?;
    pages.storage.write_at(0, &meta.encode())?;
    pages.storage.sync_data()?;
    Ok(meta)
}

/// The committed state chosen at open.
struct Picked {
    meta: Meta,
    commit_list_pages: Vec<Extent>,
    /// The slot of a newer one-sync commit that did not land whole.
    rejected_slot: Option<u64>,
}

/// The committed state to open: the valid meta slot with the higher
/// transaction id, unless it is a one-sync commit whose pages did not all
/// land, in which case the other slot (made durable before that commit
/// began). Returns it with the pages of its commit list.
fn pick_meta<S: Storage>(pages: &PageReader<S>) -> Result<Picked> {
    let mut valid: Vec<Meta> = Vec::new();
    let mut problems = Vec::new();
    for slot in 0..2u64 {
        let decoded = pages
            .storage
            .read(slot * PAGE_SIZE as u64, PAGE_SIZE)
            .map_err(|e| e.to_string())
            .and_then(Meta::decode);
        match decoded {
            Ok(meta) if meta.slot() == slot => valid.push(meta),
            Ok(meta) => problems.push(format!(
                "slot {slot} holds commit {} of the other slot",
                meta.txn_id
            )),
            Err(reason) => problems.push(format!("slot {slot}: {reason}")),
        }
    }
    valid.sort_by_key(|m| std::cmp::Reverse(m.txn_id));
    let mut rejected_slot = None;
    for (rank, meta) in valid.iter().enumerate() {
        let newest = rank == 0;
        match read_commit_list(pages, meta, newest) {
            Ok(commit_list_pages) => {
                return Ok(Picked {
                    meta: *meta,
                    commit_list_pages,
                    rejected_slot,
                })
            }
            Err(reason) => {
                rejected_slot = Some(meta.slot());
                problems.push(format!(
                    "commit {} did not land whole: {reason}",
                    meta.txn_id
                ));
            }
        }
    }
    Err(pages.corruption(0, format!("no valid meta slot ({})", problems.join("; "))))
}

/// Walks a commit's list; for the newest commit also checks that every
/// listed extent holds exactly what was written. Returns the list's pages.
fn read_commit_list<S: Storage>(
    pages: &PageReader<S>,
    meta: &Meta,
    check_extents: bool,
) -> std::result::Result<Vec<Extent>, String> {
    let mut list_pages = Vec::new();
    let mut next = meta.commit_list;
    while next != 0 {
        if list_pages.len() as u64 > meta.total_pages {
            return Err("commit list loops".to_string());
        }
        let (unit, count) = pages
            .unit(next, NodeKind::CommitList)
            .map_err(|e| e.to_string())?;
        let (txn, entries, following) = crate::btree::commit_list::decode_page(unit, count)?;
        if txn != meta.txn_id {
            return Err(format!("commit-list page {next} belongs to commit {txn}"));
        }
        if check_extents {
            for written in entries {
                let bytes = pages
                    .storage
                    .read(written.extent.offset(), written.extent.byte_len())
                    .map_err(|e| e.to_string())?;
                if crc32fast::hash(bytes) != written.crc {
                    return Err(format!(
                        "page {} does not hold what the commit wrote",
                        written.extent.page
                    ));
                }
            }
        }
        list_pages.push(Extent {
            page: next,
            pages: 1,
        });
        next = following;
    }
    Ok(list_pages)
}

/// Reads the committed free list into reusable space.
fn load_free_list<S: Storage>(
    pages: &PageReader<S>,
    meta: &Meta,
) -> Result<(FreeSpace, Vec<Extent>)> {
    let mut space = FreeSpace::default();
    let mut chain = Vec::new();
    let mut next = meta.freelist_head;
    while next != 0 {
        if chain.len() as u64 > meta.total_pages {
            return Err(pages.corruption(next, "free-list chain loops"));
        }
        let (unit, count) = pages.unit(next, NodeKind::FreeList)?;
        let (extents, following) =
            decode_page(unit, count).map_err(|r| pages.corruption(next, r))?;
        for extent in extents {
            if extent.page < FIRST_DATA_PAGE || extent.end() > meta.total_pages || extent.pages == 0
            {
                return Err(
                    pages.corruption(next, format!("free extent {extent:?} is outside the file"))
                );
            }
            space
                .insert(extent)
                .map_err(|r| pages.corruption(next, r))?;
        }
        chain.push(Extent {
            page: next,
            pages: 1,
        });
        next = following;
    }
    Ok((space, chain))
}

/// A tree's root as the catalog stores it.
pub(crate) fn decode_tree_root(bytes: &[u8]) -> (Option<NodeRef>, u64) {
    let page = read_u64(bytes, 0);
    let root = (page != 0).then_some(NodeRef::Clean(page));
    (root, read_u64(bytes, 8))
}

pub(crate) fn encode_tree_root(root_page: u64, len: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&root_page.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out
}

/// A node to audit: where, at which depth, within which key bounds.
type AuditStep = (NodeRef, usize, Option<Vec<u8>>, Option<Vec<u8>>);

/// A read snapshot. Values it returns borrow it and are read in place.
pub struct ReadTxn<S: Storage = FileStorage> {
    inner: Rc<Inner<S>>,
    meta: Meta,
}

/// Nodes of a snapshot: clean pages only.
#[derive(Clone, Copy)]
pub struct SnapshotSource<'a, S: Storage> {
    pages: &'a PageReader<S>,
}

impl<'a, S: Storage> NodeSource<'a> for SnapshotSource<'a, S> {
    fn node(&self, at: NodeRef) -> Result<NodeView<'a>> {
        match at {
            NodeRef::Clean(page) => self.pages.node(page),
            NodeRef::Dirty(_) => Err(Error::Failed("snapshot reached a dirty node".to_string())),
        }
    }

    fn overflow(&self, value: OverflowRef) -> Result<&'a [u8]> {
        self.pages.overflow(value)
    }

    fn file(&self) -> &Path {
        self.pages.storage.path()
    }
}

impl<S: Storage> ReadTxn<S> {
    fn source(&self) -> SnapshotSource<'_, S> {
        SnapshotSource {
            pages: &self.inner.pages,
        }
    }

    fn catalog_root(&self) -> Option<NodeRef> {
        (self.meta.catalog_root != 0).then_some(NodeRef::Clean(self.meta.catalog_root))
    }

    /// The applied index committed with this snapshot.
    pub fn applied_index(&self) -> u64 {
        self.meta.applied_index
    }

    /// The named tree, if it exists in this snapshot.
    pub fn tree(&self, name: &[u8]) -> Result<Option<ReadTree<'_, S>>> {
        let Some(encoded) = access::get(&self.source(), self.catalog_root(), name)? else {
            return Ok(None);
        };
        let (root, len) = decode_tree_root(encoded);
        Ok(Some(ReadTree {
            txn: self,
            root,
            len,
        }))
    }

    /// The named tree; one that does not exist in this snapshot reads as
    /// empty.
    pub fn view(&self, name: &[u8]) -> Result<ReadTree<'_, S>> {
        Ok(match self.tree(name)? {
            Some(tree) => tree,
            None => ReadTree {
                txn: self,
                root: None,
                len: 0,
            },
        })
    }

    /// Names of every tree, in order.
    pub fn tree_names(&self) -> Result<Vec<Vec<u8>>> {
        Range::new(
            self.source(),
            self.catalog_root(),
            Bound::Unbounded,
            Bound::Unbounded,
        )?
        .map(|item| item.map(|(k, _)| k.to_vec()))
        .collect()
    }

    fn audit(&self) -> Result<PageAudit> {
        let mut owners = BTreeMap::new();
        let total_pages = self.meta.total_pages;
        let mut claim = |extent: Extent, what: &str| -> Result<()> {
            if extent.end() > total_pages {
                return Err(self
                    .inner
                    .pages
                    .corruption(extent.page, format!("{what} runs past the last page")));
            }
            for page in extent.page..extent.end() {
                if let Some(previous) = owners.insert(page, what.to_string()) {
                    return Err(self
                        .inner
                        .pages
                        .corruption(page, format!("page used by both {previous} and {what}")));
                }
            }
            Ok(())
        };
        let mut roots = vec![self.catalog_root()];
        for name in self.tree_names()? {
            if let Some(tree) = self.tree(&name)? {
                roots.push(tree.root);
            }
        }
        let mut reachable = 0;
        for root in roots.into_iter().flatten() {
            // (node, depth, lower bound, upper bound): every key must lie in
            // [lower, upper) and every leaf at one depth.
            let mut stack: Vec<AuditStep> = vec![(root, 0, None, None)];
            let mut leaf_depth = None;
            while let Some((at, depth, lower, upper)) = stack.pop() {
                let NodeRef::Clean(page) = at else { continue };
                let node = self.source().node(at)?;
                let extent = self.inner.pages.extent_of(page)?;
                claim(extent, "a node")?;
                reachable += u64::from(extent.pages);
                if depth > crate::btree::access::MAX_DEPTH {
                    return Err(self
                        .inner
                        .pages
                        .corruption(page, "tree deeper than any real tree"));
                }
                let in_bounds = |key: &[u8]| {
                    lower.as_deref().is_none_or(|l| key >= l)
                        && upper.as_deref().is_none_or(|u| key < u)
                };
                match node {
                    NodeView::Branch(b) => {
                        for i in 0..=b.len() {
                            if i < b.len() && !in_bounds(b.key(i)) {
                                return Err(self.inner.pages.corruption(
                                    page,
                                    format!("branch key {i} outside its parent's range"),
                                ));
                            }
                            let lo = if i == 0 {
                                lower.clone()
                            } else {
                                Some(b.key(i - 1).to_vec())
                            };
                            let hi = if i == b.len() {
                                upper.clone()
                            } else {
                                Some(b.key(i).to_vec())
                            };
                            stack.push((b.child(i), depth + 1, lo, hi));
                        }
                    }
                    NodeView::Leaf(l) => {
                        if *leaf_depth.get_or_insert(depth) != depth {
                            return Err(self
                                .inner
                                .pages
                                .corruption(page, "leaves at different depths"));
                        }
                        for i in 0..l.len() {
                            if !in_bounds(l.key(i)) {
                                return Err(self.inner.pages.corruption(
                                    page,
                                    format!("leaf key {i} outside its parent's range"),
                                ));
                            }
                            if let access::ValueAccess::Overflow(r) = l.value(i) {
                                claim(r.extent, "a value")?;
                                reachable += u64::from(r.extent.pages);
                            }
                        }
                    }
                }
            }
        }
        let state = self.inner.state.borrow();
        for extent in &state.freelist_pages {
            claim(*extent, "the free list")?;
            reachable += u64::from(extent.pages);
        }
        for extent in &state.commit_list_pages {
            claim(*extent, "the commit list")?;
            reachable += u64::from(extent.pages);
        }
        let mut free = 0;
        for extent in state
            .reusable
            .extents()
            .chain(state.pending.values().flatten().copied())
        {
            claim(extent, "free space")?;
            free += u64::from(extent.pages);
        }
        let accounted = reachable + free + FIRST_DATA_PAGE;
        if accounted != self.meta.total_pages {
            return Err(self.inner.pages.corruption(
                0,
                format!(
                    "{accounted} pages accounted for, {} in the file",
                    self.meta.total_pages
                ),
            ));
        }
        Ok(PageAudit { reachable, free })
    }
}

impl ReadTxn<FileStorage> {
    /// This snapshot's commit read as a file of its own (`image.rs`): the
    /// same trees, free list and applied index, opened like any tree file.
    /// The caller keeps this snapshot open while it reads the image: its
    /// pin keeps the pages the image reads from being reused.
    ///
    /// # Errors
    /// The file handle could not be copied.
    pub fn image(&self) -> Result<crate::btree::CommitImage> {
        let source = self.inner.pages.storage.clone_file()?;
        Ok(crate::btree::CommitImage::new(source, &self.meta))
    }
}

impl<S: Storage> Drop for ReadTxn<S> {
    fn drop(&mut self) {
        let mut state = self.inner.state.borrow_mut();
        if let Some(count) = state.readers.get_mut(&self.meta.txn_id) {
            *count -= 1;
            if *count == 0 {
                state.readers.remove(&self.meta.txn_id);
            }
        }
    }
}

/// A tree in a read snapshot.
pub struct ReadTree<'a, S: Storage> {
    txn: &'a ReadTxn<S>,
    root: Option<NodeRef>,
    len: u64,
}

impl<'a, S: Storage> ReadTree<'a, S> {
    /// The value stored under `key`, read in place.
    pub fn get(&self, key: &[u8]) -> Result<Option<&'a [u8]>> {
        access::get(&self.txn.source(), self.root, key)
    }

    /// Entries with keys within the bounds, in order (reversible).
    pub fn range(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
    ) -> Result<Range<'a, SnapshotSource<'a, S>>> {
        Range::new(self.txn.source(), self.root, start, end)
    }

    /// The first entry with a key at or after `key`.
    pub fn seek_ge(&self, key: &[u8]) -> Result<Option<(&'a [u8], &'a [u8])>> {
        self.range(Bound::Included(key), Bound::Unbounded)?
            .next()
            .transpose()
    }

    /// The last entry with a key at or before `key`.
    pub fn seek_le(&self, key: &[u8]) -> Result<Option<(&'a [u8], &'a [u8])>> {
        self.range(Bound::Unbounded, Bound::Included(key))?
            .next_back()
            .transpose()
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the tree holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
