//! Leases across shards. A lease lives in its home shard
//! ([`home_of_lease`]): granted there first, revoked there first, its timer
//! runs there. Every other shard keeps a copy (a "mirror"), so a put on any
//! shard can attach a key to it and a put naming a dead lease fails there.
//!
//! The home is the truth: a mirror without its home lease is garbage, a
//! home lease without a mirror is an unfinished grant. A grant, a revoke or
//! an expiry applies on the home, which then tells the mirrors and only
//! then answers (`lease_fan_out.rs`). A crash part-way is repaired when the
//! node starts ([`NodeClient::repair_leases`]): missing mirrors are
//! granted, orphan mirrors are revoked, with their keys.

use std::collections::BTreeSet;

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
        let granted = self.write_to(home, Entry::LeaseGrant { id, ttl }).await?;
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
        self.write_to(home, Entry::LeaseRevoke { id }).await?;
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

    /// Makes the mirrors agree with the homes after a crash: grants missing
    /// mirrors, revokes (with their keys) mirrors whose home lease is gone.
    /// Returns how many mirrors it granted and revoked.
    pub async fn repair_leases(&self) -> NodeResult<(usize, usize)> {
        let shards = self.shard_count();
        let mut held: Vec<Vec<LeaseInfo>> = Vec::with_capacity(shards);
        let mut stopped = BTreeSet::new();
        for shard in 0..shards {
            match self.call(shard, |reply| ShardCall::Leases { reply }).await {
                Ok(leases) => held.push(leases),
                // A stopped shard is left as it is; the rest are repaired.
                Err(NodeError::ShardStopped { .. }) => {
                    stopped.insert(shard);
                    held.push(Vec::new());
                }
                Err(e) => return Err(e),
            }
        }
        let ids: Vec<BTreeSet<LeaseId>> = held
            .iter()
            .map(|leases| leases.iter().map(|l| l.id).collect())
            .collect();
        let (mut granted, mut revoked) = (0, 0);
        for (shard, leases) in held.iter().enumerate() {
            let mut orphans = Vec::new();
            for lease in leases {
                let home = home_of_lease(lease.id, shards);
                if home == shard {
                    for (other, other_ids) in ids.iter().enumerate() {
                        let unknown = stopped.contains(&other);
                        if other != home && !unknown && !other_ids.contains(&lease.id) {
                            let grant = Entry::LeaseGrant {
                                id: lease.id,
                                ttl: lease.ttl,
                            };
                            self.write_to(other, grant).await?;
                            granted += 1;
                        }
                    }
                } else if !stopped.contains(&home)
                    && !ids.get(home).is_some_and(|h| h.contains(&lease.id))
                {
                    orphans.push(lease.id);
                }
            }
            if !orphans.is_empty() {
                revoked += orphans.len();
                self.write_to(shard, Entry::LeaseExpire { ids: orphans })
                    .await?;
            }
        }
        Ok((granted, revoked))
    }
}
