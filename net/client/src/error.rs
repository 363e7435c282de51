//! What a client call can fail with.

use keel_proto::{ErrorBody, ErrorCode, Revision};

/// Result of a client call.
pub type Result<T> = std::result::Result<T, Error>;

/// A failed client call.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No endpoint could be reached.
    #[error("cannot connect to {endpoints}: {reason}")]
    Connect {
        /// The endpoints tried.
        endpoints: String,
        /// The last failure.
        reason: String,
    },
    /// The connection closed before the answer came. For a write, whether
    /// it was applied is unknown.
    #[error("the connection to the server was lost")]
    Disconnected,
    /// No answer came within the call's deadline
    /// (`ClientOptions::request_timeout`). For a write, whether it was
    /// applied is unknown.
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    /// A stream's reader fell behind its bounded buffer; the stream gets
    /// nothing more (a `Watcher` resumes from history on its own).
    #[error("the watch fell behind its buffer")]
    WatchLagged,
    /// The server refused or failed the request.
    #[error("{message}")]
    Server {
        /// What kind of failure.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
        /// For `Compacted`, the compaction revision; for
        /// `FutureRevision`, the current revision.
        revision: Revision,
        /// For `NotLeader`, the leader's member id as the server knew it
        /// (0: none known).
        leader: u64,
    },
    /// The server answered with something that does not fit the request.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A request the client refuses to send (too large, bad argument).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The watched history was compacted; resume from a revision at or
    /// above `compact_revision`.
    #[error("required revision has been compacted (compacted up to {compact_revision})")]
    Compacted {
        /// History below this revision is gone.
        compact_revision: Revision,
    },
    /// A write was sent and its effect cannot be known: the connection
    /// was lost or the deadline passed before its answer, or the member
    /// could not tell. It may or may not have taken effect; read to find
    /// out. The client never sends such a write again on its own.
    #[error("the write may or may not have taken effect: {0}")]
    Indeterminate(Box<Error>),
    /// A lease the client relied on expired or was revoked.
    #[error("lease {0} is gone")]
    LeaseLost(i64),
}

impl Error {
    /// The member the server named as its shard's leader, when it
    /// refused a request as not led there.
    pub fn leader_hint(&self) -> Option<u64> {
        match self {
            Error::Server {
                code: ErrorCode::NotLeader,
                leader,
                ..
            } if *leader != 0 => Some(*leader),
            _ => None,
        }
    }

    /// Whether this is [`Error::Indeterminate`]: a write that may or may
    /// not have taken effect.
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, Error::Indeterminate(_))
    }

    /// The server's error code, when the server refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<ErrorBody> for Error {
    fn from(body: ErrorBody) -> Error {
        Error::Server {
            code: body.code,
            message: body.message,
            revision: body.revision,
            leader: body.leader,
        }
    }
}
