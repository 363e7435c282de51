//! A lease home's tasks, carried to its mirrors (docs/node.md, "Leases
//! across shards").
//!
//! A grant, revoke or expiry applies on the lease's home shard together
//! with a task row in the home's own state (`lease_tasks`): "every mirror
//! holds grant G" or "no mirror holds grant G or older". The task is as
//! durable as the entry that wrote it, and as replicated. The home's
//! leader carries its tasks to every other shard in rounds: one
//! [`Entry::LeaseMirror`] per mirror shard, then, once every mirror has
//! applied it, one [`Entry::LeaseTasksDone`] on the home that removes the
//! task rows it covered (if nothing newer replaced them). A round that
//! fails is tried again; after a restart or a leader change the new leader
//! finds the rows and carries them again. Mirrors apply tasks idempotently
//! and in grant-revision order, so a task carried twice, or late, does no
//! harm.
//!
//! Ordering: one round at a time per home shard, so the tasks of one lease
//! reach each mirror in the order the home wrote them. A writer (a client
//! grant or revoke) is answered once a round begun after its entry applied
//! has finished, so a put on any shard sees a granted lease, and no shard
//! holds the keys of a revoked one.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::mvcc::{Applied, Entry, KvError, LeaseId, LeaseTask, Store};
use crate::shard::error::{NodeError, NodeResult};
use crate::shard::replica::{Reply, ShardCall};
use crate::shard::router::{CoreCall, CoreRouter};

/// Most tasks carried in one round.
const ROUND_TASKS: usize = 512;
/// A failed round is tried again after this long.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A writer waiting for its lease's task to reach every mirror.
struct Waiting {
    /// When it started waiting (see [`LeaseTasks::started`]).
    seq: u64,
    reply: Reply<Applied>,
    result: Result<Applied, KvError>,
}

/// One home shard's side of its lease tasks: what is in flight and who
/// waits. Owned by the shard's replica, on its core.
pub(crate) struct LeaseTasks {
    shard: usize,
    shards: usize,
    /// Whether other members share the shards: a mirror whose replica
    /// here stopped is then not a stopped shard (the group goes on
    /// elsewhere), and a round that meets it fails and is tried again.
    replicated: bool,
    /// Tasks may have been written since the last scan.
    dirty: bool,
    /// The round in flight: its tasks, and the `seq` when it began.
    in_flight: Option<(Vec<LeaseTask>, u64)>,
    /// Tasks every mirror has done, whose `LeaseTasksDone` entry has not
    /// applied yet: a scan skips them.
    done: BTreeSet<LeaseTask>,
    /// Tasks every live mirror has done while another mirror had stopped
    /// (after an I/O failure; it refuses everything until the node
    /// restarts). They stay in the store, to be carried to it after a
    /// restart, but a scan skips them meanwhile, so that newer tasks are
    /// carried and their writers answered. Cleared with leadership.
    parked: BTreeSet<LeaseTask>,
    /// Writers by lease, in the order they came.
    waiting: BTreeMap<LeaseId, Vec<Waiting>>,
    /// Counts writers as they start waiting.
    seq: u64,
    /// After a failed round: not before then.
    retry_at: Option<Instant>,
}

impl LeaseTasks {
    pub(crate) fn new(shard: usize, shards: usize, replicated: bool) -> LeaseTasks {
        LeaseTasks {
            shard,
            shards,
            replicated,
            dirty: true,
            in_flight: None,
            done: BTreeSet::new(),
            parked: BTreeSet::new(),
            waiting: BTreeMap::new(),
            seq: 0,
            retry_at: None,
        }
    }

    /// Whether this shard has mirrors to tell at all.
    pub(crate) fn has_mirrors(&self) -> bool {
        self.shards > 1
    }

    /// A home lease entry applied: its task may have changed. A writer, if
    /// any, hears `result` once a round that began after now has finished.
    /// A writer whose entry applied after this replica lost leadership
    /// hears at once that its outcome is unknown: rounds run only on the
    /// leader, and the next one carries the task.
    pub(crate) fn changed(
        &mut self,
        id: LeaseId,
        writer: Option<Reply<Applied>>,
        result: Result<Applied, KvError>,
        leading: bool,
    ) {
        self.dirty = true;
        if !leading {
            if let Some(reply) = writer {
                let _ = reply.send(Err(NodeError::OutcomeUnknown { shard: self.shard }));
            }
            return;
        }
        if let Some(reply) = writer {
            self.seq += 1;
            self.waiting.entry(id).or_default().push(Waiting {
                seq: self.seq,
                reply,
                result,
            });
        }
    }

    /// A home lease entry without a writer (an expiry) applied: tasks may
    /// have changed.
    pub(crate) fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// A `LeaseTasksDone` entry applied: its tasks are gone from the store
    /// (or were replaced by newer ones, which a scan will find).
    pub(crate) fn done_applied(&mut self, tasks: &[LeaseTask]) {
        for task in tasks {
            self.done.remove(task);
        }
        self.dirty = true;
    }

    /// Leadership came or went: what is in flight is forgotten (its round
    /// reports to nobody that cares), and a new leader scans afresh. On
    /// losing it, the writers waiting hear `lost`: their entries applied,
    /// but whether every mirror has them is for the next leader to see to.
    pub(crate) fn leadership_changed(&mut self, leader: bool, lost: impl Fn() -> NodeError) {
        self.in_flight = None;
        self.done.clear();
        self.parked.clear();
        self.dirty = true;
        self.retry_at = None;
        if !leader {
            self.fail_waiting(|_| true, &lost);
        }
    }

    /// Starts the next round if one is due: none in flight, tasks written
    /// since the last scan or a retry due. The round runs as a task on this
    /// core and reports with [`ShardCall::LeaseRound`].
    ///
    /// # Errors
    /// A store failure reading the tasks (the shard must stop).
    pub(crate) fn start_round(
        &mut self,
        store: &Store,
        router: &Rc<CoreRouter>,
    ) -> Result<(), KvError> {
        if !self.has_mirrors() || self.in_flight.is_some() {
            return Ok(());
        }
        let retry_due = self.retry_at.is_some_and(|at| Instant::now() >= at);
        if !self.dirty && !retry_due {
            return Ok(());
        }
        self.dirty = false;
        self.retry_at = None;
        let mut tasks = Vec::new();
        let mut after = None;
        // Skips tasks whose done entry is on its way; scans on past them.
        loop {
            let page = store.lease_tasks(after, ROUND_TASKS)?;
            let full = page.len() == ROUND_TASKS;
            after = page.last().map(|t| t.id);
            tasks.extend(
                page.into_iter()
                    .filter(|t| !self.done.contains(t) && !self.parked.contains(t)),
            );
            if tasks.len() >= ROUND_TASKS || !full {
                break;
            }
        }
        tasks.truncate(ROUND_TASKS);
        if tasks.is_empty() {
            // Nothing to carry: every writer still waiting is done.
            self.answer_waiting(|_| true, u64::MAX, None);
            return Ok(());
        }
        if tasks.len() == ROUND_TASKS {
            // More may follow this round.
            self.dirty = true;
        }
        self.in_flight = Some((tasks.clone(), self.seq));
        let mirrors: Vec<usize> = (0..self.shards).filter(|s| *s != self.shard).collect();
        let (router, home, replicated) = (router.clone(), self.shard, self.replicated);
        glommio::spawn_local(async move {
            let outcome = carry(&router, &mirrors, &tasks, replicated).await;
            router.deliver_local(CoreCall {
                shard: home,
                call: ShardCall::LeaseRound { tasks, outcome },
            });
        })
        .detach();
        Ok(())
    }

    /// A round reported. On success, answers the writers it covers and
    /// returns the done entry to propose (none if a mirror had stopped:
    /// the tasks are parked); on failure they hear why, and the round is
    /// tried again later.
    pub(crate) fn round_finished(
        &mut self,
        tasks: Vec<LeaseTask>,
        outcome: NodeResult<Carried>,
    ) -> Option<Entry> {
        if self.in_flight.as_ref().is_none_or(|(t, _)| *t != tasks) {
            // A round from before a leadership change: ignored, and the
            // round in flight, if any, goes on.
            return None;
        }
        let (_, started) = self.in_flight.take()?;
        let ids: BTreeSet<LeaseId> = tasks.iter().map(|t| t.id).collect();
        match outcome {
            Ok(Carried::Everywhere) => {
                self.answer_waiting(|id| ids.contains(&id), started, None);
                self.done.extend(tasks.iter().copied());
                self.dirty = true;
                Some(Entry::LeaseTasksDone { tasks })
            }
            Ok(Carried::LiveMirrorsOnly) => {
                self.answer_waiting(|id| ids.contains(&id), started, None);
                self.parked.extend(tasks.iter().copied());
                self.dirty = true;
                None
            }
            Err(error) => {
                self.answer_waiting(|id| ids.contains(&id), started, Some(&error));
                self.retry_at = Some(Instant::now() + RETRY_AFTER);
                None
            }
        }
    }

    /// Answers writers of the leases `of` picks that started waiting before
    /// `before`: with their result, or with `error`.
    fn answer_waiting(
        &mut self,
        of: impl Fn(LeaseId) -> bool,
        before: u64,
        error: Option<&NodeError>,
    ) {
        let ids: Vec<LeaseId> = self.waiting.keys().copied().filter(|id| of(*id)).collect();
        for id in ids {
            let Some(list) = self.waiting.remove(&id) else {
                continue;
            };
            let (answered, kept): (Vec<Waiting>, Vec<Waiting>) =
                list.into_iter().partition(|w| w.seq <= before);
            for waiting in answered {
                let answer = match error {
                    Some(e) => Err(copy_error(e)),
                    None => waiting.result.map_err(NodeError::from),
                };
                let _ = waiting.reply.send(answer);
            }
            if !kept.is_empty() {
                self.waiting.insert(id, kept);
            }
        }
    }

    /// Answers every writer `of` picks with the error `make` gives.
    pub(crate) fn fail_waiting(
        &mut self,
        of: impl Fn(LeaseId) -> bool,
        make: &impl Fn() -> NodeError,
    ) {
        let ids: Vec<LeaseId> = self.waiting.keys().copied().filter(|id| of(*id)).collect();
        for id in ids {
            for waiting in self.waiting.remove(&id).unwrap_or_default() {
                let _ = waiting.reply.send(Err(make()));
            }
        }
    }
}

/// Where a round's tasks reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Carried {
    /// Every mirror applied them.
    Everywhere,
    /// Every mirror but stopped ones applied them.
    LiveMirrorsOnly,
}

/// Carries `tasks` to every mirror shard, one entry each, all sent before
/// any answer is awaited; answers the first failure. On one member a
/// stopped mirror is not a failure: it refuses every request, so no key
/// can be written on it under a lease it does not know yet. In a cluster
/// only this member's replica stopped; the group goes on elsewhere, so it
/// is a failure (tried again a second later).
async fn carry(
    router: &CoreRouter,
    mirrors: &[usize],
    tasks: &[LeaseTask],
    replicated: bool,
) -> NodeResult<Carried> {
    let mut answers = Vec::with_capacity(mirrors.len());
    for &shard in mirrors {
        let (reply, answer) = futures_channel::oneshot::channel();
        let entry = Entry::LeaseMirror {
            tasks: tasks.to_vec(),
        };
        // A mirror led from another member is written there.
        let part = crate::shard::remote::Part::new(shard, entry, reply);
        router
            .route(CoreCall {
                shard,
                call: ShardCall::WriteAtLeader(Box::new(part)),
            })
            .await;
        answers.push(answer);
    }
    let mut failure = None;
    let mut carried = Carried::Everywhere;
    for answer in answers {
        let outcome = answer
            .await
            .map_err(|_| NodeError::Shutdown)
            .and_then(|a| a);
        match outcome {
            Ok(_) => {}
            Err(NodeError::ShardStopped { .. }) if !replicated => {
                carried = Carried::LiveMirrorsOnly
            }
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    failure.map_or(Ok(carried), Err)
}

/// A copy of an error for each writer a failed round answers, saying
/// what it was about when it is not one of the kinds kept. The writer's
/// own entry applied, so a refusal that would say "not proposed, send it
/// again" (`NotLeader`, `NoLeader`: a mirror found no leader) is told as
/// an outcome unknown to the writer: sent again, a grant would make a
/// second lease.
fn copy_error(error: &NodeError) -> NodeError {
    match error.copy() {
        NodeError::NotLeader { shard, .. } | NodeError::NoLeader { shard } => {
            NodeError::OutcomeUnknown { shard }
        }
        NodeError::InvalidRequest(message) if !matches!(error, NodeError::InvalidRequest(_)) => {
            NodeError::InvalidRequest(format!("a lease's mirrors were not updated: {message}"))
        }
        copied => copied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_whose_entry_applied_after_leadership_went_is_answered_at_once() {
        let mut tasks = LeaseTasks::new(1, 3, true);
        let (writer, mut answer) = futures_channel::oneshot::channel();
        let applied = Applied {
            revision: 5,
            response: crate::mvcc::Response::LeaseRevoke,
        };
        tasks.changed(7, Some(writer), Ok(applied), false);
        assert!(matches!(
            answer.try_recv(),
            Ok(Some(Err(NodeError::OutcomeUnknown { shard: 1 })))
        ));
    }

    #[test]
    fn a_writer_whose_entry_applied_never_hears_send_it_again() {
        for refusal in [
            NodeError::NotLeader {
                shard: 2,
                leader: 9,
            },
            NodeError::NoLeader { shard: 2 },
        ] {
            assert!(matches!(
                copy_error(&refusal),
                NodeError::OutcomeUnknown { shard: 2 }
            ));
        }
        assert!(matches!(
            copy_error(&NodeError::Shutdown),
            NodeError::Shutdown
        ));
    }
}
