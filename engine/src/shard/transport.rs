//! The seam between the shards and the network (DESIGN.md, "Raft"): the
//! engine hands each core's outgoing Raft messages to a [`Transport`] and
//! takes what peers sent through a [`PeerInbox`]. keel's server implements
//! it over TCP (net/); tests implement it in memory with seeded faults. The
//! engine knows no sockets.
//!
//! Contract: `send` never waits. A message the transport cannot take (no
//! connection, a full queue) is dropped and the shard is told its peer is
//! unreachable (`PeerInbox::unreachable`), so Raft probes and resends
//! instead of streaming into the void. Messages of one shard to one peer
//! leave in the order given; Raft tolerates loss, duplication and
//! reordering, so nothing more is promised.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft::eraftpb::Message;

use crate::hlc::WallClock;
use crate::shard::cluster::Cluster;
use crate::shard::membership::ClusterView;
use crate::shard::replica::ShardCall;
use crate::shard::router::{CoreCall, CoreRouter};
use crate::shard::snapshot::PinnedSnapshot;
use crate::shard::watermarks::Watermarks;

/// One core's way to its peers; lives on that core.
pub trait Transport {
    /// Queues `message` of `shard` for member `message.to`. Never waits.
    fn send(&self, shard: usize, message: Message);

    /// Sends a snapshot: `message` (a `MsgSnapshot`) and the tree file
    /// `source` reads as, which stays as it is while the send holds it
    /// (drop it when the send ends: its pin keeps the tree's freed pages
    /// from reuse). The receiver gets them through
    /// [`PeerInbox::deliver_snapshot`] once the whole file is durable on
    /// its side; the sender's shard hears how it ended through
    /// [`PeerInbox::snapshot_sent`], within a bounded time. Never waits.
    fn send_snapshot(&self, shard: usize, message: Message, source: Rc<PinnedSnapshot>);

    /// Queues one part of a call between members (a write carried to its
    /// shard's leader, or the leader's answer) for member `to`: `bytes`
    /// as the engine encoded them, under the call's `id`. Never waits.
    /// Answers whether it was queued; a call dropped later, before it was
    /// written, is reported through [`PeerInbox::call_not_sent`]. Unlike
    /// Raft messages, a call part is never duplicated: the engine would
    /// apply a duplicated write twice.
    fn send_call(&self, to: u64, shard: usize, part: CallPart, id: u64, bytes: Vec<u8>) -> bool;
}

/// Which part of a call between members a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallPart {
    /// A write for the shard's leader to propose.
    Request,
    /// The leader's answer to a request.
    Answer,
}

/// Starts each core's transport, on the core's own thread, once the core
/// can take messages.
pub trait TransportFactory: Send + Sync + std::fmt::Debug {
    /// The transport of `core`, which hands what arrives to `inbox`.
    ///
    /// # Errors
    /// Why it cannot run (a peer port that cannot be bound): the node does
    /// not start.
    fn start(&self, core: usize, inbox: PeerInbox) -> Result<Rc<dyn Transport>, String>;
}

/// Why a peer's message was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerRefusal {
    /// The frame named another cluster.
    #[error("the message is for cluster {got:x}, this is cluster {want:x}")]
    OtherCluster {
        /// The cluster it named.
        got: u64,
        /// This node's cluster.
        want: u64,
    },
    /// The sender is not a member.
    #[error("member {0:x} is not in the cluster")]
    UnknownMember(u64),
    /// The sender was removed from the cluster: it must stop.
    #[error("member {0:x} was removed from the cluster")]
    Removed(u64),
    /// The message is addressed to another member.
    #[error("the message is for member {got:x}, this is {want:x}")]
    NotForMe {
        /// Its addressee.
        got: u64,
        /// This member.
        want: u64,
    },
    /// The bytes are not a Raft message.
    #[error("a malformed Raft message: {0}")]
    Malformed(String),
    /// No such shard.
    #[error("shard {shard} of {shards}")]
    UnknownShard {
        /// The shard it named.
        shard: usize,
        /// The node's shard count.
        shards: usize,
    },
}

/// A Raft message's bytes on the wire (its protobuf encoding, as raft-rs
/// defines it).
pub fn encode_message(message: &Message) -> Vec<u8> {
    use protobuf::Message as _;
    // Encoding a message held in memory fails only for a missing required
    // field, which proto3 messages do not have.
    message.write_to_bytes().unwrap_or_default()
}

/// Reads what [`encode_message`] wrote.
///
/// # Errors
/// [`PeerRefusal::Malformed`] for bytes that are not a Raft message.
pub fn decode_message(bytes: &[u8]) -> Result<Message, PeerRefusal> {
    use protobuf::Message as _;
    Message::parse_from_bytes(bytes).map_err(|e| PeerRefusal::Malformed(e.to_string()))
}

/// How a core's transport hands its shards what peers sent. Checks every
/// message's sender, addressee and shard first: a message from outside the
/// cluster changes nothing.
#[derive(Clone)]
pub struct PeerInbox {
    router: Rc<CoreRouter>,
    view: ClusterView,
    /// The cluster as it was created (a joining member starts from it).
    created: Arc<Cluster>,
    shards: usize,
    data_dir: Rc<PathBuf>,
    marks: Arc<Watermarks>,
    wall: Arc<dyn WallClock>,
    /// When a peer's clock was last said to be too far ahead, by peer.
    skew_warned: Rc<RefCell<HashMap<u64, Instant>>>,
}

/// How often a peer whose clock is too far ahead is logged.
const SKEW_WARN_EVERY: Duration = Duration::from_secs(10);
/// A peer's wall clock this far ahead of this one's is logged: revisions
/// it stamps run ahead of the time they tell, and drag this member's along
/// (HLC). Order does not depend on the clocks (docs/node.md, "Revisions
/// across members"), only what a revision says of its time.
const SKEW_WARN_AT: Duration = Duration::from_millis(500);

impl PeerInbox {
    pub(crate) fn new(
        router: Rc<CoreRouter>,
        view: ClusterView,
        created: Arc<Cluster>,
        shards: usize,
        data_dir: &Path,
        marks: Arc<Watermarks>,
        wall: Arc<dyn WallClock>,
    ) -> PeerInbox {
        PeerInbox {
            router,
            view,
            created,
            shards,
            data_dir: Rc::new(data_dir.to_path_buf()),
            marks,
            wall,
            skew_warned: Rc::default(),
        }
    }

    /// What this node's frames say of its clocks: its wall clock (unix
    /// milliseconds) and the highest revision it applied or heard of.
    pub fn clock_reading(&self) -> (u64, u64) {
        (self.wall.unix_millis(), self.marks.highest_known())
    }

    /// A frame from member `from` said its clocks read `wall_millis` and
    /// `revision` when it was built: this node hears of the revision (HLC
    /// receive) before it takes anything else of the frame, and logs a
    /// peer whose wall clock is far ahead of its own. Only "ahead" can be
    /// told from one frame: the time on the way makes a peer look behind.
    /// The peer that is behind sees the other one ahead.
    pub fn observe_peer_clock(&self, from: u64, wall_millis: u64, revision: u64) {
        // No revision reaches 2^53: heard, one would stop every stamp on
        // every member it spread to.
        if revision < crate::hlc::REVISION_LIMIT {
            self.marks.hear(revision);
        } else {
            tracing::warn!(peer = %format!("{from:x}"), revision, "a frame's revision is past 2^53: not heard");
        }
        let ahead_by = wall_millis.saturating_sub(self.wall.unix_millis());
        if ahead_by <= SKEW_WARN_AT.as_millis() as u64 {
            return;
        }
        let now = Instant::now();
        let mut warned = self.skew_warned.borrow_mut();
        if warned
            .get(&from)
            .is_some_and(|at| now.duration_since(*at) < SKEW_WARN_EVERY)
        {
            return;
        }
        warned.insert(from, now);
        tracing::error!(
            peer = %format!("{from:x}"),
            ahead_ms = ahead_by,
            "a member's wall clock is ahead of this one: revisions run ahead of the time they \
             tell until the clocks agree again (check NTP or chrony on both hosts)"
        );
    }

    /// Where a snapshot of `shard` at `index` from member `from` is to be
    /// received: beside the shard's tree file, on the same file system,
    /// so that installing it is a rename. `None` for a shard this node
    /// does not have.
    pub fn snapshot_path(&self, shard: usize, from: u64, index: u64) -> Option<PathBuf> {
        (shard < self.shards).then(|| {
            crate::shard::node::shard_dir(&self.data_dir, shard)
                .join(format!("snapshot-from-{from:x}-at-{index}.recv"))
        })
    }

    /// Hands a received snapshot to its shard: `message` is its
    /// `MsgSnapshot`, `file` the tree file, complete and synced.
    ///
    /// # Errors
    /// [`PeerRefusal`] as for [`PeerInbox::deliver`], or a message that is
    /// not a snapshot.
    pub fn deliver_snapshot(
        &self,
        shard: usize,
        message: Message,
        file: PathBuf,
    ) -> Result<(), PeerRefusal> {
        self.check_message(shard, &message)?;
        if message.get_msg_type() != raft::eraftpb::MessageType::MsgSnapshot {
            return Err(PeerRefusal::Malformed("not a snapshot message".to_string()));
        }
        self.hand_over(CoreCall {
            shard,
            call: ShardCall::Snapshot {
                message: Box::new(message),
                file,
            },
        });
        Ok(())
    }

    /// Tells `shard` how sending it a snapshot to `peer` ended.
    pub fn snapshot_sent(&self, shard: usize, peer: u64, delivered: bool) {
        if shard < self.shards {
            self.hand_over(CoreCall {
                shard,
                call: ShardCall::SnapshotSent { peer, delivered },
            });
        }
    }

    /// The cluster this node is a member of, as it follows it now.
    pub fn cluster(&self) -> Arc<Cluster> {
        self.view.load()
    }

    /// The revision of the member list this node follows, and a count of
    /// changes to the members its shards' configurations have: cheap
    /// enough to ask on every send, to see that either changed.
    pub fn cluster_versions(&self) -> (u64, u64) {
        self.view.versions()
    }

    /// Whether a local shard's configuration still has member `id` (one
    /// that left the list stays reachable until every shard let it go).
    pub fn is_configured(&self, id: u64) -> bool {
        self.view.is_configured(id)
    }

    /// The cluster as it was created.
    pub fn created(&self) -> &Cluster {
        &self.created
    }

    /// The node's shard count.
    pub fn shard_count(&self) -> usize {
        self.shards
    }

    /// The node's core count.
    pub fn core_count(&self) -> usize {
        self.router.core_count()
    }

    /// Checks that a frame from `from` in cluster `cluster` may be taken.
    ///
    /// # Errors
    /// [`PeerRefusal`] naming the mismatch.
    pub fn check_sender(&self, cluster: u64, from: u64) -> Result<(), PeerRefusal> {
        let current = self.view.load();
        if cluster != current.id {
            return Err(PeerRefusal::OtherCluster {
                got: cluster,
                want: current.id,
            });
        }
        self.check_peer(&current, from)
    }

    /// A member is heard while it is in the list or in a local shard's
    /// configuration (a removed member's votes finish its removal).
    fn check_peer(&self, current: &Cluster, from: u64) -> Result<(), PeerRefusal> {
        if from == current.me {
            return Err(PeerRefusal::UnknownMember(from));
        }
        if current.member(from).is_some() || self.view.is_configured(from) {
            return Ok(());
        }
        if current.was_removed(from) {
            return Err(PeerRefusal::Removed(from));
        }
        Err(PeerRefusal::UnknownMember(from))
    }

    /// Hands `message` to `shard`'s replica, once it is checked.
    ///
    /// # Errors
    /// [`PeerRefusal`] when the message is not for this node's shards.
    pub fn deliver(&self, shard: usize, message: Message) -> Result<(), PeerRefusal> {
        self.check_message(shard, &message)?;
        self.hand_over(CoreCall {
            shard,
            call: ShardCall::Peer(Box::new(message)),
        });
        Ok(())
    }

    fn check_message(&self, shard: usize, message: &Message) -> Result<(), PeerRefusal> {
        if shard >= self.shards {
            return Err(PeerRefusal::UnknownShard {
                shard,
                shards: self.shards,
            });
        }
        let current = self.view.load();
        if message.to != current.me {
            return Err(PeerRefusal::NotForMe {
                got: message.to,
                want: current.me,
            });
        }
        self.check_peer(&current, message.from)
    }

    /// Takes one part of a call from member `from` (checked by
    /// [`PeerInbox::check_sender`]): a request goes to `shard`'s replica,
    /// an answer to the call on this core that waits for it (an answer
    /// nobody waits for any more is dropped).
    ///
    /// # Errors
    /// [`PeerRefusal`] for a shard this node does not have or a request
    /// that does not decode; nothing is delivered.
    pub fn deliver_call(
        &self,
        shard: usize,
        from: u64,
        part: CallPart,
        id: u64,
        bytes: Vec<u8>,
    ) -> Result<(), PeerRefusal> {
        if shard >= self.shards {
            return Err(PeerRefusal::UnknownShard {
                shard,
                shards: self.shards,
            });
        }
        match part {
            CallPart::Answer => self.router.remote_calls().answered(from, id, bytes),
            CallPart::Request => {
                use crate::shard::remote_codec::{decode_request, Request};
                let request =
                    decode_request(&bytes).map_err(|e| PeerRefusal::Malformed(e.to_string()))?;
                let call = match request {
                    Request::Write(entry) => ShardCall::RemoteWrite { from, id, entry },
                    Request::Close(revision) => ShardCall::RemoteClose { from, id, revision },
                    Request::Progress(member) => ShardCall::RemoteProgress { from, id, member },
                    Request::Hash(revision) => ShardCall::RemoteHash { from, id, revision },
                };
                self.hand_over(CoreCall { shard, call });
            }
        }
        Ok(())
    }

    /// A request queued by [`Transport::send_call`] was dropped before it
    /// was written: its caller may send it again.
    pub fn call_not_sent(&self, id: u64) {
        self.router.remote_calls().not_sent(id);
    }

    /// Tells `shard` that `peer` could not be reached (a message to it was
    /// dropped).
    pub fn unreachable(&self, shard: usize, peer: u64) {
        if shard < self.shards {
            self.hand_over(CoreCall {
                shard,
                call: ShardCall::Unreachable { peer },
            });
        }
    }

    fn hand_over(&self, call: CoreCall) {
        // Core c talks to core c, so the shard is normally this core's;
        // with another core count on the peer it goes over the mesh.
        if self.router.owner(call.shard) == self.router.core() {
            self.router.deliver_local(call);
        } else {
            let router = self.router.clone();
            glommio::spawn_local(async move { router.route(call).await }).detach();
        }
    }
}
