//! The peer transport: the engine's [`Transport`] over TCP (DESIGN.md,
//! "Raft"; net/PROTOCOL.md, "Peer protocol"). Core `c` of every member
//! listens on its peer port plus `c` and connects to the same core of each
//! other member, so a shard's messages never hop between cores: one
//! connection per (peer, core) and direction.

pub mod join;
mod link;
mod snapshot_stream;
mod stream;
pub mod wire;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::Duration;

use futures_lite::AsyncReadExt;
use glommio::net::TcpListener;
use keel_engine::shard::{
    encode_message, CallPart, Cluster, PeerInbox, PinnedSnapshot, RaftMessage, Transport,
    TransportFactory,
};

use self::link::Link;
use self::stream::{PeerStream, PeerTls};
use self::wire::{Hello, WireError, HEADER_BYTES, HELLO_BYTES};

/// How long a failed snapshot stream waits before raft-rs hears of it.
const SNAPSHOT_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// How long a peer has to send its hello once connected.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an inbound connection may carry nothing before it is closed:
/// one from a crashed host, or left from before a partition, would
/// otherwise hold its slot for good. A live sender that was merely quiet
/// connects again when it next has a message.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a frame's body may stall once its header came: a length
/// damaged on the way (and not yet caught by the body's checksum) would
/// otherwise hold the connection waiting for bytes that never come.
const BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// Peer connections one core reads at once; more are closed at accept
/// (each member opens one per core, so this is room for many members and
/// strangers that never say hello).
const MAX_INBOUND: usize = 64;

/// The address of core `core` of a member whose peer port is `base`.
///
/// # Errors
/// An address that does not resolve, or a port past 65535.
pub fn core_address(base: &str, core: usize) -> Result<SocketAddr, String> {
    let address = base
        .to_socket_addrs()
        .map_err(|e| format!("peer address {base:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("peer address {base:?} resolves to nothing"))?;
    let port = usize::from(address.port()) + core;
    let port = u16::try_from(port).map_err(|_| format!("peer port {port} of core {core}"))?;
    Ok(SocketAddr::new(address.ip(), port))
}

/// Starts each core's TCP transport.
#[derive(Debug)]
pub struct PeerTransport {
    /// This member's peer address: core `c` listens on its port plus `c`.
    pub listen: SocketAddr,
    /// Bytes per second each core sends snapshots at; 0 is no limit.
    pub snapshot_send_rate: u64,
    /// TLS between members (`--peer-cert-file`); `None` is plain TCP.
    pub tls: Option<std::sync::Arc<crate::tls::ServerTls>>,
}

impl TransportFactory for PeerTransport {
    fn start(&self, core: usize, inbox: PeerInbox) -> Result<Rc<dyn Transport>, String> {
        let listen = core_address(&self.listen.to_string(), core)?;
        let listener =
            crate::listen::listen(listen).map_err(|e| format!("peer port {listen}: {e}"))?;
        for peer in inbox.cluster().peers() {
            core_address(&peer.peer_address, core)?;
        }
        glommio::spawn_local(accept_loop(listener, core, inbox.clone(), self.tls.clone())).detach();
        let transport = TcpTransport {
            core,
            tls: self.tls.clone(),
            links: RefCell::default(),
            links_for: std::cell::Cell::new(None),
            inbox,
            streaming: Rc::default(),
            snapshot_pacer: Rc::new(snapshot_stream::Pacer::new(self.snapshot_send_rate)),
        };
        transport.follow_list();
        Ok(Rc::new(transport))
    }
}

/// A link to a peer, with the address and hello it was made for.
type PeerLink = (Rc<Link>, SocketAddr, Hello);

/// One core's links to its peers, with each one's address and hello.
struct TcpTransport {
    core: usize,
    tls: PeerTls,
    links: RefCell<HashMap<u64, PeerLink>>,
    /// The member list's revision and the configurations' version the
    /// links were made for (`PeerInbox::cluster_versions`).
    links_for: std::cell::Cell<Option<(u64, u64)>>,
    inbox: PeerInbox,
    /// `(shard, peer)` of the snapshot streams under way: one at a time.
    streaming: Rc<RefCell<HashSet<(usize, u64)>>>,
    /// Paces this core's snapshot streams, all together.
    snapshot_pacer: Rc<snapshot_stream::Pacer>,
}

impl TcpTransport {
    /// Keeps one link per member of the list the node follows: a new
    /// member gets one, a member whose address changed a new one, and a
    /// member that left the list keeps its link while a local shard's
    /// configuration still has it (its removal needs its votes), then is
    /// retired. Cheap when nothing changed.
    fn follow_list(&self) {
        let versions = self.inbox.cluster_versions();
        if self.links_for.get() == Some(versions) {
            return;
        }
        self.links_for.set(Some(versions));
        let cluster = self.inbox.cluster();
        let core = self.core;
        let address_of = |id: u64| {
            cluster
                .member(id)
                .and_then(|m| core_address(&m.peer_address, core).ok())
        };
        let mut links = self.links.borrow_mut();
        links.retain(|id, (link, address, _)| {
            let leaving = cluster.member(*id).is_none() && self.inbox.is_configured(*id);
            let keep = id != &cluster.me && (leaving || address_of(*id) == Some(*address));
            if !keep {
                link.retire();
            }
            keep
        });
        for peer in cluster.peers() {
            if links.contains_key(&peer.id) {
                continue;
            }
            let Some(address) = address_of(peer.id) else {
                tracing::warn!(peer = %format!("{:x}", peer.id), address = %peer.peer_address, "a member's peer address does not resolve");
                continue;
            };
            let hello = Hello {
                snapshot: false,
                core: core as u16,
                shards: self.inbox.shard_count() as u16,
                cores: self.inbox.core_count() as u16,
                cluster: cluster.id,
                from: cluster.me,
                to: peer.id,
            };
            let link = Link::start(
                peer.id,
                address,
                hello,
                self.inbox.clone(),
                self.tls.clone(),
            );
            links.insert(peer.id, (link, address, hello));
        }
    }

    fn link(&self, to: u64) -> Option<PeerLink> {
        self.follow_list();
        self.links.borrow().get(&to).cloned()
    }
}

impl Transport for TcpTransport {
    fn send(&self, shard: usize, message: RaftMessage) {
        // A message to a member no longer listed is dropped: it left.
        if let Some((link, _, _)) = self.link(message.to) {
            link.send(shard, encode_message(&message));
        }
    }

    fn send_call(&self, to: u64, shard: usize, part: CallPart, id: u64, bytes: Vec<u8>) -> bool {
        self.link(to)
            .is_some_and(|(link, _, _)| link.send_call(part, shard, wire::call_bytes(id, &bytes)))
    }

    fn send_snapshot(&self, shard: usize, message: RaftMessage, source: Rc<PinnedSnapshot>) {
        let Some((_, address, hello)) = self.link(message.to) else {
            self.inbox.snapshot_sent(shard, message.to, false);
            return;
        };
        // One stream per shard and peer: raft-rs hears how the first one
        // ended, and sends no other while it waits for that.
        let key = (shard, message.to);
        if !self.streaming.borrow_mut().insert(key) {
            return;
        }
        let hello = Hello {
            snapshot: true,
            ..hello
        };
        let task = snapshot_stream::send(
            address,
            hello,
            shard,
            message,
            source,
            self.snapshot_pacer.clone(),
            self.tls.clone(),
        );
        let (streaming, inbox) = (self.streaming.clone(), self.inbox.clone());
        glommio::spawn_local(async move {
            let delivered = task.await;
            // Done before raft-rs hears, so that the stream it may start
            // at once is not taken for this one.
            streaming.borrow_mut().remove(&key);
            if !delivered {
                // raft-rs tries again as soon as it hears: a peer that
                // refuses at once would otherwise be sent a snapshot
                // hundreds of times a second.
                glommio::timer::sleep(SNAPSHOT_RETRY_PAUSE).await;
            }
            inbox.snapshot_sent(key.0, key.1, delivered);
        })
        .detach();
    }
}

/// Takes peer connections on this core's peer port.
async fn accept_loop(listener: TcpListener, core: usize, inbox: PeerInbox, tls: PeerTls) {
    let open = Rc::new(RefCell::new(0usize));
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(core, %error, "peer accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if *open.borrow() >= MAX_INBOUND {
            drop(stream);
            continue;
        }
        *open.borrow_mut() += 1;
        let (open, inbox, tls) = (open.clone(), inbox.clone(), tls.clone());
        glommio::spawn_local(async move {
            let stream = PeerStream::accept(stream, HELLO_TIMEOUT, tls.as_deref()).await;
            let read = match stream {
                Ok(stream) => read_peer(stream, core, &inbox).await,
                Err(error) => Err(InboundError::Handshake(error)),
            };
            if let Err(error) = read {
                tracing::debug!(core, %error, "peer connection closed");
            }
            *open.borrow_mut() -= 1;
        })
        .detach();
    }
}

/// Why an inbound peer connection was closed.
#[derive(Debug, thiserror::Error)]
enum InboundError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("refused: {0}")]
    Refused(String),
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
}

/// Reads one peer's hello, then its frames, handing each message to its
/// shard. Anything wrong closes the connection; nothing of a frame that
/// fails its checksum, does not parse or names another sender is
/// delivered.
async fn read_peer(
    mut stream: PeerStream,
    core: usize,
    inbox: &PeerInbox,
) -> Result<(), InboundError> {
    stream.set_read_timeout(Some(HELLO_TIMEOUT))?;
    let mut hello = [0u8; HELLO_BYTES];
    let (magic, rest) = hello.split_at_mut(join::JOIN_MAGIC.len());
    stream.read_exact(magic).await?;
    if magic == join::JOIN_MAGIC {
        return answer_join(&mut stream, core, inbox).await;
    }
    stream.read_exact(rest).await?;
    let hello = Hello::decode(&hello)?;
    inbox
        .check_sender(hello.cluster, hello.from)
        .map_err(|e| InboundError::Refused(e.to_string()))?;
    if hello.to != inbox.cluster().me || usize::from(hello.core) != core {
        return Err(InboundError::Refused(format!(
            "a hello for member {:x} core {}, this is member {:x} core {core}",
            hello.to,
            hello.core,
            inbox.cluster().me
        )));
    }
    let (shards, cores) = (inbox.shard_count(), inbox.core_count());
    if usize::from(hello.shards) != shards || usize::from(hello.cores) != cores {
        // Said loudly: the members were started with different --shards or
        // --cores, and cannot work together until they are not.
        tracing::error!(
            peer = %format!("{:x}", hello.from),
            "a member runs {} shards on {} cores, this one {shards} on {cores}: every member \
             must have the same (give --shards and --cores alike)",
            hello.shards,
            hello.cores
        );
        return Err(InboundError::Refused(
            "another shard or core count".to_string(),
        ));
    }
    if hello.snapshot {
        return Ok(snapshot_stream::receive(&mut stream, &hello, inbox).await?);
    }
    loop {
        stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
        let mut header = [0u8; HEADER_BYTES];
        stream.read_exact(&mut header).await?;
        let (len, crc) = wire::read_header(&header)?;
        stream.set_read_timeout(Some(BODY_TIMEOUT))?;
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await?;
        let frame = wire::decode_frame(&body, crc)?;
        let stranger = frame.items.iter().find_map(|item| match item {
            wire::Item::Raft(_, message) if message.from != hello.from => Some(message.from),
            _ => None,
        });
        if let Some(stranger) = stranger {
            return Err(InboundError::Refused(format!(
                "a message from {stranger:x} on {:x}'s connection",
                hello.from
            )));
        }
        inbox.observe_peer_clock(hello.from, frame.clock.wall_millis, frame.clock.revision);
        for item in frame.items {
            let delivered = match item {
                wire::Item::Raft(shard, message) => inbox.deliver(shard as usize, message),
                wire::Item::Call {
                    shard,
                    part,
                    id,
                    bytes,
                } => inbox.deliver_call(shard as usize, hello.from, part, id, bytes),
            };
            delivered.map_err(|e| InboundError::Refused(e.to_string()))?;
        }
    }
}

/// Tells a member joining the cluster what it is (`join.rs`), and closes.
async fn answer_join(
    stream: &mut PeerStream,
    core: usize,
    inbox: &PeerInbox,
) -> Result<(), InboundError> {
    use futures_lite::AsyncWriteExt;
    let name = join::read_request(stream).await?;
    let cluster = inbox.cluster();
    tracing::info!(core, %name, "a member asks to join");
    let answer = join::encode_answer(
        &name,
        inbox.created(),
        &cluster,
        inbox.shard_count(),
        inbox.core_count(),
    );
    stream.write_all(&answer).await?;
    stream.close().await?;
    Ok(())
}

/// The members' addresses must resolve and be distinct per core.
///
/// # Errors
/// The first address that does not resolve.
pub fn check_addresses(cluster: &Cluster, cores: usize) -> Result<(), String> {
    for member in &cluster.members {
        for core in 0..cores {
            core_address(&member.peer_address, core)?;
        }
    }
    Ok(())
}
