//! `Member`: etcd's Cluster API (docs/membership.md): list the members,
//! add, remove or promote one, or update its peer address. Changes are
//! made by the engine (`NodeClient::change_members`), which refuses, with
//! the reason, what would break the cluster.

use keel_engine::shard::{Cluster, MemberChange, NodeClient, NodeError};
use keel_proto::{MemberAction, MemberInfo, ResponseBody};

use crate::server::core::CoreContext;

/// The engine's change for a member request; `None` for a list.
pub(crate) fn change(
    action: MemberAction,
    member_id: u64,
    name: String,
    peer_address: String,
    learner: bool,
) -> Option<MemberChange> {
    match action {
        MemberAction::List => None,
        MemberAction::Add => Some(MemberChange::Add {
            name,
            peer_address,
            learner,
        }),
        MemberAction::Remove => Some(MemberChange::Remove(member_id)),
        MemberAction::Promote => Some(MemberChange::Promote(member_id)),
        MemberAction::Update => Some(MemberChange::Update {
            id: member_id,
            peer_address,
        }),
    }
}

/// Makes `change` (or only lists, for `None`) and answers the members
/// after it, each marked started if this member heard from it lately.
pub(crate) async fn members(
    ctx: &CoreContext,
    client: &NodeClient<'_>,
    change: Option<MemberChange>,
) -> Result<(u64, ResponseBody), NodeError> {
    let (member_id, cluster) = match change {
        Some(change) => client.change_members(change).await?,
        None => (0, client.cluster()),
    };
    let statuses = client.status().await?;
    let started =
        |id: u64| id == cluster.me || statuses.iter().any(|s| s.recent_peers.contains(&id));
    Ok((
        0,
        ResponseBody::Member {
            member_id,
            members: infos(ctx, &cluster, started),
            cluster_id: cluster.id,
        },
    ))
}

fn infos(ctx: &CoreContext, cluster: &Cluster, started: impl Fn(u64) -> bool) -> Vec<MemberInfo> {
    cluster
        .members
        .iter()
        .map(|m| MemberInfo {
            id: m.id,
            name: m.name.clone(),
            peer_address: m.peer_address.clone(),
            learner: m.learner,
            started: started(m.id),
            client_address: if m.id == cluster.me {
                ctx.info.client_address.to_string()
            } else {
                String::new()
            },
        })
        .collect()
}
