//! Bad input against the real server: short, oversized and empty frames,
//! messages that fail verification, unknown operations, random and
//! mutated frames, and a client that stops reading. Each gets a typed
//! error or a clean close; the server stays up for everyone else.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use keel_proto::{
    encode_frame, encode_request, fb, ErrorCode, PutRequest, Request, Response, ResponseBody,
    WatchCreate,
};
use support::raw::{connect, read_response, send};
use support::Server;

fn error_code(response: &Response) -> ErrorCode {
    match &response.body {
        ResponseBody::Error(e) => e.code,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// The server closed the connection (a read timeout is a failure).
fn assert_closed(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server must close the connection: {e}"),
    }
}

fn status_works(server: &Server) {
    let mut stream = connect(server);
    send(&mut stream, 9, &Request::Status);
    let answer = read_response(&mut stream).expect("a status answer");
    assert_eq!(answer.id, 9);
    assert!(matches!(answer.body, ResponseBody::Status(_)));
}

#[test]
fn bad_frames_get_a_typed_error_or_a_clean_close() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 2, &[]);

    // A length over the limit: refused before anything is buffered.
    let mut stream = connect(&server);
    stream.write_all(&(3u32 << 20).to_le_bytes()).unwrap();
    let refusal = read_response(&mut stream).unwrap();
    assert_eq!((refusal.id, error_code(&refusal)), (0, ErrorCode::TooLarge));
    assert_closed(&mut stream);

    // An empty frame.
    let mut stream = connect(&server);
    stream.write_all(&0u32.to_le_bytes()).unwrap();
    assert_eq!(
        error_code(&read_response(&mut stream).unwrap()),
        ErrorCode::BadRequest
    );
    assert_closed(&mut stream);

    // Bytes that are not a verified flatbuffer.
    let mut stream = connect(&server);
    let garbage = encode_frame(&[0xff; 64]).unwrap();
    stream.write_all(&garbage).unwrap();
    assert_eq!(
        error_code(&read_response(&mut stream).unwrap()),
        ErrorCode::BadRequest
    );
    assert_closed(&mut stream);

    // A short frame, then the client goes: nothing to answer.
    let mut stream = connect(&server);
    stream.write_all(&100u32.to_le_bytes()).unwrap();
    stream.write_all(&[1, 2, 3]).unwrap();
    drop(stream);

    // An unknown operation: answered by id; the connection goes on.
    let mut stream = connect(&server);
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let body = fb::StatusRequest::create(&mut fbb, &fb::StatusRequestArgs {});
    let request = fb::Request::create(
        &mut fbb,
        &fb::RequestArgs {
            id: 41,
            body_type: fb::RequestBody(99),
            body: Some(body.as_union_value()),
        },
    );
    fbb.finish(request, None);
    stream
        .write_all(&encode_frame(fbb.finished_data()).unwrap())
        .unwrap();
    let refusal = read_response(&mut stream).unwrap();
    assert_eq!(
        (refusal.id, error_code(&refusal)),
        (41, ErrorCode::BadRequest)
    );
    send(&mut stream, 42, &Request::Status);
    assert_eq!(read_response(&mut stream).unwrap().id, 42);

    status_works(&server);
}

#[test]
fn random_and_mutated_frames_never_disturb_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 2, &[]);
    let valid: Vec<Vec<u8>> = [
        Request::Put(PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ..PutRequest::default()
        }),
        Request::Status,
        Request::WatchCreate(WatchCreate {
            key: b"a".to_vec(),
            ..WatchCreate::default()
        }),
        Request::LeaseGrant { id: 0, ttl: 5 },
    ]
    .iter()
    .map(|r| encode_request(1, r))
    .collect();
    let mut rng = StdRng::seed_from_u64(11);
    for round in 0..300 {
        let mut stream = connect(&server);
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut message = valid[round % valid.len()].clone();
        let frame = match rng.next_u64() % 4 {
            0 => {
                for _ in 0..1 + rng.next_u64() % 6 {
                    let at = rng.next_u64() as usize % message.len();
                    message[at] = rng.next_u64() as u8;
                }
                encode_frame(&message).unwrap()
            }
            1 => {
                // A frame whose length prefix lies.
                let mut frame = encode_frame(&message).unwrap();
                frame[0] = rng.next_u64() as u8;
                frame[1] = rng.next_u64() as u8;
                frame
            }
            2 => (0..rng.next_u64() % 300)
                .map(|_| rng.next_u64() as u8)
                .collect(),
            _ => {
                let mut frame = encode_frame(&message).unwrap();
                frame.truncate(rng.next_u64() as usize % frame.len());
                frame
            }
        };
        let _ = stream.write_all(&frame);
        // Take whatever comes back (an answer, an error, a close).
        let mut sink = [0u8; 4096];
        let _ = stream.read(&mut sink);
    }
    status_works(&server);
    // And the keyspace still works.
    let mut stream = connect(&server);
    let put = Request::Put(PutRequest {
        key: b"after".to_vec(),
        value: b"fuzz".to_vec(),
        ..PutRequest::default()
    });
    send(&mut stream, 1, &put);
    assert!(matches!(
        read_response(&mut stream).unwrap().body,
        ResponseBody::Put(_)
    ));
}

#[test]
fn a_client_that_stops_reading_is_disconnected_and_others_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        2,
        &["--outbound-bytes", "65536", "--stall-timeout-ms", "300"],
    );
    // A watcher that never reads, with a small receive buffer so that the
    // kernel does not absorb the flood for it.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(16 << 10).unwrap();
    socket.connect(&server.client.into()).unwrap();
    let mut stalled: TcpStream = socket.into();
    stalled
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let watch = Request::WatchCreate(WatchCreate {
        key: b"flood/".to_vec(),
        range_end: keel_proto::routing::prefix_end(b"flood/"),
        ..WatchCreate::default()
    });
    send(&mut stalled, 1, &watch);
    std::thread::sleep(Duration::from_millis(200));

    // Another client writes far more than the stalled buffers hold.
    let mut writer = connect(&server);
    const PUTS: u64 = 3000;
    let value = vec![b'x'; 4096];
    for i in 0..PUTS {
        let put = Request::Put(PutRequest {
            key: format!("flood/{i}").into_bytes(),
            value: value.clone(),
            ..PutRequest::default()
        });
        send(&mut writer, i, &put);
    }
    for _ in 0..PUTS {
        let answer = read_response(&mut writer).unwrap();
        assert!(matches!(answer.body, ResponseBody::Put(_)), "{answer:?}");
    }
    // The watch may lag the writes (a slow watcher's events wait in the
    // engine); give the server time to fill the buffer and give up on it.
    std::thread::sleep(Duration::from_secs(2));
    // The stalled connection was cut: reading now drains what the kernel
    // buffered and then finds the close (or a reset), well before all
    // 12 MB of events could have reached it.
    let mut drained = 0usize;
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        match stalled.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(read) => drained += read,
        }
    }
    assert!(
        drained < 8 << 20,
        "{drained} bytes reached a client that stopped reading"
    );
    status_works(&server);
}

#[test]
fn a_second_server_on_the_same_port_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start(&dir.path().join("first"), 2, &[]);
    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("--data-dir")
        .arg(dir.path().join("second"))
        .args([
            "--listen-client",
            &first.endpoint(),
            "--core-port-base",
            "0",
        ])
        .args(["--cores", "2", "--no-pin"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            second.kill().unwrap();
            panic!("a second server started on a port the first listens on");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let mut stderr = String::new();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains("another server is listening there"),
        "{stderr}"
    );
    status_works(&first);
}

/// A put whose key and value fit the request limit but not the rows the
/// shard stores is refused with a typed error; the node keeps serving the
/// same shard and key, and starts again cleanly after a clean stop and
/// after kill -9.
///
/// Regression: the put of a 40-byte key and a 1,572,800-byte value was
/// logged, then failed to apply: its shard stopped, every later put on the
/// node failed, and every restart replayed it and stopped again (issue 17).
#[test]
fn a_put_too_large_to_store_is_refused_and_the_node_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), 2, &[]);
    let rt = support::runtime();
    let key = vec![b'p'; 40];
    let put = |client: keel_client::Client, value: Vec<u8>| {
        let key = key.clone();
        async move { client.put(key, value).await }
    };
    support::block_on(&rt, async {
        let client = keel_client::Client::connect(&[server.endpoint()])
            .await
            .unwrap();
        let refused = put(client.clone(), vec![b'v'; 1_572_800])
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Some(ErrorCode::TooLarge), "{refused:?}");
        put(client.clone(), b"small".to_vec()).await.unwrap();
        client.put("elsewhere", "x").await.unwrap();
    });
    for (restart, expected, next) in [("clean", "small", "again"), ("kill -9", "again", "more")] {
        match restart {
            "clean" => server.restart(),
            _ => server.kill_and_restart(),
        }
        support::block_on(&rt, async {
            let client = keel_client::Client::connect(&[server.endpoint()])
                .await
                .unwrap();
            let kv = client.get(key.clone()).await.unwrap().expect("the key");
            assert_eq!(kv.value, expected.as_bytes(), "after a {restart} restart");
            put(client.clone(), next.into()).await.unwrap();
        });
    }
}
