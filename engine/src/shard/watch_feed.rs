//! A shard's side of watches that span shards: each node-level watch has a
//! store watcher on every shard, and the shard pushes what its watcher
//! hands out into the watch's channel, with the revision up to which it has
//! said everything ("closed"). The merging side is `shard/watch.rs`.
//!
//! Flow control ([`Credit`]): a shard stops sending once the events it sent
//! and the stream has not handed out reach [`PART_BYTES`], or
//! [`LAGGARD_BYTES`] while the stream is waiting on this very shard (it is
//! the laggard, whose closed revision holds everything back: it may run a
//! little further so that the stream is not kept waiting for the shard's
//! next round). Past that the store watcher keeps its events (bounded: it
//! falls back to reading the revision log), and the shard tries again on
//! its next round. So a merged watch holds at most about `PART_BYTES` plus
//! one message for each part that runs ahead of the slowest, however far
//! ahead it is, and `LAGGARD_BYTES` plus one message for the parts it
//! waits on, even when nobody reads it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::btree::Storage;
use crate::mvcc::{Event, Revision, Store, WatchId, WatchUpdate};

/// Bytes of events (as `Event::size` counts them) one part of a merged
/// watch may have sent and not yet had handed out by the stream.
pub(crate) const PART_BYTES: usize = 1 << 20;
/// The same bound for a part the stream waits on. A laggard's events are
/// all ready to hand out, so it holds this much only while the stream's
/// reader does not read (its connection waits for a slow client).
pub(crate) const LAGGARD_BYTES: usize = 4 * PART_BYTES;
/// About how many bytes of events one message carries.
const MESSAGE_BYTES: usize = 256 << 10;

/// What a shard tells a merged watch.
#[derive(Debug)]
pub(crate) struct WatchMessage {
    pub(crate) shard: usize,
    pub(crate) body: WatchBody,
}

#[derive(Debug)]
pub(crate) enum WatchBody {
    /// Events in revision order; the shard has said everything up to
    /// `closed` (at least the revision before the last event's).
    Events {
        events: Vec<Event>,
        closed: Revision,
    },
    /// Nothing new, everything up to `closed` said.
    Progress { closed: Revision },
    /// The watch started below the compaction point.
    Compacted { compact_revision: Revision },
    /// The shard could not read its history.
    Failed(String),
}

/// Flow control between one shard's feed and the merged stream it feeds.
#[derive(Debug, Default)]
pub(crate) struct Credit {
    /// One per message sent and not yet taken by the stream, plus the size
    /// of every event sent and not yet handed out (`Event::size`).
    unreleased: AtomicUsize,
    /// The stream can hand out nothing more until this shard says more:
    /// it may send up to [`LAGGARD_BYTES`].
    laggard: AtomicBool,
    /// At its last pump the feed sent everything its store watcher had and
    /// the watcher is live (not reading history, not held back): the
    /// stream may then take the shard as closed up to the node's floor
    /// while the shard has nothing unpublished (`watermarks.rs`).
    live: AtomicBool,
    /// Flow control stopped the feed at its last pump: the stream asks
    /// its shard again, at once, when it comes to wait on it.
    held_back: AtomicBool,
}

impl Credit {
    /// The cost of a message with `events`: what [`Credit::sent`] adds and
    /// the stream takes back as it takes the message and hands the events
    /// out.
    pub(crate) fn cost(events: &[Event]) -> usize {
        1 + events.iter().map(Event::size).sum::<usize>()
    }

    fn may_send(&self) -> bool {
        let limit = if self.laggard.load(Ordering::Relaxed) {
            LAGGARD_BYTES
        } else {
            PART_BYTES
        };
        self.unreleased.load(Ordering::Relaxed) < limit
    }

    fn sent(&self, cost: usize) {
        self.unreleased.fetch_add(cost, Ordering::Relaxed);
    }

    /// The stream took a message, or handed out events: `cost` of them is
    /// no longer held for this part.
    pub(crate) fn released(&self, cost: usize) {
        let _ = self
            .unreleased
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                Some(held.saturating_sub(cost))
            });
    }

    /// Marks whether the stream is waiting on this part.
    pub(crate) fn set_laggard(&self, laggard: bool) -> bool {
        self.laggard.swap(laggard, Ordering::Relaxed)
    }

    fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::SeqCst);
    }

    /// See `live`: read after the shard's unpublished count, and before
    /// the channel is drained.
    pub(crate) fn is_live(&self) -> bool {
        self.live.load(Ordering::SeqCst)
    }

    /// See `held_back`.
    pub(crate) fn is_held_back(&self) -> bool {
        self.held_back.load(Ordering::Relaxed)
    }

    /// Bytes sent and not yet handed out (for audits and tests).
    pub(crate) fn unreleased(&self) -> usize {
        self.unreleased.load(Ordering::Relaxed)
    }
}

/// Where one shard's part of a watch goes.
pub(crate) struct Subscriber {
    pub(crate) sender: flume::Sender<WatchMessage>,
    /// Flow control, shared with the stream.
    pub(crate) credit: Arc<Credit>,
}

/// One shard's feeds into merged watches.
#[derive(Default)]
pub(crate) struct WatchFeeds {
    subscribers: BTreeMap<WatchId, Subscriber>,
    /// Watchers held back by flow control.
    blocked: BTreeSet<WatchId>,
    /// Watchers whose reader asked this shard to close up to a revision,
    /// with that revision: answered once the shard can say it has.
    progress_wanted: BTreeMap<WatchId, Revision>,
}

impl WatchFeeds {
    /// Watches fed, and the bytes of events sent to them and not yet
    /// handed out (for the metrics endpoint; walks every watch).
    pub(crate) fn reading(&self) -> (usize, usize) {
        let backlog = self
            .subscribers
            .values()
            .map(|s| s.credit.unreleased())
            .sum();
        (self.subscribers.len(), backlog)
    }

    pub(crate) fn add(&mut self, id: WatchId, subscriber: Subscriber) {
        self.subscribers.insert(id, subscriber);
    }

    pub(crate) fn cancel<S: Storage>(&mut self, store: &mut Store<S>, id: WatchId) {
        store.watch_cancel(id);
        self.subscribers.remove(&id);
        self.blocked.remove(&id);
        self.progress_wanted.remove(&id);
    }

    /// The shard stopped: every reader hears why, and the feeds end.
    pub(crate) fn fail_all(&mut self, shard: usize, reason: &str) {
        for subscriber in std::mem::take(&mut self.subscribers).into_values() {
            subscriber.credit.sent(1);
            let body = WatchBody::Failed(reason.to_string());
            let _ = subscriber.sender.send(WatchMessage { shard, body });
        }
        self.blocked.clear();
        self.progress_wanted.clear();
    }

    /// Whether a watcher here still waits for progress up to `revision`
    /// or beyond.
    pub(crate) fn wants_progress_to(&self, revision: Revision) -> bool {
        self.progress_wanted
            .values()
            .any(|wanted| *wanted >= revision)
    }

    pub(crate) fn want_progress(&mut self, id: WatchId, revision: Revision) {
        if self.subscribers.contains_key(&id) {
            let wanted = self.progress_wanted.entry(id).or_insert(revision);
            *wanted = (*wanted).max(revision);
        }
    }

    /// Hands out what the store's watchers have, as flow control allows.
    /// `safe` is a revision below which this shard will never apply
    /// anything it has not applied yet.
    pub(crate) fn pump<S: Storage>(&mut self, store: &mut Store<S>, shard: usize, safe: Revision) {
        let mut due: BTreeSet<WatchId> = store.watches_ready().into_iter().collect();
        due.append(&mut self.blocked);
        due.extend(self.progress_wanted.keys().copied());
        self.feed_all(store, shard, safe, due);
    }

    /// Like [`WatchFeeds::pump`], for the feeds that were live at their
    /// last pump only: what the last apply gave them, from memory. Run
    /// before writers are answered, so that a watch that is up to date
    /// gets a write's events no later than its writer, while a watch
    /// reading history (or held back) is fed after the answers and never
    /// delays them.
    pub(crate) fn pump_live<S: Storage>(
        &mut self,
        store: &mut Store<S>,
        shard: usize,
        safe: Revision,
    ) {
        let due: BTreeSet<WatchId> = store
            .watches_ready()
            .into_iter()
            .filter(|id| {
                !self.blocked.contains(id)
                    && self.subscribers.get(id).is_some_and(|s| s.credit.is_live())
            })
            .collect();
        self.feed_all(store, shard, safe, due);
    }

    fn feed_all<S: Storage>(
        &mut self,
        store: &mut Store<S>,
        shard: usize,
        safe: Revision,
        due: BTreeSet<WatchId>,
    ) {
        for id in due {
            if !self.feed(store, shard, safe, id) {
                self.cancel(store, id);
            }
        }
    }

    /// A message saying `closed` answers a progress request up to there.
    fn progress_answered(&mut self, id: WatchId, closed: Revision) {
        if self
            .progress_wanted
            .get(&id)
            .is_some_and(|asked| closed >= *asked)
        {
            self.progress_wanted.remove(&id);
        }
    }

    /// Feeds one watcher; `false` when it is finished (reader gone,
    /// compacted or failed).
    fn feed<S: Storage>(
        &mut self,
        store: &mut Store<S>,
        shard: usize,
        safe: Revision,
        id: WatchId,
    ) -> bool {
        let Some(subscriber) = self.subscribers.get(&id).map(|s| Subscriber {
            sender: s.sender.clone(),
            credit: s.credit.clone(),
        }) else {
            return true;
        };
        if subscriber.sender.is_disconnected() {
            return false;
        }
        let send = |body: WatchBody| {
            let cost = match &body {
                WatchBody::Events { events, .. } => Credit::cost(events),
                _ => 1,
            };
            subscriber.credit.sent(cost);
            subscriber.sender.send(WatchMessage { shard, body }).is_ok()
        };
        // Not live until it ends drained below.
        subscriber.credit.set_live(false);
        loop {
            if !subscriber.credit.may_send() {
                subscriber.credit.held_back.store(true, Ordering::Relaxed);
                self.blocked.insert(id);
                return true;
            }
            subscriber.credit.held_back.store(false, Ordering::Relaxed);
            match store.watch_poll(id, MESSAGE_BYTES) {
                Ok(Some(WatchUpdate::Events { events, fragment })) => {
                    let last = events.last().map_or(0, |e| e.kv.mod_revision);
                    let drained = matches!(store.watch_progress(id), Ok(Some(_)));
                    let closed = if fragment {
                        last.saturating_sub(1)
                    } else if drained {
                        safe.max(last)
                    } else {
                        last
                    };
                    self.progress_answered(id, closed);
                    if !send(WatchBody::Events { events, closed }) {
                        return false;
                    }
                }
                Ok(Some(WatchUpdate::Compacted { compact_revision })) => {
                    send(WatchBody::Compacted { compact_revision });
                    return false;
                }
                Ok(None) => {
                    let live = matches!(store.watch_progress(id), Ok(Some(_)));
                    subscriber.credit.set_live(live);
                    // Drained: say where this shard stands, once that is as
                    // far as the reader asked (a busy shard's safe revision
                    // is its current one; it rises as the shard applies).
                    let asked = self.progress_wanted.get(&id).copied();
                    if asked.is_some_and(|asked| safe >= asked) && live {
                        self.progress_wanted.remove(&id);
                        return send(WatchBody::Progress { closed: safe });
                    }
                    return true;
                }
                Err(e) => {
                    send(WatchBody::Failed(e.to_string()));
                    return false;
                }
            }
        }
    }
}
