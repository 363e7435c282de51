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

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
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

/// A keep-alive's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewal {
    /// The lease's TTL, seconds: it lives that long from now.
    pub ttl: i64,
    /// An entry to apply before the keep-alive is answered: it clears the
    /// stored checkpoint (see [`Lessor::keep_alive`]).
    pub reset: Option<Entry>,
}

#[derive(Debug, Clone, Copy)]
struct Timer {
    ttl: i64,
    deadline: Duration,
    /// When its remaining TTL was last proposed as a checkpoint.
    checkpointed_at: Duration,
    /// A keep-alive reset it since the last checkpoint.
    renewed: bool,
    /// The stored lease holds a remaining TTL (a checkpoint) that a
    /// restart or a new leader would start it from: a keep-alive must
    /// clear it durably before it is answered.
    checkpointed: bool,
}

impl Timer {
    /// The remaining TTL to record if the timer is due for a checkpoint
    /// (renewed, or not recorded for `interval`) and still running; marks
    /// it recorded. A full TTL left is recorded as "no checkpoint" (0).
    fn checkpoint(&mut self, now: Duration, interval: Duration) -> Option<i64> {
        let due = self.renewed || now >= self.checkpointed_at.saturating_add(interval);
        if !due || self.deadline <= now {
            return None;
        }
        let remaining = seconds_left(self.deadline, now);
        self.checkpointed_at = now;
        self.renewed = false;
        let recorded = if remaining >= self.ttl { 0 } else { remaining };
        self.checkpointed = recorded > 0;
        Some(recorded)
    }
}

/// The leader's lease timers.
#[derive(Debug, Default)]
pub struct Lessor {
    config: LessorConfig,
    timers: BTreeMap<LeaseId, Timer>,
    /// `(deadline, id)` of every timer not yet proposed for expiry,
    /// earliest first: one entry per lease, so keep-alives do not grow it.
    queue: BTreeSet<(Duration, LeaseId)>,
    /// The expiry entry in flight and when it was proposed.
    in_flight: BTreeSet<LeaseId>,
    proposed_at: Duration,
    /// The last lease a checkpoint entry covered: the next one goes on
    /// after it, so every lease gets its turn however many are renewed.
    checkpoint_cursor: LeaseId,
    primary: bool,
}

fn seconds(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

/// Whole seconds from `now` to `deadline`, rounded up (0 once past it).
fn seconds_left(deadline: Duration, now: Duration) -> i64 {
    let left = deadline.saturating_sub(now);
    let whole = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    i64::try_from(whole).unwrap_or(i64::MAX)
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
            let checkpointed = lease.remaining_ttl > 0;
            self.start(lease.id, lease.ttl, now + seconds(left), now, checkpointed);
        }
    }

    /// Stops being the leader: forgets every timer.
    pub fn demote(&mut self) {
        self.timers.clear();
        self.queue.clear();
        self.in_flight.clear();
        self.primary = false;
    }

    fn start(
        &mut self,
        id: LeaseId,
        ttl: i64,
        deadline: Duration,
        now: Duration,
        checkpointed: bool,
    ) {
        let replaced = self.timers.insert(
            id,
            Timer {
                ttl,
                deadline,
                checkpointed_at: now,
                renewed: false,
                checkpointed,
            },
        );
        if let Some(old) = replaced {
            self.queue.remove(&(old.deadline, id));
        }
        self.queue.insert((deadline, id));
    }

    /// A grant was applied.
    pub fn granted(&mut self, id: LeaseId, ttl: i64, now: Duration) {
        if self.primary {
            self.start(id, ttl, now + seconds(ttl), now, false);
        }
    }

    /// Leases were revoked or expired (applied).
    pub fn revoked(&mut self, ids: &[LeaseId]) {
        for id in ids {
            if let Some(timer) = self.timers.remove(id) {
                self.queue.remove(&(timer.deadline, *id));
            }
            self.in_flight.remove(id);
        }
    }

    /// A keep-alive: the lease lives a full TTL from now.
    ///
    /// When the stored lease holds a checkpointed remaining TTL, the
    /// renewal carries the entry that clears it: the caller answers the
    /// keep-alive only once that entry has applied, so that a crash or a
    /// new leader right after the answer does not start the lease from the
    /// old, shorter remaining TTL (etcd does the same).
    ///
    /// # Errors
    /// [`KvError::LeaseNotFound`] for an unknown lease or one already past
    /// its deadline (its expiry is decided; it cannot be revived).
    pub fn keep_alive(&mut self, id: LeaseId, now: Duration) -> KvResult<Renewal> {
        let timer = self
            .timers
            .get_mut(&id)
            .filter(|t| t.deadline > now)
            .ok_or(KvError::LeaseNotFound(id))?;
        self.queue.remove(&(timer.deadline, id));
        timer.deadline = now + seconds(timer.ttl);
        timer.renewed = true;
        self.queue.insert((timer.deadline, id));
        let reset = std::mem::take(&mut timer.checkpointed).then(|| Entry::LeaseCheckpoint {
            checkpoints: vec![(id, 0)],
        });
        Ok(Renewal {
            ttl: timer.ttl,
            reset,
        })
    }

    /// Seconds the lease has left (rounded up), or `None` if unknown.
    pub fn remaining(&self, id: LeaseId, now: Duration) -> Option<i64> {
        let timer = self.timers.get(&id)?;
        Some(seconds_left(timer.deadline, now))
    }

    /// The next expiry entry to propose: up to `revoke_batch` leases past
    /// their deadline, earliest first. `None` when none has expired or an
    /// expiry entry is still in flight.
    pub fn expired(&mut self, now: Duration) -> Option<Entry> {
        if !self.primary {
            return None;
        }
        if !self.in_flight.is_empty() {
            if now < self.proposed_at.saturating_add(self.config.retry_after) {
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
            match self.queue.first() {
                Some(&(deadline, id)) if deadline <= now => {
                    self.queue.remove(&(deadline, id));
                    ids.push(id);
                }
                _ => break,
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
    /// with what they have left, taken round-robin from where the last
    /// entry stopped. `None` when there is nothing to record.
    pub fn checkpoints(&mut self, now: Duration) -> Option<Entry> {
        if !self.primary {
            return None;
        }
        let mut checkpoints = Vec::new();
        let (interval, batch) = (
            self.config.checkpoint_interval,
            self.config.checkpoint_batch,
        );
        let cursor = self.checkpoint_cursor;
        let ranges = [
            (Bound::Excluded(cursor), Bound::Unbounded),
            (Bound::Unbounded, Bound::Included(cursor)),
        ];
        for range in ranges {
            for (&id, timer) in self.timers.range_mut(range) {
                if checkpoints.len() >= batch {
                    break;
                }
                if let Some(remaining) = timer.checkpoint(now, interval) {
                    checkpoints.push((id, remaining));
                    self.checkpoint_cursor = id;
                }
            }
        }
        (!checkpoints.is_empty()).then_some(Entry::LeaseCheckpoint { checkpoints })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_queue_holds_one_entry_per_running_lease() {
        let mut lessor = Lessor::new(LessorConfig::default());
        lessor.promote(&[], Duration::ZERO);
        for id in 1..=3 {
            lessor.granted(id, 60, Duration::ZERO);
        }
        for ms in 1..=10_000u64 {
            lessor
                .keep_alive(1 + (ms % 3) as LeaseId, Duration::from_millis(ms))
                .unwrap();
        }
        assert_eq!(lessor.queue.len(), 3);
        lessor.revoked(&[2]);
        assert_eq!(lessor.queue.len(), 2);
        // Re-granting an id (after a revoke) replaces, never duplicates.
        lessor.granted(1, 30, Duration::from_secs(20));
        assert_eq!(lessor.queue.len(), 2);
    }
}
