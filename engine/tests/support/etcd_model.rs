//! A plain in-memory reference of etcd v3 semantics, written for the tests
//! and as simple as possible: every version of every key in a map, whole
//! states rebuilt for each read, no paging, no compaction of its own
//! history (reads below the compaction point are refused instead).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use keel_engine::mvcc::*;

/// Model errors are compared with the store's by this normal form.
pub fn normal(e: &KvError) -> String {
    match e {
        KvError::DuplicateKey { .. } => "DuplicateKey".to_string(),
        KvError::InvalidLease(_) => "InvalidLease".to_string(),
        KvError::TooManyOps { .. } => "TooManyOps".to_string(),
        other => format!("{other:?}"),
    }
}

/// `(revision, key, pair after or None for a delete, pair before)`.
pub type Change = (u64, Vec<u8>, Option<KeyValue>, Option<KeyValue>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelLease {
    pub ttl: i64,
    pub remaining: i64,
    pub granted: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Model {
    /// Every version of every key: `(revision, pair or None for a delete)`.
    pub versions: BTreeMap<Vec<u8>, Vec<(u64, Option<KeyValue>)>>,
    pub leases: BTreeMap<i64, ModelLease>,
    pub current: u64,
    pub compact: u64,
    /// Every change in the order it was made: `(revision, key, pair after
    /// or None for a delete, pair before)`.
    pub log: Vec<Change>,
}

fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        end => key >= start && key < end,
    }
}

fn check_key(key: &[u8], end: &[u8]) -> Result<(), String> {
    if key.is_empty() {
        return Err(normal(&KvError::EmptyKey));
    }
    for k in [key, end] {
        if k.len() > MAX_KEY_LEN {
            return Err(normal(&KvError::KeyTooLarge {
                len: k.len(),
                max: MAX_KEY_LEN,
            }));
        }
    }
    Ok(())
}

fn size_check(bytes: usize) -> Result<(), String> {
    if bytes > MAX_REQUEST_BYTES {
        return Err(normal(&KvError::RequestTooLarge {
            len: bytes,
            max: MAX_REQUEST_BYTES,
        }));
    }
    Ok(())
}

fn put_static(p: &PutRequest) -> Result<(), String> {
    if p.key.is_empty() {
        return Err(normal(&KvError::EmptyKey));
    }
    check_key(&p.key, b"")?;
    if p.ignore_value && !p.value.is_empty() {
        return Err(normal(&KvError::ValueProvided));
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(normal(&KvError::LeaseProvided));
    }
    if p.lease < 0 {
        return Err(normal(&KvError::LeaseNotFound(p.lease)));
    }
    size_check(p.key.len() + p.value.len())?;
    // The stored rows' limits, as documented (not as the codec computes
    // them): key and value together, and the value alone.
    if p.key.len() + p.value.len() > MAX_PUT_BYTES || p.value.len() > MAX_VALUE_LEN {
        return Err(normal(&KvError::PutTooLarge {
            key: p.key.len(),
            value: p.value.len(),
        }));
    }
    Ok(())
}

fn op_bytes(op: &RequestOp) -> usize {
    match op {
        RequestOp::Range(r) => r.key.len() + r.range_end.len(),
        RequestOp::Put(p) => p.key.len() + p.value.len(),
        RequestOp::DeleteRange(d) => d.key.len() + d.range_end.len(),
        RequestOp::Txn(t) => txn_bytes(t),
    }
}

fn txn_bytes(t: &TxnRequest) -> usize {
    t.compare
        .iter()
        .map(|c| {
            c.key.len()
                + c.range_end.len()
                + if let CompareTarget::Value(v) = &c.target {
                    v.len()
                } else {
                    0
                }
        })
        .sum::<usize>()
        + t.success
            .iter()
            .chain(&t.failure)
            .map(op_bytes)
            .sum::<usize>()
}

fn check_ops(t: &TxnRequest, budget: usize) -> Result<(), String> {
    let count = t.compare.len().max(t.success.len()).max(t.failure.len());
    if count > budget {
        return Err("TooManyOps".to_string());
    }
    for c in &t.compare {
        check_key(&c.key, &c.range_end)?;
    }
    for op in t.success.iter().chain(&t.failure) {
        match op {
            RequestOp::Range(r) => check_key(&r.key, &r.range_end)?,
            RequestOp::Put(p) => put_static(p)?,
            RequestOp::DeleteRange(d) => check_key(&d.key, &d.range_end)?,
            RequestOp::Txn(n) => check_ops(n, budget - count)?,
        }
    }
    Ok(())
}

/// The branch each transaction on the path takes.
struct Path {
    ok: bool,
    nested: Vec<Option<Path>>,
}

impl Model {
    /// The pairs alive at `rev`.
    pub fn at(&self, rev: u64) -> BTreeMap<Vec<u8>, KeyValue> {
        let mut state = BTreeMap::new();
        for (key, versions) in &self.versions {
            if let Some((_, Some(kv))) = versions.iter().rev().find(|(r, _)| *r <= rev) {
                state.insert(key.clone(), kv.clone());
            }
        }
        state
    }

    /// The pair alive under `key` now.
    pub fn current_of(&self, key: &[u8]) -> Option<KeyValue> {
        self.versions.get(key)?.last()?.1.clone()
    }

    pub fn head(&self) -> BTreeMap<Vec<u8>, KeyValue> {
        self.at(u64::MAX)
    }

    /// The keys attached to lease `id` now, in key order.
    pub fn keys_of_lease(&self, id: i64) -> Vec<Vec<u8>> {
        self.head()
            .into_values()
            .filter(|kv| kv.lease == id)
            .map(|kv| kv.key)
            .collect()
    }

    /// A read at `revision` (0: the head) must be neither ahead of the
    /// current revision nor below the compaction point.
    fn check_read_revision(&self, revision: u64) -> Result<(), String> {
        if revision > self.current {
            return Err(normal(&KvError::FutureRevision {
                requested: revision,
                current: self.current,
            }));
        }
        if revision != 0 && revision < self.compact {
            return Err(normal(&KvError::Compacted {
                compact_revision: self.compact,
            }));
        }
        Ok(())
    }

    pub fn range(&self, r: &RangeRequest) -> Result<RangeResponse, String> {
        check_key(&r.key, &r.range_end)?;
        self.check_read_revision(r.revision)?;
        let state = if r.revision == 0 {
            self.head()
        } else {
            self.at(r.revision)
        };
        let all: Vec<KeyValue> = state
            .into_values()
            .filter(|kv| in_range(&kv.key, &r.key, &r.range_end))
            .collect();
        let count = all.len() as u64;
        let mut kvs: Vec<KeyValue> = all
            .into_iter()
            .filter(|kv| {
                (r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
                    && (r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
                    && (r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
                    && (r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
            })
            .collect();
        if r.count_only {
            return Ok(RangeResponse {
                kvs: Vec::new(),
                more: false,
                count,
            });
        }
        let field = |kv: &KeyValue| -> (u64, Vec<u8>) {
            match r.sort_target {
                SortTarget::Key => (0, kv.key.clone()),
                SortTarget::Version => (kv.version, Vec::new()),
                SortTarget::Create => (kv.create_revision, Vec::new()),
                SortTarget::Mod => (kv.mod_revision, Vec::new()),
                SortTarget::Value => (0, kv.value.clone()),
            }
        };
        match (r.sort_target, r.sort_order) {
            (SortTarget::Key, SortOrder::Descend) => kvs.reverse(),
            (SortTarget::Key, _) => {}
            (_, SortOrder::Descend) => kvs.sort_by_key(|kv| std::cmp::Reverse(field(kv))),
            _ => kvs.sort_by_key(|kv| field(kv)),
        }
        let more = r.limit != 0 && kvs.len() as u64 > r.limit;
        if r.limit != 0 {
            kvs.truncate(r.limit as usize);
        }
        if r.keys_only {
            for kv in &mut kvs {
                kv.value.clear();
            }
        }
        Ok(RangeResponse { kvs, more, count })
    }

    /// Applies an entry: on a refusal nothing changes but the revision.
    pub fn apply(&mut self, rev: u64, entry: &Entry) -> Result<Response, String> {
        if rev <= self.current {
            return Err(normal(&KvError::RevisionNotIncreasing {
                given: rev,
                current: self.current,
            }));
        }
        // `run` makes every check before its first change.
        let result = self.run(rev, entry);
        self.current = rev;
        result
    }

    fn write(&mut self, rev: u64, key: &[u8], kv: Option<KeyValue>) {
        let versions = self.versions.entry(key.to_vec()).or_default();
        let prev = versions.last().and_then(|(_, kv)| kv.clone());
        versions.push((rev, kv.clone()));
        self.log.push((rev, key.to_vec(), kv, prev));
    }

    fn put(&mut self, rev: u64, p: &PutRequest) -> PutResponse {
        let old = self.current_of(&p.key);
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: old.as_ref().map_or(rev, |o| o.create_revision),
            mod_revision: rev,
            version: old.as_ref().map_or(1, |o| o.version + 1),
            lease: match (&old, p.ignore_lease) {
                (Some(o), true) => o.lease,
                _ => p.lease,
            },
            value: match (&old, p.ignore_value) {
                (Some(o), true) => o.value.clone(),
                _ => p.value.clone(),
            },
        };
        self.write(rev, &p.key, Some(kv));
        PutResponse {
            prev_kv: if p.prev_kv { old } else { None },
        }
    }

    fn put_dynamic(&self, p: &PutRequest) -> Result<(), String> {
        if (p.ignore_value || p.ignore_lease) && self.current_of(&p.key).is_none() {
            return Err(normal(&KvError::KeyNotFound));
        }
        if p.lease != 0 && !self.leases.contains_key(&p.lease) {
            return Err(normal(&KvError::LeaseNotFound(p.lease)));
        }
        Ok(())
    }

    fn delete(&mut self, rev: u64, d: &DeleteRangeRequest) -> DeleteRangeResponse {
        let doomed: Vec<KeyValue> = self
            .head()
            .into_values()
            .filter(|kv| in_range(&kv.key, &d.key, &d.range_end))
            .collect();
        for kv in &doomed {
            self.write(rev, &kv.key, None);
        }
        DeleteRangeResponse {
            deleted: doomed.len() as u64,
            prev_kvs: if d.prev_kv { doomed } else { Vec::new() },
        }
    }

    fn revoke(&mut self, rev: u64, id: i64) {
        let keys: Vec<Vec<u8>> = self
            .head()
            .into_values()
            .filter(|kv| kv.lease == id)
            .map(|kv| kv.key)
            .collect();
        for key in keys {
            self.write(rev, &key, None);
        }
        self.leases.remove(&id);
    }

    fn holds(&self, c: &Compare) -> bool {
        let head = self.head();
        let kvs: Vec<&KeyValue> = head
            .values()
            .filter(|kv| in_range(&kv.key, &c.key, &c.range_end))
            .collect();
        let test = |kv: &KeyValue| {
            let ord = match &c.target {
                CompareTarget::Version(v) => kv.version.cmp(v),
                CompareTarget::Create(v) => kv.create_revision.cmp(v),
                CompareTarget::Mod(v) => kv.mod_revision.cmp(v),
                CompareTarget::Value(v) => kv.value.cmp(v),
                CompareTarget::Lease(v) => kv.lease.cmp(v),
            };
            match c.result {
                CompareResult::Equal => ord.is_eq(),
                CompareResult::NotEqual => ord.is_ne(),
                CompareResult::Less => ord.is_lt(),
                CompareResult::Greater => ord.is_gt(),
            }
        };
        if kvs.is_empty() {
            return !matches!(c.target, CompareTarget::Value(_)) && test(&KeyValue::default());
        }
        kvs.into_iter().all(test)
    }

    fn decide(&self, t: &TxnRequest) -> Path {
        let ok = t.compare.iter().all(|c| self.holds(c));
        let ops = if ok { &t.success } else { &t.failure };
        let nested = ops
            .iter()
            .map(|op| {
                if let RequestOp::Txn(n) = op {
                    Some(self.decide(n))
                } else {
                    None
                }
            })
            .collect();
        Path { ok, nested }
    }

    fn check_path(
        &self,
        t: &TxnRequest,
        path: &Path,
        puts: &mut BTreeSet<Vec<u8>>,
        deletes: &mut Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<(), String> {
        let ops = if path.ok { &t.success } else { &t.failure };
        for (op, nested) in ops.iter().zip(&path.nested) {
            match op {
                RequestOp::Put(p) => {
                    self.put_dynamic(p)?;
                    if !puts.insert(p.key.clone()) {
                        return Err("DuplicateKey".to_string());
                    }
                }
                RequestOp::DeleteRange(d) => deletes.push((d.key.clone(), d.range_end.clone())),
                RequestOp::Range(r) => self.check_read_revision(r.revision)?,
                RequestOp::Txn(n) => {
                    if let Some(p) = nested {
                        self.check_path(n, p, puts, deletes)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn execute(&mut self, rev: u64, t: &TxnRequest, path: &Path) -> TxnResponse {
        let ops = if path.ok { &t.success } else { &t.failure };
        let mut responses = Vec::new();
        for (op, nested) in ops.iter().zip(&path.nested) {
            responses.push(match op {
                RequestOp::Range(r) => ResponseOp::Range(self.range(r).expect("checked before")),
                RequestOp::Put(p) => ResponseOp::Put(self.put(rev, p)),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete(rev, d)),
                RequestOp::Txn(n) => {
                    ResponseOp::Txn(self.execute(rev, n, nested.as_ref().expect("decided")))
                }
            });
        }
        TxnResponse {
            succeeded: path.ok,
            responses,
        }
    }

    fn run_txn(&mut self, rev: u64, t: &TxnRequest) -> Result<Response, String> {
        size_check(txn_bytes(t))?;
        check_ops(t, MAX_TXN_OPS)?;
        let path = self.decide(t);
        let mut puts = BTreeSet::new();
        let mut deletes = Vec::new();
        self.check_path(t, &path, &mut puts, &mut deletes)?;
        if puts
            .iter()
            .any(|k| deletes.iter().any(|(s, e)| in_range(k, s, e)))
        {
            return Err("DuplicateKey".to_string());
        }
        Ok(Response::Txn(self.execute(rev, t, &path)))
    }

    fn run(&mut self, rev: u64, entry: &Entry) -> Result<Response, String> {
        match entry {
            Entry::Put(p) => {
                put_static(p)?;
                self.put_dynamic(p)?;
                Ok(Response::Put(self.put(rev, p)))
            }
            Entry::DeleteRange(d) => {
                check_key(&d.key, &d.range_end)?;
                size_check(d.key.len() + d.range_end.len())?;
                Ok(Response::DeleteRange(self.delete(rev, d)))
            }
            Entry::Txn(t) => {
                // Ranges inside may read any revision below the txn's own.
                let saved = self.current;
                self.current = saved.max(rev - 1);
                let outcome = self.run_txn(rev, t);
                self.current = saved;
                outcome
            }
            Entry::Compact { revision } => {
                if *revision <= self.compact {
                    return Err(normal(&KvError::Compacted {
                        compact_revision: self.compact,
                    }));
                }
                if *revision > rev {
                    return Err(normal(&KvError::FutureRevision {
                        requested: *revision,
                        current: rev,
                    }));
                }
                self.compact = *revision;
                Ok(Response::Compact)
            }
            Entry::LeaseGrant { id, ttl } => {
                if !(1..=MAX_LEASE_TTL).contains(ttl) || *id < 0 {
                    return Err("InvalidLease".to_string());
                }
                let id = if *id == 0 {
                    let mut id = (rev as i64).max(1);
                    while self.leases.contains_key(&id) {
                        id += 1;
                    }
                    id
                } else if self.leases.contains_key(id) {
                    return Err(normal(&KvError::LeaseExists(*id)));
                } else {
                    *id
                };
                self.leases.insert(
                    id,
                    ModelLease {
                        ttl: *ttl,
                        remaining: 0,
                        granted: rev,
                    },
                );
                Ok(Response::LeaseGrant { id, ttl: *ttl })
            }
            Entry::LeaseRevoke { id } => {
                if !self.leases.contains_key(id) {
                    return Err(normal(&KvError::LeaseNotFound(*id)));
                }
                self.revoke(rev, *id);
                Ok(Response::LeaseRevoke)
            }
            Entry::LeaseExpire { ids } => {
                let mut revoked = Vec::new();
                for id in ids {
                    if self.leases.contains_key(id) {
                        self.revoke(rev, *id);
                        revoked.push(*id);
                    }
                }
                Ok(Response::LeaseExpire { revoked })
            }
            Entry::LeaseCheckpoint { checkpoints } => {
                for (id, remaining) in checkpoints {
                    if let Some(l) = self.leases.get_mut(id) {
                        l.remaining = (*remaining).clamp(0, l.ttl);
                    }
                }
                Ok(Response::LeaseCheckpoint)
            }
            // One shard is the home of every lease: nothing is mirrored,
            // and no task is ever written.
            Entry::LeaseMirror { .. } => Ok(Response::LeaseMirror),
            Entry::LeaseTasksDone { .. } => Ok(Response::LeaseTasksDone),
            // The generator raises no alarm.
            Entry::Alarm { .. } => Ok(Response::Alarm),
            // Leadership placement changes no key.
            Entry::Placement(_) => Ok(Response::Placement),
            // Nor does the member list.
            Entry::Members(_) => Ok(Response::Members),
            // The generator makes no auth change.
            Entry::Auth(_) => Ok(Response::Auth { revision: 0 }),
        }
    }
}

/// What a watcher of `request` that started at `start` must see: every
/// change in its range from `start` on, filters applied, in order.
pub fn expected_events(model: &Model, request: &WatchRequest, start: u64) -> Vec<Event> {
    model
        .log
        .iter()
        .filter(|(rev, key, kv, _)| {
            *rev >= start
                && in_range(key, &request.key, &request.range_end)
                && !(request.no_put && kv.is_some())
                && !(request.no_delete && kv.is_none())
        })
        .map(|(rev, key, kv, prev)| Event {
            kind: if kv.is_some() {
                EventKind::Put
            } else {
                EventKind::Delete
            },
            kv: kv.clone().unwrap_or(KeyValue {
                key: key.clone(),
                mod_revision: *rev,
                ..KeyValue::default()
            }),
            prev_kv: if request.prev_kv { prev.clone() } else { None },
        })
        .collect()
}
