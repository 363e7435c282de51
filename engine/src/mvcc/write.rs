//! Changes at one revision: puts, deletes and lease changes, each written
//! to `kv` (or `gone`), `history` and the lease trees together. Callers
//! check requests first ([`crate::mvcc::txn`]); past the checks, only a
//! storage failure can stop a change.
//!
//! `history` is keyed by revision, so every change appends to it; a key's
//! changes are chained backwards through their `prev` links, starting from
//! its `kv` row (or its `gone` row once deleted).

use std::ops::Bound;

use crate::btree::{Storage, WriteTxn};
use crate::mvcc::codec::{self, tree, At, LeaseRow};
use crate::mvcc::error::KvResult;
use crate::mvcc::read::KeyRange;
use crate::mvcc::snapshot::Snapshot;
use crate::mvcc::types::{
    DeleteRangeRequest, DeleteRangeResponse, Event, EventKind, KeyValue, LeaseId, LeaseTask,
    PutRequest, PutResponse, Revision,
};

/// Keys a delete collects before deleting them, so a huge delete holds
/// bounded memory (the answer's `prev_kvs` aside, which the client asked
/// for).
const DELETE_BATCH: usize = 1024;

/// Events one revision may hold in memory for watchers; past this the
/// watchers catch up from `history` instead.
pub(crate) const MAX_EVENTS_IN_MEMORY: usize = 4096;

/// Bytes of events (keys, values and previous values) a whole batch may
/// hold in memory for watchers; past this they catch up from `history`.
/// Without it a batch of large deletes would hold every deleted value.
pub(crate) const MAX_EVENT_BYTES_IN_MEMORY: usize = 16 << 20;

/// The events of the entries applied since the last commit, for watchers.
#[derive(Debug, Default)]
pub(crate) struct EventLog {
    /// `(revision, events)`, in revision order.
    pub(crate) revisions: Vec<(Revision, Vec<Event>)>,
    /// A revision whose events were too many to keep; watchers catch up
    /// from disk from the first such revision on.
    pub(crate) overflow_from: Option<Revision>,
    /// Size of the events in `revisions`, as [`Event::size`] counts.
    bytes: usize,
}

impl EventLog {
    fn push(&mut self, rev: Revision, event: Event) {
        if self.overflow_from.is_some() {
            return;
        }
        let size = event.size();
        let same_revision = matches!(self.revisions.last(), Some((last, _)) if *last == rev);
        let events_at_rev = match self.revisions.last() {
            Some((_, events)) if same_revision => events.len(),
            _ => 0,
        };
        if events_at_rev >= MAX_EVENTS_IN_MEMORY || self.bytes + size > MAX_EVENT_BYTES_IN_MEMORY {
            // The revision goes whole or not at all: drop what it has.
            if same_revision {
                if let Some((_, dropped)) = self.revisions.pop() {
                    self.bytes = self
                        .bytes
                        .saturating_sub(dropped.iter().map(Event::size).sum());
                }
            }
            self.overflow_from = Some(rev);
            return;
        }
        self.bytes += size;
        match self.revisions.last_mut() {
            Some((_, events)) if same_revision => events.push(event),
            _ => self.revisions.push((rev, vec![event])),
        }
    }
}

/// Writes the changes of one revision.
pub(crate) struct Writer<'t, S: Storage> {
    pub(crate) txn: &'t mut WriteTxn<S>,
    pub(crate) rev: Revision,
    /// Changes written so far at this revision: the next `history` sequence.
    pub(crate) seq: u32,
    /// Whether anything was written at this revision.
    pub(crate) wrote: bool,
    pub(crate) events: &'t mut EventLog,
}

impl<S: Storage> Writer<'_, S> {
    /// The current pair under `key` and where it is in `history`.
    fn current_at(&self, key: &[u8]) -> KvResult<Option<(KeyValue, At)>> {
        match self.txn.row(tree::KV, key)? {
            Some(row) => Ok(Some(pair_at(key, row)?)),
            None => Ok(None),
        }
    }

    /// Appends the next change of this revision to `history`; returns
    /// where it went.
    fn record(&mut self, key: &[u8], version: Option<&KeyValue>, prev: Option<At>) -> KvResult<At> {
        let at = At {
            rev: self.rev,
            seq: self.seq,
        };
        self.txn
            .tree(tree::HISTORY)?
            .insert_owned(&at.key(), codec::encode_change(key, version, prev))?;
        self.seq = self.seq.saturating_add(1);
        self.wrote = true;
        Ok(at)
    }

    /// A checked put.
    pub(crate) fn put(&mut self, request: &PutRequest) -> KvResult<PutResponse> {
        let (old, prev) = match self.current_at(&request.key)? {
            Some((old, at)) => (Some(old), Some(at)),
            // A deleted key's history goes on from its delete; its `gone`
            // row goes, as the key is alive again.
            None => (None, self.take_gone(&request.key)?),
        };
        let value = match (&old, request.ignore_value) {
            (Some(old), true) => old.value.clone(),
            _ => request.value.clone(),
        };
        let lease = match (&old, request.ignore_lease) {
            (Some(old), true) => old.lease,
            _ => request.lease,
        };
        let (create_revision, version) = match &old {
            Some(old) => (old.create_revision, old.version.saturating_add(1)),
            None => (self.rev, 1),
        };
        let kv = KeyValue {
            key: request.key.clone(),
            create_revision,
            mod_revision: self.rev,
            version,
            lease,
            value,
        };
        let at = self.record(&kv.key, Some(&kv), prev)?;
        self.txn
            .tree(tree::KV)?
            .insert_owned(&kv.key, codec::encode_kv(&kv, at.seq, prev))?;
        let old_lease = old.as_ref().map_or(0, |o| o.lease);
        if old_lease != 0 && old_lease != lease {
            self.txn
                .tree(tree::LEASE_KEYS)?
                .remove(&codec::lease_key_row(old_lease, &kv.key))?;
        }
        if lease != 0 && lease != old_lease {
            self.txn
                .tree(tree::LEASE_KEYS)?
                .insert(&codec::lease_key_row(lease, &kv.key), &[])?;
        }
        let prev_kv = if request.prev_kv { old.clone() } else { None };
        self.events.push(
            self.rev,
            Event {
                kind: EventKind::Put,
                kv,
                prev_kv: old,
            },
        );
        Ok(PutResponse { prev_kv })
    }

    /// Removes `key`'s `gone` row; returns where its delete is.
    fn take_gone(&mut self, key: &[u8]) -> KvResult<Option<At>> {
        let Some(row) = self.txn.row(tree::GONE, key)? else {
            return Ok(None);
        };
        let delete = codec::decode_gone(row)?;
        self.txn.tree(tree::GONE)?.remove(key)?;
        Ok(Some(delete))
    }

    /// Deletes one existing key, whose current version is at `old_at`.
    fn delete_key(&mut self, old: KeyValue, old_at: At) -> KvResult<()> {
        self.txn.tree(tree::KV)?.remove(&old.key)?;
        let at = self.record(&old.key, None, Some(old_at))?;
        self.txn
            .tree(tree::GONE)?
            .insert(&old.key, &codec::encode_gone(at))?;
        if old.lease != 0 {
            self.txn
                .tree(tree::LEASE_KEYS)?
                .remove(&codec::lease_key_row(old.lease, &old.key))?;
        }
        let tombstone = KeyValue {
            key: old.key.clone(),
            mod_revision: self.rev,
            ..KeyValue::default()
        };
        self.events.push(
            self.rev,
            Event {
                kind: EventKind::Delete,
                kv: tombstone,
                prev_kv: Some(old),
            },
        );
        Ok(())
    }

    /// A checked delete of every key in the range.
    pub(crate) fn delete_range(
        &mut self,
        request: &DeleteRangeRequest,
    ) -> KvResult<DeleteRangeResponse> {
        let range = KeyRange::new(&request.key, &request.range_end)?;
        let mut response = DeleteRangeResponse::default();
        let end = range
            .end
            .as_deref()
            .map_or(Bound::Unbounded, Bound::Excluded);
        let mut after: Option<Vec<u8>> = None;
        loop {
            let start = after
                .as_deref()
                .map_or(Bound::Included(range.start.as_slice()), Bound::Excluded);
            let batch = self
                .txn
                .rows(tree::KV, start, end)?
                .take(DELETE_BATCH)
                .map(|row| {
                    let (key, row) = row?;
                    pair_at(key, row)
                })
                .collect::<KvResult<Vec<(KeyValue, At)>>>()?;
            let Some((last, _)) = batch.last() else {
                return Ok(response);
            };
            after = Some(last.key.clone());
            let full = batch.len() == DELETE_BATCH;
            for (old, old_at) in batch {
                response.deleted += 1;
                if request.prev_kv {
                    response.prev_kvs.push(old.clone());
                }
                self.delete_key(old, old_at)?;
            }
            if !full {
                return Ok(response);
            }
        }
    }

    /// Deletes the lease and every key attached to it.
    pub(crate) fn revoke(&mut self, lease: LeaseId) -> KvResult<()> {
        self.wrote = true;
        loop {
            let keys = attached_keys(&*self.txn, lease, DELETE_BATCH)?;
            if keys.is_empty() {
                break;
            }
            for key in keys {
                match self.current_at(&key)? {
                    Some((old, old_at)) => self.delete_key(old, old_at)?,
                    // Cannot happen while `lease_keys` follows `kv`; drop
                    // the stray row so the loop ends either way.
                    None => {
                        self.txn
                            .tree(tree::LEASE_KEYS)?
                            .remove(&codec::lease_key_row(lease, &key))?;
                    }
                }
            }
        }
        self.txn
            .tree(tree::LEASES)?
            .remove(&codec::lease_key(lease))?;
        Ok(())
    }

    /// Records what a lease's mirrors must do (replacing what was there).
    pub(crate) fn store_task(&mut self, task: &LeaseTask) -> KvResult<()> {
        self.wrote = true;
        self.txn
            .tree(tree::LEASE_TASKS)?
            .insert(&codec::lease_key(task.id), &codec::encode_lease_task(task))?;
        Ok(())
    }

    /// Forgets a lease's task: every mirror has done it.
    pub(crate) fn remove_task(&mut self, id: LeaseId) -> KvResult<()> {
        self.wrote = true;
        self.txn
            .tree(tree::LEASE_TASKS)?
            .remove(&codec::lease_key(id))?;
        Ok(())
    }

    /// Sets a `meta` number.
    pub(crate) fn set_meta(&mut self, key: &[u8], value: u64) -> KvResult<()> {
        self.wrote = true;
        self.txn
            .tree(tree::META)?
            .insert(key, &codec::encode_meta(value))?;
        Ok(())
    }

    /// Sets a `meta` row to `value` as it is.
    pub(crate) fn put_meta_row(&mut self, key: &[u8], value: &[u8]) -> KvResult<()> {
        self.wrote = true;
        self.txn.tree(tree::META)?.insert(key, value)?;
        Ok(())
    }

    /// Removes a `meta` row.
    pub(crate) fn remove_meta(&mut self, key: &[u8]) -> KvResult<()> {
        self.wrote = true;
        self.txn.tree(tree::META)?.remove(key)?;
        Ok(())
    }

    /// Stores a lease.
    pub(crate) fn store_lease(&mut self, id: LeaseId, lease: &LeaseRow) -> KvResult<()> {
        self.wrote = true;
        self.txn
            .tree(tree::LEASES)?
            .insert(&codec::lease_key(id), &codec::encode_lease(lease))?;
        Ok(())
    }
}

/// A `kv` row as the pair it holds and where that version is in `history`.
fn pair_at(key: &[u8], row: &[u8]) -> KvResult<(KeyValue, At)> {
    let row = codec::kv_row(row)?;
    Ok((row.meta.with(key, row.value), row.at))
}

/// The lease `id`, as `snap` sees it.
pub(crate) fn lease_row<T: Snapshot>(snap: &T, id: LeaseId) -> KvResult<Option<LeaseRow>> {
    if id <= 0 {
        return Ok(None);
    }
    match snap.row(tree::LEASES, &codec::lease_key(id))? {
        Some(row) => Ok(Some(codec::decode_lease(row)?)),
        None => Ok(None),
    }
}

/// The task lease `id`'s home must still carry to its mirrors.
pub(crate) fn lease_task<T: Snapshot>(snap: &T, id: LeaseId) -> KvResult<Option<LeaseTask>> {
    match snap.row(tree::LEASE_TASKS, &codec::lease_key(id))? {
        Some(row) => Ok(Some(codec::decode_lease_task(id, row)?)),
        None => Ok(None),
    }
}

/// The first `limit` keys attached to lease `id`, in key order.
pub(crate) fn attached_keys<T: Snapshot>(
    snap: &T,
    id: LeaseId,
    limit: usize,
) -> KvResult<Vec<Vec<u8>>> {
    let first = codec::lease_key(id);
    let keys = snap
        .rows(tree::LEASE_KEYS, Bound::Included(&first), Bound::Unbounded)?
        .take(limit)
        .map_while(|row| match row {
            Ok((row_key, _)) => row_key
                .strip_prefix(first.as_slice())
                .map(|k| Ok(k.to_vec())),
            Err(e) => Some(Err(e)),
        })
        .collect::<crate::Result<Vec<Vec<u8>>>>()?;
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: &str, value_len: usize) -> Event {
        Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: key.as_bytes().to_vec(),
                value: vec![b'v'; value_len],
                ..KeyValue::default()
            },
            prev_kv: None,
        }
    }

    fn revisions_kept(log: &EventLog) -> Vec<Revision> {
        log.revisions.iter().map(|(rev, _)| *rev).collect()
    }

    #[test]
    fn the_revision_that_crosses_the_byte_cap_overflows_whole() {
        let mut log = EventLog::default();
        let chunk = MAX_EVENT_BYTES_IN_MEMORY / 3;
        log.push(1, event("a", chunk));
        log.push(2, event("b", chunk));
        log.push(3, event("c", 10));
        log.push(3, event("d", chunk));
        log.push(4, event("e", 10));
        assert_eq!(revisions_kept(&log), vec![1, 2]);
        assert_eq!(log.overflow_from, Some(3));
    }

    #[test]
    fn the_revision_that_crosses_the_event_cap_overflows_whole() {
        let mut log = EventLog::default();
        log.push(1, event("a", 1));
        for _ in 0..=MAX_EVENTS_IN_MEMORY {
            log.push(2, event("b", 1));
        }
        assert_eq!(revisions_kept(&log), vec![1]);
        assert_eq!(log.overflow_from, Some(2));
    }
}
