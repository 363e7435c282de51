//! Alarms across shards (docs/node.md, "NOSPACE"): raised by an entry on
//! every shard, listed as the union of what the shards hold, cleared by an
//! entry on every shard.

use std::collections::BTreeSet;

use crate::mvcc::{AlarmAction, AlarmKind, Entry};
use crate::shard::error::{NodeError, NodeResult};
use crate::shard::node::NodeClient;
use crate::shard::replica::ShardCall;

/// A raised alarm: which, and the member that raised it (etcd's
/// `AlarmMember`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Alarm {
    /// The member that raised it.
    pub member: u64,
    /// Which alarm.
    pub kind: AlarmKind,
}

impl NodeClient<'_> {
    /// Every alarm raised on any shard, in member order. A stopped shard is
    /// left out (its status says why it stopped).
    ///
    /// # Errors
    /// The node shutting down.
    pub async fn alarms(&self) -> NodeResult<Vec<Alarm>> {
        let mut raised = BTreeSet::new();
        for shard in 0..self.shard_count() {
            match self.call(shard, |reply| ShardCall::Alarms { reply }).await {
                Ok(alarms) => raised.extend(
                    alarms
                        .into_iter()
                        .map(|(kind, member)| Alarm { member, kind }),
                ),
                Err(NodeError::ShardStopped { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(raised.into_iter().collect())
    }

    /// Raises or clears `alarm` on every shard. Clearing a NOSPACE alarm
    /// lets writes that take space through again; if there is still no
    /// room (the quota exceeded, the disk full) the next such write or
    /// sync raises it again, as etcd does.
    ///
    /// A stopped shard is passed over (as [`NodeClient::alarms`] does):
    /// it refuses everything anyway, and its alarm no longer counts.
    ///
    /// # Errors
    /// The first shard that did not take it.
    pub async fn set_alarm(&self, action: AlarmAction, alarm: Alarm) -> NodeResult<()> {
        for shard in 0..self.shard_count() {
            let entry = Entry::Alarm {
                action,
                kind: alarm.kind,
                member: alarm.member,
            };
            match self.write_at_leader(shard, entry).await {
                Ok(_) | Err(NodeError::ShardStopped { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Clears every alarm raised (etcdctl's `alarm disarm`); answers what
    /// it cleared.
    ///
    /// # Errors
    /// As [`NodeClient::alarms`] and [`NodeClient::set_alarm`].
    pub async fn disarm_alarms(&self) -> NodeResult<Vec<Alarm>> {
        let raised = self.alarms().await?;
        for alarm in &raised {
            self.set_alarm(AlarmAction::Deactivate, *alarm).await?;
        }
        Ok(raised)
    }
}
