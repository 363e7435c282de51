//! `Leader`: etcd's `Maintenance.MoveLeader`, extended to keel's shards
//! (docs/cluster.md, "Leadership placement"): move one shard's leadership,
//! or every shard this member leads, to another member and keep it there;
//! unpin; drain a member before maintenance, or undrain it.

use keel_engine::shard::{NodeClient, NodeError};
use keel_proto::{LeaderAction, ResponseBody, ALL_SHARDS};

/// Serves a leader request; answers whether leadership got where it was
/// sent within the engine's wait.
pub(crate) async fn leader(
    client: &NodeClient<'_>,
    action: LeaderAction,
    shard: u32,
    member_id: u64,
) -> Result<(u64, ResponseBody), NodeError> {
    let settled = match action {
        LeaderAction::Move if shard == ALL_SHARDS => {
            // Every shard this member leads, as etcd moves its one leader.
            let me = client.member_id();
            let mut settled = true;
            for status in client.status().await? {
                if status.leader == me {
                    settled &= client.move_leader(status.shard, member_id).await?;
                }
            }
            settled
        }
        LeaderAction::Move => client.move_leader(shard as usize, member_id).await?,
        LeaderAction::Unpin if shard == ALL_SHARDS => {
            for shard in 0..client.shard_count() {
                client.unpin_leader(shard).await?;
            }
            true
        }
        LeaderAction::Unpin => {
            client.unpin_leader(shard as usize).await?;
            true
        }
        LeaderAction::Drain => client.drain(member_id).await?,
        LeaderAction::Undrain => {
            client.undrain(member_id).await?;
            true
        }
    };
    Ok((0, ResponseBody::Leader { settled }))
}
