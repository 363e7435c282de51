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

/// Heartbeats a leader waits for answers to, one per peer: the answer to
/// the latest is timed, older ones are forgotten.
#[derive(Debug, Default)]
pub(super) struct HeartbeatClock {
    sent: Vec<(u64, Instant)>,
}

impl HeartbeatClock {
    fn sent(&mut self, peer: u64, at: Instant) {
        match self.sent.iter_mut().find(|(p, _)| *p == peer) {
            Some(slot) => slot.1 = at,
            None => self.sent.push((peer, at)),
        }
    }

    /// How long ago the heartbeat `peer` answered was sent, once per
    /// heartbeat.
    fn answered(&mut self, peer: u64, at: Instant) -> Option<Duration> {
        let position = self.sent.iter().position(|(p, _)| *p == peer)?;
        let (_, sent) = self.sent.swap_remove(position);
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

    /// A message on its way to a peer. Only the plain heartbeats are
    /// timed: ReadIndex rounds send heartbeats with a context too, and an
    /// answer to an older one would be timed from the newest.
    pub(super) fn record_sent(&mut self, message: &Message) {
        if message.get_msg_type() == MessageType::MsgHeartbeat && message.context.is_empty() {
            self.heartbeats.sent(message.to, Instant::now());
        }
    }

    /// A message from a peer, before raft-rs takes it.
    pub(super) fn record_heard(&mut self, message: &Message) {
        if message.get_msg_type() == MessageType::MsgHeartbeatResponse && message.context.is_empty()
        {
            if let Some(took) = self.heartbeats.answered(message.from, Instant::now()) {
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
        clock.sent(2, start);
        clock.sent(2, start + Duration::from_millis(100));
        clock.sent(3, start);
        let at = start + Duration::from_millis(101);
        assert_eq!(clock.answered(2, at), Some(Duration::from_millis(1)));
        assert_eq!(clock.answered(2, at), None);
        assert_eq!(clock.answered(3, at), Some(Duration::from_millis(101)));
        assert_eq!(clock.answered(4, at), None);
    }
}
