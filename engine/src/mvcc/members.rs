//! Rows of the `meta` tree that belong to the cluster rather than the
//! keyspace (docs/membership.md): shard 0's member list, and every shard's
//! Raft configuration as of its applied index.
//!
//! Invariant: the member list changes only by [`apply_members`], which
//! takes a change only if the list is still the one it was made from, so
//! two changes made from one list never both apply.

use std::ops::Bound;

use crate::btree::{Storage, WriteTxn};
use crate::mvcc::codec::{self, meta_key, tree};
use crate::mvcc::snapshot::Snapshot;
use crate::mvcc::types::{ConfIds, MemberList, MembersChange, Response};
use crate::mvcc::write::Writer;
use crate::mvcc::{KvError, KvResult};

/// The member list the tree holds (empty, revision 0, if never set).
pub(crate) fn read_members<T: Snapshot>(snap: &T) -> KvResult<MemberList> {
    let revision = match snap.row(tree::META, meta_key::MEMBERS_REV)? {
        Some(row) => codec::decode_meta(row)?,
        None => 0,
    };
    let mut list = MemberList {
        revision,
        ..MemberList::default()
    };
    for (prefix, is_member) in [(meta_key::MEMBER, true), (meta_key::REMOVED, false)] {
        for row in snap.rows(tree::META, Bound::Included(prefix), Bound::Unbounded)? {
            let (key, value) = row?;
            let Some(id) = key.strip_prefix(prefix) else {
                break;
            };
            let Ok(id) = <[u8; 8]>::try_from(id).map(u64::from_be_bytes) else {
                continue;
            };
            if is_member {
                list.members.push(codec::decode_member(id, value)?);
            } else {
                list.removed.push(id);
            }
        }
    }
    Ok(list)
}

/// Sets the member list, if it is still the one set at `change.base`.
pub(crate) fn apply_members<S: Storage>(
    writer: &mut Writer<'_, S>,
    change: &MembersChange,
) -> KvResult<Response> {
    let current = read_members(&*writer.txn)?;
    if current.revision != change.base {
        return Err(KvError::MembersChanged {
            base: change.base,
            current: current.revision,
        });
    }
    for member in &current.members {
        writer.remove_meta(&codec::id_key(meta_key::MEMBER, member.id))?;
    }
    for member in &change.members {
        writer.put_meta_row(
            &codec::id_key(meta_key::MEMBER, member.id),
            &codec::encode_member(member),
        )?;
    }
    for id in change
        .removed
        .iter()
        .filter(|id| !current.removed.contains(id))
    {
        writer.set_meta(&codec::id_key(meta_key::REMOVED, *id), 1)?;
    }
    writer.set_meta(meta_key::MEMBERS_REV, writer.rev)?;
    Ok(Response::Members)
}

/// The Raft configuration the tree holds, if one was recorded.
pub(crate) fn read_conf<T: Snapshot>(snap: &T) -> KvResult<Option<ConfIds>> {
    match snap.row(tree::META, meta_key::CONF_STATE)? {
        Some(row) => Ok(Some(codec::decode_conf_state(row)?)),
        None => Ok(None),
    }
}

/// Records `conf` as the configuration in `txn`.
pub(crate) fn write_conf<S: Storage>(txn: &mut WriteTxn<S>, conf: &ConfIds) -> KvResult<()> {
    txn.tree(tree::META)?
        .insert(meta_key::CONF_STATE, &codec::encode_conf_state(conf))?;
    Ok(())
}
