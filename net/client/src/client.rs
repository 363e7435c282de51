//! The client: endpoints, the shard map, and the calls.
//!
//! On connect it asks any endpoint for its status, which carries the
//! shard map: S shards served by C cores, shard `s` by core `s % C`, each
//! core on its own port. A request whose keys all live on one shard goes
//! to that shard's core directly; anything else (a range over every
//! shard, leases, status) goes to the client port. Connections are opened
//! lazily and reopened after a failure; a request in flight on a
//! connection that fails gets [`Error::Disconnected`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use keel_proto::routing::prefix_end;

/// The key and range end of every key starting with `prefix`. The empty
/// prefix is every key: `("\0", "\0")`, as etcd's `WithPrefix` makes it
/// (an empty key alone is refused).
pub fn prefix_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        return (vec![0], vec![0]);
    }
    (prefix.to_vec(), prefix_end(prefix))
}
use keel_proto::routing::{core_of, home_of_lease, shard_of, shard_of_range};
use keel_proto::{
    AlarmAction, AlarmMember, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, Request, Response, ResponseBody, Revision, Status, TxnRequest,
    TxnResponse,
};
use tokio::sync::Mutex as AsyncMutex;

use crate::connection::{Connection, Subscription};
use crate::error::{Error, Result};

/// Where requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ShardMap {
    shards: usize,
    /// `host:port` of each core's own listener, by core.
    cores: Vec<String>,
}

/// How a [`Client`] connects ([`Client::connect_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// How long a connection may take to open (etcd's dial timeout).
    pub connect_timeout: Duration,
    /// Idle time before the kernel probes a connection, and the time
    /// between probes: a peer gone silent is found out in about
    /// `keepalive_time + 9 * keepalive_interval`.
    pub keepalive_time: Duration,
    /// See `keepalive_time`.
    pub keepalive_interval: Duration,
    /// How long a call (a request and its answer) may take before it
    /// fails with [`Error::Timeout`]; `None` waits as long as it takes.
    /// (A watch's stream and a lease keep-alive have their own rules.)
    pub request_timeout: Option<Duration>,
    /// After a core's port could not be reached, calls go through the
    /// client port for this long before the core's port is tried again
    /// (doubling, up to 64 times this, while it keeps failing).
    pub core_retry: Duration,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            connect_timeout: Duration::from_secs(2),
            keepalive_time: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(5),
            request_timeout: Some(Duration::from_secs(30)),
            core_retry: Duration::from_secs(1),
        }
    }
}

/// A core's port that could not be reached: not before `retry_at`, and
/// how long to wait after the next failure.
#[derive(Debug, Clone, Copy)]
struct Unreachable {
    retry_at: Instant,
    backoff: Duration,
}

struct Inner {
    endpoints: Vec<String>,
    options: ClientOptions,
    /// Cores whose port could not be reached lately, by core.
    unreachable: Mutex<Vec<Option<Unreachable>>>,
    map: Mutex<ShardMap>,
    /// The connection to the client port, with the endpoint it reached.
    main: AsyncMutex<Option<(Connection, String)>>,
    /// Connections to each core's port, by core, each with the generation
    /// of the shard map it was opened for. Looked up by every call, so a
    /// plain mutex, never held across an await.
    direct: Mutex<Vec<Option<(u64, Connection)>>>,
    /// Counts changes of the shard map: a connection opened for an older
    /// map (say while the map changed) is not used.
    map_generation: AtomicU64,
    /// Held while a connection to a core's port opens, so that calls that
    /// find none open one, not one each.
    opening: AsyncMutex<()>,
    next_id: AtomicU64,
}

/// A handle on a keel server. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// Where a request should go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// The client port.
    Any,
    /// The core that serves this shard.
    Shard(usize),
}

impl Client {
    /// Connects to the first endpoint (`host:port`) that answers and
    /// learns the shard map from it.
    ///
    /// # Errors
    /// [`Error::Connect`] when none answers.
    pub async fn connect<S: AsRef<str>>(endpoints: &[S]) -> Result<Client> {
        Client::connect_with(endpoints, ClientOptions::default()).await
    }

    /// [`Client::connect`] with `options`.
    ///
    /// # Errors
    /// [`Error::Connect`] when none answers.
    pub async fn connect_with<S: AsRef<str>>(
        endpoints: &[S],
        options: ClientOptions,
    ) -> Result<Client> {
        let endpoints: Vec<String> = endpoints.iter().map(|e| e.as_ref().to_string()).collect();
        if endpoints.is_empty() {
            return Err(Error::InvalidRequest("no endpoints given".to_string()));
        }
        let client = Client {
            inner: Arc::new(Inner {
                endpoints,
                options,
                unreachable: Mutex::new(Vec::new()),
                map: Mutex::new(ShardMap {
                    shards: 1,
                    cores: Vec::new(),
                }),
                main: AsyncMutex::new(None),
                direct: Mutex::new(Vec::new()),
                map_generation: AtomicU64::new(0),
                opening: AsyncMutex::new(()),
                next_id: AtomicU64::new(1),
            }),
        };
        client.refresh_shard_map().await?;
        Ok(client)
    }

    /// Asks the server for its status and routes by the shard map in it.
    ///
    /// # Errors
    /// As any call.
    pub async fn refresh_shard_map(&self) -> Result<Status> {
        let status = self.status().await?;
        let host = self.main_host().await;
        let map = ShardMap {
            shards: (status.shards as usize).max(1),
            cores: status
                .core_ports
                .iter()
                .map(|port| format!("{host}:{port}"))
                .collect(),
        };
        let changed = {
            let mut current = self.inner.map.lock().map_err(|_| Error::Disconnected)?;
            let changed = *current != map;
            if changed {
                self.inner.map_generation.fetch_add(1, Ordering::AcqRel);
            }
            *current = map;
            changed
        };
        if changed {
            if let Ok(mut direct) = self.inner.direct.lock() {
                direct.clear();
            }
        }
        Ok(status)
    }

    /// The host of the endpoint the main connection reached: the cores'
    /// own ports are on the same host.
    async fn main_host(&self) -> String {
        let endpoint = match self.inner.main.lock().await.as_ref() {
            Some((_, endpoint)) => endpoint.clone(),
            None => self.inner.endpoints.first().cloned().unwrap_or_default(),
        };
        match endpoint.rsplit_once(':') {
            Some((host, _)) => host.to_string(),
            None => endpoint,
        }
    }

    /// The number of shards of the keyspace.
    pub fn shard_count(&self) -> usize {
        self.inner.map.lock().map_or(1, |m| m.shards)
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    async fn main_connection(&self) -> Result<Connection> {
        let mut main = self.inner.main.lock().await;
        if let Some((connection, _)) = main.as_ref().filter(|(c, _)| !c.is_closed()) {
            return Ok(connection.clone());
        }
        let mut last_error = String::new();
        for endpoint in &self.inner.endpoints {
            match Connection::open(endpoint, &self.inner.options).await {
                Ok(connection) => {
                    *main = Some((connection.clone(), endpoint.clone()));
                    return Ok(connection);
                }
                Err(error) => last_error = error.to_string(),
            }
        }
        Err(Error::Connect {
            endpoints: self.inner.endpoints.join(","),
            reason: last_error,
        })
    }

    async fn connection(&self, route: Route) -> Result<Connection> {
        let Route::Shard(shard) = route else {
            return self.main_connection().await;
        };
        let core = {
            let map = self.inner.map.lock().map_err(|_| Error::Disconnected)?;
            let core = core_of(shard, map.cores.len());
            (core < map.cores.len()).then_some(core)
        };
        let Some(core) = core else {
            return self.main_connection().await;
        };
        if let Some(connection) = self.open_direct(core) {
            return Ok(connection);
        }
        if self.core_unreachable(core) {
            return self.main_connection().await;
        }
        let opening = self.inner.opening.lock().await;
        // Another call may have opened it, or found it unreachable, while
        // this one waited.
        if let Some(connection) = self.open_direct(core) {
            return Ok(connection);
        }
        if self.core_unreachable(core) {
            drop(opening);
            return self.main_connection().await;
        }
        // The address and generation are read together, after the wait:
        // if the map changes while this connects, the connection is kept
        // under the old generation, which no call uses.
        let target = {
            let map = self.inner.map.lock().map_err(|_| Error::Disconnected)?;
            let generation = self.inner.map_generation.load(Ordering::Acquire);
            map.cores
                .get(core)
                .cloned()
                .map(|address| (address, generation))
        };
        let Some((address, generation)) = target else {
            drop(opening);
            return self.main_connection().await;
        };
        match Connection::open(&address, &self.inner.options).await {
            Ok(connection) => {
                self.core_reached(core);
                let mut direct = self.inner.direct.lock().map_err(|_| Error::Disconnected)?;
                if direct.len() <= core {
                    direct.resize(core + 1, None);
                }
                if let Some(slot) = direct.get_mut(core) {
                    *slot = Some((generation, connection.clone()));
                }
                Ok(connection)
            }
            // The core's port is unreachable (a firewall, a proxy): the
            // client port serves every shard too, one hop further. Other
            // cores' connections need not wait for that.
            // It is remembered, so that the next calls do not wait for it
            // again.
            Err(_) => {
                self.core_failed(core);
                drop(opening);
                self.main_connection().await
            }
        }
    }

    /// Whether `core`'s port failed lately and is not to be tried yet.
    fn core_unreachable(&self, core: usize) -> bool {
        let now = Instant::now();
        self.inner.unreachable.lock().is_ok_and(|unreachable| {
            unreachable
                .get(core)
                .copied()
                .flatten()
                .is_some_and(|u| now < u.retry_at)
        })
    }

    fn core_failed(&self, core: usize) {
        let options = &self.inner.options;
        if let Ok(mut unreachable) = self.inner.unreachable.lock() {
            if unreachable.len() <= core {
                unreachable.resize(core + 1, None);
            }
            if let Some(slot) = unreachable.get_mut(core) {
                let most = options.core_retry.saturating_mul(64);
                let backoff = slot.map_or(options.core_retry, |u| {
                    u.backoff.saturating_mul(2).min(most)
                });
                let now = Instant::now();
                *slot = Some(Unreachable {
                    retry_at: now.checked_add(backoff).unwrap_or(now),
                    backoff,
                });
            }
        }
    }

    fn core_reached(&self, core: usize) {
        if let Ok(mut unreachable) = self.inner.unreachable.lock() {
            if let Some(slot) = unreachable.get_mut(core) {
                *slot = None;
            }
        }
    }

    /// The open connection to `core`'s port for the current shard map, if
    /// there is one.
    fn open_direct(&self, core: usize) -> Option<Connection> {
        let generation = self.inner.map_generation.load(Ordering::Acquire);
        let direct = self.inner.direct.lock().ok()?;
        direct
            .get(core)?
            .as_ref()
            .filter(|(opened_for, connection)| *opened_for == generation && !connection.is_closed())
            .map(|(_, connection)| connection.clone())
    }

    /// `call` within the client's call deadline
    /// ([`ClientOptions::request_timeout`]).
    pub(crate) async fn within_deadline<T>(
        &self,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match self.inner.options.request_timeout {
            Some(limit) => tokio::time::timeout(limit, call)
                .await
                .map_err(|_| Error::Timeout(limit))?,
            None => call.await,
        }
    }

    /// Sends `request` where `route` says and returns its answer, turning
    /// an error response into [`Error::Server`].
    pub(crate) async fn call(&self, route: Route, request: Request) -> Result<Response> {
        // The deadline covers finding a connection too.
        let call = async {
            let connection = self.connection(route).await?;
            connection.call(self.next_id(), &request).await
        };
        let response = self.within_deadline(call).await?;
        match response.body {
            ResponseBody::Error(body) => Err(body.into()),
            _ => Ok(response),
        }
    }

    /// Opens a stream (a watch) under a fresh request id.
    pub(crate) async fn open_stream(&self, route: Route, request: Request) -> Result<Subscription> {
        let connection = self.connection(route).await?;
        connection.stream(self.next_id(), &request)
    }

    /// The shard holding all of `[key, range_end)`, if one does.
    pub(crate) fn route_range(&self, key: &[u8], range_end: &[u8]) -> Route {
        match shard_of_range(key, range_end, self.shard_count()) {
            Some(shard) => Route::Shard(shard),
            None => Route::Any,
        }
    }

    pub(crate) fn route_key(&self, key: &[u8]) -> Route {
        Route::Shard(shard_of(key, self.shard_count()))
    }

    pub(crate) fn route_lease(&self, id: i64) -> Route {
        if id == 0 {
            return Route::Any;
        }
        Route::Shard(home_of_lease(id, self.shard_count()))
    }

    /// The server's status (version, shard map, each shard's Raft state).
    ///
    /// # Errors
    /// As any call.
    pub async fn status(&self) -> Result<Status> {
        let response = self.call(Route::Any, Request::Status).await?;
        match response.body {
            ResponseBody::Status(status) => Ok(status),
            other => Err(unexpected("status", &other)),
        }
    }

    /// The alarms raised (etcdctl's `alarm list`).
    ///
    /// # Errors
    /// As any call.
    pub async fn alarm_list(&self) -> Result<Vec<AlarmMember>> {
        self.alarm(AlarmAction::Get, AlarmMember::default()).await
    }

    /// Clears every alarm raised (etcdctl's `alarm disarm`); answers what
    /// it cleared. Clear a NOSPACE alarm once space is freed: if there is
    /// still none, the next write that takes space raises it again.
    ///
    /// # Errors
    /// As any call.
    pub async fn alarm_disarm(&self) -> Result<Vec<AlarmMember>> {
        let mut cleared = Vec::new();
        for member in self.alarm_list().await? {
            cleared.extend(self.alarm(AlarmAction::Deactivate, member).await?);
        }
        Ok(cleared)
    }

    /// Lists, raises or clears an alarm; answers the alarms it covered.
    ///
    /// # Errors
    /// As any call.
    pub async fn alarm(&self, action: AlarmAction, alarm: AlarmMember) -> Result<Vec<AlarmMember>> {
        let request = Request::Alarm {
            action,
            member_id: alarm.member_id,
            alarm: alarm.alarm,
        };
        let response = self.call(Route::Any, request).await?;
        match response.body {
            ResponseBody::Alarm(alarms) => Ok(alarms),
            other => Err(unexpected("alarm", &other)),
        }
    }

    /// Stores `value` under `key`; answers the revision of the write.
    ///
    /// # Errors
    /// As any call.
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<Revision> {
        let request = PutRequest {
            key: key.into(),
            value: value.into(),
            ..PutRequest::default()
        };
        self.put_with(request).await.map(|(revision, _)| revision)
    }

    /// A put with every option of etcd's (lease, prev_kv, ignore_value,
    /// ignore_lease).
    ///
    /// # Errors
    /// As any call.
    pub async fn put_with(&self, request: PutRequest) -> Result<(Revision, PutResponse)> {
        let route = self.route_key(&request.key);
        let response = self.call(route, Request::Put(request)).await?;
        match response.body {
            ResponseBody::Put(put) => Ok((response.revision, put)),
            other => Err(unexpected("put", &other)),
        }
    }

    /// The value of `key`, if it exists.
    ///
    /// # Errors
    /// As any call.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<keel_proto::KeyValue>> {
        let request = RangeRequest {
            key: key.into(),
            ..RangeRequest::default()
        };
        let (_, answer) = self.range(request).await?;
        Ok(answer.kvs.into_iter().next())
    }

    /// Every key that starts with `prefix`, in key order.
    ///
    /// # Errors
    /// As any call.
    pub async fn get_prefix(
        &self,
        prefix: impl Into<Vec<u8>>,
    ) -> Result<(Revision, RangeResponse)> {
        let (key, range_end) = prefix_range(&prefix.into());
        let request = RangeRequest {
            key,
            range_end,
            ..RangeRequest::default()
        };
        self.range(request).await
    }

    /// A range with every option of etcd's; answers the revision it read at.
    ///
    /// # Errors
    /// As any call.
    pub async fn range(&self, request: RangeRequest) -> Result<(Revision, RangeResponse)> {
        let route = if request.revision == 0 {
            self.route_range(&request.key, &request.range_end)
        } else {
            // A read at a past revision over one shard still needs the
            // node-wide revision check; any core does it.
            Route::Any
        };
        let response = self.call(route, Request::Range(request)).await?;
        match response.body {
            ResponseBody::Range(range) => Ok((response.revision, range)),
            other => Err(unexpected("range", &other)),
        }
    }

    /// Deletes `key`; answers how many keys went (0 or 1).
    ///
    /// # Errors
    /// As any call.
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<u64> {
        let request = DeleteRangeRequest {
            key: key.into(),
            ..DeleteRangeRequest::default()
        };
        self.delete_range(request).await.map(|(_, d)| d.deleted)
    }

    /// A delete with every option of etcd's.
    ///
    /// # Errors
    /// As any call.
    pub async fn delete_range(
        &self,
        request: DeleteRangeRequest,
    ) -> Result<(Revision, DeleteRangeResponse)> {
        let route = self.route_range(&request.key, &request.range_end);
        let response = self.call(route, Request::DeleteRange(request)).await?;
        match response.body {
            ResponseBody::DeleteRange(delete) => Ok((response.revision, delete)),
            other => Err(unexpected("delete", &other)),
        }
    }

    /// Runs a transaction (see [`crate::Txn`] to build one). Its keys must
    /// share a shard: give them a common `{hash tag}`.
    ///
    /// # Errors
    /// As any call; `CrossShardTxn` when its keys span shards.
    pub async fn txn(&self, request: TxnRequest) -> Result<(Revision, TxnResponse)> {
        let route = match crate::txn::first_key(&request) {
            Some(key) => self.route_key(key),
            None => Route::Any,
        };
        let response = self.call(route, Request::Txn(request)).await?;
        match response.body {
            ResponseBody::Txn(txn) => Ok((response.revision, txn)),
            other => Err(unexpected("txn", &other)),
        }
    }

    /// Forgets history below `revision`.
    ///
    /// # Errors
    /// As any call; `Compacted` at or below an earlier compaction,
    /// `FutureRevision` above the current revision.
    pub async fn compact(&self, revision: Revision) -> Result<Revision> {
        let response = self.call(Route::Any, Request::Compact { revision }).await?;
        match response.body {
            ResponseBody::Compact => Ok(response.revision),
            other => Err(unexpected("compact", &other)),
        }
    }
}

pub(crate) fn unexpected(what: &str, body: &ResponseBody) -> Error {
    Error::Protocol(format!("unexpected answer to {what}: {body:?}"))
}
