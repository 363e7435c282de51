//! The peer port of a real keel against peers that misbehave: a stranger,
//! another cluster, a damaged frame, and a frame whose body never comes
//! (its length damaged on the way). Each connection is closed; none can
//! hold the port's reader.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use std::process::Command;

use keel_engine::shard::CallPart;
use keel_engine::shard::{
    encode_message, member_id, Cluster, RaftMessage, RaftMessageType, DEFAULT_TOKEN,
};
use keel_net::peer::wire::{
    call_bytes, frame_header, push_item, push_message, start_frame, Hello, ItemKind, PeerClock,
};
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

/// Member `a` of the cluster {a, b}, whose b the test speaks for: the
/// server, its peer port, and the cluster as a sees it.
fn member_a(dir: &std::path::Path) -> (Server, u16, Cluster) {
    let port = free_peer_port();
    let initial = format!("a=127.0.0.1:{port},b=127.0.0.1:1");
    let listen = format!("127.0.0.1:{port}");
    let server = Server::start(
        dir,
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
    (server, port, cluster)
}

#[test]
fn misbehaving_peers_are_cut_off_and_a_stalled_frame_does_not_hold_the_port() {
    let dir = tempfile::tempdir().unwrap();
    let (server, port, cluster) = member_a(dir.path());
    let hello = |cluster_id: u64, from: u64| Hello {
        snapshot: false,
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
    let mut body = start_frame(PeerClock::default());
    push_message(&mut body, 0, &encode_message(&heartbeat));
    liar.write_all(&frame_header(&body)).unwrap();
    liar.write_all(&body).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    // A write for a shard's leader that is not a command, and an answer
    // to a call nobody made: the first closes the connection, neither
    // changes anything.
    let mut garbage = open(hello(cluster.id, member_id("b")));
    let mut body = start_frame(PeerClock::default());
    push_item(
        &mut body,
        ItemKind::Call(CallPart::Answer),
        0,
        &call_bytes(12345, b"not an answer"),
    );
    push_item(
        &mut body,
        ItemKind::Call(CallPart::Request),
        0,
        &call_bytes(1, b"not a command"),
    );
    garbage.write_all(&frame_header(&body)).unwrap();
    garbage.write_all(&body).unwrap();
    assert!(closed_within(&mut garbage, Duration::from_secs(5)));
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
    let body = vec![7u8; 24];
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

/// Serializable value of `key` on `server`, if it answers with one.
fn local_value(server: &Server, key: &str) -> Option<String> {
    let out = Command::new(support::keelctl())
        .args([
            "--endpoints",
            &server.endpoint(),
            "get",
            key,
            "--consistency",
            "s",
            "--print-value-only",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

#[test]
fn a_snapshot_streamed_to_the_peer_port_is_installed_and_survives_a_restart() {
    // The tree file of a one-member keel holding a key is the snapshot.
    let source_dir = tempfile::tempdir().unwrap();
    let mut source = Server::start(source_dir.path(), 2, &[]);
    let runtime = support::runtime();
    let client =
        support::block_on(&runtime, keel_client::Client::connect(&[source.endpoint()])).unwrap();
    support::block_on(&runtime, client.put("snap-key", "from-snapshot")).unwrap();
    let shard = keel_proto::routing::shard_of(b"snap-key", 2);
    let status = support::block_on(&runtime, client.status()).unwrap();
    // Nothing more is applied before the clean stop makes the tree durable.
    let applied = status.shard_info[shard].applied_index;
    drop(client);
    assert!(source.stop().is_some_and(|s| s.success()));
    let file = source_dir
        .path()
        .join(format!("shard-{shard:03}"))
        .join("kv.db");
    let bytes = std::fs::read(&file).unwrap();

    // Member a of {a, b}; the test speaks for b.
    let dir = tempfile::tempdir().unwrap();
    let (mut server, port, cluster) = member_a(dir.path());
    let core = shard % 2;
    let hello = Hello {
        snapshot: true,
        core: core as u16,
        shards: 2,
        cores: 2,
        cluster: cluster.id,
        from: member_id("b"),
        to: member_id("a"),
    };
    let mut message = RaftMessage::default();
    message.set_msg_type(RaftMessageType::MsgSnapshot);
    message.from = member_id("b");
    message.to = member_id("a");
    message.term = 5;
    let metadata = message.mut_snapshot().mut_metadata();
    metadata.index = applied;
    metadata.term = 5;
    metadata.mut_conf_state().voters = cluster.voters();
    let encoded = encode_message(&message);
    let mut stream = TcpStream::connect(("127.0.0.1", port + core as u16)).unwrap();
    stream.write_all(&hello.encode()).unwrap();
    stream.write_all(&(shard as u32).to_le_bytes()).unwrap();
    stream
        .write_all(&(encoded.len() as u32).to_le_bytes())
        .unwrap();
    stream
        .write_all(&crc32fast::hash(&encoded).to_le_bytes())
        .unwrap();
    stream.write_all(&encoded).unwrap();
    stream
        .write_all(&(bytes.len() as u64).to_le_bytes())
        .unwrap();
    for chunk in bytes.chunks(300_000) {
        stream
            .write_all(&(chunk.len() as u32).to_le_bytes())
            .unwrap();
        stream
            .write_all(&crc32fast::hash(chunk).to_le_bytes())
            .unwrap();
        stream.write_all(chunk).unwrap();
    }
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(answer, [1], "the snapshot was refused");

    let deadline = Instant::now() + Duration::from_secs(10);
    while local_value(&server, "snap-key").is_none() {
        assert!(
            Instant::now() < deadline,
            "the snapshot's key never appeared"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        local_value(&server, "snap-key").as_deref(),
        Some("from-snapshot")
    );
    // The tree is in place and the WAL starts after it.
    server.restart();
    assert_eq!(
        local_value(&server, "snap-key").as_deref(),
        Some("from-snapshot")
    );
    let leftovers: Vec<String> = std::fs::read_dir(dir.path().join(format!("shard-{shard:03}")))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("snapshot-") || name == "install.pending")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
