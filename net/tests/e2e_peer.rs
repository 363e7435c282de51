//! The peer port of a real keel against peers that misbehave: a stranger,
//! another cluster, a damaged frame, and a frame whose body never comes
//! (its length damaged on the way). Each connection is closed; none can
//! hold the port's reader.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use std::process::Command;

use keel_engine::shard::{
    encode_message, member_id, Cluster, RaftMessage, RaftMessageType, DEFAULT_TOKEN,
};
use keel_net::peer::wire::{frame_header, push_message, Hello};
use support::Server;

/// Two free consecutive ports (core 0's and core 1's peer ports).
fn free_peer_port() -> u16 {
    for _ in 0..1000 {
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two free ports");
}

/// The connection was closed by the server within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn misbehaving_peers_are_cut_off_and_a_stalled_frame_does_not_hold_the_port() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_peer_port();
    let initial = format!("a=127.0.0.1:{port},b=127.0.0.1:1");
    let listen = format!("127.0.0.1:{port}");
    let server = Server::start(
        dir.path(),
        2,
        &[
            "--name",
            "a",
            "--initial-cluster",
            &initial,
            "--listen-peer",
            &listen,
        ],
    );
    let parts = Cluster::parse_initial(&initial).unwrap();
    let cluster = Cluster::bootstrap("a", &parts, DEFAULT_TOKEN).unwrap();
    let hello = |cluster_id: u64, from: u64| Hello {
        core: 0,
        shards: 2,
        cores: 2,
        cluster: cluster_id,
        from,
        to: member_id("a"),
    };
    let open = |hello: Hello| {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.write_all(&hello.encode()).unwrap();
        stream
    };

    // Not a member, not this cluster: closed at once.
    let mut stranger = open(hello(cluster.id, member_id("c")));
    assert!(closed_within(&mut stranger, Duration::from_secs(5)));
    let mut other_cluster = open(hello(cluster.id ^ 1, member_id("b")));
    assert!(closed_within(&mut other_cluster, Duration::from_secs(5)));

    // A member started with another shard count: refused (it would route
    // keys to other groups).
    let mut other_layout = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut mismatched = hello(cluster.id, member_id("b"));
    mismatched.shards = 4;
    other_layout.write_all(&mismatched.encode()).unwrap();
    assert!(closed_within(&mut other_layout, Duration::from_secs(5)));

    // A heartbeat that commits past the end of the log, which raft-rs
    // would panic on: dropped, and the shard goes on serving.
    let mut liar = open(hello(cluster.id, member_id("b")));
    let mut heartbeat = RaftMessage::default();
    heartbeat.set_msg_type(RaftMessageType::MsgHeartbeat);
    heartbeat.from = member_id("b");
    heartbeat.to = member_id("a");
    heartbeat.term = 5;
    heartbeat.commit = 1_000;
    let mut body = Vec::new();
    push_message(&mut body, 0, &encode_message(&heartbeat));
    liar.write_all(&frame_header(&body)).unwrap();
    liar.write_all(&body).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let status = Command::new(support::keelctl())
        .args([
            "--endpoints",
            &server.endpoint(),
            "endpoint",
            "status",
            "-w",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "the node stopped answering after a bad heartbeat: {}",
        String::from_utf8_lossy(&status.stderr)
    );

    // A frame whose body does not match its checksum.
    let mut damaged = open(hello(cluster.id, member_id("b")));
    let body = vec![7u8; 16];
    let mut header = frame_header(&body);
    header[4] ^= 1;
    damaged.write_all(&header).unwrap();
    damaged.write_all(&body).unwrap();
    assert!(closed_within(&mut damaged, Duration::from_secs(5)));

    // A length that promises a megabyte, and ten bytes of it: the reader
    // gives up on the frame instead of waiting for good.
    let mut stalled = open(hello(cluster.id, member_id("b")));
    let mut header = frame_header(&[]);
    header[..4].copy_from_slice(&(1u32 << 20).to_le_bytes());
    stalled.write_all(&header).unwrap();
    stalled.write_all(&[0u8; 10]).unwrap();
    let began = Instant::now();
    assert!(
        closed_within(&mut stalled, Duration::from_secs(20)),
        "a frame that never completes held its connection for {:?}",
        began.elapsed()
    );
}
