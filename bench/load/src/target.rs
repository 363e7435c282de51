//! The system under load: keel through its client crate, or a real etcd
//! through its v3 gRPC API. Both offer the same few calls, so a workload
//! is written once and runs against either.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use keel_proto::{EventKind, PutRequest, RangeRequest};

use crate::etcd::{etcdserverpb, mvccpb, EtcdConnection, EtcdWatch};

/// Which system, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetUrl {
    /// The system.
    pub kind: TargetKind,
    /// `host:port` of its client endpoint: of each member's, for a
    /// cluster (`keel://a:1,b:2,c:3`).
    pub addresses: Vec<String>,
}

/// The systems the load generator drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// keel, through `keel-client`.
    Keel,
    /// etcd v3, through its gRPC API ([`crate::etcd`]).
    Etcd,
}

impl TargetKind {
    /// The URL scheme, also the default label of a run.
    pub fn scheme(self) -> &'static str {
        match self {
            TargetKind::Keel => "keel",
            TargetKind::Etcd => "etcd",
        }
    }
}

impl FromStr for TargetUrl {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<TargetUrl> {
        let (scheme, addresses) = text.split_once("://").ok_or_else(|| {
            anyhow!("a target is keel://HOST:PORT or etcd://HOST:PORT, not {text:?}")
        })?;
        let kind = match scheme {
            "keel" => TargetKind::Keel,
            "etcd" => TargetKind::Etcd,
            other => bail!("unknown target system {other:?}: use keel:// or etcd://"),
        };
        let addresses: Vec<String> = addresses
            .trim_end_matches('/')
            .split(',')
            .map(|a| a.trim_end_matches('/').to_string())
            .collect();
        for address in &addresses {
            if address
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            {
                bail!("a target address is HOST:PORT (comma-separated for a cluster), not {address:?}");
            }
        }
        Ok(TargetUrl { kind, addresses })
    }
}

impl fmt::Display for TargetUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.kind.scheme(), self.addresses.join(","))
    }
}

/// How long connecting, or creating a watch, may take before the run gives
/// up on the target.
const SETUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long one readiness probe may wait for its answer, and the pause
/// between probes.
const READY_PROBE: std::time::Duration = std::time::Duration::from_millis(500);

/// Open connections to one system. Each call names the connection it uses
/// (any number; it wraps), so a workload spreads its load over them.
pub enum Target {
    /// keel clients, one per connection.
    Keel(Vec<keel_client::Client>),
    /// etcd connections (one HTTP/2 connection each).
    Etcd(Vec<Arc<EtcdConnection>>),
    /// The workloads' own tests: an in-memory map.
    #[cfg(test)]
    Fake(crate::fake_target::FakeTarget),
}

/// What renews one lease: a keel client, or an open etcd keep-alive stream.
pub enum KeepAlive {
    /// keel renews with one request per renewal.
    Keel {
        /// The connection.
        client: keel_client::Client,
        /// The lease.
        id: i64,
    },
    /// etcd renews over its connection's keep-alive stream, one message
    /// per renewal, as etcd's Go client does.
    Etcd {
        /// The connection.
        connection: Arc<EtcdConnection>,
        /// The lease.
        id: i64,
    },
}

impl KeepAlive {
    /// Renews the lease once and waits for the answer.
    ///
    /// # Errors
    /// When the lease is gone or the renewal fails.
    pub async fn renew(&mut self) -> Result<()> {
        let ttl = match self {
            KeepAlive::Keel { client, id } => client.lease_keep_alive_once(*id).await?,
            KeepAlive::Etcd { connection, id } => connection.keep_alive(*id).await?,
        };
        if ttl <= 0 {
            bail!("the lease has expired");
        }
        Ok(())
    }
}

/// A stream of watch events, reduced to what the workloads need.
pub enum EventStream {
    /// A keel watch.
    Keel(keel_client::Watcher),
    /// An etcd watch.
    Etcd(EtcdWatch),
    /// A watch of the fake target.
    #[cfg(test)]
    Fake(crate::fake_target::FakeWatch),
}

/// One event of a watch, as the workloads see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenEvent {
    /// A put (else a delete).
    pub is_put: bool,
    /// The key.
    pub key: Vec<u8>,
    /// The value (empty for a delete).
    pub value: Vec<u8>,
}

/// How the load generator reaches the target, beyond its address.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// TLS, with these files; `None` is plaintext.
    pub tls: Option<keel_client::tls::TlsFiles>,
    /// The user to log in as (keel targets only, for now).
    pub credentials: Option<keel_client::Credentials>,
}

impl Target {
    /// Opens `connections` connections to `url`.
    ///
    /// # Errors
    /// When the system cannot be reached.
    pub async fn connect(
        url: &TargetUrl,
        connections: usize,
        security: &Security,
    ) -> Result<Target> {
        tokio::time::timeout(SETUP_TIMEOUT, async {
            let target = Self::connect_now(url, connections, security).await?;
            target.wait_ready().await;
            Ok(target)
        })
        .await
        .map_err(|_| {
            anyhow!(
                "{url} did not answer a read within {} s",
                SETUP_TIMEOUT.as_secs()
            )
        })?
    }

    /// Waits until the system answers a linearizable read. etcd opens its
    /// client port before its member has elected itself leader, and a
    /// workload without a warm-up would otherwise time that election.
    async fn wait_ready(&self) {
        loop {
            let probe = self.get(0, b"bench/ready", false);
            if let Ok(Ok(_)) = tokio::time::timeout(READY_PROBE, probe).await {
                return;
            }
            tokio::time::sleep(READY_PROBE / 10).await;
        }
    }

    async fn connect_now(
        url: &TargetUrl,
        connections: usize,
        security: &Security,
    ) -> Result<Target> {
        let connections = connections.max(1);
        match url.kind {
            // Each client is given every member, starting at another one,
            // so that calls no leader routes spread over the members.
            TargetKind::Keel => {
                let options = keel_client::ClientOptions {
                    tls: match &security.tls {
                        Some(files) => Some(keel_client::ClientTls::from_files(files)?),
                        None => None,
                    },
                    credentials: security.credentials.clone(),
                    ..keel_client::ClientOptions::default()
                };
                let mut clients = Vec::with_capacity(connections);
                for i in 0..connections {
                    let mut endpoints = url.addresses.clone();
                    let first = i % endpoints.len().max(1);
                    endpoints.rotate_left(first);
                    let client = keel_client::Client::connect_with(&endpoints, options.clone())
                        .await
                        .with_context(|| format!("connect to {url}"))?;
                    clients.push(client);
                }
                Ok(Target::Keel(clients))
            }
            // Connections go to the members in turn, as etcd's Go client
            // balances its endpoints; a member that does not lead passes
            // writes and linearizable reads to the leader itself.
            TargetKind::Etcd => {
                if security.credentials.is_some() {
                    bail!("--user is for keel targets: bench's etcd client sends no token");
                }
                let tls = match &security.tls {
                    Some(files) => Some(keel_client::tls::client_config(files, &[b"h2"])?),
                    None => None,
                };
                let mut clients = Vec::with_capacity(connections);
                for i in 0..connections {
                    let address = url
                        .addresses
                        .get(i % url.addresses.len().max(1))
                        .ok_or_else(|| anyhow!("no address in {url}"))?;
                    let connection = EtcdConnection::connect(address, tls.clone())
                        .await
                        .with_context(|| format!("connect to {address}"))?;
                    clients.push(Arc::new(connection));
                }
                Ok(Target::Etcd(clients))
            }
        }
    }

    /// How many sockets the connections open: one each for etcd (an
    /// HTTP/2 connection carries every call and stream); for keel, each
    /// client's socket to the client port plus one to each core's own port,
    /// of each member (a client opens a socket when it first sends a
    /// request there, so this is how many there are once every core of
    /// every member has had one).
    ///
    /// # Errors
    /// When keel does not say how many cores it has.
    pub async fn sockets(&self) -> Result<usize> {
        match self {
            Target::Keel(clients) => {
                let status = Self::keel(clients, 0)?
                    .status()
                    .await
                    .context("ask keel for its cores")?;
                let members = Self::keel(clients, 0)?.member_count();
                Ok(clients.len() * members * (1 + status.core_ports.len()))
            }
            Target::Etcd(clients) => Ok(clients.len()),
            #[cfg(test)]
            Target::Fake(_) => Ok(1),
        }
    }

    /// How many connections are open.
    pub fn connections(&self) -> usize {
        match self {
            Target::Keel(clients) => clients.len(),
            Target::Etcd(clients) => clients.len(),
            #[cfg(test)]
            Target::Fake(_) => 1,
        }
    }

    fn keel(clients: &[keel_client::Client], connection: usize) -> Result<&keel_client::Client> {
        clients
            .get(connection % clients.len().max(1))
            .ok_or_else(|| anyhow!("no connection open"))
    }

    fn etcd(clients: &[Arc<EtcdConnection>], connection: usize) -> Result<&Arc<EtcdConnection>> {
        clients
            .get(connection % clients.len().max(1))
            .ok_or_else(|| anyhow!("no connection open"))
    }

    /// Reads `key`; answers whether it exists. A serializable read is served
    /// from the replica's state without a Raft round.
    ///
    /// # Errors
    /// When the system fails the read.
    pub async fn get(&self, connection: usize, key: &[u8], serializable: bool) -> Result<bool> {
        match self {
            Target::Keel(clients) => {
                let request = RangeRequest {
                    key: key.to_vec(),
                    serializable,
                    ..RangeRequest::default()
                };
                let (_, answer) = Self::keel(clients, connection)?.range(request).await?;
                Ok(!answer.kvs.is_empty())
            }
            Target::Etcd(clients) => {
                let request = etcdserverpb::RangeRequest {
                    key: key.to_vec(),
                    serializable,
                    ..etcdserverpb::RangeRequest::default()
                };
                let answer = Self::etcd(clients, connection)?.range(request).await?;
                Ok(!answer.kvs.is_empty())
            }
            #[cfg(test)]
            Target::Fake(fake) => Ok(fake.get(key).await),
        }
    }

    /// Stores `value` under `key`, durably, with an optional lease.
    ///
    /// # Errors
    /// When the system fails the write.
    pub async fn put(
        &self,
        connection: usize,
        key: &[u8],
        value: &[u8],
        lease: Option<i64>,
    ) -> Result<()> {
        match self {
            Target::Keel(clients) => {
                let request = PutRequest {
                    key: key.to_vec(),
                    value: value.to_vec(),
                    lease: lease.unwrap_or(0),
                    ..PutRequest::default()
                };
                Self::keel(clients, connection)?.put_with(request).await?;
            }
            Target::Etcd(clients) => {
                let request = etcdserverpb::PutRequest {
                    key: key.to_vec(),
                    value: value.to_vec(),
                    lease: lease.unwrap_or(0),
                    ..etcdserverpb::PutRequest::default()
                };
                Self::etcd(clients, connection)?.put(request).await?;
            }
            #[cfg(test)]
            Target::Fake(fake) => fake.put(key, value, lease).await?,
        }
        Ok(())
    }

    /// Reads up to `limit` keys of `[start, end)`; answers how many came.
    ///
    /// # Errors
    /// When the system fails the read.
    pub async fn range(
        &self,
        connection: usize,
        start: &[u8],
        end: &[u8],
        limit: u64,
        serializable: bool,
    ) -> Result<usize> {
        match self {
            Target::Keel(clients) => {
                let request = RangeRequest {
                    key: start.to_vec(),
                    range_end: end.to_vec(),
                    limit,
                    serializable,
                    ..RangeRequest::default()
                };
                let (_, answer) = Self::keel(clients, connection)?.range(request).await?;
                Ok(answer.kvs.len())
            }
            Target::Etcd(clients) => {
                let request = etcdserverpb::RangeRequest {
                    key: start.to_vec(),
                    range_end: end.to_vec(),
                    limit: i64::try_from(limit).unwrap_or(i64::MAX),
                    serializable,
                    ..etcdserverpb::RangeRequest::default()
                };
                let answer = Self::etcd(clients, connection)?.range(request).await?;
                Ok(answer.kvs.len())
            }
            #[cfg(test)]
            Target::Fake(fake) => Ok(fake.range(start, end, limit).await),
        }
    }

    /// Grants a lease of `ttl_seconds`; answers its id.
    ///
    /// # Errors
    /// When the system refuses the lease.
    pub async fn lease_grant(&self, connection: usize, ttl_seconds: i64) -> Result<i64> {
        match self {
            Target::Keel(clients) => {
                let (id, _) = Self::keel(clients, connection)?
                    .lease_grant(0, ttl_seconds)
                    .await?;
                Ok(id)
            }
            Target::Etcd(clients) => {
                Self::etcd(clients, connection)?
                    .lease_grant(ttl_seconds)
                    .await
            }
            #[cfg(test)]
            Target::Fake(fake) => fake.lease_grant(ttl_seconds).await,
        }
    }

    /// Revokes lease `id`, deleting the keys attached to it.
    ///
    /// # Errors
    /// When the lease does not exist or the system fails the call.
    pub async fn lease_revoke(&self, connection: usize, id: i64) -> Result<()> {
        match self {
            Target::Keel(clients) => Ok(Self::keel(clients, connection)?.lease_revoke(id).await?),
            Target::Etcd(clients) => Self::etcd(clients, connection)?.lease_revoke(id).await,
            #[cfg(test)]
            Target::Fake(fake) => fake.lease_revoke(id).await,
        }
    }

    /// What renews lease `id` over `connection`: keel renews with plain
    /// requests; etcd over the connection's one keep-alive stream, opened
    /// when the connection was.
    ///
    /// # Errors
    /// When no connection is open.
    pub async fn keep_alive_handle(&self, connection: usize, id: i64) -> Result<KeepAlive> {
        match self {
            Target::Keel(clients) => Ok(KeepAlive::Keel {
                client: Self::keel(clients, connection)?.clone(),
                id,
            }),
            Target::Etcd(clients) => Ok(KeepAlive::Etcd {
                connection: Self::etcd(clients, connection)?.clone(),
                id,
            }),
            #[cfg(test)]
            Target::Fake(_) => bail!("the fake target has no keep-alives"),
        }
    }

    /// Watches every key that starts with `prefix`, from now on. The watch
    /// is in place when this returns. An etcd watch goes on its
    /// connection's one watch stream when `shared` (as etcd's Go client
    /// puts a connection's watches), else on a gRPC stream of its own; a
    /// keel client carries every watch of a connection on its sockets
    /// either way.
    ///
    /// # Errors
    /// When the system refuses the watch.
    pub async fn watch_prefix(
        &self,
        connection: usize,
        prefix: &[u8],
        shared: bool,
    ) -> Result<EventStream> {
        tokio::time::timeout(
            SETUP_TIMEOUT,
            self.watch_prefix_now(connection, prefix, shared),
        )
        .await
        .map_err(|_| {
            anyhow!(
                "a watch was not created within {} s",
                SETUP_TIMEOUT.as_secs()
            )
        })?
    }

    async fn watch_prefix_now(
        &self,
        connection: usize,
        prefix: &[u8],
        shared: bool,
    ) -> Result<EventStream> {
        match self {
            Target::Keel(clients) => {
                let watcher = Self::keel(clients, connection)?
                    .watch_prefix(prefix)
                    .await?;
                Ok(EventStream::Keel(watcher))
            }
            Target::Etcd(clients) => {
                let (start, end) = keel_client::prefix_range(prefix);
                let watch = Self::etcd(clients, connection)?
                    .watch(&start, &end, shared)
                    .await?;
                Ok(EventStream::Etcd(watch))
            }
            #[cfg(test)]
            Target::Fake(fake) => Ok(EventStream::Fake(fake.watch_prefix(prefix).await?)),
        }
    }
}

impl EventStream {
    /// The next events (an empty list for a message without any).
    ///
    /// # Errors
    /// When the watch fails or ends.
    pub async fn next(&mut self) -> Result<Vec<SeenEvent>> {
        match self {
            EventStream::Keel(watcher) => {
                let answer = watcher.next().await?;
                Ok(answer
                    .events
                    .into_iter()
                    .map(|event| SeenEvent {
                        is_put: event.kind == EventKind::Put,
                        key: event.kv.key,
                        value: event.kv.value,
                    })
                    .collect())
            }
            EventStream::Etcd(watch) => {
                let answer = watch.next().await?;
                Ok(answer
                    .events
                    .into_iter()
                    .filter_map(|event| {
                        let is_put = event.r#type == mvccpb::event::EventType::Put as i32;
                        let kv = event.kv?;
                        Some(SeenEvent {
                            is_put,
                            key: kv.key,
                            value: kv.value,
                        })
                    })
                    .collect())
            }
            #[cfg(test)]
            EventStream::Fake(watch) => watch.next().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_url_names_its_system_and_address() {
        let url: TargetUrl = "etcd://127.0.0.1:2379".parse().unwrap();
        assert_eq!(url.kind, TargetKind::Etcd);
        assert_eq!(url.addresses, ["127.0.0.1:2379"]);
        assert_eq!(url.to_string(), "etcd://127.0.0.1:2379");
        let url: TargetUrl = "keel://localhost:1/".parse().unwrap();
        assert_eq!(url.kind, TargetKind::Keel);
        assert_eq!(url.addresses, ["localhost:1"]);
        let cluster: TargetUrl = "keel://a:1,b:2,c:3".parse().unwrap();
        assert_eq!(cluster.addresses, ["a:1", "b:2", "c:3"]);
        assert_eq!(cluster.to_string(), "keel://a:1,b:2,c:3");
    }

    #[test]
    fn a_bad_target_url_is_refused_with_the_reason() {
        let error = |text: &str| text.parse::<TargetUrl>().unwrap_err().to_string();
        assert!(error("127.0.0.1:2379").contains("keel://HOST:PORT"));
        assert!(error("redis://127.0.0.1:6379").contains("unknown target system"));
        assert!(error("keel://127.0.0.1").contains("HOST:PORT"));
        assert!(error("keel://:2379").contains("HOST:PORT"));
        assert!(error("keel://h:99999").contains("HOST:PORT"));
    }
}
