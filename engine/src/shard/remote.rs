//! Writes carried to their shard's leader on another member
//! (docs/cluster.md, "Writes that span shards").
//!
//! A write that fans out over shards (a range delete or a compaction
//! across shards, a lease's mirror entries) is made by the member that
//! took it, shard by shard. Each part must be proposed by its shard's
//! leader, which may be another member: the part's replica here sends it
//! there as a call over the peer transport, and the leader answers once
//! it applied.
//!
//! Invariants:
//! - A part is sent again only when it surely did not take effect: the
//!   leader refused it (`NotLeader`, `NoLeader`: not proposed), or the
//!   transport dropped it before writing it. A part sent whose answer
//!   does not come in [`ANSWER_WAIT`] is `OutcomeUnknown`, never resent.
//! - An answer is taken only from the member the call went to, under the
//!   id it went with; ids start at a random point per core and process, so
//!   an answer meant for an earlier incarnation of this member is not
//!   taken for a new call.
//! - Calls are made and answered on the core that owns the shard (core
//!   `c` talks to core `c`), so the table of waiting calls is per core.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;

use crate::mvcc::{Applied, Entry, RangeRequest, RangeResponse, Revision};
use crate::shard::error::{NodeError, NodeResult};
use crate::shard::remote_codec::{self, Request};
use crate::shard::replica::{Reply, ShardCall};
use crate::shard::router::{CoreCall, CoreRouter};
use crate::shard::transport::{CallPart, Transport};

/// How long a sent part waits for its leader's answer before its outcome
/// is unknown. Longer than a write takes under load (a lease grant waits
/// for its mirrors too), shorter than a client's request timeout.
pub(crate) const ANSWER_WAIT: Duration = Duration::from_secs(4);
/// How long a part looks for a leader that takes it (an election, a
/// member that is unreachable) before it is refused with `NoLeader`.
pub(crate) const FIND_LEADER_FOR: Duration = Duration::from_secs(4);
/// How long a close waits for its leader's answer before it is asked
/// again: a read may be asked again whatever became of the last ask, so
/// a lost answer costs little.
const CLOSE_ANSWER_WAIT: Duration = Duration::from_secs(1);
/// The pause before a part that was not taken is tried again.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// What became of a sent request.
pub(crate) enum Delivery {
    /// The leader's answer, as it encoded it.
    Answer(Vec<u8>),
    /// The transport dropped it before writing it.
    NotSent,
}

/// The calls this core sent and still waits for, by id.
pub(crate) struct RemoteCalls {
    next_id: Cell<u64>,
    waiting: RefCell<HashMap<u64, (u64, oneshot::Sender<Delivery>)>>,
}

impl RemoteCalls {
    pub(crate) fn new(core: usize) -> RemoteCalls {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        RemoteCalls {
            next_id: Cell::new(nanos.rotate_left(17) ^ core as u64),
            waiting: RefCell::default(),
        }
    }

    /// A new call to member `to`: its id and where its delivery arrives.
    fn open(&self, to: u64) -> (u64, oneshot::Receiver<Delivery>) {
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        let (sender, receiver) = oneshot::channel();
        self.waiting.borrow_mut().insert(id, (to, sender));
        (id, receiver)
    }

    fn forget(&self, id: u64) {
        self.waiting.borrow_mut().remove(&id);
    }

    /// Member `from` answered call `id`.
    pub(crate) fn answered(&self, from: u64, id: u64, bytes: Vec<u8>) {
        let mut waiting = self.waiting.borrow_mut();
        if waiting.get(&id).is_some_and(|(to, _)| *to == from) {
            if let Some((_, sender)) = waiting.remove(&id) {
                let _ = sender.send(Delivery::Answer(bytes));
            }
        }
    }

    /// Call `id` was dropped before it was written.
    pub(crate) fn not_sent(&self, id: u64) {
        if let Some((_, sender)) = self.waiting.borrow_mut().remove(&id) {
            let _ = sender.send(Delivery::NotSent);
        }
    }
}

/// A part on its way to its shard's leader.
pub(crate) struct Part {
    pub(crate) shard: usize,
    pub(crate) entry: Entry,
    pub(crate) reply: Reply<Applied>,
    /// When to stop looking for a leader.
    pub(crate) give_up_at: Instant,
}

impl Part {
    pub(crate) fn new(shard: usize, entry: Entry, reply: Reply<Applied>) -> Part {
        Part {
            shard,
            entry,
            reply,
            give_up_at: Instant::now() + FIND_LEADER_FOR,
        }
    }

    fn into_call(self) -> CoreCall {
        CoreCall {
            shard: self.shard,
            call: ShardCall::WriteAtLeader(Box::new(self)),
        }
    }
}

/// Hands `part` back to its replica after a pause, to be proposed there
/// or sent to the leader it then knows; refused with `NoLeader` once it
/// has looked long enough.
pub(crate) fn retry_later(router: Rc<CoreRouter>, part: Part) {
    if Instant::now() >= part.give_up_at {
        let _ = part
            .reply
            .send(Err(NodeError::NoLeader { shard: part.shard }));
        return;
    }
    deliver_later(router, part.into_call());
}

/// Hands `call` to its shard's replica on this core after [`RETRY_PAUSE`].
fn deliver_later(router: Rc<CoreRouter>, call: CoreCall) {
    glommio::spawn_local(async move {
        glommio::timer::sleep(RETRY_PAUSE).await;
        router.deliver_local(call);
    })
    .detach();
}

/// Answers `part` with what its own replica, leading, made of it; a
/// refusal before it was proposed (`NotLeader`, `NoLeader`) sends it to
/// look for the leader again.
pub(crate) fn retry_if_refused(
    router: Rc<CoreRouter>,
    part: Part,
    answer: oneshot::Receiver<NodeResult<Applied>>,
) {
    glommio::spawn_local(async move {
        match answer.await.unwrap_or(Err(NodeError::Shutdown)) {
            Err(NodeError::NotLeader { .. } | NodeError::NoLeader { .. }) => {
                retry_later(router, part)
            }
            answer => drop(part.reply.send(answer)),
        }
    })
    .detach();
}

/// Sends `part` to member `leader` and answers it with the leader's
/// answer; runs on the shard's core.
pub(crate) fn send_to_leader(
    router: Rc<CoreRouter>,
    transport: Rc<dyn Transport>,
    leader: u64,
    part: Part,
) {
    let (id, delivery) = router.remote_calls().open(leader);
    let bytes = remote_codec::encode_request(&Request::Write(part.entry.clone()));
    if !transport.send_call(leader, part.shard, CallPart::Request, id, bytes) {
        router.remote_calls().forget(id);
        return retry_later(router, part);
    }
    glommio::spawn_local(async move {
        let delivery = futures_lite::future::or(async { delivery.await.ok() }, async {
            glommio::timer::sleep(ANSWER_WAIT).await;
            None
        })
        .await;
        let shard = part.shard;
        let answer = match delivery {
            Some(Delivery::NotSent) => return retry_later(router, part),
            Some(Delivery::Answer(bytes)) => remote_codec::decode_answer(&bytes),
            None => {
                router.remote_calls().forget(id);
                let _ = part.reply.send(Err(NodeError::OutcomeUnknown { shard }));
                return;
            }
        };
        match answer {
            // Not proposed there: it did not take effect.
            Ok(Err(NodeError::NotLeader { .. } | NodeError::NoLeader { .. })) => {
                retry_later(router, part)
            }
            Ok(answer) => drop(part.reply.send(answer)),
            Err(error) => {
                // A leader of another version, or damage past the frame's
                // checksum: what it did cannot be told.
                tracing::warn!(shard, leader, %error, "a leader's answer does not decode");
                let _ = part.reply.send(Err(NodeError::OutcomeUnknown { shard }));
            }
        }
    })
    .detach();
}

/// Sends member `from` the answer to its call `id` once the replica's
/// `answer` to the write it proposed (or refused) comes.
pub(crate) fn answer_when_applied(
    transport: Rc<dyn Transport>,
    shard: usize,
    from: u64,
    id: u64,
    answer: oneshot::Receiver<NodeResult<Applied>>,
) {
    glommio::spawn_local(async move {
        let answer = answer.await.unwrap_or(Err(NodeError::Shutdown));
        let bytes = remote_codec::encode_answer(&answer);
        // Dropped when it cannot be queued: the caller's wait ends with
        // the outcome unknown, which is the truth for it.
        let _ = transport.send_call(from, shard, CallPart::Answer, id, bytes);
    })
    .detach();
}

/// Sends member `from` the answer to its close (or progress request) `id`.
pub(crate) fn answer_close(
    transport: &dyn Transport,
    shard: usize,
    from: u64,
    id: u64,
    answer: &NodeResult<u64>,
) {
    let bytes = remote_codec::encode_index_answer(answer);
    let _ = transport.send_call(from, shard, CallPart::Answer, id, bytes);
}

/// A shard's part of a read across shards at one revision.
pub(crate) struct ReadPart {
    pub(crate) shard: usize,
    pub(crate) request: RangeRequest,
    pub(crate) revision: Revision,
    pub(crate) reply: Reply<RangeResponse>,
    /// When to stop looking for a leader.
    pub(crate) give_up_at: Instant,
}

impl ReadPart {
    pub(crate) fn new(
        shard: usize,
        request: RangeRequest,
        revision: Revision,
        reply: Reply<RangeResponse>,
    ) -> ReadPart {
        ReadPart {
            shard,
            request,
            revision,
            reply,
            give_up_at: Instant::now() + FIND_LEADER_FOR,
        }
    }
}

/// Hands `part` back to its replica after a pause; refused with `NoLeader`
/// once it has looked long enough. A read may be asked again whatever
/// became of the last ask.
pub(crate) fn read_retry_later(router: Rc<CoreRouter>, part: ReadPart) {
    if Instant::now() >= part.give_up_at {
        let _ = part
            .reply
            .send(Err(NodeError::NoLeader { shard: part.shard }));
        return;
    }
    let shard = part.shard;
    let call = ShardCall::RangeAt(Box::new(part));
    deliver_later(router, CoreCall { shard, call });
}

/// Asks member `leader` to close `revision` of `shard` and waits for its
/// answer: the index to wait for, its refusal, or `None` when the ask was
/// not sent, lost, late or unreadable (a close may be asked again).
async fn ask_close(
    router: &CoreRouter,
    transport: &dyn Transport,
    leader: u64,
    shard: usize,
    revision: Revision,
) -> Option<NodeResult<u64>> {
    ask_number(router, transport, leader, shard, &Request::Close(revision)).await
}

/// Asks member `leader` how much of `shard`'s log the learner `member`
/// holds (percent) and hands `reply` the answer; a lost or late answer is
/// `NoLeader`, which the caller may ask again.
pub(crate) fn progress_at_leader(
    router: Rc<CoreRouter>,
    transport: Rc<dyn Transport>,
    leader: u64,
    shard: usize,
    member: u64,
    reply: Reply<u64>,
) {
    glommio::spawn_local(async move {
        let request = Request::Progress(member);
        let answer = ask_number(&router, &*transport, leader, shard, &request).await;
        let _ = reply.send(answer.unwrap_or(Err(NodeError::NoLeader { shard })));
    })
    .detach();
}

/// Sends `request` to member `leader` and waits for its numeric answer, or
/// `None` when it was not sent, lost, late or unreadable.
async fn ask_number(
    router: &CoreRouter,
    transport: &dyn Transport,
    leader: u64,
    shard: usize,
    request: &Request,
) -> Option<NodeResult<u64>> {
    ask_number_within(router, transport, leader, shard, request, CLOSE_ANSWER_WAIT).await
}

/// [`ask_number`], waiting up to `wait` for the answer.
pub(crate) async fn ask_number_within(
    router: &CoreRouter,
    transport: &dyn Transport,
    leader: u64,
    shard: usize,
    request: &Request,
    wait: Duration,
) -> Option<NodeResult<u64>> {
    let (id, delivery) = router.remote_calls().open(leader);
    let bytes = remote_codec::encode_request(request);
    if !transport.send_call(leader, shard, CallPart::Request, id, bytes) {
        router.remote_calls().forget(id);
        return None;
    }
    let delivery = futures_lite::future::or(async { delivery.await.ok() }, async {
        glommio::timer::sleep(wait).await;
        None
    })
    .await;
    match delivery {
        Some(Delivery::Answer(bytes)) => remote_codec::decode_index_answer(&bytes).ok(),
        Some(Delivery::NotSent) => None,
        None => {
            router.remote_calls().forget(id);
            None
        }
    }
}

/// Asks member `leader` to close `part`'s revision on its shard; once it
/// answers the index to wait for, hands `part` back to its replica to be
/// read there once applied that far.
pub(crate) fn close_at_leader(
    router: Rc<CoreRouter>,
    transport: Rc<dyn Transport>,
    leader: u64,
    part: ReadPart,
) {
    glommio::spawn_local(async move {
        let shard = part.shard;
        match ask_close(&router, &*transport, leader, shard, part.revision).await {
            Some(Ok(index)) => router.deliver_local(CoreCall {
                shard,
                call: ShardCall::RangeAtIndex {
                    part: Box::new(part),
                    index,
                },
            }),
            // Not led there (or its replica stopped), lost, late or
            // unreadable: asked again, until the part gives up.
            _ => read_retry_later(router, part),
        }
    })
    .detach();
}

/// Asks member `leader` to close `revision` of `shard` for this member's
/// merged watches; the replica hears the index to wait for, or that it
/// must ask again.
pub(crate) fn close_for_watches(
    router: Rc<CoreRouter>,
    transport: Rc<dyn Transport>,
    leader: u64,
    shard: usize,
    revision: Revision,
) {
    glommio::spawn_local(async move {
        match ask_close(&router, &*transport, leader, shard, revision).await {
            Some(Ok(index)) => router.deliver_local(CoreCall {
                shard,
                call: ShardCall::ClosedAt { revision, index },
            }),
            _ => close_failed_later(router, shard, revision),
        }
    })
    .detach();
}

/// Tells `shard`'s replica, after a pause, that its close of `revision`
/// for the merged watches must be asked again.
pub(crate) fn close_failed_later(router: Rc<CoreRouter>, shard: usize, revision: Revision) {
    let call = ShardCall::CloseFailed { revision };
    deliver_later(router, CoreCall { shard, call });
}
