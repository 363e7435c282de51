//! Calls into the node from tonic's tokio tasks: the node's client is a
//! core's (its futures hold the core's router and are not `Send`), so each
//! call runs on one of the node's cores, taken in turn, and its answer
//! comes back over a channel.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use keel_engine::shard::{Node, NodeClient, NodeResult};
use tonic::Status;

use crate::etcd::errors::status;

/// A call's future on a core.
pub(crate) type OnCore<T> = Pin<Box<dyn Future<Output = NodeResult<T>>>>;

/// The node's cores, for calls from the etcd front.
#[derive(Clone)]
pub(crate) struct Cores {
    node: Arc<Node>,
    next: Arc<AtomicUsize>,
}

impl Cores {
    pub(crate) fn new(node: Arc<Node>) -> Cores {
        Cores {
            node,
            next: Arc::default(),
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
        let core = self.next.fetch_add(1, Ordering::Relaxed) % self.node.core_count().max(1);
        let (reply, answer) = tokio::sync::oneshot::channel();
        let node = self.node.clone();
        self.node
            .spawn_on(
                core,
                Box::new(move || {
                    Box::pin(async move {
                        let _ = reply.send(call(node, core).await);
                    })
                }),
            )
            .map_err(|e| status(&e))?;
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
        let core = self.next.fetch_add(1, Ordering::Relaxed) % self.node.core_count().max(1);
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
