//! Where each shard's leadership is placed (docs/cluster.md, "Leadership
//! placement"): by default spread over the members and their cores
//! (`Cluster::preferred_leader`); an operator may pin a shard to a member
//! (`move-leader`) or keep every shard off a member (drain it before
//! maintenance). The placement is replicated state of each shard, changed
//! by an `Entry::Placement` through its leader, so every replica, and every
//! later leader, agrees on it; the leader hands leadership over to where
//! the placement says at its next spread check (`Replica::placed_leader`).

use std::time::{Duration, Instant};

use crate::mvcc::{Entry, Placement, PlacementChange};
use crate::shard::error::{NodeError, NodeResult};
use crate::shard::node::NodeClient;
use crate::shard::replica::ShardCall;

/// How long a placement change waits for leadership to get where it says.
const SETTLE_WITHIN: Duration = Duration::from_secs(10);

impl NodeClient<'_> {
    /// Moves `shard`'s leadership to member `to`, and keeps it there (the
    /// spread no longer moves it) until [`NodeClient::unpin_leader`].
    /// Answers once `to` leads, as this member sees it, or `false` when
    /// it did not within 10 s (it goes on trying: `to` may be catching up).
    ///
    /// # Errors
    /// `to` not a member, or drained; the placement not changed.
    pub async fn move_leader(&self, shard: usize, to: u64) -> NodeResult<bool> {
        self.check_shard(shard)?;
        if self.cluster().member(to).is_none() {
            return Err(NodeError::InvalidRequest(format!(
                "member {to:x} is not in the cluster"
            )));
        }
        if self.placement(shard).await?.avoided.contains(&to) {
            return Err(NodeError::InvalidRequest(format!(
                "member {to:x} is drained: undrain it first"
            )));
        }
        self.change_placement(shard, PlacementChange::Pin(to))
            .await?;
        self.settle(std::iter::once(shard), LeaderWant::Is(to))
            .await
    }

    /// [`NodeClient::move_leader`] for several shards: every pin first,
    /// then one wait for them all.
    ///
    /// # Errors
    /// As `move_leader`.
    pub async fn move_leaders(&self, shards: &[usize], to: u64) -> NodeResult<bool> {
        if self.cluster().member(to).is_none() {
            return Err(NodeError::InvalidRequest(format!(
                "member {to:x} is not in the cluster"
            )));
        }
        for &shard in shards {
            self.check_shard(shard)?;
            if self.placement(shard).await?.avoided.contains(&to) {
                return Err(NodeError::InvalidRequest(format!(
                    "member {to:x} is drained: undrain it first"
                )));
            }
        }
        for &shard in shards {
            self.change_placement(shard, PlacementChange::Pin(to))
                .await?;
        }
        self.settle(shards.iter().copied(), LeaderWant::Is(to))
            .await
    }

    /// Lets `shard`'s leadership follow the spread again.
    ///
    /// # Errors
    /// The change not made.
    pub async fn unpin_leader(&self, shard: usize) -> NodeResult<()> {
        self.check_shard(shard)?;
        self.change_placement(shard, PlacementChange::Unpin).await
    }

    /// Keeps every shard's leadership off `member` (before maintenance):
    /// answers once no shard is led from it, as this member sees it, or
    /// `false` when some still was after 10 s.
    ///
    /// # Errors
    /// `member` not a member, or the only one; a shard not changed.
    pub async fn drain(&self, member: u64) -> NodeResult<bool> {
        if self.cluster().member(member).is_none() {
            return Err(NodeError::InvalidRequest(format!(
                "member {member:x} is not in the cluster"
            )));
        }
        // Some member must be left to lead.
        let avoided = self.placement(0).await?.avoided;
        let left = self
            .cluster()
            .members
            .iter()
            .filter(|m| m.id != member && !avoided.contains(&m.id))
            .count();
        if left == 0 {
            return Err(NodeError::InvalidRequest(format!(
                "draining member {member:x} would leave no member to lead: undrain another first"
            )));
        }
        for shard in 0..self.shard_count() {
            self.change_placement(shard, PlacementChange::Avoid(member))
                .await?;
        }
        self.settle(0..self.shard_count(), LeaderWant::IsNot(member))
            .await
    }

    /// Lets `member` lead shards again where the spread or a pin says so.
    ///
    /// # Errors
    /// A shard not changed.
    pub async fn undrain(&self, member: u64) -> NodeResult<()> {
        for shard in 0..self.shard_count() {
            self.change_placement(shard, PlacementChange::Unavoid(member))
                .await?;
        }
        Ok(())
    }

    /// `shard`'s placement, as this member's replica holds it.
    ///
    /// # Errors
    /// A stopped shard.
    pub async fn placement(&self, shard: usize) -> NodeResult<Placement> {
        self.check_shard(shard)?;
        self.call(shard, |reply| ShardCall::Placement { reply })
            .await
    }

    async fn change_placement(&self, shard: usize, change: PlacementChange) -> NodeResult<()> {
        self.write_at_leader(shard, Entry::Placement(change))
            .await
            .map(|_| ())
    }

    pub(crate) fn check_shard(&self, shard: usize) -> NodeResult<()> {
        if shard < self.shard_count() {
            Ok(())
        } else {
            Err(NodeError::InvalidRequest(format!(
                "shard {shard} of {}",
                self.shard_count()
            )))
        }
    }

    /// Waits until each of `shards`' leader, as this member sees it,
    /// is what `want` says; `false` when one was not after
    /// [`SETTLE_WITHIN`].
    async fn settle(
        &self,
        shards: impl Iterator<Item = usize>,
        want: LeaderWant,
    ) -> NodeResult<bool> {
        let until = Instant::now() + SETTLE_WITHIN;
        for shard in shards {
            let settled = self
                .call(shard, |reply| ShardCall::AwaitLeader { want, until, reply })
                .await?;
            if !settled {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// What a placement change waits for a shard's leader to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaderWant {
    /// This member leads.
    Is(u64),
    /// A member other than this one leads.
    IsNot(u64),
}

impl LeaderWant {
    /// Whether `leader` (0: none known) is what is wanted.
    pub(crate) fn met_by(self, leader: u64) -> bool {
        match self {
            LeaderWant::Is(member) => leader == member,
            LeaderWant::IsNot(member) => leader != 0 && leader != member,
        }
    }
}
