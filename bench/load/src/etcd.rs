//! A minimal client of etcd's v3 gRPC API: the calls the workloads make,
//! over one HTTP/2 connection, with keep-alives and watches multiplexed
//! the way etcd's Go client multiplexes them.
//!
//! The messages and clients are keel's definitions of etcd's API
//! (`keel-etcd-api`, the same ones keel serves).
//!
//! Streams: etcd's Go client renews every lease of a connection over one
//! `LeaseKeepAlive` stream, and puts the watches of a connection on one
//! `Watch` stream (per context). [`KeepAliveMux`] and [`WatchMux`] do the
//! same: one task owns a stream and hands each answer to whoever waits for
//! it, by lease id or watch id.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context as _, Result};
use hyper_util::rt::TokioIo;
use keel_write_batching::BatchedWrites;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Channel, Endpoint};

pub use keel_etcd_api::{etcdserverpb, mvccpb};

/// A connection's byte stream: plain TCP or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

use etcdserverpb::kv_client::KvClient;
use etcdserverpb::lease_client::LeaseClient;
use etcdserverpb::watch_client::WatchClient;
use etcdserverpb::watch_request::RequestUnion;
use etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest, RangeRequest,
    RangeResponse, WatchCreateRequest, WatchRequest, WatchResponse,
};

/// One HTTP/2 connection to an etcd member, with its lease keep-alive
/// stream and its shared watch stream.
pub struct EtcdConnection {
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    watch: WatchClient<Channel>,
    keep_alives: KeepAliveMux,
    shared_watches: WatchMux,
}

impl EtcdConnection {
    /// Opens one connection to `address` (`host:port`), over TLS with
    /// `tls` if given (a configuration offering HTTP/2).
    ///
    /// # Errors
    /// When the address is malformed or nothing answers there.
    pub async fn connect(
        address: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<EtcdConnection> {
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .with_context(|| format!("an etcd address is host:port, not {address:?}"))?;
        // The load generator must not be what limits the server: its
        // requests leave in batches (one write for those its tasks queue in
        // one turn), as the server's answers do.
        // Over TLS, the batching is above it: few, full records.
        let target = address.to_string();
        let channel = endpoint
            .connect_with_connector(tower::service_fn(move |_| {
                let (target, tls) = (target.clone(), tls.clone());
                async move {
                    let stream = tokio::net::TcpStream::connect(&target).await?;
                    stream.set_nodelay(true)?;
                    let stream: Box<dyn Io> = match tls {
                        None => Box::new(stream),
                        Some(tls) => {
                            let name = keel_client::tls::server_name(&target)
                                .map_err(std::io::Error::other)?;
                            Box::new(
                                tokio_rustls::TlsConnector::from(tls)
                                    .connect(name, stream)
                                    .await?,
                            )
                        }
                    };
                    Ok::<_, std::io::Error>(TokioIo::new(BatchedWrites::new(stream)))
                }
            }))
            .await
            .with_context(|| format!("connect to etcd at {address}"))?;
        let lease = LeaseClient::new(channel.clone());
        let watch = WatchClient::new(channel.clone());
        Ok(EtcdConnection {
            kv: KvClient::new(channel),
            keep_alives: KeepAliveMux::start(lease.clone()),
            shared_watches: WatchMux::start(watch.clone()),
            lease,
            watch,
        })
    }

    /// A range read.
    ///
    /// # Errors
    /// When etcd fails the call.
    pub async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        Ok(self.kv.clone().range(request).await?.into_inner())
    }

    /// A put.
    ///
    /// # Errors
    /// When etcd fails the call.
    pub async fn put(&self, request: PutRequest) -> Result<()> {
        self.kv.clone().put(request).await?;
        Ok(())
    }

    /// Grants a lease of `ttl` seconds; answers its id.
    ///
    /// # Errors
    /// When etcd fails the call or refuses the lease.
    pub async fn lease_grant(&self, ttl: i64) -> Result<i64> {
        let answer = self
            .lease
            .clone()
            .lease_grant(LeaseGrantRequest { ttl, id: 0 })
            .await?
            .into_inner();
        if !answer.error.is_empty() {
            bail!("etcd refused the lease: {}", answer.error);
        }
        Ok(answer.id)
    }

    /// Revokes lease `id`, deleting the keys attached to it.
    ///
    /// # Errors
    /// When etcd fails the call (the lease not found among others).
    pub async fn lease_revoke(&self, id: i64) -> Result<()> {
        self.lease
            .clone()
            .lease_revoke(LeaseRevokeRequest { id })
            .await?;
        Ok(())
    }

    /// Renews lease `id` once over the connection's keep-alive stream;
    /// answers the TTL etcd gives it (0 or less: the lease is gone).
    ///
    /// # Errors
    /// When the stream fails.
    pub async fn keep_alive(&self, id: i64) -> Result<i64> {
        self.keep_alives.renew(id).await
    }

    /// Watches `[key, range_end)` from now on. On `shared`, the watch goes
    /// on the connection's one watch stream; otherwise it opens a stream of
    /// its own. The watch is in place when this returns.
    ///
    /// # Errors
    /// When the stream fails or etcd refuses the watch.
    pub async fn watch(&self, key: &[u8], range_end: &[u8], shared: bool) -> Result<EtcdWatch> {
        let request = WatchCreateRequest {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            ..WatchCreateRequest::default()
        };
        if shared {
            let answers = self.shared_watches.create(request).await?;
            Ok(EtcdWatch {
                answers,
                _own_stream: None,
            })
        } else {
            let stream = WatchMux::start(self.watch.clone());
            let answers = stream.create(request).await?;
            Ok(EtcdWatch {
                answers,
                _own_stream: Some(stream),
            })
        }
    }
}

/// One watch's answers.
pub struct EtcdWatch {
    answers: mpsc::UnboundedReceiver<WatchResponse>,
    /// The stream this watch has to itself, if any: dropping it ends the
    /// stream.
    _own_stream: Option<WatchMux>,
}

impl EtcdWatch {
    /// The next answer of this watch.
    ///
    /// # Errors
    /// When the stream ends or etcd cancels the watch.
    pub async fn next(&mut self) -> Result<WatchResponse> {
        let answer = self
            .answers
            .recv()
            .await
            .ok_or_else(|| anyhow!("the watch stream ended"))?;
        if answer.canceled {
            bail!("etcd canceled the watch: {}", answer.cancel_reason);
        }
        Ok(answer)
    }
}

/// Who waits for what on a stream; `closed` once the stream has ended, so
/// that nobody starts waiting on a stream that will never answer.
struct Waiting<T> {
    closed: bool,
    waiters: T,
}

type KeepAliveWaiters = Waiting<HashMap<i64, VecDeque<oneshot::Sender<i64>>>>;

/// One `LeaseKeepAlive` stream shared by every lease of a connection.
/// Invariant: a renewal's waiter is queued before its request is sent, and
/// etcd answers a stream's renewals of one lease in order.
struct KeepAliveMux {
    requests: mpsc::UnboundedSender<LeaseKeepAliveRequest>,
    waiting: Arc<Mutex<KeepAliveWaiters>>,
    task: tokio::task::JoinHandle<()>,
}

impl KeepAliveMux {
    /// Opens the stream in a task of its own. etcd sends the stream's
    /// headers with its first answer, so nobody waits for the opening:
    /// requests queue until the stream is up.
    fn start(client: LeaseClient<Channel>) -> KeepAliveMux {
        let (requests, queued) = mpsc::unbounded_channel();
        let waiting = Arc::new(Mutex::new(Waiting {
            closed: false,
            waiters: HashMap::new(),
        }));
        let task = tokio::spawn(Self::route(client, queued, waiting.clone()));
        KeepAliveMux {
            requests,
            waiting,
            task,
        }
    }

    async fn route(
        mut client: LeaseClient<Channel>,
        queued: mpsc::UnboundedReceiver<LeaseKeepAliveRequest>,
        waiting: Arc<Mutex<KeepAliveWaiters>>,
    ) {
        if let Ok(answers) = client
            .lease_keep_alive(UnboundedReceiverStream::new(queued))
            .await
        {
            let mut answers = answers.into_inner();
            while let Ok(Some(answer)) = answers.message().await {
                let Ok(mut waiting) = waiting.lock() else {
                    break;
                };
                let waiter = waiting
                    .waiters
                    .get_mut(&answer.id)
                    .and_then(VecDeque::pop_front);
                if let Some(waiter) = waiter {
                    // The renewer may have given up; nothing to do then.
                    let _ = waiter.send(answer.ttl);
                }
            }
        }
        // Dropping the waiters tells each the stream has ended.
        if let Ok(mut waiting) = waiting.lock() {
            waiting.closed = true;
            waiting.waiters.clear();
        }
    }

    async fn renew(&self, id: i64) -> Result<i64> {
        let (answer, answered) = oneshot::channel();
        {
            let mut waiting = waiting_lock(&self.waiting)?;
            if waiting.closed {
                bail!("the keep-alive stream has ended");
            }
            waiting.waiters.entry(id).or_default().push_back(answer);
        }
        self.requests
            .send(LeaseKeepAliveRequest { id })
            .map_err(|_| anyhow!("the keep-alive stream has ended"))?;
        answered
            .await
            .map_err(|_| anyhow!("the keep-alive stream ended before lease {id:x} was renewed"))
    }
}

impl Drop for KeepAliveMux {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a watch stream's router tracks: the creations waiting for their
/// `created` answer (etcd answers them in order), and where each created
/// watch's answers go.
struct WatchRoutes {
    creating: VecDeque<oneshot::Sender<Result<mpsc::UnboundedReceiver<WatchResponse>>>>,
    watches: HashMap<i64, mpsc::UnboundedSender<WatchResponse>>,
}

/// One `Watch` stream carrying any number of watches.
struct WatchMux {
    requests: mpsc::UnboundedSender<WatchRequest>,
    routes: Arc<Mutex<Waiting<WatchRoutes>>>,
    task: tokio::task::JoinHandle<()>,
}

impl WatchMux {
    fn start(client: WatchClient<Channel>) -> WatchMux {
        let (requests, queued) = mpsc::unbounded_channel();
        let routes = Arc::new(Mutex::new(Waiting {
            closed: false,
            waiters: WatchRoutes {
                creating: VecDeque::new(),
                watches: HashMap::new(),
            },
        }));
        let task = tokio::spawn(Self::route(client, queued, routes.clone()));
        WatchMux {
            requests,
            routes,
            task,
        }
    }

    async fn route(
        mut client: WatchClient<Channel>,
        queued: mpsc::UnboundedReceiver<WatchRequest>,
        routes: Arc<Mutex<Waiting<WatchRoutes>>>,
    ) {
        if let Ok(answers) = client.watch(UnboundedReceiverStream::new(queued)).await {
            let mut answers = answers.into_inner();
            while let Ok(Some(answer)) = answers.message().await {
                let Ok(mut routes) = routes.lock() else {
                    break;
                };
                let routes = &mut routes.waiters;
                if answer.created {
                    let Some(creator) = routes.creating.pop_front() else {
                        continue;
                    };
                    if answer.canceled {
                        let reason = answer.cancel_reason;
                        let _ = creator.send(Err(anyhow!("etcd refused the watch: {reason}")));
                        continue;
                    }
                    let (sender, receiver) = mpsc::unbounded_channel();
                    routes.watches.insert(answer.watch_id, sender);
                    let _ = creator.send(Ok(receiver));
                } else if let Some(watch) = routes.watches.get(&answer.watch_id) {
                    let id = answer.watch_id;
                    let canceled = answer.canceled;
                    if watch.send(answer).is_err() || canceled {
                        routes.watches.remove(&id);
                    }
                }
            }
        }
        if let Ok(mut routes) = routes.lock() {
            routes.closed = true;
            routes.waiters.creating.clear();
            routes.waiters.watches.clear();
        }
    }

    async fn create(
        &self,
        request: WatchCreateRequest,
    ) -> Result<mpsc::UnboundedReceiver<WatchResponse>> {
        let (answer, answered) = oneshot::channel();
        {
            let mut routes = waiting_lock(&self.routes)?;
            if routes.closed {
                bail!("the watch stream has ended");
            }
            routes.waiters.creating.push_back(answer);
            // Sent under the lock: creations go out in the order their
            // waiters were queued, which is the order etcd answers them.
            self.requests
                .send(WatchRequest {
                    request_union: Some(RequestUnion::CreateRequest(request)),
                })
                .map_err(|_| anyhow!("the watch stream has ended"))?;
        }
        answered
            .await
            .map_err(|_| anyhow!("the watch stream ended before the watch was created"))?
    }
}

impl Drop for WatchMux {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn waiting_lock<T>(waiting: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    waiting
        .lock()
        .map_err(|_| anyhow!("a stream's router panicked"))
}
