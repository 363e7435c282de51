//! The shard runtime: a [`Node`] runs S shards over its cores, each shard a
//! Raft group (raft-rs) whose log is the shard's WAL and whose state
//! machine is its MVCC keyspace. How a write and a read travel through it
//! is in docs/node.md.

mod alarms;
mod auth_api;
mod auth_view;
mod cluster;
mod conf_plan;
pub mod entry_codec;
mod error;
mod hash_check;
mod lease_tasks;
mod leases;
pub mod log_store;
mod members_api;
mod membership;
mod merge;
mod node;
mod node_meta;
mod own_thread;
mod placement;
mod raft_log;
mod remote;
mod remote_codec;
mod replica;
mod restore;
mod router;
mod snapshot;
mod space;
mod transport;
mod txn_reads;
mod watch;
mod watch_feed;
mod watermarks;

pub use alarms::Alarm;
pub use auth_view::AuthView;
pub use cluster::{member_id, Cluster, Member, DEFAULT_NAME, DEFAULT_TOKEN};
pub use error::{NodeError, NodeResult};
pub use hash_check::{hash_pair, ShardCheck};
pub use leases::LeaseStatus;
pub use membership::{ClusterView, MemberChange};
pub use node::{
    Consistency, CoreTask, Node, NodeClient, NodeConfig, TreeSync, DEFAULT_QUOTA_BACKEND_BYTES,
};
pub use node_meta::recorded_cluster;
pub use own_thread::on_own_thread;
/// A Raft message between replicas, as a [`Transport`] carries it.
pub use raft::eraftpb::{Message as RaftMessage, MessageType as RaftMessageType};
pub use replica::{home_of_lease, ShardStatus};
pub use restore::{restore_member, Restorable, Restored, RESTORED_INDEX, RESTORED_TERM};
pub use snapshot::PinnedSnapshot;
pub use transport::{
    decode_message, encode_message, CallPart, PeerInbox, PeerRefusal, Transport, TransportFactory,
};
pub use watch::{WatchBatch, WatchStream};
