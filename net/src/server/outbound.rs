//! One connection's queue of response frames, bounded in bytes. Producers
//! (answers, watch streams) wait for room; a producer that waits longer
//! than the stall timeout marks the client as one that stopped reading,
//! and the connection is closed. So a slow reader costs the server at most
//! its buffer, and never slows other connections or the shards: a watch
//! waiting here leaves its events in the engine's bounded flow control.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::task::{Poll, Waker};
use std::time::Duration;

use futures_lite::future::{or, poll_fn};
use futures_lite::{AsyncWrite, AsyncWriteExt};
use keel_proto::Frame;

use crate::server::answers::AnswerRoom;
use crate::server::frame_queue::FrameQueue;

/// Wakes every waiter on `notify_all`. Single-threaded (one core). A
/// waiter polled again before the notification keeps one entry: futures
/// such as `or` poll both sides on every wake-up.
#[derive(Default)]
pub(crate) struct LocalNotify {
    generation: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl LocalNotify {
    pub(crate) fn notify_all(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        for waker in self.waiters.take() {
            waker.wake();
        }
    }

    /// Resolves at the next `notify_all` after the call.
    pub(crate) fn notified(&self) -> impl Future<Output = ()> + '_ {
        let start = self.generation.get();
        poll_fn(move |cx| {
            if self.generation.get() != start {
                return Poll::Ready(());
            }
            let mut waiters = self.waiters.borrow_mut();
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
    }
}

/// The connection can take no more responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

pub(crate) struct Outbound {
    /// Frames queued and not yet handed to the socket.
    queued: RefCell<FrameQueue>,
    /// The room reserved for the answers among them (`answers.rs`), given
    /// back once they are written.
    queued_rooms: RefCell<Vec<AnswerRoom>>,
    /// Bytes the writer has taken and not yet written.
    writing: Cell<usize>,
    limit: usize,
    stall_timeout: Duration,
    /// Frames were queued, or the queue closed.
    ready: LocalNotify,
    closed: Cell<bool>,
    /// The writer wrote what it took.
    room: LocalNotify,
    aborted: Cell<bool>,
    abort: LocalNotify,
}

impl Outbound {
    pub(crate) fn new(limit: usize, stall_timeout: Duration) -> Outbound {
        Outbound {
            queued: RefCell::new(FrameQueue::default()),
            queued_rooms: RefCell::new(Vec::new()),
            writing: Cell::new(0),
            limit,
            stall_timeout,
            ready: LocalNotify::default(),
            closed: Cell::new(false),
            room: LocalNotify::default(),
            aborted: Cell::new(false),
            abort: LocalNotify::default(),
        }
    }

    /// Bytes queued or being written.
    fn held(&self) -> usize {
        self.queued.borrow().len() + self.writing.get()
    }

    /// Whether anything is queued or being written.
    pub(crate) fn holds_any(&self) -> bool {
        self.held() > 0
    }

    /// Queues `frame`, waiting for room. A frame larger than the whole
    /// buffer goes out alone, once the queue is empty.
    pub(crate) async fn push(&self, frame: Frame) -> Result<(), Closed> {
        loop {
            if self.aborted.get() || self.closed.get() {
                return Err(Closed);
            }
            let held = self.held();
            if held == 0 || held + frame.len() <= self.limit {
                self.queued.borrow_mut().push(frame);
                self.ready.notify_all();
                return Ok(());
            }
            let room = or(
                async {
                    self.room.notified().await;
                    true
                },
                async {
                    glommio::timer::sleep(self.stall_timeout).await;
                    false
                },
            );
            if !room.await {
                tracing::warn!(
                    held,
                    "closing a connection whose client stopped reading its responses"
                );
                self.abort();
                return Err(Closed);
            }
        }
    }

    /// Queues an answer's `frame`, whose `room` was reserved before the
    /// request ran: it does not wait for room in the queue (the reservation
    /// bounds it), and holds `room` until it is written.
    pub(crate) fn push_answer(&self, frame: Frame, room: AnswerRoom) -> Result<(), Closed> {
        if self.aborted.get() || self.closed.get() {
            return Err(Closed);
        }
        self.queued.borrow_mut().push(frame);
        self.queued_rooms.borrow_mut().push(room);
        self.ready.notify_all();
        Ok(())
    }

    /// Queues `frame` if there is room now; answers whether it did. For a
    /// producer that serves many connections and must not wait on one
    /// (a watch group, `watch_group.rs`).
    ///
    /// # Errors
    /// The connection is closing.
    pub(crate) fn try_push(&self, frame: Frame) -> Result<bool, Closed> {
        if self.aborted.get() || self.closed.get() {
            return Err(Closed);
        }
        let held = self.held();
        if held != 0 && held + frame.len() > self.limit {
            return Ok(false);
        }
        self.queued.borrow_mut().push(frame);
        self.ready.notify_all();
        Ok(true)
    }

    /// No more frames: the writer sends what is queued, then ends.
    pub(crate) fn close(&self) {
        self.closed.set(true);
        self.ready.notify_all();
    }

    /// Drop everything; the connection ends now.
    pub(crate) fn abort(&self) {
        self.aborted.set(true);
        // Watch groups may hold this queue a while longer; what it holds
        // goes now.
        self.queued.borrow_mut().clear();
        self.queued_rooms.borrow_mut().clear();
        self.close();
        self.abort.notify_all();
        self.room.notify_all();
    }

    /// Writes queued frames to `socket`, all that is queued at each write,
    /// until the queue is closed and empty, the socket fails, or the
    /// connection is aborted.
    pub(crate) async fn write_to(&self, socket: &mut (impl AsyncWrite + Unpin)) {
        let writing = async {
            let mut rooms = Vec::new();
            loop {
                // Single-threaded: nothing queues between this check and
                // the wait, so no wake-up is missed.
                while self.queued.borrow().is_empty() {
                    if self.closed.get() {
                        return;
                    }
                    self.ready.notified().await;
                }
                let batch = self.queued.borrow_mut().take();
                std::mem::swap(&mut rooms, &mut *self.queued_rooms.borrow_mut());
                let mut unwritten = batch.len();
                self.writing.set(unwritten);
                for chunk in batch.slices() {
                    if !self.write_all(socket, chunk, &mut unwritten).await {
                        return;
                    }
                }
                // TLS holds what the socket did not take until flushed: the
                // flush too must make progress within the stall timeout.
                let flushed = or(async { Some(socket.flush().await) }, async {
                    glommio::timer::sleep(self.stall_timeout).await;
                    None
                })
                .await;
                if !matches!(flushed, Some(Ok(()))) {
                    return;
                }
                self.writing.set(0);
                self.queued.borrow_mut().recycle(batch);
                // Written: the answers' room goes back.
                rooms.clear();
                self.room.notify_all();
            }
        };
        let aborted = async {
            while !self.aborted.get() {
                self.abort.notified().await;
            }
        };
        or(writing, aborted).await;
    }

    /// Writes `bytes` whole, counting them off `unwritten`. Every write
    /// must make progress within the stall timeout: a client that stops
    /// reading is cut off even when no producer waits (one large answer,
    /// sent and never read). Answers whether the socket took it all.
    async fn write_all(
        &self,
        socket: &mut (impl AsyncWrite + Unpin),
        bytes: &[u8],
        unwritten: &mut usize,
    ) -> bool {
        let mut written = 0;
        while written < bytes.len() {
            let rest = bytes.get(written..).unwrap_or_default();
            let wrote = or(async { Some(socket.write(rest).await) }, async {
                glommio::timer::sleep(self.stall_timeout).await;
                None
            })
            .await;
            match wrote {
                Some(Ok(0)) | Some(Err(_)) => return false,
                Some(Ok(n)) => {
                    written += n;
                    *unwritten = unwritten.saturating_sub(n);
                    self.writing.set(*unwritten);
                }
                None => {
                    tracing::warn!(
                        unwritten = *unwritten,
                        "closing a connection whose client stopped reading its responses"
                    );
                    return false;
                }
            }
        }
        true
    }
}
