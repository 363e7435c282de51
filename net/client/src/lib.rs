//! The Rust client of keel (tokio).
//!
//! ```no_run
//! # async fn example() -> keel_client::Result<()> {
//! let client = keel_client::Client::connect(&["127.0.0.1:2379"]).await?;
//! client.put("greeting", "hello").await?;
//! let kv = client.get("greeting").await?;
//! assert_eq!(kv.map(|kv| kv.value), Some(b"hello".to_vec()));
//! # Ok(()) }
//! ```
//!
//! It learns the shard map and sends each request whose keys live on one
//! shard straight to the core that serves that shard, on the member that
//! leads it: give it every member of a cluster. Refusals are followed to
//! the leader and dead members passed over, within each call's deadline; a
//! write that was sent and not answered fails as [`Error::Indeterminate`]
//! and is never sent again on its own.
//! Transactions take keys of one shard: put related keys under a common
//! `{hash tag}` (`{user:42}/name`, `{user:42}/email`). Watches resume
//! after a reconnect from the revision after the last one delivered;
//! leases can be kept alive in the background; locks and elections follow
//! etcd's concurrency recipes, with the fencing revision exposed.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

mod client;
mod connection;
mod election;
mod error;
mod lease;
mod lock;
mod member;
mod retry;
mod session;
pub mod tls;
mod txn;
mod watch;

pub use client::{prefix_end, prefix_range, Client, ClientOptions, ClientTls};
pub use election::{Leadership, Observer};
pub use error::{Error, Result};
pub use lease::{KeepAlive, LeaseState};
pub use lock::LockGuard;
pub use session::Credentials;
pub use txn::{Cmp, Op, Txn};
pub use watch::{WatchResponse, Watcher};

/// The protocol's message types, as the client's calls take and answer
/// them.
pub use keel_proto as proto;
pub use keel_proto::{CompareResult, ErrorCode, Event, EventKind, KeyValue};
