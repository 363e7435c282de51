//! The keyspace of one shard: opening it, applying entries in batches (one
//! B+-tree commit per batch), and reading it.

use std::ops::Bound;
use std::path::Path;

use crate::btree::{
    Database, DeferredDurability, FileStorage, Options, ReadTxn, Storage, WriteTxn,
};
use crate::mvcc::codec::{self, meta_key, tree, At, LeaseRow};
use crate::mvcc::compact;
use crate::mvcc::error::{KvError, KvResult};
use crate::mvcc::members;
use crate::mvcc::read::{self, RangePage, RangePlan, RangeProgress, Revisions};
use crate::mvcc::snapshot::{Snapshot, View};
use crate::mvcc::txn;
use crate::mvcc::types::{
    AlarmAction, AlarmKind, ConfIds, Entry, LeaseId, LeaseTask, LeaseTaskKind, MemberList,
    Placement, PlacementChange, RangeRequest, RangeResponse, Response, Revision,
};
use crate::mvcc::watch::WatchHub;
use crate::mvcc::write::{attached_keys, lease_row, lease_task, EventLog, Writer};

/// Largest TTL a lease may have, in seconds (etcd's `MaxLeaseTTL`).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// Every tree of the keyspace, created when a store is first opened.
const TREES: [&[u8]; 7] = [
    tree::KV,
    tree::HISTORY,
    tree::GONE,
    tree::LEASES,
    tree::LEASE_KEYS,
    tree::LEASE_TASKS,
    tree::META,
];

/// Which leases a store is the home of: those whose
/// [`crate::routing::home_of_lease`] among `shards` is `shard`. The
/// others it only mirrors. With one shard (the default) it is the home of
/// every lease and has no mirrors to tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseHomes {
    /// This store's shard.
    pub shard: usize,
    /// The node's shard count.
    pub shards: usize,
}

impl Default for LeaseHomes {
    fn default() -> LeaseHomes {
        LeaseHomes {
            shard: 0,
            shards: 1,
        }
    }
}

impl LeaseHomes {
    /// The shard lease `id` lives on.
    pub fn home_of(&self, id: LeaseId) -> usize {
        crate::routing::home_of_lease(id, self.shards.max(1))
    }

    /// Whether this store is lease `id`'s home.
    pub fn is_home(&self, id: LeaseId) -> bool {
        self.home_of(id) == self.shard
    }

    /// Whether other shards mirror this store's leases.
    fn has_mirrors(&self) -> bool {
        self.shards > 1
    }
}

/// An entry to apply: its Raft index, the revision the leader gave it,
/// and what it does.
#[derive(Debug, Clone, Copy)]
pub struct Indexed<'a> {
    /// Raft index; the commit records the batch's last one.
    pub index: u64,
    /// Revision; must be above every revision applied before.
    pub revision: Revision,
    /// The entry.
    pub entry: &'a Entry,
}

/// The answer to an applied entry, with the revision it was applied at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The entry's revision, now the current revision.
    pub revision: Revision,
    /// What the entry did.
    pub response: Response,
}

/// A lease as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseInfo {
    /// Its id.
    pub id: LeaseId,
    /// Granted time to live, seconds.
    pub ttl: i64,
    /// Remaining time to live at the last checkpoint, seconds; 0 when
    /// never checkpointed (the full TTL applies).
    pub remaining_ttl: i64,
    /// Revision of the grant.
    pub granted_revision: Revision,
}

/// How much a compaction step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompactStep {
    /// Rows removed from `history` and `gone`.
    pub removed: usize,
    /// Whether history below the compaction revision is all trimmed.
    pub done: bool,
}

/// One shard's MVCC keyspace on its B+-tree file.
pub struct Store<S: Storage = FileStorage> {
    pub(crate) db: Database<S>,
    revisions: Revisions,
    /// History below this is trimmed (each key keeps its newest change);
    /// below `revisions.compact` it is being trimmed.
    compacted: Revision,
    /// Where compaction goes on: (target, next change to visit). Kept in
    /// memory only: after a reopen or for a new target it starts over at
    /// `compacted` (visiting a change twice does nothing more).
    compact_cursor: (Revision, At),
    /// Batches go into a write transaction held open across them;
    /// [`Store::sync`] makes them durable.
    defer_syncs: bool,
    /// That transaction, once a batch opened it. Reads go through it.
    pub(crate) held: Option<WriteTxn<S>>,
    /// Set by the first storage failure: the held transaction may be gone
    /// with batches already counted as applied, so everything is refused
    /// from then on (reopen to recover).
    failure: Option<String>,
    pub(crate) watches: WatchHub,
    /// Which leases this store is the home of; fixed for the life of the
    /// shard (every replica of it has the same).
    homes: LeaseHomes,
}

impl Store<FileStorage> {
    /// Opens (or creates) the keyspace in the B+-tree file at `path`.
    pub fn open(path: impl AsRef<Path>, options: Options) -> KvResult<Store<FileStorage>> {
        Store::with_database(Database::open(path, options)?)
    }
}

fn meta_number<T: Snapshot>(snap: &T, name: &[u8]) -> KvResult<u64> {
    match snap.row(tree::META, name)? {
        Some(row) => Ok(codec::decode_meta(row)?),
        None => Ok(0),
    }
}

impl<S: Storage> Store<S> {
    /// The keyspace in an open B+-tree database.
    pub fn with_database(db: Database<S>) -> KvResult<Store<S>> {
        let snap = db.begin_read()?;
        let missing = {
            let names = snap.tree_names()?;
            if let Some(old) = tree::OLD_LAYOUT
                .iter()
                .find(|t| names.iter().any(|n| n == *t))
            {
                return Err(crate::Error::UnsupportedLayout {
                    file: db.path().to_path_buf(),
                    reason: format!(
                        "it has a `{}` tree: history keyed by key, before keel \
                         keyed it by revision; start from an empty data directory",
                        String::from_utf8_lossy(old)
                    ),
                }
                .into());
            }
            // Layout 2 had today's trees, but revisions of another size.
            if let Some(row) = snap.row(tree::META, meta_key::CURRENT_REV)? {
                if row.first() == Some(&codec::ROW_VERSION_WIDE_REVISIONS) {
                    return Err(crate::Error::UnsupportedLayout {
                        file: db.path().to_path_buf(),
                        reason: "its revisions are unix_millis << 16 (layout 2), \
                                 above the 2^53 that revisions now stay below; start \
                                 from an empty data directory"
                            .to_string(),
                    }
                    .into());
                }
            }
            TREES.iter().any(|t| !names.iter().any(|n| n == t))
        };
        let revisions = Revisions {
            current: meta_number(&snap, meta_key::CURRENT_REV)?,
            compact: meta_number(&snap, meta_key::COMPACT_REV)?,
        };
        let compacted = meta_number(&snap, meta_key::COMPACTED_REV)?;
        drop(snap);
        if missing {
            let mut txn = db.begin_write()?;
            for name in TREES {
                txn.tree(name)?;
            }
            txn.commit()?;
        }
        Ok(Store {
            db,
            revisions,
            compacted,
            compact_cursor: (0, At { rev: 0, seq: 0 }),
            defer_syncs: false,
            held: None,
            failure: None,
            watches: WatchHub::default(),
            homes: LeaseHomes::default(),
        })
    }

    /// Sets which leases this store is the home of (before the first
    /// apply; every replica of a shard must set the same).
    pub fn set_lease_homes(&mut self, homes: LeaseHomes) {
        self.homes = homes;
    }

    /// Which leases this store is the home of.
    pub fn lease_homes(&self) -> LeaseHomes {
        self.homes
    }

    /// With `true`, apply batches (and compaction steps) go into one write
    /// transaction held open across them: each is visible to reads at once
    /// (reads go through the transaction) and none is written until
    /// [`Store::sync`] commits them all, durably. So a page that many
    /// batches change is written once per sync, not once per batch. A crash
    /// returns the keyspace to the last durable commit,
    /// [`Store::durable_applied_index`], and the caller must be able to
    /// apply everything after it again (keel: from the Raft log).
    pub fn defer_syncs(&mut self, defer: bool) {
        self.defer_syncs = defer;
    }

    /// Makes every applied batch durable: one durable commit (two syncs);
    /// nothing when every batch already is.
    ///
    /// # Errors
    /// [`KvError::Storage`]: the shard must stop.
    pub fn sync(&mut self) -> KvResult<()> {
        self.check_usable()?;
        if self.db.deferred_in_flight() {
            return Err(KvError::SyncInFlight);
        }
        let result = match self.held.take() {
            Some(txn) => txn.commit(),
            None => self.db.sync(),
        };
        self.note(result.map_err(KvError::from))
    }

    /// Starts making every applied batch durable without waiting for the
    /// disk: the held transaction is committed with its syncs and meta
    /// write left to the caller (see [`DeferredDurability`]), and batches
    /// go on into a new one meanwhile. `None` when everything is durable.
    /// Report the outcome with [`Store::sync_finished`].
    ///
    /// # Errors
    /// [`KvError::SyncInFlight`] while the last one is not reported
    /// (nothing changes); [`KvError::Storage`]: the shard must stop.
    pub fn sync_deferred(&mut self) -> KvResult<Option<DeferredDurability>> {
        self.check_usable()?;
        if self.db.deferred_in_flight() {
            return Err(KvError::SyncInFlight);
        }
        let result = match self.held.take() {
            Some(txn) => txn.commit_deferred().map(Some),
            None if self.db.is_durable() => Ok(None),
            None => self
                .db
                .begin_write()
                .and_then(WriteTxn::commit_deferred)
                .map(Some),
        };
        self.note(result.map_err(KvError::from))
    }

    /// Records how the syncs and meta write of a deferred commit went.
    ///
    /// # Errors
    /// [`KvError::Storage`] if they failed: the shard must stop.
    pub fn sync_finished(
        &mut self,
        deferred: &DeferredDurability,
        outcome: std::io::Result<()>,
    ) -> KvResult<()> {
        let result = match outcome {
            Ok(()) => self.db.durable_done(deferred),
            Err(error) => {
                self.db.durable_failed(&error.to_string());
                Err(crate::Error::io("deferred sync", self.db.path(), error))
            }
        };
        self.note(result.map_err(KvError::from))
    }

    /// Refuses everything after a storage failure.
    pub(super) fn check_usable(&self) -> KvResult<()> {
        match &self.failure {
            Some(reason) => Err(KvError::Storage(crate::Error::Failed(format!(
                "the keyspace stopped after a storage failure: {reason}"
            )))),
            None => Ok(()),
        }
    }

    /// Records a storage failure in `result` (see `failure`).
    pub(super) fn note<T>(&mut self, result: KvResult<T>) -> KvResult<T> {
        if let Err(e) = &result {
            if e.is_fatal() {
                self.held = None;
                self.failure.get_or_insert_with(|| e.to_string());
            }
        }
        result
    }

    /// How many tree nodes the held transaction has changed (each takes
    /// about a page of memory until [`Store::sync`]); 0 when none is held.
    pub fn held_nodes(&self) -> usize {
        self.held.as_ref().map_or(0, WriteTxn::dirty_nodes)
    }

    /// The applied index a crash would return to.
    pub fn durable_applied_index(&self) -> u64 {
        self.db.durable_applied_index()
    }

    /// The transaction a batch writes in: the held one, or a new one.
    pub(super) fn writer(&mut self) -> KvResult<WriteTxn<S>> {
        match self.held.take() {
            Some(txn) => Ok(txn),
            None => Ok(self.db.begin_write()?),
        }
    }

    /// Ends a batch's writing: holds the transaction open, or commits it.
    pub(super) fn finish(&mut self, txn: WriteTxn<S>) -> KvResult<()> {
        if self.defer_syncs {
            self.held = Some(txn);
        } else {
            txn.commit()?;
        }
        Ok(())
    }

    /// A restore put the store at `revision`, compacted there
    /// (`restore.rs`).
    pub(super) fn restored_at(&mut self, revision: Revision) {
        self.revisions.current = revision;
        self.revisions.compact = revision;
        self.compacted = revision;
    }

    /// What reads go through.
    pub(crate) fn view(&self) -> KvResult<View<'_, S>> {
        self.check_usable()?;
        Ok(View::of(&self.db, &self.held)?)
    }

    /// Revision of the last applied entry.
    pub fn current_revision(&self) -> Revision {
        self.revisions.current
    }

    /// Reads below this revision fail with [`KvError::Compacted`].
    pub fn compact_revision(&self) -> Revision {
        self.revisions.compact
    }

    /// History below this revision is trimmed (compaction steps have
    /// visited all of it); below [`Store::compact_revision`] it is being
    /// trimmed.
    pub fn compacted_revision(&self) -> Revision {
        self.compacted
    }

    /// Raft index of the last applied entry.
    pub fn applied_index(&self) -> u64 {
        self.held
            .as_ref()
            .map_or_else(|| self.db.applied_index(), WriteTxn::applied_index)
    }

    /// The B+-tree file underneath (for space figures and audits).
    pub fn database(&self) -> &Database<S> {
        &self.db
    }

    pub(crate) fn revisions(&self) -> Revisions {
        self.revisions
    }

    /// Applies one entry and commits.
    ///
    /// # Errors
    /// A refusal of the entry (nothing changed but the current revision),
    /// or [`KvError::Storage`], after which the shard must stop.
    pub fn apply(&mut self, index: u64, revision: Revision, entry: &Entry) -> KvResult<Applied> {
        let mut results = self.apply_batch(&[Indexed {
            index,
            revision,
            entry,
        }])?;
        results.pop().unwrap_or_else(|| {
            Err(KvError::Storage(crate::Error::Failed(
                "a batch of one gave no answer".to_string(),
            )))
        })
    }

    /// Applies entries in order and commits them together, recording the
    /// last index. Each entry gets its own answer; a refused entry changes
    /// nothing (its revision still becomes the current one).
    ///
    /// # Errors
    /// Only [`KvError::Storage`]: the batch is lost and the shard must stop.
    pub fn apply_batch(&mut self, batch: &[Indexed<'_>]) -> KvResult<Vec<KvResult<Applied>>> {
        Ok(self.apply_batch_compacting(batch, 0)?.0)
    }

    /// [`Store::apply_batch`], plus a compaction step of up to about
    /// `compact_rows` rows (none for 0) in the same commit. This is how a
    /// shard should compact: the step adds its work to the batch but no
    /// sync of its own.
    ///
    /// # Errors
    /// Only [`KvError::Storage`]: the batch is lost and the shard must stop.
    pub fn apply_batch_compacting(
        &mut self,
        batch: &[Indexed<'_>],
        compact_rows: usize,
    ) -> KvResult<(Vec<KvResult<Applied>>, CompactStep)> {
        self.check_usable()?;
        let result = self.apply_batch_inner(batch, compact_rows);
        self.note(result)
    }

    fn apply_batch_inner(
        &mut self,
        batch: &[Indexed<'_>],
        compact_rows: usize,
    ) -> KvResult<(Vec<KvResult<Applied>>, CompactStep)> {
        let start = self.revisions;
        let mut revisions = start;
        let mut events = EventLog::default();
        // A batch that may be refused part-way restarts its transaction
        // (below), so it must not share one with earlier batches.
        let risky = batch
            .iter()
            .any(|item| matches!(item.entry, Entry::Txn(t) if txn::reads_inside(t)));
        // With the file system full the held transaction stays as it is:
        // the batch then cannot be undone part-way, and an entry refused
        // after it wrote stops the shard (a local failure; what every
        // replica answers stays the same).
        let mut undoable = true;
        if risky {
            if let Some(held) = self.held.take() {
                match held.ensure_room(0) {
                    Ok(()) => held.commit_unsynced()?,
                    Err(e) if e.is_no_space() => {
                        undoable = false;
                        self.held = Some(held);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let mut txn = self.writer()?;
        let mut results = Vec::with_capacity(batch.len());
        for (at, item) in batch.iter().enumerate() {
            let (result, wrote) =
                apply_entry(&mut txn, &mut events, &mut revisions, self.homes, item);
            match result {
                Ok(response) => results.push(Ok(Applied {
                    revision: item.revision,
                    response,
                })),
                Err(e) if e.is_fatal() => return Err(e),
                Err(e) => {
                    if wrote && !undoable {
                        return Err(KvError::Storage(crate::Error::Failed(format!(
                            "an entry refused after it wrote ({e}) cannot be undone: \
                             no room to set the batches before it apart"
                        ))));
                    }
                    if wrote {
                        // Refused part-way: start the batch's transaction
                        // over without this entry. Entries are
                        // deterministic, so the replay gives the same answers.
                        drop(txn);
                        txn = self.db.begin_write()?;
                        events = EventLog::default();
                        // Only the entries that were applied are applied
                        // again; refused ones only advance the revision.
                        revisions = start;
                        for (earlier, outcome) in batch.iter().zip(&results).take(at) {
                            if outcome.is_ok() {
                                let (replayed, _) = apply_entry(
                                    &mut txn,
                                    &mut events,
                                    &mut revisions,
                                    self.homes,
                                    earlier,
                                );
                                if let Err(e) = replayed {
                                    return Err(replay_diverged(e));
                                }
                            } else {
                                advance(&mut revisions, earlier.revision);
                            }
                        }
                        advance(&mut revisions, item.revision);
                    }
                    results.push(Err(e));
                }
            }
        }
        if let Some(last) = batch.last() {
            txn.set_applied_index(last.index);
        }
        {
            let mut meta = txn.tree(tree::META)?;
            meta.insert(
                meta_key::CURRENT_REV,
                &codec::encode_meta(revisions.current),
            )?;
            meta.insert(
                meta_key::COMPACT_REV,
                &codec::encode_meta(revisions.compact),
            )?;
        }
        let compaction = match compact_rows {
            0 => None,
            rows => self.compact_in(&mut txn, revisions.compact, rows)?,
        };
        if risky && self.defer_syncs && undoable && txn.ensure_room(0).is_ok() {
            txn.commit_unsynced()?;
        } else {
            self.finish(txn)?;
        }
        self.revisions = revisions;
        let step = self.compaction_committed(revisions.compact, compaction);
        self.watches.publish(events);
        Ok((results, step))
    }

    /// A whole range answer at the head or at `request.revision`.
    pub fn range(&self, request: &RangeRequest) -> KvResult<RangeResponse> {
        let view = self.view()?;
        txn::range_all(&view, self.revisions, request)
    }

    /// A range answer handed out in pages, all read from one snapshot. A
    /// held transaction is committed (unsynced) first, so the snapshot has
    /// every applied batch.
    pub fn range_pages(&mut self, request: &RangeRequest) -> KvResult<RangePager<S>> {
        self.check_usable()?;
        let plan = RangePlan::new(request, self.revisions)?;
        self.commit_held()?;
        Ok(RangePager {
            snap: self.db.begin_read()?,
            plan,
            progress: RangeProgress::default(),
        })
    }

    /// Commits the held transaction, unsynced: a reader begun after this
    /// (a snapshot for followers) sees every applied batch.
    ///
    /// # Errors
    /// Only [`KvError::Storage`]: the shard must stop.
    pub fn commit_held(&mut self) -> KvResult<()> {
        self.check_usable()?;
        if let Some(held) = self.held.take() {
            let committed = held.commit_unsynced().map_err(KvError::from);
            self.note(committed)?;
        }
        Ok(())
    }

    /// [`Store::commit_held`], if the tree file has room for it: on a
    /// full disk nothing happens and [`KvError::NoSpace`] says so (the
    /// shard goes on; a snapshot waits for room).
    ///
    /// # Errors
    /// `NoSpace`, or [`KvError::Storage`]: the shard must stop.
    pub fn commit_held_if_room(&mut self) -> KvResult<()> {
        self.check_usable()?;
        if let Some(held) = &self.held {
            match held.ensure_room(0) {
                Ok(()) => {}
                Err(e) if e.is_no_space() => return Err(KvError::NoSpace),
                Err(e) => return self.note(Err(e.into())),
            }
        }
        self.commit_held()
    }

    /// The lease `id`.
    pub fn lease(&self, id: LeaseId) -> KvResult<Option<LeaseInfo>> {
        let view = self.view()?;
        Ok(lease_row(&view, id)?.map(|row| lease_info(id, row)))
    }

    /// Every lease, in id order.
    pub fn leases(&self) -> KvResult<Vec<LeaseInfo>> {
        let view = self.view()?;
        view.rows(tree::LEASES, Bound::Unbounded, Bound::Unbounded)?
            .map(|row| {
                let (key, row) = row?;
                Ok(lease_info(
                    codec::decode_lease_key(key)?,
                    codec::decode_lease(row)?,
                ))
            })
            .collect()
    }

    /// Bytes of the tree file in use: its pages less the free ones (what a
    /// backend quota counts; free pages are reused, so deletes and
    /// compaction bring it down without a defragmentation).
    pub fn used_bytes(&self) -> u64 {
        let space = self.db.space();
        let free = space.reusable_pages + space.pending_pages;
        space.total_pages.saturating_sub(free) * crate::btree::PAGE_SIZE as u64
    }

    /// Makes sure the tree file has room for the next sync of the held
    /// transaction and `headroom` bytes more (see
    /// [`crate::btree::WriteTxn::ensure_room`]). Nothing changes on a
    /// refusal.
    ///
    /// # Errors
    /// A storage error; for a full file system or file,
    /// [`crate::Error::is_no_space`] holds and the store stays usable.
    pub fn ensure_sync_room(&self, headroom: u64) -> crate::Result<()> {
        match &self.held {
            Some(txn) => txn.ensure_room(headroom),
            None => Ok(()),
        }
    }

    /// Every alarm raised on this shard, by kind and member.
    pub fn alarms(&self) -> KvResult<Vec<(AlarmKind, u64)>> {
        alarms(&self.view()?)
    }

    /// The cluster's member list (shard 0; empty on other shards, and on
    /// shard 0 until the list first changes).
    pub fn members(&self) -> KvResult<MemberList> {
        members::read_members(&self.view()?)
    }

    /// The auth record shard 0 holds (`Entry::Auth`).
    ///
    /// # Errors
    /// The tree could not be read.
    pub fn auth(&self) -> KvResult<crate::mvcc::AuthRecord> {
        super::auth::read_auth(&self.view()?)
    }

    /// The shard's Raft configuration as of [`Store::applied_index`], if
    /// one was recorded.
    pub fn conf_ids(&self) -> KvResult<Option<ConfIds>> {
        members::read_conf(&self.view()?)
    }

    /// Records that the configuration change at `index` left the shard's
    /// Raft configuration at `conf`: both are written together, so a tree
    /// that has the configuration never replays the change that made it.
    ///
    /// # Errors
    /// Only [`KvError::Storage`]: the shard must stop.
    pub fn record_conf(&mut self, index: u64, conf: &ConfIds) -> KvResult<()> {
        self.check_usable()?;
        let result = self.record_conf_inner(index, conf);
        self.note(result)
    }

    fn record_conf_inner(&mut self, index: u64, conf: &ConfIds) -> KvResult<()> {
        let mut txn = self.writer()?;
        members::write_conf(&mut txn, conf)?;
        txn.set_applied_index(index);
        self.finish(txn)
    }

    /// Where the shard's leadership should be.
    pub fn placement(&self) -> KvResult<Placement> {
        let view = self.view()?;
        let pinned = match view.row(tree::META, codec::meta_key::PLACEMENT_PIN)? {
            Some(row) => codec::decode_meta(row)?,
            None => 0,
        };
        let start = codec::meta_key::PLACEMENT_AVOID;
        let mut avoided = Vec::new();
        for row in view.rows(tree::META, Bound::Included(start), Bound::Unbounded)? {
            let (key, _) = row?;
            let Some(member) = key.strip_prefix(start) else {
                break;
            };
            if let Ok(member) = <[u8; 8]>::try_from(member) {
                avoided.push(u64::from_be_bytes(member));
            }
        }
        Ok(Placement { pinned, avoided })
    }

    /// Up to `limit` tasks this shard, as the home of their leases, must
    /// still carry to its mirrors, in lease id order from `after`
    /// (exclusive).
    pub fn lease_tasks(&self, after: Option<LeaseId>, limit: usize) -> KvResult<Vec<LeaseTask>> {
        let view = self.view()?;
        let from = after.map(codec::lease_key);
        let start = from
            .as_ref()
            .map_or(Bound::Unbounded, |k| Bound::Excluded(k.as_slice()));
        view.rows(tree::LEASE_TASKS, start, Bound::Unbounded)?
            .take(limit)
            .map(|row| {
                let (key, row) = row?;
                Ok(codec::decode_lease_task(
                    codec::decode_lease_key(key)?,
                    row,
                )?)
            })
            .collect()
    }

    /// The keys attached to lease `id`, in order.
    pub fn lease_keys(&self, id: LeaseId) -> KvResult<Vec<Vec<u8>>> {
        attached_keys(&self.view()?, id, usize::MAX)
    }

    /// Removes up to about `max_rows` rows of history below the compaction
    /// revision, in a commit of its own. Call it between batches until it
    /// reports `done`; each call is one bounded pause for applies (and one
    /// sync: [`Store::apply_batch_compacting`] avoids that).
    pub fn compact_step(&mut self, max_rows: usize) -> KvResult<CompactStep> {
        self.check_usable()?;
        let result = self.compact_step_inner(max_rows);
        self.note(result)
    }

    fn compact_step_inner(&mut self, max_rows: usize) -> KvResult<CompactStep> {
        let target = self.revisions.compact;
        let mut txn = self.writer()?;
        let progress = self.compact_in(&mut txn, target, max_rows)?;
        self.finish(txn)?;
        Ok(self.compaction_committed(target, progress))
    }

    /// One compaction step toward `target` inside `txn`; `None` when
    /// history below `target` is already all trimmed.
    fn compact_in(
        &self,
        txn: &mut WriteTxn<S>,
        target: Revision,
        max_rows: usize,
    ) -> KvResult<Option<compact::Progress>> {
        if self.compacted >= target {
            return Ok(None);
        }
        let from = match self.compact_cursor {
            (cursor_target, next) if cursor_target == target => next,
            _ => At {
                rev: self.compacted,
                seq: 0,
            },
        };
        let progress = compact::step(txn, target, from, max_rows)?;
        if progress.done {
            txn.tree(tree::META)?
                .insert(meta_key::COMPACTED_REV, &codec::encode_meta(target))?;
        }
        Ok(Some(progress))
    }

    /// Records a committed compaction step toward `target`.
    fn compaction_committed(
        &mut self,
        target: Revision,
        progress: Option<compact::Progress>,
    ) -> CompactStep {
        match progress {
            None => CompactStep {
                removed: 0,
                done: self.compacted >= target,
            },
            Some(progress) => {
                self.compact_cursor = (target, progress.next);
                if progress.done {
                    self.compacted = target;
                }
                CompactStep {
                    removed: progress.removed,
                    done: progress.done,
                }
            }
        }
    }
}

/// A refused entry still takes its revision (never one at or below the
/// current one: that refusal is `RevisionNotIncreasing`).
fn advance(revisions: &mut Revisions, revision: Revision) {
    revisions.current = revisions.current.max(revision);
}

fn replay_diverged(e: KvError) -> KvError {
    if e.is_fatal() {
        return e;
    }
    KvError::Storage(crate::Error::Failed(format!(
        "an entry refused on replay that applied before: {e}"
    )))
}

fn lease_info(id: LeaseId, row: LeaseRow) -> LeaseInfo {
    LeaseInfo {
        id,
        ttl: row.ttl,
        remaining_ttl: row.remaining_ttl,
        granted_revision: row.granted_rev,
    }
}

/// Applies one entry inside the batch's transaction. Returns the answer
/// and whether anything was written (so a refusal after a write can be
/// undone).
fn apply_entry<S: Storage>(
    txn: &mut WriteTxn<S>,
    events: &mut EventLog,
    revisions: &mut Revisions,
    homes: LeaseHomes,
    item: &Indexed<'_>,
) -> (KvResult<Response>, bool) {
    let rev = item.revision;
    if rev <= revisions.current {
        let refused = KvError::RevisionNotIncreasing {
            given: rev,
            current: revisions.current,
        };
        return (Err(refused), false);
    }
    let before = *revisions;
    let mut writer = Writer {
        txn,
        rev,
        seq: 0,
        wrote: false,
        events,
    };
    let result = match run_entry(&mut writer, before, revisions, homes, item.entry) {
        // The tree refused a row before the entry wrote anything: a
        // refusal like any other (`check_entry` should have caught it).
        // After a write it stays fatal: undoing the entry's earlier rows
        // would need the batch restarted, which only prepared batches can.
        Err(KvError::Storage(
            crate::Error::KeyTooLarge { len, max } | crate::Error::ValueTooLarge { len, max },
        )) if !writer.wrote => Err(KvError::RequestTooLarge { len, max }),
        other => other,
    };
    let wrote = writer.wrote;
    match &result {
        Ok(_) => revisions.current = rev,
        // Refused: nothing but the revision changes.
        Err(e) if !e.is_fatal() => {
            *revisions = before;
            advance(revisions, rev);
        }
        Err(_) => {}
    }
    (result, wrote)
}

fn run_entry<S: Storage>(
    writer: &mut Writer<'_, S>,
    before: Revisions,
    revisions: &mut Revisions,
    homes: LeaseHomes,
    entry: &Entry,
) -> KvResult<Response> {
    match entry {
        Entry::Put(put) => {
            txn::check_put_static(put)?;
            refuse_for_alarms(&*writer.txn, true)?;
            txn::check_put(&*writer.txn, put)?;
            Ok(Response::Put(writer.put(put)?))
        }
        Entry::DeleteRange(delete) => {
            txn::check_delete_static(delete)?;
            refuse_for_alarms(&*writer.txn, false)?;
            Ok(Response::DeleteRange(writer.delete_range(delete)?))
        }
        Entry::Txn(request) => {
            txn::check_txn_static(request)?;
            refuse_for_alarms(&*writer.txn, request.has_puts())?;
            let path = txn::decide(&*writer.txn, request)?;
            // Ranges inside may read any revision below the transaction's
            // own: the shard's state there is its state before it, even when
            // the shard wrote nothing since (revisions of other shards).
            let view = Revisions {
                current: before.current.max(writer.rev.saturating_sub(1)),
                ..before
            };
            txn::check_path(&*writer.txn, view, request, &path)?;
            Ok(Response::Txn(txn::execute(writer, view, request, &path)?))
        }
        Entry::Compact { revision } => {
            refuse_for_alarms(&*writer.txn, false)?;
            if *revision <= before.compact {
                return Err(KvError::Compacted {
                    compact_revision: before.compact,
                });
            }
            // Up to the entry's own revision: once it applies that is the
            // current one. A shard that wrote nothing since the revision a
            // node compacts at can still take the compaction.
            if *revision > writer.rev {
                return Err(KvError::FutureRevision {
                    requested: *revision,
                    current: writer.rev,
                });
            }
            revisions.compact = *revision;
            Ok(Response::Compact)
        }
        Entry::LeaseGrant { id, ttl } => {
            check_grant(*id, *ttl)?;
            refuse_for_alarms(&*writer.txn, true)?;
            let id = match *id {
                0 => free_lease_id(&*writer.txn, writer.rev, homes)?,
                id if !homes.is_home(id) => return Err(not_home(homes, id)),
                id if lease_row(&*writer.txn, id)?.is_some() => {
                    return Err(KvError::LeaseExists(id))
                }
                id => id,
            };
            let row = LeaseRow {
                ttl: *ttl,
                remaining_ttl: 0,
                granted_rev: writer.rev,
            };
            writer.store_lease(id, &row)?;
            if homes.has_mirrors() {
                writer.store_task(&LeaseTask {
                    id,
                    kind: LeaseTaskKind::Grant,
                    ttl: *ttl,
                    granted_revision: writer.rev,
                })?;
            }
            Ok(Response::LeaseGrant { id, ttl: *ttl })
        }
        Entry::LeaseRevoke { id } => {
            refuse_for_alarms(&*writer.txn, false)?;
            if !homes.is_home(*id) {
                return Err(not_home(homes, *id));
            }
            let Some(row) = lease_row(&*writer.txn, *id)? else {
                return Err(KvError::LeaseNotFound(*id));
            };
            revoke_at_home(writer, homes, *id, row)?;
            Ok(Response::LeaseRevoke)
        }
        Entry::LeaseExpire { ids } => {
            let mut revoked = Vec::new();
            for &id in ids {
                if !homes.is_home(id) {
                    continue;
                }
                if let Some(row) = lease_row(&*writer.txn, id)? {
                    revoke_at_home(writer, homes, id, row)?;
                    revoked.push(id);
                }
            }
            Ok(Response::LeaseExpire { revoked })
        }
        Entry::LeaseMirror { tasks } => {
            for task in tasks.iter().filter(|t| !homes.is_home(t.id)) {
                mirror(writer, task)?;
            }
            Ok(Response::LeaseMirror)
        }
        Entry::Alarm {
            action,
            kind,
            member,
        } => {
            let key = codec::alarm_key(*kind, *member);
            match action {
                AlarmAction::Activate => {
                    writer.set_meta(&key, writer.rev)?;
                }
                AlarmAction::Deactivate => writer.remove_meta(&key)?,
            }
            Ok(Response::Alarm)
        }
        Entry::Placement(change) => {
            match change {
                PlacementChange::Pin(member) => {
                    writer.set_meta(codec::meta_key::PLACEMENT_PIN, *member)?
                }
                PlacementChange::Unpin => writer.remove_meta(codec::meta_key::PLACEMENT_PIN)?,
                PlacementChange::Avoid(member) => writer.set_meta(&codec::avoid_key(*member), 1)?,
                PlacementChange::Unavoid(member) => {
                    writer.remove_meta(&codec::avoid_key(*member))?
                }
            }
            Ok(Response::Placement)
        }
        Entry::Members(change) => members::apply_members(writer, change),
        Entry::Auth(change) => super::auth::apply_auth(writer, change),
        Entry::LeaseTasksDone { tasks } => {
            for task in tasks.iter().filter(|t| homes.is_home(t.id)) {
                if lease_task(&*writer.txn, task.id)?.as_ref() == Some(task) {
                    writer.remove_task(task.id)?;
                }
            }
            Ok(Response::LeaseTasksDone)
        }
        Entry::LeaseCheckpoint { checkpoints } => {
            for &(id, remaining) in checkpoints {
                if let Some(mut row) = lease_row(&*writer.txn, id)? {
                    row.remaining_ttl = remaining.clamp(0, row.ttl);
                    writer.store_lease(id, &row)?;
                }
            }
            Ok(Response::LeaseCheckpoint)
        }
    }
}

/// The checks of an entry that need no state: what every replica refuses
/// whatever its state (sizes, counts, empty keys, TTLs). A proposer runs
/// them before it logs an entry, so that nothing it logs is refused for
/// them; apply runs them again, before it writes anything.
///
/// # Errors
/// The refusal, as apply would give it.
pub fn check_entry(entry: &Entry) -> KvResult<()> {
    match entry {
        Entry::Put(put) => txn::check_put_static(put),
        Entry::DeleteRange(delete) => txn::check_delete_static(delete),
        Entry::Txn(request) => txn::check_txn_static(request),
        Entry::LeaseGrant { id, ttl } => check_grant(*id, *ttl),
        Entry::Compact { .. }
        | Entry::LeaseRevoke { .. }
        | Entry::LeaseExpire { .. }
        | Entry::LeaseCheckpoint { .. }
        | Entry::LeaseMirror { .. }
        | Entry::LeaseTasksDone { .. }
        | Entry::Alarm { .. }
        | Entry::Placement(_)
        | Entry::Members(_) => Ok(()),
        Entry::Auth(change) => super::auth::check_auth_static(change),
    }
}

fn check_grant(id: LeaseId, ttl: i64) -> KvResult<()> {
    if !(1..=MAX_LEASE_TTL).contains(&ttl) {
        return Err(KvError::InvalidLease(format!(
            "TTL {ttl} is outside 1..={MAX_LEASE_TTL} seconds"
        )));
    }
    if id < 0 {
        return Err(KvError::InvalidLease(format!("id {id} is negative")));
    }
    Ok(())
}

/// Refuses a client's write while a CORRUPT alarm is raised on the shard,
/// and one that `takes_space` while a NOSPACE alarm is (etcd refuses the
/// same). Every replica holds the same alarms, so every one refuses alike.
fn refuse_for_alarms<T: Snapshot>(snap: &T, takes_space: bool) -> KvResult<()> {
    let raised = alarms(snap)?;
    if raised.iter().any(|(kind, _)| *kind == AlarmKind::Corrupt) {
        return Err(KvError::Corrupt);
    }
    if takes_space && raised.iter().any(|(kind, _)| *kind == AlarmKind::NoSpace) {
        return Err(KvError::NoSpace);
    }
    Ok(())
}

/// Every alarm raised, by kind and member.
fn alarms<T: Snapshot>(snap: &T) -> KvResult<Vec<(AlarmKind, u64)>> {
    let start = codec::meta_key::ALARM;
    let mut raised = Vec::new();
    for row in snap.rows(tree::META, Bound::Included(start), Bound::Unbounded)? {
        let (key, _) = row?;
        if !key.starts_with(start) {
            break;
        }
        if let Some(alarm) = codec::decode_alarm_key(key) {
            raised.push(alarm);
        }
    }
    Ok(raised)
}

fn not_home(homes: LeaseHomes, id: LeaseId) -> KvError {
    KvError::InvalidLease(format!(
        "lease {id} lives on shard {}, not shard {}",
        homes.home_of(id),
        homes.shard
    ))
}

/// Removes a lease on its home, with its keys here; its mirrors must then
/// go too (a task, when there are mirrors).
fn revoke_at_home<S: Storage>(
    writer: &mut Writer<'_, S>,
    homes: LeaseHomes,
    id: LeaseId,
    row: LeaseRow,
) -> KvResult<()> {
    writer.revoke(id)?;
    if homes.has_mirrors() {
        writer.store_task(&LeaseTask {
            id,
            kind: LeaseTaskKind::Revoke,
            ttl: row.ttl,
            granted_revision: row.granted_rev,
        })?;
    }
    Ok(())
}

/// Brings the mirror of `task.id` here to what its home says. A grant
/// newer than the mirror replaces it (an older mirror is a lease whose
/// revoke never reached this shard: it goes with its keys); a revoke
/// removes the mirror of that grant or an older one. Anything older than
/// the mirror does nothing, so tasks may come twice or late.
fn mirror<S: Storage>(writer: &mut Writer<'_, S>, task: &LeaseTask) -> KvResult<()> {
    let held = lease_row(&*writer.txn, task.id)?.map(|row| row.granted_rev);
    match task.kind {
        LeaseTaskKind::Grant => {
            if held.is_some_and(|held| held >= task.granted_revision) {
                return Ok(());
            }
            if held.is_some() {
                writer.revoke(task.id)?;
            }
            let row = LeaseRow {
                ttl: task.ttl,
                remaining_ttl: 0,
                granted_rev: task.granted_revision,
            };
            writer.store_lease(task.id, &row)
        }
        LeaseTaskKind::Revoke => match held {
            Some(held) if held <= task.granted_revision => writer.revoke(task.id),
            _ => Ok(()),
        },
    }
}

/// The id a grant without one gets: the revision's low 63 bits, or the
/// next id above them that is free and homed here. Every replica picks the
/// same.
fn free_lease_id<T: Snapshot>(snap: &T, rev: Revision, homes: LeaseHomes) -> KvResult<LeaseId> {
    let mut id = ((rev & (i64::MAX as u64)) as LeaseId).max(1);
    while !homes.is_home(id) || lease_row(snap, id)?.is_some() {
        id = if id == i64::MAX { 1 } else { id + 1 };
    }
    Ok(id)
}

/// A range answer handed out page by page from one snapshot, so a large
/// range holds one page of pairs in memory at a time.
pub struct RangePager<S: Storage = FileStorage> {
    snap: ReadTxn<S>,
    plan: RangePlan,
    progress: RangeProgress,
}

impl<S: Storage> RangePager<S> {
    /// The next page, of about `page_bytes` of keys and values (at least one
    /// pair); its `last` says whether more pages follow.
    pub fn next_page(&mut self, page_bytes: usize) -> KvResult<RangePage> {
        read::next_page(&self.snap, &self.plan, &mut self.progress, page_bytes)
    }
}
