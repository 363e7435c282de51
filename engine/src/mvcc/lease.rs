//! Lease timers, kept by the shard leader only, against a clock the caller
//! passes in (a monotonic `Duration` since any fixed point), so tests drive
//! time by hand.
//!
//! The leader decides expiry and proposes it as [`Entry::LeaseExpire`] of at
//! most `revoke_batch` leases, with at most one such entry in flight: an
//! expiry storm becomes a steady trickle of bounded entries that writes
//! interleave with. A lease past its deadline cannot be kept alive, so it
//! never outlives its TTL by more than the time its turn in the trickle
//! takes. Remaining TTLs are proposed as [`Entry::LeaseCheckpoint`]s so that
//! a new leader does not restart every lease at its full TTL (etcd issues
//! 9888 and 12105). Memory scales with the number of leases, not keys.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::Duration;

use crate::mvcc::error::{KvError, KvResult};
use crate::mvcc::store::LeaseInfo;
use crate::mvcc::types::{Entry, LeaseId};

/// How the leader paces expiries and checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LessorConfig {
    /// Most leases in one expiry entry.
    pub revoke_batch: usize,
    /// An expiry entry not applied after this long is proposed again (it
    /// may have been lost with a leader change).
    pub retry_after: Duration,
    /// How often a lease's remaining TTL is checkpointed.
    pub checkpoint_interval: Duration,
    /// Most leases in one checkpoint entry.
    pub checkpoint_batch: usize,
}

impl Default for LessorConfig {
    fn default() -> LessorConfig {
        LessorConfig {
            revoke_batch: 100,
            retry_after: Duration::from_secs(3),
            checkpoint_interval: Duration::from_secs(300),
            checkpoint_batch: 1000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Timer {
    ttl: i64,
    deadline: Duration,
    /// When its remaining TTL was last proposed as a checkpoint.
    checkpointed_at: Duration,
    /// A keep-alive reset it since the last checkpoint.
    renewed: bool,
}

/// The leader's lease timers.
#[derive(Debug, Default)]
pub struct Lessor {
    config: LessorConfig,
    timers: BTreeMap<LeaseId, Timer>,
    /// Deadlines, earliest first; an entry whose deadline no longer matches
    /// its timer is stale and skipped.
    queue: BinaryHeap<Reverse<(Duration, LeaseId)>>,
    /// The expiry entry in flight and when it was proposed.
    in_flight: BTreeSet<LeaseId>,
    proposed_at: Duration,
    primary: bool,
}

fn seconds(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

impl Lessor {
    /// A lessor that is not the leader yet.
    pub fn new(config: LessorConfig) -> Lessor {
        Lessor {
            config,
            ..Lessor::default()
        }
    }

    /// Whether this replica keeps the timers (it is the leader).
    pub fn is_primary(&self) -> bool {
        self.primary
    }

    /// Becomes the leader: every lease starts from its checkpointed
    /// remaining TTL, or its full TTL when it has none.
    pub fn promote(&mut self, leases: &[LeaseInfo], now: Duration) {
        self.demote();
        self.primary = true;
        for lease in leases {
            let left = if lease.remaining_ttl > 0 {
                lease.remaining_ttl
            } else {
                lease.ttl
            };
            self.start(lease.id, lease.ttl, now + seconds(left), now);
        }
    }

    /// Stops being the leader: forgets every timer.
    pub fn demote(&mut self) {
        self.timers.clear();
        self.queue.clear();
        self.in_flight.clear();
        self.primary = false;
    }

    fn start(&mut self, id: LeaseId, ttl: i64, deadline: Duration, now: Duration) {
        self.timers.insert(
            id,
            Timer {
                ttl,
                deadline,
                checkpointed_at: now,
                renewed: false,
            },
        );
        self.queue.push(Reverse((deadline, id)));
    }

    /// A grant was applied.
    pub fn granted(&mut self, id: LeaseId, ttl: i64, now: Duration) {
        if self.primary {
            self.start(id, ttl, now + seconds(ttl), now);
        }
    }

    /// Leases were revoked or expired (applied).
    pub fn revoked(&mut self, ids: &[LeaseId]) {
        for id in ids {
            self.timers.remove(id);
            self.in_flight.remove(id);
        }
    }

    /// A keep-alive: the lease lives a full TTL from now. Returns the TTL.
    ///
    /// # Errors
    /// [`KvError::LeaseNotFound`] for an unknown lease or one already past
    /// its deadline (its expiry is decided; it cannot be revived).
    pub fn keep_alive(&mut self, id: LeaseId, now: Duration) -> KvResult<i64> {
        let timer = self
            .timers
            .get_mut(&id)
            .filter(|t| t.deadline > now)
            .ok_or(KvError::LeaseNotFound(id))?;
        timer.deadline = now + seconds(timer.ttl);
        timer.renewed = true;
        let (deadline, ttl) = (timer.deadline, timer.ttl);
        self.queue.push(Reverse((deadline, id)));
        Ok(ttl)
    }

    /// Seconds the lease has left (rounded up), or `None` if unknown.
    pub fn remaining(&self, id: LeaseId, now: Duration) -> Option<i64> {
        let timer = self.timers.get(&id)?;
        let left = timer.deadline.saturating_sub(now);
        let whole = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        Some(i64::try_from(whole).unwrap_or(i64::MAX))
    }

    /// The next expiry entry to propose: up to `revoke_batch` leases past
    /// their deadline, earliest first. `None` when none has expired or an
    /// expiry entry is still in flight.
    pub fn expired(&mut self, now: Duration) -> Option<Entry> {
        if !self.primary {
            return None;
        }
        if !self.in_flight.is_empty() {
            if now < self.proposed_at + self.config.retry_after {
                return None;
            }
            // Not applied in time: propose the same leases again.
            self.proposed_at = now;
            return Some(Entry::LeaseExpire {
                ids: self.in_flight.iter().copied().collect(),
            });
        }
        let mut ids = Vec::new();
        while ids.len() < self.config.revoke_batch {
            let Some(&Reverse((deadline, id))) = self.queue.peek() else {
                break;
            };
            if deadline > now {
                break;
            }
            self.queue.pop();
            let current = self.timers.get(&id).is_some_and(|t| t.deadline == deadline);
            if current && !ids.contains(&id) {
                ids.push(id);
            }
        }
        if ids.is_empty() {
            return None;
        }
        self.in_flight = ids.iter().copied().collect();
        self.proposed_at = now;
        Some(Entry::LeaseExpire { ids })
    }

    /// The next checkpoint entry: leases renewed since their last
    /// checkpoint, and leases not checkpointed for `checkpoint_interval`,
    /// with what they have left. `None` when there is nothing to record.
    pub fn checkpoints(&mut self, now: Duration) -> Option<Entry> {
        if !self.primary {
            return None;
        }
        let mut checkpoints = Vec::new();
        let interval = self.config.checkpoint_interval;
        for (&id, timer) in &mut self.timers {
            if checkpoints.len() >= self.config.checkpoint_batch {
                break;
            }
            let due = now >= timer.checkpointed_at + interval;
            if !(timer.renewed || due) || timer.deadline <= now {
                continue;
            }
            let left = timer.deadline.saturating_sub(now);
            let whole = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            let remaining = i64::try_from(whole).unwrap_or(i64::MAX);
            // A full TTL left is stored as "no checkpoint" (0).
            let remaining = if remaining >= timer.ttl { 0 } else { remaining };
            checkpoints.push((id, remaining));
            timer.checkpointed_at = now;
            timer.renewed = false;
        }
        (!checkpoints.is_empty()).then_some(Entry::LeaseCheckpoint { checkpoints })
    }
}
