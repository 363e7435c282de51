//! Fills a shard's keyspace quickly for benches and measurements: puts in
//! batches, one commit per batch, each put at its own revision.

use keel_engine::mvcc::{Entry, Indexed, KvResult, PutRequest, Store};

/// The key of the `i`th loaded pair: `key/` and eight digits, so that a
/// prefix of six digits covers 100 keys.
pub fn key(i: u64) -> Vec<u8> {
    format!("key/{i:08}").into_bytes()
}

/// Puts keys `first..first + count` once, `batch` puts per commit.
pub fn fill_from(
    store: &mut Store,
    first: u64,
    count: u64,
    value_len: usize,
    batch: u64,
) -> KvResult<u64> {
    put_all(store, first, count, 1, value_len, batch)
}

/// Puts `count` keys of `value_len` bytes, `versions` times each (so
/// `count * versions` revisions), `batch` puts per commit. Returns the
/// last revision.
pub fn fill(
    store: &mut Store,
    count: u64,
    versions: u64,
    value_len: usize,
    batch: u64,
) -> KvResult<u64> {
    put_all(store, 0, count, versions, value_len, batch)
}

fn put_all(
    store: &mut Store,
    first: u64,
    count: u64,
    versions: u64,
    value_len: usize,
    batch: u64,
) -> KvResult<u64> {
    let mut revision = store.current_revision();
    let value = vec![b'v'; value_len];
    for _ in 0..versions {
        let mut next = first;
        while next < first + count {
            let end = (next + batch).min(first + count);
            let entries: Vec<Entry> = (next..end)
                .map(|i| {
                    Entry::Put(PutRequest {
                        key: key(i),
                        value: value.clone(),
                        ..Default::default()
                    })
                })
                .collect();
            revision = apply_next(store, &entries)?;
            next = end;
        }
    }
    Ok(revision)
}

/// Applies `entries` as one batch, each at the next revision and Raft
/// index after the store's; every entry must apply. Returns the last
/// revision.
pub fn apply_next(store: &mut Store, entries: &[Entry]) -> KvResult<u64> {
    apply_next_compacting(store, entries, 0).map(|(revision, _)| revision)
}

/// [`apply_next`] with a compaction step of up to `compact_rows` rows in
/// the same commit. Returns the last revision and whether compaction is
/// done.
pub fn apply_next_compacting(
    store: &mut Store,
    entries: &[Entry],
    compact_rows: usize,
) -> KvResult<(u64, bool)> {
    let mut revision = store.current_revision();
    let mut index = store.applied_index();
    let items: Vec<Indexed> = entries
        .iter()
        .map(|entry| {
            revision += 1;
            index += 1;
            Indexed {
                index,
                revision,
                entry,
            }
        })
        .collect();
    let (results, step) = store.apply_batch_compacting(&items, compact_rows)?;
    for result in results {
        result?;
    }
    Ok((revision, step.done))
}
