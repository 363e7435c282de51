//! Why a node refused or failed a request.

use crate::mvcc::KvError;

/// Result of a node call.
pub type NodeResult<T> = std::result::Result<T, NodeError>;

/// A refused request, a stopped shard, or a node that is going away.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The keyspace refused the request (deterministically; nothing changed
    /// but, for a write, the shard's current revision).
    #[error(transparent)]
    Kv(#[from] KvError),
    /// A transaction touches keys on more than one shard.
    #[error(
        "transaction keys span shards {shards:?}; keys in one transaction must share a shard: \
         give them a common hash tag, e.g. {{user:42}}/name and {{user:42}}/email"
    )]
    CrossShardTxn {
        /// The shards its keys map to (at least two).
        shards: Vec<usize>,
    },
    /// The shard stopped after a storage failure (fail-stop) and refuses
    /// everything until the node restarts. A write that was in flight when
    /// it stopped may still take effect on the other members: its outcome
    /// is unknown.
    #[error("shard {shard} has stopped: {reason}")]
    ShardStopped {
        /// The shard.
        shard: usize,
        /// The failure that stopped it.
        reason: String,
    },
    /// This replica is not the shard's leader: the write was not
    /// proposed here, or its slot in the log went to another leader's
    /// entry. Either way it did not take effect; the client may retry it
    /// at `leader`.
    #[error("shard {shard} is not led here (leader: {leader:x})")]
    NotLeader {
        /// The shard.
        shard: usize,
        /// The leader's member id as this replica knows it (0: unknown).
        leader: u64,
    },
    /// A linearizable read found no leader it could reach in time (the
    /// member is cut off from a majority, or an election is going on).
    #[error("shard {shard} has no leader that answers")]
    NoLeader {
        /// The shard.
        shard: usize,
    },
    /// A linearizable read got its index from the leader, but this replica
    /// did not apply that far in time (it is catching up): another member
    /// may answer.
    #[error("shard {shard}'s replica here is too far behind its leader to answer in time")]
    Behind {
        /// The shard.
        shard: usize,
    },
    /// The write was proposed, and what became of it cannot be told here:
    /// it may or may not have taken effect (the replica installed a
    /// snapshot past it). The client must read to find out.
    #[error("shard {shard}: the write may or may not have taken effect")]
    OutcomeUnknown {
        /// The shard.
        shard: usize,
    },
    /// The node is shutting down or gone.
    #[error("the node is shutting down")]
    Shutdown,
    /// Starting the node failed.
    #[error("node start failed: {0}")]
    Start(String),
    /// The shard's revisions have reached 2^53 (docs/node.md, "Revisions");
    /// nothing was logged.
    #[error(transparent)]
    RevisionsExhausted(#[from] crate::hlc::ClockExhausted),
    /// The request itself was malformed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl NodeError {
    /// The same error for another waiter of one outcome (a refusal from
    /// the keyspace keeps its message, not its type).
    pub fn copy(&self) -> NodeError {
        match self {
            NodeError::CrossShardTxn { shards } => NodeError::CrossShardTxn {
                shards: shards.clone(),
            },
            NodeError::ShardStopped { shard, reason } => NodeError::ShardStopped {
                shard: *shard,
                reason: reason.clone(),
            },
            NodeError::NotLeader { shard, leader } => NodeError::NotLeader {
                shard: *shard,
                leader: *leader,
            },
            NodeError::NoLeader { shard } => NodeError::NoLeader { shard: *shard },
            NodeError::Behind { shard } => NodeError::Behind { shard: *shard },
            NodeError::OutcomeUnknown { shard } => NodeError::OutcomeUnknown { shard: *shard },
            NodeError::Shutdown => NodeError::Shutdown,
            other => NodeError::InvalidRequest(other.to_string()),
        }
    }
}
