//! Leases across shards. A lease lives in its home shard
//! ([`home_of_lease`]): granted there first, revoked there first, its timer
//! runs there. Every other shard keeps a copy (a "mirror"), so a put on any
//! shard can attach a key to it and a put naming a dead lease fails there.
//!
//! The home is the truth. A grant, a revoke or an expiry applies on the
//! home together with a task for the mirrors, in the home's own state; the
//! home's leader carries the task to every mirror, and only then answers
//! the writer (`lease_tasks.rs`). A crash part-way leaves the task in the
//! home's log and tree, and the home carries it again once it has
//! replayed.

use crate::mvcc::{Entry, LeaseId, LeaseInfo, Response};
use crate::shard::error::{NodeError, NodeResult};
use crate::shard::node::NodeClient;
use crate::shard::replica::{home_of_lease, ShardCall};

/// A lease as `time_to_live` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseStatus {
    /// Its id.
    pub id: LeaseId,
    /// The TTL it was granted, seconds.
    pub granted_ttl: i64,
    /// Seconds left.
    pub remaining: i64,
    /// Keys attached to it on every shard, in key order (when asked for).
    pub keys: Vec<Vec<u8>>,
}

impl NodeClient<'_> {
    /// Grants a lease of `ttl` seconds. With `id` 0 the node picks the id
    /// (and with it the home shard, round robin); otherwise `id` must be
    /// free. Answers the id.
    pub async fn lease_grant(&self, id: LeaseId, ttl: i64) -> NodeResult<LeaseId> {
        let shards = self.shard_count();
        let home = if id == 0 {
            self.next_home()
        } else {
            home_of_lease(id, shards)
        };
        // The home tells the mirrors before it answers.
        let granted = self
            .write_at_leader(home, Entry::LeaseGrant { id, ttl })
            .await?;
        match granted.response {
            Response::LeaseGrant { id, .. } => Ok(id),
            _ => Err(NodeError::InvalidRequest(
                "a grant answered as something else".to_string(),
            )),
        }
    }

    /// Revokes a lease: deletes it and every key attached to it, on every
    /// shard (the home tells the mirrors before it answers).
    ///
    /// # Errors
    /// [`crate::mvcc::KvError::LeaseNotFound`] (as [`NodeError::Kv`]) for a lease that
    /// is not there.
    pub async fn lease_revoke(&self, id: LeaseId) -> NodeResult<()> {
        let home = home_of_lease(id, self.shard_count());
        self.write_at_leader(home, Entry::LeaseRevoke { id })
            .await?;
        Ok(())
    }

    /// Restarts the lease's TTL; answers the TTL.
    pub async fn lease_keep_alive(&self, id: LeaseId) -> NodeResult<i64> {
        let home = home_of_lease(id, self.shard_count());
        self.call(home, |reply| ShardCall::LeaseKeepAlive { id, reply })
            .await
    }

    /// The lease's TTLs and, with `keys`, its keys on every shard; `None`
    /// when there is no such lease.
    pub async fn lease_time_to_live(
        &self,
        id: LeaseId,
        keys: bool,
    ) -> NodeResult<Option<LeaseStatus>> {
        let shards = self.shard_count();
        let home = home_of_lease(id, shards);
        let Some((info, remaining)) = self
            .call(home, |reply| ShardCall::LeaseStatus { id, reply })
            .await?
        else {
            return Ok(None);
        };
        let mut attached = Vec::new();
        if keys {
            for shard in 0..shards {
                attached.extend(
                    self.call(shard, |reply| ShardCall::LeaseKeys { id, reply })
                        .await?,
                );
            }
            attached.sort();
        }
        Ok(Some(LeaseStatus {
            id,
            granted_ttl: info.ttl,
            remaining,
            keys: attached,
        }))
    }

    /// Every lease, by id (the home shards' records).
    pub async fn leases(&self) -> NodeResult<Vec<LeaseInfo>> {
        let shards = self.shard_count();
        let mut all = Vec::new();
        for shard in 0..shards {
            let held = self
                .call(shard, |reply| ShardCall::Leases { reply })
                .await?;
            all.extend(
                held.into_iter()
                    .filter(|l| home_of_lease(l.id, shards) == shard),
            );
        }
        all.sort_by_key(|l| l.id);
        Ok(all)
    }

    /// The leases shard `shard` holds: those homed there and the mirrors
    /// of those homed elsewhere (for audits: every mirror should match its
    /// home once the home's tasks are done).
    ///
    /// # Errors
    /// A stopped shard, or the node shutting down.
    pub async fn shard_leases(&self, shard: usize) -> NodeResult<Vec<LeaseInfo>> {
        self.call(shard, |reply| ShardCall::Leases { reply }).await
    }
}
