//! One core's connection to one peer's same core, for the messages this
//! core's shards send it. `send` only queues; a writer task drains the
//! whole queue into one frame each time it runs, so every message of every
//! shard queued during one pass of the core (heartbeats of all its shards
//! included) leaves in one frame. The queue is bounded; a message that
//! does not fit, or comes while there is no connection, is dropped and
//! reported unreachable to its shard, so the Ready loop never waits on a
//! peer.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::AsyncWriteExt;
use keel_engine::shard::{CallPart, PeerInbox};

use crate::peer::stream::{PeerStream, PeerTls};
use crate::peer::wire::{self, Hello, ItemKind, PeerClock, MAX_FRAME_BYTES};

/// Bytes of encoded messages queued for one peer before more are dropped.
pub(crate) const QUEUE_BYTES: usize = 64 << 20;
/// The largest item queued: one that fills a frame with the clock.
const MAX_ITEM_BYTES: usize = MAX_FRAME_BYTES - wire::CLOCK_BYTES - wire::ITEM_HEADER_BYTES;
/// A frame is closed once it holds this many bytes (it holds at least one
/// message, whatever its size).
const FRAME_TARGET_BYTES: usize = 4 << 20;
/// How long a connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one frame's write may take before the connection is given up
/// (a peer that stopped reading).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// The first and the longest wait between failed connects.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A queued item: what it is, its shard and its bytes.
type Queued = (ItemKind, u32, Vec<u8>);

/// The link to one peer.
pub(crate) struct Link {
    peer: u64,
    address: SocketAddr,
    hello: Hello,
    inbox: PeerInbox,
    tls: PeerTls,
    queue: RefCell<VecDeque<Queued>>,
    queued_bytes: Cell<usize>,
    connected: Cell<bool>,
    /// The member left, or moved: the writer stops.
    retired: Cell<bool>,
    /// Wakes the writer when the queue was empty.
    kick: flume::Sender<()>,
}

impl Link {
    /// A link to `peer` at `address`, whose writer runs as a task on this
    /// core until the executor ends.
    pub(crate) fn start(
        peer: u64,
        address: SocketAddr,
        hello: Hello,
        inbox: PeerInbox,
        tls: PeerTls,
    ) -> Rc<Link> {
        let (kick, kicked) = flume::bounded(1);
        let link = Rc::new(Link {
            peer,
            address,
            hello,
            inbox,
            tls,
            queue: RefCell::default(),
            queued_bytes: Cell::new(0),
            connected: Cell::new(false),
            retired: Cell::new(false),
            kick,
        });
        glommio::spawn_local(write_loop(link.clone(), kicked)).detach();
        link
    }

    /// Stops the link: its writer ends (closing its connection), and what
    /// is queued is dropped.
    pub(crate) fn retire(&self) {
        self.retired.set(true);
        let _ = self.kick.try_send(());
    }

    /// Queues one Raft message of `shard`, or drops it and reports the
    /// peer unreachable.
    pub(crate) fn send(&self, shard: usize, bytes: Vec<u8>) {
        if !self.queue_item(ItemKind::Raft, shard, bytes) {
            self.inbox.unreachable(shard, self.peer);
        }
    }

    /// Queues one part of a call (its bytes start with its id); answers
    /// whether it was queued.
    pub(crate) fn send_call(&self, part: CallPart, shard: usize, bytes: Vec<u8>) -> bool {
        self.queue_item(ItemKind::Call(part), shard, bytes)
    }

    fn queue_item(&self, kind: ItemKind, shard: usize, bytes: Vec<u8>) -> bool {
        // An item must fit a frame with the clock and its own header.
        if bytes.len() > MAX_ITEM_BYTES {
            return false;
        }
        let fits = self.queued_bytes.get() + bytes.len() <= QUEUE_BYTES;
        if !self.connected.get() || !fits {
            return false;
        }
        self.queued_bytes.set(self.queued_bytes.get() + bytes.len());
        let was_empty = {
            let mut queue = self.queue.borrow_mut();
            queue.push_back((kind, shard as u32, bytes));
            queue.len() == 1
        };
        if was_empty {
            let _ = self.kick.try_send(());
        }
        true
    }

    /// Takes queued items into one frame body, after this node's clocks.
    fn take_frame(&self) -> Vec<u8> {
        let (wall_millis, revision) = self.inbox.clock_reading();
        let mut body = wire::start_frame(PeerClock {
            wall_millis,
            revision,
        });
        let mut queue = self.queue.borrow_mut();
        let mut taken = 0;
        while let Some((kind, shard, bytes)) = queue.pop_front() {
            // A frame never passes the largest the receiver takes: the
            // item goes in the next one.
            if taken > 0 && body.len() + wire::ITEM_HEADER_BYTES + bytes.len() > MAX_FRAME_BYTES {
                queue.push_front((kind, shard, bytes));
                break;
            }
            self.queued_bytes
                .set(self.queued_bytes.get().saturating_sub(bytes.len()));
            wire::push_item(&mut body, kind, shard, &bytes);
            taken += 1;
            if body.len() >= FRAME_TARGET_BYTES {
                break;
            }
        }
        if taken == 0 {
            body.clear();
        }
        body
    }

    /// The connection is gone: what was queued is dropped. Each shard that
    /// had a Raft message queued hears the peer is unreachable, and each
    /// call request queued is reported not sent (it may be sent again).
    fn drop_queue(&self) {
        let dropped: Vec<Queued> = self.queue.borrow_mut().drain(..).collect();
        self.queued_bytes.set(0);
        let mut shards = BTreeSet::new();
        for (kind, shard, bytes) in dropped {
            match kind {
                ItemKind::Raft => {
                    shards.insert(shard);
                }
                ItemKind::Call(CallPart::Request) => {
                    if let Some(id) = bytes.get(..8).and_then(|id| <[u8; 8]>::try_from(id).ok()) {
                        self.inbox.call_not_sent(u64::from_le_bytes(id));
                    }
                }
                ItemKind::Call(CallPart::Answer) => {}
            }
        }
        for shard in shards {
            self.inbox.unreachable(shard as usize, self.peer);
        }
    }
}

/// Connects, says hello, and writes frames until the connection fails;
/// then again, after a backoff.
async fn write_loop(link: Rc<Link>, kicked: flume::Receiver<()>) {
    let mut backoff = BACKOFF_FIRST;
    while !link.retired.get() {
        match connect(&link).await {
            Ok(mut stream) => {
                backoff = BACKOFF_FIRST;
                link.connected.set(true);
                let error = write_frames(&link, &mut stream, &kicked).await;
                link.connected.set(false);
                link.drop_queue();
                tracing::debug!(peer = %format!("{:x}", link.peer), %error, "peer connection lost");
            }
            Err(error) => {
                tracing::trace!(peer = %format!("{:x}", link.peer), %error, "peer connect failed");
            }
        }
        glommio::timer::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn connect(link: &Link) -> std::io::Result<PeerStream> {
    let mut stream =
        PeerStream::connect(link.address, CONNECT_TIMEOUT, link.tls.as_deref()).await?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    stream.write_all(&link.hello.encode()).await?;
    stream.flush().await?;
    Ok(stream)
}

async fn write_frames(
    link: &Link,
    stream: &mut PeerStream,
    kicked: &flume::Receiver<()>,
) -> std::io::Error {
    loop {
        if link.queue.borrow().is_empty() && kicked.recv_async().await.is_err() {
            return std::io::Error::other("the transport is gone");
        }
        if link.retired.get() {
            return std::io::Error::other("the member left or moved");
        }
        let body = link.take_frame();
        if body.is_empty() {
            continue;
        }
        let header = wire::frame_header(&body);
        if let Err(error) = stream.write_all(&header).await {
            return error;
        }
        if let Err(error) = stream.write_all(&body).await {
            return error;
        }
        // TLS keeps what the socket did not take until flushed.
        if let Err(error) = stream.flush().await {
            return error;
        }
    }
}
