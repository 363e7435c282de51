//! Hybrid logical clock revisions (docs/node.md, "Revisions").
//!
//! A revision is `(millis << 13) | logical`, where `millis` counts
//! milliseconds since [`KEEL_EPOCH_UNIX_MILLIS`] (2026-01-01 UTC) and
//! `logical` is 13 bits. Revisions stay below 2^53, so that clients that
//! read numbers as doubles (JavaScript, jq) never round one, until
//! [`LAST_WALL_UNIX_MILLIS`] (in 2060).
//!
//! **Shards draw from disjoint sets.** Shard `s` of `S` only hands out
//! revisions whose logical part is `slot * S + s`, for `slot` in
//! `0..8192 / S`. So two shards never stamp the same revision, even in the
//! same millisecond with nothing to order them, and a revision names its
//! shard ([`shard_of_revision`]). A lock's fencing token or a watch's
//! "one revision, one atomic change" rest on that.
//!
//! A shard's leader takes one revision per proposal from its [`Clock`], so
//! every replica applies the same revisions. Invariant: a clock never hands
//! out a value at or below one it handed out or observed before. The wall
//! clock sets the millisecond when it is ahead; otherwise the next revision
//! is the shard's next slot after the last one, so a burst of more than
//! `8192 / S` revisions in one millisecond borrows from the next
//! millisecond (it runs ahead of the wall clock) instead of repeating or
//! failing. Sustained load above that rate keeps the clock ahead of the
//! wall clock for as long as it lasts; it falls back in step once the load
//! drops below it.

use crate::mvcc::Revision;

/// Bits of a revision below the millisecond.
pub const LOGICAL_BITS: u32 = 13;

/// The unix time, in milliseconds, of millisecond 0 of every revision:
/// 2026-01-01T00:00:00Z.
pub const KEEL_EPOCH_UNIX_MILLIS: u64 = 1_767_225_600_000;

/// Every revision is below this (2^53): the largest integer a double holds
/// exactly is 2^53.
pub const REVISION_LIMIT: Revision = 1 << 53;

/// Milliseconds since the epoch that a revision can carry.
const MILLIS_LIMIT: u64 = REVISION_LIMIT >> LOGICAL_BITS;

/// The last wall-clock time (unix milliseconds) a revision can name:
/// 2060-11-03. Past it the clock ignores the wall clock and counts on
/// until [`REVISION_LIMIT`].
pub const LAST_WALL_UNIX_MILLIS: u64 = KEEL_EPOCH_UNIX_MILLIS + MILLIS_LIMIT - 1;

/// Logical values per millisecond, shared out among the shards.
const LOGICAL_VALUES: u64 = 1 << LOGICAL_BITS;

/// The most shards a node may have: each then still gets 8 revisions per
/// millisecond (8,000 a second) before it borrows from the next.
pub const MAX_SHARDS: usize = 1024;

/// The wall clock revisions are stamped from. A seam: tests freeze it or
/// move it ahead.
pub trait WallClock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the unix epoch.
    fn unix_millis(&self) -> u64;
}

/// The system's real-time clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn unix_millis(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A wall clock that moves only when told to: for tests that stamp many
/// revisions in one millisecond, or years ahead.
#[derive(Debug, Default)]
pub struct ManualClock {
    unix_millis: std::sync::atomic::AtomicU64,
}

impl ManualClock {
    /// A clock stopped at `unix_millis`.
    pub fn at(unix_millis: u64) -> ManualClock {
        ManualClock {
            unix_millis: unix_millis.into(),
        }
    }

    /// Sets the time.
    pub fn set(&self, unix_millis: u64) {
        self.unix_millis
            .store(unix_millis, std::sync::atomic::Ordering::SeqCst);
    }
}

impl WallClock for ManualClock {
    fn unix_millis(&self) -> u64 {
        self.unix_millis.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The unix time, in milliseconds, a revision was stamped at (or, for a
/// clock that ran ahead, borrowed).
pub fn unix_millis_of(revision: Revision) -> u64 {
    KEEL_EPOCH_UNIX_MILLIS + (revision >> LOGICAL_BITS)
}

/// The shard (of `shards`) that stamped `revision`.
pub fn shard_of_revision(revision: Revision, shards: usize) -> usize {
    let logical = revision & (LOGICAL_VALUES - 1);
    (logical % shards.max(1) as u64) as usize
}

/// A shard's revision clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clock {
    /// The highest revision handed out or observed.
    last: Revision,
    /// This shard: the logical part of every revision it hands out is
    /// `shard` modulo `stride`.
    shard: u64,
    /// The node's shard count.
    stride: u64,
    /// Revisions this shard may hand out per millisecond.
    slots: u64,
}

/// The clock cannot go on: the next revision would reach 2^53.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the revision clock is exhausted at {last} (revisions stay below 2^53)")]
pub struct ClockExhausted {
    /// The last revision handed out or observed.
    pub last: Revision,
}

impl Clock {
    /// The clock of shard `shard` of `shards` (at most [`MAX_SHARDS`];
    /// more are treated as that many), which will never hand out `last` or
    /// anything below it (the shard's current revision after a restart or
    /// a leader change).
    pub fn new(shard: usize, shards: usize, last: Revision) -> Clock {
        let stride = shards.clamp(1, MAX_SHARDS) as u64;
        Clock {
            last,
            shard: shard as u64 % stride,
            stride,
            slots: LOGICAL_VALUES / stride,
        }
    }

    /// The highest revision handed out or observed.
    pub fn last(&self) -> Revision {
        self.last
    }

    /// This shard's first revision of millisecond `millis` (since the epoch).
    fn first_of(&self, millis: u64) -> Revision {
        (millis << LOGICAL_BITS) | self.shard
    }

    /// This shard's smallest revision above `revision` (which may be
    /// another shard's).
    fn next_after(&self, revision: Revision) -> Revision {
        let millis = revision >> LOGICAL_BITS;
        let logical = revision & (LOGICAL_VALUES - 1);
        let slot = if logical < self.shard {
            0
        } else {
            (logical - self.shard) / self.stride + 1
        };
        if slot < self.slots {
            (millis << LOGICAL_BITS) | (slot * self.stride + self.shard)
        } else {
            // The millisecond is used up: borrow from the next.
            self.first_of(millis + 1)
        }
    }

    /// The next revision, given the wall clock in unix milliseconds.
    ///
    /// # Errors
    /// [`ClockExhausted`] once the next revision would reach 2^53 (the
    /// clock is unchanged).
    pub fn next(&mut self, unix_millis: u64) -> Result<Revision, ClockExhausted> {
        // Before the epoch counts as its first millisecond; a wall clock
        // past what a revision can carry is ignored rather than jumped to,
        // which would end the shard's writes at once.
        let millis = unix_millis.saturating_sub(KEEL_EPOCH_UNIX_MILLIS);
        let wall = if millis < MILLIS_LIMIT {
            self.first_of(millis)
        } else {
            0
        };
        let next = wall.max(self.next_after(self.last));
        if next >= REVISION_LIMIT {
            return Err(ClockExhausted { last: self.last });
        }
        self.last = next;
        Ok(next)
    }

    /// HLC receive: after this, every revision handed out is above
    /// `revision` (a cross-shard read at `revision` needs that).
    pub fn observe(&mut self, revision: Revision) {
        self.last = self.last.max(revision);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const EPOCH: u64 = KEEL_EPOCH_UNIX_MILLIS;

    #[test]
    fn the_wall_clock_sets_the_millisecond_when_it_is_ahead() {
        let mut clock = Clock::new(0, 1, 0);
        assert_eq!(clock.next(EPOCH + 1000), Ok(1000 << 13));
        assert_eq!(clock.next(EPOCH + 1000), Ok((1000 << 13) + 1));
        assert_eq!(clock.next(EPOCH + 1005), Ok(1005 << 13));
        assert_eq!(unix_millis_of(clock.last()), EPOCH + 1005);
    }

    #[test]
    fn a_shard_hands_out_only_its_own_logical_values() {
        let mut clock = Clock::new(2, 3, 0);
        let first = clock.next(EPOCH + 7).unwrap();
        assert_eq!(first, (7 << 13) | 2);
        assert_eq!(clock.next(EPOCH + 7), Ok((7 << 13) | 5));
        assert_eq!(clock.next(EPOCH + 7), Ok((7 << 13) | 8));
        assert_eq!(shard_of_revision(clock.last(), 3), 2);
        // Another shard's revision observed: the next is this shard's
        // first value above it.
        clock.observe((9 << 13) | 4);
        assert_eq!(clock.next(EPOCH + 7), Ok((9 << 13) | 5));
        clock.observe((9 << 13) | 6);
        assert_eq!(clock.next(EPOCH + 7), Ok((9 << 13) | 8));
    }

    #[test]
    fn shards_in_the_same_millisecond_never_share_a_revision() {
        for shards in [1, 2, 3, 7, 64, MAX_SHARDS] {
            let mut clocks: Vec<Clock> = (0..shards).map(|s| Clock::new(s, shards, 0)).collect();
            let mut seen = BTreeSet::new();
            for round in 0..40 {
                for (shard, clock) in clocks.iter_mut().enumerate() {
                    let revision = clock.next(EPOCH + 3).unwrap();
                    assert!(seen.insert(revision), "{shards} shards: {revision} twice");
                    assert_eq!(shard_of_revision(revision, shards), shard);
                    assert!(revision < REVISION_LIMIT, "round {round}");
                }
            }
        }
    }

    #[test]
    fn a_clock_that_goes_back_never_repeats_a_revision() {
        let mut clock = Clock::new(0, 1, 2000 << 13);
        assert_eq!(clock.next(EPOCH + 1500), Ok((2000 << 13) + 1));
        assert_eq!(clock.next(EPOCH + 2000), Ok((2000 << 13) + 2));
    }

    #[test]
    fn a_burst_past_the_logical_part_borrows_from_the_next_millisecond() {
        for shards in [1, 2, 5] {
            let shard = shards - 1;
            let mut clock = Clock::new(shard, shards, 0);
            let per_millisecond = (LOGICAL_VALUES / shards as u64) as usize;
            let mut last = 0;
            // Three milliseconds' worth, with the wall clock frozen.
            for _ in 0..3 * per_millisecond + 10 {
                let next = clock.next(EPOCH + 7).unwrap();
                assert!(next > last, "{shards} shards: {next} after {last}");
                assert_eq!(shard_of_revision(next, shards), shard);
                last = next;
            }
            assert_eq!(unix_millis_of(last), EPOCH + 10);
            // The wall clock reaching a borrowed millisecond: no repeat.
            assert_eq!(clock.next(EPOCH + 10), Ok(clock.next_after(last)));
            assert!(clock.last() > last);
        }
    }

    #[test]
    fn thirty_years_ahead_revisions_are_still_below_2_to_the_53() {
        let thirty_years = 30 * 36_525 * 24 * 3_600 * 10; // ms, 365.25 days a year
        let mut clock = Clock::new(3, 4, 0);
        let revision = clock.next(EPOCH + thirty_years).unwrap();
        assert!(revision < REVISION_LIMIT);
        assert_eq!(unix_millis_of(revision), EPOCH + thirty_years);
        // Every later revision of that millisecond too.
        for _ in 0..LOGICAL_VALUES {
            assert!(clock.next(EPOCH + thirty_years).unwrap() < REVISION_LIMIT);
        }
    }

    #[test]
    fn the_end_of_the_clock_is_an_error_not_a_wrap() {
        let mut clock = Clock::new(0, 1, REVISION_LIMIT - 2);
        assert_eq!(clock.next(0), Ok(REVISION_LIMIT - 1));
        let exhausted = Err(ClockExhausted {
            last: REVISION_LIMIT - 1,
        });
        assert_eq!(clock.next(0), exhausted);
        assert_eq!(clock.next(LAST_WALL_UNIX_MILLIS), exhausted);
        // A wall clock past the last millisecond is ignored, not a jump.
        let mut clock = Clock::new(0, 1, 5 << 13);
        assert_eq!(clock.next(LAST_WALL_UNIX_MILLIS + 1), Ok((5 << 13) + 1));
        assert_eq!(clock.next(u64::MAX), Ok((5 << 13) + 2));
        assert!(Clock::new(0, 1, 0)
            .next(LAST_WALL_UNIX_MILLIS)
            .is_ok_and(|r| r < REVISION_LIMIT));
    }

    #[test]
    fn before_the_epoch_counts_as_its_first_millisecond() {
        let mut clock = Clock::new(1, 2, 0);
        assert_eq!(clock.next(0), Ok(1));
        assert_eq!(clock.next(EPOCH - 1), Ok(3));
    }
}
