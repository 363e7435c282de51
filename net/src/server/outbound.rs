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
    sender: RefCell<Option<flume::Sender<Vec<u8>>>>,
    receiver: flume::Receiver<Vec<u8>>,
    queued_bytes: Cell<usize>,
    limit: usize,
    stall_timeout: Duration,
    room: LocalNotify,
    aborted: Cell<bool>,
    abort: LocalNotify,
}

/// Most bytes the writer hands the socket at once.
const WRITE_BATCH: usize = 256 << 10;

impl Outbound {
    pub(crate) fn new(limit: usize, stall_timeout: Duration) -> Outbound {
        let (sender, receiver) = flume::unbounded();
        Outbound {
            sender: RefCell::new(Some(sender)),
            receiver,
            queued_bytes: Cell::new(0),
            limit,
            stall_timeout,
            room: LocalNotify::default(),
            aborted: Cell::new(false),
            abort: LocalNotify::default(),
        }
    }

    /// Queues `frame`, waiting for room. A frame larger than the whole
    /// buffer goes out alone, once the queue is empty.
    pub(crate) async fn push(&self, frame: Vec<u8>) -> Result<(), Closed> {
        loop {
            if self.aborted.get() {
                return Err(Closed);
            }
            let queued = self.queued_bytes.get();
            if queued == 0 || queued + frame.len() <= self.limit {
                let sender = self.sender.borrow();
                let sender = sender.as_ref().ok_or(Closed)?;
                self.queued_bytes.set(queued + frame.len());
                return sender.send(frame).map_err(|_| Closed);
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
                    queued,
                    "closing a connection whose client stopped reading its responses"
                );
                self.abort();
                return Err(Closed);
            }
        }
    }

    /// No more frames: the writer sends what is queued, then ends.
    pub(crate) fn close(&self) {
        self.sender.borrow_mut().take();
    }

    /// Drop everything; the connection ends now.
    pub(crate) fn abort(&self) {
        self.aborted.set(true);
        self.close();
        self.abort.notify_all();
        self.room.notify_all();
    }

    /// Writes queued frames to `socket` in batches until the queue is closed
    /// and empty, the socket fails, or the connection is aborted.
    pub(crate) async fn write_to(&self, socket: &mut (impl AsyncWrite + Unpin)) {
        let writing = async {
            let mut batch = Vec::with_capacity(64 << 10);
            while let Ok(first) = self.receiver.recv_async().await {
                batch.clear();
                batch.extend_from_slice(&first);
                while batch.len() < WRITE_BATCH {
                    match self.receiver.try_recv() {
                        Ok(frame) => batch.extend_from_slice(&frame),
                        Err(_) => break,
                    }
                }
                if let Err(error) = socket.write_all(&batch).await {
                    tracing::debug!(%error, "writing to a client failed");
                    return;
                }
                if socket.flush().await.is_err() {
                    return;
                }
                let left = self.queued_bytes.get().saturating_sub(batch.len());
                self.queued_bytes.set(left);
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
}
