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
    /// of `ttl` seconds, until the returned handle is dropped. When no
    /// renewal has succeeded for a whole TTL (the server is unreachable),
    /// the lease must be taken as lost, and the handle says so.
    pub fn lease_keep_alive(&self, id: LeaseId, ttl: i64) -> KeepAlive {
        let (state_in, state) = watch::channel(LeaseState::Alive(ttl));
        let client = self.clone();
        let task = tokio::spawn(async move {
            let mut ttl = ttl;
            let mut period = renewal_period(ttl);
            let mut renewed = Instant::now();
            loop {
                tokio::time::sleep(period).await;
                match client.lease_keep_alive_once(id).await {
                    Ok(0) => break,
                    Ok(granted) => {
                        ttl = granted;
                        period = renewal_period(ttl);
                        renewed = Instant::now();
                        let _ = state_in.send(LeaseState::Alive(ttl));
                    }
                    // The lease may have expired on the server by now.
                    Err(_) if renewed.elapsed() >= ttl_duration(ttl) => break,
                    // A lost connection: try again soon, the lease may
                    // still be alive.
                    Err(_) => period = Duration::from_millis(200).min(renewal_period(ttl)),
                }
            }
            let _ = state_in.send(LeaseState::Lost);
        });
        KeepAlive { id, state, task }
    }
}

fn ttl_duration(ttl: i64) -> Duration {
    Duration::from_secs(ttl.max(1) as u64)
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
    /// or no renewal has succeeded for a whole TTL.
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
