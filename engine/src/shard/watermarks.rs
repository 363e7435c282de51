//! The node's revision watermarks, shared by every core (docs/node.md,
//! "Revisions" and "Watches across shards"): atomics, each shard writing
//! its own slot.
//!
//! - **The floor**: the highest revision any shard has applied. A shard
//!   raises it before it answers a writer, and reads it before it stamps a
//!   proposal, so a write that starts after another was acknowledged gets a
//!   higher revision on any shard.
//! - **Unpublished stamps**, per shard: revisions the shard has stamped
//!   whose events it has not yet handed to the merged watches' feeds. A
//!   shard with none will never hand out an event at or below the floor it
//!   has not handed out already: everything it stamped is applied and its
//!   events sent, and every later stamp is above the floor of its moment.
//!   So a merged watch may take a quiet shard as closed up to the floor
//!   without asking it ([`Watermarks::closed_if_quiet`]), and an event of
//!   one shard goes out without a round trip to the others.
//!
//! - **Heard**: the highest revision this node heard of from elsewhere:
//!   one a follower replica appended (another member's leader stamped it),
//!   or one a peer's frame carried (HLC receive, docs/node.md, "Revisions
//!   across members"). Stamps observe it with the floor, so a write that
//!   starts on this node after it heard of revision R gets a revision
//!   above R on every shard.
//!
//! Ordering (all `SeqCst`): a shard counts a stamp ([`begin_stamp`]) before
//! it reads the floor for it; a reader reads the floor before it reads the
//! count. If the reader sees no stamp counted, a stamp counted later reads
//! a floor at least as high as the reader's, and so stamps above it. A
//! shard sends a revision's events before it uncounts the stamp
//! ([`published`]), so a reader that sees the count at zero and then
//! drains its channel has those events.
//!
//! [`begin_stamp`]: Watermarks::begin_stamp
//! [`published`]: Watermarks::published

use std::sync::atomic::{AtomicU64, Ordering};

use crate::mvcc::Revision;

/// Shared by every shard of a node.
#[derive(Debug)]
pub(crate) struct Watermarks {
    floor: AtomicU64,
    heard: AtomicU64,
    unpublished: Vec<AtomicU64>,
}

impl Watermarks {
    pub(crate) fn new(shards: usize) -> Watermarks {
        Watermarks {
            floor: AtomicU64::new(0),
            heard: AtomicU64::new(0),
            unpublished: (0..shards).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The highest revision any shard has applied.
    pub(crate) fn floor(&self) -> Revision {
        self.floor.load(Ordering::SeqCst)
    }

    /// A shard applied up to `revision`.
    pub(crate) fn raise_floor(&self, revision: Revision) {
        self.floor.fetch_max(revision, Ordering::SeqCst);
    }

    /// This node heard of `revision` from another member.
    pub(crate) fn hear(&self, revision: Revision) {
        self.heard.fetch_max(revision, Ordering::SeqCst);
    }

    /// The highest revision this node applied or heard of: what its
    /// frames tell its peers.
    pub(crate) fn highest_known(&self) -> Revision {
        self.floor().max(self.heard.load(Ordering::SeqCst))
    }

    /// `shard` is about to stamp a revision: counts it, then answers the
    /// revision the stamp must be above (the floor, or a higher one heard
    /// of from another member).
    pub(crate) fn begin_stamp(&self, shard: usize) -> Revision {
        if let Some(count) = self.unpublished.get(shard) {
            count.fetch_add(1, Ordering::SeqCst);
        }
        self.highest_known()
    }

    /// `stamps` of `shard`'s revisions are settled: applied with their
    /// events sent to the feeds, or never to be applied.
    pub(crate) fn published(&self, shard: usize, stamps: u64) {
        if stamps == 0 {
            return;
        }
        if let Some(count) = self.unpublished.get(shard) {
            let _ = count.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_sub(stamps))
            });
        }
    }

    /// The revision up to which `shard` has handed out every event it ever
    /// will, if it has no stamp unpublished: the floor. `None` while it
    /// has (ask it instead).
    pub(crate) fn closed_if_quiet(&self, shard: usize) -> Option<Revision> {
        let floor = self.floor();
        let quiet = self
            .unpublished
            .get(shard)
            .is_some_and(|count| count.load(Ordering::SeqCst) == 0);
        quiet.then_some(floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_is_closed_up_to_the_floor_only_while_it_has_nothing_unpublished() {
        let marks = Watermarks::new(2);
        marks.raise_floor(10);
        assert_eq!(marks.closed_if_quiet(1), Some(10));
        assert_eq!(marks.begin_stamp(1), 10);
        assert_eq!(marks.closed_if_quiet(1), None);
        assert_eq!(marks.closed_if_quiet(0), Some(10));
        marks.raise_floor(12);
        marks.published(1, 1);
        assert_eq!(marks.closed_if_quiet(1), Some(12));
        // More settled than counted is not a wrap.
        marks.published(1, 5);
        assert_eq!(marks.closed_if_quiet(1), Some(12));
        marks.raise_floor(11);
        assert_eq!(marks.floor(), 12, "the floor never goes down");
    }

    #[test]
    fn a_stamp_is_above_what_was_heard_but_a_quiet_shard_is_closed_only_to_the_floor() {
        let marks = Watermarks::new(1);
        marks.raise_floor(10);
        marks.hear(20);
        assert_eq!(marks.highest_known(), 20);
        assert_eq!(marks.closed_if_quiet(0), Some(10));
        assert_eq!(marks.begin_stamp(0), 20);
        marks.hear(15);
        assert_eq!(marks.highest_known(), 20, "heard never goes down");
    }
}
