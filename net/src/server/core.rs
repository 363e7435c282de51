//! One core's part of the server: its two listeners (the shared client
//! port and its own port), and every connection they accept, served on
//! this core beside its shards.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use futures_lite::future::{or, pending};
use futures_lite::StreamExt;
use futures_util::stream::FuturesUnordered;
use glommio::net::{TcpListener, TcpStream};
use keel_engine::shard::{Node, NodeClient};

use crate::server::config::Limits;
use crate::server::connection;

/// What every core knows about the server once all have bound.
#[derive(Debug, Clone)]
pub(crate) struct ServerInfo {
    pub(crate) name: String,
    pub(crate) member_id: u64,
    pub(crate) client_address: SocketAddr,
    /// Each core's own port, by core.
    pub(crate) core_ports: Vec<u16>,
}

/// What a core's connections share.
pub(crate) struct CoreContext {
    pub(crate) node: Arc<Node>,
    pub(crate) core: usize,
    pub(crate) limits: Limits,
    pub(crate) info: Arc<ServerInfo>,
    /// This core's watch groups (`watch_group.rs`).
    pub(crate) watch_groups: crate::server::watch_group::WatchGroups,
    /// This core's budget of request bytes (`budget.rs`).
    pub(crate) inbound: Rc<crate::server::budget::ByteBudget>,
    /// This core's budget of large answers (`answers.rs`).
    pub(crate) answers: Rc<crate::server::budget::ByteBudget>,
    /// This core's turns for heavy answers (`heavy_answers.rs`).
    pub(crate) heavy_answers: crate::server::heavy_answers::HeavyAnswers,
    /// Where connections that speak HTTP (etcd's API) go.
    pub(crate) etcd: crate::etcd::Handoff,
    /// TLS on the client and core ports (`--cert-file`): then they take
    /// nothing else.
    pub(crate) tls: Option<Arc<crate::tls::ServerTls>>,
    /// Users and permissions (docs/security.md).
    pub(crate) auth: crate::auth::Auth,
    /// This core's copy of the compiled auth record (`permits.rs`).
    pub(crate) compiled_auth: std::cell::RefCell<Option<Arc<crate::auth::Compiled>>>,
}

impl CoreContext {
    /// Calls that enter the node through this core.
    pub(crate) fn client(&self) -> NodeClient<'_> {
        self.node
            .via_core(self.core)
            .unwrap_or_else(|| self.node.client())
    }
}

/// A listener that could not be bound (or read back), and why.
pub(crate) type BindError = (SocketAddr, std::io::Error);

/// The two listeners of one core, bound.
pub(crate) struct Bound {
    client: TcpListener,
    own: TcpListener,
}

impl Bound {
    /// Binds the client address (shared by every core through
    /// SO_REUSEPORT) and this core's own address; an error names the
    /// address that failed.
    pub(crate) fn bind(client: SocketAddr, own: SocketAddr) -> Result<Bound, BindError> {
        let listen = |address: SocketAddr| crate::listen::listen(address).map_err(|e| (address, e));
        Ok(Bound {
            client: listen(client)?,
            own: listen(own)?,
        })
    }

    /// The addresses bound (with the ports the system picked for port 0).
    pub(crate) fn addresses(&self) -> std::io::Result<(SocketAddr, SocketAddr)> {
        Ok((self.client.local_addr()?, self.own.local_addr()?))
    }
}

/// Accepts on `listener` and hands each connection over. It runs as a
/// task of its own, cancelled when the core's server future drops its
/// handle; it holds no handle on the node, so the moment it may outlive
/// that future keeps nothing alive.
async fn accept_loop(listener: TcpListener, accepted: flume::Sender<TcpStream>) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                if accepted.send_async(stream).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                // Out of descriptors, most likely: give connections time
                // to close instead of spinning.
                glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves a connection in keel's protocol here, or hands one that speaks
/// HTTP to etcd's API front (`crate::etcd`), by its first bytes, read
/// without taking them: four of them tell a keel frame from HTTP; with
/// TLS, the client's first message tells which protocol it asks for
/// (`tls::client_hello`). A connection may stay silent as long as
/// `idle_timeout` lets any (keel's clients connect ahead of their first
/// request); once it has begun, the rest of what is read ahead must come
/// within the frame timeout, as the rest of a frame must.
async fn route(stream: TcpStream, ctx: Rc<CoreContext>) {
    let mut first = [0u8; crate::tls::client_hello::RECORD_HEADER];
    let began = async {
        match stream.peek(&mut first).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(n),
        }
    };
    let began = match ctx.limits.idle_timeout {
        Some(idle) => {
            futures_lite::future::or(began, async {
                glommio::timer::sleep(idle).await;
                None
            })
            .await
        }
        None => began.await,
    };
    if began.is_none() {
        return;
    }
    let deadline = std::time::Instant::now() + ctx.limits.frame_timeout;
    let Some(tls) = ctx.tls.clone() else {
        let mut four = [0u8; 4];
        if !peek_fully(&stream, &mut four, deadline).await {
            return;
        }
        if !crate::etcd::is_http(four) {
            return connection::serve(stream, ctx, crate::auth::Identity::Nobody).await;
        }
        return hand_to_front(&stream, &ctx).await;
    };
    if !peek_fully(&stream, &mut first, deadline).await {
        return;
    }
    let Some(record_len) = crate::tls::client_hello::record_len(&first) else {
        return refuse_plaintext(stream, first).await;
    };
    let mut hello = vec![0u8; record_len.min(crate::tls::client_hello::MAX_HELLO)];
    if !peek_fully(&stream, &mut hello, deadline).await {
        return;
    }
    if !crate::tls::client_hello::offers_keel(&hello) {
        return hand_to_front(&stream, &ctx).await;
    }
    drop(hello);
    let handshake = futures_rustls::TlsAcceptor::from(tls.keel_config())
        .accept(stream)
        .into_fallible();
    let timed_out = async {
        glommio::timer::sleep(deadline.saturating_duration_since(std::time::Instant::now())).await;
        None
    };
    match or(async { Some(handshake.await) }, timed_out).await {
        Some(Ok(stream)) => {
            let identity = match tls.user_of(stream.get_ref().1.peer_certificates()) {
                Some(name) => crate::auth::Identity::CommonName(name),
                None => crate::auth::Identity::Nobody,
            };
            connection::serve(stream, ctx, identity).await
        }
        Some(Err((error, stream))) => {
            tracing::debug!(%error, "a TLS handshake failed");
            close_after_refusal(stream).await;
        }
        None => tracing::debug!("a TLS handshake took longer than the frame timeout"),
    }
}

/// How long a refused TLS client is read (and what it sends dropped)
/// before its connection is closed.
const REFUSAL_LINGER: std::time::Duration = std::time::Duration::from_secs(1);
/// The most bytes read from a refused TLS client.
const REFUSAL_DRAIN_BYTES: usize = 64 << 10;

/// Closes a connection whose TLS handshake this server refused, after the
/// alert that says why. A TLS 1.3 client sends its certificate and its
/// first requests before it hears the verdict; closing with those unread
/// would reset the connection, and the reset can reach the client before
/// the alert does, which it then never reads. So: end the writing side,
/// and read (dropping) what comes, a little while at most.
async fn close_after_refusal(mut stream: TcpStream) {
    use futures_lite::AsyncReadExt;
    if stream.shutdown(std::net::Shutdown::Write).await.is_err()
        || stream.set_read_timeout(Some(REFUSAL_LINGER)).is_err()
    {
        return;
    }
    let until = std::time::Instant::now() + REFUSAL_LINGER;
    let mut dropped = [0u8; 4096];
    let mut left = REFUSAL_DRAIN_BYTES;
    while left > 0 && std::time::Instant::now() < until {
        match stream.read(&mut dropped).await {
            Ok(0) | Err(_) => return,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

/// Waits until `buffer.len()` bytes can be read from `stream`, and copies
/// them into `buffer` without taking them; false if the client closes,
/// or has not sent them by `deadline`.
async fn peek_fully(stream: &TcpStream, buffer: &mut [u8], deadline: std::time::Instant) -> bool {
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        match stream.peek(buffer).await {
            Ok(0) | Err(_) => return false,
            Ok(n) if n >= buffer.len() => return true,
            Ok(_) => {}
        }
        // peek answers at once while the same bytes wait: poll, backing
        // off (a client that stalls costs a few wakes, not one a ms).
        if std::time::Instant::now() >= deadline {
            return false;
        }
        glommio::timer::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(100));
    }
}

/// What a plain HTTP client hears from a TLS port before it is closed
/// (Go's words, which etcd's users know).
const HTTP_TO_HTTPS: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// Closes a connection that speaks plaintext to a TLS port; an HTTP/1
/// client is told why first.
async fn refuse_plaintext(mut stream: TcpStream, first: [u8; 5]) {
    use futures_lite::AsyncWriteExt;
    tracing::debug!(peer = ?stream.peer_addr().ok(), "refused plaintext on a TLS port");
    let [a, b, c, d, _] = first;
    if crate::etcd::is_http([a, b, c, d]) && !first.starts_with(b"PRI ") {
        let _ = stream.write_all(HTTP_TO_HTTPS).await;
    }
}

/// Hands `stream` to etcd's API front.
async fn hand_to_front(stream: &TcpStream, ctx: &CoreContext) {
    match detach(stream) {
        Ok(detached) => {
            // Waits while the front is behind: this connection is still
            // one of this core's, so the cores' caps bound what waits.
            if ctx.etcd.send_async(detached).await.is_err() {
                tracing::warn!("an etcd API connection arrived with the front stopped");
            }
        }
        Err(error) => tracing::warn!(%error, "an etcd API connection could not be handed over"),
    }
}

/// A descriptor of `stream`'s socket that the caller owns: the glommio
/// stream closes its own when dropped, the socket stays open through this.
#[allow(unsafe_code)] // fcntl and from_raw_fd: glommio gives no owned descriptor
fn detach(stream: &TcpStream) -> std::io::Result<std::net::TcpStream> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: the descriptor is open while `stream` lives; F_DUPFD_CLOEXEC
    // makes a new one and touches no memory of this process.
    let fd = unsafe { libc::fcntl(stream.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just made by fcntl, and nothing else owns it.
    Ok(std::net::TcpStream::from(unsafe {
        OwnedFd::from_raw_fd(fd)
    }))
}

/// Serves every connection `bound` accepts until this future is dropped.
pub(crate) async fn serve(bound: Bound, ctx: Rc<CoreContext>) {
    let (accepted_in, accepted) = flume::unbounded();
    let _acceptors = [
        glommio::spawn_local(accept_loop(bound.client, accepted_in.clone())),
        glommio::spawn_local(accept_loop(bound.own, accepted_in)),
    ];
    let mut connections = FuturesUnordered::new();
    loop {
        let arrived = async {
            match accepted.recv_async().await {
                Ok(stream) => Some(stream),
                Err(_) => pending().await,
            }
        };
        let finished = async {
            match connections.next().await {
                Some(()) => None,
                None => pending().await,
            }
        };
        if let Some(stream) = or(arrived, finished).await {
            if connections.len() >= ctx.limits.max_connections {
                tracing::warn!(
                    core = ctx.core,
                    max = ctx.limits.max_connections,
                    "closing a connection past max_connections"
                );
                continue;
            }
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
            tracing::debug!(core = ctx.core, peer = ?stream.peer_addr().ok(), "connection");
            connections.push(route(stream, ctx.clone()));
        }
    }
}
