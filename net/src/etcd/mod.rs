//! etcd's v3 gRPC API on keel's client port (docs/etcd.md).
//!
//! One port serves both protocols. A core that accepts a connection reads
//! its first four bytes without taking them: a keel frame starts with its
//! length, little-endian and at most 2 MiB, so its fourth byte is 0; an
//! HTTP/2 client starts with `PRI ` and an HTTP/1 client with a method
//! (`GET `, `POST`, ...), whose fourth byte never is. Such a connection
//! leaves the core for this front: a tokio runtime on a thread of its own
//! that serves etcd's services with tonic, and enters the node through its
//! client (flume channels to the cores), as keel's own connections do.

mod answer_room;
mod auth;
mod cluster;
mod convert;
mod cores;
mod corruption;
mod election;
mod errors;
mod gateway;
mod header;
mod http;
mod identity;
mod kv;
mod lease;
mod lock;
mod maintenance;
mod pages;
mod permits;
mod require_leader;
mod snapshot;
mod watch;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use keel_engine::shard::Node;
use keel_etcd_api::etcdserverpb::auth_server::AuthServer;
use keel_etcd_api::etcdserverpb::cluster_server::ClusterServer;
use keel_etcd_api::etcdserverpb::kv_server::KvServer;
use keel_etcd_api::etcdserverpb::lease_server::LeaseServer;
use keel_etcd_api::etcdserverpb::maintenance_server::MaintenanceServer;
use keel_etcd_api::etcdserverpb::watch_server::WatchServer;
use keel_etcd_api::v3electionpb::election_server::ElectionServer;
use keel_etcd_api::v3lockpb::lock_server::LockServer;
use keel_write_batching::BatchedWrites;

use crate::metrics::grpc_calls::CountCalls;
use crate::metrics::{self, GrpcCalls, Sources};
use axum::Router;

use self::answer_room::{AnswerRooms, ConnectionRoom};
use self::auth::AuthService;
use self::cluster::ClusterService;
use self::cores::Cores;
use self::election::ElectionService;
use self::header::Headers;
use self::identity::PeerName;
use self::kv::KvService;
use self::lease::LeaseService;
use self::lock::LockService;
use self::maintenance::MaintenanceService;
use self::watch::WatchService;

/// Connections for the front, handed over by the cores.
pub(crate) type Handoff = flume::Sender<std::net::TcpStream>;

/// A client's stream of requests: tonic's `Streaming`, or the JSON
/// gateway's body decoded message by message.
pub(crate) trait Asks<T>:
    futures_util::Stream<Item = Result<T, tonic::Status>> + Send + Unpin + 'static
{
}

impl<T, S> Asks<T> for S where
    S: futures_util::Stream<Item = Result<T, tonic::Status>> + Send + Unpin + 'static
{
}

/// Whether a connection's first four bytes are HTTP's (etcd's gRPC API or
/// its JSON gateway) rather than a keel frame's length.
pub(crate) fn is_http(first: [u8; 4]) -> bool {
    first[3] != 0
}

/// What the front takes from the server's settings.
#[derive(Debug, Clone)]
pub(crate) struct FrontSettings {
    /// The etcd version reported (`ServerConfig::etcd_version`).
    pub(crate) etcd_version: String,
    /// How often an idle watch that asked for progress notifications gets
    /// one (`Limits::watch_progress_interval`, etcd's 10 minutes).
    pub(crate) progress_notify_interval: std::time::Duration,
    /// Connections the front serves at once (`Limits::max_connections`);
    /// it closes those past it.
    pub(crate) max_connections: usize,
    /// Bytes the large answers of every connection hold together
    /// (`Limits::answer_bytes`; answer_room.rs).
    pub(crate) answer_bytes: usize,
    /// The largest answer (`Limits::outbound_bytes`).
    pub(crate) largest_answer: usize,
    /// How long a connection's large answer may wait for its client to
    /// read before the connection is closed (`Limits::stall_timeout`).
    pub(crate) stall_timeout: std::time::Duration,
    /// How often the shards this member leads are checked for corruption
    /// (`ServerConfig::corrupt_check_interval`; zero: never).
    pub(crate) corrupt_check_interval: std::time::Duration,
    /// TLS on the client port: every connection handed over begins a
    /// handshake.
    pub(crate) tls: Option<Arc<crate::tls::ServerTls>>,
    /// TLS on the metrics port (an https metrics URL).
    pub(crate) metrics_tls: Option<Arc<crate::tls::ServerTls>>,
    /// Users, roles and tokens (docs/security.md).
    pub(crate) auth: crate::auth::Auth,
}

/// How long a client has to finish its TLS handshake with the front.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Calls (HTTP/2 streams) open at once on one connection; past it, the
/// client waits (etcd's default is unbounded).
const MAX_STREAMS: u32 = 200;

/// Bytes HTTP/2 buffers per stream before the client's window takes them:
/// with [`MAX_STREAMS`], what a connection that does not read holds
/// besides its answers' rooms (answer_room.rs).
pub(crate) const MAX_SEND_BUFFER: usize = answer_room::PIECE_BYTES;

/// Connections handed over and not yet taken by the front. A core waits
/// while this many wait (its connection still counted among its own), so
/// what waits here is bounded by the cores' own caps.
const HANDOFF_CAPACITY: usize = 1024;

/// Starts the front on a thread of its own; answers where the cores hand
/// connections over, and the thread. The front stops when every
/// [`Handoff`] is dropped, and its connections with it; the thread then
/// lets go of the node (join it before shutting the node down).
///
/// # Errors
/// The thread or its runtime could not start.
pub(crate) fn start(
    node: Arc<Node>,
    client_address: std::net::SocketAddr,
    settings: FrontSettings,
    metrics_listener: Option<std::net::TcpListener>,
) -> std::io::Result<(Handoff, std::thread::JoinHandle<()>)> {
    let (handoff, arrived) = flume::bounded::<std::net::TcpStream>(HANDOFF_CAPACITY);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let metrics_listener = match metrics_listener {
        Some(listener) => {
            listener.set_nonblocking(true)?;
            let _entered = runtime.enter();
            Some(tokio::net::TcpListener::from_std(listener)?)
        }
        None => None,
    };
    let thread = std::thread::Builder::new()
        .name("keel-etcd".to_string())
        .spawn(move || {
            runtime.block_on(serve(
                arrived,
                node,
                client_address,
                settings,
                metrics_listener,
            ));
            // Dropping the runtime drops the connections' tasks, and the
            // node's last handle here.
            drop(runtime);
        })?;
    Ok((handoff, thread))
}

/// One of each service, shared by the gRPC routes and the JSON gateway.
#[derive(Clone)]
pub(crate) struct Services {
    pub(crate) kv: KvService,
    pub(crate) lease: LeaseService,
    pub(crate) maintenance: MaintenanceService,
    pub(crate) watch: WatchService,
    pub(crate) cluster: ClusterService,
    pub(crate) lock: LockService,
    pub(crate) election: ElectionService,
    pub(crate) auth: AuthService,
}

impl Services {
    fn new(
        cores: Cores,
        client_address: std::net::SocketAddr,
        settings: &FrontSettings,
    ) -> Services {
        let headers = Headers {
            cores: cores.clone(),
        };
        let cores_for_auth = cores.clone();
        Services {
            kv: KvService {
                cores: cores.clone(),
                headers: headers.clone(),
                rooms: AnswerRooms::new(settings.answer_bytes, settings.largest_answer),
                auth: settings.auth.clone(),
            },
            lease: LeaseService {
                cores: cores.clone(),
                headers: headers.clone(),
                auth: settings.auth.clone(),
            },
            maintenance: MaintenanceService {
                auth: settings.auth.clone(),
                cores: cores.clone(),
                headers: headers.clone(),
                etcd_version: settings.etcd_version.clone(),
                scans: Arc::new(tokio::sync::Semaphore::new(maintenance::CONCURRENT_SCANS)),
            },
            watch: WatchService {
                cores: cores.clone(),
                headers: headers.clone(),
                auth: settings.auth.clone(),
                progress_notify_interval: settings.progress_notify_interval,
                leaderless: {
                    let (lost, leaderless) = tokio::sync::watch::channel(false);
                    tokio::spawn(watch::leader_monitor(cores.clone(), lost));
                    leaderless
                },
            },
            cluster: ClusterService {
                auth: settings.auth.clone(),
                cores: cores.clone(),
                headers: headers.clone(),
                client_address,
            },
            lock: LockService {
                auth: settings.auth.clone(),
                cores: cores.clone(),
                headers: headers.clone(),
            },
            election: ElectionService {
                auth: settings.auth.clone(),
                cores,
                headers: headers.clone(),
            },
            auth: AuthService {
                headers,
                cores: cores_for_auth,
                auth: settings.auth.clone(),
            },
        }
    }
}

async fn serve(
    arrived: flume::Receiver<std::net::TcpStream>,
    node: Arc<Node>,
    client_address: std::net::SocketAddr,
    settings: FrontSettings,
    metrics_listener: Option<tokio::net::TcpListener>,
) {
    let calls = Arc::new(GrpcCalls::default());
    let sources = Sources {
        node: node.metrics(),
        calls: calls.clone(),
        etcd_version: settings.etcd_version.clone(),
    };
    let cores = Cores::new(node);
    tokio::spawn(corruption::check_periodically(
        cores.clone(),
        settings.corrupt_check_interval,
    ));
    let services = Services::new(cores.clone(), client_address, &settings);
    let routes = tonic::service::Routes::new(KvServer::new(services.kv.clone()))
        .add_service(LeaseServer::new(services.lease.clone()))
        .add_service(MaintenanceServer::new(services.maintenance.clone()))
        .add_service(WatchServer::new(services.watch.clone()))
        .add_service(ClusterServer::new(services.cluster.clone()))
        .add_service(LockServer::new(services.lock.clone()))
        .add_service(ElectionServer::new(services.election.clone()))
        .add_service(AuthServer::new(services.auth.clone()));
    let grpc = require_leader::refuse_marked_calls(
        routes.prepare().into_axum_router(),
        services.watch.leaderless.clone(),
    );
    let router = http::with_endpoints(grpc, cores.clone(), settings.etcd_version.clone());
    let router = metrics::with_metrics(router, sources.clone());
    let router = gateway::with_gateway(router, Arc::new(services));
    if let Some(listener) = metrics_listener {
        let endpoints = http::with_endpoints(Router::new(), cores, settings.etcd_version.clone());
        tokio::spawn(metrics::serve(
            listener,
            metrics::with_metrics(endpoints, sources),
            settings.metrics_tls.clone(),
        ));
    }

    let open = Arc::new(AtomicUsize::new(0));
    while let Ok(stream) = arrived.recv_async().await {
        if open.load(Ordering::Relaxed) >= settings.max_connections {
            tracing::warn!(
                max = settings.max_connections,
                "closing an etcd API connection past max_connections"
            );
            continue;
        }
        let stream = match stream
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpStream::from_std(stream))
        {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%error, "an etcd API connection could not be taken");
                continue;
            }
        };
        // The connection's one large answer, for its calls (answer_room.rs).
        let room = ConnectionRoom::new();
        // Unboxed wrappers around the whole router (a layer on the router
        // would box every route's service per connection): the calls carry
        // their connection's room, and a large answer's room goes with its
        // body (gRPC's and the gateway's).
        // ... and the common name of its client certificate (identity.rs).
        let (router, calls, carried) = (router.clone(), calls.clone(), room.clone());
        let service = move |name: PeerName| {
            hyper_util::service::TowerToHyperService::new(
                tower::ServiceBuilder::new()
                    .map_request(move |mut request: ::http::Request<hyper::body::Incoming>| {
                        request.extensions_mut().insert(carried.clone());
                        request.extensions_mut().insert(name.clone());
                        request
                    })
                    .service(CountCalls::new(
                        tower::ServiceBuilder::new()
                            .map_response(answer_room::hold_answer_rooms)
                            .service(router),
                        calls,
                    )),
            )
        };
        let counted = Counted::new(open.clone());
        let stall_timeout = settings.stall_timeout;
        let tls = settings.tls.clone();
        tokio::spawn(async move {
            let _counted = counted;
            let Some(tls) = tls else {
                let service = service(PeerName::default());
                return serve_connection(stream, service, room, stall_timeout).await;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
            let handshake = acceptor.accept(stream).into_fallible();
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(stream)) => {
                    let name = tls.user_of(stream.get_ref().1.peer_certificates());
                    let service = service(PeerName(name));
                    serve_connection(stream, service, room, stall_timeout).await
                }
                Ok(Err((error, stream))) => {
                    tracing::debug!(%error, "a TLS handshake failed");
                    close_after_refusal(stream).await;
                }
                Err(_) => tracing::debug!("a TLS handshake took too long"),
            }
        });
    }
}

/// Closes a connection whose TLS handshake was refused, after the alert:
/// its writing side ended, and what its client sends read and dropped for
/// a second at most, so that the client reads the alert rather than a
/// reset (`server::core`'s twin, for tokio).
async fn close_after_refusal(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if stream.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut dropped = [0u8; 4096];
        let mut left: usize = 64 << 10;
        while left > 0 {
            match stream.read(&mut dropped).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
}

/// Serves etcd's API on one connection (plain or TLS) until it ends, or
/// its client stops reading a large answer.
async fn serve_connection<IO, S, B>(
    stream: IO,
    service: S,
    room: Arc<ConnectionRoom>,
    stall_timeout: std::time::Duration,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    S: hyper::service::Service<
            ::http::Request<hyper::body::Incoming>,
            Response = ::http::Response<B>,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http2()
        .max_concurrent_streams(MAX_STREAMS)
        .max_send_buf_size(MAX_SEND_BUFFER);
    let served = builder.serve_connection(
        hyper_util::rt::TokioIo::new(BatchedWrites::new(stream)),
        service,
    );
    tokio::select! {
        served = served => {
            if let Err(error) = served {
                tracing::debug!(%error, "an etcd API connection ended");
            }
        }
        // Dropping the connection drops its answers, and their rooms.
        () = room.stalled(stall_timeout) => tracing::warn!(
            ?stall_timeout,
            "closing an etcd API connection whose client stopped reading a large answer"
        ),
    }
}

/// One of the front's open connections, counted while it lives.
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(open: Arc<AtomicUsize>) -> Counted {
        open.fetch_add(1, Ordering::Relaxed);
        Counted(open)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
