//! An in-memory target for the workloads' own tests: point reads, writes
//! and ranges over a map, leases that delete their keys when revoked or
//! expired, prefix watches, and a stall that holds every request arriving
//! in a window until the window ends, as a server pausing would.
//!
//! Leases expire when a watch looks for events (every few milliseconds
//! while one waits): the workloads that use leases always watch their
//! keys, and the fake needs no task of its own.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use tokio::sync::mpsc;

use crate::target::SeenEvent;

/// How often a waiting watch looks for expired leases.
const EXPIRY_POLL: Duration = Duration::from_millis(5);

/// The fake system.
#[derive(Debug, Default)]
pub struct FakeTarget {
    state: Arc<Mutex<State>>,
    /// Requests arriving in `[from, until)` are answered at `until`.
    stall: Mutex<Option<(Instant, Instant)>>,
}

/// Keys, leases and watches, behind one lock so that a lease's deletions
/// and their events happen together.
#[derive(Debug, Default)]
struct State {
    data: BTreeMap<Vec<u8>, Vec<u8>>,
    /// By id: the deadline and the keys attached.
    leases: HashMap<i64, (Instant, Vec<Vec<u8>>)>,
    last_lease: i64,
    /// Each watch's prefix and where its events go.
    watches: Vec<(Vec<u8>, mpsc::UnboundedSender<Vec<SeenEvent>>)>,
}

impl State {
    fn notify(&mut self, event: &SeenEvent) {
        self.watches.retain(|(prefix, events)| {
            !event.key.starts_with(prefix) || events.send(vec![event.clone()]).is_ok()
        });
    }

    fn end_lease(&mut self, id: i64) -> bool {
        let Some((_, keys)) = self.leases.remove(&id) else {
            return false;
        };
        for key in keys {
            if self.data.remove(&key).is_some() {
                self.notify(&SeenEvent {
                    is_put: false,
                    key,
                    value: Vec::new(),
                });
            }
        }
        true
    }

    fn expire(&mut self, now: Instant) {
        let due: Vec<i64> = self
            .leases
            .iter()
            .filter(|(_, (deadline, _))| *deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.end_lease(id);
        }
    }
}

/// A watch of the fake: its events, and the state it makes leases expire in.
pub struct FakeWatch {
    state: Arc<Mutex<State>>,
    events: mpsc::UnboundedReceiver<Vec<SeenEvent>>,
}

impl FakeWatch {
    /// The next events.
    ///
    /// # Errors
    /// When the fake has gone.
    pub async fn next(&mut self) -> Result<Vec<SeenEvent>> {
        loop {
            match self.events.try_recv() {
                Ok(events) => return Ok(events),
                Err(mpsc::error::TryRecvError::Disconnected) => bail!("the fake has gone"),
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            if let Ok(mut state) = self.state.lock() {
                state.expire(Instant::now());
            }
            tokio::time::sleep(EXPIRY_POLL).await;
        }
    }
}

impl FakeTarget {
    /// Holds every request that arrives in `[from, until)` until `until`.
    pub fn stall(&self, from: Instant, until: Instant) {
        if let Ok(mut stall) = self.stall.lock() {
            *stall = Some((from, until));
        }
    }

    async fn arrive(&self) {
        let now = Instant::now();
        let until = self
            .stall
            .lock()
            .ok()
            .and_then(|s| *s)
            .filter(|(from, until)| *from <= now && now < *until)
            .map(|(_, until)| until);
        if let Some(until) = until {
            tokio::time::sleep_until(until.into()).await;
        }
    }

    fn state(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| anyhow!("poisoned"))
    }

    /// Whether `key` exists.
    pub async fn get(&self, key: &[u8]) -> bool {
        self.arrive().await;
        self.state().is_ok_and(|s| s.data.contains_key(key))
    }

    /// Stores `value` under `key`, attached to `lease` if any.
    ///
    /// # Errors
    /// When the lease does not exist.
    pub async fn put(&self, key: &[u8], value: &[u8], lease: Option<i64>) -> Result<()> {
        self.arrive().await;
        let mut state = self.state()?;
        if let Some(id) = lease {
            let (_, keys) = state
                .leases
                .get_mut(&id)
                .ok_or_else(|| anyhow!("lease {id} not found"))?;
            keys.push(key.to_vec());
        }
        state.data.insert(key.to_vec(), value.to_vec());
        state.notify(&SeenEvent {
            is_put: true,
            key: key.to_vec(),
            value: value.to_vec(),
        });
        Ok(())
    }

    /// How many keys of `[start, end)` a range limited to `limit` reads.
    pub async fn range(&self, start: &[u8], end: &[u8], limit: u64) -> usize {
        self.arrive().await;
        self.state().map_or(0, |s| {
            s.data
                .range(start.to_vec()..end.to_vec())
                .take(usize::try_from(limit).unwrap_or(usize::MAX))
                .count()
        })
    }

    /// Grants a lease of `ttl_seconds`; answers its id.
    ///
    /// # Errors
    /// When the state is poisoned.
    pub async fn lease_grant(&self, ttl_seconds: i64) -> Result<i64> {
        self.arrive().await;
        let mut state = self.state()?;
        state.last_lease += 1;
        let id = state.last_lease;
        let ttl = Duration::from_secs(ttl_seconds.unsigned_abs());
        state.leases.insert(id, (Instant::now() + ttl, Vec::new()));
        Ok(id)
    }

    /// Revokes lease `id`, deleting its keys.
    ///
    /// # Errors
    /// When the lease does not exist (any more).
    pub async fn lease_revoke(&self, id: i64) -> Result<()> {
        self.arrive().await;
        if !self.state()?.end_lease(id) {
            bail!("lease {id} not found");
        }
        Ok(())
    }

    /// Watches every key under `prefix` from now on.
    ///
    /// # Errors
    /// When the state is poisoned.
    pub async fn watch_prefix(&self, prefix: &[u8]) -> Result<FakeWatch> {
        self.arrive().await;
        let (sender, events) = mpsc::unbounded_channel();
        self.state()?.watches.push((prefix.to_vec(), sender));
        Ok(FakeWatch {
            state: self.state.clone(),
            events,
        })
    }
}
