//! A watch stream on a connection. Its id is the id of the request that
//! created it; every message of the stream is a response with that id:
//! first `created`, then events (and progress notifications) in revision
//! order, and `canceled` when it ends with the history it asked for
//! compacted. The client cancels with `WatchCancel`, which the watch
//! itself answers once it has stopped sending, so nothing of the stream
//! follows that answer.

use std::rc::Rc;
use std::time::Instant;

use futures_lite::future::{or, pending};
use keel_engine::shard::{NodeError, NodeResult, WatchBatch, WatchStream};
use keel_proto::{ErrorCode, Event, Response, ResponseBody, Revision, WatchCreate, WatchEvents};

use crate::server::connection::Connection;
use crate::server::convert;
use crate::server::outbound::Closed;
use crate::server::watch_group::{Delivery, Membership, WatchGroups};

/// About how many bytes of events one response carries (a response always
/// holds whole revisions, so a client that resumes after the last revision
/// it saw misses nothing).
pub(crate) const EVENTS_PER_RESPONSE_BYTES: usize = 1 << 20;

/// What the connection tells a watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WatchCommand {
    /// The client cancelled it with request `request_id`, to be answered.
    Cancel {
        /// The `WatchCancel` request's id.
        request_id: u64,
    },
    /// The client asked for a progress notification at this revision.
    Progress(Revision),
}

/// The watch's entry in its connection's table, removed however the watch
/// ends, unless a cancel already took it (the table may then hold a newer
/// watch under the same id).
struct Registered<'a> {
    connection: &'a Connection,
    watch_id: u64,
    commands: Rc<flume::Sender<WatchCommand>>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut watches = self.connection.watches.borrow_mut();
        if watches
            .get(&self.watch_id)
            .is_some_and(|c| Rc::ptr_eq(c, &self.commands))
        {
            watches.remove(&self.watch_id);
        }
    }
}

/// Where a watch's events come from: its core's group for its shape
/// (`watch_group.rs`), or an engine watch of its own.
enum Source<'a> {
    Group(Membership),
    Own(WatchStream<'a>),
}

/// What a source hands the watch.
enum Item {
    Events(Vec<keel_engine::mvcc::Event>),
    Progress(Revision),
    Compacted(Revision),
    Failed(NodeError),
    /// The group dropped this watch for falling behind: go on alone.
    Detached,
}

impl Source<'_> {
    async fn next(&mut self, after: Revision) -> Item {
        match self {
            Source::Own(stream) => match stream.next().await {
                Ok(WatchBatch::Events(events)) => Item::Events(events),
                Ok(WatchBatch::Progress(revision)) => Item::Progress(revision),
                Ok(WatchBatch::Compacted { compact_revision }) => Item::Compacted(compact_revision),
                Err(error) => Item::Failed(error),
            },
            Source::Group(membership) => loop {
                match membership.member.next().await {
                    // Only what comes after this watch's start (and after
                    // what it sent): a shared batch may hold earlier ones.
                    Some(Delivery::Events(batch)) => {
                        let events: Vec<_> = batch
                            .iter()
                            .filter(|e| e.kv.mod_revision > after)
                            .cloned()
                            .collect();
                        if !events.is_empty() {
                            return Item::Events(events);
                        }
                    }
                    Some(Delivery::Progress(revision)) => return Item::Progress(revision),
                    Some(Delivery::Failed(error)) => return Item::Failed(error.copy()),
                    None => return Item::Detached,
                }
            },
        }
    }

    fn request_progress(&mut self, revision: Revision) {
        match self {
            Source::Own(stream) => stream.request_progress(revision),
            Source::Group(membership) => membership.request_progress(revision),
        }
    }
}

enum Step {
    Item(Item),
    Command(Option<WatchCommand>),
    Idle,
}

fn response(watch_id: u64, revision: u64, body: ResponseBody) -> Response {
    Response {
        id: watch_id,
        revision,
        body,
    }
}

fn error(watch_id: u64, error: &keel_engine::shard::NodeError) -> Response {
    response(watch_id, 0, ResponseBody::Error(convert::error(error)))
}

/// Runs the watch `watch_id` until it is cancelled, ends, or the
/// connection closes.
pub(crate) async fn run(
    connection: &Connection,
    watch_id: u64,
    create: WatchCreate,
) -> Result<(), Closed> {
    // Registered before the engine is asked, so a cancel that arrives
    // while the watch starts finds it.
    let (commands_in, commands) = flume::unbounded();
    let commands_in = Rc::new(commands_in);
    let taken = {
        let mut watches = connection.watches.borrow_mut();
        let taken = watches.contains_key(&watch_id);
        if !taken {
            watches.insert(watch_id, commands_in.clone());
        }
        taken
    };
    if taken {
        let message = format!("watch id {watch_id} is in use on this connection");
        return connection
            .respond_error(watch_id, ErrorCode::BadRequest, message)
            .await;
    }
    let _registered = Registered {
        connection,
        watch_id,
        commands: commands_in,
    };
    let client = connection.ctx.client();
    let opened = if WatchGroups::shares(&create) {
        open_in_group(connection, &create).await
    } else {
        match client.watch(convert::watch_request(&create)).await {
            Ok(stream) => {
                let start = stream.start_revision().saturating_sub(1);
                Ok((Source::Own(stream), start))
            }
            Err(failure) => Err(failure),
        }
    };
    let (mut source, start) = match opened {
        Ok(opened) => opened,
        Err(failure) => {
            connection.respond(error(watch_id, &failure)).await?;
            return answer_cancel(connection, &commands, watch_id).await;
        }
    };
    let created = WatchEvents {
        watch_id,
        created: true,
        ..WatchEvents::default()
    };
    connection
        .respond(response(watch_id, start, ResponseBody::Watch(created)))
        .await?;
    // The last revision sent (or the start): a detached watch goes on
    // after it.
    let mut sent = start;
    // A progress notification asked for and not yet given.
    let mut wanted: Option<Revision> = None;
    let interval = connection.ctx.limits.watch_progress_interval;
    let mut last_sent = Instant::now();
    // Whether its group writes its events itself ("Shared frames").
    let mut direct = false;
    loop {
        if let (Source::Group(membership), false, true) = (&source, direct, create.shared_frames) {
            direct = membership
                .member
                .go_direct(&connection.outbound, watch_id, sent, wanted);
        }
        let idle = async {
            if !create.progress_notify {
                return pending().await;
            }
            let due = last_sent + interval;
            glommio::timer::sleep(due.saturating_duration_since(Instant::now())).await;
            Step::Idle
        };
        let step = or(
            async { Step::Item(source.next(sent).await) },
            or(
                async { Step::Command(commands.recv_async().await.ok()) },
                idle,
            ),
        )
        .await;
        match step {
            Step::Item(Item::Events(events)) => {
                if let Some(last) = events.last() {
                    sent = sent.max(last.kv.mod_revision);
                }
                send_events(connection, watch_id, events).await?;
                last_sent = Instant::now();
            }
            Step::Item(Item::Progress(revision)) => {
                // A group's notification reaches every member; only those
                // that asked for it send it.
                let own = matches!(source, Source::Own(_));
                if own || wanted.is_some_and(|w| revision >= w) {
                    wanted = None;
                    sent = sent.max(revision);
                    let progress = ResponseBody::Watch(WatchEvents {
                        watch_id,
                        ..WatchEvents::default()
                    });
                    connection
                        .respond(response(watch_id, revision, progress))
                        .await?;
                    last_sent = Instant::now();
                }
            }
            Step::Item(Item::Compacted(compact_revision)) => {
                let over = ResponseBody::Watch(WatchEvents {
                    watch_id,
                    canceled: true,
                    compact_revision,
                    ..WatchEvents::default()
                });
                drop(source);
                connection.respond(response(watch_id, 0, over)).await?;
                return answer_cancel(connection, &commands, watch_id).await;
            }
            Step::Item(Item::Failed(failure)) => {
                // Out of its group before the last word (as for a cancel).
                drop(source);
                connection.respond(error(watch_id, &failure)).await?;
                return answer_cancel(connection, &commands, watch_id).await;
            }
            Step::Item(Item::Detached) => {
                if let (Source::Group(membership), true) = (&source, direct) {
                    // The group sent for it until now; a progress asked for
                    // meanwhile (by the group or by this task) is still owed.
                    sent = sent.max(membership.member.sent());
                    wanted = match (wanted, membership.member.wanted()) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    };
                }
                direct = false;
                // Too slow for the group: an engine watch of its own, from
                // after what it sent (history first).
                let resume = keel_engine::mvcc::WatchRequest {
                    start_revision: sent + 1,
                    ..convert::watch_request(&create)
                };
                match client.watch(resume).await {
                    Ok(mut stream) => {
                        if let Some(revision) = wanted {
                            stream.request_progress(revision);
                        }
                        source = Source::Own(stream);
                    }
                    Err(failure) => {
                        drop(source);
                        connection.respond(error(watch_id, &failure)).await?;
                        return answer_cancel(connection, &commands, watch_id).await;
                    }
                }
            }
            Step::Command(Some(WatchCommand::Cancel { request_id })) => {
                // Out of its group first: nothing of the watch may follow
                // the answer.
                drop(source);
                return connection
                    .respond(response(request_id, 0, canceled(watch_id)))
                    .await;
            }
            Step::Command(None) => return Ok(()),
            Step::Command(Some(WatchCommand::Progress(revision))) => {
                wanted = Some(wanted.map_or(revision, |w| w.max(revision)));
                source.request_progress(revision);
            }
            Step::Idle => {
                if let (Source::Group(membership), true) = (&source, direct) {
                    let group_sent = membership.member.last_sent();
                    if let Some(at) = group_sent.filter(|at| *at > last_sent) {
                        // Its group sent to it meanwhile: not idle.
                        last_sent = at;
                        if Instant::now() < at + interval {
                            continue;
                        }
                    }
                }
                match client.current_revision().await {
                    Ok(revision) => {
                        wanted = Some(wanted.map_or(revision, |w| w.max(revision)));
                        source.request_progress(revision);
                    }
                    Err(failure) => {
                        drop(source);
                        connection.respond(error(watch_id, &failure)).await?;
                        return answer_cancel(connection, &commands, watch_id).await;
                    }
                }
                // Not sent yet, but asked for: wait a whole interval again.
                last_sent = Instant::now();
            }
        }
    }
}

/// Joins the core's group for `create`'s shape; answers the source and the
/// watch's start: the node's current revision, read once the group is in
/// place (`watch_group.rs`, "Joining").
async fn open_in_group<'a>(
    connection: &'a Connection,
    create: &WatchCreate,
) -> NodeResult<(Source<'a>, Revision)> {
    let membership = WatchGroups::join(&connection.ctx, create).await?;
    let start = connection.ctx.client().current_revision().await?;
    Ok((Source::Group(membership), start))
}

/// The `canceled` message of a watch.
pub(crate) fn canceled(watch_id: u64) -> ResponseBody {
    ResponseBody::Watch(WatchEvents {
        watch_id,
        canceled: true,
        ..WatchEvents::default()
    })
}

/// A watch that ended on its own still answers a cancel already sent for
/// it, so the client's cancel call does not wait forever.
async fn answer_cancel(
    connection: &Connection,
    commands: &flume::Receiver<WatchCommand>,
    watch_id: u64,
) -> Result<(), Closed> {
    while let Ok(command) = commands.try_recv() {
        if let WatchCommand::Cancel { request_id } = command {
            return connection
                .respond(response(request_id, 0, canceled(watch_id)))
                .await;
        }
    }
    Ok(())
}

/// Sends `events` in responses of about [`EVENTS_PER_RESPONSE_BYTES`]
/// each, split only between revisions, every one at the revision of its
/// last event.
async fn send_events(
    connection: &Connection,
    watch_id: u64,
    events: Vec<keel_engine::mvcc::Event>,
) -> Result<(), Closed> {
    let mut chunk: Vec<Event> = Vec::new();
    let mut bytes = 0;
    let mut events = events.into_iter().map(convert::event).peekable();
    while let Some(event) = events.next() {
        bytes += event.kv.key.len() + event.kv.value.len() + 64;
        if let Some(prev) = &event.prev_kv {
            bytes += prev.key.len() + prev.value.len();
        }
        let revision = event.kv.mod_revision;
        chunk.push(event);
        let revision_ends = events
            .peek()
            .is_none_or(|next| next.kv.mod_revision != revision);
        if revision_ends && (bytes >= EVENTS_PER_RESPONSE_BYTES || events.peek().is_none()) {
            let body = ResponseBody::Watch(WatchEvents {
                watch_id,
                events: std::mem::take(&mut chunk),
                ..WatchEvents::default()
            });
            connection
                .respond(response(watch_id, revision, body))
                .await?;
            bytes = 0;
        }
    }
    Ok(())
}
