//! What each of etcd's KV and lease calls needs the caller to be allowed
//! (docs/security.md, "What is checked"), as etcd checks it: a range
//! reads its keys; a put writes its key (and reads it for `prev_kv`), and
//! with a lease also writes every key already attached to that lease; a
//! delete writes its range (and reads it for `prev_kv`); a transaction
//! reads every compare's key and needs what each operation of *both*
//! branches needs, nested transactions included; revoking a lease writes
//! every key attached to it.
//!
//! The checks run before the call goes to a shard, against the record
//! this member follows: a key attached to a lease between the check and
//! the revoke is not checked (etcd has the same window).

use keel_etcd_api::etcdserverpb as pb;
use keel_etcd_api::etcdserverpb::request_op::Request as Op;
use tonic::Status;

use crate::auth::{Auth, Caller, Compiled};
use crate::etcd::cores::{client, Cores};
use crate::etcd::errors::auth_status;

/// Admits `request`'s caller and runs `checks` on it and the request.
///
/// # Errors
/// etcd's refusal.
pub(crate) fn check<T>(
    auth: &Auth,
    request: &tonic::Request<T>,
    checks: impl FnOnce(&Permits<'_>, &T) -> Result<(), Status>,
) -> Result<(), Status> {
    let (compiled, caller) = crate::etcd::identity::admit(auth, request)?;
    checks(
        &Permits {
            compiled: &compiled,
            caller: &caller,
        },
        request.get_ref(),
    )
}

/// Whether `request`'s caller may attach a key to `lease` (a lock's or an
/// election's): write on every key already attached to it.
///
/// # Errors
/// etcd's refusal.
pub(crate) async fn check_lease<T>(
    auth: &Auth,
    request: &tonic::Request<T>,
    cores: &Cores,
    lease: i64,
) -> Result<(), Status> {
    let (compiled, caller) = crate::etcd::identity::admit(auth, request)?;
    Permits {
        compiled: &compiled,
        caller: &caller,
    }
    .lease_keys(cores, lease)
    .await
}

/// The checks of one call: the record and the caller.
pub(crate) struct Permits<'a> {
    pub(crate) compiled: &'a Compiled,
    pub(crate) caller: &'a Caller,
}

impl Permits<'_> {
    /// Whether checks are needed at all (auth on, caller not root).
    pub(crate) fn checked(&self) -> bool {
        matches!(self.caller, Caller::User(_))
    }

    /// Reading `[key, range_end)`.
    pub(crate) fn read(&self, key: &[u8], range_end: &[u8]) -> Result<(), Status> {
        self.compiled
            .may_read(self.caller, key, range_end)
            .map_err(|e| auth_status(&e))
    }

    /// Writing `[key, range_end)`.
    pub(crate) fn write(&self, key: &[u8], range_end: &[u8]) -> Result<(), Status> {
        self.compiled
            .may_write(self.caller, key, range_end)
            .map_err(|e| auth_status(&e))
    }

    /// Reading every key under `prefix` (an election's, to watch it).
    pub(crate) fn read_prefix(&self, prefix: &[u8]) -> Result<(), Status> {
        self.read(prefix, &keel_engine::routing::prefix_end(prefix))
    }

    /// Writing and reading every key under `prefix` (a lock's or an
    /// election's, to take part in it).
    pub(crate) fn own_prefix(&self, prefix: &[u8]) -> Result<(), Status> {
        self.write(prefix, &keel_engine::routing::prefix_end(prefix))?;
        self.read_prefix(prefix)
    }

    /// An admin call (root only).
    pub(crate) fn administer(&self) -> Result<(), Status> {
        self.compiled
            .may_administer(self.caller)
            .map_err(|e| auth_status(&e))
    }

    /// A range.
    pub(crate) fn range(&self, request: &pb::RangeRequest) -> Result<(), Status> {
        self.read(&request.key, &request.range_end)
    }

    /// A put, but for its lease's keys ([`Permits::lease_keys`]).
    pub(crate) fn put(&self, request: &pb::PutRequest) -> Result<(), Status> {
        self.write(&request.key, &[])?;
        if request.prev_kv {
            self.read(&request.key, &[])?;
        }
        Ok(())
    }

    /// A delete.
    pub(crate) fn delete(&self, request: &pb::DeleteRangeRequest) -> Result<(), Status> {
        self.write(&request.key, &request.range_end)?;
        if request.prev_kv {
            self.read(&request.key, &request.range_end)?;
        }
        Ok(())
    }

    /// A transaction, both branches and every nested one; answers the
    /// leases its puts attach keys to, for [`Permits::lease_keys`].
    pub(crate) fn txn(&self, request: &pb::TxnRequest) -> Result<Vec<i64>, Status> {
        let mut leases = Vec::new();
        self.txn_into(request, &mut leases)?;
        Ok(leases)
    }

    fn txn_into(&self, request: &pb::TxnRequest, leases: &mut Vec<i64>) -> Result<(), Status> {
        for compare in &request.compare {
            self.read(&compare.key, &compare.range_end)?;
        }
        for op in request.success.iter().chain(&request.failure) {
            match &op.request {
                Some(Op::RequestRange(range)) => self.range(range)?,
                Some(Op::RequestPut(put)) => {
                    self.put(put)?;
                    if put.lease != 0 {
                        leases.push(put.lease);
                    }
                }
                Some(Op::RequestDeleteRange(delete)) => self.delete(delete)?,
                Some(Op::RequestTxn(nested)) => self.txn_into(nested, leases)?,
                None => {}
            }
        }
        Ok(())
    }

    /// Whether the caller may write every key attached to `lease` now (a
    /// put that attaches another, a revoke that deletes them all).
    pub(crate) async fn lease_keys(&self, cores: &Cores, lease: i64) -> Result<(), Status> {
        if !self.checked() || lease == 0 {
            return Ok(());
        }
        let status = cores
            .call(move |node, core| {
                Box::pin(async move { client(&node, core).lease_time_to_live(lease, true).await })
            })
            .await?;
        for key in status.map(|s| s.keys).unwrap_or_default() {
            self.write(&key, &[])?;
        }
        Ok(())
    }
}
