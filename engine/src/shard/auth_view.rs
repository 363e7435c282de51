//! The auth record as this node follows it (docs/security.md, "Auth"):
//! the one its replica of shard 0 applied last, shared by every core and
//! by the server, which checks requests against it before they are
//! proposed. Read on every request of a client with auth on, changed
//! rarely: one atomic load.
//!
//! Invariant: the record held only moves forward in auth revision (a
//! snapshot or a replay never takes it back).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::mvcc::AuthRecord;

/// The node's auth record; clones share it.
#[derive(Debug, Clone, Default)]
pub struct AuthView(Arc<ArcSwap<AuthRecord>>, Arc<AtomicU64>, Arc<AtomicBool>);

impl AuthView {
    /// The record now.
    pub fn load(&self) -> Arc<AuthRecord> {
        self.0.load_full()
    }

    /// The record's auth revision, read without touching the record: a
    /// load of a word written once per change, so that the cores, which
    /// check it on every request, share it without contention.
    pub fn revision(&self) -> u64 {
        self.1.load(Ordering::Acquire)
    }

    /// Whether this member's shard 0 has read the record yet (at start,
    /// after its replay). Until then the record held says nothing (a
    /// cluster with auth on looks like one without): a server refuses to
    /// check anything against it.
    pub fn is_known(&self) -> bool {
        self.2.load(Ordering::Acquire)
    }

    /// Follows `record` if it is newer than the one held, and marks the
    /// record read; answers whether it was newer.
    pub(crate) fn adopt(&self, record: AuthRecord) -> bool {
        let newer = self.take(record);
        self.2.store(true, Ordering::Release);
        newer
    }

    /// The record held can no longer be trusted to follow the cluster's
    /// (shard 0 stopped): the server refuses to check against it again.
    pub(crate) fn forget(&self) {
        self.2.store(false, Ordering::Release);
    }

    fn take(&self, record: AuthRecord) -> bool {
        if record.revision <= self.0.load().revision {
            return false;
        }
        let revision = record.revision;
        self.0.store(Arc::new(record));
        // After the record: whoever sees this revision finds it there.
        self.1.store(revision, Ordering::Release);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_newer_record_is_adopted() {
        let view = AuthView::default();
        assert!(!view.is_known());
        assert!(!view.adopt(AuthRecord::default()));
        assert!(view.is_known(), "read, though empty");
        let record = |revision: u64, state: &[u8]| AuthRecord {
            revision,
            state: state.to_vec(),
        };
        assert!(view.adopt(record(2, b"two")));
        assert!(!view.adopt(record(1, b"one")));
        assert!(!view.adopt(record(2, b"other")));
        assert_eq!(*view.load(), record(2, b"two"));
        assert!(view.adopt(record(3, b"three")));
        assert_eq!(view.load().revision, 3);
        assert_eq!(view.revision(), 3);
        view.forget();
        assert!(!view.is_known(), "a stopped shard 0 is followed no more");
    }
}
