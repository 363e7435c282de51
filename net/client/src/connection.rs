//! One TCP connection to a server: many requests in flight, answers
//! matched to requests by id, and streams (watches) that receive every
//! response carrying their id until they are dropped. A writer task sends
//! the queued requests; before each send it lets the tasks it woke queue
//! theirs, so that under load one send carries many requests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use keel_proto::{
    decode_response, encode_request_frame, FrameDecoder, Request, Response, ResponseBody,
    MAX_RESPONSE_FRAME_LEN,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::client::ClientOptions;
use crate::error::{Error, Result};

/// Where the answer to a request goes.
enum Waiter {
    Once(oneshot::Sender<Result<Response>>),
    /// A stream's channel, and the bytes waiting in it.
    Stream(mpsc::UnboundedSender<Result<Streamed>>, Arc<AtomicUsize>),
}

/// Bytes of messages one stream (a watch) may have waiting for its reader.
/// Past it the stream is told it fell behind ([`Error::WatchLagged`]) and
/// gets nothing more: a watcher resumes from history (`watch.rs`), so
/// memory stays bounded whether or not the application reads, and nothing
/// is lost.
pub(crate) const STREAM_BUFFER_BYTES: usize = 8 << 20;

/// About what a stream message holds in memory.
fn stream_bytes(response: &Response) -> usize {
    match &response.body {
        ResponseBody::Watch(watch) => {
            64 + watch
                .events
                .iter()
                .map(|e| {
                    64 + e.kv.key.len()
                        + e.kv.value.len()
                        + e.prev_kv
                            .as_ref()
                            .map_or(0, |p| p.key.len() + p.value.len())
                })
                .sum::<usize>()
        }
        _ => 64,
    }
}

/// Hands `message` to a stream unless that would put it past its buffer
/// (a message always fits an empty one); answers whether the stream
/// goes on.
fn send_stream(
    sender: &mpsc::UnboundedSender<Result<Streamed>>,
    buffered: &AtomicUsize,
    message: Streamed,
) -> bool {
    let size = match &message {
        Streamed::Own(response) => stream_bytes(response),
        Streamed::Shared(response) => stream_bytes(response),
    };
    let before = buffered.fetch_add(size, Ordering::AcqRel);
    if before > 0 && before + size > STREAM_BUFFER_BYTES {
        buffered.fetch_sub(size, Ordering::AcqRel);
        let _ = sender.send(Err(Error::WatchLagged));
        return false;
    }
    sender.send(Ok(message)).is_ok()
}

/// A stream's message as the reader hands it over.
enum Streamed {
    Own(Response),
    /// A message the server sent once for several watches of the
    /// connection (`also_watch_ids`). Each stream makes its own copy when
    /// it takes it, so the reader's fan-out to many watches stays cheap
    /// and the copying runs on the watches' tasks.
    Shared(Arc<Response>),
}

/// Most bytes handed to the socket at once.
const WRITE_BATCH: usize = 256 << 10;

/// Times the writer lets other tasks run before it sends, while they keep
/// queueing frames.
const COALESCE_ROUNDS: usize = 4;

type Waiters = Arc<Mutex<Option<HashMap<u64, Waiter>>>>;

/// A connection's shared state. Cloning shares the connection.
#[derive(Clone)]
pub(crate) struct Connection {
    frames: mpsc::UnboundedSender<Vec<u8>>,
    /// `None` once the connection is gone: nothing more can wait on it.
    waiters: Waiters,
    /// Set when the reader stops (and `waiters` becomes `None`): read
    /// before every call, so it is not behind the mutex.
    closed: Arc<AtomicBool>,
    /// The generation of the token it presented (`session.rs`; 0: none).
    token_generation: Arc<AtomicU64>,
}

/// A call's place among the waiters, given up when the call is dropped
/// (after its answer came, there is nothing left to give up).
struct Waiting<'a> {
    connection: &'a Connection,
    id: u64,
    /// The answer came (the reader took the waiter out already).
    answered: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.connection.forget(self.id);
        }
    }
}

/// The responses of one stream request (a watch). Dropping it stops their
/// delivery.
pub(crate) struct Subscription {
    connection: Connection,
    id: u64,
    receiver: mpsc::UnboundedReceiver<Result<Streamed>>,
    /// Bytes waiting in `receiver`.
    buffered: Arc<AtomicUsize>,
}

impl Subscription {
    /// The stream's id (its request's).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The connection it runs on.
    pub(crate) fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Bytes of messages waiting to be taken.
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.buffered.load(Ordering::Acquire)
    }

    /// The next response; [`Error::Disconnected`] once the connection is
    /// gone.
    pub(crate) async fn next(&mut self) -> Result<Response> {
        let streamed = self
            .receiver
            .recv()
            .await
            .unwrap_or(Err(Error::Disconnected))?;
        let size = match &streamed {
            Streamed::Own(response) => stream_bytes(response),
            Streamed::Shared(response) => stream_bytes(response),
        };
        let _ = self
            .buffered
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                Some(held.saturating_sub(size))
            });
        Ok(match streamed {
            Streamed::Own(response) => response,
            Streamed::Shared(shared) => {
                let mut response = Arc::try_unwrap(shared).unwrap_or_else(|s| (*s).clone());
                response.id = self.id;
                if let ResponseBody::Watch(watch) = &mut response.body {
                    watch.watch_id = self.id;
                }
                response
            }
        })
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.connection.forget(self.id);
    }
}

/// One half of a connection, plain or TLS.
type ReadHalf = Box<dyn tokio::io::AsyncRead + Send + Unpin>;
/// See [`ReadHalf`].
type WriteHalf = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;

/// `stream`'s halves, after a TLS handshake if `options` ask for TLS.
async fn split(
    stream: TcpStream,
    address: &str,
    options: &ClientOptions,
) -> std::io::Result<(ReadHalf, WriteHalf)> {
    let Some(tls) = &options.tls else {
        let (reader, writer) = stream.into_split();
        return Ok((Box::new(reader), Box::new(writer)));
    };
    let name = crate::tls::server_name(address)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let connector = tokio_rustls::TlsConnector::from(tls.0.clone());
    let stream = tokio::time::timeout(options.connect_timeout, connector.connect(name, stream))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no TLS handshake with {address} within {} ms",
                    options.connect_timeout.as_millis()
                ),
            )
        })??;
    let (reader, writer) = tokio::io::split(stream);
    Ok((Box::new(reader), Box::new(writer)))
}

impl Connection {
    /// Connects to `address` and starts its reader and writer tasks on the
    /// current tokio runtime.
    pub(crate) async fn open(
        address: &str,
        options: &ClientOptions,
    ) -> std::io::Result<Connection> {
        let stream = tokio::time::timeout(options.connect_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no connection to {address} within {} ms",
                        options.connect_timeout.as_millis()
                    ),
                )
            })??;
        stream.set_nodelay(true)?;
        // A peer that vanishes without a word (a partition, a dead
        // machine) is found out by the kernel's probes.
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(options.keepalive_time)
            .with_interval(options.keepalive_interval);
        socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive)?;
        let (mut reader, mut writer) = split(stream, address, options).await?;
        let (frames, mut outgoing) = mpsc::unbounded_channel::<Vec<u8>>();
        let waiters: Waiters = Arc::new(Mutex::new(Some(HashMap::new())));
        tokio::spawn(async move {
            while let Some(frame) = outgoing.recv().await {
                let mut batch = frame;
                for _ in 0..COALESCE_ROUNDS {
                    tokio::task::yield_now().await;
                    let before = batch.len();
                    while let Ok(more) = outgoing.try_recv() {
                        batch.extend_from_slice(&more);
                        if batch.len() > WRITE_BATCH {
                            break;
                        }
                    }
                    if batch.len() == before || batch.len() > WRITE_BATCH {
                        break;
                    }
                }
                // TLS keeps what the socket did not take until flushed.
                if writer.write_all(&batch).await.is_err() || writer.flush().await.is_err() {
                    return;
                }
            }
        });
        let reading = waiters.clone();
        let closed = Arc::new(AtomicBool::new(false));
        let reader_closed = closed.clone();
        let (endpoint, tls) = (address.to_string(), options.tls.is_some());
        tokio::spawn(async move {
            let mut gone_because = Error::Disconnected;
            let mut decoder = FrameDecoder::with_limit(MAX_RESPONSE_FRAME_LEN);
            let mut chunk = vec![0u8; 64 << 10];
            'read: loop {
                loop {
                    match decoder.next_frame() {
                        Ok(Some(frame)) => match decode_response(&frame) {
                            Ok(response) => deliver(&reading, response),
                            Err(_) => break 'read,
                        },
                        Ok(None) => break,
                        Err(_) => break 'read,
                    }
                }
                match reader.read(&mut chunk).await {
                    Ok(0) => break,
                    Err(error) => {
                        // A server that refuses a TLS client (its
                        // certificate) says so with an alert once the
                        // handshake seemed done (TLS 1.3), before it reads
                        // any request: nothing was done, and the reason is
                        // worth more than "lost".
                        if tls && error.kind() == std::io::ErrorKind::InvalidData {
                            gone_because = Error::Connect {
                                endpoints: endpoint,
                                reason: format!("TLS: {error}"),
                            };
                        }
                        break;
                    }
                    Ok(read) => decoder.extend(chunk.get(..read).unwrap_or_default()),
                }
            }
            // Everyone still waiting hears that the connection is gone, and
            // the connection counts as closed from now on.
            reader_closed.store(true, Ordering::Release);
            let gone = reading.lock().ok().and_then(|mut w| w.take());
            for waiter in gone.into_iter().flat_map(HashMap::into_values) {
                match waiter {
                    Waiter::Once(sender) => drop(sender.send(Err(gone_because.clone()))),
                    Waiter::Stream(sender, _) => drop(sender.send(Err(gone_because.clone()))),
                }
            }
        });
        Ok(Connection {
            frames,
            waiters,
            closed,
            token_generation: Arc::default(),
        })
    }

    /// Records the generation of the token it presented.
    pub(crate) fn set_token_generation(&self, generation: u64) {
        self.token_generation.store(generation, Ordering::Release);
    }

    /// The generation of the token it presented.
    pub(crate) fn token_generation(&self) -> u64 {
        self.token_generation.load(Ordering::Acquire)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.frames.is_closed() || self.closed.load(Ordering::Acquire) || self.waiters.is_poisoned()
    }

    fn send(&self, id: u64, request: &Request, waiter: Waiter) -> Result<()> {
        let frame =
            encode_request_frame(id, request).map_err(|e| Error::InvalidRequest(e.to_string()))?;
        {
            let mut waiters = self.waiters.lock().map_err(|_| Error::Disconnected)?;
            let waiters = waiters.as_mut().ok_or(Error::Disconnected)?;
            waiters.insert(id, waiter);
        }
        if self.frames.send(frame).is_err() {
            self.forget(id);
            return Err(Error::Disconnected);
        }
        Ok(())
    }

    /// Sends `request` as `id` and waits for its one answer.
    pub(crate) async fn call(&self, id: u64, request: &Request) -> Result<Response> {
        let (sender, answer) = oneshot::channel();
        self.send(id, request, Waiter::Once(sender))?;
        // Given up (a deadline dropped this future): nobody waits any more.
        let mut waiting = Waiting {
            connection: self,
            id,
            answered: false,
        };
        let answer = answer.await.map_err(|_| Error::Disconnected)?;
        waiting.answered = true;
        answer
    }

    /// Sends `request` as `id`; every response with that id arrives on the
    /// returned subscription until it is dropped.
    pub(crate) fn stream(&self, id: u64, request: &Request) -> Result<Subscription> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let buffered = Arc::new(AtomicUsize::new(0));
        self.send(id, request, Waiter::Stream(sender, buffered.clone()))?;
        Ok(Subscription {
            connection: self.clone(),
            id,
            receiver,
            buffered,
        })
    }

    /// Stops routing responses with `id`.
    fn forget(&self, id: u64) {
        if let Ok(mut waiters) = self.waiters.lock() {
            if let Some(waiters) = waiters.as_mut() {
                waiters.remove(&id);
            }
        }
    }
}

fn deliver(waiters: &Waiters, mut response: Response) {
    let Ok(mut guard) = waiters.lock() else {
        return;
    };
    let Some(waiters) = guard.as_mut() else {
        return;
    };
    // A watch message shared by several watches of this connection: each
    // gets it as if it were its own.
    let also = match &mut response.body {
        ResponseBody::Watch(watch) => std::mem::take(&mut watch.also_watch_ids),
        _ => Vec::new(),
    };
    if also.is_empty() {
        return deliver_one(waiters, response);
    }
    let first = response.id;
    let shared = Arc::new(response);
    for id in std::iter::once(first).chain(also) {
        if let Some(Waiter::Stream(sender, buffered)) = waiters.get(&id) {
            if !send_stream(sender, buffered, Streamed::Shared(shared.clone())) {
                waiters.remove(&id);
            }
        }
    }
}

fn deliver_one(waiters: &mut HashMap<u64, Waiter>, response: Response) {
    let id = response.id;
    let delivered = match waiters.get(&id) {
        Some(Waiter::Stream(sender, buffered)) => {
            send_stream(sender, buffered, Streamed::Own(response))
        }
        Some(Waiter::Once(_)) => {
            if let Some(Waiter::Once(sender)) = waiters.remove(&id) {
                drop(sender.send(Ok(response)));
            }
            true
        }
        // A late answer to something nobody waits for any more.
        None => true,
    };
    if !delivered {
        waiters.remove(&id);
    }
}
