//! Watch groups against the real server (docs/server.md, "Watch groups"):
//! watches of one shape on a connection get one message per batch, naming
//! them all; a cancelled watch gets nothing after its answer; a
//! connection too slow for its group leaves it and loses nothing.

mod support;

use std::collections::BTreeSet;
use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use keel_proto::{PutRequest, Request, Response, ResponseBody, WatchCreate};
use support::raw::{connect, read_response, send};
use support::Server;

fn watch(prefix: &[u8], shared_frames: bool) -> Request {
    Request::WatchCreate(WatchCreate {
        key: prefix.to_vec(),
        range_end: keel_proto::routing::prefix_end(prefix),
        shared_frames,
        ..WatchCreate::default()
    })
}

fn put(writer: &mut TcpStream, id: u64, key: &str, value: Vec<u8>) {
    let request = Request::Put(PutRequest {
        key: key.as_bytes().to_vec(),
        value,
        ..PutRequest::default()
    });
    send(writer, id, &request);
    let answer = read_response(writer).expect("a put answer");
    assert!(matches!(answer.body, ResponseBody::Put(_)), "{answer:?}");
}

/// The watches a message is for, and its events' keys.
fn addressees(response: &Response) -> (BTreeSet<u64>, Vec<Vec<u8>>) {
    let ResponseBody::Watch(watch) = &response.body else {
        panic!("expected watch events, got {response:?}");
    };
    let mut ids: BTreeSet<u64> = watch.also_watch_ids.iter().copied().collect();
    ids.insert(response.id);
    let keys = watch.events.iter().map(|e| e.kv.key.clone()).collect();
    (ids, keys)
}

/// Nothing more arrives within `wait`.
fn assert_quiet(stream: &mut TcpStream, wait: Duration) {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("expected nothing more, got {other:?}"),
    }
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
}

#[test]
fn watches_of_one_connection_share_one_message_per_batch() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 2, &[]);
    let mut watcher = connect(&server);
    // 1, 2 and 3 take shared messages; 4 (an older client) does not.
    for id in 1..=3 {
        send(&mut watcher, id, &watch(b"group/", true));
    }
    send(&mut watcher, 4, &watch(b"group/", false));
    let mut created = BTreeSet::new();
    for _ in 0..4 {
        let response = read_response(&mut watcher).unwrap();
        assert!(
            matches!(&response.body, ResponseBody::Watch(w) if w.created),
            "{response:?}"
        );
        created.insert(response.id);
    }
    assert_eq!(created, BTreeSet::from([1, 2, 3, 4]));

    let mut writer = connect(&server);
    put(&mut writer, 100, "group/a", b"1".to_vec());
    let mut seen: Vec<BTreeSet<u64>> = (0..2)
        .map(|_| {
            let (ids, keys) = addressees(&read_response(&mut watcher).unwrap());
            assert_eq!(keys, vec![b"group/a".to_vec()]);
            ids
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![BTreeSet::from([1, 2, 3]), BTreeSet::from([4])],
        "one message for the three that share, one for the other"
    );
    assert_quiet(&mut watcher, Duration::from_millis(300));

    // A cancelled watch is named in nothing after its answer.
    send(&mut watcher, 5, &Request::WatchCancel { watch_id: 2 });
    let answer = read_response(&mut watcher).unwrap();
    assert_eq!(answer.id, 5);
    assert!(matches!(&answer.body, ResponseBody::Watch(w) if w.canceled));
    put(&mut writer, 101, "group/b", b"2".to_vec());
    let mut seen: Vec<BTreeSet<u64>> = (0..2)
        .map(|_| addressees(&read_response(&mut watcher).unwrap()).0)
        .collect();
    seen.sort();
    assert_eq!(seen, vec![BTreeSet::from([1, 3]), BTreeSet::from([4])]);
    assert_quiet(&mut watcher, Duration::from_millis(300));
}

#[test]
fn a_connection_too_slow_for_its_group_leaves_it_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A small outbound buffer, and a long stall timeout so that the slow
    // connection is left behind by its group but not closed.
    let server = Server::start(
        dir.path(),
        2,
        &["--outbound-bytes", "65536", "--stall-timeout-ms", "60000"],
    );
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(16 << 10).unwrap();
    socket.connect(&server.client.into()).unwrap();
    let mut slow: TcpStream = socket.into();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    send(&mut slow, 1, &watch(b"slow/", true));
    assert!(matches!(read_response(&mut slow).unwrap().body, ResponseBody::Watch(w) if w.created));
    let mut fast = connect(&server);
    send(&mut fast, 1, &watch(b"slow/", true));
    assert!(matches!(read_response(&mut fast).unwrap().body, ResponseBody::Watch(w) if w.created));

    // Far more than the slow connection's buffers hold; the fast watcher
    // keeps up while the slow one reads nothing.
    const PUTS: u64 = 3000;
    let value = vec![b'x'; 4096];
    let mut writer = connect(&server);
    let keys: Vec<Vec<u8>> = (0..PUTS)
        .map(|i| format!("slow/{i:05}").into_bytes())
        .collect();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        while got.len() < PUTS as usize {
            let (ids, keys) = addressees(&read_response(&mut fast).expect("events"));
            assert_eq!(ids, BTreeSet::from([1]));
            got.extend(keys);
        }
        got
    });
    for (i, key) in keys.iter().enumerate() {
        put(
            &mut writer,
            i as u64,
            std::str::from_utf8(key).unwrap(),
            value.clone(),
        );
    }
    assert_eq!(
        reader.join().unwrap(),
        keys,
        "the fast watcher, in order, once"
    );

    // The slow one now reads: every event, in order, exactly once (it went
    // on from history after the group let it go).
    let mut got = Vec::new();
    while got.len() < PUTS as usize {
        let (ids, keys) = addressees(&read_response(&mut slow).expect("events"));
        assert_eq!(ids, BTreeSet::from([1]));
        got.extend(keys);
    }
    assert_eq!(got, keys, "the slow watcher, in order, once");
    assert_quiet(&mut slow, Duration::from_millis(300));
}
