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
        Ok(Response::new(self.open(request.into_inner())))
    }
}

impl WatchService {
    /// Serves one stream of watch requests (gRPC's or the JSON gateway's)
    /// until the client closes it and stops reading the answers.
    pub(crate) fn open(&self, asks: impl Asks<pb::WatchRequest>) -> Answers {
        let (out, answered) = tokio::sync::mpsc::channel(STREAM_QUEUE);
        tokio::spawn(session(asks, out, self.cores.clone(), self.headers.clone()));
        Box::pin(futures_util::stream::unfold(
            answered,
            |mut answered| async move { answered.recv().await.map(|answer| (answer, answered)) },
        ))
    }
}

/// Serves one client stream until the client closes it: creates, cancels
/// and progress requests in the order they come.
async fn session(mut asks: impl Asks<pb::WatchRequest>, out: Out, cores: Cores, headers: Headers) {
    // Each watch's handles; dropping them ends the watch.
    let mut watches: HashMap<i64, Running> = HashMap::new();
    // Ids the client does not choose count up from 0 and are never used
    // again on the stream, as etcd's.
    let mut next_id: i64 = 0;
    while let Some(Ok(ask)) = asks.next().await {
        match ask.request_union {
            Some(RequestUnion::CreateRequest(create)) => {
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
                match create_watch(&cores, &headers, &out, id, create).await {
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

/// A watch's handles in its stream's session.
struct Running {
    /// To its feed on the core; dropped, the watch ends.
    control: flume::Sender<Control>,
    /// To its forwarder: answer `canceled` and stop.
    cancel: tokio::sync::oneshot::Sender<()>,
}

/// Starts watch `id` on a core and answers `created` (or why not); then a
/// task forwards its batches. Answers its handles when it runs.
async fn create_watch(
    cores: &Cores,
    headers: &Headers,
    out: &Out,
    id: i64,
    create: pb::WatchCreateRequest,
) -> Option<Running> {
    let request = kv::WatchRequest {
        no_put: create.filters.contains(&(FilterType::Noput as i32)),
        no_delete: create.filters.contains(&(FilterType::Nodelete as i32)),
        key: create.key,
        range_end: create.range_end,
        start_revision: u64::try_from(create.start_revision).unwrap_or(0),
        prev_kv: create.prev_kv,
    };
    let (control, controlled) = flume::unbounded();
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
    tokio::spawn(forward(fed, canceled, out.clone(), headers.clone(), id));
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
    out: Out,
    headers: Headers,
    id: i64,
) {
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
        };
        let Some(batch) = batch else {
            return;
        };
        let answer = match batch {
            Ok(WatchBatch::Events(events)) => pb::WatchResponse {
                header: Some(headers.at(events.last().map_or(0, |e| e.kv.mod_revision))),
                watch_id: id,
                events: events.into_iter().map(event).collect(),
                ..pb::WatchResponse::default()
            },
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
