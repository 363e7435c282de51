//! Shard 0's auth state (docs/security.md, "Auth"): users, roles and
//! whether auth is on, as one opaque record the server encodes
//! (`keel_net::auth`), with its auth revision. The engine keeps it and
//! orders changes to it; what the bytes mean is the server's.
//!
//! Invariant: the record changes only by [`apply_auth`], which takes a
//! change only if the record is still the one it was made from, and then
//! gives it the next auth revision. So changes are serialized whoever
//! makes them, and every member holds the same record at each revision.

use crate::btree::Storage;
use crate::mvcc::codec::{self, meta_key, tree};
use crate::mvcc::snapshot::Snapshot;
use crate::mvcc::types::{AuthChange, AuthRecord, Response};
use crate::mvcc::write::Writer;
use crate::mvcc::{KvError, KvResult};

/// The largest auth record: users, roles and their permissions together.
pub const MAX_AUTH_RECORD_BYTES: usize = 1 << 20;

/// The auth record the tree holds (empty, revision 0, if never set).
pub(crate) fn read_auth<T: Snapshot>(snap: &T) -> KvResult<AuthRecord> {
    let revision = match snap.row(tree::META, meta_key::AUTH_REV)? {
        Some(row) => codec::decode_meta(row)?,
        None => 0,
    };
    let state = snap
        .row(tree::META, meta_key::AUTH_STATE)?
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    Ok(AuthRecord { revision, state })
}

/// Sets the auth record, if it is still the one at `change.base`; it gets
/// the next auth revision.
pub(crate) fn apply_auth<S: Storage>(
    writer: &mut Writer<'_, S>,
    change: &AuthChange,
) -> KvResult<Response> {
    let current = read_auth(&*writer.txn)?;
    if current.revision != change.base {
        return Err(KvError::AuthChanged {
            base: change.base,
            current: current.revision,
        });
    }
    let revision = current.revision + 1;
    writer.put_meta_row(meta_key::AUTH_STATE, &change.state)?;
    writer.set_meta(meta_key::AUTH_REV, revision)?;
    Ok(Response::Auth { revision })
}

/// What every replica refuses whatever its state: a record past
/// [`MAX_AUTH_RECORD_BYTES`].
pub(crate) fn check_auth_static(change: &AuthChange) -> KvResult<()> {
    if change.state.len() > MAX_AUTH_RECORD_BYTES {
        return Err(KvError::RequestTooLarge {
            len: change.state.len(),
            max: MAX_AUTH_RECORD_BYTES,
        });
    }
    Ok(())
}
