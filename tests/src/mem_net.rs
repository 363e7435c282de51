//! An in-memory network for in-process clusters: every core's
//! [`Transport`] sends through one [`MemNet`], which drops, duplicates,
//! delays (and so reorders) messages from a seeded random source, and cuts
//! directed links on demand.
//!
//! The fault schedule is seeded; the thread schedule is not (each node runs
//! its own executors), so a seed reproduces the faults' rates and order of
//! draws, not one exact interleaving.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use keel_engine::btree::CommitImage;
use keel_engine::shard::{
    CallPart, PeerInbox, PinnedSnapshot, RaftMessage, Transport, TransportFactory,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Messages queued for one core before more are dropped (as a full
/// connection queue drops them).
const QUEUE: usize = 16_384;

/// How often each fault strikes a message that is not cut off.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// Chance a message is lost.
    pub drop: f64,
    /// Chance a message arrives twice.
    pub duplicate: f64,
    /// Chance a message is held back, for up to `max_delay`.
    pub delay: f64,
    /// The longest hold-back.
    pub max_delay: Duration,
}

/// What the network did, for tests to check that their faults happened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Messages handed to the network.
    pub sent: u64,
    /// Lost to `Faults::drop`.
    pub dropped: u64,
    /// Lost to a cut link.
    pub cut: u64,
    /// Sent twice.
    pub duplicated: u64,
    /// Held back.
    pub delayed: u64,
    /// Reported unreachable (no such endpoint, or its queue full).
    pub unreachable: u64,
    /// Snapshots sent.
    pub snapshots: u64,
}

struct Delivery {
    shard: usize,
    /// The sender, and its clocks as a frame would carry them.
    from: u64,
    clock: (u64, u64),
    what: What,
}

enum What {
    Raft(RaftMessage),
    /// A snapshot: its message, the image of the sender's pinned tree
    /// (the sender keeps the pin until this is answered or dropped), and
    /// where to say how the send ended.
    Snapshot(RaftMessage, CommitImage, flume::Sender<bool>),
    /// A part of a call between members.
    Call(CallPart, u64, Vec<u8>),
}

struct NetState {
    rng: StdRng,
    faults: Faults,
    /// Directed links `(from, to)` that lose everything.
    cut: HashSet<(u64, u64)>,
    /// Each running core's queue, by `(member, core)`.
    endpoints: HashMap<(u64, usize), flume::Sender<Delivery>>,
    stats: NetStats,
    /// Snapshots fail instead of arriving.
    refuse_snapshots: bool,
}

/// The network; clones share it.
#[derive(Clone)]
pub struct MemNet {
    state: Arc<Mutex<NetState>>,
}

impl std::fmt::Debug for MemNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemNet").finish_non_exhaustive()
    }
}

impl MemNet {
    /// A network with no faults, drawing from `seed` once they are set.
    pub fn new(seed: u64) -> MemNet {
        MemNet {
            state: Arc::new(Mutex::new(NetState {
                rng: StdRng::seed_from_u64(seed),
                faults: Faults::default(),
                cut: HashSet::new(),
                endpoints: HashMap::new(),
                stats: NetStats::default(),
                refuse_snapshots: false,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, NetState> {
        // A test thread that panicked holding the lock leaves sound state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the fault rates.
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// Cuts (or with `false`, mends) the directed link `from -> to`.
    pub fn set_cut(&self, from: u64, to: u64, cut: bool) {
        let mut state = self.lock();
        if cut {
            state.cut.insert((from, to));
        } else {
            state.cut.remove(&(from, to));
        }
    }

    /// Cuts `member` off from every one of `others`, both ways (or mends).
    pub fn isolate(&self, member: u64, others: &[u64], cut: bool) {
        for &other in others.iter().filter(|o| **o != member) {
            self.set_cut(member, other, cut);
            self.set_cut(other, member, cut);
        }
    }

    /// Makes every snapshot send fail (or work again).
    pub fn refuse_snapshots(&self, refuse: bool) {
        self.lock().refuse_snapshots = refuse;
    }

    /// Mends every link and clears every fault.
    pub fn heal(&self) {
        let mut state = self.lock();
        state.cut.clear();
        state.faults = Faults::default();
    }

    /// What the network did so far.
    pub fn stats(&self) -> NetStats {
        self.lock().stats
    }

    /// The transport factory of member `member`.
    pub fn factory(&self, member: u64) -> Arc<dyn TransportFactory> {
        Arc::new(MemFactory {
            net: self.clone(),
            member,
        })
    }
}

#[derive(Debug)]
struct MemFactory {
    net: MemNet,
    member: u64,
}

impl TransportFactory for MemFactory {
    fn start(&self, core: usize, inbox: PeerInbox) -> Result<Rc<dyn Transport>, String> {
        let (sender, receiver) = flume::bounded::<Delivery>(QUEUE);
        // A restarted member replaces its old queue.
        self.net
            .lock()
            .endpoints
            .insert((self.member, core), sender);
        let taker = inbox.clone();
        glommio::spawn_local(async move {
            while let Ok(delivery) = receiver.recv_async().await {
                let (wall_millis, revision) = delivery.clock;
                taker.observe_peer_clock(delivery.from, wall_millis, revision);
                match delivery.what {
                    // What a peer would refuse is dropped, as the TCP
                    // transport drops a frame it refuses.
                    What::Raft(message) => drop(taker.deliver(delivery.shard, message)),
                    What::Snapshot(message, source, done) => {
                        let delivered = receive_snapshot(&taker, delivery.shard, message, &source);
                        let _ = done.send(delivered);
                    }
                    What::Call(part, id, bytes) => {
                        let _ = taker.deliver_call(delivery.shard, delivery.from, part, id, bytes);
                    }
                }
            }
        })
        .detach();
        Ok(Rc::new(MemTransport {
            net: self.net.clone(),
            member: self.member,
            core,
            inbox,
        }))
    }
}

/// Writes a snapshot's image where the receiving member takes it, syncs
/// it, and hands it over: what the TCP transport does over its stream.
fn receive_snapshot(
    inbox: &PeerInbox,
    shard: usize,
    message: RaftMessage,
    source: &CommitImage,
) -> bool {
    let index = message.get_snapshot().get_metadata().index;
    let Some(target) = inbox.snapshot_path(shard, message.from, index) else {
        return false;
    };
    if source.write_to(&target).is_err() {
        let _ = std::fs::remove_file(&target);
        return false;
    }
    inbox.deliver_snapshot(shard, message, target).is_ok()
}

struct MemTransport {
    net: MemNet,
    member: u64,
    core: usize,
    inbox: PeerInbox,
}

/// What the network does with one message.
enum Fate {
    /// Cut off or dropped.
    Lost,
    /// No such member runs.
    Unreachable,
    /// Delivered, `copies` times, after `delay`.
    Deliver {
        sender: flume::Sender<Delivery>,
        copies: usize,
        delay: Option<Duration>,
    },
}

impl MemTransport {
    /// Draws one message's fate to member `to`: cut, dropped, duplicated
    /// (only when `may_duplicate`), delayed.
    fn draw(&self, to: u64, may_duplicate: bool) -> Fate {
        let mut state = self.net.lock();
        state.stats.sent += 1;
        if state.cut.contains(&(self.member, to)) {
            state.stats.cut += 1;
            return Fate::Lost;
        }
        let faults = state.faults;
        if state.rng.gen_bool(faults.drop.clamp(0.0, 1.0)) {
            state.stats.dropped += 1;
            return Fate::Lost;
        }
        let copies = if may_duplicate && state.rng.gen_bool(faults.duplicate.clamp(0.0, 1.0)) {
            state.stats.duplicated += 1;
            2
        } else {
            1
        };
        let delay =
            if !faults.max_delay.is_zero() && state.rng.gen_bool(faults.delay.clamp(0.0, 1.0)) {
                state.stats.delayed += 1;
                Some(state.rng.gen_range(Duration::ZERO..faults.max_delay))
            } else {
                None
            };
        match state.endpoints.get(&(to, self.core)).cloned() {
            Some(sender) => Fate::Deliver {
                sender,
                copies,
                delay,
            },
            None => {
                state.stats.unreachable += 1;
                Fate::Unreachable
            }
        }
    }
}

/// Hands `delivery` to its member's queue now, or after `delay`; answers
/// whether it was queued (a delayed one counts as queued).
fn hand(sender: &flume::Sender<Delivery>, delivery: Delivery, delay: Option<Duration>) -> bool {
    match delay {
        None => sender.try_send(delivery).is_ok(),
        Some(delay) => {
            let sender = sender.clone();
            glommio::spawn_local(async move {
                glommio::timer::sleep(delay).await;
                let _ = sender.try_send(delivery);
            })
            .detach();
            true
        }
    }
}

impl Transport for MemTransport {
    /// Calls meet cuts, drops and delays as messages do, but are never
    /// duplicated: TCP does not duplicate, and the engine counts on it.
    fn send_call(&self, to: u64, shard: usize, part: CallPart, id: u64, bytes: Vec<u8>) -> bool {
        let (sender, delay) = match self.draw(to, false) {
            // Written and lost, as on a connection that then broke.
            Fate::Lost => return true,
            Fate::Unreachable => return false,
            Fate::Deliver { sender, delay, .. } => (sender, delay),
        };
        let delivery = Delivery {
            shard,
            from: self.member,
            clock: self.inbox.clock_reading(),
            what: What::Call(part, id, bytes),
        };
        hand(&sender, delivery, delay)
    }

    fn send_snapshot(&self, shard: usize, message: RaftMessage, source: Rc<PinnedSnapshot>) {
        let to = message.to;
        // The receiver reads the image on its own thread; the pin stays
        // here, held until it answers.
        let Ok(image) = source.image().try_clone() else {
            return self.inbox.snapshot_sent(shard, to, false);
        };
        let sender = {
            let mut state = self.net.lock();
            state.stats.snapshots += 1;
            let cut = state.cut.contains(&(self.member, to)) || state.refuse_snapshots;
            let sender = state.endpoints.get(&(to, self.core)).cloned();
            sender.filter(|_| !cut)
        };
        let (done, outcome) = flume::bounded(1);
        let sent = sender.is_some_and(|sender| {
            sender
                .try_send(Delivery {
                    shard,
                    from: self.member,
                    clock: self.inbox.clock_reading(),
                    what: What::Snapshot(message, image, done),
                })
                .is_ok()
        });
        let inbox = self.inbox.clone();
        glommio::spawn_local(async move {
            // Bounded, as a real send is: a member that never answers
            // counts as a failure.
            let delivered = sent
                && futures_lite::future::or(
                    async { outcome.recv_async().await.unwrap_or(false) },
                    async {
                        glommio::timer::sleep(Duration::from_secs(30)).await;
                        false
                    },
                )
                .await;
            inbox.snapshot_sent(shard, to, delivered);
            // After a timeout the receiver may still read the image: the
            // pin stays until it answers or drops the delivery.
            let _ = outcome.recv_async().await;
            drop(source);
        })
        .detach();
    }

    fn send(&self, shard: usize, message: RaftMessage) {
        let to = message.to;
        let (sender, copies, delay) = match self.draw(to, true) {
            Fate::Lost => return,
            Fate::Unreachable => return self.inbox.unreachable(shard, to),
            Fate::Deliver {
                sender,
                copies,
                delay,
            } => (sender, copies, delay),
        };
        for _ in 0..copies {
            let delivery = Delivery {
                shard,
                from: self.member,
                clock: self.inbox.clock_reading(),
                what: What::Raft(message.clone()),
            };
            if !hand(&sender, delivery, delay) {
                self.net.lock().stats.unreachable += 1;
                self.inbox.unreachable(shard, to);
            }
        }
    }
}
