//! Auth on keel's protocol (docs/security.md, "Auth"): a connection is
//! its token's user (`UseToken`) or its client certificate's; each
//! request is checked when it arrives, in the connection's order, against
//! the record this member follows, as etcd's API is (`etcd/permits.rs`):
//! reads need read permission on their keys, writes write permission, a
//! transaction what every compare and every operation of both branches
//! needs, a revoke or a put with a lease write permission on every key
//! attached to the lease, a time-to-live that lists them read permission
//! on each, and admin requests the root role.

use keel_engine::shard::{NodeClient, NodeError};
use keel_proto::{ErrorCode, Request, RequestOp, TxnRequest};

use std::sync::Arc;

use crate::auth::key_set::UserKeys;
use crate::auth::{AuthError, Compiled};
use crate::server::connection::{error_response, Connection};
use crate::server::core::CoreContext;

/// keel's error code for an auth refusal.
pub(crate) fn error_code(error: &AuthError) -> ErrorCode {
    match error {
        AuthError::PermissionDenied => ErrorCode::PermissionDenied,
        AuthError::InvalidToken | AuthError::UserEmpty | AuthError::OldRevision => {
            ErrorCode::Unauthenticated
        }
        AuthError::AuthFailed => ErrorCode::AuthFailed,
        AuthError::NotEnabled => ErrorCode::AuthNotEnabled,
        AuthError::Unavailable(_) => ErrorCode::AuthUnavailable,
        _ => ErrorCode::BadRequest,
    }
}

/// A refusal: auth's, or the engine's while it looked up a lease's keys.
pub(crate) enum Refusal {
    Auth(AuthError),
    Node(NodeError),
}

impl From<AuthError> for Refusal {
    fn from(error: AuthError) -> Refusal {
        Refusal::Auth(error)
    }
}

impl Refusal {
    /// The answer to request `id`.
    pub(crate) fn response(&self, id: u64) -> keel_proto::Response {
        match self {
            Refusal::Auth(error) => error_response(id, error_code(error), error.to_string()),
            Refusal::Node(error) => keel_proto::Response {
                id,
                revision: 0,
                body: keel_proto::ResponseBody::Error(crate::server::convert::error(error)),
            },
        }
    }
}

/// What a request admitted at arrival still needs: the keys attached to
/// leases, which take a lookup (the caller's keys, taken at arrival).
pub(crate) struct Pending {
    keys: Arc<UserKeys>,
    /// Leases whose every key the caller must be allowed to write.
    write: Vec<i64>,
    /// A lease whose every key the caller must be allowed to read (a
    /// time-to-live that lists them: etcd's CVE-2023-32082).
    read: Option<i64>,
}

/// What a connection's caller was admitted as, kept while the record and
/// its token stay as they were: most requests then cost two loads and a
/// clock read, no token check and no lookup.
pub(crate) struct Admitted {
    /// The auth revision it holds for.
    revision: u64,
    /// Until when (ms since the Unix epoch): its token's expiry.
    until_ms: u64,
    /// Its keys; `None` for anything (auth off, or root).
    keys: Option<Arc<UserKeys>>,
}

/// Whether the connection's caller may make `request`, checked when the
/// request arrives (in the connection's order, so that a later `UseToken`
/// never applies to it); what is left for [`check_pending`], if anything.
/// `Ok(None)` at once while auth has never been set up.
pub(crate) fn check_at_arrival(
    connection: &Connection,
    request: &Request,
) -> Result<Option<Pending>, AuthError> {
    if connection.ctx.auth.never_set_up() {
        return Ok(None);
    }
    // Authenticate needs no user.
    if let Request::Authenticate { .. } = request {
        return Ok(None);
    }
    admit(connection, connection.ctx.auth.revision())?;
    let admitted = connection.admitted.borrow();
    let Some(keys) = admitted.as_ref().and_then(|a| a.keys.as_ref()) else {
        return Ok(None);
    };
    Checks { keys }.request(request)?;
    let write = leases_of(request);
    let read = match request {
        Request::LeaseTimeToLive { id, keys: true } => Some(*id),
        _ => None,
    };
    if write.is_empty() && read.is_none() {
        return Ok(None);
    }
    Ok(Some(Pending {
        keys: keys.clone(),
        write,
        read,
    }))
}

/// The lease checks left from arrival.
pub(crate) async fn check_pending(
    connection: &Connection,
    pending: Pending,
) -> Result<(), Refusal> {
    let client = connection.ctx.client();
    let checks = Checks {
        keys: &pending.keys,
    };
    for lease in pending.write {
        for key in attached_keys(&client, lease).await? {
            checks.write(&key, &[])?;
        }
    }
    if let Some(lease) = pending.read {
        for key in attached_keys(&client, lease).await? {
            checks.read(&key, &[])?;
        }
    }
    Ok(())
}

/// The keys attached to `lease` now (none if it is gone).
async fn attached_keys(client: &NodeClient<'_>, lease: i64) -> Result<Vec<Vec<u8>>, Refusal> {
    let status = client
        .lease_time_to_live(lease, true)
        .await
        .map_err(Refusal::Node)?;
    Ok(status.map(|s| s.keys).unwrap_or_default())
}

/// Makes the connection's admission current for auth revision `revision`.
fn admit(connection: &Connection, revision: u64) -> Result<(), AuthError> {
    let now = crate::auth::tokens::now_ms();
    let current = connection
        .admitted
        .borrow()
        .as_ref()
        .is_some_and(|a| a.revision == revision && now < a.until_ms);
    if current {
        return Ok(());
    }
    let compiled = compiled(&connection.ctx, revision);
    let admitted = if compiled.enabled() {
        let (caller, until_ms) = compiled.admit_until(connection.identity.borrow().credential())?;
        Admitted {
            revision: compiled.revision,
            until_ms,
            keys: compiled.keys_of(&caller),
        }
    } else {
        Admitted {
            revision: compiled.revision,
            until_ms: u64::MAX,
            keys: None,
        }
    };
    *connection.admitted.borrow_mut() = Some(admitted);
    Ok(())
}

/// The record at `revision` (or newer), compiled: this core's copy while
/// it is current, so that cores do not share a reference count per call.
fn compiled(ctx: &CoreContext, revision: u64) -> Arc<Compiled> {
    let mut cached = ctx.compiled_auth.borrow_mut();
    match cached.as_ref() {
        Some(compiled) if compiled.revision >= revision => compiled.clone(),
        _ => {
            let fresh = ctx.auth.current();
            // One that cannot check anything is not kept: the next call
            // looks again.
            if !fresh.is_unavailable() {
                *cached = Some(fresh.clone());
            }
            fresh
        }
    }
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
    keys: &'a UserKeys,
}

impl Checks<'_> {
    fn read(&self, key: &[u8], range_end: &[u8]) -> Result<(), AuthError> {
        match self.keys.read.covers(key, range_end) {
            true => Ok(()),
            false => Err(AuthError::PermissionDenied),
        }
    }

    fn write(&self, key: &[u8], range_end: &[u8]) -> Result<(), AuthError> {
        match self.keys.write.covers(key, range_end) {
            true => Ok(()),
            false => Err(AuthError::PermissionDenied),
        }
    }

    /// Only root (and anyone with auth off, who never gets here).
    fn administer(&self) -> Result<(), AuthError> {
        Err(AuthError::PermissionDenied)
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
}
