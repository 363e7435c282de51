//! Why a request was refused, as typed values. Every refusal but
//! [`KvError::Storage`] is deterministic: every replica refuses the same
//! entry the same way, and a refused entry changes nothing.

use crate::mvcc::types::{LeaseId, Revision};

/// Result of a keyspace call.
pub type KvResult<T> = std::result::Result<T, KvError>;

/// A refused request, or a storage failure underneath.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    /// `ignore_value` or `ignore_lease` on a key that does not exist.
    #[error("key not found")]
    KeyNotFound,
    /// The revision asked for is below the compaction point.
    #[error("required revision has been compacted (compacted up to {compact_revision})")]
    Compacted {
        /// History below this revision is gone.
        compact_revision: Revision,
    },
    /// The revision asked for has not been applied yet.
    #[error("required revision {requested} is ahead of the current revision {current}")]
    FutureRevision {
        /// What was asked for.
        requested: Revision,
        /// The current revision.
        current: Revision,
    },
    /// No lease with this id.
    #[error("lease {0} not found")]
    LeaseNotFound(LeaseId),
    /// A grant with an id that is in use.
    #[error("lease {0} already exists")]
    LeaseExists(LeaseId),
    /// A lease id below 0, or a TTL below 1 second.
    #[error("invalid lease: {0}")]
    InvalidLease(String),
    /// A transaction branch with more operations than allowed.
    #[error("too many operations in a transaction branch: {count} > {max}")]
    TooManyOps {
        /// Operations in the branch.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A transaction writes the same key twice.
    #[error("duplicate key given in a transaction: {key:?}")]
    DuplicateKey {
        /// The key.
        key: Vec<u8>,
    },
    /// The request's keys and values are too large together.
    #[error("request of {len} bytes exceeds the limit of {max}")]
    RequestTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A put whose key and value together are too large for the rows it
    /// would store ([`crate::mvcc::MAX_PUT_BYTES`] of key and value,
    /// [`crate::mvcc::MAX_VALUE_LEN`] of value).
    #[error(
        "a put of a {key}-byte key and a {value}-byte value exceeds what one key may hold \
         ({} bytes of key and value, {} of value)",
        crate::mvcc::MAX_PUT_BYTES,
        crate::mvcc::MAX_VALUE_LEN
    )]
    PutTooLarge {
        /// Bytes of the key.
        key: usize,
        /// Bytes of the value.
        value: usize,
    },
    /// A NOSPACE alarm is raised: what takes space is refused until it is
    /// cleared (etcd's "database space exceeded").
    #[error("database space exceeded: a NOSPACE alarm is raised (free space, then disarm it)")]
    NoSpace,
    /// A CORRUPT alarm is raised on the shard: its members' copies
    /// differed, and it takes no writes until the alarm is cleared
    /// (etcd's "corrupt cluster").
    #[error("corrupt cluster: a CORRUPT alarm is raised on this shard (a member's copy differs; see docs/corruption.md)")]
    Corrupt,
    /// What a restore was given cannot be restored (a pair with no
    /// revisions, a lease with no TTL): the snapshot is not keel's, or
    /// damaged past its checksums.
    #[error("cannot restore {0}")]
    BadRestore(String),
    /// An empty key.
    #[error("key is not provided")]
    EmptyKey,
    /// A key longer than [`crate::mvcc::MAX_KEY_LEN`].
    #[error("key of {len} bytes exceeds the limit of {max}")]
    KeyTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value given together with `ignore_value`.
    #[error("value is provided together with ignore_value")]
    ValueProvided,
    /// A lease given together with `ignore_lease`.
    #[error("lease is provided together with ignore_lease")]
    LeaseProvided,
    /// A read's answer would be larger than its `answer_limit`.
    #[error("the answer is larger than {limit} bytes, the most one answer may be; ask for less (with a limit, a narrower range, or keys only)")]
    AnswerTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// A range sorted by something other than the key would need more
    /// memory than a read may hold; ask with a limit, or sort by key.
    #[error("range sorted by {0} matches more than a read may hold; add a limit")]
    ResultTooLarge(&'static str),
    /// Revisions must grow with every entry.
    #[error("revision {given} is not above the current revision {current}")]
    RevisionNotIncreasing {
        /// The entry's revision.
        given: Revision,
        /// The current revision.
        current: Revision,
    },
    /// A member list change made from a list that another change has
    /// replaced since: nothing changed; make it again from the new list.
    #[error("the member list changed (at revision {current}) since this change was made (from revision {base}); try again")]
    MembersChanged {
        /// The list's revision the change was made from.
        base: Revision,
        /// The list's revision now.
        current: Revision,
    },
    /// An auth change made from a record that another change has
    /// replaced since: nothing changed; make it again from the new one.
    #[error("the auth record changed (to auth revision {current}) since this change was made (from {base}); try again")]
    AuthChanged {
        /// The auth revision the change was made from.
        base: u64,
        /// The auth revision now.
        current: u64,
    },
    /// No watcher with this id.
    #[error("watch {0} not found")]
    WatchNotFound(u64),
    /// A durable commit was asked for while a deferred one is not yet
    /// reported ([`crate::mvcc::Store::sync_finished`]); nothing changed.
    #[error("a tree sync is in flight; report it before starting another")]
    SyncInFlight,
    /// The storage underneath failed; the shard must stop (see
    /// [`crate::Error`]).
    #[error(transparent)]
    Storage(#[from] crate::Error),
}

impl KvError {
    /// Whether this is a failure of the shard itself rather than a refusal
    /// of one request.
    pub fn is_fatal(&self) -> bool {
        matches!(self, KvError::Storage(_))
    }
}
