//! Compaction in bounded steps, in two phases.
//!
//! 1. `revlog` rows below the compaction revision C, in revision order: for
//!    each, the changed key's history below its newest version at or below C
//!    is removed, and that version too when it is a tombstone below C (a read
//!    at C finds nothing either way). Then the `revlog` row goes.
//! 2. `revlog` rows at exactly C, from a cursor: the same trim for each
//!    changed key, but the row stays (watches from C need it). Without this
//!    phase a key's version kept by an earlier compaction, and overwritten
//!    exactly at C, would stay forever: its own `revlog` row is already gone
//!    and the overwrite's row is not below C.
//!
//! Rows above C are untouched, so reads and watches from C on see the same.

use std::ops::Bound;

use crate::btree::{Storage, WriteTxn};
use crate::mvcc::codec::{self, tree};
use crate::mvcc::error::KvResult;
use crate::mvcc::snapshot::Snapshot;
use crate::mvcc::types::Revision;

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Rows removed from `hist` and `revlog`.
    pub(crate) removed: usize,
    /// Phase 2 goes on from this `seq` of the changes at C.
    pub(crate) next_seq_at_target: u32,
    /// Whether nothing is left to remove for `target`.
    pub(crate) done: bool,
}

/// Does one step for compaction revision `target`: touches up to about
/// `max_rows` rows. `seq_at_target` is where phase 2 stopped last time (0
/// when unknown: phase 2 is idempotent, so starting over only costs reads).
pub(crate) fn step<S: Storage>(
    txn: &mut WriteTxn<S>,
    target: Revision,
    seq_at_target: u32,
    max_rows: usize,
) -> KvResult<Progress> {
    let budget = max_rows.max(1);
    let stopped = |removed, next_seq_at_target| Progress {
        removed,
        next_seq_at_target,
        done: false,
    };
    let (removed, below_target_gone) = remove_changes_below(txn, target, budget)?;
    if !below_target_gone || removed >= budget {
        return Ok(stopped(removed, seq_at_target));
    }
    let mut work = removed;
    let mut removed = removed;
    let from = codec::revlog_key(target, seq_at_target);
    let to = codec::revlog_key(target, u32::MAX);
    let changes_at_target = read_changes(txn, &from, Bound::Included(&to), budget - work)?;
    for (log_key, key) in &changes_at_target {
        let (_, seq) = codec::split_revlog_key(log_key)?;
        let (forgotten, complete) =
            forget_old_versions(txn, key, target, budget.saturating_sub(work))?;
        removed += forgotten;
        work += forgotten + 1;
        if !complete {
            return Ok(stopped(removed, seq));
        }
        // Every row read adds to `work`, so the last one read either ends
        // the revision or the budget; `seq + 1` overflows only after the
        // last possible change of a revision.
        if work >= budget {
            if let Some(next) = seq.checked_add(1) {
                return Ok(stopped(removed, next));
            }
        }
    }
    Ok(Progress {
        removed,
        next_seq_at_target: 0,
        done: true,
    })
}

/// Phase 1: up to `budget` rows; says whether no `revlog` row below
/// `target` is left.
fn remove_changes_below<S: Storage>(
    txn: &mut WriteTxn<S>,
    target: Revision,
    budget: usize,
) -> KvResult<(usize, bool)> {
    let end = codec::revlog_key(target, 0);
    let log_rows = read_changes(txn, &codec::revlog_key(0, 0), Bound::Excluded(&end), budget)?;
    let mut removed = 0;
    for (log_key, key) in &log_rows {
        let (forgotten, complete) =
            forget_old_versions(txn, key, target, budget.saturating_sub(removed))?;
        removed += forgotten;
        if !complete {
            // A key with more old versions than the step may remove: the
            // next step goes on with the same `revlog` row.
            return Ok((removed, false));
        }
        txn.tree(tree::REVLOG)?.remove(log_key)?;
        removed += 1;
        if removed >= budget {
            return Ok((removed, false));
        }
    }
    Ok((removed, log_rows.len() < budget))
}

/// Up to `limit` `revlog` rows from `from` to `to`: (row key, user key).
fn read_changes<S: Storage>(
    txn: &WriteTxn<S>,
    from: &[u8],
    to: Bound<&[u8]>,
    limit: usize,
) -> KvResult<Vec<(Vec<u8>, Vec<u8>)>> {
    txn.rows(tree::REVLOG, Bound::Included(from), to)?
        .take(limit)
        .map(|row| {
            let (row_key, row) = row?;
            let (_, key) = codec::decode_event(row)?;
            Ok((row_key.to_vec(), key.to_vec()))
        })
        .collect()
}

/// Removes up to `limit` of `key`'s versions that no read at or after
/// `target` can see; says whether none is left.
fn forget_old_versions<S: Storage>(
    txn: &mut WriteTxn<S>,
    key: &[u8],
    target: Revision,
    limit: usize,
) -> KvResult<(usize, bool)> {
    let first = codec::hist_key(key, 0);
    let newest_visible = codec::hist_key(key, target);
    let (keep_from, tombstone_below_target) = {
        let mut rows = txn.rows(
            tree::HIST,
            Bound::Included(&first),
            Bound::Included(&newest_visible),
        )?;
        match rows.next_back().transpose()? {
            None => return Ok((0, true)),
            Some((row_key, row)) => {
                let (_, rev) = codec::split_hist_key(row_key)?;
                (rev, rev < target && codec::hist_is_tombstone(row)?)
            }
        }
    };
    let keep_key = codec::hist_key(key, keep_from);
    let end = if tombstone_below_target {
        Bound::Included(keep_key.as_slice())
    } else {
        Bound::Excluded(keep_key.as_slice())
    };
    let doomed = txn
        .rows(tree::HIST, Bound::Included(&first), end)?
        .take(limit.saturating_add(1))
        .map(|row| row.map(|(k, _)| k.to_vec()))
        .collect::<crate::Result<Vec<Vec<u8>>>>()?;
    let complete = doomed.len() <= limit;
    let mut hist = txn.tree(tree::HIST)?;
    for row_key in doomed.iter().take(limit) {
        hist.remove(row_key)?;
    }
    Ok((doomed.len().min(limit), complete))
}
