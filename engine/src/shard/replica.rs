//! One shard's replica on its core: the raft-rs `RawNode` over the shard's
//! WAL, driven in the documented Ready order, with the MVCC keyspace as its
//! state machine. Everything here runs on one glommio executor; the only
//! way in is a [`ShardCall`] on the replica's channel.
//!
//! The loop, once per wake-up (see docs/node.md, "Write path"):
//! 1. take every queued call: writes are proposed (the leader stamps each
//!    with the next HLC revision), linearizable reads share one ReadIndex,
//!    serializable reads are served at once while the round has room;
//! 2. handle Ready: apply committed entries, queue new entries and the
//!    hard state to the WAL, await their one group-commit sync, advance,
//!    apply what that committed, answer the writers;
//! 3. serve the reads that are ready, up to a round's bytes or time (the
//!    rest after the core's next I/O poll);
//! 4. every `TREE_SYNC_*`, make the tree durable and release WAL segments
//!    below its applied index. The shard's thread places and writes the
//!    dirty pages; the two syncs and the meta write run on a blocking
//!    thread while the loop goes on (`TreeSyncing`).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft::eraftpb::{ConfState, EntryType, HardState, Message};
use raft::{RawNode, StateRole};

mod conf_changes;
mod figures;
use conf_changes::conf_from_ids;

use crate::btree::{CommitSync, DeferredDurability, Options};
use crate::hlc::{Clock, WallClock};
use crate::metrics::ShardMetrics;
use crate::mvcc::{
    AlarmAction, AlarmKind, Applied, Entry, Indexed, KvError, LeaseHomes, LeaseId, LeaseInfo,
    LeaseTask, Lessor, LessorConfig, RangeRequest, RangeResponse, Renewal, Response, Revision,
    Store, WatchId, WatchRequest,
};
use crate::shard::cluster::Cluster;
use crate::shard::entry_codec;
use crate::shard::error::{NodeError, NodeResult};
use crate::shard::lease_tasks::LeaseTasks;
use crate::shard::log_store::{self, LogStore, RAFT_ENTRY_KIND};
use crate::shard::membership::ClusterView;
use crate::shard::node::{answer_bytes, TreeSync};
use crate::shard::router::CoreRouter;
use crate::shard::snapshot;
use crate::shard::space::NodeSpace;
use crate::shard::transport::Transport;
use crate::shard::watch_feed::{Subscriber, WatchFeeds};
use crate::shard::watermarks::Watermarks;

/// How a caller gets its answer; the receiving end may be on any thread.
pub(crate) type Reply<T> = futures_channel::oneshot::Sender<NodeResult<T>>;

/// Keep-alives waiting on a lease's reset in flight, each with its TTL.
type ResetsInFlight = Rc<RefCell<HashMap<LeaseId, Vec<(Reply<i64>, i64)>>>>;

/// Raft ticks this often (docs/cluster.md, "Raft settings").
const TICK: Duration = Duration::from_millis(50);
/// The tree is also made durable once the held transaction has changed
/// this many nodes (about a page of memory each).
const TREE_SYNC_NODES: usize = 16_384;
/// Room the tree file keeps beyond what its next sync needs, while no
/// NOSPACE alarm is raised (a sixteenth of the file's capacity when that is
/// less): what the syncs of deletes, compaction and the alarm's own
/// entries may use once the disk is full.
const TREE_HEADROOM: u64 = 8 << 20;
/// Bytes of WAL entries a replay reads and applies at a time.
const REPLAY_CHUNK_BYTES: u64 = 16 << 20;
/// Rows of history a compaction step removes inside each apply batch.
const COMPACT_STEP_ROWS: usize = 500;
/// Calls taken per wake-up before Ready is handled, to bound latency.
const MAX_CALLS_PER_ROUND: usize = 4096;
/// Lease expiry batches (of `LessorConfig::revoke_batch` leases) proposed
/// and applied one after another in one loop round. Each waits for the one
/// before to apply, so a mass expiry goes as fast as it applies, in small
/// entries with client calls taken between rounds, instead of one batch
/// per tick (which held etcd-like storms to 1,000 leases a second).
const EXPIRY_BATCHES_PER_ROUND: usize = 10;
/// Answer bytes of reads served in one loop round. A round that reaches
/// it leaves the rest of the ready reads for the next round, which waits
/// for the core's next I/O poll ([`READ_ROUND_PAUSE`]): glommio reaps I/O
/// only between passes over its task queue, so a round that copied
/// hundreds of MiB of large answers would hold back every write's WAL
/// completion on this core behind it.
const READ_BYTES_PER_ROUND: usize = 2 << 20;
/// Time a loop round spends serving reads, whatever their size (a read
/// refused for its room still walks the tree): a thousand point reads
/// take about 2 ms, so a busy shard still serves hundreds per round.
const READ_TIME_PER_ROUND: Duration = Duration::from_millis(2);
/// How long a round that left reads ready waits before the next: enough
/// for the wait to be a timer, so that the core polls its I/O between them.
const READ_ROUND_PAUSE: Duration = Duration::from_micros(50);
/// Ticks without a leader's heartbeat before a follower campaigns: raft-rs
/// picks each election's timeout in `[ELECTION_TICKS, MAX_ELECTION_TICKS)`,
/// 0.6 to 1.0 s in eight steps, so that two followers rarely campaign at
/// once, and a dead leader is replaced within 2 s even when they do (a
/// split vote costs one more timeout). With 0.8 to 1.6 s, 3 kills in 20
/// left a shard without writes for 2.1 to 2.5 s.
const ELECTION_TICKS: usize = 12;
/// The end (exclusive) of the randomized election timeout.
const MAX_ELECTION_TICKS: usize = 20;
/// Ticks between a leader's heartbeats (100 ms, etcd's default): six go
/// out in the shortest election timeout, so a late or lost heartbeat
/// starts no election.
const HEARTBEAT_TICKS: usize = 2;
/// Bytes of proposals a leader holds uncommitted before it drops more
/// (answered as not led here): a leader cut off from its followers stops
/// taking writes instead of growing without bound.
const MAX_UNCOMMITTED_BYTES: u64 = 64 << 20;
/// Bytes of committed entries handed to apply in one Ready.
const MAX_COMMITTED_BYTES_PER_READY: u64 = 16 << 20;
/// How long a snapshot made for followers stays pinned after no send holds
/// it: long enough for raft-rs to retry a send that failed, or to send it
/// to a second follower, without pinning another commit.
const SNAPSHOT_KEPT: Duration = Duration::from_secs(10);
/// Applied entries the WAL keeps for followers that fell behind, as etcd
/// keeps 5,000 (`SnapshotCatchUpEntries`): a follower further behind needs
/// a snapshot.
const CATCH_UP_ENTRIES: u64 = 5_000;
/// How long a read of the WAL for a follower may take before it is given
/// up (`serve_fetches`).
const FETCH_TIMEOUT: Duration = Duration::from_millis(500);
/// Ticks between two checks of whether a leader should hand leadership to
/// the shard's preferred member (1 s).
const SPREAD_CHECK_TICKS: u64 = 20;
/// Ticks before a leader whose hand-over did not happen tries again (10 s).
const SPREAD_RETRY_TICKS: u64 = 200;
/// Ticks a ReadIndex may go unanswered before it is asked again: raft-rs
/// drops one silently when no leader is known, or the leader has not yet
/// committed in its term.
const READ_INDEX_RETRY_TICKS: u64 = 20;
/// Ticks a linearizable read may wait for its ReadIndex before it fails
/// (the shard has no leader it can reach).
const READ_INDEX_GIVE_UP_TICKS: u64 = 100;

/// WAL segments a leader keeps beyond the catch-up tail for a live
/// follower that lags (64 MiB each by default): past them, the follower
/// gets a snapshot.
const MAX_CATCH_UP_SEGMENTS: usize = 4;

/// The first WAL index a replicated shard keeps when its tree is durable
/// at `durable` and it applied `applied`: what replay needs (from the
/// durable index), the catch-up tail of [`CATCH_UP_ENTRIES`], and, while
/// the log is no longer than [`MAX_CATCH_UP_SEGMENTS`], everything a live
/// follower still lacks (`needed`, from its matched index). A follower
/// that is merely slow (its core busy, 20,000 writes a second on its
/// shard) falls 5,000 entries behind in a quarter of a second; without
/// this it was sent a snapshot of the whole tree again and again.
fn wal_keep_from(durable: u64, applied: u64, needed: Option<u64>, segments: usize) -> u64 {
    let tail = applied.saturating_sub(CATCH_UP_ENTRIES);
    let tail = match needed {
        Some(needed) if segments <= MAX_CATCH_UP_SEGMENTS => tail.min(needed),
        _ => tail,
    };
    durable.min(tail)
}

/// A tree sync whose syncs and meta write run on a blocking thread.
struct TreeSyncing {
    durability: DeferredDurability,
    started: Instant,
    job: Pin<Box<dyn Future<Output = std::io::Result<()>>>>,
}

/// What a core asks of one of its shards.
pub(crate) enum ShardCall {
    /// Propose an entry; answered once applied.
    Write { entry: Entry, reply: Reply<Applied> },
    /// A part of a write that fans out over shards: proposed here when
    /// this replica leads, else sent to the leader (`remote.rs`).
    WriteAtLeader(Box<crate::shard::remote::Part>),
    /// A write member `from` sent as call `id` for this replica to
    /// propose as the shard's leader.
    RemoteWrite { from: u64, id: u64, entry: Entry },
    /// A range on this shard alone, answered with the revision read at.
    Range {
        request: RangeRequest,
        linearizable: bool,
        reply: Reply<(Revision, RangeResponse)>,
    },
    /// Phase 1 of a read across shards: the highest revision this shard
    /// handed out or observed.
    LastRevision { reply: Reply<Revision> },
    /// Phase 1 in a cluster: the highest revision this node knows of
    /// once a majority confirmed a round that began after the call came
    /// (so at least every write answered anywhere before it).
    KnownRevision { reply: Reply<Revision> },
    /// Phase 2: never assign the part's revision or below again (on the
    /// shard's leader, wherever it is), wait until every entry stamped at
    /// or below it is applied here, then read at it.
    RangeAt(Box<crate::shard::remote::ReadPart>),
    /// Phase 2 once the leader closed the revision: read when applied up
    /// to `index`.
    RangeAtIndex {
        part: Box<crate::shard::remote::ReadPart>,
        index: u64,
    },
    /// Member `from` asks this replica, as leader, to close `revision`
    /// (call `id`; `remote_codec::Request::Close`).
    RemoteClose {
        from: u64,
        id: u64,
        revision: Revision,
    },
    /// How much of the leader's log `member` holds, in percent (0 for one
    /// not heard from lately), from the leader wherever it is.
    MemberProgress { member: u64, reply: Reply<u64> },
    /// Member `from` asks this replica, as leader, how much of its log
    /// learner `member` holds (call `id`; `remote_codec::Request::Progress`).
    RemoteProgress { from: u64, id: u64, member: u64 },
    /// Member `member`'s hash of this shard at `revision`, asked over the
    /// peer transport (`hash_check.rs`).
    HashOn {
        member: u64,
        revision: Revision,
        reply: Reply<Option<u32>>,
    },
    /// Member `from` asks for this replica's hash at `revision` (call
    /// `id`; `remote_codec::Request::Hash`).
    RemoteHash {
        from: u64,
        id: u64,
        revision: Revision,
    },
    /// The leader closed `revision` for this replica's merged watches:
    /// closed here once applied up to `index`.
    ClosedAt { revision: Revision, index: u64 },
    /// A close for merged watches found no leader or no answer: asked
    /// again if a watch still waits for it.
    CloseFailed { revision: Revision },
    /// The shard's leadership placement, as this replica holds it.
    Placement {
        reply: Reply<crate::mvcc::Placement>,
    },
    /// Answer `true` once the shard's leader is what `want` says, `false`
    /// at `until`.
    AwaitLeader {
        want: crate::shard::placement::LeaderWant,
        until: Instant,
        reply: Reply<bool>,
    },
    /// On a lease's home shard: restart its TTL; answers the TTL.
    LeaseKeepAlive { id: LeaseId, reply: Reply<i64> },
    /// On a lease's home shard: the lease and its remaining seconds.
    LeaseStatus {
        id: LeaseId,
        reply: Reply<Option<(LeaseInfo, i64)>>,
    },
    /// The keys of this shard attached to a lease.
    LeaseKeys {
        id: LeaseId,
        reply: Reply<Vec<Vec<u8>>>,
    },
    /// Every lease this shard holds (its own and mirrors).
    Leases { reply: Reply<Vec<LeaseInfo>> },
    /// The alarms raised in this shard's state.
    Alarms { reply: Reply<Vec<(AlarmKind, u64)>> },
    /// This shard's part of a merged watch: never assign `observe` or
    /// below again, then watch; answers the store watcher's id.
    Watch {
        request: WatchRequest,
        observe: Revision,
        subscriber: Subscriber,
        reply: Reply<WatchId>,
    },
    /// The reader of a merged watch needs this shard to close up to
    /// `revision` (HLC receive), and to say so once it has.
    WatchProgress { id: WatchId, revision: Revision },
    /// The merged watch is gone.
    WatchCancel { id: WatchId },
    /// The shard's Raft and storage state.
    Status { reply: Reply<ShardStatus> },
    /// A Raft message from a peer (checked by the `PeerInbox`).
    Peer(Box<Message>),
    /// A message to `peer` was dropped by the transport.
    Unreachable { peer: u64 },
    /// A snapshot from a peer: its message and the tree file, received
    /// whole and synced.
    Snapshot {
        message: Box<Message>,
        file: std::path::PathBuf,
    },
    /// How sending a snapshot to `peer` ended.
    SnapshotSent { peer: u64, delivered: bool },
    /// A round of this shard's lease tasks reached every mirror, or failed
    /// (`lease_tasks.rs`).
    LeaseRound {
        tasks: Vec<LeaseTask>,
        outcome: NodeResult<crate::shard::lease_tasks::Carried>,
    },
}

/// One shard's state, for `endpoint status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardStatus {
    /// The shard.
    pub shard: usize,
    /// Its Raft leader's id (0 while none is known).
    pub leader: u64,
    /// Its Raft term.
    pub raft_term: u64,
    /// Its last Raft log index.
    pub raft_index: u64,
    /// Its Raft commit index as this replica knows it.
    pub commit_index: u64,
    /// The last index applied to its tree.
    pub applied_index: u64,
    /// Its current revision.
    pub revision: Revision,
    /// History below this revision is trimmed; below the compaction
    /// revision it is being trimmed, a step at a time.
    pub compacted_revision: Revision,
    /// Bytes of its B+-tree file.
    pub db_size: u64,
    /// Why the shard stopped, if it did (an I/O failure, or a failure to
    /// open it at start); it then answers nothing else.
    pub stopped: Option<String>,
    /// The group's voters, by member id, as this replica's Raft
    /// configuration has them.
    pub voters: Vec<u64>,
    /// Its learners (members that replicate and do not vote).
    pub learners: Vec<u64>,
    /// In a joint configuration, the voters it is leaving (empty
    /// otherwise).
    pub voters_outgoing: Vec<u64>,
    /// The members this replica heard from lately (within two election
    /// timeouts).
    pub recent_peers: Vec<u64>,
    /// Configuration changes raft-rs refused since the replica started:
    /// always 0 unless a change was applied twice.
    pub conf_refusals: u64,
    /// The newest member list revision a change of its configuration was
    /// made for (docs/membership.md).
    pub conf_list_revision: u64,
    /// The member its leadership is pinned to (0: none; docs/cluster.md,
    /// "Leadership placement").
    pub pinned_leader: u64,
    /// Members it is never led from (drained).
    pub avoided: Vec<u64>,
    /// The index of the snapshot this replica keeps pinned for followers
    /// (0: none): while it lasts, its tree's freed pages are not reused.
    /// A send in flight holds its pin a little longer.
    pub snapshot_pinned: u64,
}

impl ShardStatus {
    /// The status of a shard that stopped for `reason`.
    pub(crate) fn stopped(shard: usize, reason: &str) -> ShardStatus {
        ShardStatus {
            shard,
            leader: 0,
            raft_term: 0,
            raft_index: 0,
            commit_index: 0,
            applied_index: 0,
            revision: 0,
            compacted_revision: 0,
            db_size: 0,
            stopped: Some(reason.to_string()),
            voters: Vec::new(),
            voters_outgoing: Vec::new(),
            recent_peers: Vec::new(),
            conf_refusals: 0,
            conf_list_revision: 0,
            learners: Vec::new(),
            pinned_leader: 0,
            avoided: Vec::new(),
            snapshot_pinned: 0,
        }
    }
}

impl ShardCall {
    /// Answers the call with `error` instead of doing it.
    pub(crate) fn answer_error(self, error: NodeError) {
        match self {
            ShardCall::Write { reply, .. } => drop(reply.send(Err(error))),
            ShardCall::WriteAtLeader(part) => drop(part.reply.send(Err(error))),
            ShardCall::Range { reply, .. } => drop(reply.send(Err(error))),
            ShardCall::LastRevision { reply } => drop(reply.send(Err(error))),
            ShardCall::KnownRevision { reply } => drop(reply.send(Err(error))),
            ShardCall::Placement { reply } => drop(reply.send(Err(error))),
            ShardCall::AwaitLeader { reply, .. } => drop(reply.send(Err(error))),
            ShardCall::RangeAt(part) => drop(part.reply.send(Err(error))),
            ShardCall::RangeAtIndex { part, .. } => drop(part.reply.send(Err(error))),
            ShardCall::LeaseKeepAlive { reply, .. } => drop(reply.send(Err(error))),
            ShardCall::LeaseStatus { reply, .. } => drop(reply.send(Err(error))),
            ShardCall::LeaseKeys { reply, .. } => drop(reply.send(Err(error))),
            ShardCall::Leases { reply } => drop(reply.send(Err(error))),
            ShardCall::Alarms { reply } => drop(reply.send(Err(error))),
            ShardCall::Watch { reply, .. } => drop(reply.send(Err(error))),
            ShardCall::Status { reply } => drop(reply.send(Err(error))),
            ShardCall::MemberProgress { reply, .. } => drop(reply.send(Err(error))),
            ShardCall::HashOn { reply, .. } => drop(reply.send(Err(error))),
            ShardCall::WatchProgress { .. }
            | ShardCall::RemoteProgress { .. }
            | ShardCall::RemoteHash { .. }
            | ShardCall::WatchCancel { .. }
            | ShardCall::LeaseRound { .. }
            | ShardCall::RemoteWrite { .. }
            | ShardCall::RemoteClose { .. }
            | ShardCall::ClosedAt { .. }
            | ShardCall::CloseFailed { .. }
            | ShardCall::Peer(_)
            | ShardCall::Unreachable { .. }
            | ShardCall::Snapshot { .. }
            | ShardCall::SnapshotSent { .. } => {}
        }
    }
}

pub use crate::routing::home_of_lease;

/// How a read of a shard's head chooses its header revision (see
/// [`Replica::header_revision`]).
#[derive(Debug, Clone, Copy)]
enum Header {
    /// Served at once: the highest revision that is safe now.
    Serializable,
    /// The node's floor, taken when the read is first ready (`None` until
    /// then), once this shard's writes stamped at or below it applied.
    Linearizable(Option<Revision>),
}

/// Answers waiting for applies to reach a Raft index.
enum ReadWaiter {
    /// A read of this shard's head, answered with a header revision.
    Head {
        request: RangeRequest,
        /// How its header revision is chosen.
        header: Header,
        reply: Reply<(Revision, RangeResponse)>,
    },
    At {
        request: RangeRequest,
        revision: Revision,
        reply: Reply<RangeResponse>,
    },
    /// A write of a replicated shard's leader, to be stamped once a
    /// majority confirmed, after it came, that this member still leads:
    /// their frames carried what they heard of, so the stamp is above
    /// every write answered anywhere before this one came (docs/node.md,
    /// "Revisions across members"). It waits for no apply.
    Stamp { entry: Entry, reply: Reply<Applied> },
    /// A read across shards on a replicated shard's leader: once a
    /// majority confirmed this member leads, read at `revision` when
    /// applied up to `floor` (the log's end when it closed the revision)
    /// or the confirmed index, whichever is later.
    AtAfterRound {
        floor: u64,
        term: u64,
        request: RangeRequest,
        revision: Revision,
        reply: Reply<RangeResponse>,
    },
    /// A close another member asked of this leader: answered, once a
    /// majority confirmed this member leads, with the index to wait for.
    CloseFor {
        floor: u64,
        term: u64,
        from: u64,
        id: u64,
        transport: Rc<dyn Transport>,
    },
    /// Phase 1 of a read across shards in a cluster: answered, once a
    /// majority confirmed a round, with the highest revision known here.
    Known { reply: Reply<Revision> },
    /// This leader closed `revision` for its merged watches in `term`:
    /// once a majority confirmed it still leads in that term, closed when
    /// applied up to `floor` or the confirmed index.
    CloseHere {
        revision: Revision,
        floor: u64,
        term: u64,
    },
    /// `revision` is closed once applies reach the index waited for.
    Closed { revision: Revision },
}

/// A read with the tick it was taken at: it fails once it has waited
/// [`READ_INDEX_GIVE_UP_TICKS`].
type Aged = (u64, ReadWaiter);

/// A read waiting for applies to reach an index.
type Waiting = (u64, Aged);

/// Linearizable reads that share one ReadIndex request.
struct Indexing {
    /// The tick it was asked at.
    asked: u64,
    /// When it was asked (the round's latency is recorded).
    asked_at: Instant,
    waiters: Vec<Aged>,
}

impl ReadWaiter {
    fn answer_error(self, error: NodeError) {
        match self {
            ReadWaiter::Head { reply, .. } => drop(reply.send(Err(error))),
            ReadWaiter::At { reply, .. } => drop(reply.send(Err(error))),
            ReadWaiter::Stamp { reply, .. } => drop(reply.send(Err(error))),
            ReadWaiter::AtAfterRound { reply, .. } => drop(reply.send(Err(error))),
            ReadWaiter::Known { reply } => drop(reply.send(Err(error))),
            // Asked again by `give_up`; nobody waits on it otherwise.
            ReadWaiter::CloseHere { .. } | ReadWaiter::Closed { .. } => {}
            ReadWaiter::CloseFor {
                from,
                id,
                transport,
                ..
            } => {
                // Shard 0: the asker matches an answer by its id alone.
                crate::shard::remote::answer_close(&*transport, 0, from, id, &Err(error));
            }
        }
    }
}

/// A proposed write waiting for its entry to apply.
struct Pending {
    index: u64,
    term: u64,
    /// The revision it was stamped with.
    revision: Revision,
    reply: Reply<Applied>,
}

/// Tunables of a replica.
#[derive(Debug, Clone)]
pub(crate) struct ReplicaConfig {
    pub(crate) shard: usize,
    pub(crate) shards: usize,
    /// Cores of the node (where leaders are spread, `Cluster::preferred_leader`).
    pub(crate) cores: usize,
    pub(crate) tree_sync: TreeSync,
    pub(crate) wal: keel_wal::WalConfig,
    pub(crate) tree: Options,
    pub(crate) clock: Arc<dyn WallClock>,
    pub(crate) space: Arc<NodeSpace>,
    /// The cluster as it was created: a new shard's group starts with its
    /// voters (a joining member's too, which then replays every change).
    pub(crate) bootstrap: Arc<Cluster>,
    /// The cluster as the node follows it now.
    pub(crate) view: ClusterView,
    /// Whether the node has a peer transport (its shards are Raft groups
    /// other members may share).
    pub(crate) replicated: bool,
    /// What this shard counts (written only here, on its core).
    pub(crate) metrics: Arc<ShardMetrics>,
}

/// One shard's replica. Not `Send`: it lives on its core.
pub(crate) struct Replica {
    shard: usize,
    raw: RawNode<LogStore>,
    /// Where messages to the other members go (none for a single member).
    transport: Option<Rc<dyn Transport>>,
    /// Whether this shard's group has other voters.
    replicated: bool,
    /// The shard's directory (`kv.db`, `wal/`, snapshot files).
    dir: std::path::PathBuf,
    /// How its tree file is opened (again, after a snapshot install).
    tree_options: Options,
    /// The snapshot received last, not yet installed: `(index, file)`.
    received: Option<(u64, std::path::PathBuf)>,
    /// The snapshot this replica pinned for followers, with when a send
    /// last held it (or it was made); each send in flight holds it too
    /// (`release_snapshot`).
    made: Option<(Rc<snapshot::PinnedSnapshot>, Instant)>,
    /// Ticks since the replica started (ReadIndex retries count them).
    ticks: u64,
    /// The cluster as the node follows it: the default spread of
    /// leadership (`spread_leadership`) and the configuration every shard
    /// is brought to (`reconcile_conf`).
    view: ClusterView,
    /// The configuration as of each change applied since the tree was last
    /// made durable, oldest first, and the one before them: a snapshot of
    /// the durable tree is sent with the configuration at its index.
    confs: VecDeque<(u64, ConfState)>,
    /// The tick of the last configuration change this leader proposed.
    conf_proposed_at: Option<u64>,
    /// The newest member list revision a change of this shard's
    /// configuration was made for (`conf_changes.rs`).
    conf_list_revision: u64,
    /// Configuration changes raft-rs refused since the replica started
    /// (never one keel proposes: a sign of a change applied twice).
    conf_refusals: u64,
    /// The node's cores (the spread is over members and their cores).
    cores: usize,
    /// The tick of this leader's last leadership transfer, if any.
    transferred_at: Option<u64>,
    /// The tick each peer was last heard from (`slowest_live_follower`).
    heard_at: HashMap<u64, u64>,
    wal: keel_wal::Wal,
    store: Store,
    /// Stamps this shard's revisions: strictly increasing, and (by their
    /// logical part) never another shard's.
    clock: Clock,
    /// The time `clock` is given.
    wall: Arc<dyn WallClock>,
    /// The node's space: quota, use, alarms (`space.rs`).
    space: Arc<NodeSpace>,
    /// A tree sync found no room: none is tried again before then.
    sync_blocked_until: Option<Instant>,
    /// The WAL had no room for its next segment at the last tick (and a
    /// new attempt was asked for).
    wal_was_low: bool,
    lessor: Lessor,
    /// Keep-alives waiting for a lease's checkpoint reset in flight (with
    /// the TTL each is answered with): the first keep-alive proposed it,
    /// and every keep-alive that comes before it applies is answered with
    /// it, not before (`keep_alive`).
    resets_in_flight: ResetsInFlight,
    /// The node's shard count (lease homes depend on it).
    shards: usize,
    /// This core's way to other shards.
    router: Rc<CoreRouter>,
    /// This shard's lease tasks in flight to its mirrors, and the writers
    /// waiting for them (driven by the leader once replay is done).
    lease_tasks: LeaseTasks,
    last_lease_id: LeaseId,
    feeds: WatchFeeds,
    /// The largest WAL payload.
    max_entry_bytes: usize,
    /// The last log index at start: entries up to it are replays.
    replayed_up_to: u64,
    /// The commit index at start: entries up to it are replayed from the
    /// WAL straight into the store, in chunks (`replay`), not through
    /// raft-rs.
    committed_at_start: u64,
    tree_sync: TreeSync,
    /// The node's floor (the highest acknowledged revision: every shard
    /// stamps above it) and each shard's unpublished stamps
    /// (`watermarks.rs`).
    marks: Arc<Watermarks>,
    /// Stamps of this shard settled (applied, or never to be) since the
    /// last pump of the watch feeds: uncounted in `marks` after it.
    settled: u64,
    started: Instant,
    pending: VecDeque<Pending>,
    /// In a cluster: every revision up to here is closed for the merged
    /// watches (its leader closed it, and applies reached the index it
    /// named).
    closed: Revision,
    /// The highest revision a close was asked for (`request_close`).
    close_asked: Revision,
    /// Callers waiting for this shard's leader to be, or not be, a member
    /// (`placement.rs`), until a deadline; answered each loop round.
    leader_waits: Vec<(
        crate::shard::placement::LeaderWant,
        Instant,
        Option<Reply<bool>>,
    )>,
    /// Writes whose stamp round a majority confirmed, to be proposed once
    /// the Ready that brought the confirmation is done with.
    confirmed: Vec<(Entry, Reply<Applied>)>,
    /// Linearizable reads not yet given a ReadIndex.
    unindexed: Vec<Aged>,
    /// ReadIndex requests in flight, by context.
    indexing: BTreeMap<u64, Indexing>,
    next_read_context: u64,
    /// Names this replica's ReadIndex contexts apart from those it asked
    /// before a restart, which a leader may still hold (raft-rs drops a
    /// request whose context is pending, and answers the old one).
    incarnation: u64,
    /// Reads waiting for applies to reach an index, with their age.
    waiting: Vec<Waiting>,
    /// Reads that may be served now, in arrival order, a bounded number
    /// of bytes per loop round (`serve_ready_reads`).
    ready_reads: VecDeque<ReadWaiter>,
    /// What this loop round's reads took so far.
    read_round: ReadRound,
    applied: u64,
    unsynced_entries: u64,
    /// Bytes of the entries applied since the last tree sync began.
    unsynced_bytes: u64,
    unsynced_since: Option<Instant>,
    was_leader: bool,
    /// The tree sync in flight, if any (one at a time).
    tree_syncing: Option<TreeSyncing>,
    failure: Option<String>,
    /// What this shard counts (`figures.rs`).
    metrics: Arc<ShardMetrics>,
    /// The leader as raft-rs last reported it (leader changes are counted).
    known_leader: u64,
    /// Heartbeats sent and not yet answered, for round trips.
    heartbeats: figures::HeartbeatClock,
    /// The term the shard's log span says (`figures.rs`).
    logged_term: u64,
    /// Hashes of this replica other members asked for (`hash_check.rs`).
    hash_jobs: Rc<RefCell<crate::shard::hash_check::HashJobs>>,
}

fn stopped(shard: usize, reason: &str) -> NodeError {
    NodeError::ShardStopped {
        shard,
        reason: reason.to_string(),
    }
}

fn start_error(shard: usize, what: &str, error: impl std::fmt::Display) -> NodeError {
    NodeError::Start(format!("shard {shard}: {what}: {error}"))
}

impl Replica {
    /// Opens the shard in `dir` (`wal/` and `kv.db`): reopens the tree,
    /// reads the WAL from the tree's applied index and hands raft-rs the
    /// rest to replay.
    pub(crate) async fn open(
        dir: &Path,
        config: ReplicaConfig,
        marks: Arc<Watermarks>,
        router: Rc<CoreRouter>,
        transport: Option<Rc<dyn Transport>>,
    ) -> NodeResult<Replica> {
        let shard = config.shard;
        std::fs::create_dir_all(dir).map_err(|e| start_error(shard, "create dir", e))?;
        let options = Options {
            // Every tree commit after unsynced ones takes two syncs anyway.
            commit_sync: CommitSync::TwoSyncs,
            ..config.tree
        };
        let store = open_store(dir, options.clone(), shard, config.shards)?;
        let max_entry_bytes = config.wal.max_payload();
        let wal = keel_wal::Wal::open(dir.join("wal"), config.wal)
            .await
            .map_err(|e| start_error(shard, "open WAL", e))?;
        let figures = config.metrics.clone();
        wal.observe_syncs(Box::new(move |took| figures.wal_sync.observe(took)));
        let (hard_state, conf_state, installed) = match wal.state() {
            Some(blob) => {
                log_store::decode_state(&blob).map_err(|e| start_error(shard, "WAL state", e))?
            }
            None => {
                // Every member starts every shard's group with the same
                // voters and an empty log, as etcd's static bootstrap does;
                // a member that joins later replays every change from there
                // (or gets a snapshot).
                let conf_state = ConfState {
                    voters: config.bootstrap.voters(),
                    ..ConfState::default()
                };
                let hard_state = HardState::default();
                wal.save_state(&log_store::encode_state(&hard_state, &conf_state, (0, 0)))
                    .await
                    .map_err(|e| start_error(shard, "bootstrap", e))?;
                (hard_state, conf_state, (0, 0))
            }
        };
        // A snapshot install cut short after its tree was put in place: the
        // WAL is reset to it now (`snapshot.rs`).
        let (hard_state, installed) = match snapshot::interrupted(dir, store.applied_index())
            .map_err(|e| start_error(shard, "snapshot", e))?
        {
            Some((index, term)) => {
                let mut hard_state = hard_state;
                hard_state.commit = hard_state.commit.max(index);
                hard_state.term = hard_state.term.max(term);
                let reset = wal.reset(index);
                let saved = wal.save_state(&log_store::encode_state(
                    &hard_state,
                    &conf_state,
                    (index, term),
                ));
                reset
                    .await
                    .map_err(|e| start_error(shard, "snapshot WAL reset", e))?;
                saved
                    .await
                    .map_err(|e| start_error(shard, "snapshot WAL reset", e))?;
                snapshot::finish(dir).map_err(|e| start_error(shard, "snapshot", e))?;
                (hard_state, (index, term))
            }
            None => (hard_state, installed),
        };
        snapshot::remove_leftovers(dir);
        // The tree's configuration is the one as of its applied index (the
        // WAL's state record may be ahead of it, or from before the
        // configuration moved into the tree).
        // Without the row the shard's configuration never changed (the
        // WAL's may be ahead of the tree: its first change is replayed).
        let (conf_state, conf_list_revision) = match store.conf_ids() {
            Ok(Some(ids)) => {
                let revision = ids.list_revision;
                (conf_from_ids(ids), revision)
            }
            Ok(None) => {
                let conf = ConfState {
                    voters: config.bootstrap.voters(),
                    ..ConfState::default()
                };
                (conf, 0)
            }
            Err(e) => return Err(start_error(shard, "configuration", e)),
        };
        let applied = store.applied_index();
        let last = wal.last_index();
        if applied > last {
            let error = format!("the tree applied entry {applied} but the WAL ends at {last}");
            return Err(start_error(shard, "read WAL", error));
        }
        let mut hard_state = hard_state;
        // The commit index is saved lazily; whatever the tree applied was
        // committed, and nothing past the log can be.
        hard_state.commit = hard_state.commit.max(applied).min(last);
        let commit = hard_state.commit;
        // Entries up to the commit index are applied before the shard
        // serves, a bounded chunk at a time (`replay`); raft-rs holds only
        // those after it, and starts as if it had applied up to it.
        let replicated = config.replicated;
        let (floor, older, entries) = read_tail(&wal, applied, commit, replicated, installed)
            .await
            .map_err(|e| start_error(shard, "read WAL", e))?;
        let mut highest = store.current_revision();
        for entry in &entries {
            if entry.entry_type == EntryType::EntryNormal && !entry.data.is_empty() {
                // One that does not decode is skipped when it applies.
                if let Ok((revision, _)) = entry_codec::decode(&entry.data) {
                    highest = highest.max(revision);
                }
            }
        }
        let confs = VecDeque::from([(applied, conf_state.clone())]);
        let mut log = LogStore::new(hard_state, conf_state, floor, &older, entries)
            .map_err(|e| start_error(shard, "read WAL", e))?;
        log.set_installed(installed);
        let raft_config = raft::Config {
            id: config.view.load().me,
            election_tick: ELECTION_TICKS,
            min_election_tick: ELECTION_TICKS,
            max_election_tick: MAX_ELECTION_TICKS,
            heartbeat_tick: HEARTBEAT_TICKS,
            applied: commit,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            // A leader that cannot hear a quorum steps down (so a minority
            // never answers), and a member that rejoins does not depose a
            // working leader: pre-vote alone does not give that
            // (docs/cluster.md, "Raft settings").
            check_quorum: replicated,
            pre_vote: true,
            max_uncommitted_size: MAX_UNCOMMITTED_BYTES,
            max_committed_size_per_ready: MAX_COMMITTED_BYTES_PER_READY,
            ..raft::Config::default()
        };
        // The shard's log span says the term from here on, raft-rs' own
        // first events included (`figures.rs` keeps it up to date).
        tracing::Span::current().record("term", log.hard_state().term);
        let logger = crate::shard::raft_log::raft_logger();
        let mut raw =
            RawNode::new(&raft_config, log, &logger).map_err(|e| start_error(shard, "raft", e))?;
        if !replicated {
            // One voter: no need to wait for an election timeout.
            raw.campaign()
                .map_err(|e| start_error(shard, "campaign", e))?;
        }
        marks.raise_floor(highest);
        let space = &config.space;
        space.set_used(shard, store.used_bytes());
        space.set_alarmed(shard, has_no_space_alarm(&store)?);
        Ok(Replica {
            shard,
            raw,
            transport,
            replicated,
            dir: dir.to_path_buf(),
            tree_options: options,
            received: None,
            made: None,
            ticks: 0,
            view: config.view.clone(),
            confs,
            conf_proposed_at: None,
            conf_list_revision,
            conf_refusals: 0,
            cores: config.cores,
            transferred_at: None,
            heard_at: HashMap::new(),
            wal,
            store,
            clock: Clock::new(shard, config.shards, highest),
            wall: config.clock,
            space: config.space,
            sync_blocked_until: None,
            wal_was_low: false,
            lessor: Lessor::new(LessorConfig::default()),
            resets_in_flight: Rc::default(),
            shards: config.shards,
            router,
            lease_tasks: LeaseTasks::new(shard, config.shards, replicated),
            last_lease_id: 0,
            feeds: WatchFeeds::default(),
            max_entry_bytes,
            replayed_up_to: last,
            committed_at_start: commit,
            tree_sync: config.tree_sync,
            marks,
            settled: 0,
            started: Instant::now(),
            pending: VecDeque::new(),
            confirmed: Vec::new(),
            leader_waits: Vec::new(),
            closed: 0,
            close_asked: 0,
            unindexed: Vec::new(),
            indexing: BTreeMap::new(),
            next_read_context: 1,
            incarnation: random_u64(),
            waiting: Vec::new(),
            ready_reads: VecDeque::new(),
            read_round: ReadRound::default(),
            applied,
            unsynced_entries: 0,
            unsynced_bytes: 0,
            unsynced_since: None,
            was_leader: false,
            tree_syncing: None,
            failure: None,
            metrics: config.metrics,
            known_leader: raft::INVALID_ID,
            heartbeats: figures::HeartbeatClock::default(),
            logged_term: 0,
            hash_jobs: Rc::default(),
        })
    }

    /// Applies what the WAL holds past the tree (the entries replayed at
    /// start), so that the shard answers nothing, and drives no lease task,
    /// from before them. A single voter commits them with its first entry
    /// as leader, in a round or two; whatever is left (a group that needs
    /// its peers) the loop goes on with. A failure stops the shard.
    ///
    /// At least one round runs, even with nothing to replay: it handles
    /// the campaign's Ready, so the new leader has promoted its lessor
    /// (every lease's timer) before the first call is taken.
    pub(crate) async fn replay(&mut self) {
        let conf = self.raw.raft.prs().conf().to_conf_state();
        self.publish_conf(&conf);
        if let Err(reason) = self.replay_committed().await {
            self.fail(format!("replay: {reason}"));
            return;
        }
        loop {
            let before = self.applied;
            if let Err(reason) = self.drive().await {
                self.fail(format!("replay: {reason}"));
                return;
            }
            let stalled = self.applied == before && !self.raw.has_ready();
            if self.applied >= self.replayed_up_to || stalled {
                // The list the tree holds may be newer than the node's
                // copy (a copy that could not be saved).
                self.members_applied();
                self.auth_applied();
                return;
            }
        }
    }

    /// Applies the entries the WAL holds past the tree up to the commit
    /// index at start, straight from the WAL, [`REPLAY_CHUNK_BYTES`] at a
    /// time, with tree syncs in between as they fall due: the memory a
    /// replay holds is bounded in bytes, however long the WAL's tail.
    async fn replay_committed(&mut self) -> Result<(), String> {
        while self.applied < self.committed_at_start {
            let range = self.applied + 1..self.committed_at_start + 1;
            let records = self
                .wal
                .read_limited(range, REPLAY_CHUNK_BYTES)
                .await
                .map_err(|e| format!("read WAL: {e}"))?;
            let entries = records
                .into_iter()
                .map(decode_record)
                .collect::<Result<Vec<_>, String>>()?;
            if entries.is_empty() {
                return Err(format!("the WAL ends before entry {}", self.applied + 1));
            }
            self.apply(entries)?;
            self.maybe_sync_tree(false).await?;
        }
        Ok(())
    }

    /// Serves calls until the channel closes, then makes the tree durable
    /// and closes the WAL.
    pub(crate) async fn run(mut self, calls: flume::Receiver<ShardCall>) {
        // A scrape before the first tick sees the state the shard opened with.
        self.record_tick_figures();
        let mut next_tick = Instant::now() + TICK;
        // Expiries still due after the last round: do not sleep.
        // Expiries or compaction still due after the last round: the loop
        // goes round again at once, taking calls in between.
        let mut expiring = false;
        let mut compacting = false;
        loop {
            let wait = if expiring || compacting {
                Duration::ZERO
            } else {
                next_tick.saturating_duration_since(Instant::now())
            };
            let first = if !self.ready_reads.is_empty() && self.failure.is_none() {
                // Reads left over from the last round: the core polls its
                // I/O before the next, however many calls are waiting
                // (they are taken below). The channel's close is seen
                // once they are all served, so reads ready at shutdown are
                // answered, not refused.
                glommio::timer::sleep(READ_ROUND_PAUSE).await;
                None
            } else {
                if wait.is_zero() {
                    // Going round again at once: let the core's other tasks
                    // (connections, the mesh, other shards) run first.
                    futures_lite::future::yield_now().await;
                }
                futures_lite::future::or(async { Some(calls.recv_async().await) }, async {
                    glommio::timer::sleep(wait).await;
                    None
                })
                .await
            };
            self.read_round = ReadRound::default();
            match first {
                Some(Ok(call)) => self.take(call),
                Some(Err(_closed)) => break,
                None => {}
            }
            for _ in 0..MAX_CALLS_PER_ROUND {
                match calls.try_recv() {
                    Ok(call) => self.take(call),
                    Err(_) => break,
                }
            }
            // A stopped shard only answers: applying or syncing on top of a
            // failure could skip entries and then make the gap durable. It
            // has nothing due, so it waits for calls.
            if self.failure.is_some() {
                expiring = false;
                compacting = false;
                continue;
            }
            let applied_before = self.applied;
            if Instant::now() >= next_tick {
                next_tick = Instant::now() + TICK;
                self.ticks += 1;
                self.raw.tick();
                self.spread_leadership();
                self.reconcile_conf();
                self.save_members_again();
                self.release_snapshot();
                self.retry_read_index();
                self.lease_checkpoints();
                self.check_wal_space();
                self.record_tick_figures();
            }
            self.request_read_index();
            if let Err(reason) = self.drive().await {
                self.fail(reason);
                continue;
            }
            if self.propose_confirmed() {
                if let Err(reason) = self.drive().await {
                    self.fail(reason);
                    continue;
                }
            }
            if self.replicated {
                self.make_snapshot();
                self.serve_fetches().await;
                if let Err(reason) = self.drive().await {
                    self.fail(reason);
                    continue;
                }
            }
            expiring = false;
            for _ in 0..EXPIRY_BATCHES_PER_ROUND {
                if !self.propose_due_expiry() {
                    break;
                }
                expiring = true;
                if let Err(reason) = self.drive().await {
                    self.fail(reason);
                    break;
                }
            }
            self.check_leader_waits();
            self.serve_ready_reads();
            self.drive_lease_tasks();
            compacting = self.applied == applied_before && self.compact_while_idle();
            self.pump_watches();
            if let Err(reason) = self.maybe_sync_tree(false).await {
                self.fail(reason);
            }
        }
        if self.failure.is_none() {
            let _ = self.maybe_sync_tree(true).await;
        }
        // A stopped shard never reports its tree sync, but the job must not
        // outlive the replica: a late meta write could land after the
        // directory is opened again.
        if let Some(syncing) = self.tree_syncing.take() {
            let _ = syncing.job.await;
        }
        self.fail("the node is shutting down".to_string());
        let _ = self.wal.close().await;
    }

    fn status(&self) -> ShardStatus {
        let conf = self.raw.raft.prs().conf().to_conf_state();
        let placement = self.store.placement().unwrap_or_default();
        ShardStatus {
            shard: self.shard,
            leader: self.raw.raft.leader_id,
            raft_term: self.raw.raft.term,
            raft_index: self.raw.raft.raft_log.last_index(),
            commit_index: self.raw.raft.raft_log.committed,
            applied_index: self.applied,
            revision: self.store.current_revision(),
            compacted_revision: self.store.compacted_revision(),
            db_size: self.store.database().space().file_bytes,
            stopped: None,
            voters: conf.voters,
            learners: conf.learners,
            voters_outgoing: conf.voters_outgoing,
            conf_refusals: self.conf_refusals,
            conf_list_revision: self.conf_list_revision,
            recent_peers: self
                .heard_at
                .iter()
                .filter(|(_, at)| self.ticks.saturating_sub(**at) <= 2 * ELECTION_TICKS as u64)
                .map(|(id, _)| *id)
                .collect(),
            pinned_leader: placement.pinned,
            avoided: placement.avoided,
            snapshot_pinned: self.made.as_ref().map_or(0, |(source, _)| source.index()),
        }
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// Why raft-rs would panic on `message`, if it would: it trusts its
    /// peers to send only what its own code sends, and a member of another
    /// version, or a damaged one, must not take the core down.
    fn insane(&self, message: &Message) -> Option<String> {
        use raft::eraftpb::MessageType;
        match message.get_msg_type() {
            MessageType::MsgReadIndex | MessageType::MsgReadIndexResp
                if message.entries.len() != 1 =>
            {
                Some(format!(
                    "a read index with {} entries",
                    message.entries.len()
                ))
            }
            MessageType::MsgHeartbeat
                if message.commit > self.raw.raft.raft_log.last_index()
                    && message.term >= self.raw.raft.term =>
            {
                // A leader sends min(its commit, what this replica matched).
                Some(format!(
                    "a heartbeat committing {} past the last index {}",
                    message.commit,
                    self.raw.raft.raft_log.last_index()
                ))
            }
            MessageType::MsgHup
            | MessageType::MsgBeat
            | MessageType::MsgPropose
            | MessageType::MsgUnreachable
            | MessageType::MsgSnapStatus
            | MessageType::MsgCheckQuorum => Some("a local message from a peer".to_string()),
            _ => None,
        }
    }

    /// The refusal of a write this replica cannot propose, naming the
    /// leader it knows of.
    fn not_leader(&self) -> NodeError {
        NodeError::NotLeader {
            shard: self.shard,
            // While it hands leadership over, the member it hands it to.
            leader: self
                .raw
                .raft
                .lead_transferee
                .unwrap_or(self.raw.raft.leader_id),
        }
    }

    /// On each tick: a leader that is not this shard's preferred member
    /// hands leadership to it once it is reachable and has every entry
    /// (so the hand-over takes one message, and writes pause for about a
    /// round trip). Checked every [`SPREAD_CHECK_TICKS`]; after a hand-over
    /// that did not happen (this member still leads), not again for
    /// [`SPREAD_RETRY_TICKS`], so a member that cannot win does not make
    /// elections over and over.
    fn spread_leadership(&mut self) {
        if !self.is_leader() || !self.ticks.is_multiple_of(SPREAD_CHECK_TICKS) {
            return;
        }
        let Some((mut preferred, directed)) = self.placed_leader() else {
            return;
        };
        if self.failure.is_some()
            || preferred == self.raw.raft.id
            || self.raw.raft.lead_transferee.is_some()
            || self
                .transferred_at
                .is_some_and(|at| self.ticks - at < SPREAD_RETRY_TICKS)
        {
            return;
        }
        let live = |id: u64| self.raw.raft.prs().get(id).is_some_and(|p| p.recent_active);
        if !live(preferred) {
            match self.any_live_eligible() {
                Some(other) => preferred = other,
                None => return,
            }
        }
        let last = self.raw.raft.raft_log.last_index();
        // The default spread waits for the member to have every entry, so
        // the hand-over pauses writes for one message; an operator's
        // placement (a pin, a drain) goes as soon as the member is live:
        // under steady writes the log's end moves on every round, and
        // raft-rs catches the member up before it hands over.
        let ready = self
            .raw
            .raft
            .prs()
            .get(preferred)
            .is_some_and(|p| p.recent_active && (p.matched == last || directed));
        if ready {
            tracing::debug!(shard = self.shard, to = preferred, "leadership transfer");
            self.transferred_at = Some(self.ticks);
            self.raw.transfer_leader(preferred);
        }
    }

    /// The member that should lead this shard now, and whether an
    /// operator's placement sends it there (a pin, or a drain of this
    /// member or of the default one): the pinned member, unless it is
    /// avoided or not a member; else the default spread's member if it is
    /// not avoided; else the spread going round the members not avoided.
    /// `None` for a single member, when every member is avoided, or when
    /// the placement cannot be read.
    fn placed_leader(&self) -> Option<(u64, bool)> {
        if !self.replicated {
            return None;
        }
        // Only a listed voter that votes in this shard's group may lead it
        // (a learner, or a member on its way in or out, is left out).
        let cluster = self.view.load();
        let conf = self.raw.raft.prs().conf().to_conf_state();
        let may_lead = |id: u64| {
            conf.voters.contains(&id)
                && conf.voters_outgoing.is_empty()
                && cluster.member(id).is_some_and(|m| !m.learner)
        };
        let default = cluster.preferred_leader_among(self.shard, self.cores, may_lead)?;
        // Unreadable: leave leadership where it is rather than send it
        // where a placement may forbid.
        let placement = self.store.placement().ok()?;
        let eligible = |id: u64| !placement.avoided.contains(&id) && may_lead(id);
        if placement.pinned != 0 && eligible(placement.pinned) {
            return Some((placement.pinned, true));
        }
        // Only the shards whose default member is avoided move; a drained
        // leader hands over to the default as an operator's move.
        if eligible(default) {
            let drained_here = placement.avoided.contains(&self.raw.raft.id);
            return Some((default, drained_here));
        }
        cluster
            .preferred_leader_among(self.shard, self.cores, eligible)
            .map(|id| (id, true))
    }

    /// When this leader is avoided and the member its placement names is
    /// not live: the live eligible member with the most of the log, if any
    /// (a drain must not wait on a member that is down).
    fn any_live_eligible(&self) -> Option<u64> {
        let placement = self.store.placement().ok()?;
        let me = self.raw.raft.id;
        if !placement.avoided.contains(&me) {
            return None;
        }
        let voters = self.raw.raft.prs().conf().voters().ids();
        self.raw
            .raft
            .prs()
            .iter()
            .filter(|(id, p)| {
                **id != me
                    && p.recent_active
                    && voters.contains(**id)
                    && !placement.avoided.contains(id)
            })
            .max_by_key(|(_, p)| p.matched)
            .map(|(id, _)| *id)
    }

    /// Takes one call: proposes, answers, or queues it.
    fn take(&mut self, call: ShardCall) {
        if let Some(reason) = &self.failure {
            // To a peer, a replica that stopped is one that does not lead:
            // the write was not proposed, and the group goes on under
            // another leader, which the peer looks for.
            let stopped_error = || NodeError::NoLeader { shard: self.shard };
            match (&call, &self.transport) {
                (ShardCall::RemoteWrite { from, id, .. }, Some(transport)) => {
                    let bytes = crate::shard::remote_codec::encode_answer(&Err(stopped_error()));
                    let part = crate::shard::transport::CallPart::Answer;
                    let _ = transport.send_call(*from, self.shard, part, *id, bytes);
                    return;
                }
                (ShardCall::RemoteHash { from, id, .. }, Some(transport)) => {
                    let answer = Err(stopped(self.shard, reason));
                    crate::shard::remote::answer_close(
                        &**transport,
                        self.shard,
                        *from,
                        *id,
                        &answer,
                    );
                    return;
                }
                (
                    ShardCall::RemoteClose { from, id, .. }
                    | ShardCall::RemoteProgress { from, id, .. },
                    Some(transport),
                ) => {
                    let answer = Err(stopped_error());
                    crate::shard::remote::answer_close(
                        &**transport,
                        self.shard,
                        *from,
                        *id,
                        &answer,
                    );
                    return;
                }
                _ => {}
            }
            match call {
                ShardCall::Status { reply } => {
                    let _ = reply.send(Ok(ShardStatus {
                        stopped: Some(reason.clone()),
                        ..self.status()
                    }));
                }
                call => call.answer_error(stopped(self.shard, reason)),
            }
            return;
        }
        match call {
            ShardCall::Write { entry, reply } => self.propose_write(entry, reply),
            ShardCall::WriteAtLeader(part) => self.propose_at_leader(*part),
            ShardCall::RemoteWrite { from, id, entry } => self.propose_for(from, id, entry),
            ShardCall::Range {
                request,
                linearizable: false,
                reply,
            } => self.serve_or_queue(ReadWaiter::Head {
                request,
                header: Header::Serializable,
                reply,
            }),
            ShardCall::Range { request, reply, .. } => {
                let waiter = ReadWaiter::Head {
                    request,
                    header: Header::Linearizable(None),
                    reply,
                };
                self.unindexed.push((self.ticks, waiter));
            }
            ShardCall::LastRevision { reply } => {
                let _ = reply.send(Ok(self.clock.last()));
            }
            ShardCall::KnownRevision { reply } => {
                if self.replicated {
                    self.unindexed
                        .push((self.ticks, ReadWaiter::Known { reply }));
                } else {
                    let _ = reply.send(Ok(self.clock.last()));
                }
            }
            ShardCall::RangeAt(part) => self.range_at(*part),
            ShardCall::RangeAtIndex { part, index } => {
                let part = *part;
                let waiter = ReadWaiter::At {
                    request: part.request,
                    revision: part.revision,
                    reply: part.reply,
                };
                self.wait_for(index, (self.ticks, waiter));
            }
            ShardCall::RemoteClose { from, id, revision } => self.close_for(from, id, revision),
            ShardCall::MemberProgress { member, reply } => self.learner_progress(member, reply),
            ShardCall::RemoteProgress { from, id, member } => {
                let answer = self.progress_here(member);
                if let Some(transport) = &self.transport {
                    crate::shard::remote::answer_close(&**transport, self.shard, from, id, &answer);
                }
            }
            ShardCall::HashOn {
                member,
                revision,
                reply,
            } => match self.transport.clone() {
                // A leader knows who answers it: one it has not heard from
                // within an election timeout is not asked (its answer
                // would be waited for in vain).
                Some(_) if self.is_leader() && !self.heard_lately(member) => {
                    let _ = reply.send(Err(NodeError::InvalidRequest(format!(
                        "member {member:x} has not been heard from lately"
                    ))));
                }
                Some(transport) => {
                    self.metrics.hash_asks.inc();
                    crate::shard::hash_check::ask_hash(
                        self.router.clone(),
                        transport,
                        member,
                        self.shard,
                        revision,
                        reply,
                    );
                }
                None => drop(reply.send(Err(NodeError::InvalidRequest(
                    "this member has no peers to ask".to_string(),
                )))),
            },
            ShardCall::RemoteHash { from, id, revision } => {
                if let Some(transport) = self.transport.clone() {
                    crate::shard::hash_check::answer_hash(
                        &self.hash_jobs,
                        self.router.clone(),
                        transport,
                        self.shard,
                        (from, id),
                        revision,
                    );
                }
            }
            ShardCall::LeaseKeepAlive { id, reply } => self.keep_alive(id, reply),
            ShardCall::LeaseStatus { id, reply } => {
                // Only the home's leader runs the lease's timer; another
                // replica would tell the full TTL.
                if self.replicated && !self.is_leader() {
                    let _ = reply.send(Err(self.not_leader()));
                    return;
                }
                let now = self.now();
                let answer = self.store.lease(id).map_err(NodeError::from).map(|found| {
                    found.map(|info| {
                        let remaining = self.lessor.remaining(id, now).unwrap_or(info.ttl);
                        (info, remaining)
                    })
                });
                let _ = reply.send(answer);
            }
            ShardCall::LeaseKeys { id, reply } => {
                let _ = reply.send(self.store.lease_keys(id).map_err(NodeError::from));
            }
            ShardCall::Leases { reply } => {
                let _ = reply.send(self.store.leases().map_err(NodeError::from));
            }
            ShardCall::Alarms { reply } => {
                let _ = reply.send(self.store.alarms().map_err(NodeError::from));
            }
            ShardCall::Status { reply } => {
                let _ = reply.send(Ok(self.status()));
            }
            ShardCall::Watch {
                request,
                observe,
                subscriber,
                reply,
            } => {
                self.close_for_watches(observe);
                let answer = self.store.watch(&request).map_err(NodeError::from);
                if let Ok(id) = answer {
                    self.feeds.add(id, subscriber);
                    // Tell the reader where this shard stands at once.
                    self.feeds.want_progress(id, observe);
                }
                let _ = reply.send(answer);
            }
            ShardCall::WatchProgress { id, revision } => {
                self.close_for_watches(revision);
                self.feeds.want_progress(id, revision);
            }
            ShardCall::Placement { reply } => {
                let _ = reply.send(self.store.placement().map_err(NodeError::from));
            }
            ShardCall::AwaitLeader { want, until, reply } => {
                self.leader_waits.push((want, until, Some(reply)));
                self.check_leader_waits();
            }
            ShardCall::ClosedAt { revision, index } => {
                self.wait_for(index, (self.ticks, ReadWaiter::Closed { revision }));
            }
            ShardCall::CloseFailed { revision } => {
                self.close_asked = self.closed;
                if self.feeds.wants_progress_to(revision) {
                    self.request_close(revision);
                }
            }
            ShardCall::WatchCancel { id } => self.feeds.cancel(&mut self.store, id),
            ShardCall::Peer(message) => {
                if let Some(why) = self.insane(&message) {
                    tracing::warn!(
                        shard = self.shard,
                        from = message.from,
                        "peer message dropped: {why}"
                    );
                    return;
                }
                self.heard_at.insert(message.from, self.ticks);
                self.record_heard(&message);
                // raft-rs ignores what does not fit its state (a stale
                // term, a response from a removed peer) and says so.
                if let Err(e) = self.raw.step(*message) {
                    tracing::debug!(shard = self.shard, "peer message ignored: {e}");
                }
            }
            ShardCall::Unreachable { peer } => self.raw.report_unreachable(peer),
            ShardCall::Snapshot { message, file } => {
                let index = message.get_snapshot().get_metadata().index;
                if index <= self.applied {
                    // Stale: raft-rs would ignore it too.
                    let _ = std::fs::remove_file(&file);
                    return;
                }
                if let Some((_, older)) = self.received.replace((index, file)) {
                    let _ = std::fs::remove_file(older);
                }
                if let Err(e) = self.raw.step(*message) {
                    tracing::debug!(shard = self.shard, "snapshot ignored: {e}");
                }
            }
            ShardCall::SnapshotSent { peer, delivered } => {
                let status = if delivered {
                    raft::SnapshotStatus::Finish
                } else {
                    self.metrics.snapshot_send_failures.inc();
                    raft::SnapshotStatus::Failure
                };
                self.raw.report_snapshot(peer, status);
            }
            ShardCall::LeaseRound { tasks, outcome } => {
                if let Some(done) = self.lease_tasks.round_finished(tasks, outcome) {
                    let (reply, _ignored) = futures_channel::oneshot::channel();
                    self.propose(done, reply);
                }
            }
        }
    }

    /// Hands the watch feeds what the store's watchers have (and the
    /// progress they asked for), then uncounts the stamps settled so far:
    /// their events are sent.
    fn pump_watches(&mut self) {
        let safe = self.safe_revision();
        self.feeds.pump(&mut self.store, self.shard, safe);
        self.marks
            .published(self.shard, std::mem::take(&mut self.settled));
    }

    /// Renews a lease on its home's leader; answered once a checkpoint the
    /// renewal clears is durably cleared (see `Lessor::keep_alive`).
    fn keep_alive(&mut self, id: LeaseId, reply: Reply<i64>) {
        if !self.is_leader() {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        match self.lessor.keep_alive(id, self.now()) {
            Err(refused) => drop(reply.send(Err(refused.into()))),
            Ok(Renewal { ttl, reset: None }) => {
                // A reset proposed by an earlier keep-alive and not yet
                // applied: this one is durable only once that one is.
                let mut waiting = self.resets_in_flight.borrow_mut();
                match waiting.get_mut(&id) {
                    Some(waiters) => waiters.push((reply, ttl)),
                    None => drop(reply.send(Ok(ttl))),
                }
            }
            Ok(Renewal {
                ttl,
                reset: Some(reset),
            }) => {
                let (applied, answer) = futures_channel::oneshot::channel();
                self.resets_in_flight
                    .borrow_mut()
                    .insert(id, vec![(reply, ttl)]);
                self.propose(reset, applied);
                let waiting = self.resets_in_flight.clone();
                glommio::spawn_local(async move {
                    let outcome = answer.await.unwrap_or(Err(NodeError::Shutdown));
                    let waiters = waiting.borrow_mut().remove(&id).unwrap_or_default();
                    for (reply, ttl) in waiters {
                        let answer = match &outcome {
                            Ok(_) => Ok(ttl),
                            Err(e) => Err(e.copy()),
                        };
                        let _ = reply.send(answer);
                    }
                })
                .detach();
            }
        }
    }

    /// A revision below which this shard will apply nothing it has not
    /// applied: everything it handed out once nothing is in flight, else
    /// what it has applied.
    fn safe_revision(&self) -> Revision {
        if self.replicated {
            // Applied entries come in revision order, and the revisions
            // closed by a confirmed round (`request_close`) are applied.
            return self.store.current_revision().max(self.closed);
        }
        let idle = self.pending.is_empty() && self.raw.raft.raft_log.last_index() <= self.applied;
        if idle {
            self.clock.last()
        } else {
            self.store.current_revision()
        }
    }

    /// Why `entry` cannot be proposed here now, if it cannot.
    fn refusal(&self, entry: &Entry) -> Option<NodeError> {
        if !self.is_leader() {
            return Some(self.not_leader());
        }
        // Anything logged must decode, or the shard could not replay it.
        let depth = entry_codec::nesting_depth(entry);
        if depth > entry_codec::MAX_NESTING {
            return Some(NodeError::Kv(KvError::TooManyOps {
                count: depth,
                max: entry_codec::MAX_NESTING,
            }));
        }
        // Refused now rather than logged and refused by every replica.
        if let Err(refusal) = crate::mvcc::check_entry(entry) {
            return Some(NodeError::Kv(refusal));
        }
        // Observed before it is stamped: past 2^53 it would stop every
        // later stamp (a peer's write is not bounded by this member's
        // current revision).
        if let Entry::Compact { revision } = entry {
            if *revision >= crate::hlc::REVISION_LIMIT {
                return Some(NodeError::InvalidRequest(format!(
                    "compaction to revision {revision}, past the last one (2^53)"
                )));
            }
        }
        if entry.takes_space() && (self.space.alarmed() || self.space.over_quota()) {
            if !self.space.alarmed() {
                self.raise_no_space("the backend quota is exceeded");
            }
            return Some(NodeError::Kv(KvError::NoSpace));
        }
        None
    }

    /// A client's write. A replicated shard's leader stamps it only once a
    /// majority has confirmed, after it came, that this member leads
    /// (`ReadWaiter::Stamp`); one member's shard stamps it at once.
    fn propose_write(&mut self, entry: Entry, reply: Reply<Applied>) {
        if !self.replicated {
            return self.propose(entry, reply);
        }
        if let Some(refusal) = self.refusal(&entry) {
            let _ = reply.send(Err(refusal));
            return;
        }
        self.unindexed
            .push((self.ticks, ReadWaiter::Stamp { entry, reply }));
    }

    /// Proposes the writes whose round was confirmed; answers whether
    /// there were any.
    fn propose_confirmed(&mut self) -> bool {
        let confirmed = std::mem::take(&mut self.confirmed);
        let any = !confirmed.is_empty();
        for (entry, reply) in confirmed {
            self.propose(entry, reply);
        }
        any
    }

    /// Stamps and proposes `entry` at once (a client's write on one
    /// member, or an entry the shard makes itself).
    fn propose(&mut self, entry: Entry, reply: Reply<Applied>) {
        if let Some(refusal) = self.refusal(&entry) {
            let _ = reply.send(Err(refusal));
            return;
        }
        // Counted before the floor is read (`watermarks.rs`, ordering).
        self.clock.observe(self.marks.begin_stamp(self.shard));
        if !self.propose_stamped(entry, reply) {
            self.marks.published(self.shard, 1);
        }
    }

    /// A shard's part of a read across shards at one revision. On one
    /// member: never stamp the revision or below again, then read once
    /// every entry already in the log applied. In a cluster the shard's
    /// leader closes the revision and confirms its leadership with a
    /// majority first (`close_for`); a follower asks it to, then waits to
    /// apply as far as it says.
    fn range_at(&mut self, part: crate::shard::remote::ReadPart) {
        use crate::shard::remote;
        // HLC receive: nothing at or below the revision is stamped here
        // from now on; what was stamped is at or below the log's end.
        let waiter = |part: remote::ReadPart| ReadWaiter::At {
            request: part.request,
            revision: part.revision,
            reply: part.reply,
        };
        if !self.replicated {
            self.clock.observe(part.revision);
            let index = self.raw.raft.raft_log.last_index();
            return self.wait_for(index, (self.ticks, waiter(part)));
        }
        if self.is_leader() {
            self.close(part.revision);
            let floor = self.raw.raft.raft_log.last_index();
            let waiter = ReadWaiter::AtAfterRound {
                floor,
                term: self.raw.raft.term,
                request: part.request,
                revision: part.revision,
                reply: part.reply,
            };
            return self.unindexed.push((self.ticks, waiter));
        }
        match self.leader_elsewhere() {
            Some((leader, transport)) => {
                remote::close_at_leader(self.router.clone(), transport, leader, part);
            }
            None => remote::read_retry_later(self.router.clone(), part),
        }
    }

    /// Never stamps `revision` or below again on this shard, nor lets a
    /// later leader: the majority that confirms the round hears of it
    /// (this node's frames carry it), and a later leader stamps only
    /// after a round of its own, which shares a member with that majority.
    fn close(&mut self, revision: Revision) {
        self.clock.observe(revision);
        self.marks.hear(revision);
    }

    /// Answers the waits for this shard's leader that are met, and those
    /// whose time is up (`placement.rs`).
    fn check_leader_waits(&mut self) {
        if self.leader_waits.is_empty() {
            return;
        }
        let (leader, now) = (self.raw.raft.leader_id, Instant::now());
        self.leader_waits.retain_mut(|(want, until, reply)| {
            let met = want.met_by(leader);
            if met || now >= *until {
                if let Some(reply) = reply.take() {
                    let _ = reply.send(Ok(met));
                }
                return false;
            }
            true
        });
    }

    /// The merged watches need this shard closed up to `revision`. On one
    /// member an HLC receive does it. In a cluster the shard's leader must
    /// close it, as for a read across shards: a quiet replica's own clock
    /// says nothing of what its leader may still stamp.
    fn close_for_watches(&mut self, revision: Revision) {
        if self.replicated {
            self.request_close(revision);
        } else {
            self.clock.observe(revision);
        }
    }

    /// Has the shard's leader close `revision` for the merged watches,
    /// unless that is done or asked for.
    fn request_close(&mut self, revision: Revision) {
        if revision <= self.closed || revision <= self.close_asked {
            return;
        }
        self.close_asked = revision;
        if self.is_leader() {
            self.close(revision);
            let waiter = ReadWaiter::CloseHere {
                revision,
                floor: self.raw.raft.raft_log.last_index(),
                term: self.raw.raft.term,
            };
            return self.unindexed.push((self.ticks, waiter));
        }
        let (router, shard) = (self.router.clone(), self.shard);
        match self.leader_elsewhere() {
            Some((leader, transport)) => {
                crate::shard::remote::close_for_watches(router, transport, leader, shard, revision);
            }
            None => crate::shard::remote::close_failed_later(router, shard, revision),
        }
    }

    /// Member `from` asks this replica to close `revision` as leader.
    fn close_for(&mut self, from: u64, id: u64, revision: Revision) {
        let Some(transport) = self.transport.clone() else {
            return;
        };
        if !self.is_leader() {
            let refusal = Err(self.not_leader());
            return crate::shard::remote::answer_close(&*transport, self.shard, from, id, &refusal);
        }
        if revision >= crate::hlc::REVISION_LIMIT {
            let refusal = Err(NodeError::InvalidRequest(format!(
                "revision {revision} is past the last one (2^53)"
            )));
            return crate::shard::remote::answer_close(&*transport, self.shard, from, id, &refusal);
        }
        self.close(revision);
        let floor = self.raw.raft.raft_log.last_index();
        let waiter = ReadWaiter::CloseFor {
            floor,
            term: self.raw.raft.term,
            from,
            id,
            transport,
        };
        self.unindexed.push((self.ticks, waiter));
    }

    /// The leader this replica knows of on another member (the one it
    /// hands leadership to, while it does), with the transport to reach
    /// it; `None` while it knows none, or has no transport.
    fn leader_elsewhere(&self) -> Option<(u64, Rc<dyn Transport>)> {
        let leader = match self.not_leader() {
            NodeError::NotLeader { leader, .. } => leader,
            _ => 0,
        };
        let transport = self.transport.clone()?;
        (leader != 0 && leader != self.raw.raft.id).then_some((leader, transport))
    }

    /// Proposes a part of a fanned-out write here if this replica leads,
    /// else sends it to the leader it knows, else tries again shortly.
    fn propose_at_leader(&mut self, part: crate::shard::remote::Part) {
        use crate::shard::remote;
        if self.is_leader() {
            // Refused before it was proposed (leadership moved on, a stamp
            // round found no majority): looked for again, as when sent.
            let (reply, answer) = futures_channel::oneshot::channel();
            self.propose_write(part.entry.clone(), reply);
            return remote::retry_if_refused(self.router.clone(), part, answer);
        }
        match self.leader_elsewhere() {
            Some((leader, transport)) => {
                remote::send_to_leader(self.router.clone(), transport, leader, part);
            }
            None => remote::retry_later(self.router.clone(), part),
        }
    }

    /// Proposes a write another member sent, and answers it there once it
    /// applied. A replica that does not lead answers `NotLeader` at once:
    /// the sender looks for the leader, and a write is never carried on
    /// from one member to a third.
    fn propose_for(&mut self, from: u64, id: u64, entry: Entry) {
        let Some(transport) = self.transport.clone() else {
            return;
        };
        let (reply, answer) = futures_channel::oneshot::channel();
        crate::shard::remote::answer_when_applied(transport, self.shard, from, id, answer);
        self.propose_write(entry, reply);
    }

    /// The rest of [`Replica::propose`], once the stamp is counted: answers
    /// whether the entry was proposed (else its stamp is settled at once).
    fn propose_stamped(&mut self, entry: Entry, reply: Reply<Applied>) -> bool {
        // A compaction's entry gets a revision above the point it compacts
        // to, which may be another shard's (HLC receive). Taken here, with
        // the entry, so no message can overtake it.
        if let Entry::Compact { revision } = &entry {
            self.clock.observe(*revision);
        }
        let revision = match self.clock.next(self.wall.unix_millis()) {
            Ok(revision) => revision,
            Err(e) => {
                let _ = reply.send(Err(NodeError::RevisionsExhausted(e)));
                return false;
            }
        };
        let entry = match entry {
            Entry::LeaseGrant { id: 0, ttl } => match self.pick_lease_id(revision) {
                Some(id) => Entry::LeaseGrant { id, ttl },
                None => {
                    let _ = reply.send(Err(NodeError::InvalidRequest(
                        "no lease id left".to_string(),
                    )));
                    return false;
                }
            },
            other => other,
        };
        let data = entry_codec::encode(revision, &entry);
        // The WAL record must hold the entry; one too large for it is
        // refused here, before it is logged (its revision is skipped; the
        // node's WAL settings leave room for every request the keyspace
        // accepts).
        if data.len() + log_store::ENTRY_OVERHEAD > self.max_entry_bytes {
            let _ = reply.send(Err(NodeError::Kv(KvError::RequestTooLarge {
                len: data.len(),
                max: self.max_entry_bytes - log_store::ENTRY_OVERHEAD,
            })));
            return false;
        }
        if let Err(e) = self.raw.propose(Vec::new(), data) {
            let _ = reply.send(Err(match e {
                raft::Error::ProposalDropped => self.not_leader(),
                other => NodeError::InvalidRequest(other.to_string()),
            }));
            return false;
        }
        self.metrics.proposals.inc();
        self.pending.push_back(Pending {
            index: self.raw.raft.raft_log.last_index(),
            term: self.raw.raft.term,
            revision,
            reply,
        });
        true
    }

    /// A new lease id for a grant on this shard: homed here, unused, and
    /// above every id picked before (grants in flight are not in the store
    /// yet). Derived from the grant's revision, so ids do not repeat across
    /// restarts either.
    fn pick_lease_id(&mut self, revision: Revision) -> Option<LeaseId> {
        let from_revision = i64::try_from(revision & i64::MAX as u64).unwrap_or(i64::MAX);
        let mut candidate = from_revision.max(self.last_lease_id.checked_add(1)?).max(1);
        loop {
            let taken = self.store.lease(candidate).ok().flatten().is_some();
            if !taken && home_of_lease(candidate, self.shards) == self.shard {
                self.last_lease_id = candidate;
                return Some(candidate);
            }
            candidate = candidate.checked_add(1)?;
        }
    }

    /// Gives every linearizable read taken this round one ReadIndex. A
    /// follower asks its leader (raft-rs forwards the request).
    fn request_read_index(&mut self) {
        if self.unindexed.is_empty() {
            return;
        }
        // raft-rs drops a ReadIndex silently until the leader has committed
        // an entry of its own term, or while no leader is known, so reads
        // wait here until then (and `retry_read_index` asks again for
        // requests dropped on the way).
        let ready = if self.is_leader() {
            self.raw.raft.commit_to_current_term()
        } else {
            self.raw.raft.leader_id != raft::INVALID_ID
        };
        if !ready {
            return;
        }
        let waiters = std::mem::take(&mut self.unindexed);
        self.ask_read_index(Indexing {
            asked: self.ticks,
            asked_at: Instant::now(),
            waiters,
        });
    }

    fn ask_read_index(&mut self, indexing: Indexing) {
        let context = self.next_read_context;
        self.next_read_context += 1;
        self.indexing.insert(context, indexing);
        // The leader keys pending reads by context: it names this member
        // and incarnation too, or two followers' reads (or this one's before
        // and after a restart) would collide.
        let mut bytes = self.raw.raft.id.to_le_bytes().to_vec();
        bytes.extend_from_slice(&self.incarnation.to_le_bytes());
        bytes.extend_from_slice(&context.to_le_bytes());
        self.raw.read_index(bytes);
    }

    /// On each tick: a ReadIndex unanswered for a while is asked again
    /// under a new context (the old answer, if it comes, finds nobody), and
    /// reads that waited too long fail: for their ReadIndex as finding no
    /// leader, for applies as a replica too far behind.
    fn retry_read_index(&mut self) {
        let now = self.ticks;
        let too_old = |(since, _): &Aged| now - *since >= READ_INDEX_GIVE_UP_TICKS;
        let stale: Vec<u64> = self
            .indexing
            .iter()
            .filter(|(_, i)| now - i.asked >= READ_INDEX_RETRY_TICKS)
            .map(|(context, _)| *context)
            .collect();
        let mut retry = Vec::new();
        let mut expired = Vec::new();
        for context in stale {
            if let Some(indexing) = self.indexing.remove(&context) {
                let (old, young): (Vec<Aged>, Vec<Aged>) =
                    indexing.waiters.into_iter().partition(too_old);
                expired.extend(old);
                retry.extend(young);
            }
        }
        let (old, young): (Vec<Aged>, Vec<Aged>) = std::mem::take(&mut self.unindexed)
            .into_iter()
            .partition(too_old);
        expired.extend(old);
        self.unindexed = young;
        for (_, waiter) in expired {
            self.give_up(waiter, self.no_leader());
        }
        if !retry.is_empty() {
            if self.is_leader() || self.raw.raft.leader_id != raft::INVALID_ID {
                self.ask_read_index(Indexing {
                    asked: now,
                    asked_at: Instant::now(),
                    waiters: retry,
                });
            } else {
                // Back to waiting for a leader, each keeping its age.
                self.unindexed.extend(retry);
            }
        }
        let (old, young): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(_, aged)| too_old(aged));
        self.waiting = young;
        for (_, (_, waiter)) in old {
            self.give_up(waiter, NodeError::Behind { shard: self.shard });
        }
    }

    /// A waiter that waited too long: answered with `error`, or for a
    /// close of the merged watches, asked again while a watch still wants
    /// it (nobody else would ask: the stream asks each revision once).
    fn give_up(&mut self, waiter: ReadWaiter, error: NodeError) {
        match waiter {
            ReadWaiter::CloseHere { revision, .. } | ReadWaiter::Closed { revision } => {
                self.close_asked = self.closed;
                if self.feeds.wants_progress_to(revision) {
                    self.request_close(revision);
                }
            }
            other => other.answer_error(error),
        }
    }

    /// The refusal of a read that found no leader in time.
    fn no_leader(&self) -> NodeError {
        NodeError::NoLeader { shard: self.shard }
    }

    fn wait_for(&mut self, index: u64, (since, waiter): Aged) {
        let waiter = match waiter {
            ReadWaiter::Stamp { entry, reply } => {
                // Proposed after this Ready is done with
                // (`propose_confirmed`).
                self.confirmed.push((entry, reply));
                return;
            }
            ReadWaiter::Known { reply } => {
                let known = self.marks.highest_known().max(self.clock.last());
                let _ = reply.send(Ok(known));
                return;
            }
            ReadWaiter::CloseFor {
                floor,
                term,
                from,
                id,
                transport,
            } => {
                // Confirmed by another leader (this one lost the term
                // meanwhile): that one may have stamped at or below the
                // revision before it heard of it; the asker asks it.
                let answer = if self.is_leader() && self.raw.raft.term == term {
                    Ok(index.max(floor))
                } else {
                    Err(self.not_leader())
                };
                crate::shard::remote::answer_close(&*transport, self.shard, from, id, &answer);
                return;
            }
            ReadWaiter::AtAfterRound {
                floor,
                term,
                request,
                revision,
                reply,
            } => {
                if !self.is_leader() || self.raw.raft.term != term {
                    let part =
                        crate::shard::remote::ReadPart::new(self.shard, request, revision, reply);
                    return self.range_at(part);
                }
                let waiter = ReadWaiter::At {
                    request,
                    revision,
                    reply,
                };
                return self.wait_for(index.max(floor), (since, waiter));
            }
            ReadWaiter::CloseHere {
                revision,
                floor,
                term,
            } => {
                // Confirmed by another leader (this one lost the term
                // meanwhile): that one may have stamped at or below the
                // revision before it heard of it; ask it instead.
                if !self.is_leader() || self.raw.raft.term != term {
                    self.close_asked = self.closed;
                    return self.request_close(revision);
                }
                return self.wait_for(index.max(floor), (since, ReadWaiter::Closed { revision }));
            }
            ReadWaiter::Closed { revision } if index <= self.applied => {
                self.closed = self.closed.max(revision);
                return;
            }
            other => other,
        };
        if index <= self.applied {
            self.make_ready(waiter);
        } else {
            self.waiting.push((index, (since, waiter)));
        }
    }

    /// The header revision of a read of this shard's head: a node-wide
    /// high-water mark, as etcd's header is its store's revision. It is the
    /// node's floor (the highest revision any shard has applied) when no
    /// write this shard stamped at or below the floor is still in flight:
    /// every revision up to it that this shard will ever apply is then
    /// applied (later stamps observe the floor), so a watch from the
    /// header onwards misses nothing the read did not see. Otherwise it is
    /// the revision just below the first write in flight; a linearizable
    /// read waits for those writes instead (`serve`).
    fn header_revision(&self) -> Revision {
        let floor = self.marks.floor();
        let unapplied = self.pending.front().map(|p| p.revision);
        let safe = unapplied.map_or(floor, |first| floor.min(first.saturating_sub(1)));
        self.store.current_revision().max(safe)
    }

    /// The last write in flight stamped at or below `revision`, if any: a
    /// linearizable read waits for it so that its header can be
    /// `revision`.
    fn in_flight_at_or_below(&self, revision: Revision) -> Option<u64> {
        // A follower's ReadIndex covers every write that committed before
        // the read; writes it proposed as an old leader are not waited for.
        if !self.is_leader() {
            return None;
        }
        self.pending
            .iter()
            .take_while(|p| p.revision <= revision)
            .last()
            .map(|p| p.index)
            .filter(|index| *index > self.applied)
    }

    /// A read taken from the channel that may be served now: served at
    /// once while this round's reads have room and none is queued before
    /// it (its answer goes out while the round takes the next calls),
    /// else queued. Reads made ready inside `drive` are always queued, so
    /// the writers of the same Ready are answered first.
    fn serve_or_queue(&mut self, waiter: ReadWaiter) {
        if self.ready_reads.is_empty() && self.read_round.has_room() {
            self.serve_in_round(waiter);
        } else {
            self.make_ready(waiter);
        }
    }

    /// Queues a read that may be served now. A linearizable read of the
    /// head takes the node's floor when it is first ready, so that the
    /// time it then waits in the queue adds nothing to what it must see
    /// (and no write that came meanwhile can send it back to wait).
    fn make_ready(&mut self, waiter: ReadWaiter) {
        let waiter = match waiter {
            ReadWaiter::Head {
                request,
                header: Header::Linearizable(None),
                reply,
            } => ReadWaiter::Head {
                request,
                header: Header::Linearizable(Some(self.marks.floor())),
                reply,
            },
            other => other,
        };
        self.ready_reads.push_back(waiter);
    }

    /// Serves ready reads in arrival order until a round's worth of answer
    /// bytes or time; the rest wait for the next round.
    fn serve_ready_reads(&mut self) {
        while self.read_round.has_room() {
            let Some(waiter) = self.ready_reads.pop_front() else {
                break;
            };
            self.serve_in_round(waiter);
        }
    }

    /// Serves a read and counts what it took against the round.
    fn serve_in_round(&mut self, waiter: ReadWaiter) {
        let began = Instant::now();
        self.read_round.bytes += self.serve(waiter);
        self.read_round.spent += began.elapsed();
    }

    /// Answers a read from the applied state; returns its answer's bytes
    /// (none when it waits on, or fails).
    fn serve(&mut self, waiter: ReadWaiter) -> usize {
        match waiter {
            ReadWaiter::Head {
                request,
                header,
                reply,
            } => {
                let header = match header {
                    Header::Serializable => self.header_revision(),
                    Header::Linearizable(claimed) => {
                        // The floor when the read was first ready
                        // (`make_ready`): at least every write acknowledged
                        // before the read began.
                        let claimed = claimed.unwrap_or_else(|| self.marks.floor());
                        if let Some(index) = self.in_flight_at_or_below(claimed) {
                            let waiter = ReadWaiter::Head {
                                request,
                                header: Header::Linearizable(Some(claimed)),
                                reply,
                            };
                            // Ready reads are served within a round: this one
                            // waits as if it had just come.
                            self.waiting.push((index, (self.ticks, waiter)));
                            return 0;
                        }
                        self.store.current_revision().max(claimed)
                    }
                };
                let answer = self
                    .store
                    .range(&request)
                    .map(|r| (header, r))
                    .map_err(NodeError::from);
                let bytes = answer.as_ref().map_or(0, |(_, r)| answer_bytes(r));
                let _ = reply.send(answer);
                bytes
            }
            ReadWaiter::At {
                mut request,
                revision,
                reply,
            } => {
                // Nothing at or below `revision` is still to come here, so
                // a shard whose last write is older reads its head.
                request.revision = if revision >= self.store.current_revision() {
                    0
                } else {
                    revision
                };
                let answer = self.store.range(&request).map_err(NodeError::from);
                let bytes = answer.as_ref().map_or(0, answer_bytes);
                let _ = reply.send(answer);
                bytes
            }
            // These never queue as reads: `wait_for` takes them on.
            ReadWaiter::Closed { revision } => {
                self.closed = self.closed.max(revision);
                0
            }
            waiter @ (ReadWaiter::Stamp { .. }
            | ReadWaiter::Known { .. }
            | ReadWaiter::CloseFor { .. }
            | ReadWaiter::CloseHere { .. }
            | ReadWaiter::AtAfterRound { .. }) => {
                self.wait_for(self.applied, (self.ticks, waiter));
                0
            }
        }
    }

    /// Handles Ready until raft-rs has nothing more, in the documented
    /// order. An error stops the shard.
    async fn drive(&mut self) -> Result<(), String> {
        self.log_term();
        while self.raw.has_ready() {
            let mut ready = self.raw.ready();
            if let Some(soft) = ready.ss() {
                self.record_leader(soft.leader_id);
            }
            self.send(ready.take_messages());
            if !ready.snapshot().is_empty() {
                let snapshot = ready.snapshot().clone();
                self.install_snapshot(&snapshot).await?;
            }
            self.apply(ready.take_committed_entries())?;
            let entries = ready.take_entries();
            let mut syncs = Vec::new();
            if let Some(first) = entries.first() {
                if first.index <= self.wal.last_index() {
                    syncs.push(self.wal.truncate_after(first.index - 1));
                    self.lose_proposals_from(first.index);
                    // Entries read at start past here are gone: the lease
                    // tasks wait for the replay to apply only what is left.
                    self.replayed_up_to = self.replayed_up_to.min(first.index - 1);
                }
                let payloads: Vec<Vec<u8>> = entries.iter().map(log_store::encode_entry).collect();
                syncs.push(
                    self.wal.append_batch(
                        entries
                            .iter()
                            .zip(&payloads)
                            .map(|(e, p)| (e.index, RAFT_ENTRY_KIND, p.as_slice())),
                    ),
                );
                self.raw
                    .mut_store()
                    .append(&entries)
                    .map_err(|e| e.to_string())?;
                // A follower that becomes leader stamps above every entry
                // in its log, committed or not (another leader stamped
                // them): it observes their revisions as they arrive. The
                // node hears of them too, before this member acknowledges
                // them, so its other shards stamp above them from now on
                // (the leader's commit wait counts on it).
                if !self.is_leader() {
                    let highest = entries
                        .iter()
                        .filter_map(|entry| entry_codec::revision_of(&entry.data))
                        .max();
                    if let Some(revision) = highest {
                        self.clock.observe(revision);
                        self.marks.hear(revision);
                    }
                }
            }
            if let Some(hard_state) = ready.hs() {
                let store = self.raw.mut_store();
                store.set_hard_state(hard_state.clone());
                let blob = store.state_blob();
                syncs.push(self.wal.save_state(&blob));
            }
            // All of these share the WAL's one group-commit sync.
            for sync in syncs {
                sync.await.map_err(|e| format!("WAL: {e}"))?;
            }
            self.send(ready.take_persisted_messages());
            for state in ready.take_read_states() {
                self.read_state(state);
            }
            let mut light = self.raw.advance(ready);
            if let Some(commit) = light.commit_index() {
                // Saved lazily: a lost commit index is recomputed by Raft,
                // and the next WAL sync carries it anyway.
                let store = self.raw.mut_store();
                store.set_commit(commit);
                let blob = store.state_blob();
                drop(self.wal.save_state(&blob));
            }
            self.send(light.take_messages());
            self.apply(light.take_committed_entries())?;
            self.raw.advance_apply();
            self.leadership_changed();
        }
        Ok(())
    }

    /// Reads from the WAL the applied entries raft-rs wants to send to a
    /// follower that fell behind the in-memory tail, then lets it send
    /// them (`log_store.rs`). A read that fails (the segment was released
    /// meanwhile) is dropped: raft-rs asks again at the follower's next
    /// answer, and sends a snapshot once the entries are gone.
    async fn serve_fetches(&mut self) {
        for fetch in self.raw.store().take_fetches() {
            // Bounded: the shard answers nothing while it waits (a read of
            // a few thousand entries once took seconds, one I/O per entry,
            // and was asked for again and again). A read given up is asked
            // for again at the follower's next answer.
            let read = futures_lite::future::or(
                async {
                    Some(
                        self.wal
                            .read_limited(fetch.low..fetch.high, fetch.max_size.max(1))
                            .await,
                    )
                },
                async {
                    glommio::timer::sleep(FETCH_TIMEOUT).await;
                    None
                },
            )
            .await;
            let entries = match read {
                Some(Ok(records)) => records
                    .into_iter()
                    .map(decode_record)
                    .collect::<Result<Vec<_>, String>>(),
                Some(Err(e)) => Err(e.to_string()),
                None => Err(format!("no answer in {FETCH_TIMEOUT:?}")),
            };
            match entries {
                Ok(entries) if entries.first().is_some_and(|e| e.index == fetch.low) => {
                    self.raw.store().fetched(fetch.low, entries);
                    self.raw.on_entries_fetched(fetch.context);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(shard = self.shard, low = fetch.low, "catch-up read: {e}");
                }
            }
        }
    }

    /// Hands messages to the transport; it never waits (a message it
    /// cannot take comes back as an unreachable report). A single member
    /// has no one to send to.
    fn send(&mut self, messages: Vec<Message>) {
        let Some(transport) = self.transport.clone() else {
            return;
        };
        for message in messages {
            self.record_sent(&message);
            if message.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot {
                match &self.made {
                    // The transport streams the image on its own connection.
                    // The one raft-rs was handed, by construction (made
                    // only after a Ready's messages are out); checked all
                    // the same, as a wrong tree would be installed.
                    Some((source, _))
                        if source.index() == message.get_snapshot().get_metadata().index =>
                    {
                        self.metrics.snapshot_sends.inc();
                        transport.send_snapshot(self.shard, message, source.clone());
                    }
                    _ => {
                        self.metrics.snapshot_send_failures.inc();
                        self.raw
                            .report_snapshot(message.to, raft::SnapshotStatus::Failure);
                    }
                }
            } else {
                transport.send(self.shard, message);
            }
        }
    }

    /// Makes the snapshot raft-rs asked for, if it did: the tree's last
    /// commit, pinned and sent as a file image (`snapshot.rs`); raft-rs
    /// gets it when it next tries the follower. Costs no copy.
    fn make_snapshot(&mut self) {
        // Wanted only when the one made before (if any) would not do.
        if self.raw.store().take_wanted().is_none() {
            return;
        }
        // Everything applied goes into the snapshot: a member just added
        // has its configuration change in it, and takes the snapshot.
        match self.store.commit_held_if_room() {
            Ok(()) => {}
            Err(e) if e.is_fatal() => {
                self.fail(format!("snapshot: {e}"));
                return;
            }
            // No room: raft-rs asks again, and a snapshot is made once
            // there is.
            Err(e) => {
                tracing::warn!(shard = self.shard, "no snapshot: {e}");
                return;
            }
        }
        let source = match snapshot::pin(&self.store) {
            // A tree never synced holds nothing to send; the next request
            // after a sync makes one.
            Ok(None) => return,
            Ok(Some(source)) => source,
            Err(e) => {
                tracing::warn!(shard = self.shard, "no snapshot: {e}");
                return;
            }
        };
        let index = source.index();
        let Ok(term) = self.raw.raft.raft_log.term(index) else {
            // Its term is gone from the log: the next request makes another.
            return;
        };
        let mut made = raft::eraftpb::Snapshot::default();
        let metadata = made.mut_metadata();
        metadata.index = index;
        metadata.term = term;
        metadata.set_conf_state(self.conf_at(index));
        self.raw.mut_store().set_made(made);
        self.made = Some((Rc::new(source), Instant::now()));
        tracing::info!(shard = self.shard, index, "snapshot made for a follower");
    }

    /// Lets the snapshot made for followers go once no send has held it
    /// for [`SNAPSHOT_KEPT`]: its pin keeps the tree's freed pages from
    /// reuse, so the tree file would grow for as long as it lasted.
    fn release_snapshot(&mut self) {
        let Some((source, last_held)) = self.made.as_mut() else {
            return;
        };
        if Rc::strong_count(source) > 1 {
            *last_held = Instant::now();
        } else if last_held.elapsed() >= SNAPSHOT_KEPT {
            self.made = None;
            self.raw.mut_store().forget_made();
        }
    }

    /// Installs the snapshot of a Ready (`snapshot.rs` has the steps and
    /// why each is crash-safe): the received tree replaces this one, the
    /// WAL starts after it, and what was built on the old tree (watches,
    /// writes in flight) hears that it is gone.
    async fn install_snapshot(&mut self, snapshot: &raft::eraftpb::Snapshot) -> Result<(), String> {
        let (index, term) = (snapshot.get_metadata().index, snapshot.get_metadata().term);
        let Some((received, file)) = self.received.take() else {
            return Err(format!("a snapshot at {index} with no file received"));
        };
        if received != index {
            return Err(format!(
                "a snapshot at {index}, but the file received is at {received}"
            ));
        }
        // The old tree's last writes need not be durable: the snapshot
        // replaces them. Its sync in flight is waited for, so that no late
        // meta write lands on the new file.
        if let Some(syncing) = self.tree_syncing.take() {
            let _ = syncing.job.await;
        }
        snapshot::put_in_place(&self.dir, &file, index, term)
            .map_err(|e| format!("snapshot install: {e}"))?;
        let store = open_store(
            &self.dir,
            self.tree_options.clone(),
            self.shard,
            self.shards,
        )
        .map_err(|e| format!("snapshot install: {e}"))?;
        drop(std::mem::replace(&mut self.store, store));
        // A snapshot made of the old tree is not this tree's.
        self.made = None;
        self.raw.mut_store().forget_made();
        self.raw.mut_store().apply_snapshot(index, term);
        self.conf_installed(index, snapshot.get_metadata().get_conf_state().clone());
        let blob = self.raw.store().state_blob();
        let reset = self.wal.reset(index);
        let saved = self.wal.save_state(&blob);
        reset
            .await
            .map_err(|e| format!("snapshot WAL reset: {e}"))?;
        saved
            .await
            .map_err(|e| format!("snapshot WAL reset: {e}"))?;
        snapshot::finish(&self.dir).map_err(|e| format!("snapshot install: {e}"))?;
        self.applied = index;
        self.replayed_up_to = self.replayed_up_to.min(index);
        self.unsynced_entries = 0;
        self.unsynced_bytes = 0;
        self.unsynced_since = None;
        self.clock.observe(self.store.current_revision());
        self.marks.raise_floor(self.store.current_revision());
        self.space.set_used(self.shard, self.store.used_bytes());
        // Writes proposed here as leader at or below the snapshot may or
        // may not be in it.
        while self.pending.front().is_some_and(|p| p.index <= index) {
            if let Some(lost) = self.pending.pop_front() {
                self.settled += 1;
                let _ = lost
                    .reply
                    .send(Err(NodeError::OutcomeUnknown { shard: self.shard }));
            }
        }
        // The watches read the old tree's history: their streams end, and
        // their clients watch again from where they were.
        self.feeds
            .fail_all(self.shard, "the replica installed a snapshot; watch again");
        self.metrics.snapshots_installed.inc();
        tracing::info!(shard = self.shard, index, "snapshot installed");
        Ok(())
    }

    fn read_state(&mut self, state: raft::ReadState) {
        let Ok(context) = <[u8; 24]>::try_from(state.request_ctx.as_slice()) else {
            return;
        };
        let (asker, context) = context.split_at(16);
        let mut mine = self.raw.raft.id.to_le_bytes().to_vec();
        mine.extend_from_slice(&self.incarnation.to_le_bytes());
        if asker != mine.as_slice() {
            return;
        }
        let Ok(context) = <[u8; 8]>::try_from(context) else {
            return;
        };
        if let Some(indexing) = self.indexing.remove(&u64::from_le_bytes(context)) {
            self.metrics.read_index.observe(indexing.asked_at.elapsed());
            for aged in indexing.waiters {
                self.wait_for(state.index, aged);
            }
        }
    }

    fn leadership_changed(&mut self) {
        let leader = self.is_leader();
        if leader == self.was_leader {
            return;
        }
        self.was_leader = leader;
        if leader {
            // A hand-over this member made in an earlier term does not hold
            // back the next one.
            self.transferred_at = None;
            // The new leader runs the lease timers from the stored TTLs.
            match self.store.leases() {
                Ok(mut leases) => {
                    leases.retain(|l| home_of_lease(l.id, self.shards) == self.shard);
                    self.lessor.promote(&leases, self.now());
                }
                Err(e) => self.fail(e.to_string()),
            }
        } else {
            self.lessor.demote();
        }
        let shard = self.shard;
        // The writers still waiting had their entries applied: whether the
        // mirrors have them is for the next leader to see to, so their
        // outcome is unknown (not "not led here", which says "send it
        // again": a grant sent again would make a second lease).
        self.lease_tasks
            .leadership_changed(leader, || NodeError::OutcomeUnknown { shard });
    }

    /// Applies committed entries in order: runs of commands into the held
    /// tree transaction (answering their writers), and each configuration
    /// change on its own (`conf_changes.rs`).
    fn apply(&mut self, entries: Vec<raft::eraftpb::Entry>) -> Result<(), String> {
        let mut run = Vec::new();
        for entry in entries {
            if entry.entry_type == EntryType::EntryNormal {
                run.push(entry);
                continue;
            }
            if !run.is_empty() {
                self.apply_commands(std::mem::take(&mut run))?;
            }
            self.apply_conf_entry(&entry)?;
        }
        if !run.is_empty() {
            self.apply_commands(run)?;
        }
        Ok(())
    }

    /// Applies normal entries into the held tree transaction and answers
    /// their writers.
    fn apply_commands(&mut self, entries: Vec<raft::eraftpb::Entry>) -> Result<(), String> {
        let Some(last) = entries.last().map(|e| e.index) else {
            return Ok(());
        };
        // The entries in log order: each command, or why it did not decode.
        // The leader's empty entries carry none.
        let mut commands = Vec::with_capacity(entries.len());
        for entry in entries.iter().filter(|e| !e.data.is_empty()) {
            commands.push((entry.index, entry.term, entry_codec::decode(&entry.data)));
        }
        let batch: Vec<Indexed> = commands
            .iter()
            .filter_map(|(index, _, command)| {
                let (revision, entry) = command.as_ref().ok()?;
                Some(Indexed {
                    index: *index,
                    revision: *revision,
                    entry,
                })
            })
            .collect();
        let results = if batch.is_empty() {
            Vec::new()
        } else {
            let (results, _) = self
                .store
                .apply_batch_compacting(&batch, COMPACT_STEP_ROWS)
                .map_err(|e| e.to_string())?;
            results
        };
        let now = self.now();
        // Raised before any writer hears back, so a write that starts after
        // this answer gets a higher revision on every shard.
        let highest = batch.iter().map(|b| b.revision).max().unwrap_or(0);
        self.clock.observe(highest);
        self.marks.raise_floor(highest);
        let mut results = results.into_iter();
        // Answers go out after the watch feeds have the batch's events
        // (below), as etcd notifies its watchers before it answers a put.
        let mut answers = Vec::new();
        let mut members_changed = false;
        let mut auth_changed = false;
        for (index, term, command) in &commands {
            let writer = self.take_writer(*index, *term);
            let entry = match command {
                Ok((_, entry)) => entry,
                // Every replica meets the same bytes (the log is
                // checksummed), so every one skips the entry alike: it
                // changes nothing, and its writer hears why.
                Err(e) => {
                    tracing::warn!(shard = self.shard, index, "skipped: {e}");
                    if let Some(writer) = writer {
                        let refusal = format!("entry {index}: {e}");
                        let _ = writer.send(Err(NodeError::InvalidRequest(refusal)));
                    }
                    continue;
                }
            };
            let Some(result) = results.next() else {
                return Err(format!("entry {index}: the keyspace gave no answer"));
            };
            let task_of = match &result {
                Ok(applied) => self.track_leases(entry, &applied.response, now),
                Err(_) => None,
            };
            members_changed |= matches!(entry, Entry::Members(_)) && result.is_ok();
            auth_changed |= matches!(entry, Entry::Auth(_)) && result.is_ok();
            match (task_of, writer) {
                // A home lease change: the writer hears back once the
                // mirrors have it too.
                (Some(id), writer) => {
                    let leading = self.is_leader();
                    self.lease_tasks.changed(id, writer, result, leading)
                }
                (None, Some(writer)) => answers.push((writer, result)),
                (None, None) => {}
            }
        }
        self.applied = last;
        // Up-to-date watches get the events first (from memory; watches
        // reading history are fed after the answers, by the loop).
        let safe = self.safe_revision();
        self.feeds.pump_live(&mut self.store, self.shard, safe);
        // Sent to every live feed; a feed that is not live is never taken
        // as quiet (`watermarks.rs`).
        self.marks
            .published(self.shard, std::mem::take(&mut self.settled));
        // The node follows a new member list before its writer hears: a
        // change made next from here starts from it.
        if members_changed {
            self.members_applied();
        }
        if auth_changed {
            self.auth_applied();
        }
        for (writer, result) in answers {
            let _ = writer.send(result.map_err(NodeError::from));
        }
        let bytes = entries.iter().map(|e| e.data.len() as u64).sum::<u64>();
        self.applied_through(last, entries.len() as u64, bytes);
        Ok(())
    }

    /// What follows applying entries up to `last` (`count` of them,
    /// `bytes` of Raft data): raft-rs and the WAL may let them go once the
    /// tree is durable, and reads waiting for them are served.
    fn applied_through(&mut self, last: u64, count: u64, bytes: u64) {
        // Entries the tree holds (durably or not) are not needed by raft-rs
        // again on a single voter; the WAL keeps them until the tree is durable.
        self.raw.mut_store().compact_to(last);
        self.metrics.applied_entries.add(count);
        self.unsynced_entries += count;
        self.unsynced_bytes += bytes;
        self.unsynced_since.get_or_insert_with(Instant::now);
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(index, _)| *index <= last);
        self.waiting = waiting;
        for (_, (_, waiter)) in ready {
            self.make_ready(waiter);
        }
    }

    /// Another leader's entries replace this log's from `index` on: writes
    /// proposed here at or past it hear now that their outcome is unknown,
    /// rather than wait for something to apply at their index. Not that
    /// they failed: with five members, another member may still hold the
    /// replaced entry and commit it as leader of a later term (Raft's
    /// figure 8), so only an entry of another term applied at the index
    /// (`take_writer`) says a write lost.
    fn lose_proposals_from(&mut self, index: u64) {
        while self.pending.back().is_some_and(|p| p.index >= index) {
            let Some(lost) = self.pending.pop_back() else {
                break;
            };
            self.settled += 1;
            self.metrics.proposals_failed.inc();
            let _ = lost
                .reply
                .send(Err(NodeError::OutcomeUnknown { shard: self.shard }));
        }
    }

    /// The writer of the entry at `index`, if it was proposed here; writers
    /// of earlier slots that another leader's entries took learn they lost.
    fn take_writer(&mut self, index: u64, term: u64) -> Option<Reply<Applied>> {
        while self.pending.front().is_some_and(|p| p.index <= index) {
            let pending = self.pending.pop_front()?;
            // Applied now, or never (another leader's entry took its slot).
            self.settled += 1;
            if pending.index == index && pending.term == term {
                return Some(pending.reply);
            }
            self.metrics.proposals_failed.inc();
            let _ = pending.reply.send(Err(self.not_leader()));
        }
        None
    }

    /// Keeps the lessor and the lease tasks in step with applied lease
    /// entries. Answers the lease whose task a home grant or revoke
    /// changed, when other shards mirror it (its writer waits for them).
    fn track_leases(
        &mut self,
        entry: &Entry,
        response: &Response,
        now: Duration,
    ) -> Option<LeaseId> {
        let homed = |id: LeaseId| home_of_lease(id, self.shards) == self.shard;
        let mirrored = self.lease_tasks.has_mirrors();
        match (entry, response) {
            (Entry::LeaseGrant { .. }, Response::LeaseGrant { id, ttl }) if homed(*id) => {
                if self.lessor.is_primary() {
                    self.lessor.granted(*id, *ttl, now);
                }
                mirrored.then_some(*id)
            }
            (Entry::LeaseRevoke { id }, _) => {
                self.lessor.revoked(&[*id]);
                mirrored.then_some(*id)
            }
            (Entry::LeaseExpire { ids }, Response::LeaseExpire { revoked }) => {
                self.lessor.revoked(ids);
                if !revoked.is_empty() {
                    self.lease_tasks.mark_dirty();
                }
                None
            }
            (Entry::LeaseTasksDone { tasks }, _) => {
                self.lease_tasks.done_applied(tasks);
                None
            }
            (Entry::Alarm { kind, action, .. }, _) => {
                if *kind == AlarmKind::NoSpace {
                    match has_no_space_alarm(&self.store) {
                        Ok(raised) => self.space.set_alarmed(self.shard, raised),
                        Err(_) => self
                            .space
                            .set_alarmed(self.shard, *action == AlarmAction::Activate),
                    }
                }
                None
            }
            _ => None,
        }
    }

    /// Starts the next round of this shard's lease tasks if one is due:
    /// on the leader, once every entry replayed at start has applied (the
    /// tasks it wrote are then all in the store).
    fn drive_lease_tasks(&mut self) {
        if !self.is_leader() || self.applied < self.replayed_up_to || self.failure.is_some() {
            return;
        }
        if let Err(e) = self.lease_tasks.start_round(&self.store, &self.router) {
            self.fail(e.to_string());
        }
    }

    /// Raises the NOSPACE alarm on every shard of the node (unless it is up
    /// or going up): an `Entry::Alarm` on each, so that every one refuses
    /// what takes space when it applies it, and the alarm stays across a
    /// restart.
    fn raise_no_space(&self, why: &str) {
        if self.space.alarmed() || !self.space.begin_raise() {
            return;
        }
        tracing::warn!(shard = self.shard, "raising the NOSPACE alarm: {why}");
        let (router, space, shards) = (self.router.clone(), self.space.clone(), self.shards);
        glommio::spawn_local(async move {
            for shard in 0..shards {
                let entry = Entry::Alarm {
                    action: AlarmAction::Activate,
                    kind: AlarmKind::NoSpace,
                    member: space.member(),
                };
                // Raised on every shard's leader, wherever it is.
                let raised = router
                    .call(shard, |reply| {
                        ShardCall::WriteAtLeader(Box::new(crate::shard::remote::Part::new(
                            shard, entry, reply,
                        )))
                    })
                    .await;
                if let Err(e) = raised {
                    tracing::warn!(shard, "the NOSPACE alarm was not raised: {e}");
                }
            }
            space.raised();
        })
        .detach();
    }

    /// On each tick: a WAL that found no room for its next segment raises
    /// the alarm while the segment it appends to still has room, and is
    /// asked to try again (room may have been freed). It is raised once
    /// an attempt made after the last tick failed too.
    fn check_wal_space(&mut self) {
        if !self.wal.space_low() {
            self.wal_was_low = false;
            return;
        }
        if self.wal_was_low {
            self.raise_no_space("the WAL has no room for its next segment");
        }
        self.wal.retry_prepare();
        self.wal_was_low = true;
    }

    /// A round that applied nothing takes a compaction step, if history
    /// below the compaction revision is not all trimmed yet: compaction
    /// goes on on a shard that no write reaches (each replica trims its own
    /// history; reads below the compaction revision fail everywhere alike).
    /// Answers whether more steps remain.
    fn compact_while_idle(&mut self) -> bool {
        if self.store.compacted_revision() >= self.store.compact_revision() {
            return false;
        }
        match self.store.compact_step(COMPACT_STEP_ROWS) {
            Ok(step) => {
                // The held transaction changed: it must become durable.
                self.unsynced_entries += 1;
                self.unsynced_since.get_or_insert_with(Instant::now);
                !step.done
            }
            Err(e) => {
                self.fail(format!("compaction: {e}"));
                false
            }
        }
    }

    /// The leader proposes checkpoints when they are due. (Expiries are
    /// proposed after every drive, by `propose_due_expiry`.)
    fn lease_checkpoints(&mut self) {
        if !self.is_leader() || self.failure.is_some() {
            return;
        }
        if let Some(entry) = self.lessor.checkpoints(self.now()) {
            let (reply, _ignored) = futures_channel::oneshot::channel();
            self.propose(entry, reply);
        }
    }

    /// Proposes the next batch of leases past their deadline, if one is
    /// due and none is waiting to apply; answers whether it did.
    fn propose_due_expiry(&mut self) -> bool {
        if !self.is_leader() || self.failure.is_some() {
            return false;
        }
        let Some(entry) = self.lessor.expired(self.now()) else {
            return false;
        };
        let (reply, _ignored) = futures_channel::oneshot::channel();
        self.propose(entry, reply);
        true
    }

    /// Makes the tree durable when enough is not yet durable (or `force`),
    /// then releases the WAL segments it no longer needs. The syncs run on
    /// a blocking thread: this only finishes one that is done and starts
    /// the next, unless `force`, which waits until all is durable.
    async fn maybe_sync_tree(&mut self, force: bool) -> Result<(), String> {
        // Past the byte bound a sync in flight is waited for, so that the
        // held transaction (and the WAL a crash leaves to replay) holds at
        // most about two bounds' worth.
        let over_bytes = self.unsynced_bytes >= self.tree_sync.bytes;
        if !self.finish_tree_sync(force || over_bytes).await? {
            // One at a time: the next starts once this one is done.
            return Ok(());
        }
        let due = over_bytes
            || self.unsynced_entries >= self.tree_sync.entries
            || self.store.held_nodes() >= TREE_SYNC_NODES
            || self
                .unsynced_since
                .is_some_and(|since| since.elapsed() >= self.tree_sync.interval);
        if self.unsynced_entries == 0 || !(due || force) {
            return Ok(());
        }
        if !self.room_for_tree_sync()? {
            return Ok(());
        }
        let started = self
            .store
            .sync_deferred()
            .map_err(|e| format!("tree sync: {e}"))?;
        self.unsynced_entries = 0;
        self.unsynced_bytes = 0;
        self.unsynced_since = None;
        if let Some(durability) = started {
            let job = self
                .store
                .database()
                .deferred_job(&durability)
                .map_err(|e| format!("tree sync: {e}"))?;
            let job = glommio::executor().spawn_blocking(job);
            self.tree_syncing = Some(TreeSyncing {
                durability,
                started: Instant::now(),
                job: Box::pin(job),
            });
        }
        if force {
            self.finish_tree_sync(true).await?;
        }
        Ok(())
    }

    /// Whether the tree file has room for the next sync (it is grown, and
    /// its blocks allocated, first). Short of room for the sync and
    /// [`TREE_HEADROOM`] more, the NOSPACE alarm goes up and the sync may
    /// use the headroom; short of room for the sync itself, the sync waits
    /// (the WAL keeps everything) and is tried again a second later.
    fn room_for_tree_sync(&mut self) -> Result<bool, String> {
        if self
            .sync_blocked_until
            .is_some_and(|until| Instant::now() < until)
        {
            return Ok(false);
        }
        self.sync_blocked_until = None;
        let headroom = if self.space.alarmed() {
            0
        } else {
            TREE_HEADROOM.min(self.store.database().capacity() / 16)
        };
        match self.store.ensure_sync_room(headroom) {
            Ok(()) => return Ok(true),
            Err(e) if e.is_no_space() => {
                self.raise_no_space(&format!("the tree file has no room: {e}"));
            }
            Err(e) => return Err(format!("tree sync: {e}")),
        }
        match self.store.ensure_sync_room(0) {
            Ok(()) => Ok(true),
            Err(e) if e.is_no_space() => {
                self.sync_blocked_until = Some(Instant::now() + Duration::from_secs(1));
                Ok(false)
            }
            Err(e) => Err(format!("tree sync: {e}")),
        }
    }

    /// Reports the tree sync in flight if it is done (or, with `wait`, once
    /// it is), and releases the WAL below what is now durable. Answers
    /// whether none is left in flight.
    async fn finish_tree_sync(&mut self, wait: bool) -> Result<bool, String> {
        let Some(syncing) = self.tree_syncing.as_mut() else {
            return Ok(true);
        };
        let outcome = if wait {
            let waited = Instant::now();
            let outcome = (&mut syncing.job).await;
            self.metrics.tree_sync_wait.observe(waited.elapsed());
            outcome
        } else {
            match futures_lite::future::poll_once(&mut syncing.job).await {
                Some(outcome) => outcome,
                None => return Ok(false),
            }
        };
        let Some(TreeSyncing {
            durability,
            started,
            ..
        }) = self.tree_syncing.take()
        else {
            return Ok(true);
        };
        self.metrics.tree_sync.observe(started.elapsed());
        self.store
            .sync_finished(&durability, outcome)
            .map_err(|e| format!("tree sync: {e}"))?;
        self.space.set_used(self.shard, self.store.used_bytes());
        // Replay starts after the durable applied index and needs that
        // entry's term, so it stays; a replicated shard also keeps a
        // catch-up tail for followers that fell behind.
        let durable = self.store.durable_applied_index();
        let keep_from = if self.replicated {
            wal_keep_from(
                durable,
                self.applied,
                self.slowest_live_follower(),
                self.wal.segment_count(),
            )
        } else {
            durable
        };
        self.wal
            .release_below(keep_from)
            .await
            .map_err(|e| format!("WAL release: {e}"))?;
        let first = self.wal.first_index();
        self.raw.mut_store().forget_below(first);
        Ok(true)
    }

    /// While this replica leads: the lowest index a follower it heard from
    /// within an election timeout still lacks. (Not raft-rs'
    /// `recent_active`: it is cleared at every quorum check, so a busy
    /// follower, the one this is for, seemed gone until its next answer.)
    fn slowest_live_follower(&self) -> Option<u64> {
        if !self.is_leader() {
            return None;
        }
        let me = self.raw.raft.id;
        self.raw
            .raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != me && self.heard_lately(**id))
            .map(|(_, progress)| progress.matched + 1)
            .min()
    }

    /// Whether `peer` was heard from within an election timeout.
    fn heard_lately(&self, peer: u64) -> bool {
        self.heard_at
            .get(&peer)
            .is_some_and(|at| self.ticks - at <= ELECTION_TICKS as u64)
    }

    /// Stops the shard: every waiting caller gets the reason.
    fn fail(&mut self, reason: String) {
        // A stopped shard's alarm no longer refuses the other shards'
        // writes: nothing can disarm it until the node restarts.
        self.space.set_alarmed(self.shard, false);
        // Shard 0 stopped: the auth record held may be stale from now on,
        // and the server refuses what it would check against it.
        if self.shard == 0 {
            self.view.auth().forget();
        }
        // Calls still queued in the channel are answered by `take`.
        let error = || stopped(self.shard, &reason);
        for pending in self.pending.drain(..) {
            let _ = pending.reply.send(Err(error()));
        }
        for (_, reply) in self.confirmed.drain(..) {
            let _ = reply.send(Err(error()));
        }
        for (_, _, reply) in self.leader_waits.drain(..) {
            if let Some(reply) = reply {
                let _ = reply.send(Err(error()));
            }
        }
        let waiters = self
            .unindexed
            .drain(..)
            .chain(
                std::mem::take(&mut self.indexing)
                    .into_values()
                    .flat_map(|i| i.waiters),
            )
            .chain(self.waiting.drain(..).map(|(_, aged)| aged))
            .map(|(_, waiter)| waiter)
            .chain(self.ready_reads.drain(..))
            .collect::<Vec<_>>();
        for waiter in waiters {
            waiter.answer_error(error());
        }
        self.lease_tasks.fail_waiting(|_| true, &error);
        self.feeds.fail_all(self.shard, &reason);
        // Nothing more will be sent: watches ask, and hear it stopped.
        self.settled = 0;
        self.failure.get_or_insert(reason);
    }
}

/// What one loop round's reads took: the time spent serving them (not the
/// round's own waits) and the bytes of their answers.
#[derive(Default)]
struct ReadRound {
    spent: Duration,
    bytes: usize,
}

impl ReadRound {
    /// Whether another read may be served in this round.
    fn has_room(&self) -> bool {
        self.bytes < READ_BYTES_PER_ROUND && self.spent < READ_TIME_PER_ROUND
    }
}

/// Whether the store's state has a NOSPACE alarm raised.
fn has_no_space_alarm(store: &Store) -> NodeResult<bool> {
    Ok(store
        .alarms()?
        .iter()
        .any(|(kind, _)| *kind == AlarmKind::NoSpace))
}

/// Serves a shard that could not be opened: every call is answered with
/// why (and `Status` with a stopped status), so the node serves its other
/// shards and says which one stopped.
pub(crate) async fn serve_stopped(shard: usize, reason: String, calls: flume::Receiver<ShardCall>) {
    while let Ok(call) = calls.recv_async().await {
        match call {
            ShardCall::Status { reply } => {
                let _ = reply.send(Ok(ShardStatus::stopped(shard, &reason)));
            }
            call => call.answer_error(stopped(shard, &reason)),
        }
    }
}

/// What raft-rs starts with from the WAL: the floor (an entry whose
/// index and term are known but which is not read again, or `(0, 0)` for
/// a log that starts at 1), the index and term of every entry after it up
/// to `commit` (applied, or applied by replay; read a chunk at a time and
/// not kept), and the entries after `commit`, kept in memory.
///
/// With `catch_up` the floor is the WAL's first entry, so that followers
/// can be sent every entry after it (that reads the replayed entries
/// twice); without, the floor is the commit index's entry.
async fn read_tail(
    wal: &keel_wal::Wal,
    applied: u64,
    commit: u64,
    catch_up: bool,
    installed: (u64, u64),
) -> Result<TailRead, String> {
    let first = wal.first_index();
    let last = wal.last_index();
    // The WAL starts right after the snapshot installed last, whose index
    // and term stand in for the entry before it.
    let after_snapshot = installed.0 != 0 && installed.0 + 1 == first;
    if !after_snapshot && (applied == 0 && first > 1 || applied != 0 && applied < first) {
        return Err(format!(
            "the WAL starts at {first} but replay needs entry {}",
            applied.max(1)
        ));
    }
    if first > last {
        // Empty: new, or reset to a snapshot that ends at `last`.
        return match last {
            0 => Ok(((0, 0), Vec::new(), Vec::new())),
            last if installed.0 == last => Ok((installed, Vec::new(), Vec::new())),
            _ => Err(format!("the WAL holds no entry, and ends at {last}")),
        };
    }
    let from = if catch_up || commit == 0 {
        first
    } else {
        commit.max(first)
    };
    let floor_index = match (catch_up, commit) {
        (false, 1..) if commit >= first => commit,
        _ if after_snapshot => 0,
        _ if first > 1 => first,
        _ => 0,
    };
    let mut floor = if after_snapshot { installed } else { (0, 0) };
    let mut older = Vec::new();
    let mut entries = Vec::new();
    let mut next = from;
    while next <= last {
        let records = wal
            .read_limited(next..last + 1, REPLAY_CHUNK_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        if records.is_empty() {
            return Err(format!("the WAL ends before entry {next}"));
        }
        for record in records {
            let entry = decode_record(record)?;
            next = entry.index + 1;
            if entry.index == floor_index {
                floor = (entry.index, entry.term);
            } else if entry.index <= commit {
                older.push((entry.index, entry.term));
            } else {
                entries.push(entry);
            }
        }
    }
    Ok((floor, older, entries))
}

/// Opens a shard's tree file as the replica uses it: syncs deferred to
/// the loop, leases homed by shard.
fn open_store(dir: &Path, options: Options, shard: usize, shards: usize) -> NodeResult<Store> {
    let mut store = Store::open(dir.join("kv.db"), options)?;
    store.defer_syncs(true);
    store.set_lease_homes(LeaseHomes { shard, shards });
    Ok(store)
}

/// A random 64-bit number from the standard library's per-process keys
/// (no need for more: it only tells this replica's lifetimes apart).
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// [`read_tail`]'s answer.
type TailRead = ((u64, u64), Vec<(u64, u64)>, Vec<raft::eraftpb::Entry>);

/// A WAL record as the Raft entry it holds.
fn decode_record(record: keel_wal::Entry) -> Result<raft::eraftpb::Entry, String> {
    if record.kind != RAFT_ENTRY_KIND {
        return Err(format!(
            "WAL record {} of unknown type {}",
            record.index, record.kind
        ));
    }
    log_store::decode_entry(record.index, &record.payload).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wal_keeps_what_replay_and_the_catch_up_tail_need() {
        // Replay needs the durable index on.
        assert_eq!(wal_keep_from(100, 20_000, None, 1), 100);
        // Otherwise the last 5,000 applied entries.
        assert_eq!(wal_keep_from(19_000, 20_000, None, 1), 15_000);
    }

    #[test]
    fn a_live_follower_that_lags_is_kept_up_with_while_the_log_is_short() {
        assert_eq!(wal_keep_from(19_000, 20_000, Some(9_001), 2), 9_001);
        // A follower within the tail changes nothing.
        assert_eq!(wal_keep_from(19_000, 20_000, Some(19_990), 2), 15_000);
        // Past the segment cap, it gets a snapshot instead.
        let long = MAX_CATCH_UP_SEGMENTS + 1;
        assert_eq!(wal_keep_from(19_000, 20_000, Some(9_001), long), 15_000);
    }
}
