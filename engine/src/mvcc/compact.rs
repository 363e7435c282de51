//! Compaction in bounded steps.
//!
//! `history` is visited in revision order, from where the last finished
//! compaction stopped up to and including the compaction revision C. For
//! each change Y:
//! - the key's changes before Y go: Y is a newer version at or below C, so
//!   no read at or after C can see them. They were visited before Y (or by
//!   an earlier compaction, which kept them as their key's newest), so in
//!   practice this is Y's one predecessor, or nothing;
//! - Y itself goes when it is a delete below C (a read at C finds nothing
//!   either way), with the key's `gone` row if that names Y.
//!
//! Y stays otherwise, until a later change of its key passes the same way.
//! Deletes exactly at C stay: watches from C need them. Visiting a change
//! twice does nothing more, so a reopen may start again from the last
//! finished compaction. Changes above C are untouched, so reads and watches
//! from C on see the same.

use std::ops::Bound;

use crate::btree::{Storage, WriteTxn};
use crate::mvcc::codec::{self, tree, At};
use crate::mvcc::error::KvResult;
use crate::mvcc::read::linked_change;
use crate::mvcc::snapshot::Snapshot;
use crate::mvcc::types::Revision;

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Rows removed from `history` and `gone`.
    pub(crate) removed: usize,
    /// The next change to visit.
    pub(crate) next: At,
    /// Whether nothing is left to remove for the target.
    pub(crate) done: bool,
}

/// A change as compaction needs it.
struct Visit {
    at: At,
    key: Vec<u8>,
    prev: Option<At>,
    delete: bool,
}

/// Does one step for compaction revision `target` from change `from`:
/// touches about `max_rows` rows.
pub(crate) fn step<S: Storage>(
    txn: &mut WriteTxn<S>,
    target: Revision,
    from: At,
    max_rows: usize,
) -> KvResult<Progress> {
    let budget = max_rows.max(1);
    let end = At {
        rev: target,
        seq: u32::MAX,
    };
    let visits = read_changes(txn, from, end, budget)?;
    let mut work = 0;
    let mut removed = 0;
    for visit in &visits {
        let mut gone = forget_before(txn, &visit.key, visit.prev, target)?;
        if visit.delete && visit.at.rev < target {
            gone += forget_delete(txn, visit)?;
        }
        removed += gone;
        work += 1 + gone;
        if work >= budget {
            return Ok(Progress {
                removed,
                next: after(visit.at),
                done: false,
            });
        }
    }
    Ok(Progress {
        removed,
        next: visits.last().map_or(from, |v| after(v.at)),
        done: visits.len() < budget,
    })
}

/// The change right after `at` in `history` order.
fn after(at: At) -> At {
    match at.seq.checked_add(1) {
        Some(seq) => At { rev: at.rev, seq },
        None => At {
            rev: at.rev.saturating_add(1),
            seq: 0,
        },
    }
}

/// Up to `limit` changes from `from` to `to`, both included.
fn read_changes<S: Storage>(
    txn: &WriteTxn<S>,
    from: At,
    to: At,
    limit: usize,
) -> KvResult<Vec<Visit>> {
    let (from, to) = (from.key(), to.key());
    txn.rows(tree::HISTORY, Bound::Included(&from), Bound::Included(&to))?
        .take(limit)
        .map(|row| {
            let (row_key, row) = row?;
            let at = At::from_key(row_key)?;
            let change = codec::decode_change(at, row)?;
            Ok(Visit {
                at,
                key: change.key.to_vec(),
                prev: change.prev,
                delete: change.version.is_none(),
            })
        })
        .collect()
}

/// Removes the chain of `key`'s changes from `prev` back, up to the first
/// one already gone. They all lie below `target` (each is older than a
/// change at or below it). Returns how many went.
fn forget_before<S: Storage>(
    txn: &mut WriteTxn<S>,
    key: &[u8],
    mut prev: Option<At>,
    target: Revision,
) -> KvResult<usize> {
    let mut removed = 0;
    while let Some(at) = prev {
        let Some(change) = linked_change(&*txn, key, at, target)? else {
            break;
        };
        let earlier = change.prev;
        txn.tree(tree::HISTORY)?.remove(&at.key())?;
        removed += 1;
        prev = earlier;
    }
    Ok(removed)
}

/// Removes a delete below the compaction revision, and its key's `gone`
/// row if that names it. Returns how many rows went.
fn forget_delete<S: Storage>(txn: &mut WriteTxn<S>, visit: &Visit) -> KvResult<usize> {
    let mut removed = 0;
    let names_it = match txn.row(tree::GONE, &visit.key)? {
        Some(row) => codec::decode_gone(row)? == visit.at,
        None => false,
    };
    if names_it && txn.tree(tree::GONE)?.remove(&visit.key)? {
        removed += 1;
    }
    if txn.tree(tree::HISTORY)?.remove(&visit.at.key())? {
        removed += 1;
    }
    Ok(removed)
}
