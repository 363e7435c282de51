//! What a replica records for the metrics endpoint (docs/metrics.md):
//! its Raft state once a tick, leader changes as raft-rs reports them, and
//! heartbeat round trips to each peer. Everything is written here, on the
//! shard's core, into the shard's own figures (`crate::metrics`).

use std::time::{Duration, Instant};

use raft::eraftpb::{Message, MessageType};

use super::Replica;

/// Ticks between two readings of the watch feeds (which walk every
/// watch of the shard).
const WATCH_READING_TICKS: u64 = 10;

/// Heartbeats a leader waits for answers to, one per peer: the latest,
/// with its context (raft-rs puts a pending ReadIndex's context on its
/// heartbeats, and a follower's answer echoes it). Only the answer to that
/// latest heartbeat is timed, so an answer to an older one is never timed
/// from a newer send.
#[derive(Debug, Default)]
pub(super) struct HeartbeatClock {
    sent: Vec<(u64, Vec<u8>, Instant)>,
}

impl HeartbeatClock {
    fn sent(&mut self, peer: u64, context: &[u8], at: Instant) {
        match self.sent.iter_mut().find(|(p, _, _)| *p == peer) {
            Some(slot) => {
                slot.1.clear();
                slot.1.extend_from_slice(context);
                slot.2 = at;
            }
            None => self.sent.push((peer, context.to_vec(), at)),
        }
    }

    /// How long ago the heartbeat `peer` answered was sent, once per
    /// heartbeat; `None` for an answer to another one.
    fn answered(&mut self, peer: u64, context: &[u8], at: Instant) -> Option<Duration> {
        let position = self
            .sent
            .iter()
            .position(|(p, c, _)| *p == peer && c.as_slice() == context)?;
        let (_, _, sent) = self.sent.swap_remove(position);
        Some(at.saturating_duration_since(sent))
    }
}

/// Whether the leader going from `before` to `now` is a change etcd's
/// `leader_changes_seen` counts: to a leader, not to none.
fn is_leader_change(before: u64, now: u64) -> bool {
    now != before && now != raft::INVALID_ID
}

impl Replica {
    /// The Raft state's gauges, the tree's size and (every
    /// [`WATCH_READING_TICKS`]) the watch feeds'.
    pub(super) fn record_tick_figures(&mut self) {
        self.log_term();
        let figures = &self.metrics;
        let raft = &self.raw.raft;
        figures.term.set(raft.term as i64);
        figures.commit_index.set(raft.raft_log.committed as i64);
        figures.applied_index.set(self.applied as i64);
        figures.is_leader.set(i64::from(self.is_leader()));
        figures
            .has_leader
            .set(i64::from(raft.leader_id != raft::INVALID_ID));
        figures.proposals_pending.set(self.pending.len() as i64);
        let space = self.store.database().space();
        figures.db_size.set(space.file_bytes as i64);
        figures.db_in_use.set(self.store.used_bytes() as i64);
        if self.ticks.is_multiple_of(WATCH_READING_TICKS) {
            let (watchers, backlog) = self.feeds.reading();
            figures.watchers.set(watchers as i64);
            figures.watch_backlog.set(backlog as i64);
        }
    }

    /// Puts the Raft term in the shard's log span (`node.rs`) when it
    /// changed, so that every event from here on says it.
    pub(super) fn log_term(&mut self) {
        let term = self.raw.raft.term;
        if term != self.logged_term {
            self.logged_term = term;
            tracing::Span::current().record("term", term);
        }
    }

    /// A Ready's soft state: the leader this replica knows of. A change
    /// to a leader is counted, as etcd counts it; losing one is not.
    pub(super) fn record_leader(&mut self, leader: u64) {
        if leader != self.known_leader {
            if is_leader_change(self.known_leader, leader) {
                self.metrics.leader_changes.inc();
            }
            self.known_leader = leader;
            self.metrics
                .has_leader
                .set(i64::from(leader != raft::INVALID_ID));
        }
    }

    /// A message on its way to a peer.
    pub(super) fn record_sent(&mut self, message: &Message) {
        if message.get_msg_type() == MessageType::MsgHeartbeat {
            self.heartbeats
                .sent(message.to, &message.context, Instant::now());
        }
    }

    /// A message from a peer, before raft-rs takes it.
    pub(super) fn record_heard(&mut self, message: &Message) {
        if message.get_msg_type() == MessageType::MsgHeartbeatResponse {
            let answered = self
                .heartbeats
                .answered(message.from, &message.context, Instant::now());
            if let Some(took) = answered {
                self.metrics.peer_round_trips.observe(message.from, took);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losing_the_leader_is_not_a_change_and_finding_one_is() {
        let none = raft::INVALID_ID;
        // An election: the leader is lost, then another is found.
        let counted = [(1, none), (none, 2)]
            .iter()
            .filter(|(before, now)| is_leader_change(*before, *now))
            .count();
        assert_eq!(counted, 1);
        assert!(!is_leader_change(2, 2));
        assert!(is_leader_change(none, 1));
    }

    #[test]
    fn only_the_latest_heartbeat_to_a_peer_is_timed_and_only_once() {
        let mut clock = HeartbeatClock::default();
        let start = Instant::now();
        clock.sent(2, b"", start);
        clock.sent(2, b"", start + Duration::from_millis(100));
        clock.sent(3, b"", start);
        let at = start + Duration::from_millis(101);
        assert_eq!(clock.answered(2, b"", at), Some(Duration::from_millis(1)));
        assert_eq!(clock.answered(2, b"", at), None);
        assert_eq!(clock.answered(3, b"", at), Some(Duration::from_millis(101)));
        assert_eq!(clock.answered(4, b"", at), None);
    }

    #[test]
    fn under_read_load_the_answer_with_the_latest_context_is_timed() {
        let mut clock = HeartbeatClock::default();
        let start = Instant::now();
        // Heartbeats carry pending ReadIndex contexts, as raft-rs sends
        // them while reads keep coming.
        clock.sent(2, b"read-1", start);
        clock.sent(2, b"read-2", start + Duration::from_millis(100));
        let at = start + Duration::from_millis(102);
        // The answer to the older one is not timed from the newer send.
        assert_eq!(clock.answered(2, b"read-1", at), None);
        assert_eq!(
            clock.answered(2, b"read-2", at),
            Some(Duration::from_millis(2))
        );
    }
}
