//! etcd's Watch service: one bidirectional stream per client, carrying any
//! number of watches, each created, fed and cancelled by id.
//!
//! Each watch runs on one of the node's cores (its stream is the node's
//! cross-shard watch, `keel_engine::shard::WatchStream`, whose futures live
//! on a core) and hands its batches over a bounded channel to a task on
//! the front, which answers the client through the stream's one bounded
//! queue. A client that stops reading fills the queue, then the watch's
//! channel; the watch then stops taking events from its shards, whose
//! credit bounds what they hold for it (docs/node.md): memory stays
//! bounded per stream and per watch.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use keel_engine::mvcc as kv;
use keel_engine::shard::{NodeResult, WatchBatch};
use keel_etcd_api::etcdserverpb as pb;
use keel_etcd_api::etcdserverpb::watch_create_request::FilterType;
use keel_etcd_api::etcdserverpb::watch_request::RequestUnion;
use keel_etcd_api::etcdserverpb::watch_server::Watch;
use keel_etcd_api::mvccpb;
use tonic::{Request, Response, Status, Streaming};

use crate::etcd::convert::key_value;
use crate::etcd::cores::{client, Cores};
use crate::etcd::errors::status;
use crate::etcd::header::Headers;
use crate::etcd::identity::{Identity, IdentityOf};
use crate::etcd::Asks;

/// Answers queued for a client that is slow to read them, per stream.
const STREAM_QUEUE: usize = 64;
/// Batches queued from a watch's core to its stream, per watch.
const WATCH_QUEUE: usize = 16;
/// etcd's reason for a watch cancelled by a compaction.
const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";

/// The Watch service of one node.
#[derive(Clone)]
pub(crate) struct WatchService {
    pub(crate) cores: Cores,
    pub(crate) headers: Headers,
    /// Each create is checked: its range must be readable.
    pub(crate) auth: crate::auth::Auth,
    /// How often an idle watch that asked for progress notifications
    /// gets one.
    pub(crate) progress_notify_interval: Duration,
    /// Whether this member has gone without a leader for a shard long
    /// enough to end streams that require one ([`leader_monitor`]).
    pub(crate) leaderless: tokio::sync::watch::Receiver<bool>,
}

pub(crate) type Answers =
    Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send + 'static>>;
type Out = tokio::sync::mpsc::Sender<Result<pb::WatchResponse, Status>>;

/// What a stream tells one of its watches on its core.
enum Control {
    /// Report progress up to this revision once every event at or below
    /// it was sent.
    Progress(u64),
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = Answers;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // etcd's clients mark a stream that must end when the member has
        // no leader (Go's `WithRequireLeader`) with this metadata.
        let require_leader = request
            .metadata()
            .get("hasleader")
            .is_some_and(|value| value == "true");
        let identity = Identity::of(&request);
        Ok(Response::new(self.open(
            request.into_inner(),
            require_leader,
            identity,
        )))
    }
}

impl WatchService {
    /// Serves one stream of watch requests (gRPC's or the JSON gateway's)
    /// until the client closes it and stops reading the answers.
    pub(crate) fn open(
        &self,
        asks: impl Asks<pb::WatchRequest>,
        require_leader: bool,
        identity: Identity,
    ) -> Answers {
        let (out, answered) = tokio::sync::mpsc::channel(STREAM_QUEUE);
        let session_of = Session {
            out,
            cores: self.cores.clone(),
            headers: self.headers.clone(),
            progress_notify_interval: self.progress_notify_interval,
            auth: self.auth.clone(),
            identity,
        };
        let leaderless = require_leader.then(|| self.leaderless.clone());
        tokio::spawn(async move {
            let out = session_of.out.clone();
            tokio::select! {
                () = session(asks, session_of) => {}
                () = lost_leader(leaderless) => {
                    // Dropping the session ends its watches; the stream
                    // ends with etcd's error.
                    let _ = out.send(Err(Status::unavailable("etcdserver: no leader"))).await;
                }
            }
        });
        Box::pin(futures_util::stream::unfold(
            answered,
            |mut answered| async move { answered.recv().await.map(|answer| (answer, answered)) },
        ))
    }
}

/// Serves one client stream until the client closes it: creates, cancels
/// and progress requests in the order they come.
/// How often the leader monitor looks.
const LEADER_CHECK: Duration = Duration::from_secs(1);
/// Looks in a row without a leader after which streams that require one
/// end (etcd's count, of its election timeouts).
const LEADERLESS_CHECKS: u32 = 3;

/// Watches whether every shard has a leader, as this member knows: sets
/// `leaderless` once one has had none for [`LEADERLESS_CHECKS`] looks in
/// a row, and clears it when every shard has one again. One per front,
/// shared by every stream.
pub(crate) async fn leader_monitor(cores: Cores, leaderless: tokio::sync::watch::Sender<bool>) {
    let mut missing = 0;
    loop {
        tokio::time::sleep(LEADER_CHECK).await;
        // A stopped shard (an I/O failure) has no leader here and never
        // will; it answers its own error, and is not counted.
        let led = cores
            .call(|node, core| {
                Box::pin(async move {
                    let status = client(&node, core).status().await?;
                    Ok(status
                        .iter()
                        .all(|shard| shard.leader != 0 || shard.stopped.is_some()))
                })
            })
            .await;
        // A look that failed (the node is stopping) changes nothing.
        missing = match led {
            Ok(true) => 0,
            Ok(false) => missing + 1,
            Err(_) => missing,
        };
        let lost = missing >= LEADERLESS_CHECKS;
        leaderless.send_if_modified(|was| std::mem::replace(was, lost) != lost);
        if leaderless.is_closed() {
            return;
        }
    }
}

/// Ends when the member has lost its leaders, for a stream that requires
/// one; never, otherwise.
async fn lost_leader(leaderless: Option<tokio::sync::watch::Receiver<bool>>) {
    match leaderless {
        Some(mut leaderless) => {
            if leaderless.wait_for(|lost| *lost).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// What every watch of one client stream shares.
struct Session {
    out: Out,
    cores: Cores,
    headers: Headers,
    progress_notify_interval: Duration,
    auth: crate::auth::Auth,
    /// Who opened the stream.
    identity: Identity,
}

async fn session(mut asks: impl Asks<pb::WatchRequest>, session: Session) {
    let Session {
        out,
        cores,
        headers,
        ..
    } = &session;
    // Each watch's handles; dropping them ends the watch.
    let mut watches: HashMap<i64, Running> = HashMap::new();
    // Ids the client does not choose count up from 0 and are never used
    // again on the stream, as etcd's.
    let mut next_id: i64 = 0;
    loop {
        let ask = match asks.next().await {
            Some(Ok(ask)) => ask,
            // A request that did not decode (the JSON gateway's body)
            // ends the stream with its error.
            Some(Err(refused)) => {
                let _ = out.send(Err(refused)).await;
                return;
            }
            None => break,
        };
        match ask.request_union {
            Some(RequestUnion::CreateRequest(create)) => {
                // Only a readable range is watched, as the record is now;
                // a refusal cancels this create and the stream goes on
                // (etcd's answer: id -1, its error's text).
                if let Err(refused) = may_watch(&session, &create) {
                    let refused = pb::WatchResponse {
                        header: Some(headers.member()),
                        watch_id: -1,
                        created: true,
                        canceled: true,
                        cancel_reason: go_error(&refused),
                        ..pb::WatchResponse::default()
                    };
                    if out.send(Ok(refused)).await.is_err() {
                        return;
                    }
                    continue;
                }
                // Ids the client does not choose count up from 0, as etcd's.
                let id = if create.watch_id != 0 {
                    create.watch_id
                } else {
                    while watches.contains_key(&next_id) {
                        next_id += 1;
                    }
                    next_id += 1;
                    next_id - 1
                };
                if watches.contains_key(&id) {
                    let refused = pb::WatchResponse {
                        header: Some(headers.member()),
                        watch_id: id,
                        created: true,
                        canceled: true,
                        cancel_reason:
                            "etcdserver: mvcc: duplicate watch ID provided on the WatchStream"
                                .to_string(),
                        ..pb::WatchResponse::default()
                    };
                    if out.send(Ok(refused)).await.is_err() {
                        return;
                    }
                    continue;
                }
                match create_watch(&session, id, create).await {
                    Some(running) => {
                        watches.insert(id, running);
                    }
                    None if out.is_closed() => return,
                    None => {}
                }
            }
            // The watch's forwarder answers `canceled`, after whatever it
            // already sent and before nothing more. An unknown id is not
            // answered, as in etcd.
            Some(RequestUnion::CancelRequest(cancel)) => {
                if let Some(running) = watches.remove(&cancel.watch_id) {
                    let _ = running.cancel.send(());
                }
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                let now = cores
                    .call(|node, core| {
                        Box::pin(async move { client(&node, core).current_revision().await })
                    })
                    .await;
                if let Ok(now) = now {
                    watches
                        .retain(|_, running| running.control.send(Control::Progress(now)).is_ok());
                }
            }
            None => {}
        }
    }
    // The client closed its side (Go's and Rust's clients do when done
    // asking): the watches go on until it stops reading.
    out.closed().await;
}

/// An auth refusal as etcd puts it in a watch's `cancel_reason`: the text
/// of Go's gRPC status error.
fn go_error(refused: &crate::auth::AuthError) -> String {
    let status = crate::etcd::errors::auth_status(refused);
    format!(
        "rpc error: code = {:?} desc = {}",
        status.code(),
        status.message()
    )
}

/// Whether the stream's caller may watch `create`'s range now.
fn may_watch(
    session: &Session,
    create: &pb::WatchCreateRequest,
) -> Result<(), crate::auth::AuthError> {
    let compiled = session.auth.current();
    let caller = compiled.admit(session.identity.credential())?;
    compiled.may_read(&caller, &create.key, &create.range_end)
}

/// A watch's handles in its stream's session.
struct Running {
    /// To its feed on the core; dropped, the watch ends.
    /// (The only strong handle: dropping it ends the feed, whatever the
    /// forwarder is doing.)
    control: Arc<flume::Sender<Control>>,
    /// To its forwarder: answer `canceled` and stop.
    cancel: tokio::sync::oneshot::Sender<()>,
}

/// Starts watch `id` on a core and answers `created` (or why not); then a
/// task forwards its batches. Answers its handles when it runs.
async fn create_watch(
    session: &Session,
    id: i64,
    create: pb::WatchCreateRequest,
) -> Option<Running> {
    let Session {
        out,
        cores,
        headers,
        progress_notify_interval,
        ..
    } = session;
    let progress_notify = create.progress_notify;
    let fragment = create.fragment;
    let request = kv::WatchRequest {
        no_put: create.filters.contains(&(FilterType::Noput as i32)),
        no_delete: create.filters.contains(&(FilterType::Nodelete as i32)),
        key: create.key,
        range_end: create.range_end,
        start_revision: u64::try_from(create.start_revision).unwrap_or(0),
        prev_kv: create.prev_kv,
    };
    let (control, controlled) = flume::unbounded();
    let control = Arc::new(control);
    let (batches, fed) = tokio::sync::mpsc::channel(WATCH_QUEUE);
    let (answer, answered) = tokio::sync::oneshot::channel();
    let spawned = cores.spawn(move |node, core| {
        Box::pin(async move {
            let client = client(&node, core);
            match client.watch(request).await {
                Ok(stream) => {
                    if answer.send(Ok(stream.start_revision())).is_ok() {
                        // The watch goes on here, on the core.
                        feed(stream, controlled, batches).await;
                    }
                }
                Err(error) => {
                    let _ = answer.send(Err(status(&error)));
                }
            }
        })
    });
    let started = match spawned {
        Ok(()) => answered
            .await
            .unwrap_or_else(|_| Err(Status::unavailable("etcdserver: server stopped"))),
        Err(refusal) => Err(refusal),
    };
    let created = match &started {
        Ok(start) => pb::WatchResponse {
            header: Some(headers.at(start.saturating_sub(1))),
            watch_id: id,
            created: true,
            ..pb::WatchResponse::default()
        },
        Err(refusal) => pb::WatchResponse {
            header: Some(headers.member()),
            watch_id: id,
            created: true,
            canceled: true,
            cancel_reason: refusal.message().to_string(),
            ..pb::WatchResponse::default()
        },
    };
    if out.send(Ok(created)).await.is_err() || started.is_err() {
        return None;
    }
    let (cancel, canceled) = tokio::sync::oneshot::channel();
    let notify = progress_notify.then(|| Notify {
        every: *progress_notify_interval,
        control: Arc::downgrade(&control),
        cores: cores.clone(),
    });
    let watch = Forwarded {
        out: out.clone(),
        headers: headers.clone(),
        id,
        notify,
        fragment,
    };
    tokio::spawn(forward(fed, canceled, watch));
    Some(Running { control, cancel })
}

/// On the watch's core: its batches into `batches`, until the stream ends,
/// the front stops taking them, or the control channel goes.
async fn feed(
    mut stream: keel_engine::shard::WatchStream<'_>,
    controlled: flume::Receiver<Control>,
    batches: tokio::sync::mpsc::Sender<NodeResult<WatchBatch>>,
) {
    enum Step {
        Batch(NodeResult<WatchBatch>),
        Control(Result<Control, flume::RecvError>),
    }
    loop {
        let step = futures_lite::future::or(
            async { Step::Control(controlled.recv_async().await) },
            async { Step::Batch(stream.next().await) },
        )
        .await;
        match step {
            Step::Batch(batch) => {
                let over = !matches!(
                    batch,
                    Ok(WatchBatch::Events(_)) | Ok(WatchBatch::Progress(_))
                );
                if batches.send(batch).await.is_err() || over {
                    return;
                }
            }
            Step::Control(Ok(Control::Progress(revision))) => stream.request_progress(revision),
            // Cancelled, or the client's stream closed.
            Step::Control(Err(_)) => return,
        }
    }
}

/// On the front: watch `id`'s batches as etcd's answers, until it is
/// cancelled (answered `canceled`, nothing after) or ends.
async fn forward(
    mut fed: tokio::sync::mpsc::Receiver<NodeResult<WatchBatch>>,
    mut canceled: tokio::sync::oneshot::Receiver<()>,
    watch: Forwarded,
) {
    let Forwarded {
        out,
        headers,
        id,
        notify,
        fragment,
    } = watch;
    let mut ticks = notify.as_ref().map(|notify| {
        let mut ticks =
            tokio::time::interval_at(tokio::time::Instant::now() + notify.every, notify.every);
        // Ticks missed while an answer waited on a slow reader are not
        // made up for in a burst.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    });
    // Whether no events were sent on this watch since the last tick (a
    // progress answer does not count, as in etcd).
    let mut quiet = true;
    loop {
        let batch = tokio::select! {
            biased;
            cancel = &mut canceled => {
                if cancel.is_ok() {
                    let answer = pb::WatchResponse {
                        header: Some(headers.member()),
                        watch_id: id,
                        canceled: true,
                        ..pb::WatchResponse::default()
                    };
                    let _ = out.send(Ok(answer)).await;
                }
                return;
            }
            batch = fed.recv() => batch,
            () = tick(&mut ticks) => {
                if let (true, Some(notify)) = (quiet, &notify) {
                    notify.ask().await;
                }
                quiet = true;
                continue;
            }
        };
        let Some(batch) = batch else {
            return;
        };
        if matches!(&batch, Ok(WatchBatch::Events(events)) if !events.is_empty()) {
            quiet = false;
        }
        let answer = match batch {
            Ok(WatchBatch::Events(events)) => {
                let header = Some(headers.at(events.last().map_or(0, |e| e.kv.mod_revision)));
                let events: Vec<mvccpb::Event> = events.into_iter().map(event).collect();
                let parts = if fragment {
                    fragments(events, FRAGMENT_BYTES)
                } else {
                    vec![events]
                };
                let count = parts.len();
                for (number, events) in parts.into_iter().enumerate() {
                    let answer = pb::WatchResponse {
                        header,
                        watch_id: id,
                        events,
                        fragment: number + 1 < count,
                        ..pb::WatchResponse::default()
                    };
                    if out.send(Ok(answer)).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            Ok(WatchBatch::Progress(revision)) => pb::WatchResponse {
                header: Some(headers.at(revision)),
                watch_id: id,
                ..pb::WatchResponse::default()
            },
            Ok(WatchBatch::Compacted { compact_revision }) => pb::WatchResponse {
                header: Some(headers.member()),
                watch_id: id,
                canceled: true,
                compact_revision: crate::etcd::convert::to_i64(compact_revision),
                cancel_reason: COMPACTED.to_string(),
                ..pb::WatchResponse::default()
            },
            Err(error) => pb::WatchResponse {
                header: Some(headers.member()),
                watch_id: id,
                canceled: true,
                cancel_reason: status(&error).message().to_string(),
                ..pb::WatchResponse::default()
            },
        };
        if out.send(Ok(answer)).await.is_err() {
            return;
        }
    }
}

/// One watch as its forwarder answers it.
struct Forwarded {
    out: Out,
    headers: Headers,
    id: i64,
    /// For a watch that asked for progress notifications.
    notify: Option<Notify>,
    /// Whether a batch larger than [`FRAGMENT_BYTES`] is split.
    fragment: bool,
}

/// The most bytes of events in one answer of a watch that asked for
/// fragments: etcd's default `--max-request-bytes`, by which etcd splits.
const FRAGMENT_BYTES: usize = keel_engine::mvcc::MAX_REQUEST_BYTES;

/// `events` cut, in order, into parts of at most `limit` encoded bytes
/// each (an event larger than that alone in its part), as etcd splits a
/// watch answer for a client that asked for fragments.
fn fragments(events: Vec<mvccpb::Event>, limit: usize) -> Vec<Vec<mvccpb::Event>> {
    let mut parts: Vec<Vec<mvccpb::Event>> = Vec::new();
    let mut bytes = 0;
    for event in events {
        let size = prost::Message::encoded_len(&event);
        match parts.last_mut() {
            Some(part) if !part.is_empty() && bytes + size <= limit => {
                bytes += size;
                part.push(event);
            }
            _ => {
                bytes = size;
                parts.push(vec![event]);
            }
        }
    }
    parts
}

/// How an idle watch's progress notification is asked for: its feed is
/// told the revision now, and answers progress there once every event at
/// or below it was sent (as a progress request is answered).
struct Notify {
    every: Duration,
    /// Weak: a cancelled watch's feed ends when the session drops its
    /// handle, even while this forwarder waits on a slow reader.
    control: std::sync::Weak<flume::Sender<Control>>,
    cores: Cores,
}

impl Notify {
    async fn ask(&self) {
        let now = self
            .cores
            .call(|node, core| {
                Box::pin(async move { client(&node, core).current_revision().await })
            })
            .await;
        if let (Ok(now), Some(control)) = (now, self.control.upgrade()) {
            let _ = control.send(Control::Progress(now));
        }
    }
}

/// The next tick of a watch's progress notifications; never, for a watch
/// that did not ask for them.
async fn tick(ticks: &mut Option<tokio::time::Interval>) {
    match ticks {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn event(e: kv::Event) -> mvccpb::Event {
    mvccpb::Event {
        r#type: match e.kind {
            kv::EventKind::Put => mvccpb::event::EventType::Put as i32,
            kv::EventKind::Delete => mvccpb::event::EventType::Delete as i32,
        },
        kv: Some(key_value(e.kv)),
        prev_kv: e.prev_kv.map(key_value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value_len: usize) -> mvccpb::Event {
        mvccpb::Event {
            kv: Some(mvccpb::KeyValue {
                key: key.as_bytes().to_vec(),
                value: vec![b'v'; value_len],
                ..mvccpb::KeyValue::default()
            }),
            ..mvccpb::Event::default()
        }
    }

    #[test]
    fn fragments_keep_every_event_in_order_within_the_limit() {
        let events = vec![put("a", 600), put("b", 600), put("c", 2000), put("d", 10)];
        let parts = fragments(events.clone(), 1300);
        let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
        // a and b fit together; c is alone, over the limit; d follows.
        assert_eq!(sizes, vec![2, 1, 1]);
        assert_eq!(parts.concat(), events);
        assert_eq!(fragments(Vec::new(), 10), Vec::<Vec<mvccpb::Event>>::new());
    }
}
