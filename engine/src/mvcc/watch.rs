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
use crate::mvcc::codec::{self, tree, At};
use crate::mvcc::error::{KvError, KvResult};
use crate::mvcc::read::{linked_change, KeyRange};
use crate::mvcc::snapshot::{Snapshot, View};
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

/// Most `history` rows one catch-up poll reads.
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

/// Events of one applied revision, shared by the watchers they concern:
/// all of the revision's events, or those in one group's range.
#[derive(Debug)]
struct RevisionEvents {
    events: Vec<Event>,
    /// Their [`Event::size`] total: what a watcher holding them pins.
    bytes: usize,
}

impl RevisionEvents {
    fn new(events: Vec<Event>) -> Rc<RevisionEvents> {
        let bytes = events.iter().map(Event::size).sum();
        Rc::new(RevisionEvents { events, bytes })
    }
}

/// One revision in a watcher's buffer.
#[derive(Debug)]
struct Queued {
    revision: Rc<RevisionEvents>,
    /// How many of its events the watcher wants (filters apply on poll).
    wanted: usize,
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
    buffer: VecDeque<Queued>,
    /// Sum of `wanted` over the buffer.
    buffered_events: usize,
    /// Sum of the buffered revisions' bytes: everything the buffer pins,
    /// including events it does not want, so the cap bounds memory.
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
}

impl WatchHub {
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
    pub(crate) fn publish(&mut self, log: EventLog) {
        for (revision, events) in log.revisions {
            let all = RevisionEvents::new(events);
            let mut behind = Vec::new();
            for (range, ids) in self.live.values() {
                let in_range = all
                    .events
                    .iter()
                    .filter(|e| range.contains(&e.kv.key))
                    .count();
                if in_range == 0 {
                    continue;
                }
                // A group that wants only part of the revision gets a copy
                // of that part, so its watchers pin only their range's
                // events; the copy is shared within the group.
                let shared = if in_range == all.events.len() {
                    all.clone()
                } else {
                    RevisionEvents::new(
                        all.events
                            .iter()
                            .filter(|e| range.contains(&e.kv.key))
                            .cloned()
                            .collect(),
                    )
                };
                for id in ids {
                    let Some(w) = self.watchers.get_mut(id) else {
                        continue;
                    };
                    if revision < w.from.0 {
                        continue;
                    }
                    let wanted = shared.events.iter().filter(|e| w.wants(e)).count();
                    if wanted == 0 {
                        continue;
                    }
                    if w.buffered_events + wanted > MAX_BUFFERED_EVENTS
                        || w.buffered_bytes + shared.bytes > MAX_BUFFERED_BYTES
                    {
                        behind.push(*id);
                        continue;
                    }
                    w.buffered_events += wanted;
                    w.buffered_bytes += shared.bytes;
                    w.buffer.push_back(Queued {
                        revision: shared.clone(),
                        wanted,
                    });
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
            while let Some(queued) = w.buffer.pop_front() {
                w.buffered_events = w.buffered_events.saturating_sub(queued.wanted);
                w.buffered_bytes = w.buffered_bytes.saturating_sub(queued.revision.bytes);
                for event in queued.revision.events.iter() {
                    if w.wants(event) {
                        bytes += event.size();
                        events.push(w.shape(event));
                    }
                }
                if bytes >= max_bytes {
                    break;
                }
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
        let snap = View::of(&self.db, &self.held)?;
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
/// A previous pair is attached to every change above the compaction point
/// (it is the key's newest change at or below it, or later, and compaction
/// keeps those), never to one at the point itself, so the answer does not
/// depend on how far compaction has got.
fn catch_up<T: Snapshot>(
    snap: &T,
    w: &Watcher,
    max_bytes: usize,
    compact: Revision,
) -> KvResult<CatchUpPage> {
    let start = At {
        rev: w.from.0,
        seq: w.from.1,
    }
    .key();
    let mut events = Vec::new();
    let mut bytes = 0;
    let mut revision_bytes = 0;
    let mut revision_rows = 0;
    let mut revision_events = 0;
    let mut last_revision = None;
    let rows = snap.rows(tree::HISTORY, Bound::Included(&start), Bound::Unbounded)?;
    for (rows_read, row) in rows.enumerate() {
        let (row_key, row) = row?;
        let at = At::from_key(row_key)?;
        let (revision, seq) = (at.rev, at.seq);
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
        let change = codec::decode_change(at, row)?;
        let (kind, key) = (change.kind(), change.key);
        let skip = !w.range.contains(key)
            || (w.no_put && kind == EventKind::Put)
            || (w.no_delete && kind == EventKind::Delete);
        if skip {
            continue;
        }
        let kv = match change.version {
            Some((meta, value)) => meta.with(key, value),
            None => KeyValue {
                key: key.to_vec(),
                mod_revision: revision,
                ..KeyValue::default()
            },
        };
        // The version before: the key's previous change, when it is a put.
        // For a change above the compaction point that is the key's newest
        // change at or below it, which compaction keeps, so the answer does
        // not depend on how far compaction got. At the compaction point
        // itself it may be going, so none is given there.
        let prev_kv = match change.prev {
            Some(prev) if w.prev_kv && revision > compact => {
                linked_change(snap, key, prev, compact)?
                    .and_then(|before| before.version)
                    .map(|(meta, value)| meta.with(key, value))
            }
            _ => None,
        };
        let event = Event { kind, kv, prev_kv };
        let size = event.size();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btree::Options;
    use crate::mvcc::types::{DeleteRangeRequest, Entry, PutRequest, RequestOp, TxnRequest};

    fn put(key: &str, value_len: usize) -> RequestOp {
        RequestOp::Put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: vec![b'v'; value_len],
            ..Default::default()
        })
    }

    /// Applies `ops` as one transaction at revision `rev`.
    fn apply_at(store: &mut Store, rev: Revision, ops: Vec<RequestOp>) {
        let txn = TxnRequest {
            compare: Vec::new(),
            success: ops,
            failure: Vec::new(),
        };
        store.apply(rev, rev, &Entry::Txn(txn)).unwrap();
    }

    fn watcher(store: &Store, id: WatchId) -> &Watcher {
        &store.watches.watchers[&id]
    }

    #[test]
    fn a_watcher_pins_only_the_events_of_its_range() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path().join("kv.db"), Options::default()).unwrap();
        let id = store
            .watch(&WatchRequest {
                key: b"a".to_vec(),
                ..Default::default()
            })
            .unwrap();
        // Each revision changes "a" a little and "b" by 600 KiB: sharing the
        // whole revision would pin 600 KiB per buffered revision.
        for rev in 1..=5 {
            apply_at(&mut store, rev, vec![put("a", 10), put("b", 600 << 10)]);
        }
        let w = watcher(&store, id);
        assert!(w.synced, "a small range stays live");
        assert_eq!(w.buffer.len(), 5);
        assert!(w.buffer.iter().all(|q| q.revision.events.len() == 1));
        assert!(w.buffered_bytes < 1024, "{} bytes", w.buffered_bytes);
    }

    #[test]
    fn filtered_out_events_still_count_against_the_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path().join("kv.db"), Options::default()).unwrap();
        let id = store
            .watch(&WatchRequest {
                key: b"a".to_vec(),
                range_end: b"z".to_vec(),
                no_put: true,
                ..Default::default()
            })
            .unwrap();
        apply_at(&mut store, 1, vec![put("b", 1)]);
        // Revisions of a 400 KiB put and a small delete: the watcher wants
        // only the delete but its buffer holds the put too, so the third
        // revision passes the byte cap and the watcher falls behind.
        let mut rev = 1;
        for i in 0..3 {
            let delete = RequestOp::DeleteRange(DeleteRangeRequest {
                key: b"b".to_vec(),
                ..Default::default()
            });
            rev += 1;
            apply_at(
                &mut store,
                rev,
                vec![put(&format!("c{i}"), 400 << 10), delete],
            );
            rev += 1;
            apply_at(&mut store, rev, vec![put("b", 1)]);
        }
        let w = watcher(&store, id);
        assert!(!w.synced);
        assert!(w.buffered_bytes <= MAX_BUFFERED_BYTES);
        assert_eq!(w.buffer.len(), 2);
    }
}
