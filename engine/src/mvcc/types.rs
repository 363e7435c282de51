//! The requests a shard applies and the answers it gives, with etcd v3's
//! meaning. They are plain Rust values: the protocol (issue 6) and the Raft
//! entry encoding (issue 5) map onto them.

/// A revision: a hybrid logical clock value chosen by the shard leader
/// (milliseconds since 2026 `<< 13 | logical`, below 2^53; see
/// `crate::hlc`). Within a shard every entry carries a strictly greater
/// revision than the one before.
pub type Revision = u64;

/// A lease id. Ids are positive; 0 means "no lease".
pub type LeaseId = i64;

/// Longest key, in bytes. A key is stored escaped (a zero byte becomes two)
/// inside history rows, and the B+-tree takes keys of up to 4096 bytes, so
/// a key made only of zero bytes must still fit: 2 × 2040 + 10 <= 4096.
pub const MAX_KEY_LEN: usize = 2040;

/// Largest request, in bytes of keys and values (etcd's default).
pub const MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// Largest value, in bytes, of a put with a key of up to 7 bytes. A put's
/// stored rows must each fit the B+-tree's value limit of 1.5 MiB: its
/// `kv` row adds 49 bytes to the value, its `history` row 42 bytes to the
/// key and value. So a put holds at most [`MAX_PUT_BYTES`] of key and
/// value together, and a value of at most this.
pub const MAX_VALUE_LEN: usize = crate::btree::MAX_VALUE_LEN - 49;

/// Most bytes of key and value together in one put (see
/// [`MAX_VALUE_LEN`]); a request as a whole is held to
/// [`MAX_REQUEST_BYTES`].
pub const MAX_PUT_BYTES: usize = crate::btree::MAX_VALUE_LEN - 42;

/// Most operations in one transaction branch, at any nesting level (etcd's
/// default `--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;

/// A key and the metadata etcd keeps with it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// Revision of the put that created the key (since its last delete).
    pub create_revision: Revision,
    /// Revision of the last put.
    pub mod_revision: Revision,
    /// Number of puts since the key was created; 1 after the first.
    pub version: u64,
    /// The attached lease, or 0.
    pub lease: LeaseId,
    /// The value (empty in `keys_only` answers).
    pub value: Vec<u8>,
}

/// Store a value under a key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PutRequest {
    /// The key; must not be empty.
    pub key: Vec<u8>,
    /// The value; must be empty with `ignore_value`.
    pub value: Vec<u8>,
    /// Lease to attach, or 0; must be 0 with `ignore_lease`.
    pub lease: LeaseId,
    /// Return the key-value pair as it was before.
    pub prev_kv: bool,
    /// Keep the current value (the key must exist).
    pub ignore_value: bool,
    /// Keep the current lease (the key must exist).
    pub ignore_lease: bool,
}

/// Delete a key or a range of keys, at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteRangeRequest {
    /// First key.
    pub key: Vec<u8>,
    /// See [`RangeRequest::range_end`].
    pub range_end: Vec<u8>,
    /// Return the deleted pairs.
    pub prev_kv: bool,
}

/// Order of a range answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    /// By key, ascending (etcd's default).
    #[default]
    None,
    /// Ascending by the target.
    Ascend,
    /// Descending by the target.
    Descend,
}

/// What a range answer is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortTarget {
    /// The key.
    #[default]
    Key,
    /// The version.
    Version,
    /// The create revision.
    Create,
    /// The mod revision.
    Mod,
    /// The value.
    Value,
}

/// Read a key or a range of keys, at the head or at an older revision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeRequest {
    /// First key; must not be empty (`[0]` with `range_end = [0]` is every key).
    pub key: Vec<u8>,
    /// Empty: just `key`. `[0]`: every key at or after `key`. Otherwise the
    /// keys in `[key, range_end)`; [`prefix_end`] gives a prefix's end.
    pub range_end: Vec<u8>,
    /// Most pairs to return; 0 is no limit.
    pub limit: u64,
    /// Revision to read at; 0 is the head.
    pub revision: Revision,
    /// Sort order.
    pub sort_order: SortOrder,
    /// Sort target.
    pub sort_target: SortTarget,
    /// Leave values out.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
    /// Only pairs with `mod_revision >=` this (0: no bound).
    pub min_mod_revision: Revision,
    /// Only pairs with `mod_revision <=` this (0: no bound).
    pub max_mod_revision: Revision,
    /// Only pairs with `create_revision >=` this (0: no bound).
    pub min_create_revision: Revision,
    /// Only pairs with `create_revision <=` this (0: no bound).
    pub max_create_revision: Revision,
    /// Most bytes the answer's pairs may take, each counted as
    /// [`answer_size`](crate::mvcc::answer_size) counts it; 0: no limit. A
    /// read whose answer would be larger is refused with
    /// [`KvError::AnswerTooLarge`](crate::mvcc::KvError::AnswerTooLarge)
    /// once it has gathered this much, before it gathers more. A server's
    /// setting, not part of the log: a range inside a transaction is
    /// logged without it.
    pub answer_limit: usize,
}

pub use keel_routing::prefix_end;

/// What a compare looks at, and the operand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareTarget {
    /// The version (0 for a missing key).
    Version(u64),
    /// The create revision (0 for a missing key).
    Create(Revision),
    /// The mod revision (0 for a missing key).
    Mod(Revision),
    /// The value (a missing key never compares true).
    Value(Vec<u8>),
    /// The lease (0 for a missing key).
    Lease(LeaseId),
}

/// How a key's field compares with the operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareResult {
    /// `==`
    Equal,
    /// `!=`
    NotEqual,
    /// `<`
    Less,
    /// `>`
    Greater,
}

/// One condition of a transaction: true when every key in the range
/// satisfies it (a range with no key compares the zero values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    /// The key.
    pub key: Vec<u8>,
    /// As in [`RangeRequest::range_end`].
    pub range_end: Vec<u8>,
    /// Field and operand.
    pub target: CompareTarget,
    /// Relation.
    pub result: CompareResult,
}

/// One operation inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOp {
    /// A read; it sees the transaction's earlier writes.
    Range(RangeRequest),
    /// A put.
    Put(PutRequest),
    /// A delete.
    DeleteRange(DeleteRangeRequest),
    /// A nested transaction; its compares see the state before the outer
    /// transaction.
    Txn(TxnRequest),
}

/// If every compare holds, do `success`, else `failure`; all writes share
/// one revision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TxnRequest {
    /// The conditions.
    pub compare: Vec<Compare>,
    /// Operations when all hold.
    pub success: Vec<RequestOp>,
    /// Operations otherwise.
    pub failure: Vec<RequestOp>,
}

/// Everything a Raft entry can do to a shard's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A put.
    Put(PutRequest),
    /// A delete.
    DeleteRange(DeleteRangeRequest),
    /// A transaction.
    Txn(TxnRequest),
    /// Forget history below `revision` (bounded steps follow; see
    /// [`crate::mvcc::Store::compact_step`]).
    Compact {
        /// Reads below this revision fail from now on.
        revision: Revision,
    },
    /// Create a lease. The proposer picks the id (0 lets the shard pick a
    /// deterministic one).
    LeaseGrant {
        /// The id, or 0.
        id: LeaseId,
        /// Time to live, in seconds.
        ttl: i64,
    },
    /// A client revoke: delete the lease and its keys.
    LeaseRevoke {
        /// The lease.
        id: LeaseId,
    },
    /// The leader's expiry of a bounded batch of leases; ids already gone
    /// are skipped.
    LeaseExpire {
        /// The leases.
        ids: Vec<LeaseId>,
    },
    /// Remaining time to live of leases, so a new leader does not restart
    /// them at their full TTL. A remaining TTL of 0 clears the checkpoint.
    LeaseCheckpoint {
        /// `(lease, remaining seconds)`.
        checkpoints: Vec<(LeaseId, i64)>,
    },
    /// On a shard that mirrors leases homed elsewhere: bring each mirror to
    /// what its home says (a grant copied, or a lease gone with its keys
    /// here). Idempotent, and ordered by each task's grant revision: a task
    /// older than the mirror does nothing.
    LeaseMirror {
        /// What the homes say, one task per lease.
        tasks: Vec<LeaseTask>,
    },
    /// On a lease's home: every mirror has done these tasks; each task row
    /// that still says the same goes.
    LeaseTasksDone {
        /// The tasks carried out.
        tasks: Vec<LeaseTask>,
    },
    /// Raises or clears an alarm. While a NOSPACE alarm is raised the shard
    /// refuses what takes space (puts, transactions with a put, lease
    /// grants) with [`crate::mvcc::KvError::NoSpace`]; reads, deletes,
    /// compaction and revokes go on (etcd's capped applier).
    Alarm {
        /// Raise or clear.
        action: AlarmAction,
        /// Which alarm.
        kind: AlarmKind,
        /// The member that raised it (etcd's member id).
        member: u64,
    },
    /// Where the shard's leadership should be (docs/cluster.md,
    /// "Leadership placement"): pinned to a member, or kept off one.
    Placement(PlacementChange),
    /// Sets the cluster's member list (shard 0 only; docs/membership.md):
    /// taken only if the list is still the one set at `base`, so that two
    /// changes made from one list never both apply.
    Members(MembersChange),
    /// Sets the cluster's auth record (shard 0 only; docs/security.md):
    /// taken only if the record is still the one at `base`, and given the
    /// next auth revision.
    Auth(AuthChange),
}

/// A new auth record, made from the one at auth revision `base`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthChange {
    /// The auth revision of the record it replaces (0: none yet).
    pub base: u64,
    /// The record (the server's encoding).
    pub state: Vec<u8>,
}

/// The auth record shard 0 holds, and its auth revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthRecord {
    /// Bumped by every change; 0 before the first.
    pub revision: u64,
    /// The record (the server's encoding; empty before the first change).
    pub state: Vec<u8>,
}

/// A new member list, made from the one set at `base`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembersChange {
    /// The revision of the entry that set the list it replaces (0: the
    /// list the cluster was created with, never changed).
    pub base: Revision,
    /// Every member, in id order.
    pub members: Vec<MemberRecord>,
    /// Every id ever removed, in order: never given again, and frames
    /// from them are refused.
    pub removed: Vec<u64>,
}

/// One member, as the member list holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    /// Its id (its Raft id in every shard's group).
    pub id: u64,
    /// Its name (`--name`).
    pub name: String,
    /// Where its core 0 takes peer connections.
    pub peer_address: String,
    /// A learner: gets every shard's log, votes in none.
    pub learner: bool,
}

/// A shard's Raft configuration, by member id (raft-rs's `ConfState`,
/// kept here without the Raft types).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfIds {
    /// Who votes (in a joint configuration, the incoming voters).
    pub voters: Vec<u64>,
    /// Who gets the log without voting.
    pub learners: Vec<u64>,
    /// In a joint configuration, the outgoing voters.
    pub voters_outgoing: Vec<u64>,
    /// Voters that become learners when the joint configuration is left.
    pub learners_next: Vec<u64>,
    /// Whether raft-rs leaves the joint configuration by itself.
    pub auto_leave: bool,
    /// The newest member list a change that made this configuration was
    /// made for (its revision): a leader following an older list must not
    /// steer the shard back to it.
    pub list_revision: u64,
}

/// The member list as a shard 0 tree holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberList {
    /// The revision of the entry that set it (0: never set; the cluster
    /// runs with the members it was created with).
    pub revision: Revision,
    /// Every member, in id order.
    pub members: Vec<MemberRecord>,
    /// Every id ever removed, in order.
    pub removed: Vec<u64>,
}

/// A change to a shard's leadership placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlacementChange {
    /// Lead from this member (`move-leader`).
    Pin(u64),
    /// Back to the spread every shard gets by default.
    Unpin,
    /// Never lead from this member (drained for maintenance).
    Avoid(u64),
    /// Lead from this member again when the spread says so.
    Unavoid(u64),
}

/// A shard's leadership placement, as its replicas hold it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// The member the shard is pinned to (0: none).
    pub pinned: u64,
    /// Members the shard is never led from, in id order.
    pub avoided: Vec<u64>,
}

impl TxnRequest {
    /// Whether it has a put in either branch, at any depth: such a
    /// transaction takes space (etcd's quota counts it).
    pub fn has_puts(&self) -> bool {
        self.success.iter().chain(&self.failure).any(|op| match op {
            RequestOp::Put(_) => true,
            RequestOp::Txn(nested) => nested.has_puts(),
            RequestOp::Range(_) | RequestOp::DeleteRange(_) => false,
        })
    }
}

impl Entry {
    /// Whether applying it takes space: what a NOSPACE alarm refuses (a
    /// put, a transaction with a put, a lease grant), as etcd's quota does.
    pub fn takes_space(&self) -> bool {
        match self {
            Entry::Put(_) | Entry::LeaseGrant { .. } => true,
            Entry::Txn(txn) => txn.has_puts(),
            _ => false,
        }
    }
}

/// What an [`Entry::Alarm`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmAction {
    /// Raise the alarm.
    Activate,
    /// Clear it.
    Deactivate,
}

/// An alarm, as etcd names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AlarmKind {
    /// The backend quota is exceeded, or the disk is full.
    NoSpace,
    /// A member's copy of the shard differs from the others' (its hash at
    /// a revision did not match theirs): the shard refuses writes until
    /// the alarm is cleared (docs/corruption.md).
    Corrupt,
}

/// What a lease's home shard must still tell the other shards (its
/// mirrors): recorded with the grant, revoke or expiry that made it, in
/// the home's own state, and carried out until every mirror has done it
/// (docs/node.md, "Leases across shards").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LeaseTask {
    /// The lease.
    pub id: LeaseId,
    /// Copy the grant, or remove the mirror with its keys.
    pub kind: LeaseTaskKind,
    /// The TTL granted (for a revoke, the one it had).
    pub ttl: i64,
    /// The revision of the home's grant: a mirror takes a grant only if it
    /// is newer than what it holds, and a revoke removes only mirrors of
    /// that grant or older ones.
    pub granted_revision: Revision,
}

/// See [`LeaseTask::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LeaseTaskKind {
    /// The lease is granted: every mirror holds it.
    Grant,
    /// The lease is gone: no mirror holds it or its keys.
    Revoke,
}

/// The answer to a range.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeResponse {
    /// The pairs.
    pub kvs: Vec<KeyValue>,
    /// Whether more pairs matched than `limit` let through.
    pub more: bool,
    /// Number of keys in the range at the revision (before the min/max
    /// filters and the limit, as in etcd).
    pub count: u64,
}

/// The answer to a put.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PutResponse {
    /// The pair before, when asked for and present.
    pub prev_kv: Option<KeyValue>,
}

/// The answer to a delete.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteRangeResponse {
    /// Number of keys deleted.
    pub deleted: u64,
    /// The deleted pairs, when asked for.
    pub prev_kvs: Vec<KeyValue>,
}

/// The answer to one operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseOp {
    /// To a range.
    Range(RangeResponse),
    /// To a put.
    Put(PutResponse),
    /// To a delete.
    DeleteRange(DeleteRangeResponse),
    /// To a nested transaction.
    Txn(TxnResponse),
}

/// The answer to a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TxnResponse {
    /// Whether the compares held.
    pub succeeded: bool,
    /// One answer per operation of the branch taken.
    pub responses: Vec<ResponseOp>,
}

/// The answer to an applied entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// To a put.
    Put(PutResponse),
    /// To a delete.
    DeleteRange(DeleteRangeResponse),
    /// To a transaction.
    Txn(TxnResponse),
    /// To a compaction.
    Compact,
    /// To a grant.
    LeaseGrant {
        /// The lease's id.
        id: LeaseId,
        /// Its TTL.
        ttl: i64,
    },
    /// To a revoke.
    LeaseRevoke,
    /// To an expiry batch.
    LeaseExpire {
        /// The leases that were still there and are now gone.
        revoked: Vec<LeaseId>,
    },
    /// To a checkpoint.
    LeaseCheckpoint,
    /// To mirror tasks.
    LeaseMirror,
    /// To finished tasks.
    LeaseTasksDone,
    /// To an alarm change.
    Alarm,
    /// To a placement change.
    Placement,
    /// To a member list change.
    Members,
    /// To an auth change: the record's new auth revision.
    Auth {
        /// The auth revision the change got.
        revision: u64,
    },
}

/// What changed a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A put.
    Put,
    /// A delete.
    Delete,
}

/// One change, as a watcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The pair after a put; for a delete, the key with `mod_revision` set
    /// to the delete's revision and everything else zero (as etcd).
    pub kv: KeyValue,
    /// The pair before, when the watcher asked for it and it existed.
    pub prev_kv: Option<KeyValue>,
}

impl Event {
    /// About how many bytes the event holds in memory: its keys and values
    /// plus a fixed allowance for the numbers and allocations. Memory caps
    /// for watchers count this.
    pub(crate) fn size(&self) -> usize {
        let prev = self
            .prev_kv
            .as_ref()
            .map_or(0, |kv| kv.key.len() + kv.value.len());
        self.kv.key.len() + self.kv.value.len() + prev + 48
    }
}
