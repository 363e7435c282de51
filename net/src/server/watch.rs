//! A watch stream on a connection. Its id is the id of the request that
//! created it; every message of the stream is a response with that id:
//! first `created`, then events (and progress notifications) in revision
//! order, and `canceled` when it ends with the history it asked for
//! compacted. The client cancels with `WatchCancel`.

use std::time::Instant;

use futures_lite::future::{or, pending};
use keel_engine::shard::{NodeResult, WatchBatch};
use keel_proto::{ErrorCode, Event, Response, ResponseBody, WatchCreate, WatchEvents};

use crate::server::connection::Connection;
use crate::server::convert;
use crate::server::outbound::Closed;

/// About how many bytes of events one response carries.
const EVENTS_PER_RESPONSE_BYTES: usize = 1 << 20;

/// What the connection tells a watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WatchCommand {
    /// The client cancelled it.
    Cancel,
    /// The client asked for a progress notification.
    Progress,
}

/// Takes the watch out of its connection's table however it ends.
struct Registered<'a> {
    connection: &'a Connection,
    watch_id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.connection.watches.borrow_mut().remove(&self.watch_id);
    }
}

enum Step {
    Batch(NodeResult<WatchBatch>),
    Command(Option<WatchCommand>),
    Idle,
}

/// Runs the watch `watch_id` until it is cancelled, ends, or the
/// connection closes.
pub(crate) async fn run(
    connection: &Connection,
    watch_id: u64,
    create: WatchCreate,
) -> Result<(), Closed> {
    if connection.watches.borrow().contains_key(&watch_id) {
        let message = format!("watch id {watch_id} is in use on this connection");
        return connection
            .respond_error(watch_id, ErrorCode::BadRequest, message)
            .await;
    }
    let client = connection.ctx.client();
    let mut stream = match client.watch(convert::watch_request(&create)).await {
        Ok(stream) => stream,
        Err(error) => {
            let body = ResponseBody::Error(convert::error(&error));
            return connection.respond(response(watch_id, 0, body)).await;
        }
    };
    let (commands_in, commands) = flume::unbounded();
    connection
        .watches
        .borrow_mut()
        .insert(watch_id, commands_in);
    let _registered = Registered {
        connection,
        watch_id,
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
                return connection.respond(response(watch_id, 0, over)).await;
            }
            Step::Batch(Err(error)) => {
                let body = ResponseBody::Error(convert::error(&error));
                return connection.respond(response(watch_id, 0, body)).await;
            }
            Step::Command(Some(WatchCommand::Cancel) | None) => return Ok(()),
            Step::Command(Some(WatchCommand::Progress)) | Step::Idle => {
                match client.current_revision().await {
                    Ok(revision) => stream.request_progress(revision),
                    Err(error) => {
                        let body = ResponseBody::Error(convert::error(&error));
                        return connection.respond(response(watch_id, 0, body)).await;
                    }
                }
                // Not sent yet, but asked for: wait a whole interval again.
                last_sent = Instant::now();
            }
        }
    }
}

fn response(watch_id: u64, revision: u64, body: ResponseBody) -> Response {
    Response {
        id: watch_id,
        revision,
        body,
    }
}

/// Sends `events` in responses of about [`EVENTS_PER_RESPONSE_BYTES`]
/// each, every one at the revision of its last event.
async fn send_events(
    connection: &Connection,
    watch_id: u64,
    events: Vec<keel_engine::mvcc::Event>,
) -> Result<(), Closed> {
    let mut chunk: Vec<Event> = Vec::new();
    let mut bytes = 0;
    let total = events.len();
    for (index, event) in events.into_iter().enumerate() {
        let event = convert::event(event);
        bytes += event.kv.key.len() + event.kv.value.len() + 64;
        if let Some(prev) = &event.prev_kv {
            bytes += prev.key.len() + prev.value.len();
        }
        chunk.push(event);
        if bytes >= EVENTS_PER_RESPONSE_BYTES || index + 1 == total {
            let revision = chunk.last().map_or(0, |e| e.kv.mod_revision);
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
