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

mod auth;
mod cluster;
mod convert;
mod cores;
mod election;
mod errors;
mod header;
mod http;
mod kv;
mod lease;
mod lock;
mod maintenance;
mod watch;

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

use self::auth::AuthService;
use self::cluster::ClusterService;
use self::cores::Cores;
use self::election::ElectionService;
use self::header::Headers;
use self::kv::KvService;
use self::lease::LeaseService;
use self::lock::LockService;
use self::maintenance::MaintenanceService;
use self::watch::WatchService;

/// Connections for the front, handed over by the cores.
pub(crate) type Handoff = flume::Sender<std::net::TcpStream>;

/// Whether a connection's first four bytes are HTTP's (etcd's gRPC API or
/// its JSON gateway) rather than a keel frame's length.
pub(crate) fn is_http(first: [u8; 4]) -> bool {
    first[3] != 0
}

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
) -> std::io::Result<(Handoff, std::thread::JoinHandle<()>)> {
    let (handoff, arrived) = flume::unbounded::<std::net::TcpStream>();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let thread = std::thread::Builder::new()
        .name("keel-etcd".to_string())
        .spawn(move || {
            runtime.block_on(serve(arrived, node, client_address));
            // Dropping the runtime drops the connections' tasks, and the
            // node's last handle here.
            drop(runtime);
        })?;
    Ok((handoff, thread))
}

async fn serve(
    arrived: flume::Receiver<std::net::TcpStream>,
    node: Arc<Node>,
    client_address: std::net::SocketAddr,
) {
    let cores = Cores::new(node);
    let headers = Headers {
        cores: cores.clone(),
    };
    let routes = tonic::service::Routes::new(KvServer::new(KvService {
        cores: cores.clone(),
        headers: headers.clone(),
    }))
    .add_service(LeaseServer::new(LeaseService {
        cores: cores.clone(),
        headers: headers.clone(),
    }))
    .add_service(MaintenanceServer::new(MaintenanceService {
        cores: cores.clone(),
        headers: headers.clone(),
    }))
    .add_service(WatchServer::new(WatchService {
        cores: cores.clone(),
        headers: headers.clone(),
    }))
    .add_service(ClusterServer::new(ClusterService {
        cores: cores.clone(),
        headers: headers.clone(),
        client_address,
    }))
    .add_service(LockServer::new(LockService {
        cores: cores.clone(),
        headers: headers.clone(),
    }))
    .add_service(ElectionServer::new(ElectionService {
        cores: cores.clone(),
        headers: headers.clone(),
    }))
    .add_service(AuthServer::new(AuthService { headers }));
    let router = http::with_endpoints(routes.prepare().into_axum_router(), cores);
    while let Ok(stream) = arrived.recv_async().await {
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
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let served =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            if let Err(error) = served {
                tracing::debug!(%error, "an etcd API connection ended");
            }
        });
    }
}
