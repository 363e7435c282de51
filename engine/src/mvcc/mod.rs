//! The MVCC keyspace of one shard: etcd v3 semantics on the B+-tree file,
//! applied deterministically at revisions the shard leader chooses.
//!
//! - [`Store`]: applies [`Entry`]s in batches (one commit per batch) and
//!   answers ranges at the head or at any uncompacted revision;
//!   compaction runs in bounded steps ([`Store::compact_step`]).
//! - Watches: [`Store::watch`], [`Store::watch_poll`]; slow watchers fall
//!   back to reading the revision log instead of holding memory.
//! - [`Lessor`]: the leader's lease timers against an injected clock.
//!
//! Nothing here holds a per-key structure in memory: keys live in the
//! B+-tree, and what is hot stays in the page cache. The layout and its
//! reasons are in `docs/mvcc.md`; the bytes in `engine/FORMAT.md`.
//!
//! ```no_run
//! # fn demo() -> keel_engine::mvcc::KvResult<()> {
//! use keel_engine::btree::Options;
//! use keel_engine::mvcc::{Entry, PutRequest, RangeRequest, Store};
//!
//! let mut store = Store::open("/tmp/kv.db", Options::default())?;
//! let put = PutRequest { key: b"/config/a".to_vec(), value: b"1".to_vec(), ..Default::default() };
//! store.apply(1, 100, &Entry::Put(put))?;
//! let answer = store.range(&RangeRequest { key: b"/config/a".to_vec(), ..Default::default() })?;
//! assert_eq!(answer.kvs[0].mod_revision, 100);
//! # Ok(()) }
//! ```

mod auth;
mod codec;
mod compact;
mod error;
mod lease;
mod members;
mod read;
mod restore;
mod snapshot;
mod store;
mod txn;
mod types;
mod watch;
mod write;

pub use auth::MAX_AUTH_RECORD_BYTES;
pub use error::{KvError, KvResult};
pub use lease::{Lessor, LessorConfig, Renewal};
pub use read::{answer_size, RangePage, ANSWER_BYTES_PER_PAIR};
pub(crate) use read::{sort_cmp, KeyRange};
pub use restore::RestoreSeqs;
pub use store::{
    check_entry, Applied, CompactStep, Indexed, LeaseHomes, LeaseInfo, RangePager, Store,
    MAX_LEASE_TTL,
};
pub use types::*;
pub use watch::{WatchId, WatchRequest, WatchUpdate, MAX_BUFFERED_BYTES, MAX_BUFFERED_EVENTS};
