//! A cluster of [`Node`]s in one process over a [`MemNet`]: each member
//! has its own data directory and executors, and can be stopped and
//! started again. Writes follow the not-leader hints the way a client
//! does.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future::block_on;
use keel_engine::hlc::WallClock;
use keel_engine::mvcc::{Applied, PutRequest, RangeRequest, RangeResponse, Revision};
use keel_engine::shard::{Cluster, Consistency, MemberChange, Node, NodeError, ShardStatus};

use crate::mem_net::MemNet;
use crate::{node_config, timeout};

/// How long one call may take before the cluster's helpers give up on
/// it (the write's outcome is then unknown).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// The members' names, in order: `m0`, `m1`, ...
fn name(i: usize) -> String {
    format!("m{i}")
}

/// A cluster of in-process members.
pub struct InProcessCluster {
    /// The network between them.
    pub net: MemNet,
    /// Every member's cluster as it was created (a member that joined
    /// later: the cluster's first list, and its own id), by member index.
    pub members: Vec<Cluster>,
    /// For members that joined a running cluster: the list they were
    /// given when they joined.
    joining: Vec<Option<Cluster>>,
    dirs: Vec<PathBuf>,
    /// Each member's wall clock, when the test gave one.
    clocks: Vec<Option<Arc<dyn WallClock>>>,
    nodes: Vec<Option<Node>>,
    shards: usize,
    cores: usize,
    _root: tempfile::TempDir,
}

/// A member added to the list and not started yet.
#[derive(Debug)]
pub struct Joiner {
    /// The cluster as it was created, with the new member's id.
    pub created: Cluster,
    /// The member list as the change left it.
    pub list: Cluster,
}

/// What a write through the cluster came to.
#[derive(Debug)]
pub enum Outcome {
    /// Acknowledged.
    Applied(Applied),
    /// Refused before it could take effect (no leader took it).
    Refused(NodeError),
    /// It may or may not take effect: no answer in time.
    Unknown,
}

impl InProcessCluster {
    /// Starts `size` members with `shards` shards over `cores` cores each.
    ///
    /// # Panics
    /// When a member does not start.
    pub fn start(size: usize, shards: usize, cores: usize, seed: u64) -> InProcessCluster {
        Self::start_with_clocks(size, shards, cores, seed, vec![None; size])
    }

    /// Starts `size` members as [`InProcessCluster::start`] does, member
    /// `i` stamping revisions from `clocks[i]` (the system clock for
    /// `None`): clocks that disagree, as hosts' do.
    ///
    /// # Panics
    /// When a member does not start.
    pub fn start_with_clocks(
        size: usize,
        shards: usize,
        cores: usize,
        seed: u64,
        clocks: Vec<Option<Arc<dyn WallClock>>>,
    ) -> InProcessCluster {
        let root = tempfile::tempdir().expect("temp dir");
        let initial: Vec<(String, String)> =
            (0..size).map(|i| (name(i), format!("mem:{i}"))).collect();
        let members: Vec<Cluster> = (0..size)
            .map(|i| Cluster::bootstrap(&name(i), &initial, "test").expect("bootstrap"))
            .collect();
        let dirs = (0..size).map(|i| root.path().join(name(i))).collect();
        let mut cluster = InProcessCluster {
            net: MemNet::new(seed),
            members,
            joining: vec![None; size],
            dirs,
            clocks,
            nodes: (0..size).map(|_| None).collect(),
            shards,
            cores,
            _root: root,
        };
        for i in 0..size {
            cluster.start_member(i);
        }
        cluster
    }

    /// The number of members.
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// The shard count.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// Member `i`'s id.
    pub fn id(&self, i: usize) -> u64 {
        self.members[i].me
    }

    /// Every member's id.
    pub fn ids(&self) -> Vec<u64> {
        (0..self.size()).map(|i| self.id(i)).collect()
    }

    /// The index of the member with id `id`.
    pub fn index_of(&self, id: u64) -> Option<usize> {
        (0..self.size()).find(|i| self.id(*i) == id)
    }

    /// Starts member `i` (again) on its directory.
    ///
    /// # Panics
    /// When it does not start.
    pub fn start_member(&mut self, i: usize) {
        let mut config = keel_engine::shard::NodeConfig {
            cluster: self.members[i].clone(),
            joining: self.joining[i].clone(),
            transport: Some(self.net.factory(self.members[i].me)),
            ..node_config(&self.dirs[i], self.shards, self.cores)
        };
        if let Some(Some(clock)) = self.clocks.get(i) {
            config.clock = clock.clone();
        }
        self.nodes[i] = Some(Node::start(config).expect("member starts"));
    }

    /// Makes `change` through the first running member that takes it,
    /// trying again while the previous change is under way or a leader is
    /// missing, for up to 30 s.
    ///
    /// # Errors
    /// The last refusal.
    pub fn change_members(&self, change: MemberChange) -> Result<(u64, Arc<Cluster>), NodeError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut at = 0;
        // A change whose outcome is unknown (its write lost with messages)
        // may have been made: the newest list tells, before it is made
        // again.
        let mut maybe_made = false;
        loop {
            if maybe_made {
                if let Some(done) = self.made_in_newest_list(&change) {
                    return Ok(done);
                }
            }
            let refusal = match self.node(at % self.size()) {
                None => None,
                Some(node) => match with_timeout_long(node.client().change_members(change.clone()))
                {
                    Some(Ok(done)) => return Ok(done),
                    Some(Err(e)) => Some(e),
                    None => Some(NodeError::OutcomeUnknown { shard: 0 }),
                },
            };
            let retry = match &refusal {
                None => true,
                Some(NodeError::InvalidRequest(why)) => {
                    why.contains("still changing") || why.contains("not caught up")
                }
                Some(NodeError::Kv(keel_engine::mvcc::KvError::MembersChanged { .. })) => true,
                Some(NodeError::NotLeader { .. } | NodeError::NoLeader { .. }) => true,
                Some(NodeError::OutcomeUnknown { .. }) => {
                    maybe_made = true;
                    true
                }
                Some(_) => false,
            };
            match refusal {
                Some(e) if !retry || Instant::now() >= deadline => return Err(e),
                _ => {}
            }
            at += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The id `change` concerns and the newest list any running member
    /// follows, if that list shows the change made.
    fn made_in_newest_list(&self, change: &MemberChange) -> Option<(u64, Arc<Cluster>)> {
        let list = (0..self.size())
            .filter_map(|i| self.node(i))
            .map(|node| node.client().cluster())
            .max_by_key(|list| list.revision)?;
        let id = match change {
            MemberChange::Add { name, .. } => list.members.iter().find(|m| m.name == *name)?.id,
            MemberChange::Promote(id) => list.member(*id).filter(|m| !m.learner)?.id,
            MemberChange::Remove(id) => list.was_removed(*id).then_some(*id)?,
            MemberChange::Update { id, peer_address } => {
                list.member(*id)
                    .filter(|m| m.peer_address == *peer_address)?
                    .id
            }
        };
        Some((id, list))
    }

    /// Adds a member to the list (a learner unless `learner` is false);
    /// [`InProcessCluster::start_joiner`] starts it.
    ///
    /// # Panics
    /// When the change is refused.
    pub fn add_member(&self, learner: bool) -> Joiner {
        let i = self.size();
        let change = MemberChange::Add {
            name: name(i),
            peer_address: format!("mem:{i}"),
            learner,
        };
        let (id, list) = self.change_members(change).expect("member added");
        Joiner {
            created: Cluster {
                me: id,
                ..self.members[0].clone()
            },
            list: (*list).clone(),
        }
    }

    /// Starts a member added by [`InProcessCluster::add_member`] on an
    /// empty directory, as `--initial-cluster-state existing` does;
    /// answers its index.
    ///
    /// # Panics
    /// When it does not start.
    pub fn start_joiner(&mut self, joiner: Joiner) -> usize {
        let i = self.size();
        self.members.push(joiner.created);
        self.joining.push(Some(joiner.list));
        self.dirs.push(self._root.path().join(name(i)));
        self.clocks.push(None);
        self.nodes.push(None);
        self.start_member(i);
        i
    }

    /// Waits until each of `members` follows the newest member list any
    /// of them has, and has every shard's Raft configuration at it (none
    /// joint).
    ///
    /// # Panics
    /// After `within` without.
    pub fn wait_until_settled(&self, members: &[usize], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let mut unsettled = Vec::new();
            let newest = members
                .iter()
                .filter_map(|i| self.node(*i))
                .map(|n| n.client().cluster().revision)
                .max()
                .unwrap_or(0);
            for &i in members {
                let Some(node) = self.node(i) else {
                    unsettled.push(format!("m{i}: not running"));
                    continue;
                };
                let list = node.client().cluster();
                if list.revision != newest {
                    unsettled.push(format!("m{i}: list {} of {newest}", list.revision));
                }
                let mut voters = list.voters();
                let mut learners = list.learners();
                voters.sort_unstable();
                learners.sort_unstable();
                let Some(statuses) = self.status(i) else {
                    unsettled.push(format!("m{i}: no status"));
                    continue;
                };
                for status in statuses {
                    let (mut v, mut l) = (status.voters.clone(), status.learners.clone());
                    v.sort_unstable();
                    l.sort_unstable();
                    if v != voters || l != learners || !status.voters_outgoing.is_empty() {
                        unsettled.push(format!(
                            "m{i} shard {}: voters {v:x?} learners {l:x?} leaving {:x?}, list {voters:x?} {learners:x?}",
                            status.shard, status.voters_outgoing
                        ));
                    }
                }
            }
            if unsettled.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not settled after {within:?}: {unsettled:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops member `i` (its shards make their trees durable first).
    pub fn stop_member(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.shutdown();
        }
    }

    /// Member `i`'s node, if running.
    pub fn node(&self, i: usize) -> Option<&Node> {
        self.nodes[i].as_ref()
    }

    /// Member `i`'s shard statuses, if it runs and answers in time.
    pub fn status(&self, i: usize) -> Option<Vec<ShardStatus>> {
        let node = self.node(i)?;
        with_timeout(node.client().status()).and_then(Result::ok)
    }

    /// The member index leading `shard` as a majority of the running
    /// members sees it.
    pub fn leader_of(&self, shard: usize) -> Option<usize> {
        let named = (0..self.size())
            .filter_map(|i| self.status(i))
            .filter_map(|statuses| statuses.get(shard).map(|s| s.leader));
        let leader = self.index_of(crate::majority_leader(named, self.size())?)?;
        self.node(leader).is_some().then_some(leader)
    }

    /// Waits until every shard has a leader a majority agrees on.
    ///
    /// # Panics
    /// After `within` without.
    pub fn wait_for_leaders(&self, within: Duration) -> Vec<usize> {
        let deadline = Instant::now() + within;
        loop {
            let leaders: Vec<Option<usize>> = (0..self.shards).map(|s| self.leader_of(s)).collect();
            if leaders.iter().all(Option::is_some) {
                return leaders.into_iter().flatten().collect();
            }
            assert!(
                Instant::now() < deadline,
                "no leader for every shard after {within:?}: {leaders:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Puts `key = value` through member `first`, following not-leader
    /// hints to other running members, until `deadline`.
    pub fn put(&self, first: usize, key: &[u8], value: &[u8], deadline: Instant) -> Outcome {
        let request = PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..PutRequest::default()
        };
        self.put_request(first, request, deadline)
    }

    /// Puts `request` as [`InProcessCluster::put`] does.
    pub fn put_request(&self, first: usize, request: PutRequest, deadline: Instant) -> Outcome {
        let mut at = first;
        let mut last_refusal = None;
        while Instant::now() < deadline {
            let Some(node) = self.node(at) else {
                at = (at + 1) % self.size();
                continue;
            };
            match with_timeout(node.put(request.clone())) {
                Some(Ok(applied)) => return Outcome::Applied(applied),
                // The write may still take effect: its outcome is unknown.
                None => return Outcome::Unknown,
                // Proposed, and replaced by another leader's entry: it may
                // still commit through a member that kept it.
                Some(Err(NodeError::OutcomeUnknown { .. })) => return Outcome::Unknown,
                Some(Err(NodeError::NotLeader { leader, .. })) => {
                    let hinted = self.index_of(leader).filter(|i| self.node(*i).is_some());
                    at = hinted.unwrap_or((at + 1) % self.size());
                    if hinted.is_none() {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    last_refusal = Some(NodeError::NotLeader { shard: 0, leader });
                }
                Some(Err(other)) => return Outcome::Refused(other),
            }
        }
        match last_refusal {
            Some(refusal) => Outcome::Refused(refusal),
            None => Outcome::Unknown,
        }
    }

    /// Writes 7,000 entries of 2 KiB through member `leader` (past a
    /// leader's 5,000-entry catch-up tail, in 4 MiB WAL segments that tree
    /// syncs release; keys `w0/0` to `w3/1749`), then waits long enough for
    /// a tree sync to release the WAL below the tail: a member that missed
    /// them can only catch up by snapshot.
    ///
    /// # Panics
    /// When a write is not acknowledged.
    pub fn write_past_the_catch_up_tail(&self, leader: usize) {
        let value = vec![b'x'; 2048];
        let deadline = Instant::now() + Duration::from_secs(120);
        std::thread::scope(|scope| {
            for writer in 0..4 {
                let value = &value;
                scope.spawn(move || {
                    for n in 0..1_750 {
                        let key = format!("w{writer}/{n}");
                        match self.put(leader, key.as_bytes(), value, deadline) {
                            Outcome::Applied(_) => {}
                            other => panic!("{key}: {other:?}"),
                        }
                    }
                });
            }
        });
        std::thread::sleep(Duration::from_secs(2));
    }

    /// Reads `key` on member `i`.
    pub fn get(
        &self,
        i: usize,
        key: &[u8],
        consistency: Consistency,
    ) -> Option<Result<(Revision, RangeResponse), NodeError>> {
        let node = self.node(i)?;
        let request = RangeRequest {
            key: key.to_vec(),
            ..RangeRequest::default()
        };
        with_timeout(node.range(request, consistency))
    }
}

impl Drop for InProcessCluster {
    fn drop(&mut self) {
        for i in 0..self.size() {
            self.stop_member(i);
        }
    }
}

/// Runs `call`, or gives up after 15 s (a membership change may wait for
/// an election).
pub fn with_timeout_long<T>(call: impl std::future::Future<Output = T>) -> Option<T> {
    block_on(futures_lite::future::or(
        async { Some(call.await) },
        async {
            timeout(Duration::from_secs(15)).await;
            None
        },
    ))
}

/// Runs `call`, or gives up after [`CALL_TIMEOUT`].
pub fn with_timeout<T>(call: impl std::future::Future<Output = T>) -> Option<T> {
    block_on(futures_lite::future::or(
        async { Some(call.await) },
        async {
            timeout(CALL_TIMEOUT).await;
            None
        },
    ))
}
