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
use keel_engine::shard::{NodeResult, WatchBatch};
use keel_proto::{ErrorCode, Event, Response, ResponseBody, Revision, WatchCreate, WatchEvents};

use crate::server::connection::Connection;
use crate::server::convert;
use crate::server::outbound::Closed;

/// About how many bytes of events one response carries (a response always
/// holds whole revisions, so a client that resumes after the last revision
/// it saw misses nothing).
const EVENTS_PER_RESPONSE_BYTES: usize = 1 << 20;

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

enum Step {
    Batch(NodeResult<WatchBatch>),
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
    let mut stream = match client.watch(convert::watch_request(&create)).await {
        Ok(stream) => stream,
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
    let start = stream.start_revision().saturating_sub(1);
    connection
        .respond(response(watch_id, start, ResponseBody::Watch(created)))
        .await?;
    let interval = connection.ctx.limits.watch_progress_interval;
    let mut last_sent = Instant::now();
    loop {
        let idle = async {
            if !create.progress_notify {
                return pending().await;
            }
            let due = last_sent + interval;
            glommio::timer::sleep(due.saturating_duration_since(Instant::now())).await;
            Step::Idle
        };
        let step = or(
            async { Step::Batch(stream.next().await) },
            or(
                async { Step::Command(commands.recv_async().await.ok()) },
                idle,
            ),
        )
        .await;
        match step {
            Step::Batch(Ok(WatchBatch::Events(events))) => {
                send_events(connection, watch_id, events).await?;
                last_sent = Instant::now();
            }
            Step::Batch(Ok(WatchBatch::Progress(revision))) => {
                let progress = ResponseBody::Watch(WatchEvents {
                    watch_id,
                    ..WatchEvents::default()
                });
                connection
                    .respond(response(watch_id, revision, progress))
                    .await?;
                last_sent = Instant::now();
            }
            Step::Batch(Ok(WatchBatch::Compacted { compact_revision })) => {
                let over = ResponseBody::Watch(WatchEvents {
                    watch_id,
                    canceled: true,
                    compact_revision,
                    ..WatchEvents::default()
                });
                connection.respond(response(watch_id, 0, over)).await?;
                return answer_cancel(connection, &commands, watch_id).await;
            }
            Step::Batch(Err(failure)) => {
                connection.respond(error(watch_id, &failure)).await?;
                return answer_cancel(connection, &commands, watch_id).await;
            }
            Step::Command(Some(WatchCommand::Cancel { request_id })) => {
                return connection
                    .respond(response(request_id, 0, canceled(watch_id)))
                    .await;
            }
            Step::Command(None) => return Ok(()),
            Step::Command(Some(WatchCommand::Progress(revision))) => {
                stream.request_progress(revision);
            }
            Step::Idle => {
                match client.current_revision().await {
                    Ok(revision) => stream.request_progress(revision),
                    Err(failure) => {
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
