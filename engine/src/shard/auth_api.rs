//! The auth record on a node (docs/security.md, "Auth"): read from what
//! this member's shard 0 applied, changed by an `Entry::Auth` on shard 0.

use crate::mvcc::{AuthChange, Entry, Response};
use crate::shard::error::{NodeError, NodeResult};
use crate::shard::node::NodeClient;

impl NodeClient<'_> {
    /// Replaces the auth record with `state`, made from the record at
    /// auth revision `base`; answers the new auth revision. The leader
    /// of shard 0 applied it when this returns; this member follows it
    /// once its own shard 0 has (`auth_record`).
    ///
    /// # Errors
    /// [`crate::mvcc::KvError::AuthChanged`] if another change came first
    /// (nothing changed: make it again from the new record); else as a
    /// write to shard 0.
    pub async fn change_auth(&self, base: u64, state: Vec<u8>) -> NodeResult<u64> {
        let applied = self
            .write_at_leader(0, Entry::Auth(AuthChange { base, state }))
            .await?;
        let Response::Auth { revision } = applied.response else {
            return Err(NodeError::InvalidRequest(
                "shard 0 answered an auth change with something else".to_string(),
            ));
        };
        Ok(revision)
    }
}
