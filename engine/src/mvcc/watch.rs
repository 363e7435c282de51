//! The watch hub of one shard, in memory.
//!
//! A *synced* watcher sits in the live index, grouped with every watcher of
//! the same range (10,000 watchers on one prefix are one group: one range
//! check per revision, then one shared pointer per watcher). Each applied
//! revision's events are shared by every watcher they concern, in a bounded
//! buffer per watcher. A full buffer, or a revision with too many events to
//! keep in memory, turns the watcher *unsynced*: nothing more is queued for
//! it; once its buffer is drained it reads the revision log from where it
//! stopped, in bounded pages, and rejoins the live index when it reaches
//! the head. Applies never wait for a watcher and memory per watcher is
//! bounded.
//!
//! Invariant: a watcher has received every matching event below its
//! position and nothing at or above it, where its position is `from` when
//! unsynced and the head otherwise; its buffer holds whole revisions, in
//! order.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;
use std::rc::Rc;

use crate::btree::Storage;
use crate::mvcc::codec::{self, tree};
use crate::mvcc::error::{KvError, KvResult};
use crate::mvcc::read::{version_at, KeyRange, Revisions};
use crate::mvcc::snapshot::Snapshot;
use crate::mvcc::store::Store;
use crate::mvcc::types::{Event, EventKind, KeyValue, Revision};
use crate::mvcc::write::EventLog;

/// Identifies a watcher within its shard.
pub type WatchId = u64;

/// Most events a watcher may have queued before it falls back to reading
/// the revision log.
pub const MAX_BUFFERED_EVENTS: usize = 1000;

/// Most bytes of events a watcher may have queued.
pub const MAX_BUFFERED_BYTES: usize = 1 << 20;

/// Most `revlog` rows one catch-up poll reads.
const MAX_CATCH_UP_ROWS: usize = 4096;

/// What to watch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WatchRequest {
    /// First key.
    pub key: Vec<u8>,
    /// As in [`crate::mvcc::RangeRequest::range_end`].
    pub range_end: Vec<u8>,
    /// First revision to report; 0 is "from the next one".
    pub start_revision: Revision,
    /// Attach the previous pair to each event.
    pub prev_kv: bool,
    /// Leave puts out.
    pub no_put: bool,
    /// Leave deletes out.
    pub no_delete: bool,
}

/// What a poll of a watcher hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchUpdate {
    /// Events, in revision order, whole revisions unless `fragment`.
    Events {
        /// The events.
        events: Vec<Event>,
        /// The last revision's events go on in the next update (a revision
        /// too large for one).
        fragment: bool,
    },
    /// The watcher wanted history that was compacted; it is closed.
    Compacted {
        /// History below this revision is gone.
        compact_revision: Revision,
    },
}

/// The events of one applied revision, shared by the watchers they concern.
#[derive(Debug)]
struct RevisionEvents {
    events: Vec<Event>,
}

fn event_size(event: &Event) -> usize {
    let prev = event
        .prev_kv
        .as_ref()
        .map_or(0, |kv| kv.key.len() + kv.value.len());
    event.kv.key.len() + event.kv.value.len() + prev + 48
}

#[derive(Debug)]
struct Watcher {
    range: KeyRange,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    synced: bool,
    /// Synced: the first revision it wants. Unsynced: where the catch-up
    /// resumes, `(revision, sequence within it)`.
    from: (Revision, u32),
    buffer: VecDeque<Rc<RevisionEvents>>,
    buffered_events: usize,
    buffered_bytes: usize,
}

impl Watcher {
    fn wants(&self, event: &Event) -> bool {
        self.range.contains(&event.kv.key)
            && !(self.no_put && event.kind == EventKind::Put)
            && !(self.no_delete && event.kind == EventKind::Delete)
    }

    fn shape(&self, event: &Event) -> Event {
        Event {
            kind: event.kind,
            kv: event.kv.clone(),
            prev_kv: if self.prev_kv {
                event.prev_kv.clone()
            } else {
                None
            },
        }
    }
}

type RangeKey = (Vec<u8>, Option<Vec<u8>>);

/// Every watcher of a shard.
#[derive(Debug, Default)]
pub(crate) struct WatchHub {
    next_id: WatchId,
    watchers: BTreeMap<WatchId, Watcher>,
    /// Synced watchers, grouped by identical range.
    live: BTreeMap<RangeKey, (KeyRange, BTreeSet<WatchId>)>,
    /// Watchers with something to hand out.
    ready: BTreeSet<WatchId>,
    current: Revision,
}

impl WatchHub {
    pub(crate) fn new(current: Revision) -> WatchHub {
        WatchHub {
            current,
            ..WatchHub::default()
        }
    }

    fn join_live(&mut self, id: WatchId) {
        if let Some(w) = self.watchers.get_mut(&id) {
            w.synced = true;
            let key = (w.range.start.clone(), w.range.end.clone());
            self.live
                .entry(key)
                .or_insert_with(|| (w.range.clone(), BTreeSet::new()))
                .1
                .insert(id);
        }
    }

    fn leave_live(&mut self, id: WatchId) {
        if let Some(w) = self.watchers.get_mut(&id) {
            w.synced = false;
            let key = (w.range.start.clone(), w.range.end.clone());
            if let Some((_, ids)) = self.live.get_mut(&key) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.live.remove(&key);
                }
            }
        }
    }

    /// Turns a synced watcher unsynced from `revision` on.
    fn fall_behind(&mut self, id: WatchId, revision: Revision) {
        self.leave_live(id);
        if let Some(w) = self.watchers.get_mut(&id) {
            w.from = (w.from.0.max(revision), 0);
        }
        self.ready.insert(id);
    }

    /// Hands the events of a committed batch to the synced watchers.
    pub(crate) fn publish(&mut self, log: EventLog, revisions: Revisions) {
        self.current = revisions.current;
        for (revision, events) in log.revisions {
            let batch = Rc::new(RevisionEvents { events });
            let mut behind = Vec::new();
            for (range, ids) in self.live.values() {
                let in_range: Vec<&Event> = batch
                    .events
                    .iter()
                    .filter(|e| range.contains(&e.kv.key))
                    .collect();
                if in_range.is_empty() {
                    continue;
                }
                for id in ids {
                    let Some(w) = self.watchers.get_mut(id) else {
                        continue;
                    };
                    if revision < w.from.0 {
                        continue;
                    }
                    let wanted: Vec<&&Event> = in_range.iter().filter(|e| w.wants(e)).collect();
                    if wanted.is_empty() {
                        continue;
                    }
                    let bytes: usize = wanted.iter().map(|e| event_size(e)).sum();
                    if w.buffered_events + wanted.len() > MAX_BUFFERED_EVENTS
                        || w.buffered_bytes + bytes > MAX_BUFFERED_BYTES
                    {
                        behind.push(*id);
                        continue;
                    }
                    w.buffered_events += wanted.len();
                    w.buffered_bytes += bytes;
                    w.buffer.push_back(batch.clone());
                    self.ready.insert(*id);
                }
            }
            for id in behind {
                self.fall_behind(id, revision);
            }
        }
        if let Some(revision) = log.overflow_from {
            // Too many events to keep: every synced watcher reads them
            // from the log instead.
            let synced: Vec<WatchId> = self
                .live
                .values()
                .flat_map(|(_, ids)| ids.iter().copied())
                .collect();
            for id in synced {
                self.fall_behind(id, revision);
            }
        }
    }
}

impl<S: Storage> Store<S> {
    /// Starts a watcher. From revision 0 it sees what is applied from now
    /// on; from an older revision it first reads history (a revision below
    /// the compaction point gives [`WatchUpdate::Compacted`] on the first
    /// poll).
    pub fn watch(&mut self, request: &WatchRequest) -> KvResult<WatchId> {
        let range = KeyRange::new(&request.key, &request.range_end)?;
        let current = self.current_revision();
        let hub = &mut self.watches;
        let id = hub.next_id;
        hub.next_id += 1;
        let catch_up = request.start_revision != 0 && request.start_revision <= current;
        let from = if request.start_revision == 0 {
            current.saturating_add(1)
        } else {
            request.start_revision
        };
        hub.watchers.insert(
            id,
            Watcher {
                range,
                prev_kv: request.prev_kv,
                no_put: request.no_put,
                no_delete: request.no_delete,
                synced: false,
                from: (from, 0),
                buffer: VecDeque::new(),
                buffered_events: 0,
                buffered_bytes: 0,
            },
        );
        if catch_up {
            hub.ready.insert(id);
        } else {
            hub.join_live(id);
        }
        Ok(id)
    }

    /// Stops a watcher; says whether it existed.
    pub fn watch_cancel(&mut self, id: WatchId) -> bool {
        let hub = &mut self.watches;
        hub.leave_live(id);
        hub.ready.remove(&id);
        hub.watchers.remove(&id).is_some()
    }

    /// Watchers that have something to hand out (or a catch-up to do)
    /// since the last call.
    pub fn watches_ready(&mut self) -> Vec<WatchId> {
        std::mem::take(&mut self.watches.ready)
            .into_iter()
            .collect()
    }

    /// Number of watchers.
    pub fn watch_count(&self) -> usize {
        self.watches.watchers.len()
    }

    /// The current revision if the watcher has nothing pending (for a
    /// progress notification), else `None`.
    pub fn watch_progress(&self, id: WatchId) -> KvResult<Option<Revision>> {
        let w = self
            .watches
            .watchers
            .get(&id)
            .ok_or(KvError::WatchNotFound(id))?;
        Ok((w.synced && w.buffer.is_empty()).then_some(self.current_revision()))
    }

    /// The watcher's next events: buffered revisions first, then history
    /// read from the revision log, about `max_bytes` at a time. `None` when
    /// it has nothing pending.
    pub fn watch_poll(&mut self, id: WatchId, max_bytes: usize) -> KvResult<Option<WatchUpdate>> {
        let revisions = self.revisions();
        let w = self
            .watches
            .watchers
            .get_mut(&id)
            .ok_or(KvError::WatchNotFound(id))?;
        if !w.buffer.is_empty() {
            let mut events = Vec::new();
            let mut bytes = 0;
            while let Some(batch) = w.buffer.pop_front() {
                for event in batch.events.iter() {
                    if !w.wants(event) {
                        continue;
                    }
                    let size = event_size(event);
                    w.buffered_events = w.buffered_events.saturating_sub(1);
                    w.buffered_bytes = w.buffered_bytes.saturating_sub(size);
                    bytes += size;
                    events.push(w.shape(event));
                }
                if bytes >= max_bytes {
                    break;
                }
            }
            if w.buffer.is_empty() {
                w.buffered_events = 0;
                w.buffered_bytes = 0;
            }
            if !w.buffer.is_empty() || !w.synced {
                self.watches.ready.insert(id);
            }
            return Ok(Some(WatchUpdate::Events {
                events,
                fragment: false,
            }));
        }
        if w.synced {
            return Ok(None);
        }
        if w.from.0 < revisions.compact {
            self.watch_cancel(id);
            return Ok(Some(WatchUpdate::Compacted {
                compact_revision: revisions.compact,
            }));
        }
        let snap = self.snapshot()?;
        let Some(w) = self.watches.watchers.get_mut(&id) else {
            return Ok(None);
        };
        let page = catch_up(&snap, w, max_bytes, revisions.compact)?;
        match page.resume {
            Some(at) => {
                w.from = at;
                self.watches.ready.insert(id);
            }
            None => {
                w.from = (w.from.0.max(revisions.current.saturating_add(1)), 0);
                self.watches.join_live(id);
            }
        }
        if page.events.is_empty() && page.resume.is_none() {
            return Ok(None);
        }
        Ok(Some(WatchUpdate::Events {
            events: page.events,
            fragment: page.fragment,
        }))
    }
}

struct CatchUpPage {
    events: Vec<Event>,
    fragment: bool,
    /// Where the next page starts; `None` when the log is read to its end.
    resume: Option<(Revision, u32)>,
}

/// Reads the revision log from the watcher's position: whole revisions
/// until about `max_bytes` of its events or [`MAX_CATCH_UP_ROWS`] rows, a
/// revision split only when it alone is larger.
///
/// A previous pair is attached only when it is at or above the compaction
/// point, so the answer does not depend on how far compaction has got.
fn catch_up<T: Snapshot>(
    snap: &T,
    w: &Watcher,
    max_bytes: usize,
    compact: Revision,
) -> KvResult<CatchUpPage> {
    let start = codec::revlog_key(w.from.0, w.from.1);
    let mut events = Vec::new();
    let mut bytes = 0;
    let mut revision_bytes = 0;
    let mut revision_rows = 0;
    let mut revision_events = 0;
    let mut last_revision = None;
    let rows = snap.rows(tree::REVLOG, Bound::Included(&start), Bound::Unbounded)?;
    for (rows_read, row) in rows.enumerate() {
        let (row_key, row) = row?;
        let (revision, seq) = codec::split_revlog_key(row_key)?;
        if last_revision != Some(revision) {
            if bytes >= max_bytes || rows_read >= MAX_CATCH_UP_ROWS {
                return Ok(CatchUpPage {
                    events,
                    fragment: false,
                    resume: Some((revision, 0)),
                });
            }
            last_revision = Some(revision);
            revision_bytes = 0;
            revision_rows = 0;
            revision_events = 0;
        } else if revision_bytes >= max_bytes || revision_rows >= MAX_CATCH_UP_ROWS {
            return Ok(CatchUpPage {
                events,
                fragment: revision_events > 0,
                resume: Some((revision, seq)),
            });
        }
        revision_rows += 1;
        let (kind, key) = codec::decode_event(row)?;
        let skip = !w.range.contains(key)
            || (w.no_put && kind == EventKind::Put)
            || (w.no_delete && kind == EventKind::Delete);
        if skip {
            continue;
        }
        let kv = match kind {
            EventKind::Put => {
                let row = snap
                    .row(tree::HIST, &codec::hist_key(key, revision))?
                    .ok_or_else(|| missing_version(key, revision))?;
                let (meta, value) = codec::hist_view(revision, row)?
                    .ok_or_else(|| missing_version(key, revision))?;
                meta.with(key, value)
            }
            EventKind::Delete => KeyValue {
                key: key.to_vec(),
                mod_revision: revision,
                ..KeyValue::default()
            },
        };
        let prev_kv = if w.prev_kv && revision > 1 {
            version_at(snap, key, revision - 1)?
                .filter(|(meta, _)| meta.mod_revision >= compact)
                .map(|(meta, value)| meta.with(key, value))
        } else {
            None
        };
        let event = Event { kind, kv, prev_kv };
        let size = event_size(&event);
        bytes += size;
        revision_bytes += size;
        revision_events += 1;
        events.push(event);
    }
    Ok(CatchUpPage {
        events,
        fragment: false,
        resume: None,
    })
}

fn missing_version(key: &[u8], revision: Revision) -> KvError {
    KvError::Storage(crate::Error::BadRow {
        tree: "hist",
        reason: format!("revision log names {key:?} at {revision}, history has no put there"),
    })
}
