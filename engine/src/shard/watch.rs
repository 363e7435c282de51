//! Watches across shards: one stream in revision order (DESIGN.md,
//! "Revisions"). Each shard's store watcher feeds the stream's channel
//! (`watch_feed.rs`) with its events and the revision up to which it has
//! said everything. The stream holds events until every shard has closed
//! their revision, then hands them out in revision order (ties across
//! shards by shard). A shard with nothing to say is asked to close up to
//! the newest held revision (an HLC receive), so one idle shard never
//! stalls the stream. Started at a past revision, every shard reads its
//! history from there, so a watcher can resume from any revision.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::mvcc::{Event, Revision, WatchId, WatchRequest};
use crate::routing::shard_of_range;
use crate::shard::error::{NodeError, NodeResult};
use crate::shard::node::NodeClient;
use crate::shard::replica::ShardCall;
use crate::shard::watch_feed::{Credit, Subscriber, WatchBody, WatchMessage};

/// What a merged watch hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchBatch {
    /// Events in revision order.
    Events(Vec<Event>),
    /// Every event up to this revision has been handed out (the answer to
    /// [`WatchStream::request_progress`]).
    Progress(Revision),
    /// The watch asked for history below the compaction point; it is over.
    Compacted {
        /// History below this revision is gone.
        compact_revision: Revision,
    },
}

/// One shard's part of a stream.
struct Part {
    shard: usize,
    id: WatchId,
    /// Flow control with the shard's feed (`watch_feed.rs`).
    credit: Arc<Credit>,
    /// Everything up to here has arrived from this shard.
    closed: Revision,
    /// The highest revision this shard was asked to close.
    asked: Revision,
}

/// A watch over one or more shards, as one stream.
pub struct WatchStream<'a> {
    client: NodeClient<'a>,
    parts: Vec<Part>,
    receiver: flume::Receiver<WatchMessage>,
    /// Events not yet handed out, by (revision, shard, arrival).
    held: BTreeMap<(Revision, usize, u64), Event>,
    arrivals: u64,
    start: Revision,
    finished: Option<NodeResult<WatchBatch>>,
    /// A progress notification asked for and not yet given.
    progress_wanted: Option<Revision>,
}

impl<'a> NodeClient<'a> {
    /// Starts a watch. With `start_revision` 0 it reports what happens from
    /// now on; otherwise it first reads history from that revision.
    ///
    /// # Errors
    /// A bad range, or a stopped shard.
    pub async fn watch(&self, request: WatchRequest) -> NodeResult<WatchStream<'a>> {
        let shards = self.shard_count();
        let targets: Vec<usize> = match shard_of_range(&request.key, &request.range_end, shards) {
            Some(shard) => vec![shard],
            None => (0..shards).collect(),
        };
        let (observe, start) = if request.start_revision == 0 {
            // At least the node's floor: a watch created after a write was
            // acknowledged, on any shard, starts after it (as a read's
            // header does). In a cluster, what a majority round makes
            // known (`current_revision`).
            let floor = self.watermarks().floor();
            let now = if self.replicated() {
                self.current_revision().await?
            } else {
                self.highest_revision(targets.iter().copied()).await?
            }
            .max(floor);
            (now, now.saturating_add(1))
        } else {
            (0, request.start_revision)
        };
        let (sender, receiver) = flume::unbounded();
        let mut stream = WatchStream {
            client: *self,
            parts: Vec::with_capacity(targets.len()),
            receiver,
            held: BTreeMap::new(),
            arrivals: 0,
            start,
            finished: None,
            progress_wanted: None,
        };
        for shard in targets {
            let credit = Arc::new(Credit::default());
            let subscriber = Subscriber {
                sender: sender.clone(),
                credit: credit.clone(),
            };
            let request = WatchRequest {
                start_revision: start,
                ..request.clone()
            };
            let id = self
                .call(shard, |reply| ShardCall::Watch {
                    request,
                    observe,
                    subscriber,
                    reply,
                })
                .await?;
            stream.parts.push(Part {
                shard,
                id,
                credit,
                closed: start.saturating_sub(1),
                asked: 0,
            });
        }
        Ok(stream)
    }
}

impl WatchStream<'_> {
    /// The first revision this stream can report.
    pub fn start_revision(&self) -> Revision {
        self.start
    }

    /// Asks for a progress notification at `revision` (a revision the node
    /// has handed out, such as [`NodeClient::current_revision`]): once
    /// every event up to it has been handed out, [`WatchStream::next`]
    /// returns [`WatchBatch::Progress`]. A client that resumes after it
    /// misses nothing.
    pub fn request_progress(&mut self, revision: Revision) {
        let wanted = self.progress_wanted.map_or(revision, |r| r.max(revision));
        self.progress_wanted = Some(wanted);
        self.ask_up_to(wanted);
    }

    /// The next events, in revision order (waits for some). Cancel-safe:
    /// dropping the future loses nothing.
    ///
    /// # Errors
    /// A shard failed, or the node is shutting down.
    pub async fn next(&mut self) -> NodeResult<WatchBatch> {
        loop {
            // Quiet shards first (their floor read before the channel is
            // drained), then what the channel holds.
            let quiet = self.quiet_closes();
            while let Ok(message) = self.receiver.try_recv() {
                self.take(message);
            }
            if let Some(done) = self.finished.take() {
                self.finished = Some(Err(NodeError::InvalidRequest(
                    "the watch is over".to_string(),
                )));
                return done;
            }
            for (part, closed) in self.parts.iter_mut().zip(quiet) {
                part.closed = part.closed.max(closed.unwrap_or(0));
            }
            let release = self.parts.iter().map(|p| p.closed).min().unwrap_or(0);
            self.mark_laggards(release);
            let later = self.held.split_off(&(release.saturating_add(1), 0, 0));
            let ready = std::mem::replace(&mut self.held, later);
            if !ready.is_empty() {
                let events: Vec<Event> = ready
                    .into_iter()
                    .map(|((_, shard, _), event)| {
                        if let Some(part) = self.parts.iter().find(|p| p.shard == shard) {
                            part.credit.released(event.size());
                        }
                        event
                    })
                    .collect();
                return Ok(WatchBatch::Events(events));
            }
            // Everything up to `release` is out, and nothing held is at or
            // below it.
            if let Some(wanted) = self.progress_wanted {
                if release >= wanted {
                    self.progress_wanted = None;
                    return Ok(WatchBatch::Progress(wanted));
                }
            }
            self.ask_laggards();
            let message = self
                .receiver
                .recv_async()
                .await
                .map_err(|_| NodeError::Shutdown)?;
            self.take(message);
        }
    }

    /// For each part, the revision its shard is closed up to without being
    /// asked, if it is quiet (nothing unpublished) and its feed live: the
    /// node's floor (`watermarks.rs`). One member only.
    fn quiet_closes(&self) -> Vec<Option<Revision>> {
        let marks = self.client.watermarks();
        // In a cluster a quiet replica may still get entries its leader
        // stamps below this node's floor: every part is asked instead.
        if self.client.replicated() {
            return vec![None; self.parts.len()];
        }
        self.parts
            .iter()
            .map(|part| {
                let closed = marks.closed_if_quiet(part.shard);
                // Read after the count (ordering), before the drain.
                closed.filter(|_| part.credit.is_live())
            })
            .collect()
    }

    /// Tells each part whether the stream is waiting on it (its closed
    /// revision is the lowest): such a part may send past its byte limit,
    /// since nothing can be handed out until it does. A part that becomes
    /// one is asked again, so that its shard feeds it at once.
    fn mark_laggards(&mut self, release: Revision) {
        for part in &mut self.parts {
            let laggard = part.closed == release;
            let was = part.credit.set_laggard(laggard);
            if laggard && !was && part.credit.is_held_back() {
                // Held back by flow control: ask again, so that its shard
                // feeds it at once (not at its next round).
                part.asked = 0;
            }
        }
    }

    /// Bytes of events this stream holds, or its shards have sent it, and
    /// has not handed out: at most about `PART_BYTES` (1 MiB) plus one
    /// message for each part ahead of the slowest, and `LAGGARD_BYTES`
    /// (4 MiB) plus one message for each part it waits on
    /// (`watch_feed.rs`).
    pub fn held_bytes(&self) -> usize {
        self.parts.iter().map(|p| p.credit.unreleased()).sum()
    }

    /// Asks shards behind the newest held revision to close up to it.
    fn ask_laggards(&mut self) {
        let Some(&(top, _, _)) = self.held.keys().next_back() else {
            return;
        };
        self.ask_up_to(top);
    }

    /// Asks shards that have not closed up to `top` to do so.
    fn ask_up_to(&mut self, top: Revision) {
        for part in &mut self.parts {
            if part.closed < top && part.asked < top {
                part.asked = top;
                let call = ShardCall::WatchProgress {
                    id: part.id,
                    revision: top,
                };
                self.client.send_only(part.shard, call);
            }
        }
    }

    fn take(&mut self, message: WatchMessage) {
        let Some(part) = self.parts.iter_mut().find(|p| p.shard == message.shard) else {
            return;
        };
        // The message is taken; its events stay counted until handed out.
        part.credit.released(1);
        match message.body {
            WatchBody::Events { events, closed } => {
                for event in events {
                    let key = (event.kv.mod_revision, part.shard, self.arrivals);
                    self.arrivals += 1;
                    self.held.insert(key, event);
                }
                part.closed = part.closed.max(closed);
            }
            WatchBody::Progress { closed } => part.closed = part.closed.max(closed),
            WatchBody::Compacted { compact_revision } => {
                self.finished
                    .get_or_insert(Ok(WatchBatch::Compacted { compact_revision }));
            }
            WatchBody::Failed(reason) => {
                self.finished.get_or_insert(Err(NodeError::ShardStopped {
                    shard: part.shard,
                    reason,
                }));
            }
        }
    }
}

impl Drop for WatchStream<'_> {
    fn drop(&mut self) {
        for part in &self.parts {
            self.client
                .send_only(part.shard, ShardCall::WatchCancel { id: part.id });
        }
    }
}
