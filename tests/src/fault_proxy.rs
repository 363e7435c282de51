//! A TCP proxy in front of one member's peer ports, for fault tests
//! (`tc netem` is not available on these machines; etcd's robustness suite
//! proxies peer traffic the same way). Core `c`'s proxy port forwards to the
//! member's peer port plus `c`. Each connection's hello names its sender
//! (net/PROTOCOL.md, "Peer protocol"), so faults are set per directed link
//! `from -> to`:
//!
//! - **blackhole**: nothing more is read from the sender until the link
//!   mends, as a partition does to TCP (the sender's writes succeed until
//!   its buffers fill, then block; after the partition the stream goes on
//!   where it stopped);
//! - **delay**: every chunk waits before it is forwarded (order is kept);
//! - **drop**: each chunk is lost with a chance, which breaks the stream's
//!   framing (the receiver's checksum finds it and closes the connection);
//! - **reset**: open connections are cut at once.
//!
//! Threads only: a proxy needs no runtime.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};

/// Bytes of a peer hello (net/PROTOCOL.md).
const HELLO_BYTES: usize = 44;

/// What happens to one directed link's bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkFault {
    /// Pass nothing on until the link mends.
    pub blackhole: bool,
    /// Hold each chunk this long.
    pub delay: Duration,
    /// Chance a chunk is lost.
    pub drop: f64,
}

#[derive(Default)]
struct Shared {
    /// Faults by sender (this proxy's member is the addressee).
    faults: Mutex<HashMap<u64, LinkFault>>,
    /// Open connections by sender, to reset.
    open: Mutex<Vec<(u64, TcpStream)>>,
    stopped: AtomicBool,
    forwarded: AtomicU64,
    lost: AtomicU64,
}

/// The proxy of one member.
pub struct FaultProxy {
    shared: Arc<Shared>,
    /// The ports it listens on, by core.
    pub ports: Vec<u16>,
}

impl FaultProxy {
    /// Takes connections on `listen` (one listener per core) and forwards
    /// core `c`'s to `target`'s port plus `c`.
    ///
    /// # Panics
    /// When a listener's port cannot be read.
    pub fn start(listen: Vec<TcpListener>, target: SocketAddr, seed: u64) -> FaultProxy {
        let shared = Arc::new(Shared::default());
        let mut ports = Vec::new();
        for (core, listener) in listen.into_iter().enumerate() {
            ports.push(listener.local_addr().expect("proxy port").port());
            let mut upstream = target;
            upstream.set_port(target.port() + core as u16);
            let shared = shared.clone();
            let seed = seed.wrapping_add(core as u64);
            std::thread::spawn(move || accept_loop(listener, upstream, shared, seed));
        }
        FaultProxy { shared, ports }
    }

    /// Sets the fault of the link from member `from` to this one.
    pub fn set_fault(&self, from: u64, fault: LinkFault) {
        let mut faults = self.shared.faults.lock().unwrap_or_else(|e| e.into_inner());
        if fault == LinkFault::default() {
            faults.remove(&from);
        } else {
            faults.insert(from, fault);
        }
    }

    /// Clears every fault.
    pub fn heal(&self) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Cuts every open connection from `from` (all senders: `None`).
    pub fn reset(&self, from: Option<u64>) {
        let mut open = self.shared.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|(sender, stream)| {
            if from.is_none_or(|f| f == *sender) {
                let _ = stream.shutdown(Shutdown::Both);
                false
            } else {
                true
            }
        });
    }

    /// Bytes forwarded and chunks lost so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.shared.forwarded.load(Ordering::Relaxed),
            self.shared.lost.load(Ordering::Relaxed),
        )
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Relaxed);
        self.reset(None);
    }
}

fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>, seed: u64) {
    let _ = listener.set_nonblocking(true);
    let mut n = 0u64;
    while !shared.stopped.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((client, _)) => {
                let _ = client.set_nonblocking(false);
                let shared = shared.clone();
                n += 1;
                let seed = seed.wrapping_mul(1_000_003).wrapping_add(n);
                std::thread::spawn(move || {
                    let _ = forward(client, upstream, &shared, seed);
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Forwards one connection: its hello, then chunks, each through the
/// link's fault.
fn forward(
    mut client: TcpStream,
    upstream: SocketAddr,
    shared: &Shared,
    seed: u64,
) -> std::io::Result<()> {
    let mut hello = [0u8; HELLO_BYTES];
    let (magic, rest) = hello.split_at_mut(8);
    client.read_exact(magic)?;
    if magic == b"KEELJOIN" {
        return relay_join(client, upstream, magic);
    }
    client.read_exact(rest)?;
    // magic 8, version 2, core 2, shards 2, cores 2, cluster 8, then the
    // sender's id.
    let mut from = [0u8; 8];
    from.copy_from_slice(&hello[24..32]);
    let from = u64::from_le_bytes(from);
    let mut server = TcpStream::connect_timeout(&upstream, Duration::from_secs(1))?;
    server.set_nodelay(true)?;
    server.write_all(&hello)?;
    {
        let mut open = shared.open.lock().unwrap_or_else(|e| e.into_inner());
        open.push((from, client.try_clone()?));
        open.push((from, server.try_clone()?));
    }
    let pumped = pump(&mut client, &mut server, from, shared, seed);
    // Both ends close, whichever failed: the copies kept for `reset` would
    // otherwise hold the sender's connection open with nobody reading it.
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
    pumped
}

/// A joining member's question and the member's answer, relayed both
/// ways as they are (the joiner is no member yet: no link's fault is its).
fn relay_join(mut client: TcpStream, upstream: SocketAddr, magic: &[u8]) -> std::io::Result<()> {
    let mut server = TcpStream::connect_timeout(&upstream, Duration::from_secs(1))?;
    server.write_all(magic)?;
    let (mut from_server, mut to_client) = (server.try_clone()?, client.try_clone()?);
    let answers = std::thread::spawn(move || std::io::copy(&mut from_server, &mut to_client));
    let asked = std::io::copy(&mut client, &mut server);
    let _ = server.shutdown(Shutdown::Write);
    let _ = answers.join();
    let _ = client.shutdown(Shutdown::Both);
    asked.map(|_| ())
}

/// Copies the sender's bytes to the member through the link's fault, until
/// either end closes.
fn pump(
    client: &mut TcpStream,
    server: &mut TcpStream,
    from: u64,
    shared: &Shared,
    seed: u64,
) -> std::io::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut chunk = vec![0u8; 64 << 10];
    let fault_now = || {
        shared
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&from)
            .copied()
            .unwrap_or_default()
    };
    loop {
        // A partition: the sender's bytes wait in the network.
        while fault_now().blackhole {
            if shared.stopped.load(Ordering::Relaxed) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let n = client.read(&mut chunk)?;
        if n == 0 || shared.stopped.load(Ordering::Relaxed) {
            return Ok(());
        }
        let fault = fault_now();
        if fault.blackhole {
            // Read just before the partition began: it waits with the rest.
            while fault_now().blackhole && !shared.stopped.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if fault.drop > 0.0 && rng.gen_bool(fault.drop.min(1.0)) {
            shared.lost.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if !fault.delay.is_zero() {
            std::thread::sleep(fault.delay);
        }
        server.write_all(&chunk[..n])?;
        shared.forwarded.fetch_add(n as u64, Ordering::Relaxed);
    }
}
