//! Ranges: at the head from `kv`; at an older revision from `kv` and `gone`
//! (every key that may have existed then), following each key's `history`
//! links back to its version at that revision. In key order or reversed,
//! streamed so that a read holds at most one page of answers (or, for sorts
//! by something other than the key, at most twice its limit).

use std::ops::{Bound, ControlFlow};

use crate::mvcc::codec::{self, tree, At, Change, KvMeta, KvRow};
use crate::mvcc::error::{KvError, KvResult};
use crate::mvcc::snapshot::Snapshot;
use crate::mvcc::types::{KeyValue, RangeRequest, Revision, SortOrder, SortTarget, MAX_KEY_LEN};

/// Where the keyspace stands, for checking a read's revision.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Revisions {
    /// Revision of the last applied entry.
    pub(crate) current: Revision,
    /// Reads below this fail with [`KvError::Compacted`].
    pub(crate) compact: Revision,
}

/// Which version of each key a read sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadAt {
    /// The latest: the `kv` tree.
    Head,
    /// The version at `rev`, through `history`. Changes below `floor` (the
    /// compaction revision) may be gone.
    Revision { rev: Revision, floor: Revision },
}

impl Revisions {
    /// Checks a requested revision (0 is the head).
    pub(crate) fn read_at(&self, requested: Revision) -> KvResult<ReadAt> {
        if requested > self.current {
            return Err(KvError::FutureRevision {
                requested,
                current: self.current,
            });
        }
        if requested != 0 && requested < self.compact {
            return Err(KvError::Compacted {
                compact_revision: self.compact,
            });
        }
        // Only 0 reads `kv`: inside a transaction `kv` already holds the
        // transaction's own writes, which a read at the current revision
        // must not see.
        if requested == 0 {
            Ok(ReadAt::Head)
        } else {
            Ok(ReadAt::Revision {
                rev: requested,
                floor: self.compact,
            })
        }
    }
}

/// The keys a request names: `[start, end)`, `end` `None` for no bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyRange {
    pub(crate) start: Vec<u8>,
    pub(crate) end: Option<Vec<u8>>,
}

impl KeyRange {
    /// etcd's reading of `key` and `range_end`.
    pub(crate) fn new(key: &[u8], range_end: &[u8]) -> KvResult<KeyRange> {
        if key.is_empty() {
            return Err(KvError::EmptyKey);
        }
        check_key_len(key)?;
        check_key_len(range_end)?;
        let end = match range_end {
            [] => {
                let mut just_key = key.to_vec();
                just_key.push(0);
                Some(just_key)
            }
            [0] => None,
            end => Some(end.to_vec()),
        };
        Ok(KeyRange {
            start: key.to_vec(),
            end,
        })
    }

    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|end| key < end)
    }
}

pub(crate) fn check_key_len(key: &[u8]) -> KvResult<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(KvError::KeyTooLarge {
            len: key.len(),
            max: MAX_KEY_LEN,
        });
    }
    Ok(())
}

/// A key found by a walk, read in place where it can be.
pub(crate) struct Found<'a> {
    pub(crate) key: &'a [u8],
    pub(crate) meta: KvMeta,
    pub(crate) value: &'a [u8],
}

impl Found<'_> {
    pub(crate) fn to_key_value(&self, with_value: bool) -> KeyValue {
        self.meta
            .with(self.key, if with_value { self.value } else { &[] })
    }
}

/// Where a key's history starts, newest first.
enum Newest<'a> {
    /// The key is alive: its `kv` row.
    Alive(KvRow<'a>),
    /// The key was deleted: where the delete is.
    Gone(At),
}

/// The change at `at`, which `key`'s history links to; `None` when
/// compaction removed it (only changes below `floor` go). Checks the link:
/// the change is `key`'s, and its own link goes strictly back in time
/// (anything else could loop).
pub(crate) fn linked_change<'a, S: Snapshot>(
    snap: &'a S,
    key: &[u8],
    at: At,
    floor: Revision,
) -> KvResult<Option<Change<'a>>> {
    let Some(row) = snap.row(tree::HISTORY, &at.key())? else {
        if at.rev < floor {
            return Ok(None);
        }
        return Err(broken_link(key, at, "names a change that is not there"));
    };
    let change = codec::decode_change(at, row)?;
    if change.key != key {
        return Err(broken_link(key, at, "names another key's change"));
    }
    if change.prev.is_some_and(|prev| prev >= at) {
        return Err(broken_link(key, at, "links forward"));
    }
    Ok(Some(change))
}

fn broken_link(key: &[u8], at: At, what: &str) -> KvError {
    KvError::Storage(crate::Error::BadRow {
        tree: "history",
        reason: format!(
            "the history of {key:?} {what} (revision {}, seq {})",
            at.rev, at.seq
        ),
    })
}

/// The version of `key` at `rev`, walking back from its newest change;
/// `None` when the key did not exist then.
fn version_from<'a, S: Snapshot>(
    snap: &'a S,
    key: &[u8],
    newest: Newest<'a>,
    rev: Revision,
    floor: Revision,
) -> KvResult<Option<(KvMeta, &'a [u8])>> {
    let mut next = match newest {
        Newest::Alive(row) if row.meta.mod_revision <= rev => {
            return Ok(Some((row.meta, row.value)))
        }
        Newest::Alive(row) => row.prev,
        Newest::Gone(delete) if delete.rev <= rev => return Ok(None),
        Newest::Gone(delete) => Some(delete),
    };
    while let Some(at) = next {
        let Some(change) = linked_change(snap, key, at, floor)? else {
            return Ok(None);
        };
        if at.rev <= rev {
            return Ok(change.version);
        }
        next = change.prev;
    }
    Ok(None)
}

/// Calls `visit` for each key of `range` that exists at `at`, in key order
/// (descending when `reverse`), starting past `resume`. Returns whether
/// `visit` stopped the walk.
pub(crate) fn walk<S: Snapshot>(
    snap: &S,
    range: &KeyRange,
    at: ReadAt,
    reverse: bool,
    resume: Option<&[u8]>,
    mut visit: impl FnMut(Found<'_>) -> KvResult<ControlFlow<()>>,
) -> KvResult<bool> {
    let end = range.end.as_deref();
    let (start, end) = match (resume, reverse) {
        (Some(after), false) => (
            Bound::Excluded(after),
            end.map_or(Bound::Unbounded, Bound::Excluded),
        ),
        (Some(before), true) => (
            Bound::Included(range.start.as_slice()),
            Bound::Excluded(before),
        ),
        (None, _) => (
            Bound::Included(range.start.as_slice()),
            end.map_or(Bound::Unbounded, Bound::Excluded),
        ),
    };
    match at {
        ReadAt::Head => {
            let rows = snap.rows(tree::KV, start, end)?;
            let mut step = |row: crate::Result<(&[u8], &[u8])>| -> KvResult<bool> {
                let (key, row) = row?;
                let (meta, value) = codec::kv_view(row)?;
                let flow = visit(Found { key, meta, value })?;
                Ok(flow.is_break())
            };
            if reverse {
                for row in rows.rev() {
                    if step(row)? {
                        return Ok(true);
                    }
                }
            } else {
                for row in rows {
                    if step(row)? {
                        return Ok(true);
                    }
                }
            }
            Ok(false)
        }
        ReadAt::Revision { rev, floor } => {
            let alive = snap.rows(tree::KV, start, end)?;
            let gone = snap.rows(tree::GONE, start, end)?;
            let at = Past { rev, floor };
            if reverse {
                at.walk(snap, alive.rev(), gone.rev(), true, visit)
            } else {
                at.walk(snap, alive, gone, false, visit)
            }
        }
    }
}

/// A read at an older revision.
struct Past {
    rev: Revision,
    floor: Revision,
}

impl Past {
    /// Merges the `kv` and `gone` rows of the range (a key is in one of
    /// them at most) in walk order, and visits each key's version at
    /// `self.rev`.
    fn walk<'a, S: Snapshot>(
        &self,
        snap: &'a S,
        alive: impl Iterator<Item = crate::Result<(&'a [u8], &'a [u8])>>,
        gone: impl Iterator<Item = crate::Result<(&'a [u8], &'a [u8])>>,
        reverse: bool,
        mut visit: impl FnMut(Found<'_>) -> KvResult<ControlFlow<()>>,
    ) -> KvResult<bool> {
        let mut alive = alive.peekable();
        let mut gone = gone.peekable();
        loop {
            let take_alive = match (alive.peek(), gone.peek()) {
                (None, None) => return Ok(false),
                (Some(_), None) | (Some(Err(_)), _) => true,
                (None, Some(_)) | (_, Some(Err(_))) => false,
                (Some(Ok((a, _))), Some(Ok((g, _)))) if a == g => {
                    return Err(KvError::Storage(crate::Error::BadRow {
                        tree: "gone",
                        reason: format!("{a:?} is both alive and deleted"),
                    }));
                }
                (Some(Ok((a, _))), Some(Ok((g, _)))) => (a < g) != reverse,
            };
            let (key, newest) = if take_alive {
                let Some(row) = alive.next() else {
                    return Ok(false);
                };
                let (key, row) = row?;
                (key, Newest::Alive(codec::kv_row(row)?))
            } else {
                let Some(row) = gone.next() else {
                    return Ok(false);
                };
                let (key, row) = row?;
                (key, Newest::Gone(codec::decode_gone(row)?))
            };
            let Some((meta, value)) = version_from(snap, key, newest, self.rev, self.floor)? else {
                continue;
            };
            let flow = visit(Found { key, meta, value })?;
            if flow.is_break() {
                return Ok(true);
            }
        }
    }
}

/// A range request, checked and resolved against the keyspace's revisions.
#[derive(Debug, Clone)]
pub(crate) struct RangePlan {
    pub(crate) request: RangeRequest,
    pub(crate) keys: KeyRange,
    pub(crate) at: ReadAt,
}

impl RangePlan {
    pub(crate) fn new(request: &RangeRequest, revisions: Revisions) -> KvResult<RangePlan> {
        let keys = KeyRange::new(&request.key, &request.range_end)?;
        let at = revisions.read_at(request.revision)?;
        Ok(RangePlan {
            request: request.clone(),
            keys,
            at,
        })
    }

    /// Whether answers come straight from a walk in key order (no sort
    /// needed); the bool says whether the walk goes backwards.
    fn key_order(&self) -> Option<bool> {
        match (self.request.sort_target, self.request.sort_order) {
            (SortTarget::Key, SortOrder::None | SortOrder::Ascend) => Some(false),
            (SortTarget::Key, SortOrder::Descend) => Some(true),
            _ => None,
        }
    }

    /// The min/max revision filters, applied after counting (as etcd).
    fn passes(&self, meta: &KvMeta) -> bool {
        let r = &self.request;
        (r.min_mod_revision == 0 || meta.mod_revision >= r.min_mod_revision)
            && (r.max_mod_revision == 0 || meta.mod_revision <= r.max_mod_revision)
            && (r.min_create_revision == 0 || meta.create_revision >= r.min_create_revision)
            && (r.max_create_revision == 0 || meta.create_revision <= r.max_create_revision)
    }
}

/// Bytes a pair takes in an answer, for paging.
/// The bytes `kv` takes in an answer, at most: its key and value, and a
/// bound on what a response frame spends around them (revisions, version,
/// lease, lengths, offsets and padding).
pub fn answer_size(kv: &KeyValue) -> usize {
    kv.key.len() + kv.value.len() + ANSWER_BYTES_PER_PAIR
}

/// A bound on a response frame's bytes per pair besides its key and value.
pub const ANSWER_BYTES_PER_PAIR: usize = 96;

/// `Err(AnswerTooLarge)` when `bytes` of answer are past `request`'s limit.
pub(crate) fn check_answer_limit(request: &RangeRequest, bytes: usize) -> KvResult<()> {
    match request.answer_limit {
        0 => Ok(()),
        limit if bytes > limit => Err(KvError::AnswerTooLarge { limit }),
        _ => Ok(()),
    }
}

/// One page of a range answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangePage {
    /// The pairs of this page.
    pub kvs: Vec<KeyValue>,
    /// Whether this is the last page; `count` and `more` are final only then.
    pub last: bool,
    /// Keys in the range (etcd's `count`).
    pub count: u64,
    /// Whether the limit cut the answer short (etcd's `more`).
    pub more: bool,
}

/// Where a paged range stands between pages.
#[derive(Debug, Default)]
pub(crate) struct RangeProgress {
    /// Bytes of pairs handed out so far, by [`answer_size`].
    gathered: usize,
    /// The last key walked, for key-order answers.
    resume: Option<Vec<u8>>,
    /// Keys counted so far.
    count: u64,
    /// Pairs handed out so far.
    returned: u64,
    more: bool,
    /// A sorted answer, computed once and handed out page by page.
    sorted: Option<std::collections::VecDeque<KeyValue>>,
    done: bool,
}

/// The most bytes of pairs a sort by something other than the key may hold
/// when the request has no limit.
pub(crate) const MAX_SORTED_BYTES: usize = 64 << 20;

/// Computes the next page of `plan`, of about `page_bytes` (at least one
/// pair). The walk goes on counting past the page only on the last page.
pub(crate) fn next_page<S: Snapshot>(
    snap: &S,
    plan: &RangePlan,
    progress: &mut RangeProgress,
    page_bytes: usize,
) -> KvResult<RangePage> {
    if progress.done {
        return Ok(RangePage {
            kvs: Vec::new(),
            last: true,
            count: progress.count,
            more: progress.more,
        });
    }
    match plan.key_order() {
        Some(reverse) => key_order_page(snap, plan, progress, reverse, page_bytes),
        None => {
            if progress.sorted.is_none() {
                progress.sorted = Some(sorted_answer(snap, plan, progress)?.into());
            }
            let sorted = progress.sorted.get_or_insert_with(Default::default);
            let mut page = RangePage::default();
            let mut bytes = 0;
            while let Some(kv) = sorted.pop_front() {
                bytes += answer_size(&kv);
                page.kvs.push(kv);
                if bytes >= page_bytes {
                    break;
                }
            }
            page.last = sorted.is_empty();
            progress.done = page.last;
            page.count = progress.count;
            page.more = progress.more;
            Ok(page)
        }
    }
}

fn key_order_page<S: Snapshot>(
    snap: &S,
    plan: &RangePlan,
    progress: &mut RangeProgress,
    reverse: bool,
    page_bytes: usize,
) -> KvResult<RangePage> {
    let request = &plan.request;
    let limit = request.limit;
    let with_value = !request.keys_only;
    let mut kvs = Vec::new();
    let mut bytes = 0;
    let mut page_full = false;
    let resume = progress.resume.take();
    let stopped = walk(
        snap,
        &plan.keys,
        plan.at,
        reverse,
        resume.as_deref(),
        |found| {
            if page_full {
                // The page is full: stop before this key, which the next page
                // takes again.
                return Ok(ControlFlow::Break(()));
            }
            progress.count += 1;
            // The last key counted; its buffer is reused from key to key.
            let last = progress.resume.get_or_insert_with(Vec::new);
            last.clear();
            last.extend_from_slice(found.key);
            if request.count_only || !plan.passes(&found.meta) {
                return Ok(ControlFlow::Continue(()));
            }
            if limit != 0 && progress.returned >= limit {
                progress.more = true;
                return Ok(ControlFlow::Continue(()));
            }
            // Past the answer limit before the pair is copied: a read
            // refused for its size costs no more than its limit.
            let value_len = if with_value { found.value.len() } else { 0 };
            let size = found.key.len() + value_len + ANSWER_BYTES_PER_PAIR;
            check_answer_limit(request, progress.gathered + size)?;
            progress.gathered += size;
            let kv = found.to_key_value(with_value);
            bytes += answer_size(&kv);
            kvs.push(kv);
            progress.returned += 1;
            page_full = bytes >= page_bytes;
            Ok(ControlFlow::Continue(()))
        },
    )?;
    if stopped {
        // The key that stopped the walk was not counted; resume before it
        // (the resume key is the last one counted).
        return Ok(RangePage {
            kvs,
            last: false,
            count: progress.count,
            more: progress.more,
        });
    }
    progress.done = true;
    Ok(RangePage {
        kvs,
        last: true,
        count: progress.count,
        more: progress.more,
    })
}

/// The comparison key of a sort target.
pub(crate) fn sort_cmp(target: SortTarget, a: &KeyValue, b: &KeyValue) -> std::cmp::Ordering {
    match target {
        SortTarget::Key => a.key.cmp(&b.key),
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    }
}

fn target_name(target: SortTarget) -> &'static str {
    match target {
        SortTarget::Key => "key",
        SortTarget::Version => "version",
        SortTarget::Create => "create revision",
        SortTarget::Mod => "mod revision",
        SortTarget::Value => "value",
    }
}

/// A whole answer sorted by a target other than the key (ties in key
/// order). With a limit it keeps at most twice the limit in memory, cutting
/// back to the best `limit` whenever it doubles; without one it refuses
/// answers over [`MAX_SORTED_BYTES`].
fn sorted_answer<S: Snapshot>(
    snap: &S,
    plan: &RangePlan,
    progress: &mut RangeProgress,
) -> KvResult<Vec<KeyValue>> {
    let request = &plan.request;
    let target = request.sort_target;
    let descending = request.sort_order == SortOrder::Descend;
    let sort = |kvs: &mut Vec<KeyValue>| {
        if descending {
            kvs.sort_by(|a, b| sort_cmp(target, b, a));
        } else {
            kvs.sort_by(|a, b| sort_cmp(target, a, b));
        }
    };
    let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
    let with_value = !request.keys_only || target == SortTarget::Value;
    let mut kvs: Vec<KeyValue> = Vec::new();
    let mut matched: u64 = 0;
    let mut bytes = 0usize;
    // What the answer itself takes: without values when it has keys only.
    let mut answer_bytes = 0usize;
    walk(snap, &plan.keys, plan.at, false, None, |found| {
        progress.count += 1;
        if request.count_only || !plan.passes(&found.meta) {
            return Ok(ControlFlow::Continue(()));
        }
        matched += 1;
        let kv = found.to_key_value(with_value);
        bytes += answer_size(&kv);
        answer_bytes += if request.keys_only {
            kv.key.len() + ANSWER_BYTES_PER_PAIR
        } else {
            answer_size(&kv)
        };
        kvs.push(kv);
        if limit != 0 && kvs.len() >= limit.saturating_mul(2) {
            sort(&mut kvs);
            kvs.truncate(limit);
            bytes = kvs.iter().map(answer_size).sum();
        }
        if bytes > MAX_SORTED_BYTES {
            return Err(KvError::ResultTooLarge(target_name(target)));
        }
        // Without a limit, every pair gathered is in the answer.
        if limit == 0 {
            check_answer_limit(request, answer_bytes)?;
        }
        Ok(ControlFlow::Continue(()))
    })?;
    sort(&mut kvs);
    if limit != 0 && kvs.len() > limit {
        kvs.truncate(limit);
    }
    progress.more = limit != 0 && matched > limit as u64;
    if request.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    Ok(kvs)
}
