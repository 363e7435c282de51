//! Leases: grant, revoke, time-to-live, list, and a background keep-alive
//! that renews a lease at a third of its TTL until it is dropped.

use std::time::{Duration, Instant};

use keel_proto::{LeaseId, LeaseStatus, LeaseTimeToLive, Request, ResponseBody};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::{unexpected, Client, Route};
use crate::error::{Error, Result};

impl Client {
    /// Grants a lease of `ttl` seconds; `id` 0 lets the server pick the id.
    /// Answers `(id, ttl)`.
    ///
    /// # Errors
    /// As any call; `LeaseExists` for an id in use.
    pub async fn lease_grant(&self, id: LeaseId, ttl: i64) -> Result<(LeaseId, i64)> {
        let response = self
            .call(Route::Any, Request::LeaseGrant { id, ttl })
            .await?;
        match response.body {
            ResponseBody::LeaseGrant { id, ttl } => Ok((id, ttl)),
            other => Err(unexpected("lease grant", &other)),
        }
    }

    /// Revokes a lease, deleting every key attached to it.
    ///
    /// # Errors
    /// As any call; `LeaseNotFound`.
    pub async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        let route = self.route_lease(id);
        let response = self.call(route, Request::LeaseRevoke { id }).await?;
        match response.body {
            ResponseBody::LeaseRevoke => Ok(()),
            other => Err(unexpected("lease revoke", &other)),
        }
    }

    /// Renews a lease once; answers its TTL, 0 when it is gone.
    ///
    /// # Errors
    /// As any call.
    pub async fn lease_keep_alive_once(&self, id: LeaseId) -> Result<i64> {
        let route = self.route_lease(id);
        let response = self.call(route, Request::LeaseKeepAlive { id }).await?;
        match response.body {
            ResponseBody::LeaseKeepAlive { ttl, .. } => Ok(ttl),
            other => Err(unexpected("lease keep-alive", &other)),
        }
    }

    /// A lease's remaining TTL (-1 when it does not exist), and its keys
    /// when `keys`.
    ///
    /// # Errors
    /// As any call.
    pub async fn lease_time_to_live(&self, id: LeaseId, keys: bool) -> Result<LeaseTimeToLive> {
        let route = self.route_lease(id);
        let response = self
            .call(route, Request::LeaseTimeToLive { id, keys })
            .await?;
        match response.body {
            ResponseBody::LeaseTimeToLive(answer) => Ok(answer),
            other => Err(unexpected("lease time-to-live", &other)),
        }
    }

    /// Every lease.
    ///
    /// # Errors
    /// As any call.
    pub async fn lease_leases(&self) -> Result<Vec<LeaseStatus>> {
        let response = self.call(Route::Any, Request::LeaseLeases).await?;
        match response.body {
            ResponseBody::LeaseLeases(leases) => Ok(leases),
            other => Err(unexpected("lease list", &other)),
        }
    }

    /// Keeps lease `id` alive in the background, renewing it every third
    /// of `ttl` seconds (the first at once), until the returned handle is
    /// dropped.
    ///
    /// The lease is reported lost at its **deadline**: the send time of
    /// the last renewal the server acknowledged, plus the TTL it answered
    /// (the server started its timer after that send, so it expires the
    /// lease no earlier). This holds whatever the renewal in flight is
    /// doing: one that hangs (a partition that drops packets, a stopped
    /// server) is abandoned at the deadline, as etcd's client closes its
    /// keep-alive channel at the deadline.
    pub fn lease_keep_alive(&self, id: LeaseId, ttl: i64) -> KeepAlive {
        let (state_in, state) = watch::channel(LeaseState::Alive(ttl));
        let client = self.clone();
        let task = tokio::spawn(async move {
            // Renewed at once: the deadline then counts from a send this
            // task made, not from a grant it does not know the time of.
            let start = Instant::now();
            let mut deadline = start.checked_add(ttl_duration(ttl)).unwrap_or(start);
            let mut period = Duration::ZERO;
            loop {
                let due = (Instant::now() + period).min(deadline);
                tokio::time::sleep_until(due.into()).await;
                if Instant::now() >= deadline {
                    break;
                }
                let sent = Instant::now();
                let renewal = client.lease_keep_alive_once(id);
                match tokio::time::timeout_at(deadline.into(), renewal).await {
                    // The deadline passed with the renewal unanswered.
                    Err(_) => break,
                    Ok(Ok(0)) => break,
                    Ok(Ok(granted)) => {
                        deadline = sent.checked_add(ttl_duration(granted)).unwrap_or(sent);
                        period = renewal_period(granted);
                        let _ = state_in.send(LeaseState::Alive(granted));
                    }
                    // A lost connection: try again soon, the lease may
                    // still be alive (the loop ends at the deadline).
                    Ok(Err(_)) => period = Duration::from_millis(200).min(period),
                }
            }
            let _ = state_in.send(LeaseState::Lost);
        });
        KeepAlive { id, state, task }
    }
}

fn ttl_duration(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl.max(1)).unwrap_or(1))
}

/// A third of the TTL: two renewals may fail before the lease expires.
pub(crate) fn renewal_period(ttl: i64) -> Duration {
    ttl_duration(ttl) / 3
}

/// What the keep-alive last heard of its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Renewed; its TTL.
    Alive(i64),
    /// Expired or revoked.
    Lost,
}

/// A lease kept alive in the background; dropping it stops the renewals
/// (the lease then expires after its TTL unless revoked first).
pub struct KeepAlive {
    id: LeaseId,
    state: watch::Receiver<LeaseState>,
    task: JoinHandle<()>,
}

impl KeepAlive {
    /// The lease.
    pub fn id(&self) -> LeaseId {
        self.id
    }

    /// What the last renewal found.
    pub fn state(&self) -> LeaseState {
        *self.state.borrow()
    }

    /// Resolves, with [`Error::LeaseLost`], once the lease is found gone
    /// or its deadline passed with no renewal acknowledged (see
    /// [`Client::lease_keep_alive`]).
    pub async fn lost(&mut self) -> Error {
        let _ = self.state.wait_for(|s| *s == LeaseState::Lost).await;
        Error::LeaseLost(self.id)
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}
