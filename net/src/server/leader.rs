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
            let led: Vec<usize> = client
                .status()
                .await?
                .into_iter()
                .filter(|status| status.leader == me)
                .map(|status| status.shard)
                .collect();
            client.move_leaders(&led, member_id).await?
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
