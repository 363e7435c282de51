//! The next Raft configuration change that brings a shard's group closer
//! to the member list (docs/membership.md, "Every shard follows the
//! list"). Each shard's leader asks this after every applied change and
//! on a timer, and proposes what it says, one change at a time: so a
//! change to the list reaches every shard, and a leader that fails
//! mid-way only delays it (the next leader asks again from what its
//! shard has).
//!
//! Invariants:
//! - A joint configuration is always left first, whoever entered it.
//! - A member new to a shard joins it as a learner; it votes only once it
//!   has caught up (a voter that has not would stall every write whose
//!   quorum needs it).
//! - Every change of the voters goes through a joint configuration that is
//!   left explicitly: the leaving is the reconciler's, never left to a
//!   leader that may step down before it happens.
//! - A leader never removes itself: it hands its leadership over first.

use raft::eraftpb::ConfState;
use raft::eraftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2};

use crate::shard::cluster::Cluster;

/// What a shard's leader should do about its configuration.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ConfStep {
    /// Its configuration is the list's: nothing.
    Settled,
    /// Propose this change.
    Propose(ConfChangeV2),
    /// The change needs this leader gone: hand leadership over first.
    HandOver,
    /// The next change waits for a learner to catch up.
    Wait,
}

/// The next step for a shard with configuration `conf`, led by `leader`,
/// towards `cluster`'s list; `caught_up(id)` says whether a learner has
/// caught up enough to vote.
pub(crate) fn next_step(
    conf: &ConfState,
    cluster: &Cluster,
    leader: u64,
    caught_up: impl Fn(u64) -> bool,
) -> ConfStep {
    if !conf.voters_outgoing.is_empty() {
        // A leader that is only an outgoing voter would go on leading a
        // group it is not in once the joint configuration is left: it
        // hands over first, and the next leader leaves.
        if !conf.voters.contains(&leader) {
            return ConfStep::HandOver;
        }
        // An empty change leaves the joint configuration.
        return ConfStep::Propose(ConfChangeV2::default());
    }
    let is_voter = |id: u64| conf.voters.contains(&id);
    let is_learner = |id: u64| conf.learners.contains(&id);
    // New to the shard: a learner first, whatever the list says.
    if let Some(new) = cluster
        .members
        .iter()
        .find(|m| !is_voter(m.id) && !is_learner(m.id))
    {
        return ConfStep::Propose(simple(ConfChangeType::AddLearnerNode, new.id));
    }
    let listed = |id: u64| cluster.member(id).is_some();
    if let Some(gone) = conf.learners.iter().find(|id| !listed(**id)) {
        return ConfStep::Propose(simple(ConfChangeType::RemoveNode, *gone));
    }
    if let Some(gone) = conf.voters.iter().find(|id| !listed(**id)) {
        if *gone == leader {
            return ConfStep::HandOver;
        }
        return ConfStep::Propose(joint(ConfChangeType::RemoveNode, *gone));
    }
    if let Some(promoted) = cluster
        .members
        .iter()
        .find(|m| !m.learner && is_learner(m.id))
    {
        if !caught_up(promoted.id) {
            return ConfStep::Wait;
        }
        return ConfStep::Propose(joint(ConfChangeType::AddNode, promoted.id));
    }
    ConfStep::Settled
}

/// Whether `conf` is the list's configuration, and not joint.
pub(crate) fn is_settled(conf: &ConfState, cluster: &Cluster) -> bool {
    let sorted = |ids: &[u64]| {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids
    };
    conf.voters_outgoing.is_empty()
        && sorted(&conf.voters) == sorted(&cluster.voters())
        && sorted(&conf.learners) == sorted(&cluster.learners())
}

fn single(change_type: ConfChangeType, node_id: u64) -> ConfChangeSingle {
    let mut single = ConfChangeSingle::default();
    single.set_change_type(change_type);
    single.node_id = node_id;
    single
}

/// A change raft-rs makes without a joint configuration (learners only).
fn simple(change_type: ConfChangeType, node_id: u64) -> ConfChangeV2 {
    let mut change = ConfChangeV2::default();
    change.set_transition(ConfChangeTransition::Auto);
    change.mut_changes().push(single(change_type, node_id));
    change
}

/// A change of the voters: through a joint configuration, left by an
/// explicit empty change.
fn joint(change_type: ConfChangeType, node_id: u64) -> ConfChangeV2 {
    let mut change = ConfChangeV2::default();
    change.set_transition(ConfChangeTransition::Explicit);
    change.mut_changes().push(single(change_type, node_id));
    change
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::cluster::Member;

    fn cluster(members: &[(u64, bool)]) -> Cluster {
        Cluster {
            id: 9,
            me: members[0].0,
            members: members
                .iter()
                .map(|(id, learner)| Member {
                    id: *id,
                    name: format!("m{id}"),
                    peer_address: String::new(),
                    learner: *learner,
                })
                .collect(),
            removed: Vec::new(),
            revision: 1,
        }
    }

    fn conf(voters: &[u64], learners: &[u64], outgoing: &[u64]) -> ConfState {
        ConfState {
            voters: voters.to_vec(),
            learners: learners.to_vec(),
            voters_outgoing: outgoing.to_vec(),
            ..ConfState::default()
        }
    }

    fn proposed(step: ConfStep) -> (ConfChangeTransition, Vec<(ConfChangeType, u64)>) {
        let ConfStep::Propose(change) = step else {
            panic!("expected a proposal, got {step:?}");
        };
        let changes = change
            .changes
            .iter()
            .map(|c| (c.get_change_type(), c.node_id))
            .collect();
        (change.get_transition(), changes)
    }

    #[test]
    fn a_joint_configuration_is_left_before_anything_else() {
        let list = cluster(&[(1, false), (2, false), (3, false), (4, true)]);
        let (_, changes) = proposed(next_step(&conf(&[1, 2, 3], &[], &[1, 2]), &list, 1, |_| {
            true
        }));
        assert!(changes.is_empty(), "an empty change leaves: {changes:?}");
        // A leader leaving the group hands over before the joint
        // configuration is left.
        assert_eq!(
            next_step(&conf(&[1, 2], &[], &[1, 2, 3]), &list, 3, |_| true),
            ConfStep::HandOver
        );
    }

    #[test]
    fn a_new_member_joins_as_a_learner_and_votes_once_caught_up() {
        // Listed as a voter (added with --learner=false): a learner first.
        let list = cluster(&[(1, false), (2, false), (3, false), (4, false)]);
        let (transition, changes) =
            proposed(next_step(&conf(&[1, 2, 3], &[], &[]), &list, 1, |_| true));
        assert_eq!(transition, ConfChangeTransition::Auto);
        assert_eq!(changes, vec![(ConfChangeType::AddLearnerNode, 4)]);
        let now = conf(&[1, 2, 3], &[4], &[]);
        assert_eq!(next_step(&now, &list, 1, |_| false), ConfStep::Wait);
        let (transition, changes) = proposed(next_step(&now, &list, 1, |_| true));
        assert_eq!(transition, ConfChangeTransition::Explicit);
        assert_eq!(changes, vec![(ConfChangeType::AddNode, 4)]);
        assert!(!is_settled(&now, &list));
        assert!(is_settled(&conf(&[4, 1, 2, 3], &[], &[]), &list));
        assert!(!is_settled(&conf(&[1, 2, 3, 4], &[], &[1, 2, 3]), &list));
    }

    #[test]
    fn removed_members_leave_and_a_leader_hands_over_before_it_goes() {
        let list = cluster(&[(1, false), (2, false)]);
        let (transition, changes) =
            proposed(next_step(&conf(&[1, 2, 3], &[], &[]), &list, 1, |_| true));
        assert_eq!(transition, ConfChangeTransition::Explicit);
        assert_eq!(changes, vec![(ConfChangeType::RemoveNode, 3)]);
        assert_eq!(
            next_step(&conf(&[1, 2, 3], &[], &[]), &list, 3, |_| true),
            ConfStep::HandOver
        );
        let (transition, changes) =
            proposed(next_step(&conf(&[1, 2], &[5], &[]), &list, 1, |_| true));
        assert_eq!(transition, ConfChangeTransition::Auto);
        assert_eq!(changes, vec![(ConfChangeType::RemoveNode, 5)]);
        assert_eq!(
            next_step(&conf(&[2, 1], &[], &[]), &list, 1, |_| true),
            ConfStep::Settled
        );
    }
}
