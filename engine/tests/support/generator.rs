//! Random requests for the model tests: puts, deletes, transactions
//! (nested, with duplicate keys, too many ops), compactions, lease entries,
//! and ranges with every option, over a small pool of keys so that they
//! collide.
//!
//! The store's test (`mvcc_model.rs`) draws keys from [`STORE_KEYS`] and
//! revisions from `0..=current + 1`. The node's test draws keys from
//! hash-tag groups, keeps each transaction inside one group (with some
//! deliberately spanning two), and draws revisions from the ones its
//! writes were given (HLC revisions are far apart).

#![allow(dead_code)]

use keel_engine::mvcc::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Keys whose bytes exercise ordering edge cases (zero bytes, 0xff).
pub const STORE_KEYS: &[&[u8]] = &[
    b"a",
    b"a\x00",
    b"a\x00b",
    b"ab",
    b"b",
    b"\x00",
    b"\x00\x00",
    b"c/1",
    b"c/2",
    b"c/3",
    b"\xff",
];

/// Keys of the node test, by hash tag: one transaction's keys come from one
/// group (the last group has no tag, so it spans shards).
pub const NODE_KEY_GROUPS: &[&[&[u8]]] = &[
    &[b"{a}/1", b"{a}/2", b"{a}\x00", b"{a}/\xff"],
    &[b"{b}/x", b"{b}/y", b"{b}"],
    &[b"c/1", b"c/2", b"\x00", b"\xff"],
];

/// The number of seeds a model test runs: `KEEL_MODEL_CASES`, else
/// `default`.
pub fn model_cases(default: u64) -> u64 {
    std::env::var("KEEL_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A seeded request generator.
pub struct Gen {
    pub rng: StdRng,
    keys: Vec<Vec<u8>>,
    groups: Vec<Vec<Vec<u8>>>,
    /// Keys of the group a transaction is being built in.
    scope: Option<Vec<Vec<u8>>>,
    /// Node mode: the revisions writes were given, to pick from.
    revisions: Option<Vec<u64>>,
}

impl Gen {
    /// The store's generator.
    pub fn for_store(seed: u64) -> Gen {
        Gen {
            rng: StdRng::seed_from_u64(seed),
            keys: STORE_KEYS.iter().map(|k| k.to_vec()).collect(),
            groups: Vec::new(),
            scope: None,
            revisions: None,
        }
    }

    /// The node's generator.
    pub fn for_node(seed: u64) -> Gen {
        let groups: Vec<Vec<Vec<u8>>> = NODE_KEY_GROUPS
            .iter()
            .map(|g| g.iter().map(|k| k.to_vec()).collect())
            .collect();
        Gen {
            rng: StdRng::seed_from_u64(seed),
            keys: groups.concat(),
            groups,
            scope: None,
            revisions: Some(Vec::new()),
        }
    }

    /// Node mode: a revision a write was given.
    pub fn record_revision(&mut self, revision: u64) {
        if let Some(revisions) = &mut self.revisions {
            revisions.push(revision);
        }
    }

    pub fn key(&mut self) -> Vec<u8> {
        let pool = self.scope.as_ref().unwrap_or(&self.keys);
        pool[self.rng.gen_range(0..pool.len())].clone()
    }

    fn range_end(&mut self, start: &[u8]) -> Vec<u8> {
        if self.scope.is_some() {
            return match self.rng.gen_range(0..4) {
                0 | 1 => Vec::new(),
                2 => prefix_end(start),
                _ => self.key(),
            };
        }
        match self.rng.gen_range(0..6) {
            0 | 1 => Vec::new(),
            2 => vec![0],
            3 => prefix_end(start),
            4 => self.key(),
            _ => b"c/".to_vec(),
        }
    }

    /// A revision to read at or compare with: 0 to `current + 1` for the
    /// store; for the node one its writes were given, give or take one.
    pub fn revision(&mut self, current: u64) -> u64 {
        match &self.revisions {
            Some(revisions) if !revisions.is_empty() && self.rng.gen_bool(0.9) => {
                let at = revisions[self.rng.gen_range(0..revisions.len())];
                match self.rng.gen_range(0..4) {
                    0 => at - 1,
                    1 => at + 1,
                    _ => at,
                }
            }
            Some(_) => [0, current, current + 1][self.rng.gen_range(0..3)],
            None => self.rng.gen_range(0..=current + 1),
        }
    }

    fn lease(&mut self) -> i64 {
        match self.rng.gen_range(0..20) {
            0..=5 => 0,
            6 => -1,
            _ => self.rng.gen_range(1..5),
        }
    }

    fn value(&mut self) -> Vec<u8> {
        let len = if self.rng.gen_bool(0.05) {
            3000
        } else {
            self.rng.gen_range(0..6)
        };
        (0..len).map(|_| self.rng.gen_range(b'0'..b'4')).collect()
    }

    pub fn put(&mut self) -> PutRequest {
        let ignore_value = self.rng.gen_bool(0.1);
        let ignore_lease = self.rng.gen_bool(0.1);
        PutRequest {
            key: if self.rng.gen_bool(0.02) {
                Vec::new()
            } else {
                self.key()
            },
            value: if ignore_value && self.rng.gen_bool(0.7) {
                Vec::new()
            } else {
                self.value()
            },
            lease: if ignore_lease && self.rng.gen_bool(0.7) {
                0
            } else {
                self.lease()
            },
            prev_kv: self.rng.gen_bool(0.5),
            ignore_value,
            ignore_lease,
        }
    }

    pub fn delete(&mut self) -> DeleteRangeRequest {
        let key = self.key();
        DeleteRangeRequest {
            range_end: self.range_end(&key),
            key,
            prev_kv: self.rng.gen_bool(0.5),
        }
    }

    pub fn range(&mut self, current: u64) -> RangeRequest {
        let key = if self.rng.gen_bool(0.02) {
            Vec::new()
        } else {
            self.key()
        };
        let pick = |gen: &mut Gen| {
            if gen.rng.gen_bool(0.6) {
                0
            } else {
                gen.revision(current)
            }
        };
        let revision = pick(self);
        let range_end = self.range_end(&key);
        let limit = if self.rng.gen_bool(0.5) {
            0
        } else {
            self.rng.gen_range(1..4)
        };
        let sort_order =
            [SortOrder::None, SortOrder::Ascend, SortOrder::Descend][self.rng.gen_range(0..3)];
        let sort_target = [
            SortTarget::Key,
            SortTarget::Version,
            SortTarget::Create,
            SortTarget::Mod,
            SortTarget::Value,
        ][self.rng.gen_range(0..5)];
        let keys_only = self.rng.gen_bool(0.2);
        let count_only = self.rng.gen_bool(0.1);
        let bound = |gen: &mut Gen| {
            if gen.rng.gen_bool(0.15) {
                pick(gen)
            } else {
                0
            }
        };
        RangeRequest {
            key,
            range_end,
            limit,
            revision,
            sort_order,
            sort_target,
            keys_only,
            count_only,
            min_mod_revision: bound(self),
            max_mod_revision: bound(self),
            min_create_revision: bound(self),
            max_create_revision: bound(self),
            // The server's bound on an answer's bytes; the model has none.
            answer_limit: 0,
        }
    }

    fn compare(&mut self, current: u64) -> Compare {
        let key = self.key();
        let range_end = if self.rng.gen_bool(0.7) {
            Vec::new()
        } else {
            self.range_end(&key)
        };
        let target = match self.rng.gen_range(0..5) {
            0 => CompareTarget::Version(self.rng.gen_range(0..4)),
            1 => CompareTarget::Create(self.revision(current)),
            2 => CompareTarget::Mod(self.revision(current)),
            3 => CompareTarget::Value(self.value()),
            _ => CompareTarget::Lease(self.lease()),
        };
        let result = [
            CompareResult::Equal,
            CompareResult::NotEqual,
            CompareResult::Less,
            CompareResult::Greater,
        ][self.rng.gen_range(0..4)];
        Compare {
            key,
            range_end,
            target,
            result,
        }
    }

    fn ops(&mut self, current: u64, depth: u32) -> Vec<RequestOp> {
        let n = if self.rng.gen_bool(0.03) {
            129
        } else {
            self.rng.gen_range(0..4)
        };
        (0..n)
            .map(
                |_| match self.rng.gen_range(0..if depth < 2 { 4 } else { 3 }) {
                    0 => RequestOp::Range(self.range(current)),
                    1 => RequestOp::Put(self.put()),
                    2 => RequestOp::DeleteRange(self.delete()),
                    _ => RequestOp::Txn(self.txn(current, depth + 1)),
                },
            )
            .collect()
    }

    pub fn txn(&mut self, current: u64, depth: u32) -> TxnRequest {
        // Node mode: one group's keys, but now and then any key (which
        // the node must refuse when they span shards).
        let scoped = depth == 0 && !self.groups.is_empty() && self.rng.gen_bool(0.9);
        if scoped {
            let group = self.rng.gen_range(0..self.groups.len());
            self.scope = Some(self.groups[group].clone());
        }
        let txn = TxnRequest {
            compare: (0..self.rng.gen_range(0..3))
                .map(|_| self.compare(current))
                .collect(),
            success: self.ops(current, depth),
            failure: self.ops(current, depth),
        };
        if scoped {
            self.scope = None;
        }
        txn
    }

    pub fn entry(&mut self, current: u64) -> Entry {
        match self.rng.gen_range(0..20) {
            0..=6 => Entry::Put(self.put()),
            7..=8 => Entry::DeleteRange(self.delete()),
            9..=12 => Entry::Txn(self.txn(current, 0)),
            13 => Entry::Compact {
                revision: self.revision(current),
            },
            14..=15 => Entry::LeaseGrant {
                id: if self.rng.gen_bool(0.15) {
                    0
                } else {
                    self.rng.gen_range(-1..5)
                },
                ttl: if self.rng.gen_bool(0.05) {
                    0
                } else {
                    self.rng.gen_range(1..100)
                },
            },
            16 if self.rng.gen_bool(0.5) => Entry::LeaseRevoke {
                id: self.rng.gen_range(1..6),
            },
            16 => Entry::Put(self.put()),
            17 if self.rng.gen_bool(0.5) => Entry::Put(self.put()),
            17 => Entry::LeaseExpire {
                ids: (0..self.rng.gen_range(0..4))
                    .map(|_| self.rng.gen_range(1..7))
                    .collect(),
            },
            18 => Entry::LeaseCheckpoint {
                checkpoints: (0..self.rng.gen_range(0..3))
                    .map(|_| (self.rng.gen_range(1..7), self.rng.gen_range(-5..120)))
                    .collect(),
            },
            _ if self.rng.gen_bool(0.2) => {
                let key = self.key();
                let len = [
                    MAX_REQUEST_BYTES,
                    MAX_REQUEST_BYTES - 1,
                    MAX_VALUE_LEN,
                    MAX_VALUE_LEN + 1,
                    MAX_PUT_BYTES - key.len(),
                    MAX_PUT_BYTES + 1 - key.len(),
                ][self.rng.gen_range(0..6)];
                Entry::Put(PutRequest {
                    key,
                    value: vec![b'x'; len],
                    ..Default::default()
                })
            }
            _ => Entry::Put(self.put()),
        }
    }
}
