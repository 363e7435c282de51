//! keel's copy-on-write B+-tree file: named trees in one file of 4 KiB
//! pages, two checksummed meta slots, free pages reused as soon as no
//! snapshot can see them. The bytes are in `engine/FORMAT.md`.
//!
//! # Usage
//!
//! ```no_run
//! # fn demo() -> keel_engine::Result<()> {
//! use std::ops::Bound;
//! use keel_engine::btree::{Database, Options};
//!
//! let db = Database::open("/tmp/kv.db", Options::default())?;
//! let mut txn = db.begin_write()?;
//! txn.tree(b"keys")?.insert(b"/registry/pods/a", b"spec")?;
//! txn.set_applied_index(42);
//! txn.commit()?;
//!
//! let snapshot = db.begin_read()?;
//! if let Some(keys) = snapshot.tree(b"keys")? {
//!     assert_eq!(keys.get(b"/registry/pods/a")?, Some(&b"spec"[..]));
//!     for entry in keys.range(Bound::Included(b"/registry/"), Bound::Unbounded)?.rev() {
//!         let (key, value) = entry?;
//!         # let _ = (key, value);
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - `page`: pages, extents, the unit header and checksums; `meta`: the
//!   two commit slots; `node`: leaf and branch layouts; `free_space`: the
//!   allocator and the on-disk free list;
//! - `storage` and `mapping`: the file (pwrite + mmap) behind a trait;
//! - `access`: verified reads; `cursor`: ranges; `db`: the database and
//!   snapshots; `write`: copy-on-write changes; `commit`: the commit;
//!   `image`: one commit read as a file of its own (a follower's snapshot).

mod access;
mod commit;
mod commit_list;
mod cursor;
mod db;
mod free_space;
#[doc(hidden)]
pub mod fuzzing;
mod image;
mod mapping;
mod meta;
mod node;
mod page;
mod storage;
mod write;

pub use commit::DeferredDurability;
pub use cursor::Range;
pub use db::{
    CommitSync, Database, Options, PageAudit, ReadTree, ReadTxn, SnapshotSource, SpaceStats,
};
pub use image::CommitImage;
pub use node::{MAX_KEY_LEN, MAX_VALUE_LEN};
pub use page::PAGE_SIZE;
pub use storage::{FileStorage, Storage};
pub use write::{TreeMut, TreeView, WriteSource, WriteTxn};
