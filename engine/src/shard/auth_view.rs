//! The auth record as this node follows it (docs/security.md, "Auth"):
//! the one its replica of shard 0 applied last, shared by every core and
//! by the server, which checks requests against it before they are
//! proposed. Read on every request of a client with auth on, changed
//! rarely: one atomic load.
//!
//! Invariant: the record held only moves forward in auth revision (a
//! snapshot or a replay never takes it back).

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::mvcc::AuthRecord;

/// The node's auth record; clones share it.
#[derive(Debug, Clone, Default)]
pub struct AuthView(Arc<ArcSwap<AuthRecord>>);

impl AuthView {
    /// The record now.
    pub fn load(&self) -> Arc<AuthRecord> {
        self.0.load_full()
    }

    /// Follows `record` if it is newer than the one held; answers whether
    /// it was.
    pub(crate) fn adopt(&self, record: AuthRecord) -> bool {
        if record.revision <= self.0.load().revision {
            return false;
        }
        self.0.store(Arc::new(record));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_newer_record_is_adopted() {
        let view = AuthView::default();
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
    }
}
