//! Compaction in bounded steps. `revlog` rows below the compaction
//! revision C are taken in revision order; for each, the changed key's
//! history below its newest version at or below C is removed, and that
//! version too when it is a tombstone below C (a read at C finds nothing
//! either way). Then the `revlog` row goes. Rows at C and above stay, so
//! reads and watches from C on are untouched.

use std::ops::Bound;

use crate::btree::{Storage, WriteTxn};
use crate::mvcc::codec::{self, tree};
use crate::mvcc::error::KvResult;
use crate::mvcc::snapshot::Snapshot;
use crate::mvcc::types::Revision;

/// Does one step: removes history for up to about `max_rows` rows touched.
/// Returns the rows removed and whether nothing below `target` is left.
pub(crate) fn step<S: Storage>(
    txn: &mut WriteTxn<S>,
    target: Revision,
    max_rows: usize,
) -> KvResult<(usize, bool)> {
    let budget = max_rows.max(1);
    let end = codec::revlog_key(target, 0);
    let log_rows = txn
        .rows(tree::REVLOG, Bound::Unbounded, Bound::Excluded(&end))?
        .take(budget)
        .map(|row| {
            let (row_key, row) = row?;
            let (_, key) = codec::decode_event(row)?;
            Ok((row_key.to_vec(), key.to_vec()))
        })
        .collect::<KvResult<Vec<(Vec<u8>, Vec<u8>)>>>()?;
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
