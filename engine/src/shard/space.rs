//! The node's space (docs/node.md, "NOSPACE"): what each shard's tree
//! file holds, the backend quota, and which shards have a NOSPACE alarm
//! raised in their state. Shared by every core: atomics only, each shard
//! writing its own slots.
//!
//! The alarm itself is replicated state: an `Entry::Alarm` on every shard,
//! which then refuses what takes space when it applies it. These flags
//! only mirror it, so that a leader refuses such a write before logging
//! it, and say whether a raise is already under way.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Shared by every shard of a node.
#[derive(Debug)]
pub(crate) struct NodeSpace {
    /// Most bytes the shards' trees may hold together (etcd's
    /// `--quota-backend-bytes`).
    quota: u64,
    /// This member, as alarms name it.
    member: u64,
    /// Bytes each shard's tree holds in use (pages not free).
    used: Vec<AtomicU64>,
    /// Whether each shard's state has a NOSPACE alarm raised.
    alarmed: Vec<AtomicBool>,
    /// A raise is under way (one at a time).
    raising: AtomicBool,
}

impl NodeSpace {
    pub(crate) fn new(shards: usize, quota: u64, member: u64) -> NodeSpace {
        NodeSpace {
            quota,
            member,
            used: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            alarmed: (0..shards).map(|_| AtomicBool::new(false)).collect(),
            raising: AtomicBool::new(false),
        }
    }

    pub(crate) fn member(&self) -> u64 {
        self.member
    }

    pub(crate) fn set_used(&self, shard: usize, bytes: u64) {
        if let Some(used) = self.used.get(shard) {
            used.store(bytes, Ordering::Relaxed);
        }
    }

    /// Bytes the shards' trees hold in use, together.
    pub(crate) fn used(&self) -> u64 {
        self.used.iter().map(|u| u.load(Ordering::Relaxed)).sum()
    }

    pub(crate) fn over_quota(&self) -> bool {
        self.used() > self.quota
    }

    pub(crate) fn set_alarmed(&self, shard: usize, alarmed: bool) {
        if let Some(flag) = self.alarmed.get(shard) {
            flag.store(alarmed, Ordering::Relaxed);
        }
    }

    /// Whether any shard has a NOSPACE alarm raised.
    pub(crate) fn alarmed(&self) -> bool {
        self.alarmed.iter().any(|a| a.load(Ordering::Relaxed))
    }

    /// Claims the raise: `true` for the one caller that should carry it out
    /// (until [`NodeSpace::raised`]).
    pub(crate) fn begin_raise(&self) -> bool {
        !self.raising.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn raised(&self) {
        self.raising.store(false, Ordering::Release);
    }
}
