//! Each shard's figures, and the node's set of them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::routing::core_of;

use super::{
    Counter, Gauge, Histogram, HistogramReading, DISK_BUCKETS, NETWORK_BUCKETS, REQUEST_BUCKETS,
};

/// One shard's figures on this member. Written only on the shard's core.
#[derive(Debug)]
pub struct ShardMetrics {
    /// The shard.
    pub shard: usize,
    /// The core that runs it.
    pub core: usize,
    /// Entries this replica proposed as leader (writes, lease and alarm
    /// changes; not configuration changes).
    pub proposals: Counter,
    /// Proposals whose writers were told the outcome is lost or unknown
    /// (a newer leader replaced their entries).
    pub proposals_failed: Counter,
    /// Proposed here, not yet applied.
    pub proposals_pending: Gauge,
    /// Committed entries applied to the keyspace.
    pub applied_entries: Counter,
    /// Times the shard's leader changed to a member, as this replica saw
    /// it (as etcd counts: losing the leader is not a change).
    pub leader_changes: Counter,
    /// 1 while this replica leads the shard.
    pub is_leader: Gauge,
    /// 1 while this replica knows a leader (itself or another).
    pub has_leader: Gauge,
    /// The Raft term.
    pub term: Gauge,
    /// The Raft commit index.
    pub commit_index: Gauge,
    /// The last applied index.
    pub applied_index: Gauge,
    /// A ReadIndex round (linearizable reads, stamp confirmations), from
    /// asking it (or asking again) to its index being known.
    pub read_index: Histogram,
    /// WAL writes with their sync (O_DSYNC), each a group commit.
    pub wal_sync: Histogram,
    /// A tree sync (commit of the B+-tree file), from start to end.
    pub tree_sync: Histogram,
    /// Time the shard stood still waiting for a tree sync to end.
    pub tree_sync_wait: Histogram,
    /// Bytes of the tree file.
    pub db_size: Gauge,
    /// Bytes of the tree file in use (pages not free).
    pub db_in_use: Gauge,
    /// Watches open on the shard.
    pub watchers: Gauge,
    /// Events held for watches, not yet delivered.
    pub watch_backlog: Gauge,
    /// Snapshots handed to the transport for a follower.
    pub snapshot_sends: Counter,
    /// Snapshots a follower did not get (the send failed).
    pub snapshot_send_failures: Counter,
    /// Snapshots installed here (this replica was behind).
    pub snapshots_installed: Counter,
    /// Heartbeat round trips to each peer.
    pub peer_round_trips: PeerRoundTrips,
    /// Members asked for their hash of the shard (corruption checks).
    pub hash_asks: Counter,
}

impl ShardMetrics {
    /// Nothing counted yet, for `shard` on `core`.
    pub fn new(shard: usize, core: usize) -> ShardMetrics {
        ShardMetrics {
            shard,
            core,
            proposals: Counter::default(),
            proposals_failed: Counter::default(),
            proposals_pending: Gauge::default(),
            applied_entries: Counter::default(),
            leader_changes: Counter::default(),
            is_leader: Gauge::default(),
            has_leader: Gauge::default(),
            term: Gauge::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            read_index: Histogram::new(REQUEST_BUCKETS),
            wal_sync: Histogram::new(DISK_BUCKETS),
            tree_sync: Histogram::new(DISK_BUCKETS),
            tree_sync_wait: Histogram::new(DISK_BUCKETS),
            db_size: Gauge::default(),
            db_in_use: Gauge::default(),
            watchers: Gauge::default(),
            watch_backlog: Gauge::default(),
            snapshot_sends: Counter::default(),
            snapshot_send_failures: Counter::default(),
            snapshots_installed: Counter::default(),
            peer_round_trips: PeerRoundTrips::default(),
            hash_asks: Counter::default(),
        }
    }
}

/// Peers one shard keeps round trips for; a cluster with more members
/// than this leaves the rest out (etcd's clusters have 3 to 7).
const PEER_SLOTS: usize = 8;

/// Round trips per peer, in fixed slots (no allocation when recording).
#[derive(Debug)]
pub struct PeerRoundTrips {
    /// The peer each slot is for; 0 is a free slot.
    peers: [AtomicU64; PEER_SLOTS],
    round_trips: [Histogram; PEER_SLOTS],
}

impl Default for PeerRoundTrips {
    fn default() -> PeerRoundTrips {
        PeerRoundTrips {
            peers: Default::default(),
            round_trips: std::array::from_fn(|_| Histogram::new(NETWORK_BUCKETS)),
        }
    }
}

impl PeerRoundTrips {
    /// Records a round trip to `peer` (a member id, never 0). Only the
    /// shard's core may call this.
    pub fn observe(&self, peer: u64, took: Duration) {
        if peer == 0 {
            return;
        }
        let slot = self
            .peers
            .iter()
            .position(|p| p.load(Ordering::Relaxed) == peer)
            .or_else(|| {
                let free = self
                    .peers
                    .iter()
                    .position(|p| p.load(Ordering::Relaxed) == 0)?;
                self.peers.get(free)?.store(peer, Ordering::Relaxed);
                Some(free)
            });
        if let Some(histogram) = slot.and_then(|slot| self.round_trips.get(slot)) {
            histogram.observe(took);
        }
    }

    /// Each peer with its round trips so far.
    pub fn read(&self) -> Vec<(u64, HistogramReading)> {
        self.peers
            .iter()
            .zip(&self.round_trips)
            .filter_map(|(peer, histogram)| {
                let peer = peer.load(Ordering::Relaxed);
                (peer != 0).then(|| (peer, histogram.read()))
            })
            .collect()
    }
}

/// Every shard's figures on one node, for a scrape to sum.
#[derive(Debug)]
pub struct NodeMetrics {
    /// This member's id.
    pub member: u64,
    /// By shard.
    pub shards: Vec<Arc<ShardMetrics>>,
}

impl NodeMetrics {
    /// Nothing counted yet: `shards` shards spread over `cores` cores as the
    /// node places them (`routing::core_of`).
    pub fn new(member: u64, shards: usize, cores: usize) -> NodeMetrics {
        NodeMetrics {
            member,
            shards: (0..shards)
                .map(|shard| Arc::new(ShardMetrics::new(shard, core_of(shard, cores))))
                .collect(),
        }
    }

    /// The figures of `shard`, if there is such a shard.
    pub fn shard(&self, shard: usize) -> Option<&Arc<ShardMetrics>> {
        self.shards.get(shard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_peer_gets_its_own_slot_until_they_run_out() {
        let trips = PeerRoundTrips::default();
        for peer in 1..=(PEER_SLOTS as u64 + 2) {
            trips.observe(peer, Duration::from_micros(300));
        }
        trips.observe(1, Duration::from_micros(300));
        trips.observe(0, Duration::from_micros(300));
        let read = trips.read();
        assert_eq!(read.len(), PEER_SLOTS);
        assert_eq!(read[0].0, 1);
        assert_eq!(read[0].1.count(), 2);
        assert!(read.iter().skip(1).all(|(_, r)| r.count() == 1));
    }

    #[test]
    fn shards_are_placed_as_the_node_places_them() {
        let node = NodeMetrics::new(7, 5, 2);
        let cores: Vec<usize> = node.shards.iter().map(|s| s.core).collect();
        assert_eq!(cores, [0, 1, 0, 1, 0]);
        assert!(node.shard(5).is_none());
    }
}
