//! Calls into the node from tonic's tokio tasks: the node's client is a
//! core's (its futures hold the core's router and are not `Send`), so each
//! call runs on one of the node's cores and its answer comes back over a
//! channel. A call about one key runs on the core of the key's shard (no
//! hop between cores); others take the cores in turn.
//!
//! Calls are handed over in batches: a call queues its task in its core's
//! outbox, and the first in an empty outbox spawns a flush, which runs
//! after the tasks already ready on the front's thread (tokio's current
//! thread scheduler runs them in order), so every call those tasks make
//! goes in the same message and the core wakes once for them all.
//!
//! Answers come back in batches too: a core queues each answer in the
//! front's [`Answers`], and the first in an empty queue wakes the front's
//! one delivery task, which hands every queued answer to its caller on the
//! front's thread. One wake of the front's thread (a system call) then
//! serves many answers, and the calls' tasks run together, so that their
//! HTTP/2 frames leave together (see `keel_write_batching`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use keel_engine::shard::{CoreTask, Node, NodeClient, NodeResult};
use tonic::Status;

use crate::etcd::errors::status;

/// A call's future on a core.
pub(crate) type OnCore<T> = Pin<Box<dyn Future<Output = NodeResult<T>>>>;

/// The node's cores, for calls from the etcd front.
#[derive(Clone)]
pub(crate) struct Cores {
    node: Arc<Node>,
    next: Arc<AtomicUsize>,
    /// Per core, the tasks not yet handed over.
    outboxes: Arc<[Mutex<Vec<CoreTask>>]>,
    answers: Arc<Answers>,
}

/// An answer from a core, delivered on the front's thread.
type Answer = Box<dyn FnOnce() + Send>;

/// Answers queued by the cores for the front's delivery task. Invariant:
/// a queue that is not empty has had `arrived` notified since the
/// delivery task last emptied it (the answer that makes it not empty
/// notifies; `Notify` keeps the permit when the task is not waiting).
#[derive(Default)]
struct Answers {
    queued: Mutex<Vec<Answer>>,
    arrived: tokio::sync::Notify,
}

impl Answers {
    /// Queues `answer` (on a core).
    fn post(&self, answer: Answer) {
        let first = {
            let mut queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
            queued.push(answer);
            queued.len() == 1
        };
        if first {
            self.arrived.notify_one();
        }
    }

    /// Delivers answers as they come, until the front's runtime stops.
    async fn deliver(self: Arc<Self>) {
        loop {
            self.arrived.notified().await;
            let answers =
                std::mem::take(&mut *self.queued.lock().unwrap_or_else(|e| e.into_inner()));
            for answer in answers {
                answer();
            }
        }
    }
}

impl Cores {
    /// The cores of `node`; starts the delivery of their answers, so it
    /// must be called on the front's runtime.
    pub(crate) fn new(node: Arc<Node>) -> Cores {
        let outboxes = (0..node.core_count()).map(|_| Mutex::default()).collect();
        let answers = Arc::new(Answers::default());
        tokio::spawn(answers.clone().deliver());
        Cores {
            node,
            next: Arc::default(),
            outboxes,
            answers,
        }
    }

    /// The node's shard count.
    pub(crate) fn shard_count(&self) -> usize {
        self.node.shard_count()
    }

    /// The next core in turn.
    fn next_core(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.node.core_count().max(1)
    }

    /// The core of `key`'s shard.
    pub(crate) fn core_of_key(&self, key: &[u8]) -> usize {
        let shard = keel_engine::routing::shard_of(key, self.node.shard_count());
        keel_engine::routing::core_of(shard, self.node.core_count().max(1))
    }

    /// The one shard a key range lies in, if it lies in one.
    pub(crate) fn shard_of_range(&self, key: &[u8], range_end: &[u8]) -> Option<usize> {
        keel_engine::routing::shard_of_range(key, range_end, self.node.shard_count())
    }

    /// Queues `task` for `core`; the first task in an empty outbox spawns
    /// the flush that hands the outbox over. Invariant: an outbox that is
    /// not empty has a flush spawned for it. The batching relies on the
    /// front's current-thread runtime running spawned tasks in order (a
    /// multi-thread runtime's LIFO slot would run the flush first, one
    /// call a batch). A flush spawned while the runtime shuts down never
    /// runs: the calls behind it wait until the runtime drops them, and
    /// their callers with them.
    fn enqueue(&self, core: usize, task: CoreTask) -> Result<(), Status> {
        let Some(outbox) = self.outboxes.get(core) else {
            return Err(Status::internal(format!("no core {core}")));
        };
        let first = {
            let mut queued = outbox.lock().unwrap_or_else(|e| e.into_inner());
            queued.push(task);
            queued.len() == 1
        };
        if first {
            let cores = self.clone();
            tokio::spawn(async move { cores.flush(core) });
        }
        Ok(())
    }

    /// Hands `core`'s outbox over in one message. Tasks of a node that is
    /// shutting down are dropped, and their callers answered unavailable
    /// (their reply channels close).
    fn flush(&self, core: usize) {
        let Some(outbox) = self.outboxes.get(core) else {
            return;
        };
        let tasks = std::mem::take(&mut *outbox.lock().unwrap_or_else(|e| e.into_inner()));
        if !tasks.is_empty() {
            let _ = self.node.spawn_all_on(core, tasks);
        }
    }

    /// The node, for what needs no core (its cluster, its member id).
    pub(crate) fn node(&self) -> &Node {
        &self.node
    }

    /// Runs `call` on the next core with the node and that core's number
    /// (see [`client`]); answers its outcome as etcd's error on failure.
    pub(crate) async fn call<T: Send + 'static>(
        &self,
        call: impl FnOnce(Arc<Node>, usize) -> OnCore<T> + Send + 'static,
    ) -> Result<T, Status> {
        self.call_on(self.next_core(), call).await
    }

    /// Runs `call` on the core of `key`'s shard: a call about that key
    /// alone, which then needs no hop between cores.
    pub(crate) async fn call_for_key<T: Send + 'static>(
        &self,
        key: &[u8],
        call: impl FnOnce(Arc<Node>, usize) -> OnCore<T> + Send + 'static,
    ) -> Result<T, Status> {
        self.call_on(self.core_of_key(key), call).await
    }

    /// Runs `call` on `shard`'s core.
    pub(crate) async fn call_for_shard<T: Send + 'static>(
        &self,
        shard: usize,
        call: impl FnOnce(Arc<Node>, usize) -> OnCore<T> + Send + 'static,
    ) -> Result<T, Status> {
        let core = keel_engine::routing::core_of(shard, self.node.core_count().max(1));
        self.call_on(core, call).await
    }

    async fn call_on<T: Send + 'static>(
        &self,
        core: usize,
        call: impl FnOnce(Arc<Node>, usize) -> OnCore<T> + Send + 'static,
    ) -> Result<T, Status> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let node = self.node.clone();
        let answers = self.answers.clone();
        self.enqueue(
            core,
            Box::new(move || {
                Box::pin(async move {
                    let outcome = call(node, core).await;
                    answers.post(Box::new(move || {
                        let _ = reply.send(outcome);
                    }));
                })
            }),
        )?;
        answer
            .await
            .map_err(|_| Status::unavailable("etcdserver: server stopped"))?
            .map_err(|e| status(&e))
    }
}

impl Cores {
    /// Runs `task` on the next core with the node and that core's number,
    /// answering nothing: for work that goes on (a watch).
    pub(crate) fn spawn(
        &self,
        task: impl FnOnce(Arc<Node>, usize) -> Pin<Box<dyn Future<Output = ()>>> + Send + 'static,
    ) -> Result<(), Status> {
        let core = self.next_core();
        let node = self.node.clone();
        self.node
            .spawn_on(core, Box::new(move || task(node, core)))
            .map_err(|e| status(&e))
    }
}

/// The client of `node` through `core`, inside a call: writes go to their
/// shard's leader on whichever member leads it, as etcd's members forward
/// proposals to theirs.
pub(crate) fn client(node: &Node, core: usize) -> NodeClient<'_> {
    node.via_core(core)
        .unwrap_or_else(|| node.client())
        .with_writes_at_leader()
}
