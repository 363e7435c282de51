//! The protocol's messages as plain Rust values: what the client crate
//! hands to applications and what the server maps onto the engine. Field
//! meanings follow etcd v3 (see `schema/keel.fbs` and `net/PROTOCOL.md`);
//! [`crate::codec`] turns them into flatbuffers and back.

/// A revision (keel's hybrid logical clock: milliseconds since 2026-01-01
/// `<< 13 | logical`, below 2^53, unique across shards).
pub type Revision = u64;

/// A lease id; 0 is "no lease".
pub type LeaseId = i64;

/// A key and the metadata kept with it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// Revision of the put that created the key.
    pub create_revision: Revision,
    /// Revision of the last put.
    pub mod_revision: Revision,
    /// Puts since the key was created.
    pub version: u64,
    /// The attached lease, or 0.
    pub lease: LeaseId,
    /// The value.
    pub value: Vec<u8>,
}

/// Order of a range answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    /// By key, ascending.
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

/// Read a key or a range.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeRequest {
    /// First key.
    pub key: Vec<u8>,
    /// Empty: `key` alone; `[0]`: every key from `key` on; else `[key, range_end)`.
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
    /// Serve from the replica's applied state without a Raft round.
    pub serializable: bool,
}

/// Store a value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PutRequest {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// Lease to attach, or 0.
    pub lease: LeaseId,
    /// Return the pair as it was before.
    pub prev_kv: bool,
    /// Keep the current value.
    pub ignore_value: bool,
    /// Keep the current lease.
    pub ignore_lease: bool,
}

/// Delete a key or a range.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteRangeRequest {
    /// First key.
    pub key: Vec<u8>,
    /// As in [`RangeRequest::range_end`].
    pub range_end: Vec<u8>,
    /// Return the deleted pairs.
    pub prev_kv: bool,
}

/// What a compare looks at, with its operand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareTarget {
    /// The version.
    Version(u64),
    /// The create revision.
    Create(Revision),
    /// The mod revision.
    Mod(Revision),
    /// The value.
    Value(Vec<u8>),
    /// The lease.
    Lease(LeaseId),
}

/// How the key's field relates to the operand.
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

/// One condition of a transaction.
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

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOp {
    /// A read.
    Range(RangeRequest),
    /// A put.
    Put(PutRequest),
    /// A delete.
    DeleteRange(DeleteRangeRequest),
    /// A nested transaction.
    Txn(TxnRequest),
}

/// If every compare holds, `success`, else `failure`, at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TxnRequest {
    /// The conditions.
    pub compare: Vec<Compare>,
    /// Operations when all hold.
    pub success: Vec<RequestOp>,
    /// Operations otherwise.
    pub failure: Vec<RequestOp>,
}

/// Start a watch; its id is the id of the request that creates it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WatchCreate {
    /// First key.
    pub key: Vec<u8>,
    /// As in [`RangeRequest::range_end`].
    pub range_end: Vec<u8>,
    /// First revision to report; 0 is from the next one.
    pub start_revision: Revision,
    /// Attach the previous pair to each event.
    pub prev_kv: bool,
    /// Leave puts out.
    pub no_put: bool,
    /// Leave deletes out.
    pub no_delete: bool,
    /// Send empty progress notifications while idle.
    pub progress_notify: bool,
    /// The client handles [`WatchEvents::also_watch_ids`]: the server may
    /// send one message for many of the connection's watches.
    pub shared_frames: bool,
}

/// A client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Read.
    Range(RangeRequest),
    /// Write one key.
    Put(PutRequest),
    /// Delete.
    DeleteRange(DeleteRangeRequest),
    /// Transaction.
    Txn(TxnRequest),
    /// Forget history below a revision.
    Compact {
        /// The revision.
        revision: Revision,
    },
    /// Start a watch stream.
    WatchCreate(WatchCreate),
    /// End a watch stream.
    WatchCancel {
        /// The watch.
        watch_id: u64,
    },
    /// Ask every watch of the connection for a progress notification.
    WatchProgress,
    /// Create a lease.
    LeaseGrant {
        /// The id, or 0 for the server to pick one.
        id: LeaseId,
        /// Time to live, seconds.
        ttl: i64,
    },
    /// Delete a lease and its keys.
    LeaseRevoke {
        /// The lease.
        id: LeaseId,
    },
    /// Restart a lease's TTL.
    LeaseKeepAlive {
        /// The lease.
        id: LeaseId,
    },
    /// A lease's remaining time.
    LeaseTimeToLive {
        /// The lease.
        id: LeaseId,
        /// List its keys too.
        keys: bool,
    },
    /// Every lease.
    LeaseLeases,
    /// The server's status and shard map.
    Status,
    /// A token for a user (docs/security.md): present it on every
    /// connection with [`Request::UseToken`].
    Authenticate {
        /// The user.
        name: String,
        /// Its password.
        password: String,
    },
    /// The connection's requests from here on are this token's user's
    /// (answered before any later request of the connection is read).
    UseToken {
        /// From [`Request::Authenticate`].
        token: String,
    },
    /// List, raise or clear alarms (etcd's `Maintenance.Alarm`).
    Alarm {
        /// What to do.
        action: AlarmAction,
        /// The member, for a raise or a clear.
        member_id: u64,
        /// The alarm, for a raise or a clear.
        alarm: AlarmType,
    },
    /// Move, unpin, drain or undrain leadership (etcd's
    /// `Maintenance.MoveLeader`, extended; docs/cluster.md, "Leadership
    /// placement").
    Leader {
        /// What to do.
        action: LeaderAction,
        /// The shard to move or unpin; [`ALL_SHARDS`]: every shard the
        /// receiving member leads.
        shard: u32,
        /// The member to move to, drain or undrain.
        member_id: u64,
    },
    /// etcd's Cluster API: list, add, remove, promote or update members
    /// (docs/membership.md).
    Member {
        /// What to do.
        action: MemberAction,
        /// The member to remove, promote or update.
        member_id: u64,
        /// A new member's name.
        name: String,
        /// A new member's peer address, or a member's new one.
        peer_address: String,
        /// Add the new member as a learner (etcd's default for keel; etcd
        /// adds a voter unless told `--learner`).
        learner: bool,
    },
}

/// What a member request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemberAction {
    /// The members.
    #[default]
    List,
    /// Add a member.
    Add,
    /// Remove a member.
    Remove,
    /// Make a learner a voter.
    Promote,
    /// Change a member's peer address.
    Update,
}

/// One member, as a member answer lists it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberInfo {
    /// Its id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its peer address.
    pub peer_address: String,
    /// A learner (votes in no shard).
    pub learner: bool,
    /// The answering member heard from it lately.
    pub started: bool,
    /// Its client address, when known (the answering member's own).
    pub client_address: String,
}

/// A leader request's shard meaning "every shard the receiving member
/// leads" (for a move) or "every shard" (for an unpin).
pub const ALL_SHARDS: u32 = u32::MAX;

/// What a leader request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LeaderAction {
    /// Move a shard's leadership to a member and keep it there.
    #[default]
    Move,
    /// Let a shard's leadership follow the spread again.
    Unpin,
    /// Keep every shard's leadership off a member.
    Drain,
    /// Let a drained member lead again.
    Undrain,
}

/// What an alarm request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AlarmAction {
    /// List the alarms raised.
    #[default]
    Get,
    /// Raise one.
    Activate,
    /// Clear one.
    Deactivate,
}

/// An alarm, as etcd names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub enum AlarmType {
    /// No alarm.
    #[default]
    None,
    /// The backend quota is exceeded, or the disk is full: what takes space
    /// is refused until it is cleared.
    NoSpace,
    /// A member's copy of a shard differs from the others': the shard
    /// refuses writes until it is cleared.
    Corrupt,
}

/// A raised alarm and the member that raised it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct AlarmMember {
    /// The member.
    pub member_id: u64,
    /// The alarm.
    pub alarm: AlarmType,
}

/// The answer to a range.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeResponse {
    /// The pairs.
    pub kvs: Vec<KeyValue>,
    /// More pairs matched than the limit let through.
    pub more: bool,
    /// Keys in the range.
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
    /// Keys deleted.
    pub deleted: u64,
    /// The deleted pairs, when asked for.
    pub prev_kvs: Vec<KeyValue>,
}

/// The answer to one transaction operation.
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

/// What changed a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A put.
    Put,
    /// A delete.
    Delete,
}

/// One change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The pair after a put; for a delete, the key and the delete's revision.
    pub kv: KeyValue,
    /// The pair before, when asked for.
    pub prev_kv: Option<KeyValue>,
}

/// A message of a watch stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WatchEvents {
    /// The watch (its creating request's id).
    pub watch_id: u64,
    /// The first message: the watch exists.
    pub created: bool,
    /// The last message: the watch is over.
    pub canceled: bool,
    /// With `canceled`: history below this revision is gone.
    pub compact_revision: Revision,
    /// Changes in revision order; empty in a progress notification, whose
    /// response revision says everything up to it has been sent.
    pub events: Vec<Event>,
    /// More watches of the connection this message is for, each as if it
    /// were its own (only to watches created with `shared_frames`).
    pub also_watch_ids: Vec<u64>,
}

/// A lease's state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseTimeToLive {
    /// The lease.
    pub id: LeaseId,
    /// The TTL it was granted.
    pub granted_ttl: i64,
    /// Seconds left; -1 when the lease does not exist.
    pub ttl: i64,
    /// Its keys, when asked for.
    pub keys: Vec<Vec<u8>>,
}

/// A lease in a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseStatus {
    /// The lease.
    pub id: LeaseId,
    /// Its granted TTL.
    pub ttl: i64,
}

/// One shard's state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShardInfo {
    /// The shard.
    pub shard: u32,
    /// The core that serves it.
    pub core: u32,
    /// Its Raft leader's id (0: none known).
    pub leader: u64,
    /// Its last Raft log index.
    pub raft_index: u64,
    /// Its Raft term.
    pub raft_term: u64,
    /// Bytes of its B+-tree file.
    pub db_size: u64,
    /// Why the shard stopped; empty while it runs.
    pub stopped: String,
    /// Its Raft commit index as this member knows it.
    pub commit_index: u64,
    /// The last index this member applied.
    pub applied_index: u64,
    /// The shard's voters, as this member's Raft configuration has them.
    pub voters: Vec<u64>,
    /// Its learners.
    pub learners: Vec<u64>,
    /// The member its leadership is pinned to (0: none).
    pub pinned_leader: u64,
    /// Members it is never led from (drained).
    pub avoided: Vec<u64>,
    /// In a joint configuration, the voters it is leaving.
    pub voters_outgoing: Vec<u64>,
}

/// The server's status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    /// keel's version.
    pub version: String,
    /// Shards of the keyspace.
    pub shards: u32,
    /// Cores serving them; shard `s` is served by core `s % cores`.
    pub cores: u32,
    /// Each core's own port, by core.
    pub core_ports: Vec<u16>,
    /// Each shard's state.
    pub shard_info: Vec<ShardInfo>,
    /// This member's id.
    pub member_id: u64,
    /// This member's name.
    pub name: String,
    /// Its client address.
    pub client_address: String,
    /// The alarms raised.
    pub alarms: Vec<AlarmMember>,
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Something the codes below do not name.
    Unknown,
    /// Malformed, an unknown operation, a bad key or argument.
    BadRequest,
    /// A request or answer over the size limit.
    TooLarge,
    /// A transaction with too many operations.
    TooManyOps,
    /// A transaction whose keys span shards.
    CrossShardTxn,
    /// The revision was compacted.
    Compacted,
    /// The revision is ahead of the store.
    FutureRevision,
    /// No such lease.
    LeaseNotFound,
    /// The lease id is taken.
    LeaseExists,
    /// `ignore_value`/`ignore_lease` on a missing key.
    KeyNotFound,
    /// A transaction writes a key twice.
    DuplicateKey,
    /// The shard stopped after a storage failure.
    ShardStopped,
    /// This replica does not lead the shard.
    NotLeader,
    /// The server is shutting down.
    ShuttingDown,
    /// No such watch.
    WatchNotFound,
    /// A NOSPACE alarm is raised: what takes space is refused.
    NoSpace,
    /// No leader answered in time (an election is going on, or this
    /// member is cut off from the majority): the read may be retried,
    /// here or on another member.
    NoLeader,
    /// The write was proposed, and this member cannot tell what became of
    /// it (it installed a snapshot past it): it may or may not have taken
    /// effect. Read to find out.
    OutcomeUnknown,
    /// This member is a learner: it serves status, the member list and
    /// serializable reads, nothing else (etcd's "rpc not supported for
    /// learner"). Nothing was done; any other member may take it.
    Learner,
    /// A CORRUPT alarm is raised on the shard: it takes no writes until
    /// the alarm is cleared (etcd's "corrupt cluster").
    Corrupt,
    /// Auth is on and the connection's user may not do this (etcd's
    /// "permission denied").
    PermissionDenied,
    /// Auth is on and the connection has no valid token: none was
    /// presented, or it is forged, expired, or outlived its user's
    /// password or auth itself (etcd's "user name is empty" and "invalid
    /// auth token"). Authenticate again.
    Unauthenticated,
    /// Authenticate refused: an unknown user or a wrong password.
    AuthFailed,
    /// Authenticate while auth is off: no token is needed.
    AuthNotEnabled,
    /// This member cannot check auth now (its shard 0 has not read the
    /// auth record, or cannot); another member may.
    AuthUnavailable,
}

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    /// What kind of failure.
    pub code: ErrorCode,
    /// For people.
    pub message: String,
    /// For [`ErrorCode::Compacted`], the compaction revision; for
    /// [`ErrorCode::FutureRevision`], the current revision.
    pub revision: Revision,
    /// For [`ErrorCode::NotLeader`], the leader's member id as the server
    /// knows it (0: none known).
    pub leader: u64,
}

/// What a response carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseBody {
    /// To a range.
    Range(RangeResponse),
    /// To a put.
    Put(PutResponse),
    /// To a delete.
    DeleteRange(DeleteRangeResponse),
    /// To a transaction.
    Txn(TxnResponse),
    /// To a compaction.
    Compact,
    /// A watch stream's message.
    Watch(WatchEvents),
    /// To a grant.
    LeaseGrant {
        /// The lease.
        id: LeaseId,
        /// Its TTL.
        ttl: i64,
    },
    /// To a revoke.
    LeaseRevoke,
    /// To a keep-alive.
    LeaseKeepAlive {
        /// The lease.
        id: LeaseId,
        /// Its restarted TTL; 0 when the lease is gone.
        ttl: i64,
    },
    /// To a time-to-live.
    LeaseTimeToLive(LeaseTimeToLive),
    /// To a list.
    LeaseLeases(Vec<LeaseStatus>),
    /// To a status request.
    Status(Status),
    /// To Authenticate: the token.
    Authenticate {
        /// Present it on each connection.
        token: String,
    },
    /// To UseToken: the connection is the token's user's.
    UseToken,
    /// To an alarm request: the alarms it covered.
    Alarm(Vec<AlarmMember>),
    /// To a leader request: whether leadership got where it was sent
    /// within the server's wait (it goes on trying when not).
    Leader {
        /// Got there.
        settled: bool,
    },
    /// To a member request: the member it concerns (a new one's id) and
    /// the members after it.
    Member {
        /// The member added, removed, promoted or updated (0 for a list).
        member_id: u64,
        /// Every member.
        members: Vec<MemberInfo>,
        /// The cluster's id.
        cluster_id: u64,
    },
    /// The request failed.
    Error(ErrorBody),
}

/// A server response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The id of the request it answers.
    pub id: u64,
    /// The revision the answer is at.
    pub revision: Revision,
    /// The answer.
    pub body: ResponseBody,
}
