//! keel's refusals as etcd's gRPC errors: etcd's code and etcd's exact
//! message, since clients map errors by message (Go clientv3's
//! `rpctypes.Error`, patroni), not by code alone.

use keel_engine::mvcc::KvError;
use keel_engine::shard::NodeError;
use tonic::{Code, Status};

/// etcd's error for `error`; keel's own refusals (a transaction across
/// shards) keep keel's message, which names the remedy.
pub(crate) fn status(error: &NodeError) -> Status {
    let (code, message): (Code, String) = match error {
        NodeError::Kv(kv) => match kv {
            KvError::EmptyKey => (
                Code::InvalidArgument,
                "etcdserver: key is not provided".into(),
            ),
            KvError::KeyNotFound => (Code::InvalidArgument, "etcdserver: key not found".into()),
            KvError::ValueProvided => (
                Code::InvalidArgument,
                "etcdserver: value is provided".into(),
            ),
            KvError::LeaseProvided => (
                Code::InvalidArgument,
                "etcdserver: lease is provided".into(),
            ),
            KvError::TooManyOps { .. } => (
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request".into(),
            ),
            KvError::DuplicateKey { .. } => (
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request".into(),
            ),
            KvError::Compacted { .. } => (
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted".into(),
            ),
            KvError::FutureRevision { .. } => (
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision".into(),
            ),
            KvError::LeaseNotFound(_) => (
                Code::NotFound,
                "etcdserver: requested lease not found".into(),
            ),
            KvError::LeaseExists(_) => (
                Code::FailedPrecondition,
                "etcdserver: lease already exists".into(),
            ),
            KvError::NoSpace => (
                Code::ResourceExhausted,
                "etcdserver: mvcc: database space exceeded".into(),
            ),
            KvError::Corrupt => (Code::DataLoss, "etcdserver: corrupt cluster".into()),
            KvError::RequestTooLarge { .. }
            | KvError::PutTooLarge { .. }
            | KvError::KeyTooLarge { .. }
            | KvError::ResultTooLarge(_) => (
                Code::InvalidArgument,
                "etcdserver: request is too large".into(),
            ),
            // An answer past the largest one (docs/etcd.md, "What a client can make the front hold").
            KvError::AnswerTooLarge { .. } => {
                (Code::ResourceExhausted, format!("etcdserver: {kv}"))
            }
            // A shard that stopped on I/O failure: not the request's fault.
            KvError::Storage(_) => (Code::Unavailable, format!("etcdserver: {kv}")),
            other => (Code::InvalidArgument, format!("etcdserver: {other}")),
        },
        NodeError::NoLeader { .. } | NodeError::Behind { .. } => {
            (Code::Unavailable, "etcdserver: no leader".into())
        }
        NodeError::NotLeader { .. } => (Code::FailedPrecondition, "etcdserver: not leader".into()),
        NodeError::OutcomeUnknown { .. } => {
            (Code::Unavailable, "etcdserver: request timed out".into())
        }
        NodeError::Shutdown => (Code::Unavailable, "etcdserver: server stopped".into()),
        NodeError::ShardStopped { .. } => (Code::Unavailable, format!("etcdserver: {error}")),
        NodeError::CrossShardTxn { .. } | NodeError::InvalidRequest(_) => {
            (Code::InvalidArgument, format!("etcdserver: {error}"))
        }
        other => (Code::Unknown, format!("etcdserver: {other}")),
    };
    Status::new(code, message)
}

/// etcd's gRPC error for an auth refusal: etcd's code, etcd's text.
pub(crate) fn auth_status(error: &crate::auth::AuthError) -> Status {
    use crate::auth::AuthError as E;
    let code = match error {
        E::PermissionDenied => Code::PermissionDenied,
        E::InvalidToken => Code::Unauthenticated,
        E::UserEmpty
        | E::AuthFailed
        | E::OldRevision
        | E::RoleEmpty
        | E::InvalidManagement
        | E::InvalidPermission => Code::InvalidArgument,
        E::NotEnabled
        | E::UserAlreadyExists
        | E::UserNotFound
        | E::RoleAlreadyExists
        | E::RoleNotFound
        | E::RoleNotGranted
        | E::PermissionNotGranted
        | E::RootUserMissing
        | E::RootRoleMissing => Code::FailedPrecondition,
        E::Unavailable(_) => Code::Unavailable,
    };
    Status::new(code, error.to_string())
}
