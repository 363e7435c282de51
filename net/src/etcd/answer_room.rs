//! Room for the front's large answers (docs/etcd.md, "Answer memory"), as
//! keel's own protocol reserves it (docs/server.md, "Outbound memory"):
//!
//! - a range runs first with a small answer's limit
//!   ([`SMALL_ANSWER_BYTES`]) and takes no room; the engine refuses it as
//!   soon as its answer passes that;
//! - it then reserves the room of the largest answer (`outbound_bytes`)
//!   from the front's budget of large answers (`answer_bytes`), first come
//!   first served, and runs again with that limit; one larger still is
//!   refused (`ResourceExhausted`, "ask for less");
//! - the room goes with the answer's HTTP body ([`hold_answer_rooms`]),
//!   which hands HTTP/2 one piece at a time as the stream has room for it,
//!   and comes back once the last piece is handed over or the body is
//!   dropped; so a client that asks and never reads holds its room, not
//!   more.
//!
//! Hence the large answers of every etcd API connection hold at most
//! `answer_bytes` together, whatever clients pipeline; besides, HTTP/2
//! buffers at most [`PIECE_BYTES`] twice per open stream.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::body::Body;
use axum::response::Response;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

pub(crate) use crate::server::answers::SMALL_ANSWER_BYTES;

/// The budget counts KiB: a semaphore takes at most `u32::MAX` permits at
/// once.
const UNIT: usize = 1024;

/// The front's budget of large answers.
#[derive(Clone)]
pub(crate) struct AnswerRooms {
    budget: Arc<Semaphore>,
    /// The largest answer, in units; at most the budget.
    largest_units: u32,
}

/// A large answer's room, held by its response until the body is sent.
#[derive(Clone)]
pub(crate) struct AnswerRoom(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

impl AnswerRooms {
    /// A budget of `total` bytes for answers of at most `largest` bytes.
    pub(crate) fn new(total: usize, largest: usize) -> AnswerRooms {
        let total_units = total.div_ceil(UNIT).clamp(1, Semaphore::MAX_PERMITS);
        let largest_units = largest.div_ceil(UNIT).clamp(1, total_units);
        AnswerRooms {
            budget: Arc::new(Semaphore::new(total_units)),
            largest_units: u32::try_from(largest_units).unwrap_or(u32::MAX),
        }
    }

    /// The most bytes one answer's pairs may take.
    pub(crate) fn largest(&self) -> usize {
        self.largest_units as usize * UNIT
    }

    /// Waits for the room of the largest answer.
    pub(crate) async fn reserve(&self) -> Result<AnswerRoom, Status> {
        self.budget
            .clone()
            .acquire_many_owned(self.largest_units)
            .await
            .map(|permit| AnswerRoom(Arc::new(permit)))
            .map_err(|_| Status::unavailable("etcdserver: server stopped"))
    }
}

/// Moves a response's [`AnswerRoom`] (put in its extensions by the
/// handler) into its body, which holds it until sent or dropped.
pub(crate) async fn hold_answer_rooms(mut response: Response) -> Response {
    match response.extensions_mut().remove::<AnswerRoom>() {
        None => response,
        Some(room) => response.map(|body| {
            Body::new(Held {
                body,
                rest: axum::body::Bytes::new(),
                _room: room,
            })
        }),
    }
}

/// The most bytes a body hands HTTP/2 at once, which is also the most
/// HTTP/2 buffers per stream ([`crate::etcd::MAX_SEND_BUFFER`]): hyper
/// asks for the next piece only once the stream has room for it, so an
/// answer's bytes stay in its body, and in its room, until the client's
/// window takes them.
pub(crate) const PIECE_BYTES: usize = 64 << 10;

/// A body, handed over in pieces, and the room of the answer it carries.
struct Held {
    body: Body,
    /// The rest of the data frame being handed over.
    rest: axum::body::Bytes,
    _room: AnswerRoom,
}

impl http_body::Body for Held {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if this.rest.is_empty() {
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.rest = data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return Poll::Ready(other),
            }
        }
        let piece = this.rest.split_to(this.rest.len().min(PIECE_BYTES));
        Poll::Ready(Some(Ok(http_body::Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let mut hint = self.body.size_hint();
        let rest = self.rest.len() as u64;
        hint.set_lower(hint.lower().saturating_add(rest));
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper.saturating_add(rest));
        }
        hint
    }
}
