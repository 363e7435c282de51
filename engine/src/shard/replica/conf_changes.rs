//! A replica's part in membership changes (docs/membership.md): applying
//! configuration changes so that a replay never applies one twice, the
//! leader's reconciler that brings the shard's group to the member list,
//! and shard 0's adoption of the list it applies.

use raft::eraftpb::{ConfChangeV2, ConfState, EntryType};

use super::{Replica, Reply};
use crate::mvcc::ConfIds;
use crate::shard::conf_plan::{self, ConfStep};
use crate::shard::error::{NodeError, NodeResult};

/// Ticks between two looks of a leader at its configuration.
const RECONCILE_TICKS: u64 = 4;
/// Ticks a proposed change may take to apply before the reconciler
/// proposes again (raft-rs drops a proposal it cannot take, silently).
const RECONCILE_RETRY_TICKS: u64 = 40;
/// A learner votes once it holds this share of the leader's log (etcd's
/// `readyPercentThreshold`).
const CAUGHT_UP_PERCENT: u64 = 90;

/// raft-rs's configuration, from its ids as the tree holds them.
pub(crate) fn conf_from_ids(ids: ConfIds) -> ConfState {
    ConfState {
        voters: ids.voters,
        learners: ids.learners,
        voters_outgoing: ids.voters_outgoing,
        learners_next: ids.learners_next,
        auto_leave: ids.auto_leave,
        ..ConfState::default()
    }
}

fn ids_from_conf(conf: &ConfState, list_revision: u64) -> ConfIds {
    ConfIds {
        voters: conf.voters.clone(),
        learners: conf.learners.clone(),
        voters_outgoing: conf.voters_outgoing.clone(),
        learners_next: conf.learners_next.clone(),
        auto_leave: conf.auto_leave,
        list_revision,
    }
}

/// The list revision a change was made for, from its context (8 bytes,
/// little-endian; 0 for none).
fn list_revision_of(change: &ConfChangeV2) -> u64 {
    <[u8; 8]>::try_from(&change.context[..]).map_or(0, u64::from_le_bytes)
}

/// Whether a learner whose log matches the leader's up to `matched` has
/// caught up with a leader whose log ends at `last`.
pub(crate) fn caught_up(matched: u64, last: u64) -> bool {
    matched.saturating_mul(100) >= last.saturating_mul(CAUGHT_UP_PERCENT)
}

impl Replica {
    /// Applies the configuration change `entry`: raft-rs takes it, and the
    /// tree records the configuration it left with the entry's index, so
    /// that a replay from the tree never meets it again. A change raft-rs
    /// refuses (every replica refuses it alike) changes nothing.
    pub(super) fn apply_conf_entry(&mut self, entry: &raft::eraftpb::Entry) -> Result<(), String> {
        use protobuf::Message as _;
        let change = match entry.entry_type {
            EntryType::EntryConfChangeV2 => {
                ConfChangeV2::parse_from_bytes(&entry.data).map_err(|e| e.to_string())
            }
            // keel proposes only version 2 changes.
            EntryType::EntryConfChange | EntryType::EntryNormal => {
                Err("not a version 2 configuration change".to_string())
            }
        };
        let made_for = change.as_ref().map_or(0, list_revision_of);
        let conf = match change.map(|change| self.raw.apply_conf_change(&change)) {
            Ok(Ok(conf)) => {
                tracing::info!(
                    shard = self.shard,
                    index = entry.index,
                    voters = ?conf.voters,
                    learners = ?conf.learners,
                    outgoing = ?conf.voters_outgoing,
                    "configuration changed"
                );
                conf
            }
            Ok(Err(e)) => {
                // Every replica refuses it alike; counted, since a change
                // keel proposes is never one raft-rs refuses.
                self.conf_refusals += 1;
                tracing::error!(
                    shard = self.shard,
                    index = entry.index,
                    "configuration change refused: {e}"
                );
                self.raw.raft.prs().conf().to_conf_state()
            }
            Err(e) => {
                tracing::warn!(
                    shard = self.shard,
                    index = entry.index,
                    "configuration change skipped: {e}"
                );
                self.raw.raft.prs().conf().to_conf_state()
            }
        };
        self.conf_list_revision = self.conf_list_revision.max(made_for);
        self.store
            .record_conf(entry.index, &ids_from_conf(&conf, self.conf_list_revision))
            .map_err(|e| e.to_string())?;
        self.raw.mut_store().set_conf_state(conf.clone());
        self.publish_conf(&conf);
        self.confs.push_back((entry.index, conf));
        // Proposed here or not, a write that had this slot lost it.
        let _ = self.take_writer(entry.index, entry.term);
        self.applied = entry.index;
        self.marks
            .published(self.shard, std::mem::take(&mut self.settled));
        self.conf_proposed_at = None;
        self.applied_through(entry.index, 1, entry.data.len() as u64);
        Ok(())
    }

    /// Tells the node which members this shard's configuration has, so
    /// that their frames are heard while they are in it.
    pub(super) fn publish_conf(&self, conf: &ConfState) {
        let ids = conf
            .voters
            .iter()
            .chain(&conf.learners)
            .chain(&conf.voters_outgoing)
            .copied()
            .collect();
        self.view.set_configured(self.shard, ids);
    }

    /// The configuration as of `index`, at or past the tree's durable
    /// index (a snapshot's): the last change applied at or below it.
    /// Changes before that one are forgotten (snapshots only move on).
    pub(super) fn conf_at(&mut self, index: u64) -> ConfState {
        while self.confs.len() > 1 && self.confs.get(1).is_some_and(|(at, _)| *at <= index) {
            self.confs.pop_front();
        }
        self.confs.front().map_or_else(
            || self.raw.store().conf_state().clone(),
            |(_, conf)| conf.clone(),
        )
    }

    /// A snapshot installed: the configuration is the snapshot's.
    pub(super) fn conf_installed(&mut self, index: u64, conf: ConfState) {
        if let Ok(Some(ids)) = self.store.conf_ids() {
            self.conf_list_revision = ids.list_revision;
        }
        self.raw.mut_store().set_conf_state(conf.clone());
        self.publish_conf(&conf);
        self.confs.clear();
        self.confs.push_back((index, conf));
        if self.shard == 0 {
            self.members_applied();
            self.auth_applied();
        }
    }

    /// On shard 0, after the member list changed in the tree (an applied
    /// change, a snapshot): the node follows the new list.
    pub(super) fn members_applied(&mut self) {
        if self.shard != 0 {
            return;
        }
        let list = match self.store.members() {
            Ok(list) if list.revision > 0 => list,
            Ok(_) => return,
            Err(e) => {
                tracing::error!(shard = self.shard, "the member list cannot be read: {e}");
                return;
            }
        };
        match self.view.adopt(&list) {
            Ok(true) => tracing::info!(
                revision = list.revision,
                members = list.members.len(),
                "member list changed"
            ),
            Ok(false) => {}
            // The list is the cluster's, applied, and followed; only this
            // node's copy for its next start failed. It is saved again on
            // the next tick; a restart before that replays shard 0 to it.
            Err(e) => tracing::error!("the member list could not be saved: {e}"),
        }
    }

    /// On shard 0, after the auth record may have changed in the tree (an
    /// applied change, a snapshot, a replay): the node follows it.
    pub(super) fn auth_applied(&mut self) {
        if self.shard != 0 {
            return;
        }
        match self.store.auth() {
            Ok(record) => {
                let revision = record.revision;
                if self.view.auth().adopt(record) {
                    tracing::info!(revision, "auth record changed");
                }
            }
            Err(e) => tracing::error!(shard = self.shard, "the auth record cannot be read: {e}"),
        }
    }

    /// On shard 0's tick: saves the member list again if its last save
    /// failed.
    pub(super) fn save_members_again(&self) {
        if self.shard == 0 {
            if let Err(e) = self.view.save_again() {
                tracing::error!("the member list could not be saved: {e}");
            }
        }
    }

    /// On a leader's tick: the next configuration change towards the
    /// member list, one at a time (docs/membership.md).
    pub(super) fn reconcile_conf(&mut self) {
        if !self.replicated
            || !self.is_leader()
            || self.failure.is_some()
            || !self.ticks.is_multiple_of(RECONCILE_TICKS)
            || self.applied < self.replayed_up_to
            || self.raw.raft.has_pending_conf()
            || self
                .conf_proposed_at
                .is_some_and(|at| self.ticks - at < RECONCILE_RETRY_TICKS)
        {
            return;
        }
        let cluster = self.view.load();
        let conf = self.raw.raft.prs().conf().to_conf_state();
        let last = self.raw.raft.raft_log.last_index();
        let me = self.raw.raft.id;
        let step = {
            let prs = self.raw.raft.prs();
            conf_plan::next_step(&conf, &cluster, me, |id| {
                prs.get(id)
                    .is_some_and(|p| p.recent_active && caught_up(p.matched, last))
            })
        };
        // A leader whose member has not applied (on its shard 0) the list
        // the shard was last changed for would undo that change by its own
        // list: it waits to catch up. Leaving a joint configuration and
        // handing leadership over need no list, and never wait.
        let behind = cluster.revision < self.conf_list_revision;
        match step {
            ConfStep::Settled | ConfStep::Wait => {}
            ConfStep::Propose(change) if behind && !change.changes.is_empty() => {}
            ConfStep::Propose(mut change) => {
                tracing::info!(shard = self.shard, change = ?change, "proposing a configuration change");
                self.conf_proposed_at = Some(self.ticks);
                // The list it was made for travels in the change itself
                // (the entry's data), where every replica reads it back.
                change.set_context(cluster.revision.to_le_bytes().to_vec().into());
                if let Err(e) = self.raw.propose_conf_change(Vec::new(), change) {
                    tracing::warn!(shard = self.shard, "configuration change not proposed: {e}");
                }
            }
            ConfStep::HandOver => self.hand_over_before_leaving(&cluster),
        }
    }

    /// This leader is to leave the group: leadership goes first to the
    /// live listed voter with the most of the log.
    fn hand_over_before_leaving(&mut self, cluster: &crate::shard::cluster::Cluster) {
        if self.raw.raft.lead_transferee.is_some() {
            return;
        }
        let me = self.raw.raft.id;
        // In a joint configuration, only an incoming voter stays.
        let voters = self.raw.raft.prs().conf().to_conf_state().voters;
        let target = self
            .raw
            .raft
            .prs()
            .iter()
            .filter(|(id, p)| {
                **id != me
                    && p.recent_active
                    && voters.contains(id)
                    && cluster.member(**id).is_some_and(|m| !m.learner)
            })
            .max_by_key(|(_, p)| p.matched)
            .map(|(id, _)| *id);
        if let Some(target) = target {
            tracing::info!(
                shard = self.shard,
                to = target,
                "leadership handed over before leaving"
            );
            self.conf_proposed_at = Some(self.ticks);
            self.transferred_at = Some(self.ticks);
            self.raw.transfer_leader(target);
        }
    }

    /// How much of this leader's log learner `member` holds, in percent
    /// (0 for one not heard from lately).
    pub(super) fn progress_here(&self, member: u64) -> NodeResult<u64> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let Some(progress) = self.raw.raft.prs().get(member) else {
            return Err(NodeError::InvalidRequest(format!(
                "member {member:x} is not in shard {}'s group yet",
                self.shard
            )));
        };
        let last = self.raw.raft.raft_log.last_index().max(1);
        if !progress.recent_active {
            return Ok(0);
        }
        Ok((progress.matched.min(last) * 100) / last)
    }

    /// Answers how much of the shard's log learner `member` holds, asking
    /// the leader wherever it is.
    pub(super) fn learner_progress(&mut self, member: u64, reply: Reply<u64>) {
        if self.is_leader() {
            let _ = reply.send(self.progress_here(member));
            return;
        }
        match self.leader_elsewhere() {
            Some((leader, transport)) => crate::shard::remote::progress_at_leader(
                self.router.clone(),
                transport,
                leader,
                self.shard,
                member,
                reply,
            ),
            None => {
                let _ = reply.send(Err(self.no_leader()));
            }
        }
    }
}
