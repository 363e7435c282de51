//! The engine's errors, split by what a caller can do about them.

use std::path::PathBuf;

/// Result of every fallible engine operation.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in the storage engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O call failed. A failed write or sync also makes the database
    /// [`Error::Failed`] from then on.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation, e.g. "fdatasync".
        op: &'static str,
        /// The file it was done on.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },

    /// A page read back does not verify. Nothing was changed.
    #[error("corrupt B+-tree file {file}, page {page}: {reason}")]
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// The page number (byte offset / page size).
        page: u64,
        /// What was wrong with it.
        reason: String,
    },

    /// A previous write or sync failed; the file may have lost pages, so the
    /// database refuses all further work (fail-stop). Reopen it to recover.
    #[error("database stopped after an earlier I/O failure: {0}")]
    Failed(String),

    /// A key is longer than [`crate::btree::MAX_KEY_LEN`].
    #[error("key of {len} bytes exceeds the limit of {max}")]
    KeyTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// A value is longer than [`crate::btree::MAX_VALUE_LEN`].
    #[error("value of {len} bytes exceeds the limit of {max}")]
    ValueTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// A row of the MVCC keyspace does not decode: written by a newer
    /// format version, or a bug. Nothing was changed.
    #[error("bad row in tree {tree}: {reason}")]
    BadRow {
        /// The tree.
        tree: &'static str,
        /// What was wrong with it.
        reason: String,
    },

    /// A commit needs more room than the file may grow to
    /// ([`crate::btree::Options::max_file_size`]). Nothing was written and
    /// the database stays usable: reads go on, and smaller commits (or ones
    /// that free space) still work.
    #[error("B+-tree file {file} is full: a commit needs {needed} bytes, the limit is {limit}")]
    Full {
        /// The file.
        file: PathBuf,
        /// The bytes the commit needed.
        needed: u64,
        /// The most the file may hold.
        limit: u64,
    },

    /// The file is already larger than the most this process may map
    /// ([`crate::btree::Options::max_file_size`]); open it with a larger
    /// limit. Nothing was changed.
    #[error("B+-tree file {file} holds {len} bytes, more than the limit of {limit}")]
    FileTooLarge {
        /// The file.
        file: PathBuf,
        /// Its length.
        len: u64,
        /// The limit it was opened with.
        limit: u64,
    },

    /// The file's keyspace has a layout this version does not read.
    #[error("{file} holds a keyspace this keel cannot read: {reason}")]
    UnsupportedLayout {
        /// The file.
        file: std::path::PathBuf,
        /// What it has that this keel does not read.
        reason: String,
    },

    /// A write transaction is already open (one writer at a time).
    #[error("a write transaction is already open")]
    WriterBusy,

    /// The call itself was wrong; nothing was changed.
    #[error("invalid call: {0}")]
    InvalidArgument(String),
}

impl Error {
    /// Whether this is the file system running out of room (ENOSPC, EDQUOT)
    /// or the file reaching its size limit ([`Error::Full`]): nothing was
    /// written, and the database stays usable.
    pub fn is_no_space(&self) -> bool {
        match self {
            Error::Full { .. } => true,
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ),
            _ => false,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
