//! The log's errors, split by what a caller can do about them.

use std::path::PathBuf;

/// Result of every fallible log operation.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in the log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O call failed. Writes and syncs that fail also make the log
    /// [`Error::Failed`] from then on.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation, e.g. "fdatasync".
        op: &'static str,
        /// The file or directory it was done on.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },

    /// Bytes on disk are not what the log wrote. The log does not open; the
    /// operator must look at `file` (nothing was changed).
    #[error("corrupt write-ahead log {file} at offset {offset}: {reason}")]
    Corruption {
        /// The damaged segment.
        file: PathBuf,
        /// Byte offset of the damage in that file.
        offset: u64,
        /// What was wrong there.
        reason: String,
    },

    /// A previous write or fdatasync failed; pages may be lost, so the log
    /// refuses all further work (fail-stop). Reopen it to recover.
    #[error("write-ahead log stopped after an earlier I/O failure: {0}")]
    Failed(String),

    /// The call itself was wrong (index out of sequence, payload too large,
    /// reserved record type, ...). Nothing was written.
    #[error("invalid write-ahead log call: {0}")]
    InvalidArgument(String),

    /// A requested index is not (or no longer) in the log.
    #[error("index {index} is outside the log [{first}, {last}]")]
    OutOfRange {
        /// The index asked for.
        index: u64,
        /// The first index held (when the log is empty, `last + 1`).
        first: u64,
        /// The last index held.
        last: u64,
    },

    /// Another open log (in this or another process) holds the directory.
    #[error("write-ahead log directory {dir} is in use by another open log")]
    InUse {
        /// The log directory.
        dir: PathBuf,
    },

    /// The log was closed.
    #[error("write-ahead log is closed")]
    Closed,
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Whether this is the file system running out of room (ENOSPC,
    /// EDQUOT).
    pub fn is_no_space(&self) -> bool {
        matches!(
            self,
            Error::Io { source, .. } if matches!(
                source.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            )
        )
    }

    /// Converts a glommio error on `path`, keeping the OS error.
    pub(crate) fn glommio<T>(
        op: &'static str,
        path: impl Into<PathBuf>,
        err: glommio::GlommioError<T>,
    ) -> Error {
        let source = match err {
            glommio::GlommioError::IoError(e) => e,
            glommio::GlommioError::EnhancedIoError { source, .. } => source,
            other => std::io::Error::other(other.to_string()),
        };
        Error::io(op, path, source)
    }

    pub(crate) fn corruption(
        file: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Error {
        Error::Corruption {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }
}
