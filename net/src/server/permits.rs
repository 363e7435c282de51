//! Auth on keel's protocol (docs/security.md, "Auth"): a connection is
//! its token's user (`UseToken`, taken in the order requests come) or its
//! client certificate's; each request is checked against the record this
//! member follows before it runs, as etcd's API is (`etcd/permits.rs`):
//! reads need read permission on their keys, writes write permission, a
//! transaction what every compare and every operation of both branches
//! needs, a revoke write permission on every attached key, and admin
//! requests the root role.

use keel_engine::shard::NodeClient;
use keel_proto::{ErrorCode, Request, RequestOp, TxnRequest};

use crate::auth::{AuthError, Caller, Compiled};
use crate::server::connection::Connection;

/// keel's error code for an auth refusal.
pub(crate) fn error_code(error: &AuthError) -> ErrorCode {
    match error {
        AuthError::PermissionDenied => ErrorCode::PermissionDenied,
        AuthError::InvalidToken | AuthError::UserEmpty | AuthError::OldRevision => {
            ErrorCode::Unauthenticated
        }
        AuthError::AuthFailed | AuthError::NotEnabled => ErrorCode::AuthFailed,
        _ => ErrorCode::BadRequest,
    }
}

/// Whether the connection's caller may make `request` now; `Ok` at once
/// with auth off.
pub(crate) async fn check(connection: &Connection, request: &Request) -> Result<(), AuthError> {
    let compiled = connection.ctx.auth.current();
    if !compiled.enabled() {
        return Ok(());
    }
    // Authenticate needs no user.
    if let Request::Authenticate { .. } = request {
        return Ok(());
    }
    let caller = compiled.admit(connection.identity.borrow().credential())?;
    let checks = Checks {
        compiled: &compiled,
        caller: &caller,
    };
    checks.request(request)?;
    if matches!(caller, Caller::User(_)) {
        let client = connection.ctx.client();
        for lease in leases_of(request) {
            checks.lease_keys(&client, lease).await?;
        }
    }
    Ok(())
}

/// The leases whose attached keys `request` must be allowed to write:
/// a revoke's, and those a put (or a transaction's put) attaches to.
fn leases_of(request: &Request) -> Vec<i64> {
    fn of_txn(txn: &TxnRequest, into: &mut Vec<i64>) {
        for op in txn.success.iter().chain(&txn.failure) {
            match op {
                RequestOp::Put(put) if put.lease != 0 => into.push(put.lease),
                RequestOp::Txn(nested) => of_txn(nested, into),
                _ => {}
            }
        }
    }
    let mut leases = Vec::new();
    match request {
        Request::LeaseRevoke { id } => leases.push(*id),
        Request::Put(put) if put.lease != 0 => leases.push(put.lease),
        Request::Txn(txn) => of_txn(txn, &mut leases),
        _ => {}
    }
    leases
}

struct Checks<'a> {
    compiled: &'a Compiled,
    caller: &'a Caller,
}

impl Checks<'_> {
    fn read(&self, key: &[u8], range_end: &[u8]) -> Result<(), AuthError> {
        self.compiled.may_read(self.caller, key, range_end)
    }

    fn write(&self, key: &[u8], range_end: &[u8]) -> Result<(), AuthError> {
        self.compiled.may_write(self.caller, key, range_end)
    }

    fn administer(&self) -> Result<(), AuthError> {
        self.compiled.may_administer(self.caller)
    }

    fn request(&self, request: &Request) -> Result<(), AuthError> {
        match request {
            Request::Range(range) => self.read(&range.key, &range.range_end),
            Request::Put(put) => self.put(put),
            Request::DeleteRange(delete) => self.delete(delete),
            Request::Txn(txn) => self.txn(txn),
            Request::WatchCreate(create) => self.read(&create.key, &create.range_end),
            Request::Compact { .. } | Request::Leader { .. } => self.administer(),
            Request::Alarm { action, .. } => match action {
                keel_proto::AlarmAction::Get => Ok(()),
                _ => self.administer(),
            },
            Request::Member { action, .. } => match action {
                keel_proto::MemberAction::List => Ok(()),
                _ => self.administer(),
            },
            // A user (admitted above) is enough; a revoke's keys are
            // checked by the caller (`lease_keys`).
            Request::WatchCancel { .. }
            | Request::WatchProgress
            | Request::LeaseGrant { .. }
            | Request::LeaseRevoke { .. }
            | Request::LeaseKeepAlive { .. }
            | Request::LeaseTimeToLive { .. }
            | Request::LeaseLeases
            | Request::Status
            | Request::Authenticate { .. }
            | Request::UseToken { .. } => Ok(()),
        }
    }

    fn put(&self, put: &keel_proto::PutRequest) -> Result<(), AuthError> {
        self.write(&put.key, &[])?;
        if put.prev_kv {
            self.read(&put.key, &[])?;
        }
        Ok(())
    }

    fn delete(&self, delete: &keel_proto::DeleteRangeRequest) -> Result<(), AuthError> {
        self.write(&delete.key, &delete.range_end)?;
        if delete.prev_kv {
            self.read(&delete.key, &delete.range_end)?;
        }
        Ok(())
    }

    fn txn(&self, txn: &TxnRequest) -> Result<(), AuthError> {
        for compare in &txn.compare {
            self.read(&compare.key, &compare.range_end)?;
        }
        for op in txn.success.iter().chain(&txn.failure) {
            match op {
                RequestOp::Range(range) => self.read(&range.key, &range.range_end)?,
                RequestOp::Put(put) => self.put(put)?,
                RequestOp::DeleteRange(delete) => self.delete(delete)?,
                RequestOp::Txn(nested) => self.txn(nested)?,
            }
        }
        Ok(())
    }

    /// Write permission on every key attached to `lease` now.
    async fn lease_keys(&self, client: &NodeClient<'_>, lease: i64) -> Result<(), AuthError> {
        let status = client
            .lease_time_to_live(lease, true)
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        for key in status.map(|s| s.keys).unwrap_or_default() {
            self.write(&key, &[])?;
        }
        Ok(())
    }
}
