//! Room for the front's large answers (docs/etcd.md, "What a client can
//! make the front hold"), as keel's own protocol reserves it
//! (docs/server.md, "Outbound memory"):
//!
//! - a range runs first with a small answer's limit
//!   ([`SMALL_ANSWER_BYTES`], or the largest answer if that is smaller)
//!   and takes no room; the engine refuses it as soon as its answer passes
//!   that;
//! - it then reserves its connection's one large answer
//!   ([`ConnectionRoom`]) and the room of the largest answer
//!   (`outbound_bytes`) from the front's budget (`answer_bytes`), first
//!   come first served, and runs again with that limit; one larger still
//!   is refused (`ResourceExhausted`, "ask for less");
//! - the room goes with the answer's HTTP body ([`hold_answer_rooms`]),
//!   which hands HTTP/2 a copy of one piece at a time as the stream has
//!   room for it, and comes back once the last piece is handed over or
//!   the body is dropped;
//! - a connection whose large answer's body has handed over no piece for
//!   the stall timeout is closed ([`ConnectionRoom::stalled`]), which
//!   drops the body and gives the room back: a client that asks and does
//!   not read holds one room for that long.
//!
//! Hence the large answers of every etcd API connection hold at most
//! `answer_bytes` together, whatever clients pipeline. Outside the
//! budget, HTTP/2 keeps what it has accepted and the client's window has
//! not taken: at most two pieces of a large answer per stream, or a small
//! answer (at most 16 KiB), for as long as the client leaves it; 200
//! streams make that at most about 13 MiB per connection.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::response::Response;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tonic::Status;

pub(crate) use crate::server::answers::SMALL_ANSWER_BYTES;

/// The budget counts KiB: a semaphore takes at most `u32::MAX` permits at
/// once.
const UNIT: usize = 1024;

/// The most bytes a body hands HTTP/2 at once. hyper asks for the next
/// piece only once the stream has room for it ([`crate::etcd::MAX_SEND_BUFFER`]),
/// so the rest of an answer stays in its body, and in its room, until the
/// client's window takes it.
pub(crate) const PIECE_BYTES: usize = 64 << 10;

/// The front's budget of large answers.
#[derive(Clone)]
pub(crate) struct AnswerRooms {
    budget: Arc<Semaphore>,
    /// The largest answer, in units; at most the budget.
    largest_units: u32,
}

/// One connection's large answer: at most one at a time, and when it last
/// made progress.
pub(crate) struct ConnectionRoom {
    one: Semaphore,
    /// While a large answer is held: when it last moved.
    moved: Mutex<Option<Instant>>,
    taken: Notify,
}

/// A large answer's room, held by its response until the body is sent.
#[derive(Clone)]
pub(crate) struct AnswerRoom(Arc<Held>);

/// What an [`AnswerRoom`] holds.
struct Held {
    _budget: OwnedSemaphorePermit,
    connection: Option<ConnectionSlot>,
}

/// A connection's one large answer, taken; given back when dropped.
struct ConnectionSlot(Arc<ConnectionRoom>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.set_moved(None);
        self.0.one.add_permits(1);
    }
}

impl ConnectionRoom {
    pub(crate) fn new() -> Arc<ConnectionRoom> {
        Arc::new(ConnectionRoom {
            one: Semaphore::new(1),
            moved: Mutex::new(None),
            taken: Notify::new(),
        })
    }

    fn set_moved(&self, at: Option<Instant>) {
        *self.moved.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    /// Answers once the connection's large answer has not moved for
    /// `timeout` (its client stopped reading): the connection should then
    /// be closed.
    pub(crate) async fn stalled(&self, timeout: Duration) {
        loop {
            let moved = *self.moved.lock().unwrap_or_else(|e| e.into_inner());
            match moved {
                // `Notify` keeps the wake of a room taken meanwhile.
                None => self.taken.notified().await,
                Some(moved) => {
                    let due = moved + timeout;
                    if Instant::now() >= due {
                        return;
                    }
                    tokio::time::sleep_until(due.into()).await;
                }
            }
        }
    }
}

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

    /// The most bytes an answer that takes no room may take.
    pub(crate) fn small(&self) -> usize {
        SMALL_ANSWER_BYTES.min(self.largest())
    }

    /// Waits for `connection`'s one large answer (when the call came over
    /// a connection), then for the room of the largest answer.
    pub(crate) async fn reserve(
        &self,
        connection: Option<Arc<ConnectionRoom>>,
    ) -> Result<AnswerRoom, Status> {
        let stopped = |_| Status::unavailable("etcdserver: server stopped");
        let connection = match connection {
            Some(connection) => {
                connection.one.acquire().await.map_err(stopped)?.forget();
                // Given back when dropped, also while the budget is
                // awaited below.
                Some(ConnectionSlot(connection))
            }
            None => None,
        };
        let budget = self
            .budget
            .clone()
            .acquire_many_owned(self.largest_units)
            .await
            .map_err(stopped)?;
        Ok(AnswerRoom(Arc::new(Held {
            _budget: budget,
            connection,
        })))
    }
}

/// Moves a response's [`AnswerRoom`] (put in its extensions by the
/// handler) into its body, which holds it until sent or dropped.
pub(crate) fn hold_answer_rooms(mut response: Response) -> Response {
    match response.extensions_mut().remove::<AnswerRoom>() {
        None => response,
        Some(room) => {
            // The stall clock starts with the body, not while the answer is
            // gathered and encoded.
            if let Some(ConnectionSlot(connection)) = &room.0.connection {
                connection.set_moved(Some(Instant::now()));
                connection.taken.notify_one();
            }
            response.map(|body| {
                Body::new(Pieces {
                    body,
                    rest: Bytes::new(),
                    room,
                })
            })
        }
    }
}

/// A body, handed over in copied pieces, and the room of the answer it
/// carries. Copies, so that what HTTP/2 still buffers once the room is
/// back does not keep the whole answer's buffer alive.
struct Pieces {
    body: Body,
    /// The rest of the data frame being handed over.
    rest: Bytes,
    room: AnswerRoom,
}

impl http_body::Body for Pieces {
    type Data = Bytes;
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
        if let Some(ConnectionSlot(connection)) = &this.room.0.connection {
            connection.set_moved(Some(Instant::now()));
        }
        let piece = this.rest.split_to(this.rest.len().min(PIECE_BYTES));
        Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::copy_from_slice(
            &piece,
        )))))
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
