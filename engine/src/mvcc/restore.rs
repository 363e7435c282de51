//! Restoring a shard's keyspace from a saved snapshot (`keel restore`,
//! docs/snapshots.md): its pairs come back with the metadata they were
//! saved with (create and mod revisions, version, lease), which no write
//! can set, so they are written as rows directly, then the store is put at
//! the snapshot's revision, compacted there (no history below it came
//! along), with the restored cluster's configuration.
//!
//! Rows written (engine/FORMAT.md, "Trees"): each pair's `kv` row and the
//! `history` row of its last change (a put with no change before it), its
//! `lease_keys` row when it has a lease; each lease's `leases` row, with
//! its remaining TTL on its home shard and none on its mirrors (as a grant
//! leaves them).

use std::collections::HashMap;

use crate::btree::Storage;
use crate::mvcc::codec::{self, meta_key, tree, At, LeaseRow};
use crate::mvcc::members;
use crate::mvcc::store::{LeaseInfo, Store};
use crate::mvcc::{ConfIds, KeyValue, KvError, KvResult, Revision};

/// The sequence numbers given so far per revision: the pairs one
/// transaction wrote share a revision, and each `history` row needs its own
/// place `(revision, sequence)`.
#[derive(Debug, Default)]
pub struct RestoreSeqs(HashMap<Revision, u32>);

impl RestoreSeqs {
    fn next(&mut self, revision: Revision) -> u32 {
        let seq = self.0.entry(revision).or_insert(0);
        let given = *seq;
        *seq = seq.saturating_add(1);
        given
    }
}

impl<S: Storage> Store<S> {
    /// Writes `pairs` as they were saved. For a store that holds no pairs
    /// yet; commits like an applied batch does (held when syncs are
    /// deferred).
    ///
    /// # Errors
    /// A pair with revisions or a version of 0, or a storage failure.
    pub fn restore_pairs(&mut self, pairs: &[KeyValue], seqs: &mut RestoreSeqs) -> KvResult<()> {
        self.check_usable()?;
        let result = self.restore_pairs_inner(pairs, seqs);
        self.note(result)
    }

    fn restore_pairs_inner(&mut self, pairs: &[KeyValue], seqs: &mut RestoreSeqs) -> KvResult<()> {
        let mut txn = self.writer()?;
        for pair in pairs {
            if pair.create_revision == 0
                || pair.mod_revision < pair.create_revision
                || pair.version < 1
            {
                return Err(KvError::BadRestore(format!(
                    "a saved pair with create revision {}, mod revision {} and version {}",
                    pair.create_revision, pair.mod_revision, pair.version
                )));
            }
            let at = At {
                rev: pair.mod_revision,
                seq: seqs.next(pair.mod_revision),
            };
            txn.tree(tree::HISTORY)?
                .insert_owned(&at.key(), codec::encode_change(&pair.key, Some(pair), None))?;
            txn.tree(tree::KV)?
                .insert_owned(&pair.key, codec::encode_kv(pair, at.seq, None))?;
            if pair.lease != 0 {
                txn.tree(tree::LEASE_KEYS)?
                    .insert(&codec::lease_key_row(pair.lease, &pair.key), &[])?;
            }
        }
        self.finish(txn)
    }

    /// Writes `lease` as saved: with its remaining TTL where `home` (the
    /// lease's home shard, whose leader runs its timer), as a mirror
    /// elsewhere.
    ///
    /// # Errors
    /// A TTL below 1 s, or a storage failure.
    pub fn restore_lease(&mut self, lease: &LeaseInfo, home: bool) -> KvResult<()> {
        self.check_usable()?;
        let result = self.restore_lease_inner(lease, home);
        self.note(result)
    }

    fn restore_lease_inner(&mut self, lease: &LeaseInfo, home: bool) -> KvResult<()> {
        if lease.ttl < 1 || lease.id <= 0 {
            return Err(KvError::BadRestore(format!(
                "a saved lease {} with TTL {}",
                lease.id, lease.ttl
            )));
        }
        let row = LeaseRow {
            ttl: lease.ttl,
            remaining_ttl: if home {
                lease.remaining_ttl.clamp(0, lease.ttl)
            } else {
                0
            },
            granted_rev: lease.granted_revision,
        };
        let mut txn = self.writer()?;
        txn.tree(tree::LEASES)?
            .insert(&codec::lease_key(lease.id), &codec::encode_lease(&row))?;
        self.finish(txn)
    }

    /// Ends a restore: the store is at `revision`, compacted there, has
    /// applied `index`, and its Raft configuration is `conf`; committed
    /// durably.
    ///
    /// # Errors
    /// A storage failure.
    pub fn finish_restore(
        &mut self,
        index: u64,
        revision: Revision,
        conf: &ConfIds,
    ) -> KvResult<()> {
        self.check_usable()?;
        let result = self.finish_restore_inner(index, revision, conf);
        self.note(result)
    }

    fn finish_restore_inner(
        &mut self,
        index: u64,
        revision: Revision,
        conf: &ConfIds,
    ) -> KvResult<()> {
        let mut txn = self.writer()?;
        {
            let mut meta = txn.tree(tree::META)?;
            for name in [
                meta_key::CURRENT_REV,
                meta_key::COMPACT_REV,
                meta_key::COMPACTED_REV,
            ] {
                meta.insert(name, &codec::encode_meta(revision))?;
            }
        }
        members::write_conf(&mut txn, conf)?;
        txn.set_applied_index(index);
        txn.commit()?;
        self.restored_at(revision);
        Ok(())
    }
}
