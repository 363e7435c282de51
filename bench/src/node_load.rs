//! Load on a [`Node`] from many concurrent clients: one glommio executor
//! on the calling thread runs `clients` tasks, each issuing its share of
//! the operations one after another, as that many connections would.

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_engine::shard::Node;

/// An executor for client tasks, reused across measurements.
pub struct Clients {
    executor: glommio::LocalExecutor,
}

impl Clients {
    /// An unpinned executor with a small I/O memory area (the clients do no
    /// file I/O).
    ///
    /// # Panics
    /// When glommio cannot start an executor on this thread.
    pub fn new() -> Clients {
        let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .make()
            .expect("client executor");
        Clients { executor }
    }

    /// Runs `ops` operations spread over `clients` concurrent tasks; `op`
    /// gets the node and the operation's number. Returns the wall time.
    pub fn run<F, Fut>(&self, node: &Arc<Node>, clients: usize, ops: u64, op: F) -> Duration
    where
        F: Fn(Arc<Node>, u64) -> Fut + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let op = Rc::new(op);
        let clients = clients.max(1) as u64;
        self.executor.run(async {
            let start = Instant::now();
            let tasks: Vec<_> = (0..clients)
                .map(|client| {
                    let node = node.clone();
                    let op = op.clone();
                    glommio::spawn_local(async move {
                        let mut i = client;
                        while i < ops {
                            op(node.clone(), i).await;
                            i += clients;
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await;
            }
            start.elapsed()
        })
    }
}

impl Default for Clients {
    fn default() -> Self {
        Clients::new()
    }
}

/// Operation `i`'s key among `keys`, scattered (so keys spread over shards
/// and over the tree).
pub fn scattered_key(i: u64, keys: u64) -> Vec<u8> {
    let spread = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % keys.max(1);
    crate::shard_load::key(spread)
}
