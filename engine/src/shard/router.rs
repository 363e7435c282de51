//! One core's way to any shard: its own shards' channels, and the mesh of
//! glommio channels to the other cores. The ingress loop, the forwarders
//! and the replicas (which tell other shards about expired leases) share
//! it on their core.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use glommio::channels::shared_channel::ConnectedSender;

use crate::shard::error::{NodeError, NodeResult};
use crate::shard::remote::RemoteCalls;
use crate::shard::replica::{Reply, ShardCall};

/// A call addressed to a shard, travelling between cores.
pub(crate) struct CoreCall {
    pub(crate) shard: usize,
    pub(crate) call: ShardCall,
}

/// Routes calls from one core.
pub(crate) struct CoreRouter {
    core: usize,
    core_count: usize,
    locals: RefCell<BTreeMap<usize, flume::Sender<ShardCall>>>,
    /// `peers[c]`: the channel to core `c` (`None` for this core).
    peers: RefCell<Vec<Option<Rc<ConnectedSender<CoreCall>>>>>,
    /// Writes this core's shards sent to leaders on other members.
    remote_calls: RemoteCalls,
}

impl CoreRouter {
    pub(crate) fn new(
        core: usize,
        core_count: usize,
        peers: Vec<Option<Rc<ConnectedSender<CoreCall>>>>,
    ) -> CoreRouter {
        CoreRouter {
            core,
            core_count,
            locals: RefCell::new(BTreeMap::new()),
            peers: RefCell::new(peers),
            remote_calls: RemoteCalls::new(core),
        }
    }

    /// Registers one of this core's shards.
    pub(crate) fn add_local(&self, shard: usize, sender: flume::Sender<ShardCall>) {
        self.locals.borrow_mut().insert(shard, sender);
    }

    /// The writes this core's shards sent to leaders elsewhere.
    pub(crate) fn remote_calls(&self) -> &RemoteCalls {
        &self.remote_calls
    }

    /// How many cores the node runs.
    pub(crate) fn core_count(&self) -> usize {
        self.core_count
    }

    /// The core this router routes from.
    pub(crate) fn core(&self) -> usize {
        self.core
    }

    /// The core that owns `shard`.
    pub(crate) fn owner(&self, shard: usize) -> usize {
        crate::routing::core_of(shard, self.core_count)
    }

    /// Hands a call to one of this core's shards.
    pub(crate) fn deliver_local(&self, call: CoreCall) {
        let sender = self.locals.borrow().get(&call.shard).cloned();
        match sender {
            Some(sender) => {
                if let Err(flume::SendError(call)) = sender.send(call.call) {
                    refuse(call);
                }
            }
            None => refuse(call.call),
        }
    }

    /// Sends a call to its shard, wherever it lives: waits while the
    /// channel to its core is full (back-pressure).
    pub(crate) async fn route(&self, call: CoreCall) {
        let owner = self.owner(call.shard);
        if owner == self.core {
            return self.deliver_local(call);
        }
        let peer = self.peers.borrow().get(owner).cloned().flatten();
        match peer {
            // If the peer is gone the call is dropped with its reply
            // sender, and its caller sees the node shutting down.
            Some(peer) => drop(peer.send(call).await),
            None => refuse(call.call),
        }
    }

    /// Sends a call to its shard and waits for the answer.
    pub(crate) async fn call<T>(
        &self,
        shard: usize,
        make: impl FnOnce(Reply<T>) -> ShardCall,
    ) -> NodeResult<T> {
        let (reply, answer) = futures_channel::oneshot::channel();
        self.route(CoreCall {
            shard,
            call: make(reply),
        })
        .await;
        answer.await.map_err(|_| NodeError::Shutdown)?
    }

    /// Shutting down: drops every channel this router holds, so the
    /// replicas and the other cores' forwarders see them close.
    pub(crate) fn close(&self) {
        self.locals.borrow_mut().clear();
        for peer in self.peers.borrow_mut().drain(..).flatten() {
            peer.close();
        }
    }
}

thread_local! {
    /// The router of the core this thread runs, with its node's id. Calls
    /// made on a core through that core go straight to it, not through
    /// the core's ingress channel and its task: one channel hop and one
    /// task wake less per request.
    static THIS_CORE: RefCell<Option<(u64, usize, Rc<CoreRouter>)>> = const { RefCell::new(None) };
}

/// Marks this thread as core `core` of node `node`, routing by `router`.
pub(crate) fn enter_core(node: u64, core: usize, router: Rc<CoreRouter>) {
    THIS_CORE.with(|this| *this.borrow_mut() = Some((node, core, router)));
}

/// The core is shutting down: calls go through its ingress channel again.
pub(crate) fn leave_core() {
    THIS_CORE.with(|this| this.borrow_mut().take());
}

/// The router of core `core` of node `node`, if this thread runs it.
pub(crate) fn router_here(node: u64, core: usize) -> Option<Rc<CoreRouter>> {
    THIS_CORE.with(|this| {
        this.borrow()
            .as_ref()
            .filter(|(n, c, _)| *n == node && *c == core)
            .map(|(_, _, router)| router.clone())
    })
}

/// Answers a call no shard will take.
pub(crate) fn refuse(call: ShardCall) {
    call.answer_error(NodeError::Shutdown);
}
