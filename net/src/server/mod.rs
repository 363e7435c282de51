//! The keel server: a [`Node`] whose cores also serve clients over the
//! protocol of `net/PROTOCOL.md` (docs/server.md).
//!
//! Every core accepts on the shared client port (SO_REUSEPORT: the kernel
//! spreads connections over the cores) and on its own port, which the
//! shard-aware client uses to reach the core that owns a shard directly.
//! A connection is served on the core that accepted it; a request for a
//! shard on another core crosses the node's mesh once.

mod alarm;
pub(crate) mod answers;
mod budget;
mod config;
mod connection;
mod convert;
mod core;
mod dispatch;
mod frame_queue;
mod heavy_answers;
mod leader;
mod members;
mod outbound;
mod permits;
mod status;
mod watch;
mod watch_group;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use keel_engine::hlc::{SystemClock, WallClock};
use keel_engine::shard::{Node, NodeConfig};

pub use self::config::{ConfigError, Limits, Overrides, ServerConfig, DEFAULT_CORE_PORT_BASE};
use self::core::{Bound, CoreContext, ServerInfo};

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The node (storage, shards) failed to start.
    #[error(transparent)]
    Node(#[from] keel_engine::shard::NodeError),
    /// A listener could not be bound.
    #[error("cannot listen on {address}: {error}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
    /// The settings describe no cluster this member can be in.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A member joining a running cluster could not learn it.
    #[error("cannot join the cluster: {0}")]
    Join(String),
    /// A core went away while the server was starting.
    #[error("core {0} stopped while the server was starting")]
    CoreGone(usize),
    /// etcd's API front could not start.
    #[error("cannot start etcd's API: {0}")]
    EtcdApi(std::io::Error),
    /// The TLS files cannot be used.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// A running server. [`Server::shutdown`] (or dropping it) stops it.
pub struct Server {
    node: Option<Arc<Node>>,
    /// Dropping these tells each core to stop serving.
    stop: Vec<flume::Sender<()>>,
    /// Disconnects once every core has stopped serving.
    served: flume::Receiver<()>,
    client_address: SocketAddr,
    core_addresses: Vec<SocketAddr>,
    /// etcd's API front (`crate::etcd`): it ends once every core stopped.
    etcd_front: Option<std::thread::JoinHandle<()>>,
    /// Where the metrics endpoint listens, if it was asked for.
    metrics_address: Option<SocketAddr>,
}

/// How long a joining member waits for each member it asks.
const JOIN_ASK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// For `--initial-cluster-state existing`: a directory that exists was
/// created for its cluster and says which; an empty one learns the cluster
/// from the first member of `--initial-cluster` that answers
/// (`peer::join`), which must list this member (added with `member add`).
fn join_cluster(
    config: &ServerConfig,
    node_config: &mut NodeConfig,
    peer_tls: Option<&crate::tls::ServerTls>,
) -> Result<(), ServerError> {
    if let Some((_, created)) = keel_engine::shard::recorded_cluster(&config.data_dir)? {
        node_config.cluster = created;
        return Ok(());
    }
    let initial = keel_engine::shard::Cluster::parse_initial(&config.cluster.initial_cluster)
        .map_err(ServerError::Join)?;
    let mut failures = Vec::new();
    for (name, address) in initial.iter().filter(|(name, _)| *name != config.name) {
        let tls = peer_tls.and_then(crate::tls::ServerTls::peer_client_config);
        match crate::peer::join::ask(address, &config.name, JOIN_ASK_TIMEOUT, tls) {
            Ok(answer) => {
                let cores = usize::from(answer.cores);
                if node_config.cores != 0 && node_config.cores != cores {
                    return Err(ServerError::Join(format!(
                        "the cluster's members run {cores} cores, this one was given {}: give \
                         --cores {cores} or leave it out",
                        node_config.cores
                    )));
                }
                if node_config.shards != 0 && node_config.shards != usize::from(answer.shards) {
                    return Err(ServerError::Join(format!(
                        "the cluster has {} shards, this member was given {}",
                        answer.shards, node_config.shards
                    )));
                }
                tracing::info!(from = %name, member = %format!("{:x}", answer.list.me), "joining the cluster");
                node_config.cores = cores;
                node_config.shards = usize::from(answer.shards);
                node_config.cluster = answer.created;
                node_config.joining = Some(answer.list);
                return Ok(());
            }
            Err(error) => failures.push(format!("{name}: {error}")),
        }
    }
    Err(ServerError::Join(if failures.is_empty() {
        "--initial-cluster names no other member to ask".to_string()
    } else {
        failures.join("; ")
    }))
}

/// Refuses ports another server listens on. glommio binds with
/// SO_REUSEPORT, so a second server of the same user would otherwise bind
/// the same ports and the kernel would split clients between two data
/// directories. A connection attempt finds a listener; a plain bind would
/// also fail on the sockets of connections a previous run left closing.
/// Port 0 is picked by the system and needs no check.
///
/// A listener that stops answering within [`TAKEN_PORT_GRACE`] is let be:
/// a server killed a moment ago can leave its listener accepting for a
/// while after its process is gone (seen when a cluster test restarted
/// every member at once), and a restart must not fail on it.
fn refuse_taken_ports(
    client: SocketAddr,
    own: impl Iterator<Item = SocketAddr>,
) -> Result<(), ServerError> {
    for address in std::iter::once(client).chain(own) {
        if address.port() == 0 {
            continue;
        }
        let mut target = address;
        if target.ip().is_unspecified() {
            target.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let since = std::time::Instant::now();
        while std::net::TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok() {
            if since.elapsed() >= TAKEN_PORT_GRACE {
                let error = std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another server is listening there",
                );
                return Err(ServerError::Bind { address, error });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// How long a port may go on answering before it is taken to be another
/// server's (`refuse_taken_ports`).
const TAKEN_PORT_GRACE: Duration = Duration::from_secs(2);

impl Server {
    /// Starts the node, then binds every core's listeners, then starts
    /// accepting: once this returns, the addresses answer.
    ///
    /// # Errors
    /// [`ServerError`] naming what failed; nothing keeps running.
    pub fn start(config: ServerConfig) -> Result<Server, ServerError> {
        Server::start_with_clock(config, Arc::new(SystemClock))
    }

    /// [`Server::start`], with revisions stamped from `clock` instead of
    /// the system's (tests freeze it).
    ///
    /// # Errors
    /// As [`Server::start`].
    pub fn start_with_clock(
        config: ServerConfig,
        clock: Arc<dyn WallClock>,
    ) -> Result<Server, ServerError> {
        let mut node_config = NodeConfig::new(&config.data_dir);
        node_config.shards = config.shards;
        node_config.cores = config.cores;
        node_config.pin = config.pin;
        node_config.clock = clock;
        node_config.quota_backend_bytes = config.quota_backend_bytes;
        node_config.cluster = config.cluster.cluster(&config.name)?;
        let peer_tls = match config.peer_tls.files("peer-")? {
            Some(files) => Some(crate::tls::ServerTls::start_peer(files)?),
            None => None,
        };
        if config.cluster.joins() {
            join_cluster(&config, &mut node_config, peer_tls.as_deref())?;
        }
        if config.cluster.has_peers() {
            // As many cores as the node may run (it runs no more than its
            // shards): each has a peer port.
            let cores = match node_config.cores {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                cores => cores,
            };
            let peer_ports = (0..cores).map(|core| {
                let mut address = config.cluster.listen_peer;
                address.set_port(address.port().saturating_add(core as u16));
                address
            });
            refuse_taken_ports(config.cluster.listen_peer, peer_ports)?;
            node_config.transport = Some(Arc::new(crate::peer::PeerTransport {
                listen: config.cluster.listen_peer,
                snapshot_send_rate: config.cluster.snapshot_send_rate,
                tls: peer_tls,
            }));
        }
        let client_tls = match config.client_tls.files("")? {
            Some(files) => Some(crate::tls::ServerTls::start_client(files)?),
            None => None,
        };
        let node = Arc::new(Node::start(node_config)?);
        let auth = crate::auth::Auth::new(node.auth_view(), config.auth.clone())
            .map_err(|e| ServerError::Config(config::ConfigError::Invalid(e)))?;
        let cores = node.core_count();
        let own_address = |core: usize| {
            let port = match config.core_port_base {
                0 => 0,
                base => base.saturating_add(core as u16),
            };
            SocketAddr::new(config.client_address.ip(), port)
        };
        refuse_taken_ports(config.client_address, (0..cores).map(own_address))?;
        let (served_in, served) = flume::bounded::<()>(0);
        let mut server = Server {
            node: Some(node.clone()),
            stop: Vec::with_capacity(cores),
            served,
            client_address: config.client_address,
            core_addresses: Vec::with_capacity(cores),
            etcd_front: None,
            metrics_address: None,
        };
        let mut go = Vec::with_capacity(cores);
        let mut failure = None;
        for core in 0..cores {
            // Core 0 may be asked for port 0; the others then share the
            // port it got.
            let client_address = server.client_address;
            let own = own_address(core);
            let (bound_out, bound) = flume::bounded(1);
            let (go_in, go_out) = flume::bounded::<(Arc<ServerInfo>, crate::etcd::Handoff)>(1);
            let (stop_in, stop_out) = flume::bounded::<()>(0);
            let task_node = node.clone();
            let served_in = served_in.clone();
            let limits = config.limits;
            let tls = client_tls.clone();
            let auth = auth.clone();
            let spawned = node.spawn_on(
                core,
                Box::new(move || {
                    Box::pin(async move {
                        let listeners = Bound::bind(client_address, own);
                        let listeners = listeners.and_then(|l| match l.addresses() {
                            Ok(addresses) => Ok((addresses, l)),
                            Err(error) => Err((own, error)),
                        });
                        let listeners = match listeners {
                            Ok((addresses, listeners)) => {
                                let _ = bound_out.send(Ok(addresses));
                                listeners
                            }
                            Err(error) => {
                                let _ = bound_out.send(Err(error));
                                return;
                            }
                        };
                        let Ok((info, etcd)) = go_out.recv_async().await else {
                            return;
                        };
                        let ctx = Rc::new(CoreContext {
                            node: task_node,
                            core,
                            limits,
                            info,
                            watch_groups: Default::default(),
                            inbound: budget::ByteBudget::new(limits.inbound_bytes),
                            answers: budget::ByteBudget::new(limits.answer_bytes),
                            heavy_answers: heavy_answers::HeavyAnswers::new(),
                            etcd,
                            tls,
                            auth,
                            compiled_auth: Default::default(),
                        });
                        let stopped = async {
                            let _ = stop_out.recv_async().await;
                        };
                        futures_lite::future::or(core::serve(listeners, ctx), stopped).await;
                        // Every connection is dropped by now, and with
                        // them every handle on the node but the server's.
                        drop(served_in);
                    })
                }),
            );
            if let Err(error) = spawned {
                failure = Some(error.into());
                break;
            }
            server.stop.push(stop_in);
            go.push(go_in);
            match bound.recv() {
                Ok(Ok((client, own))) => {
                    server.client_address = client;
                    server.core_addresses.push(own);
                }
                Ok(Err((address, error))) => {
                    failure = Some(ServerError::Bind { address, error });
                    break;
                }
                Err(_) => {
                    failure = Some(ServerError::CoreGone(core));
                    break;
                }
            }
        }
        drop(served_in);
        if let Some(failure) = failure {
            // Cores waiting for the go-ahead end now, dropping their
            // handles on the node; `server`, dropped on return, then
            // shuts the node down here.
            drop(go);
            drop(node);
            return Err(failure);
        }
        let front = crate::etcd::FrontSettings {
            etcd_version: config.etcd_version.clone(),
            progress_notify_interval: config.limits.watch_progress_interval,
            max_connections: config.limits.max_connections,
            answer_bytes: config.limits.answer_bytes,
            largest_answer: config.limits.outbound_bytes,
            stall_timeout: config.limits.stall_timeout,
            corrupt_check_interval: config.corrupt_check_interval,
            tls: client_tls.clone(),
            metrics_tls: client_tls.clone().filter(|_| config.metrics_tls),
            auth: auth.clone(),
        };
        let info = Arc::new(ServerInfo {
            member_id: node.client().member_id(),
            name: config.name,
            client_address: server.client_address,
            core_ports: server.core_addresses.iter().map(SocketAddr::port).collect(),
        });
        let metrics_listener = match config.listen_metrics {
            None => None,
            Some(address) => Some(
                std::net::TcpListener::bind(address)
                    .map_err(|error| ServerError::Bind { address, error })?,
            ),
        };
        server.metrics_address = match &metrics_listener {
            Some(listener) => Some(listener.local_addr().map_err(ServerError::EtcdApi)?),
            None => None,
        };
        // etcd's API, on the same port (src/etcd/), now that it is known.
        let (etcd, etcd_front) =
            crate::etcd::start(node.clone(), server.client_address, front, metrics_listener)
                .map_err(ServerError::EtcdApi)?;
        server.etcd_front = Some(etcd_front);
        for core_go in go {
            let _ = core_go.send((info.clone(), etcd.clone()));
        }
        drop(etcd);
        tracing::info!(
            client = %server.client_address,
            cores = ?server.core_addresses,
            shards = node.shard_count(),
            "serving clients"
        );
        Ok(server)
    }

    /// The address every core accepts clients on.
    pub fn client_address(&self) -> SocketAddr {
        self.client_address
    }

    /// Where `/metrics` is served besides the client port
    /// (`ServerConfig::listen_metrics`), if anywhere.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics_address
    }

    /// Each core's own address, by core.
    pub fn core_addresses(&self) -> &[SocketAddr] {
        &self.core_addresses
    }

    /// The node underneath (for tests and embedding).
    pub fn node(&self) -> Option<&Node> {
        self.node.as_deref()
    }

    /// Stops accepting, closes every connection, then shuts the node down
    /// (each shard syncs its tree and closes its WAL).
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.clear();
        // Each core drops its handles on the node when it stops serving;
        // wait for all of them so that the node is shut down here, on this
        // thread, and not by the last core to let go (which would wait
        // for itself).
        let _ = self.served.recv_timeout(Duration::from_secs(30));
        // The cores let go of their handoffs to etcd's front: it ends, and
        // lets go of the node.
        if let Some(front) = self.etcd_front.take() {
            // Bounded: a core that never stopped still holds its handoff.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !front.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if front.is_finished() {
                let _ = front.join();
            }
        }
        // The front's work on the cores (watches, lock waits) hears that
        // the front is gone when next polled, and lets go of the node then.
        if let Some(node) = &self.node {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while Arc::strong_count(node) > 1 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if let Some(node) = self.node.take() {
            match Arc::try_unwrap(node) {
                Ok(node) => node.shutdown(),
                Err(node) => {
                    tracing::error!("a core still holds the node; leaving it running");
                    std::mem::forget(node);
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_now();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod taken_port_tests {
    use super::*;

    fn free_listener() -> (std::net::TcpListener, SocketAddr) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        (listener, address)
    }

    #[test]
    fn a_port_another_server_keeps_is_refused() {
        let (_listener, address) = free_listener();
        let refused = refuse_taken_ports(address, std::iter::empty());
        assert!(
            matches!(refused, Err(ServerError::Bind { .. })),
            "{refused:?}"
        );
    }

    #[test]
    fn a_listener_that_goes_away_soon_is_let_be() {
        let (listener, address) = free_listener();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            drop(listener);
        });
        assert!(refuse_taken_ports(address, std::iter::empty()).is_ok());
        closer.join().unwrap();
    }
}
