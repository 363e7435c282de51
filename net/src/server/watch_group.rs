//! Watches of one shape share one engine watch per core (docs/server.md,
//! "Watch groups").
//!
//! A thousand clients watching one prefix from now would otherwise cost a
//! thousand engine watches: a thousand store watchers on every shard, each
//! given a copy of every event, and a thousand merged streams, each fed
//! one by one. Instead, the watches on a core with the same range and
//! options (and no start revision) join one **group**: one engine watch,
//! whose batches the group hands to every member as one shared batch.
//!
//! - **Joining.** A member registers first, waits until the group's engine
//!   watch exists, then reads the node's current revision C: its `created`
//!   revision. Everything the group handed out before it registered is at
//!   or below C, so filtering out events at or below C loses nothing and
//!   shows nothing from before the watch.
//! - **Bounded.** Each member's queue holds at most [`MEMBER_BYTES`] of
//!   batches (and one more). A member whose client reads too slowly to
//!   keep up is **detached**: the group drops it, and the member goes on
//!   with an engine watch of its own from the revision after the last it
//!   sent, reading history (as any watch that resumes). So a slow watcher
//!   costs the group nothing and loses nothing.
//! - **Progress.** A member that wants a progress notification asks the
//!   group, which asks its engine watch; the notification reaches every
//!   member in order after the events before it, and each member that
//!   asked for that revision or less sends it.
//! - **Ends.** The engine watch failing (a shard stopped) ends every
//!   member with the error. The group ends when its last member leaves,
//!   which cancels its engine watch.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};
use std::time::Instant;

use futures_lite::future::{or, poll_fn};
use keel_engine::mvcc::Event;
use keel_engine::shard::{NodeError, NodeResult, WatchBatch};
use keel_proto::{
    self as proto, encode_response_frame_within, Response, ResponseBody, Revision, WatchCreate,
    WatchEvents, MAX_RESPONSE_FRAME_LEN,
};

use crate::server::convert;
use crate::server::core::CoreContext;
use crate::server::outbound::Outbound;
use crate::server::watch::EVENTS_PER_RESPONSE_BYTES;

/// Bytes of batches a member may have queued before it is detached.
pub(crate) const MEMBER_BYTES: usize = 4 << 20;

/// Watch ids one shared message names at most (8 bytes each).
const MAX_WATCHES_PER_MESSAGE: usize = 4096;

/// What makes watches share: the range and the options, not the start.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Shape {
    key: Vec<u8>,
    range_end: Vec<u8>,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
}

impl Shape {
    fn of(create: &WatchCreate) -> Shape {
        Shape {
            key: create.key.clone(),
            range_end: create.range_end.clone(),
            prev_kv: create.prev_kv,
            no_put: create.no_put,
            no_delete: create.no_delete,
        }
    }

    fn request(&self) -> WatchCreate {
        WatchCreate {
            key: self.key.clone(),
            range_end: self.range_end.clone(),
            prev_kv: self.prev_kv,
            no_put: self.no_put,
            no_delete: self.no_delete,
            ..WatchCreate::default()
        }
    }
}

/// What a member takes from its queue.
#[derive(Clone)]
pub(crate) enum Delivery {
    /// A batch of events, shared by every member.
    Events(Rc<Vec<Event>>),
    /// Every event up to this revision has been handed out.
    Progress(Revision),
    /// The group's engine watch ended with this error.
    Failed(Rc<NodeError>),
}

impl Delivery {
    fn bytes(&self) -> usize {
        match self {
            Delivery::Events(events) => events.iter().map(event_bytes).sum(),
            _ => 16,
        }
    }
}

fn event_bytes(event: &Event) -> usize {
    let prev = event
        .prev_kv
        .as_ref()
        .map_or(0, |kv| kv.key.len() + kv.value.len());
    event.kv.key.len() + event.kv.value.len() + prev + 48
}

/// A member the group sends to directly ("Shared frames").
struct Direct {
    outbound: Weak<Outbound>,
    watch_id: u64,
}

/// One member's side: its queue, filled by the group, or once it is
/// direct, what the group sent it.
#[derive(Default)]
pub(crate) struct Member {
    queue: RefCell<VecDeque<Delivery>>,
    bytes: Cell<usize>,
    /// Set when the group dropped it for falling behind.
    detached: Cell<bool>,
    waker: RefCell<Option<Waker>>,
    /// Set while the group writes this member's events to its connection
    /// itself.
    direct: RefCell<Option<Direct>>,
    /// While direct: the last revision the group sent it (events or
    /// progress); a detached member goes on after it.
    sent: Cell<Revision>,
    /// While direct: a progress notification asked for and not yet sent.
    wanted: Cell<Option<Revision>>,
    /// While direct: when the group last sent it something.
    last_sent: Cell<Option<Instant>>,
}

impl Member {
    /// Queues `delivery`; answers `false` (and detaches) past the bound.
    fn push(&self, delivery: &Delivery) -> bool {
        let size = delivery.bytes();
        if self.bytes.get() + size > MEMBER_BYTES && !self.queue.borrow().is_empty() {
            self.detach();
            return false;
        }
        self.bytes.set(self.bytes.get() + size);
        self.queue.borrow_mut().push_back(delivery.clone());
        self.wake();
        true
    }

    fn detach(&self) {
        self.detached.set(true);
        self.direct.borrow_mut().take();
        self.queue.borrow_mut().clear();
        self.bytes.set(0);
        self.wake();
    }

    fn wake(&self) {
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Hands this member's sending to the group, if the watch has sent
    /// everything queued for it (answers whether it did). From then on
    /// the group writes its events to `outbound` as `watch_id` and the
    /// queue only ever receives a failure.
    ///
    /// Single-threaded: nothing is queued between the check and the
    /// switch, so no batch is lost or sent twice.
    pub(crate) fn go_direct(
        &self,
        outbound: &Rc<Outbound>,
        watch_id: u64,
        sent: Revision,
        wanted: Option<Revision>,
    ) -> bool {
        if self.detached.get() || !self.queue.borrow().is_empty() {
            return false;
        }
        self.sent.set(sent);
        self.wanted.set(wanted);
        *self.direct.borrow_mut() = Some(Direct {
            outbound: Rc::downgrade(outbound),
            watch_id,
        });
        true
    }

    fn outbound(&self) -> Option<Rc<Outbound>> {
        self.direct
            .borrow()
            .as_ref()
            .and_then(|d| d.outbound.upgrade())
    }

    fn watch_id(&self) -> u64 {
        self.direct.borrow().as_ref().map_or(0, |d| d.watch_id)
    }

    pub(crate) fn is_direct(&self) -> bool {
        self.direct.borrow().is_some()
    }

    /// While direct: the last revision the group sent.
    pub(crate) fn sent(&self) -> Revision {
        self.sent.get()
    }

    /// While direct: the progress notification still owed.
    pub(crate) fn wanted(&self) -> Option<Revision> {
        self.wanted.get()
    }

    /// While direct: when the group last sent this member something.
    pub(crate) fn last_sent(&self) -> Option<Instant> {
        self.last_sent.get()
    }

    /// The next delivery; `None` once detached.
    pub(crate) async fn next(&self) -> Option<Delivery> {
        poll_fn(|cx| {
            if self.detached.get() {
                return Poll::Ready(None);
            }
            if let Some(delivery) = self.queue.borrow_mut().pop_front() {
                self.bytes
                    .set(self.bytes.get().saturating_sub(delivery.bytes()));
                return Poll::Ready(Some(delivery));
            }
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// Where the group's engine watch stands.
enum Start {
    Starting(Vec<Waker>),
    Started,
    Failed(Rc<NodeError>),
}

/// One group: the members, and a channel to its task.
struct Group {
    members: RefCell<Vec<Weak<Member>>>,
    start: RefCell<Start>,
    /// Progress revisions asked for, for the task.
    asks: flume::Sender<Revision>,
}

/// A core's groups, by shape.
#[derive(Default)]
pub(crate) struct WatchGroups {
    groups: RefCell<HashMap<Shape, Weak<Group>>>,
}

/// A member's handle on its group: leaving drops it.
pub(crate) struct Membership {
    pub(crate) member: Rc<Member>,
    group: Rc<Group>,
}

impl Membership {
    /// Asks for a progress notification at `revision`.
    pub(crate) fn request_progress(&self, revision: Revision) {
        if self.member.is_direct() {
            let wanted = self.member.wanted.get();
            self.member
                .wanted
                .set(Some(wanted.map_or(revision, |w| w.max(revision))));
        }
        let _ = self.group.asks.send(revision);
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        // Wake the task, so that it sees the member gone (and ends with
        // the last).
        let _ = self.group.asks.send(0);
    }
}

impl WatchGroups {
    /// Whether any group runs on this core.
    pub(crate) fn any(&self) -> bool {
        !self.groups.borrow().is_empty()
    }

    /// Whether a watch of `create` may join a group: only one from now.
    pub(crate) fn shares(create: &WatchCreate) -> bool {
        create.start_revision == 0
    }

    /// Joins (or starts) the group of `create`'s shape; answers once its
    /// engine watch exists.
    ///
    /// # Errors
    /// The engine watch could not be made (a shard stopped).
    pub(crate) async fn join(
        ctx: &Rc<CoreContext>,
        create: &WatchCreate,
    ) -> NodeResult<Membership> {
        let shape = Shape::of(create);
        let existing = ctx
            .watch_groups
            .groups
            .borrow()
            .get(&shape)
            .and_then(Weak::upgrade);
        let group = match existing {
            Some(group) => group,
            None => {
                let (asks, asked) = flume::unbounded();
                let group = Rc::new(Group {
                    members: RefCell::new(Vec::new()),
                    start: RefCell::new(Start::Starting(Vec::new())),
                    asks,
                });
                ctx.watch_groups
                    .groups
                    .borrow_mut()
                    .insert(shape.clone(), Rc::downgrade(&group));
                let task = run_group(ctx.clone(), Rc::downgrade(&group), shape, asked);
                glommio::spawn_local(task).detach();
                group
            }
        };
        let member = Rc::new(Member::default());
        group.members.borrow_mut().push(Rc::downgrade(&member));
        let membership = Membership {
            member,
            group: group.clone(),
        };
        poll_fn(|cx| match &mut *group.start.borrow_mut() {
            Start::Starting(waiting) => {
                waiting.push(cx.waker().clone());
                Poll::Pending
            }
            Start::Started => Poll::Ready(Ok(())),
            Start::Failed(error) => Poll::Ready(Err(error.copy())),
        })
        .await?;
        Ok(membership)
    }
}

/// The group's task: runs its engine watch and hands every batch to every
/// member, until the last member leaves or the watch fails.
async fn run_group(
    ctx: Rc<CoreContext>,
    group: Weak<Group>,
    shape: Shape,
    asked: flume::Receiver<Revision>,
) {
    let client = ctx.client();
    let started = client.watch(convert::watch_request(&shape.request())).await;
    let set_start = |start: Start| {
        if let Some(group) = group.upgrade() {
            let previous = std::mem::replace(&mut *group.start.borrow_mut(), start);
            if let Start::Starting(waiting) = previous {
                waiting.into_iter().for_each(Waker::wake);
            }
        }
    };
    let mut stream = match started {
        Ok(stream) => {
            set_start(Start::Started);
            stream
        }
        Err(error) => {
            set_start(Start::Failed(Rc::new(error)));
            forget(&ctx, &shape, &group);
            return;
        }
    };
    loop {
        let step = or(async { Ok(stream.next().await) }, async {
            Err(asked.recv_async().await.unwrap_or(0))
        })
        .await;
        let Some(group) = group.upgrade() else {
            break;
        };
        let delivery = match step {
            Ok(Ok(WatchBatch::Events(events))) => Delivery::Events(Rc::new(events)),
            Ok(Ok(WatchBatch::Progress(revision))) => Delivery::Progress(revision),
            // A watch from now cannot meet compacted history.
            Ok(Ok(WatchBatch::Compacted { .. })) => continue,
            Ok(Err(error)) => Delivery::Failed(Rc::new(error)),
            Err(first) => {
                // Asked for progress (0: a member left).
                for revision in std::iter::once(first).chain(asked.try_iter()) {
                    if revision > 0 {
                        stream.request_progress(revision);
                    }
                }
                let mut members = group.members.borrow_mut();
                members.retain(|m| m.strong_count() > 0);
                if members.is_empty() {
                    break;
                }
                continue;
            }
        };
        let failed = matches!(delivery, Delivery::Failed(_));
        hand_out(&group, &delivery);
        if failed || group.members.borrow().is_empty() {
            break;
        }
    }
    forget(&ctx, &shape, &group);
}

/// Hands `delivery` to every member: queued to those whose watch sends
/// for itself, written once per connection for the direct ones.
fn hand_out(group: &Group, delivery: &Delivery) {
    let mut direct: Vec<Rc<Member>> = Vec::new();
    group.members.borrow_mut().retain(|member| {
        let Some(member) = member.upgrade() else {
            return false;
        };
        if member.detached.get() {
            return false;
        }
        if let Delivery::Failed(_) = delivery {
            // The watch reports the failure itself.
            member.direct.borrow_mut().take();
        }
        if member.is_direct() {
            direct.push(member);
            return true;
        }
        member.push(delivery)
    });
    match delivery {
        Delivery::Events(batch) => send_events(batch, direct),
        Delivery::Progress(revision) => send_progress(*revision, &direct),
        Delivery::Failed(_) => {}
    }
}

/// Writes `batch` to the direct members: one message per connection for
/// all its members the whole batch is new to, one of its own for a member
/// that already has part of it (it joined while the group lagged).
fn send_events(batch: &[Event], members: Vec<Rc<Member>>) {
    let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
        return;
    };
    let (first, last) = (first.kv.mod_revision, last.kv.mod_revision);
    let mut whole: Vec<(Rc<Outbound>, Vec<Rc<Member>>)> = Vec::new();
    for member in members {
        let Some(outbound) = member.outbound() else {
            member.detach();
            continue;
        };
        if member.sent.get() >= last {
            continue;
        }
        if member.sent.get() >= first {
            let after = member.sent.get();
            let rest: Vec<Event> = batch
                .iter()
                .filter(|e| e.kv.mod_revision > after)
                .cloned()
                .collect();
            send_to(&outbound, &[member], &chunks(&rest));
            continue;
        }
        match whole.iter_mut().find(|(o, _)| Rc::ptr_eq(o, &outbound)) {
            Some((_, members)) => members.push(member),
            None => whole.push((outbound, vec![member])),
        }
    }
    if whole.is_empty() {
        return;
    }
    let chunks = chunks(batch);
    for (outbound, members) in whole {
        for members in members.chunks(MAX_WATCHES_PER_MESSAGE) {
            send_to(&outbound, members, &chunks);
        }
    }
}

/// Sends each chunk (whole revisions) to `members`, all of one
/// connection, as one message per chunk; a connection without room for
/// one detaches them all, after what they were sent.
fn send_to(outbound: &Outbound, members: &[Rc<Member>], chunks: &[(Revision, Vec<proto::Event>)]) {
    let Some((head, rest)) = members.split_first() else {
        return;
    };
    let watch_id = head.watch_id();
    let also_watch_ids: Vec<u64> = rest.iter().map(|m| m.watch_id()).collect();
    let now = Instant::now();
    for (revision, events) in chunks {
        let message = Response {
            id: watch_id,
            revision: *revision,
            body: ResponseBody::Watch(WatchEvents {
                watch_id,
                events: events.clone(),
                also_watch_ids: also_watch_ids.clone(),
                ..WatchEvents::default()
            }),
        };
        // Too large for one frame (a single revision of over 64 MiB): the
        // members go on alone, where each is told so.
        let queued = encode_response_frame_within(&message, MAX_RESPONSE_FRAME_LEN)
            .is_ok_and(|frame| outbound.try_push(frame) == Ok(true));
        if !queued {
            members.iter().for_each(|m| m.detach());
            return;
        }
        for member in members {
            member.sent.set(*revision);
            member.last_sent.set(Some(now));
        }
    }
}

/// A progress notification to each direct member that asked for one at
/// `revision` or below.
fn send_progress(revision: Revision, members: &[Rc<Member>]) {
    for member in members {
        if member.wanted.get().is_none_or(|w| w > revision) {
            continue;
        }
        let Some(outbound) = member.outbound() else {
            member.detach();
            continue;
        };
        let watch_id = member.watch_id();
        let message = Response {
            id: watch_id,
            revision,
            body: ResponseBody::Watch(WatchEvents {
                watch_id,
                ..WatchEvents::default()
            }),
        };
        let queued = encode_response_frame_within(&message, MAX_RESPONSE_FRAME_LEN)
            .is_ok_and(|frame| outbound.try_push(frame) == Ok(true));
        if !queued {
            member.detach();
            continue;
        }
        member.wanted.set(None);
        member.sent.set(member.sent.get().max(revision));
        member.last_sent.set(Some(Instant::now()));
    }
}

/// `events` converted and cut into messages of about
/// [`EVENTS_PER_RESPONSE_BYTES`], only between revisions, each with the
/// revision of its last event.
fn chunks(events: &[Event]) -> Vec<(Revision, Vec<proto::Event>)> {
    let mut chunks = Vec::new();
    let mut chunk = Vec::new();
    let mut bytes = 0;
    let mut events = events.iter().peekable();
    while let Some(event) = events.next() {
        bytes += event_bytes(event);
        let revision = event.kv.mod_revision;
        chunk.push(convert::event(event.clone()));
        let revision_ends = events
            .peek()
            .is_none_or(|next| next.kv.mod_revision != revision);
        if revision_ends && (bytes >= EVENTS_PER_RESPONSE_BYTES || events.peek().is_none()) {
            chunks.push((revision, std::mem::take(&mut chunk)));
            bytes = 0;
        }
    }
    chunks
}

/// Takes the group out of the core's table (a new watch of its shape
/// starts a new group).
fn forget(ctx: &CoreContext, shape: &Shape, group: &Weak<Group>) {
    let mut groups = ctx.watch_groups.groups.borrow_mut();
    if groups.get(shape).is_some_and(|g| g.ptr_eq(group)) {
        groups.remove(shape);
    }
}
