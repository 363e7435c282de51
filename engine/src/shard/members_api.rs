//! etcd's Cluster API on a node: list, add, promote, remove and update
//! members (docs/membership.md). A change is an `Entry::Members` on shard
//! 0, made from the list this node follows; every shard's leader then
//! brings its group to the new list (`conf_plan.rs`).
//!
//! Invariant: a change is made only when every shard here has the list's
//! configuration, so that no two shards are ever more than one change
//! apart. Each change moves at most one voter, so any majority of one
//! shard's voters meets any majority of another's, which the order of
//! revisions across shards rests on (docs/node.md, "Revisions across
//! members").

use crate::mvcc::{Entry, MemberList};
use crate::shard::cluster::Cluster;
use crate::shard::conf_plan;
use crate::shard::error::{NodeError, NodeResult};
use crate::shard::membership::{self, MemberChange};
use crate::shard::node::NodeClient;
use crate::shard::replica::{random_u64, ShardCall, ShardStatus};
use std::sync::Arc;

/// How much of each shard's log a learner must hold to be promoted
/// (etcd's `readyPercentThreshold`).
const PROMOTE_AT_PERCENT: u64 = 90;

impl NodeClient<'_> {
    /// Makes `change` to the member list, and answers the id it concerns
    /// (a new member's for an add) and the list after it. Every member
    /// follows the list as its shard 0 applies it, and the shards' groups
    /// follow in the background, one change at a time; the next change
    /// waits for them.
    ///
    /// # Errors
    /// [`NodeError::InvalidRequest`] with the reason when the change is
    /// refused: a member that is not there, a name, address or id that is
    /// taken, a learner not caught up, a change that would leave fewer
    /// started voters than the new quorum, a previous change still under
    /// way, or a member without a peer transport; nothing changed. Else
    /// as a write to shard 0.
    pub async fn change_members(&self, change: MemberChange) -> NodeResult<(u64, Arc<Cluster>)> {
        if !self.replicated() {
            return Err(NodeError::InvalidRequest(
                "this member runs alone without a peer address: start it with \
                 --initial-cluster NAME=HOST:PORT for members to join it"
                    .to_string(),
            ));
        }
        let cluster = self.cluster();
        let statuses = self.status().await?;
        // Removing the member the change under way concerns (one that
        // never started, a promoted learner that died) is let through:
        // the shards then differ from the list by that member alone.
        let unfinished = match change {
            MemberChange::Remove(id) => Some(id),
            _ => None,
        };
        for status in &statuses {
            if !is_settled(status, &cluster, unfinished) {
                return Err(NodeError::InvalidRequest(format!(
                    "shard {} is still changing to the member list (its voters {:x?}, \
                     learners {:x?}, leaving {:x?}; the list's voters {:x?}, learners {:x?}): \
                     one membership change at a time; try again shortly",
                    status.shard,
                    status.voters,
                    status.learners,
                    status.voters_outgoing,
                    cluster.voters(),
                    cluster.learners()
                )));
            }
        }
        let mut started = self.started_members(&cluster).await?;
        started.extend(statuses.iter().flat_map(|s| s.recent_peers.iter().copied()));
        let started = |id: u64| started.contains(&id);
        if let MemberChange::Promote(id) = change {
            if cluster.member(id).is_some_and(|m| m.learner) {
                self.check_caught_up(id).await?;
            }
        }
        let new_id = fresh_id(&cluster);
        let made = membership::make_change(&cluster, &change, new_id, started)
            .map_err(NodeError::InvalidRequest)?;
        let id = match change {
            MemberChange::Add { .. } => new_id,
            MemberChange::Promote(id) | MemberChange::Remove(id) => id,
            MemberChange::Update { id, .. } => id,
        };
        let list = MemberList {
            revision: 0,
            members: made.members.clone(),
            removed: made.removed.clone(),
        };
        let applied = self.write_at_leader(0, Entry::Members(made)).await?;
        let after = MemberList {
            revision: applied.revision,
            ..list
        };
        Ok((id, Arc::new(membership::with_list(&cluster, &after))))
    }

    /// The members some shard's leader heard from lately (its Raft
    /// progress of them is recent), and this one. Every member is in every
    /// shard's group; a leader just elected has heard from few, so every
    /// shard's leader is asked.
    async fn started_members(&self, cluster: &Cluster) -> NodeResult<Vec<u64>> {
        let mut started = vec![cluster.me];
        for shard in 0..self.shard_count() {
            for member in cluster.members.iter().map(|m| m.id) {
                if started.contains(&member) {
                    continue;
                }
                match self
                    .call(shard, |reply| ShardCall::MemberProgress { member, reply })
                    .await
                {
                    Ok(percent) if percent > 0 => started.push(member),
                    // Not heard lately, not in the group yet, or no
                    // leader to ask: another shard may tell.
                    Ok(_)
                    | Err(NodeError::InvalidRequest(_))
                    | Err(NodeError::NoLeader { .. })
                    | Err(NodeError::NotLeader { .. }) => {}
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(started)
    }

    /// Refuses to promote `member` until it holds 90 % of every shard's
    /// log, as its leader sees it.
    async fn check_caught_up(&self, member: u64) -> NodeResult<()> {
        for shard in 0..self.shard_count() {
            let percent = self
                .call(shard, |reply| ShardCall::MemberProgress { member, reply })
                .await?;
            if percent < PROMOTE_AT_PERCENT {
                return Err(NodeError::InvalidRequest(format!(
                    "member {member:x} is not caught up on shard {shard} ({percent}% of its \
                     leader's log, {PROMOTE_AT_PERCENT}% needed): it can only be promoted once \
                     it is in sync with the leader"
                )));
            }
        }
        Ok(())
    }
}

/// Whether a shard's configuration, as its status tells, is `cluster`'s;
/// with `except`, leaving that member out of both.
fn is_settled(status: &ShardStatus, cluster: &Cluster, except: Option<u64>) -> bool {
    let keep = |ids: &[u64]| -> Vec<u64> {
        ids.iter()
            .copied()
            .filter(|id| Some(*id) != except)
            .collect()
    };
    let mut conf = raft::eraftpb::ConfState {
        voters: keep(&status.voters),
        learners: keep(&status.learners),
        voters_outgoing: keep(&status.voters_outgoing),
        ..raft::eraftpb::ConfState::default()
    };
    if except.is_some() {
        // A joint configuration that differs only by `except` is the list
        // once `except` is out.
        let mut outgoing = conf.voters_outgoing.clone();
        let mut incoming = conf.voters.clone();
        outgoing.sort_unstable();
        incoming.sort_unstable();
        if outgoing == incoming {
            conf.voters_outgoing.clear();
        }
    }
    let mut list = cluster.clone();
    list.members.retain(|m| Some(m.id) != except);
    status.stopped.is_none() && conf_plan::is_settled(&conf, &list)
}

/// A new member id: random, never 0, never a member's or a removed one's.
fn fresh_id(cluster: &Cluster) -> u64 {
    loop {
        let id = random_u64();
        if id != 0 && cluster.member(id).is_none() && !cluster.was_removed(id) {
            return id;
        }
    }
}
