//! Hybrid logical clock revisions (DESIGN.md, "Revisions").
//!
//! A revision is `(unix_millis << 16) | logical`. A shard's leader takes one
//! per proposal from its [`Clock`], so every replica applies the same
//! revisions. Invariant: a clock never hands out a value at or below one it
//! handed out or observed before. The physical part is the wall clock when
//! that is ahead; otherwise the value is the last one plus one, so a burst
//! of more than 65,536 revisions in one millisecond borrows from the next
//! millisecond (the carry goes into the physical part) instead of
//! repeating or failing.

use crate::mvcc::Revision;

/// Bits of a revision that count within one millisecond.
pub const LOGICAL_BITS: u32 = 16;

/// The first revision of millisecond `unix_millis`, or `None` past the
/// year 10889 (when `unix_millis` no longer fits 48 bits).
pub fn revision_at(unix_millis: u64) -> Option<Revision> {
    (unix_millis < 1 << (64 - LOGICAL_BITS)).then_some(unix_millis << LOGICAL_BITS)
}

/// The wall-clock millisecond a revision belongs to.
pub fn millis_of(revision: Revision) -> u64 {
    revision >> LOGICAL_BITS
}

/// A shard's revision clock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Clock {
    /// The highest revision handed out or observed.
    last: Revision,
}

/// The clock cannot go on: every 64-bit revision has been used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the revision clock is exhausted at {last}")]
pub struct ClockExhausted {
    /// The last revision handed out or observed.
    pub last: Revision,
}

impl Clock {
    /// A clock that will never hand out `last` or anything below it (the
    /// shard's current revision, after a restart or a leader change).
    pub fn after(last: Revision) -> Clock {
        Clock { last }
    }

    /// The highest revision handed out or observed.
    pub fn last(&self) -> Revision {
        self.last
    }

    /// The next revision, given the wall clock in unix milliseconds.
    ///
    /// # Errors
    /// [`ClockExhausted`] only when the last revision was `u64::MAX`.
    pub fn next(&mut self, unix_millis: u64) -> Result<Revision, ClockExhausted> {
        // A wall clock past 2^48 ms cannot be encoded; jumping to the top
        // would end the shard's writes, so such a reading is ignored.
        let physical = revision_at(unix_millis).unwrap_or(0);
        let next = if physical > self.last {
            physical
        } else {
            self.last
                .checked_add(1)
                .ok_or(ClockExhausted { last: self.last })?
        };
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
    use super::*;

    #[test]
    fn the_wall_clock_sets_the_physical_part_when_it_is_ahead() {
        let mut clock = Clock::default();
        assert_eq!(clock.next(1000), Ok(1000 << 16));
        assert_eq!(clock.next(1000), Ok((1000 << 16) + 1));
        assert_eq!(clock.next(1005), Ok(1005 << 16));
        assert_eq!(millis_of(clock.last()), 1005);
    }

    #[test]
    fn a_clock_that_goes_back_never_repeats_a_revision() {
        let mut clock = Clock::after(2000 << 16);
        assert_eq!(clock.next(1500), Ok((2000 << 16) + 1));
        assert_eq!(clock.next(2000), Ok((2000 << 16) + 2));
    }

    #[test]
    fn a_burst_past_the_logical_bits_carries_into_the_next_millisecond() {
        let mut clock = Clock::default();
        let mut last = 0;
        for _ in 0..(1 << LOGICAL_BITS) + 10 {
            let next = clock.next(7).unwrap();
            assert!(next > last);
            last = next;
        }
        assert_eq!(millis_of(last), 8);
        // The wall clock at 8 ms is behind what was borrowed: no repeat.
        assert_eq!(clock.next(8), Ok(last + 1));
    }

    #[test]
    fn observing_a_revision_keeps_every_later_one_above_it() {
        let mut clock = Clock::default();
        clock.next(10).unwrap();
        clock.observe(50 << 16);
        assert_eq!(clock.next(20), Ok((50 << 16) + 1));
        clock.observe(3);
        assert_eq!(clock.next(20), Ok((50 << 16) + 2));
    }

    #[test]
    fn the_end_of_the_clock_is_an_error_not_a_wrap() {
        let mut clock = Clock::after(u64::MAX - 1);
        assert_eq!(clock.next(0), Ok(u64::MAX));
        assert_eq!(clock.next(0), Err(ClockExhausted { last: u64::MAX }));
        assert_eq!(revision_at(1 << 48), None);
        let mut clock = Clock::after(5 << 16);
        assert_eq!(
            clock.next(u64::MAX),
            Ok((5 << 16) + 1),
            "ignored, not a jump"
        );
    }
}
