//! keel's write-ahead log: one per shard, segmented, group-committed, on
//! io_uring through glommio DMA files.
//!
//! # Usage
//!
//! ```no_run
//! # async fn demo() -> keel_wal::Result<()> {
//! use keel_wal::{Wal, WalConfig};
//!
//! let wal = Wal::open("/tmp/shard-000/wal", WalConfig::default()).await?;
//! let next = wal.next_index();
//! wal.append(next, 1, b"entry bytes").await?; // durable once this resolves
//! let entries = wal.read(next..next + 1).await?;
//! assert_eq!(entries[0].payload, b"entry bytes");
//! wal.close().await?;
//! # Ok(()) }
//! ```
//!
//! # Model
//!
//! The log holds *entries* with consecutive indexes, each with a caller type
//! byte (1..=127) and an opaque payload, plus one latest-wins *state* blob
//! (for Raft, the HardState). [`Wal::truncate_after`] and [`Wal::reset`]
//! append markers instead of rewriting bytes, so every change is one
//! crash-atomic record. [`Wal::release_below`] deletes whole old segments.
//!
//! # Call-order rules
//!
//! - A log is opened and used on one glommio executor; it is not `Send`.
//! - Records are ordered by the *call* of `append`/`truncate_after`/`reset`/
//!   `save_state`, not by when their futures are awaited.
//! - A record is durable only when its [`Durable`] future resolves `Ok`.
//!   Dropping the future does not cancel the write.
//! - After any write or sync error every call returns [`Error::Failed`];
//!   reopen the log to recover (fail-stop).
//!
//! # Layout
//!
//! - `format`: the on-disk bytes (see `wal/FORMAT.md`);
//! - `scan`: verifying one segment's bytes; `recovery`: opening a directory;
//! - `log_index`: which record is live where; `queue`: accepted records;
//! - `writer`: the write path; `wal`: the handle and the flusher task.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

mod config;
mod error;
mod faults;
mod format;
#[doc(hidden)]
pub mod fuzzing;
mod log_index;
mod queue;
mod recovery;
mod scan;
mod segment_name;
#[cfg(test)]
mod test_support;
mod wal;
mod writer;

/// The README's examples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeExamples;

pub use config::WalConfig;
pub use error::{Error, Result};
pub use format::MAX_PAYLOAD_LEN;
pub use wal::{Durable, Entry, SyncObserver, Wal, WalStats};
