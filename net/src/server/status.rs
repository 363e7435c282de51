//! `Status`: the version, the shard map the shard-aware client routes by,
//! and each shard's Raft and storage state.

use keel_engine::shard::{NodeClient, NodeError};
use keel_proto::{ResponseBody, ShardInfo, Status};

use crate::server::core::CoreContext;

pub(crate) async fn status(
    ctx: &CoreContext,
    client: &NodeClient<'_>,
) -> Result<(u64, ResponseBody), NodeError> {
    let shards = client.status().await?;
    let alarms = crate::server::alarm::members(client.alarms().await?);
    let revision = shards.iter().map(|s| s.revision).max().unwrap_or(0);
    let cores = ctx.node.core_count();
    let shard_info = shards
        .iter()
        .map(|s| ShardInfo {
            shard: s.shard as u32,
            core: keel_proto::routing::core_of(s.shard, cores) as u32,
            leader: s.leader,
            raft_index: s.raft_index,
            raft_term: s.raft_term,
            db_size: s.db_size,
            stopped: s.stopped.clone().unwrap_or_default(),
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            voters: s.voters.clone(),
            learners: s.learners.clone(),
            pinned_leader: s.pinned_leader,
            avoided: s.avoided.clone(),
            voters_outgoing: s.voters_outgoing.clone(),
        })
        .collect();
    let status = Status {
        version: env!("CARGO_PKG_VERSION").to_string(),
        shards: shards.len() as u32,
        cores: cores as u32,
        core_ports: ctx.info.core_ports.clone(),
        shard_info,
        member_id: ctx.info.member_id,
        name: ctx.info.name.clone(),
        client_address: ctx.info.client_address.to_string(),
        alarms,
    };
    Ok((revision, ResponseBody::Status(status)))
}
