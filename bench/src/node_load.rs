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

/// Runs `ops` operations from `clients_per_core` tasks on every core of the
/// node, beside its shards, as connections landing on each core would: a
/// task enters the node through its own core, and calls for shards on the
/// other core cross the mesh. Nothing else competes for the CPUs. `op` gets
/// the node, the task's core and the operation's number. Returns the wall
/// time.
///
/// # Panics
/// When the node is shutting down.
pub fn run_on_cores<F, Fut>(node: &Arc<Node>, clients_per_core: usize, ops: u64, op: F) -> Duration
where
    F: Fn(Arc<Node>, usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let op = Arc::new(op);
    let cores = node.core_count() as u64;
    let tasks = cores * clients_per_core.max(1) as u64;
    let (done, finished) = std::sync::mpsc::channel();
    let start = Instant::now();
    for core in 0..node.core_count() {
        let (node_for_core, op, done) = (node.clone(), op.clone(), done.clone());
        let task: keel_engine::shard::CoreTask = Box::new(move || {
            Box::pin(async move {
                let clients: Vec<_> = (0..clients_per_core.max(1) as u64)
                    .map(|client| {
                        let (node, op) = (node_for_core.clone(), op.clone());
                        glommio::spawn_local(async move {
                            let mut i = core as u64 + cores * client;
                            while i < ops {
                                op(node.clone(), core, i).await;
                                i += tasks;
                            }
                        })
                    })
                    .collect();
                for client in clients {
                    client.await;
                }
                let _ = done.send(());
            })
        });
        node.spawn_on(core, task).expect("spawn clients on a core");
    }
    for _ in 0..cores {
        finished.recv().expect("a core's clients finished");
    }
    start.elapsed()
}
