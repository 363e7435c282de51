//! One member of a cluster as the client reaches it: its client port, each
//! of its cores' own ports, and what its status said about them.
//!
//! A member serves every shard on its client port (one hop further than
//! the shard's own core). Connections are opened lazily and reopened after
//! a failure; a port that could not be reached is not tried again until a
//! backoff has passed, so that a dead member costs one connect timeout,
//! not one per call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use keel_proto::routing::core_of;
use keel_proto::Status;
use tokio::sync::Mutex as AsyncMutex;

use crate::client::{ClientOptions, Route};
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::session::Session;

/// A port that could not be reached: not before `retry_at`, and how long
/// to wait after the next failure.
#[derive(Debug, Clone, Copy)]
struct Unreachable {
    retry_at: Instant,
    backoff: Duration,
}

/// Records a failure in `slot`: the wait doubles, from `first` up to 64
/// times `first`, while failures go on.
fn failed(slot: &mut Option<Unreachable>, first: Duration) {
    let most = first.saturating_mul(64);
    let backoff = slot.map_or(first, |u| u.backoff.saturating_mul(2).min(most));
    let now = Instant::now();
    *slot = Some(Unreachable {
        retry_at: now.checked_add(backoff).unwrap_or(now),
        backoff,
    });
}

fn waiting(slot: Option<Unreachable>) -> bool {
    slot.is_some_and(|u| Instant::now() < u.retry_at)
}

pub(crate) struct Member {
    /// Its client address, as given to the client.
    pub(crate) endpoint: String,
    options: ClientOptions,
    /// The client's user, presented on each connection opened.
    session: std::sync::Arc<Session>,
    /// Its member id, once its status said (0 until then).
    id: AtomicU64,
    /// `host:port` of each core's own listener, by core; empty until its
    /// status said.
    cores: Mutex<Vec<String>>,
    /// Counts changes of `cores`: a connection opened for an older list
    /// (the list changed while it opened) is not used.
    generation: AtomicU64,
    /// The connection to its client port.
    main: AsyncMutex<Option<Connection>>,
    /// Connections to each core's port, by core, each with the generation
    /// it was opened for. Looked up by every call: a plain mutex, never
    /// held across an await.
    direct: Mutex<Vec<Option<(u64, Connection)>>>,
    /// Cores whose port could not be reached lately, by core.
    unreachable_cores: Mutex<Vec<Option<Unreachable>>>,
    /// Set while its client port could not be reached lately: calls go to
    /// other members first.
    unreachable: Mutex<Option<Unreachable>>,
    /// Set while it left a call unanswered lately (paused, cut off, or
    /// dead behind a connection that still looks open): calls go to other
    /// members first, until it answers again.
    silent: Mutex<Option<Unreachable>>,
    /// Held while a connection to a core's port opens, so that calls that
    /// find none open one, not one each.
    opening: AsyncMutex<()>,
    /// Counts failed connects to its client port.
    connect_failures: AtomicU64,
}

impl Member {
    pub(crate) fn new(
        endpoint: String,
        options: ClientOptions,
        session: std::sync::Arc<Session>,
    ) -> Member {
        Member {
            endpoint,
            options,
            session,
            id: AtomicU64::new(0),
            cores: Mutex::new(Vec::new()),
            generation: AtomicU64::new(0),
            main: AsyncMutex::new(None),
            direct: Mutex::new(Vec::new()),
            unreachable_cores: Mutex::new(Vec::new()),
            unreachable: Mutex::new(None),
            silent: Mutex::new(None),
            opening: AsyncMutex::new(()),
            connect_failures: AtomicU64::new(0),
        }
    }

    /// Its member id, once known.
    pub(crate) fn id(&self) -> Option<u64> {
        Some(self.id.load(Ordering::Acquire)).filter(|id| *id != 0)
    }

    /// Whether its status has been read (its id and cores are known).
    pub(crate) fn is_known(&self) -> bool {
        self.id().is_some()
    }

    /// Takes in its status: its id, and its cores' ports (on the host of
    /// its endpoint).
    pub(crate) fn learn(&self, status: &Status) {
        self.id.store(status.member_id, Ordering::Release);
        let host = match self.endpoint.rsplit_once(':') {
            Some((host, _)) => host,
            None => self.endpoint.as_str(),
        };
        let cores: Vec<String> = status
            .core_ports
            .iter()
            .map(|port| format!("{host}:{port}"))
            .collect();
        let Ok(mut current) = self.cores.lock() else {
            return;
        };
        if *current != cores {
            self.generation.fetch_add(1, Ordering::AcqRel);
            *current = cores;
            drop(current);
            if let Ok(mut direct) = self.direct.lock() {
                direct.clear();
            }
        }
    }

    /// Whether its client port could not be reached lately (its backoff
    /// has not passed).
    pub(crate) fn is_unreachable(&self) -> bool {
        self.unreachable.lock().is_ok_and(|u| waiting(*u))
    }

    /// Whether it left a call unanswered lately (and has not answered
    /// since).
    pub(crate) fn is_silent(&self) -> bool {
        self.silent.lock().is_ok_and(|s| waiting(*s))
    }

    /// It left a call unanswered: passed over for [`ClientOptions::core_retry`]
    /// (not more: a leader that was only slow must not be shunned long).
    pub(crate) fn went_silent(&self) {
        if let Ok(mut silent) = self.silent.lock() {
            let now = Instant::now();
            *silent = Some(Unreachable {
                retry_at: now.checked_add(self.options.core_retry).unwrap_or(now),
                backoff: self.options.core_retry,
            });
        }
    }

    /// It answered a call.
    pub(crate) fn answered(&self) {
        if let Ok(mut silent) = self.silent.lock() {
            *silent = None;
        }
    }

    /// The connection for `route`: the shard's core's own port when it is
    /// known and reachable, else the client port.
    ///
    /// # Errors
    /// [`Error::Connect`] when the client port cannot be reached.
    pub(crate) async fn connection(&self, route: Route) -> Result<Connection> {
        let Route::Shard(shard) = route else {
            return self.main_connection().await;
        };
        let core = {
            let cores = self.cores.lock().map_err(|_| Error::Disconnected)?;
            let core = core_of(shard, cores.len());
            (core < cores.len()).then_some(core)
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
        let opening = self.opening.lock().await;
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
        // if the list changes while this connects, the connection is kept
        // under the old generation, which no call uses.
        let target = {
            let cores = self.cores.lock().map_err(|_| Error::Disconnected)?;
            let generation = self.generation.load(Ordering::Acquire);
            cores
                .get(core)
                .cloned()
                .map(|address| (address, generation))
        };
        let Some((address, generation)) = target else {
            drop(opening);
            return self.main_connection().await;
        };
        match self.open(&address).await {
            Ok(connection) => {
                if let Ok(mut unreachable) = self.unreachable_cores.lock() {
                    if let Some(slot) = unreachable.get_mut(core) {
                        *slot = None;
                    }
                }
                let mut direct = self.direct.lock().map_err(|_| Error::Disconnected)?;
                if direct.len() <= core {
                    direct.resize(core + 1, None);
                }
                if let Some(slot) = direct.get_mut(core) {
                    *slot = Some((generation, connection.clone()));
                }
                Ok(connection)
            }
            // The core's port is unreachable (a firewall, a proxy): the
            // client port serves every shard too, one hop further. It is
            // remembered, so that the next calls do not wait for it again.
            Err(_) => {
                if let Ok(mut unreachable) = self.unreachable_cores.lock() {
                    if unreachable.len() <= core {
                        unreachable.resize(core + 1, None);
                    }
                    if let Some(slot) = unreachable.get_mut(core) {
                        failed(slot, self.options.core_retry);
                    }
                }
                drop(opening);
                self.main_connection().await
            }
        }
    }

    /// The connection to its client port, opened if need be.
    ///
    /// # Errors
    /// [`Error::Connect`] when it cannot be reached (remembered: calls
    /// prefer other members for a while, [`Member::is_unreachable`]).
    pub(crate) async fn main_connection(&self) -> Result<Connection> {
        let failures = self.connect_failures.load(Ordering::Acquire);
        let mut main = self.main.lock().await;
        if let Some(connection) = main.as_ref().filter(|c| !c.is_closed()) {
            return Ok(connection.clone());
        }
        // Another call's connect failed while this one waited: calls
        // queued behind a member that drops packets would otherwise take a
        // connect timeout each, one after another.
        if self.connect_failures.load(Ordering::Acquire) != failures {
            return Err(Error::Connect {
                endpoints: self.endpoint.clone(),
                reason: "failed just now".to_string(),
            });
        }
        match Connection::open(&self.endpoint, &self.options).await {
            Ok(connection) => {
                if let Ok(mut unreachable) = self.unreachable.lock() {
                    *unreachable = None;
                }
                // The user's token first; a refusal (a wrong password) is
                // the call's answer.
                let generation = self.session.prepare(&connection).await?;
                connection.set_token_generation(generation);
                *main = Some(connection.clone());
                Ok(connection)
            }
            Err(error) => {
                if let Ok(mut unreachable) = self.unreachable.lock() {
                    failed(&mut unreachable, self.options.core_retry);
                }
                self.connect_failures.fetch_add(1, Ordering::AcqRel);
                Err(Error::Connect {
                    endpoints: self.endpoint.clone(),
                    reason: error.to_string(),
                })
            }
        }
    }

    /// A connection to a core's port at `address`, with the user's token
    /// presented.
    async fn open(&self, address: &str) -> Result<Connection> {
        let connection = Connection::open(address, &self.options)
            .await
            .map_err(|e| Error::Connect {
                endpoints: address.to_string(),
                reason: e.to_string(),
            })?;
        let generation = self.session.prepare(&connection).await?;
        connection.set_token_generation(generation);
        Ok(connection)
    }

    /// Whether the client has a user.
    pub(crate) fn has_user(&self) -> bool {
        self.session.has_user()
    }

    /// The token of `generation` was refused on one of its connections:
    /// the client logs in again, and its connections are opened anew.
    pub(crate) async fn forget_token(&self, generation: u64) {
        self.session.expire(generation).await;
        self.drop_connections().await;
    }

    /// Forgets its connections (their token was refused): the next calls
    /// open new ones, which log in again.
    pub(crate) async fn drop_connections(&self) {
        *self.main.lock().await = None;
        if let Ok(mut direct) = self.direct.lock() {
            direct.clear();
        }
    }

    fn core_unreachable(&self, core: usize) -> bool {
        self.unreachable_cores
            .lock()
            .is_ok_and(|u| waiting(u.get(core).copied().flatten()))
    }

    /// The open connection to `core`'s port for the current core list, if
    /// there is one.
    fn open_direct(&self, core: usize) -> Option<Connection> {
        let generation = self.generation.load(Ordering::Acquire);
        let direct = self.direct.lock().ok()?;
        direct
            .get(core)?
            .as_ref()
            .filter(|(opened_for, connection)| *opened_for == generation && !connection.is_closed())
            .map(|(_, connection)| connection.clone())
    }
}
