//! Where each live entry of the log sits on disk, and the rules that make a
//! sequence of records a log.
//!
//! The same rules run when a write becomes durable and when segments are
//! replayed on open, so the two can never disagree. Entries are never
//! overwritten in place: a `Truncate(m)` marker drops every entry above `m`
//! and a `Reset(m)` marker drops every entry, both setting the next expected
//! index to `m + 1`. Worked example:
//!
//! ```text
//! records:  E1 E2 E3 E4 T(2) E3' E4' R(9) E10
//! live:     E1 E2 E3 E4 -> E1 E2 -> E1 E2 E3' E4' -> (empty) -> E10
//! ```
//!
//! Invariant: live entries have consecutive indexes, and a later index sits
//! later on disk (in a segment with a higher or equal seq, at a higher offset).

use std::collections::VecDeque;

use crate::format::RecordKind;

/// Where one record frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Location {
    pub(crate) seq: u64,
    pub(crate) offset: u64,
    pub(crate) frame_len: u32,
}

/// The live entries of the log, in index order.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogIndex {
    /// Index of `locations[0]`; when empty, the index the next entry takes.
    first: u64,
    locations: VecDeque<Location>,
    /// False until the first record is seen: the first entry of a replay may
    /// then start at any index (older segments may have been released).
    anchored: bool,
}

impl LogIndex {
    /// An index for a log that has never held a record: the first entry is 1.
    pub(crate) fn new_log() -> LogIndex {
        LogIndex {
            first: 1,
            locations: VecDeque::new(),
            anchored: true,
        }
    }

    /// An index for replaying segments from an unknown starting point.
    pub(crate) fn for_replay() -> LogIndex {
        LogIndex {
            first: 1,
            locations: VecDeque::new(),
            anchored: false,
        }
    }

    pub(crate) fn first_index(&self) -> u64 {
        self.first
    }

    pub(crate) fn last_index(&self) -> u64 {
        self.next_index() - 1
    }

    pub(crate) fn next_index(&self) -> u64 {
        self.first + self.locations.len() as u64
    }

    pub(crate) fn location(&self, index: u64) -> Option<Location> {
        let offset = index.checked_sub(self.first)?;
        self.locations.get(usize::try_from(offset).ok()?).copied()
    }

    /// Applies one record. Errors say why the record cannot follow the log.
    pub(crate) fn apply(
        &mut self,
        kind: RecordKind,
        index: u64,
        at: Location,
    ) -> Result<(), String> {
        match kind {
            RecordKind::Entry(_) => {
                if !self.anchored {
                    self.first = index;
                    self.anchored = true;
                }
                if index != self.next_index() {
                    return Err(format!(
                        "entry {index} where entry {} was expected",
                        self.next_index()
                    ));
                }
                self.locations.push_back(at);
            }
            RecordKind::Truncate => {
                if !self.anchored {
                    // Replaying from a released start: nothing older is
                    // known, so the log resumes right after the marker.
                    self.locations.clear();
                    self.first = index.saturating_add(1);
                    self.anchored = true;
                    return Ok(());
                }
                if index >= self.next_index() {
                    return Err(format!(
                        "truncation after {index} beyond the last entry {}",
                        self.last_index()
                    ));
                }
                self.truncate_after(index);
            }
            RecordKind::Reset => {
                self.locations.clear();
                self.first = index.saturating_add(1);
                self.anchored = true;
            }
            RecordKind::State => {
                // A state record names the last index when it was written.
                // If nothing else anchored the replay (older segments were
                // released), it tells where the log stands.
                if !self.anchored {
                    self.first = index.saturating_add(1);
                    self.anchored = true;
                }
            }
        }
        Ok(())
    }

    fn truncate_after(&mut self, index: u64) {
        if index < self.first {
            self.locations.clear();
            self.first = index.saturating_add(1);
        } else {
            let keep = usize::try_from(index - self.first + 1).unwrap_or(usize::MAX);
            self.locations.truncate(keep);
        }
    }

    /// Forgets entries stored in segments below `seq` (they were deleted).
    pub(crate) fn forget_segments_below(&mut self, seq: u64) {
        while self.locations.front().is_some_and(|l| l.seq < seq) {
            self.locations.pop_front();
            self.first += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64) -> Location {
        Location {
            seq: 1,
            offset,
            frame_len: 40,
        }
    }

    #[test]
    fn follows_the_worked_example() {
        let mut log = LogIndex::new_log();
        for i in 1..=4 {
            log.apply(RecordKind::Entry(1), i, at(i * 100))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        log.apply(RecordKind::Truncate, 2, at(0))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((log.first_index(), log.last_index()), (1, 2));
        log.apply(RecordKind::Entry(1), 3, at(900))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(log.location(3), Some(at(900)));
        log.apply(RecordKind::Reset, 9, at(0))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((log.first_index(), log.last_index()), (10, 9));
        assert!(log.apply(RecordKind::Entry(1), 11, at(1)).is_err());
        log.apply(RecordKind::Entry(1), 10, at(1))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(log.location(10), Some(at(1)));
        assert_eq!(log.location(9), None);
    }

    #[test]
    fn a_new_log_starts_at_one_and_a_replay_anywhere() {
        let mut fresh = LogIndex::new_log();
        assert_eq!((fresh.first_index(), fresh.last_index()), (1, 0));
        assert!(fresh.apply(RecordKind::Entry(1), 5, at(0)).is_err());
        let mut replay = LogIndex::for_replay();
        assert!(replay.apply(RecordKind::Entry(1), 5, at(0)).is_ok());
        assert_eq!(replay.first_index(), 5);
    }

    #[test]
    fn truncation_above_the_end_is_rejected() {
        let mut log = LogIndex::new_log();
        log.apply(RecordKind::Entry(1), 1, at(0))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(log.apply(RecordKind::Truncate, 2, at(0)).is_err());
        assert!(
            log.apply(RecordKind::Truncate, 1, at(0)).is_ok(),
            "after the last: a no-op"
        );
        assert_eq!(log.next_index(), 2);
        assert!(log.apply(RecordKind::Truncate, 0, at(0)).is_ok());
        assert_eq!(log.next_index(), 1);
    }

    #[test]
    fn forgetting_segments_moves_first() {
        let mut log = LogIndex::new_log();
        for i in 1..=3 {
            let loc = Location {
                seq: i,
                offset: 64,
                frame_len: 40,
            };
            log.apply(RecordKind::Entry(1), i, loc)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        log.forget_segments_below(3);
        assert_eq!((log.first_index(), log.last_index()), (3, 3));
    }
}
