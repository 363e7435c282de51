//! The node: S shards over C cores, one glommio executor per core, each
//! owning the shards `s` with `s % C == core` outright. A [`Node`] is the
//! in-process handle (`Send + Sync`); its calls go straight to the core
//! that owns the shard, or through another core and then over the mesh of
//! glommio channels between cores ([`Node::via_core`]), as a request that
//! arrived on the wrong core's socket will.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use glommio::channels::shared_channel::{self, SharedReceiver, SharedSender};
use tracing::Instrument;

use crate::btree::Options;
use crate::hlc::{SystemClock, WallClock};
use crate::metrics::{NodeMetrics, ShardMetrics};
use crate::mvcc::{
    Applied, DeleteRangeRequest, Entry, KvError, PutRequest, RangeRequest, RangeResponse, Response,
    Revision, TxnRequest, MAX_REQUEST_BYTES,
};
use crate::routing::{shard_of, shard_of_range};
use crate::shard::cluster::Cluster;
use crate::shard::error::{NodeError, NodeResult};
use crate::shard::membership::{self, ClusterView};
use crate::shard::merge::{merge_ranges, per_shard_request};
use crate::shard::node_meta;
use crate::shard::replica::{self, Replica, ReplicaConfig, ShardCall};
use crate::shard::router::{self, CoreCall, CoreRouter};
use crate::shard::space::NodeSpace;
use crate::shard::transport::{PeerInbox, TransportFactory};
use crate::shard::watermarks::Watermarks;

/// Calls queued between two cores before the sender waits.
const MESH_CAPACITY: usize = 1024;

/// How a node is laid out.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The data directory: `shard-NNN/` per shard and a `node.meta` file.
    pub data_dir: PathBuf,
    /// Shards; 0 takes the number recorded in the directory, or the core
    /// count when it is new. Fixed once the directory is created.
    pub shards: usize,
    /// Executors (cores); 0 is the machine's core count.
    pub cores: usize,
    /// Pin executor `i` to CPU `i`.
    pub pin: bool,
    /// Each shard's WAL.
    pub wal: keel_wal::WalConfig,
    /// Each shard's tree file (`commit_sync` is chosen by the shard).
    pub tree: Options,
    /// When each shard makes its tree durable.
    pub tree_sync: TreeSync,
    /// The wall clock revisions are stamped from (tests freeze it).
    pub clock: Arc<dyn WallClock>,
    /// Most bytes the shards' trees may hold in use together before a
    /// NOSPACE alarm refuses what takes space (etcd's
    /// `--quota-backend-bytes`); see docs/node.md, "NOSPACE".
    pub quota_backend_bytes: u64,
    /// The cluster as it was created, and this node's place in it; one
    /// member by default. A directory that exists must have been created
    /// for this cluster and member.
    pub cluster: Cluster,
    /// For a member joining a running cluster (`--initial-cluster-state
    /// existing`) whose directory is new: the member list as the cluster
    /// has it now (docs/membership.md, "Joining").
    pub joining: Option<Cluster>,
    /// How the shards reach the other members: required when the cluster
    /// has more than one. A node with a transport runs its shards as Raft
    /// groups that members can join; one without is a single member for
    /// good.
    pub transport: Option<Arc<dyn TransportFactory>>,
}

/// The default backend quota: 64 GiB, eight times etcd's largest
/// recommended one. Each shard's tree file may also grow to
/// [`crate::btree::Options::max_file_size`] (64 GiB).
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 64 << 30;

/// When a shard makes its B+-tree durable (and releases the WAL below it):
/// after `entries` applied entries, `bytes` of applied entries, or
/// `interval` after the first one not yet durable, whichever comes first.
/// More between syncs means fewer page writes (a page many entries change
/// is written once), and more memory held and WAL to replay after a crash:
/// the bytes bound both (a sync still in flight when the next is due by
/// bytes is waited for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeSync {
    /// Applied entries between syncs.
    pub entries: u64,
    /// Longest time an applied entry waits to be durable in the tree.
    pub interval: std::time::Duration,
    /// Bytes of applied entries (their Raft data) between syncs.
    pub bytes: u64,
}

impl Default for TreeSync {
    fn default() -> TreeSync {
        TreeSync {
            entries: 20_000,
            interval: std::time::Duration::from_secs(1),
            bytes: 64 << 20,
        }
    }
}

impl NodeConfig {
    /// Defaults for `data_dir`: every core, one shard per core, pinned.
    pub fn new(data_dir: impl Into<PathBuf>) -> NodeConfig {
        NodeConfig {
            data_dir: data_dir.into(),
            shards: 0,
            cores: 0,
            pin: true,
            wal: keel_wal::WalConfig::default(),
            tree: Options::default(),
            tree_sync: TreeSync::default(),
            clock: Arc::new(SystemClock),
            quota_backend_bytes: DEFAULT_QUOTA_BACKEND_BYTES,
            cluster: Cluster::single(crate::shard::cluster::DEFAULT_NAME),
            joining: None,
            transport: None,
        }
    }
}

/// How a read is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Sees every write acknowledged before it started (Raft ReadIndex).
    #[default]
    Linearizable,
    /// From the replica's applied state, without a Raft round.
    Serializable,
}

/// Ids of the nodes started in this process.
static NEXT_NODE_ID: AtomicU64 = AtomicU64::new(0);

/// The running node. Dropping it shuts the node down (as [`Node::shutdown`]).
pub struct Node {
    /// Unique in the process: tells this node's cores from another's.
    id: u64,
    shards: usize,
    next_lease_home: std::sync::atomic::AtomicUsize,
    /// Whether other members share (or may come to share) the shards:
    /// the node has a peer transport.
    replicated: bool,
    /// The cluster as this node follows it.
    view: ClusterView,
    cores: Vec<flume::Sender<Ingress>>,
    threads: Vec<glommio::ExecutorJoinHandle<()>>,
    /// Where calls enter: `None` for the owner's core.
    entry_core: Option<usize>,
    /// The floor and each shard's unpublished stamps (merged watches read
    /// them).
    marks: Arc<Watermarks>,
    /// What every shard counts (docs/metrics.md).
    metrics: Arc<NodeMetrics>,
}

impl Node {
    /// Starts the node: creates or checks the directory, opens every shard
    /// (replaying its WAL) and returns once all can serve.
    ///
    /// # Errors
    /// [`NodeError::Start`] naming the shard and what failed.
    pub fn start(mut config: NodeConfig) -> NodeResult<Node> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| NodeError::Start(format!("{}: {e}", config.data_dir.display())))?;
        config.data_dir = std::path::absolute(&config.data_dir)
            .map_err(|e| NodeError::Start(format!("{}: {e}", config.data_dir.display())))?;
        // Every request the keyspace accepts must fit one WAL record.
        let needed = MAX_REQUEST_BYTES + (64 << 10);
        if config.wal.max_payload() < needed {
            return Err(NodeError::Start(format!(
                "WAL segments of {} bytes hold records of at most {} bytes; requests need {needed} \
                 (use segments of at least 4 MiB)",
                config.wal.segment_size,
                config.wal.max_payload()
            )));
        }
        let machine_cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let core_count = if config.cores == 0 {
            machine_cores
        } else {
            config.cores
        };
        if !config.cluster.is_single() && config.transport.is_none() {
            return Err(NodeError::Start(format!(
                "a cluster of {} members needs a peer transport",
                config.cluster.members.len()
            )));
        }
        // A joining member's list is recorded before `node.meta`: a crash
        // between the two leaves no directory that says it belongs to the
        // cluster without saying who is in it.
        let view = open_view(&config)?;
        let shards = node_meta::open_or_create(
            &config.data_dir,
            config.shards,
            core_count,
            &config.cluster,
        )?;
        let core_count = core_count.min(shards);
        let replicated = config.transport.is_some();
        let marks = Arc::new(Watermarks::new(shards));
        let metrics = Arc::new(NodeMetrics::new(config.cluster.me, shards, core_count));
        let space = Arc::new(NodeSpace::new(
            shards,
            config.quota_backend_bytes,
            config.cluster.me,
        ));
        // The mesh: one bounded glommio channel per ordered pair of cores.
        let mut senders: Vec<Vec<Option<SharedSender<CoreCall>>>> = (0..core_count)
            .map(|_| (0..core_count).map(|_| None).collect())
            .collect();
        let mut receivers: Vec<Vec<SharedReceiver<CoreCall>>> =
            (0..core_count).map(|_| Vec::new()).collect();
        for (from, row) in senders.iter_mut().enumerate() {
            for ((to, slot), inbox) in row.iter_mut().enumerate().zip(receivers.iter_mut()) {
                if from != to {
                    let (tx, rx) = shared_channel::new_bounded(MESH_CAPACITY);
                    *slot = Some(tx);
                    inbox.push(rx);
                }
            }
        }
        let (ready_tx, ready_rx) = flume::unbounded();
        let node_id = NEXT_NODE_ID.fetch_add(1, Ordering::Relaxed);
        let mut cores = Vec::new();
        let mut threads = Vec::new();
        for (core, (core_senders, core_receivers)) in senders.into_iter().zip(receivers).enumerate()
        {
            let (tx, rx) = flume::unbounded();
            cores.push(tx);
            let owned: Vec<usize> = (core..shards).step_by(core_count).collect();
            let setup = CoreSetup {
                node_id,
                core,
                core_count,
                owned,
                shards,
                config: config.clone(),
                view: view.clone(),
                marks: marks.clone(),
                metrics: metrics.clone(),
                space: space.clone(),
                ingress: rx,
                mesh_out: core_senders,
                mesh_in: core_receivers,
                ready: ready_tx.clone(),
            };
            let placement = if config.pin {
                glommio::Placement::Fixed(core % machine_cores)
            } else {
                glommio::Placement::Unbound
            };
            let thread = glommio::LocalExecutorBuilder::new(placement)
                .name(&format!("keel-core-{core}"))
                .io_memory(1 << 20)
                .spawn(move || run_core(setup))
                .map_err(|e| NodeError::Start(format!("core {core}: {e}")))?;
            threads.push(thread);
        }
        drop(ready_tx);
        let node = Node {
            id: node_id,
            shards,
            next_lease_home: std::sync::atomic::AtomicUsize::new(0),
            replicated,
            view,
            cores,
            threads,
            entry_core: None,
            marks,
            metrics,
        };
        for _ in 0..core_count {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(error),
                Err(_) => return Err(NodeError::Start("a core exited while starting".into())),
            }
        }
        Ok(node)
    }

    /// The number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards
    }

    /// The auth record as this member follows it (docs/security.md), for
    /// a server to read on every request: one atomic load.
    pub fn auth_view(&self) -> crate::shard::AuthView {
        self.view.auth().clone()
    }

    /// What every shard on this node counts, for a scrape to read.
    pub fn metrics(&self) -> Arc<NodeMetrics> {
        self.metrics.clone()
    }

    /// The number of cores (executors).
    pub fn core_count(&self) -> usize {
        self.cores.len()
    }

    /// A handle whose calls all enter through `core`, which forwards any
    /// for a shard it does not own over the mesh. `None` when there is no
    /// such core.
    pub fn via_core(&self, core: usize) -> Option<NodeClient<'_>> {
        (core < self.cores.len()).then_some(NodeClient {
            node: self,
            entry_core: Some(core),
            writes_at_leader: false,
        })
    }

    /// Stores a value; answered once durable and applied.
    pub async fn put(&self, request: PutRequest) -> NodeResult<Applied> {
        self.client().put(request).await
    }

    /// Deletes a key or range (see [`NodeClient::delete_range`]).
    pub async fn delete_range(&self, request: DeleteRangeRequest) -> NodeResult<Applied> {
        self.client().delete_range(request).await
    }

    /// Runs a transaction ([`NodeClient::txn`]).
    pub async fn txn(&self, request: TxnRequest) -> NodeResult<Applied> {
        self.client().txn(request).await
    }

    /// Reads a key or range; across shards, one snapshot at one revision.
    pub async fn range(
        &self,
        request: RangeRequest,
        consistency: Consistency,
    ) -> NodeResult<(Revision, RangeResponse)> {
        self.client().range(request, consistency).await
    }

    /// Watches a key or range, over every shard it spans, as one stream.
    pub async fn watch(
        &self,
        request: crate::mvcc::WatchRequest,
    ) -> NodeResult<crate::shard::WatchStream<'_>> {
        self.client().watch(request).await
    }

    /// Proposes `entry` on `shard` as it is (compaction, and tests that
    /// need one shard's view).
    pub async fn write_to(&self, shard: usize, entry: Entry) -> NodeResult<Applied> {
        self.client().write_to(shard, entry).await
    }

    /// Runs a task on `core`'s executor, beside its shards: what the server
    /// does with each core's connections. Calls it makes through
    /// [`Node::via_core`] with this core enter here, and go over the mesh
    /// when their shard lives on another core.
    ///
    /// # Errors
    /// [`NodeError::InvalidRequest`] for a core that does not exist,
    /// [`NodeError::Shutdown`] when the core is gone.
    pub fn spawn_on(&self, core: usize, task: CoreTask) -> NodeResult<()> {
        self.send_to_core(core, Ingress::Spawn(task))
    }

    /// Runs `tasks` on `core`'s executor, as [`Node::spawn_on`] runs one,
    /// sent as one message: the core wakes once for them all, which is
    /// what lets a busy caller on another thread (the etcd front) hand
    /// over many calls for the cost of one.
    ///
    /// # Errors
    /// As [`Node::spawn_on`].
    pub fn spawn_all_on(&self, core: usize, tasks: Vec<CoreTask>) -> NodeResult<()> {
        self.send_to_core(core, Ingress::SpawnAll(tasks))
    }

    fn send_to_core(&self, core: usize, message: Ingress) -> NodeResult<()> {
        let sender = self.cores.get(core).ok_or_else(|| {
            NodeError::InvalidRequest(format!("core {core} of {}", self.cores.len()))
        })?;
        sender.send(message).map_err(|_| NodeError::Shutdown)
    }

    /// The handle the calls above use: through each shard's own core.
    pub fn client(&self) -> NodeClient<'_> {
        NodeClient {
            node: self,
            entry_core: self.entry_core,
            writes_at_leader: false,
        }
    }

    /// Stops every core: each shard makes its tree durable and closes its
    /// WAL. Calls still queued are answered with [`NodeError::Shutdown`] or
    /// a stopped shard.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.cores.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Calls into a node through a chosen entry core.
#[derive(Clone, Copy)]
pub struct NodeClient<'a> {
    node: &'a Node,
    entry_core: Option<usize>,
    /// Whether a write this member's replica cannot propose (it does not
    /// lead the shard, or no one does yet) is carried to the leader
    /// instead of refused with `NotLeader`: what etcd's clients expect of
    /// any member, where keel's own client follows the leader hint.
    writes_at_leader: bool,
}

impl<'a> NodeClient<'a> {
    /// This handle, with writes carried to their shard's leader wherever
    /// it is ([`NodeClient::write_at_leader`]) rather than refused with
    /// `NotLeader` on a follower; a write that finds no leader after a few
    /// seconds of looking is refused with `NoLeader`.
    pub fn with_writes_at_leader(self) -> NodeClient<'a> {
        NodeClient {
            writes_at_leader: true,
            ..self
        }
    }
}

impl NodeClient<'_> {
    /// The node's shard count.
    pub fn shard_count(&self) -> usize {
        self.node.shards
    }

    pub(crate) fn watermarks(&self) -> &Watermarks {
        &self.node.marks
    }

    /// Whether other members share the shards.
    pub(crate) fn replicated(&self) -> bool {
        self.node.replicated
    }

    /// The auth record as this member follows it now.
    pub fn auth_record(&self) -> Arc<crate::mvcc::AuthRecord> {
        self.node.view.auth().load()
    }

    /// The cluster as this node follows it now.
    pub fn cluster(&self) -> Arc<Cluster> {
        self.node.view.load()
    }

    /// Whether this node is a learner now (docs/membership.md): cheap
    /// enough to ask for every request.
    pub fn is_learner(&self) -> bool {
        self.node.view.me_is_learner()
    }

    /// This node's member id.
    pub fn member_id(&self) -> u64 {
        self.node.view.load().me
    }

    /// A home for a new lease: the shards in turn.
    pub(crate) fn next_home(&self) -> usize {
        let turn = self
            .node
            .next_lease_home
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        turn % self.node.shards.max(1)
    }

    /// Sends a call whose answer nobody waits for.
    pub(crate) fn send_only(&self, shard: usize, call: ShardCall) {
        let core = self
            .entry_core
            .unwrap_or(crate::routing::core_of(shard, self.node.cores.len()));
        if let Some(sender) = self.node.cores.get(core) {
            let _ = sender.send(Ingress::Call(CoreCall { shard, call }));
        }
    }

    pub(crate) async fn call<T>(
        &self,
        shard: usize,
        make: impl FnOnce(crate::shard::replica::Reply<T>) -> ShardCall,
    ) -> NodeResult<T> {
        if let Some(router) = self
            .entry_core
            .and_then(|core| router::router_here(self.node.id, core))
        {
            return router.call(shard, make).await;
        }
        let (reply, answer) = futures_channel::oneshot::channel();
        let core = self
            .entry_core
            .unwrap_or(crate::routing::core_of(shard, self.node.cores.len()));
        let sender = self.node.cores.get(core).ok_or(NodeError::Shutdown)?;
        sender
            .send(Ingress::Call(CoreCall {
                shard,
                call: make(reply),
            }))
            .map_err(|_| NodeError::Shutdown)?;
        answer.await.map_err(|_| NodeError::Shutdown)?
    }

    /// Proposes `entry` on `shard` as it is.
    pub async fn write_to(&self, shard: usize, entry: Entry) -> NodeResult<Applied> {
        if shard >= self.node.shards {
            return Err(NodeError::InvalidRequest(format!(
                "shard {shard} of {}",
                self.node.shards
            )));
        }
        if self.writes_at_leader {
            return self.write_at_leader(shard, entry).await;
        }
        self.call(shard, |reply| ShardCall::Write { entry, reply })
            .await
    }

    /// Proposes `entry` on `shard`'s leader, wherever it is: a part of a
    /// write that fans out over shards, or a lease's grant or revoke,
    /// which this member makes whether or not it leads the shards. Refused
    /// with `NoLeader` when no leader took it within a few seconds, and
    /// `OutcomeUnknown` when the leader it was sent to did not answer.
    pub(crate) async fn write_at_leader(&self, shard: usize, entry: Entry) -> NodeResult<Applied> {
        self.call(shard, |reply| {
            ShardCall::WriteAtLeader(Box::new(crate::shard::remote::Part::new(
                shard, entry, reply,
            )))
        })
        .await
    }

    /// Stores a value on its key's shard.
    pub async fn put(&self, request: PutRequest) -> NodeResult<Applied> {
        let shard = shard_of(&request.key, self.node.shards);
        self.write_to(shard, Entry::Put(request)).await
    }

    /// Deletes a key or a range. A range that spans shards is deleted shard
    /// by shard, each at its own revision (not atomically); the answer
    /// sums the parts and carries the highest revision.
    pub async fn delete_range(&self, request: DeleteRangeRequest) -> NodeResult<Applied> {
        if let Some(shard) = shard_of_range(&request.key, &request.range_end, self.node.shards) {
            return self.write_to(shard, Entry::DeleteRange(request)).await;
        }
        let mut total: Option<Applied> = None;
        for shard in 0..self.node.shards {
            let part = self
                .write_at_leader(shard, Entry::DeleteRange(request.clone()))
                .await?;
            total = Some(match (total, part) {
                (None, part) => part,
                (Some(mut sum), part) => {
                    if let (Response::DeleteRange(sum), Response::DeleteRange(part)) =
                        (&mut sum.response, part.response)
                    {
                        sum.deleted += part.deleted;
                        sum.prev_kvs.extend(part.prev_kvs);
                    }
                    sum.revision = sum.revision.max(part.revision);
                    sum
                }
            });
        }
        if let Some(Applied {
            response: Response::DeleteRange(sum),
            ..
        }) = &mut total
        {
            sum.prev_kvs.sort_by(|a, b| a.key.cmp(&b.key));
        }
        total.ok_or(NodeError::Shutdown)
    }

    /// Runs a transaction. Its compares and writes must share a shard;
    /// its top-level ranges may read any shards when no write of their
    /// branch comes after them (`txn_reads.rs`): those are read again at
    /// the transaction's revision. A re-read that fails after the write
    /// applied answers [`NodeError::OutcomeUnknown`].
    pub async fn txn(&self, request: TxnRequest) -> NodeResult<Applied> {
        let refused = match crate::shard::merge::txn_shard(&request, self.node.shards) {
            Ok(shard) => return self.write_to(shard, Entry::Txn(request)).await,
            Err(refused) => refused,
        };
        let Some(plan) = crate::shard::txn_reads::plan(&request, self.node.shards) else {
            return Err(refused);
        };
        let mut applied = self
            .write_to(plan.shard, Entry::Txn(request.clone()))
            .await?;
        let revision = applied.revision;
        if let Response::Txn(answer) = &mut applied.response {
            let (ops, again) = if answer.succeeded {
                (&request.success, &plan.success)
            } else {
                (&request.failure, &plan.failure)
            };
            for &i in again {
                let (Some(crate::mvcc::RequestOp::Range(range)), Some(slot)) =
                    (ops.get(i), answer.responses.get_mut(i))
                else {
                    continue;
                };
                // A range that names its own revision reads there.
                let at_txn = RangeRequest {
                    revision: if range.revision == 0 {
                        revision
                    } else {
                        range.revision
                    },
                    ..range.clone()
                };
                // The write is applied: a read that fails now must not
                // read as "not applied".
                let (_, read) = self
                    .range(at_txn, Consistency::Linearizable)
                    .await
                    .map_err(|_| NodeError::OutcomeUnknown { shard: plan.shard })?;
                *slot = crate::mvcc::ResponseOp::Range(read);
            }
        }
        Ok(applied)
    }

    /// Reads a key or a range. A range over several shards, or a read at a
    /// given revision, is read at one revision R on every shard it spans (R
    /// at least every revision any shard had handed out when the read
    /// began, unless the request names one), and the answer is at R. A read
    /// of one shard's keys at the head goes to that shard alone.
    pub async fn range(
        &self,
        request: RangeRequest,
        consistency: Consistency,
    ) -> NodeResult<(Revision, RangeResponse)> {
        let shards = self.node.shards;
        let one_shard = shard_of_range(&request.key, &request.range_end, shards);
        if let (Some(shard), 0) = (one_shard, request.revision) {
            let linearizable = consistency == Consistency::Linearizable;
            return self
                .call(shard, |reply| ShardCall::Range {
                    request,
                    linearizable,
                    reply,
                })
                .await;
        }
        // Boxed: this path's future is several times the size of the one
        // above, which every point read in flight would otherwise carry.
        Box::pin(self.range_at_one_revision(request, one_shard)).await
    }

    /// A range read at one revision on every shard it spans (see
    /// [`NodeClient::range`]).
    async fn range_at_one_revision(
        &self,
        request: RangeRequest,
        one_shard: Option<usize>,
    ) -> NodeResult<(Revision, RangeResponse)> {
        let shards = self.node.shards;
        // A bad key is refused before the revision is looked at, as a
        // single keyspace would.
        crate::mvcc::KeyRange::new(&request.key, &request.range_end)?;
        let revision = self.revision_to_read(request.revision).await?;
        let targets: Vec<usize> = match one_shard {
            Some(shard) => vec![shard],
            None => (0..shards).collect(),
        };
        let mut parts = Vec::with_capacity(targets.len());
        let per_shard = per_shard_request(&request);
        // An answer limit bounds what the parts gather together: without a
        // count limit the parts add up, so each shard gets what is left;
        // with one, the parts are merged and cut to it after each shard.
        // (A sort by value of keys only needs the values, which the answer
        // leaves out: its shards gather unlimited, within the sort's own
        // bound, and the merged answer is checked.)
        let limited = request.answer_limit != 0 && per_shard.keys_only == request.keys_only;
        let mut left = request.answer_limit;
        for shard in targets {
            let mut part_request = per_shard.clone();
            if !limited {
                part_request.answer_limit = 0;
            } else if request.limit == 0 {
                part_request.answer_limit = left.max(1);
            }
            let part = self
                .call(shard, |reply| {
                    ShardCall::RangeAt(Box::new(crate::shard::remote::ReadPart::new(
                        shard,
                        part_request,
                        revision,
                        reply,
                    )))
                })
                .await?;
            if limited && request.limit == 0 {
                left = left.saturating_sub(answer_bytes(&part));
            }
            parts.push(part);
            if request.limit != 0 && parts.len() > 1 {
                let merged = merge_ranges(&per_shard, std::mem::take(&mut parts));
                parts.push(merged);
            }
        }
        let merged = merge_ranges(&request, parts);
        if request.answer_limit != 0 && answer_bytes(&merged) > request.answer_limit {
            return Err(crate::mvcc::KvError::AnswerTooLarge {
                limit: request.answer_limit,
            }
            .into());
        }
        Ok((revision, merged))
    }
}

impl NodeClient<'_> {
    /// The node's current revision: the highest any shard has handed out.
    /// Every write acknowledged before this call is at or below it.
    pub async fn current_revision(&self) -> NodeResult<Revision> {
        if !self.node.replicated {
            return self.highest_revision(0..self.node.shards).await;
        }
        // In a cluster a replica here that stopped does not stop the
        // group: the others' clocks and the round below still tell.
        let mut here = 0;
        for shard in 0..self.node.shards {
            match self
                .call(shard, |reply| ShardCall::LastRevision { reply })
                .await
            {
                Ok(last) => here = here.max(last),
                Err(NodeError::ShardStopped { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        // In a cluster a write answered elsewhere may be unknown here yet:
        // a round confirmed by a majority makes it known (any majority
        // shares a member with the one that stored it, and that member's
        // frames carry what it heard of). Any one shard's round will do:
        // every shard has the same voters; a stopped one passes it on.
        let mut stopped = None;
        for shard in 0..self.node.shards {
            match self
                .call(shard, |reply| ShardCall::KnownRevision { reply })
                .await
            {
                Ok(known) => return Ok(here.max(known)),
                Err(error @ NodeError::ShardStopped { .. }) => stopped = Some(error),
                Err(error) => return Err(error),
            }
        }
        Err(stopped.unwrap_or(NodeError::Shutdown))
    }

    /// Every shard's Raft and storage state, by shard.
    ///
    /// # Errors
    /// A stopped shard, or the node shutting down.
    pub async fn status(&self) -> NodeResult<Vec<crate::shard::ShardStatus>> {
        let mut shards = Vec::with_capacity(self.node.shards);
        for shard in 0..self.node.shards {
            shards.push(
                self.call(shard, |reply| ShardCall::Status { reply })
                    .await?,
            );
        }
        Ok(shards)
    }

    /// The highest revision any of `shards` has handed out or observed.
    pub(crate) async fn highest_revision(
        &self,
        shards: impl IntoIterator<Item = usize>,
    ) -> NodeResult<Revision> {
        let mut highest = 0;
        for shard in shards {
            let last = self
                .call(shard, |reply| ShardCall::LastRevision { reply })
                .await?;
            highest = highest.max(last);
        }
        Ok(highest)
    }

    /// The revision a read at `requested` (0: now) is served at.
    ///
    /// # Errors
    /// [`KvError::FutureRevision`] for a revision above the current one: a
    /// read there would push every shard's clock ahead for nothing.
    async fn revision_to_read(&self, requested: Revision) -> NodeResult<Revision> {
        let current = self.current_revision().await?;
        if requested > current {
            return Err(NodeError::Kv(KvError::FutureRevision {
                requested,
                current,
            }));
        }
        Ok(if requested == 0 { current } else { requested })
    }

    /// Compacts history below `revision` on every shard (each shard at its
    /// own entry; reads below `revision` fail once the call returns).
    ///
    /// # Errors
    /// [`KvError::FutureRevision`] above the current revision,
    /// [`KvError::Compacted`] at or below an earlier compaction.
    pub async fn compact(&self, revision: Revision) -> NodeResult<Applied> {
        let current = self.current_revision().await?;
        if revision > current {
            return Err(NodeError::Kv(KvError::FutureRevision {
                requested: revision,
                current,
            }));
        }
        let mut last = None;
        for shard in 0..self.node.shards {
            // Each shard's entry gets a revision above the compaction point
            // (the replica observes it when it proposes the entry).
            let applied = self
                .write_at_leader(shard, Entry::Compact { revision })
                .await?;
            last = Some(match last {
                Some(Applied {
                    revision: before, ..
                }) if before > applied.revision => Applied {
                    revision: before,
                    ..applied
                },
                _ => applied,
            });
        }
        last.ok_or(NodeError::Shutdown)
    }
}

/// What arrives at a core from outside it.
enum Ingress {
    /// A call for one of the node's shards.
    Call(CoreCall),
    /// A task to run on the core (see [`Node::spawn_on`]).
    Spawn(CoreTask),
    /// Tasks to run on the core, sent together (see
    /// [`Node::spawn_all_on`]).
    SpawnAll(Vec<CoreTask>),
}

/// Makes a future on the core it is sent to (the future need not be `Send`).
pub type CoreTask =
    Box<dyn FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> + Send>;

/// What one core starts with.
struct CoreSetup {
    node_id: u64,
    core: usize,
    core_count: usize,
    owned: Vec<usize>,
    shards: usize,
    config: NodeConfig,
    view: ClusterView,
    marks: Arc<Watermarks>,
    metrics: Arc<NodeMetrics>,
    space: Arc<NodeSpace>,
    ingress: flume::Receiver<Ingress>,
    mesh_out: Vec<Option<SharedSender<CoreCall>>>,
    mesh_in: Vec<SharedReceiver<CoreCall>>,
    ready: flume::Sender<NodeResult<()>>,
}

/// The cluster this node follows: its directory's `members` file, else the
/// list a joining member was given (recorded now), else the list the
/// cluster was created with. A member that was removed does not start.
fn open_view(config: &NodeConfig) -> NodeResult<ClusterView> {
    let bootstrap = &config.cluster;
    let recorded = membership::read_file(&config.data_dir, bootstrap.id, bootstrap.me)
        .map_err(NodeError::Start)?;
    let current = match (recorded, &config.joining) {
        (Some(recorded), _) => recorded,
        (None, Some(joining)) => {
            let joining = Cluster {
                id: bootstrap.id,
                me: bootstrap.me,
                ..joining.clone()
            };
            membership::write_file(&config.data_dir, &joining).map_err(NodeError::Start)?;
            joining
        }
        (None, None) => bootstrap.clone(),
    };
    if current.was_removed(current.me) {
        return Err(NodeError::Start(format!(
            "member {:x} was removed from the cluster: its data directory cannot serve again \
             (add it as a new member on an empty directory)",
            current.me
        )));
    }
    Ok(ClusterView::new(current, &config.data_dir))
}

pub(crate) fn shard_dir(data_dir: &Path, shard: usize) -> PathBuf {
    data_dir.join(format!("shard-{shard:03}"))
}

/// One core's life: open its shards, serve, shut them down.
async fn run_core(setup: CoreSetup) {
    let CoreSetup {
        node_id,
        core,
        core_count,
        owned,
        shards,
        config,
        view,
        marks,
        metrics,
        space,
        ingress,
        mesh_out,
        mesh_in,
        ready,
    } = setup;
    // Connect the mesh first: every core must, even one whose shards fail.
    // A connect waits for the other end, so this core's receiving ends
    // connect in tasks of their own while its sending ends connect.
    let receiving: Vec<_> = mesh_in
        .into_iter()
        .map(|receiver| glommio::spawn_local(receiver.connect()))
        .collect();
    let mut peers = Vec::with_capacity(core_count);
    for sender in mesh_out {
        peers.push(match sender {
            Some(sender) => Some(Rc::new(sender.connect().await)),
            None => None,
        });
    }
    let mut inbound = Vec::with_capacity(receiving.len());
    for receiver in receiving {
        inbound.push(receiver.await);
    }
    let router = Rc::new(CoreRouter::new(core, core_count, peers));
    router::enter_core(node_id, core, router.clone());
    let bootstrap = Arc::new(config.cluster.clone());
    // Before any shard opens: replay may already send.
    let transport = match &config.transport {
        None => None,
        Some(factory) => {
            let inbox = PeerInbox::new(
                router.clone(),
                view.clone(),
                bootstrap.clone(),
                shards,
                &config.data_dir,
                marks.clone(),
                config.clock.clone(),
            );
            match factory.start(core, inbox) {
                Ok(transport) => Some(transport),
                Err(error) => {
                    // The node does not start; the other cores stop once
                    // it drops their channels.
                    let _ = ready.send(Err(NodeError::Start(format!("core {core}: {error}"))));
                    router::leave_core();
                    router.close();
                    return;
                }
            }
        }
    };
    let mut replicas = Vec::new();
    for shard in owned {
        let replica_config = ReplicaConfig {
            shard,
            shards,
            cores: core_count,
            tree_sync: config.tree_sync,
            wal: config.wal.clone(),
            tree: config.tree.clone(),
            clock: config.clock.clone(),
            space: space.clone(),
            bootstrap: bootstrap.clone(),
            view: view.clone(),
            replicated: config.transport.is_some(),
            metrics: metrics
                .shard(shard)
                .cloned()
                .unwrap_or_else(|| Arc::new(ShardMetrics::new(shard, core))),
        };
        let dir = shard_dir(&config.data_dir, shard);
        let (tx, rx) = flume::unbounded();
        router.add_local(shard, tx);
        // Every event of the shard's replica (raft-rs' too) carries its
        // shard, member and term (`figures.rs` records the term).
        let span = tracing::info_span!(
            "shard",
            shard,
            member = %format_args!("{:x}", config.cluster.me),
            term = tracing::field::Empty
        );
        let opened = Replica::open(
            &dir,
            replica_config,
            marks.clone(),
            router.clone(),
            transport.clone(),
        )
        .instrument(span.clone());
        match opened.await {
            Ok(mut replica) => {
                replica.replay().instrument(span.clone()).await;
                replicas.push(glommio::spawn_local(replica.run(rx).instrument(span)));
            }
            // The node still starts: its other shards serve, and this one
            // answers every call with why it stopped.
            Err(error) => {
                let reason = error.to_string();
                tracing::error!(shard, %reason, "shard stopped at start");
                replicas.push(glommio::spawn_local(replica::serve_stopped(
                    shard, reason, rx,
                )));
            }
        }
    }
    let _ = ready.send(Ok(()));
    // Serve (even after a failed start, so the mesh stays whole until the
    // node drops its handle and every core shuts down together).
    let mut forwarders = Vec::new();
    for receiver in inbound {
        let router = router.clone();
        forwarders.push(glommio::spawn_local(async move {
            while let Some(call) = receiver.recv().await {
                router.deliver_local(call);
            }
        }));
    }
    while let Ok(message) = ingress.recv_async().await {
        match message {
            Ingress::Call(call) => router.route(call).await,
            Ingress::Spawn(task) => drop(glommio::spawn_local(task()).detach()),
            Ingress::SpawnAll(tasks) => {
                for task in tasks {
                    drop(glommio::spawn_local(task()).detach());
                }
            }
        }
    }
    // Shutting down: close the mesh so peers' forwarders end, and this
    // core's shard channels so its replicas drain and stop.
    router::leave_core();
    router.close();
    for forwarder in forwarders {
        forwarder.await;
    }
    for replica in replicas {
        replica.await;
    }
}

/// The bytes of a range answer's pairs, as an answer limit counts them.
pub(crate) fn answer_bytes(answer: &RangeResponse) -> usize {
    answer
        .kvs
        .iter()
        .map(crate::mvcc::answer_size)
        .fold(0, usize::saturating_add)
}
