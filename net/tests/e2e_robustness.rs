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

/// Raises this process's open-file limit to `want` (or the hard limit);
/// the server, started after, inherits it.
/// Puts `count` values of 1 MiB under `{big}/0`, `{big}/1`, ... (one
/// shard, by their hash tag).
fn put_big_values(server: &Server, count: u64) {
    let mut loader = connect(server);
    for i in 0..count {
        let put = Request::Put(PutRequest {
            key: format!("{{big}}/{i}").into_bytes(),
            value: vec![b'v'; 1 << 20],
            ..PutRequest::default()
        });
        send(&mut loader, i, &put);
        let answer = read_response(&mut loader).unwrap();
        assert!(matches!(answer.body, ResponseBody::Put(_)), "{answer:?}");
    }
}

#[allow(unsafe_code)] // getrlimit/setrlimit: no safe wrapper in std
fn raise_open_files(want: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// A thousand connections each pipeline four ranges whose answers are
/// 7 MiB, never read them, then announce a 2 MiB request and send all but
/// its last byte, as fast as the server takes it, and never finish; one
/// more pipelines 4,096 such ranges. The server reads no request body it
/// has not reserved from its core's inbound budget (64 MiB per core), and
/// gathers no large answer it has not reserved room for (one per
/// connection, 64 MiB per core, held until written), so its memory stays
/// bounded: the budgets, plus per connection what was read before a
/// frame's length came and its small answers (under 128 KiB each). It
/// closes each connection at the frame or write deadline; and another
/// client's puts keep being answered meanwhile.
///
/// Regression (review of net/ at 6e310c5): each connection buffered its
/// partial frame with no deadline: 300 such connections took keel from
/// 29 MiB to 713 MiB, held for good. Without the inbound budget this test
/// saw 2,400 MiB and a put wait 3.9 s. Every pipelined range gathered its
/// whole answer before waiting for room to send it.
#[test]
fn a_thousand_slow_large_frames_hold_bounded_memory_and_are_cut_off() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    const CONNECTIONS: usize = 1000;
    const FRAME: usize = 2 << 20;
    const RANGES_EACH: u64 = 4;
    raise_open_files(4096);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        2,
        &["--frame-timeout-ms", "4000", "--stall-timeout-ms", "3000"],
    );
    // Seven values of 1 MiB on one shard: a range of them answers 7 MiB.
    put_big_values(&server, 7);
    let big_range = Request::Range(keel_proto::RangeRequest {
        key: b"{big}/".to_vec(),
        range_end: b"{big}0".to_vec(),
        ..keel_proto::RangeRequest::default()
    });
    let baseline = server.rss_bytes();
    // Another client puts every 10 ms and times each answer.
    let done = Arc::new(AtomicBool::new(false));
    let mut writer = connect(&server);
    let putter = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut slowest = Duration::ZERO;
            let mut latencies = Vec::new();
            let began = std::time::Instant::now();
            let mut id = 0u64;
            while !done.load(Ordering::Relaxed) {
                id += 1;
                let put = Request::Put(PutRequest {
                    key: format!("steady/{id}").into_bytes(),
                    value: b"v".to_vec(),
                    ..PutRequest::default()
                });
                let sent = std::time::Instant::now();
                send(&mut writer, id, &put);
                let answer = read_response(&mut writer).expect("a put answer");
                assert!(matches!(answer.body, ResponseBody::Put(_)), "{answer:?}");
                let took = sent.elapsed();
                latencies.push(took);
                // Each slow put with its time: outliers cluster where the
                // flood acts at once (connecting, being cut off).
                if took > Duration::from_millis(50) {
                    eprintln!("put {id}: {took:?}, {:?} into the test", sent - began);
                }
                slowest = slowest.max(took);
                std::thread::sleep(Duration::from_millis(10));
            }
            // The slowest put is a rare outlier (p99 has been 5 to 10 ms
            // in release): say how rare, to tell changes apart.
            latencies.sort();
            let at = |q: usize| latencies[latencies.len().saturating_sub(1) * q / 100];
            if !latencies.is_empty() {
                eprintln!("puts: p50 {:?}, p99 {:?}", at(50), at(99));
            }
            (id, slowest)
        })
    };

    let mut header = Vec::from((FRAME as u32).to_le_bytes());
    header.extend(vec![0x5a; FRAME - 1]);
    let mut streams: Vec<(TcpStream, usize)> = (0..CONNECTIONS)
        .map(|i| {
            if i % 100 == 99 {
                std::thread::sleep(Duration::from_millis(50));
            }
            // Small kernel buffers on this side, so that this process's own
            // copying does not take the machine's CPUs from the server.
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.set_send_buffer_size(32 << 10).unwrap();
            socket.set_recv_buffer_size(16 << 10).unwrap();
            socket.connect(&server.client.into()).expect("connect");
            let mut stream: TcpStream = socket.into();
            for id in 0..RANGES_EACH {
                send(&mut stream, id, &big_range);
            }
            stream.set_nonblocking(true).unwrap();
            (stream, 0)
        })
        .collect();
    // And one that pipelines 4,096 of them.
    let mut pipeliner = {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(16 << 10).unwrap();
        socket.connect(&server.client.into()).expect("connect");
        let mut stream: TcpStream = socket.into();
        let mut batch = Vec::new();
        for id in 0..4096u64 {
            batch.extend(keel_proto::encode_request_frame(id, &big_range).unwrap());
        }
        stream.write_all(&batch).unwrap();
        stream
    };
    // Feed them for 3 s, as fast as the server takes the bytes.
    let mut most_rss = 0;
    let until = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < until {
        for (stream, sent) in streams.iter_mut() {
            if *sent < header.len() {
                if let Ok(wrote) = stream.write(&header[*sent..]) {
                    *sent += wrote;
                }
            }
        }
        most_rss = most_rss.max(server.rss_bytes());
        std::thread::sleep(Duration::from_millis(20));
    }
    let delivered: usize = streams.iter().map(|(_, sent)| *sent).sum();
    // Past the frame deadline every one of them is closed: at once, or,
    // for one still taking an answer, once its writes stall (twice the
    // stall timeout: the refusal, then the rest).
    let closing = std::time::Instant::now() + Duration::from_secs(15);
    let mut open = CONNECTIONS;
    while open > 0 && std::time::Instant::now() < closing {
        open = 0;
        // What the kernels buffered of the answers is taken quickly (the
        // server's socket may hold megabytes after it closed).
        let mut buffer = vec![0u8; 4 << 20];
        for (stream, _) in streams.iter_mut() {
            match stream.read(&mut buffer) {
                Ok(0) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => open += 1,
                Err(_) => {}
                // The refusal that says why.
                Ok(_) => open += 1,
            }
        }
        most_rss = most_rss.max(server.rss_bytes());
        std::thread::sleep(Duration::from_millis(50));
    }
    done.store(true, Ordering::Relaxed);
    let (puts, slowest) = putter.join().unwrap();
    let grew = most_rss.saturating_sub(baseline);
    eprintln!(
        "{CONNECTIONS} slow 2 MiB frames ({} MiB sent): RSS {} -> at most {} MiB; {puts} puts, slowest {slowest:?}; {open} still open",
        delivered >> 20,
        baseline >> 20,
        most_rss >> 20
    );
    assert_eq!(open, 0, "connections past the frame deadline still open");
    // Two cores' inbound and answer budgets (256 MiB) and, per connection,
    // the bytes read before the frame's length was known (16 KiB), its
    // small answers and the allocator's share (128 KiB each).
    let bound = (256 << 20) + CONNECTIONS as u64 * (128 << 10);
    assert!(
        grew < bound,
        "RSS grew by {} MiB, past {} MiB",
        grew >> 20,
        bound >> 20
    );
    // The aim is 100 ms, which a release build meets on two cores shared
    // with this test's own flood (the slowest put 21 to 91 ms over 60
    // runs; docs/server.md, "Flood"): the README's fault runs check it
    // with KEEL_FLOOD_PUT_MS=100. This debug build's slowest put has taken
    // 97 to 131 ms, so by default the bound catches a regression.
    let most_ms = std::env::var("KEEL_FLOOD_PUT_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(500);
    assert!(
        slowest < Duration::from_millis(most_ms),
        "a put took {slowest:?} meanwhile, past {most_ms} ms"
    );
    // The pipeliner was cut off too, well short of its 4,096 answers.
    pipeliner
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut drained = 0usize;
    let mut chunk = vec![0u8; 1 << 16];
    while drained < 64 << 20 {
        match pipeliner.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => drained += read,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the pipeliner must be cut off (read {drained} bytes): {e}"),
        }
    }
    assert!(drained < 64 << 20, "the pipeliner was never cut off");
    status_works(&server);
}

/// A connection whose large frame waits for the core's inbound budget holds
/// only what one small read brought, not a read buffer of its own beside
/// the frame's.
///
/// Regression: each connection kept a 64 KiB read buffer for its whole
/// life and copied every read into the frame's buffer; 400 connections
/// waiting for the budget with 60 KiB of their frames sent held 140 KiB
/// each, and a thousand arriving at once spent ~100 ms of a core in page
/// faults, stalling its puts.
#[test]
fn connections_waiting_for_the_inbound_budget_hold_little() {
    const CONNECTIONS: u64 = 400;
    const SENT: usize = 60 << 10;
    raise_open_files(1024);
    let dir = tempfile::tempdir().unwrap();
    // Room for two 2 MiB frames a core: the rest wait.
    let server = Server::start(dir.path(), 2, &["--inbound-bytes", "4194304"]);
    status_works(&server);
    let baseline = server.rss_bytes();
    let mut frame = Vec::from((2u32 << 20).to_le_bytes());
    frame.extend(vec![0x5a; SENT]);
    let streams: Vec<TcpStream> = (0..CONNECTIONS)
        .map(|_| {
            let mut stream = connect(&server);
            stream.write_all(&frame).unwrap();
            stream
        })
        .collect();
    // Until the server has read what it will, and its memory settles.
    let mut held = 0;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        held = server.rss_bytes().saturating_sub(baseline);
    }
    status_works(&server);
    let each = held / CONNECTIONS;
    eprintln!(
        "{CONNECTIONS} connections waiting for the inbound budget: {} MiB more, {} KiB each",
        held >> 20,
        each >> 10
    );
    // Four frames under way hold up to 2 MiB each of it.
    assert!(
        held < (4 << 20) + CONNECTIONS * (40 << 10),
        "{CONNECTIONS} connections waiting for the inbound budget hold {} KiB each",
        each >> 10
    );
    drop(streams);
}

/// A frame must be whole by its deadline as the server reads it: bytes
/// that are waiting in the socket when the deadline passes (here because
/// the server was stopped) are not read to finish it.
///
/// Regression: a read that was ready at once won the race with the frame's
/// deadline however late it was; when a thousand slow frames were cut off
/// together, the next connections to get the inbound budget each read
/// megabytes past their own deadlines, stalling the core for ~90 ms.
#[test]
fn a_frame_is_not_read_past_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 1, &["--frame-timeout-ms", "1000"]);
    let put = Request::Put(PutRequest {
        key: b"late".to_vec(),
        // Less than one read: a single late read would finish it.
        value: vec![b'v'; 60 << 10],
        ..PutRequest::default()
    });
    let frame = encode_frame(&encode_request(1, &put)).unwrap();
    let mut stream = connect(&server);
    // A status request and, in the same write, the length of the put: once
    // the status is answered, the server has read the length (one read
    // takes both), so the deadline runs, however loaded the machine is.
    let mut first = encode_frame(&encode_request(0, &Request::Status)).unwrap();
    first.extend_from_slice(&frame[..4]);
    stream.write_all(&first).unwrap();
    let status = read_response(&mut stream).expect("the status answer");
    assert!(matches!(status.body, ResponseBody::Status(_)), "{status:?}");
    // The rest arrives while the server is stopped, and it is resumed only
    // after the deadline.
    server.signal("STOP");
    stream.write_all(&frame[4..]).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    server.signal("CONT");
    let answer = read_response(&mut stream).expect("an answer before the close");
    assert_eq!(error_code(&answer), ErrorCode::BadRequest, "{answer:?}");
    assert_closed(&mut stream);
    // Nothing of it was applied.
    let mut reader = connect(&server);
    let get = Request::Range(keel_proto::RangeRequest {
        key: b"late".to_vec(),
        ..keel_proto::RangeRequest::default()
    });
    send(&mut reader, 2, &get);
    match read_response(&mut reader).map(|r| r.body) {
        Some(ResponseBody::Range(range)) => assert!(range.kvs.is_empty(), "{range:?}"),
        other => panic!("{other:?}"),
    }
}

/// With `--idle-timeout-ms`, a connection that has been silent that long
/// with nothing in flight is closed; one that holds a watch is not, and
/// neither is one that keeps talking.
#[test]
fn idle_connections_are_closed_and_watching_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 2, &["--idle-timeout-ms", "500"]);
    let mut idle = connect(&server);
    send(&mut idle, 1, &Request::Status);
    assert!(read_response(&mut idle).is_some(), "served");
    let mut watching = connect(&server);
    let watch = Request::WatchCreate(WatchCreate {
        key: b"idle/".to_vec(),
        ..WatchCreate::default()
    });
    send(&mut watching, 1, &watch);
    let created = read_response(&mut watching).expect("a watch created");
    assert!(
        matches!(&created.body, ResponseBody::Watch(w) if w.created),
        "{created:?}"
    );
    let mut talking = connect(&server);
    for id in 0..8 {
        std::thread::sleep(Duration::from_millis(250));
        send(&mut talking, id, &Request::Status);
        assert!(
            read_response(&mut talking).is_some(),
            "a talking connection is served"
        );
    }
    // Two seconds on: the silent one is gone, the others are served.
    assert_closed(&mut idle);
    send(&mut watching, 2, &Request::Status);
    let answer = read_response(&mut watching).expect("a watching connection is served");
    assert!(matches!(answer.body, ResponseBody::Status(_)), "{answer:?}");
}

/// A core serves at most `--max-connections` connections; past it, a new
/// connection is closed at once, and those it serves go on.
#[test]
fn a_core_closes_connections_past_its_cap() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 2, &["--max-connections", "3"]);
    let core0 = std::net::SocketAddr::from(([127, 0, 0, 1], server.core_ports[0]));
    let mut served: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut stream = TcpStream::connect(core0).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            send(&mut stream, 1, &Request::Status);
            assert!(read_response(&mut stream).is_some(), "served");
            stream
        })
        .collect();
    let mut refused = TcpStream::connect(core0).unwrap();
    refused
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let _ = refused.write_all(&encode_frame(&encode_request(1, &Request::Status)).unwrap());
    assert_closed(&mut refused);
    for stream in &mut served {
        send(stream, 2, &Request::Status);
        assert!(read_response(stream).is_some(), "still served");
    }
    drop(served);
    // Room again once they are gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = TcpStream::connect(core0).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        send(&mut stream, 3, &Request::Status);
        if read_response(&mut stream).is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no room after they left"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Watches do not count against `max_in_flight`: a connection with more
/// watches than that still has its puts and cancels read and answered;
/// watches have their own cap, `max_watches`, past which a new one is
/// refused and the rest goes on.
///
/// Regression (review of net/ at 6e310c5): at `max_in_flight` live watches
/// the server stopped reading the connection, so not even a cancel could
/// arrive, and its puts and keep-alives hung.
#[test]
fn many_watches_do_not_wedge_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        2,
        &["--max-in-flight", "64", "--max-watches", "150"],
    );
    let mut stream = connect(&server);
    let watch = |key: &str| {
        Request::WatchCreate(WatchCreate {
            key: key.as_bytes().to_vec(),
            ..WatchCreate::default()
        })
    };
    for id in 1..=150u64 {
        send(&mut stream, id, &watch(&format!("w/{id}")));
    }
    let mut created = 0;
    while created < 150 {
        let response = read_response(&mut stream).expect("a watch created");
        assert!(
            matches!(&response.body, ResponseBody::Watch(w) if w.created),
            "{response:?}"
        );
        created += 1;
    }
    // A put and a cancel on the same connection are answered.
    let put = Request::Put(PutRequest {
        key: b"after".to_vec(),
        value: b"v".to_vec(),
        ..PutRequest::default()
    });
    send(&mut stream, 1000, &put);
    let answer = read_response(&mut stream).expect("the put's answer");
    assert_eq!(answer.id, 1000);
    assert!(matches!(answer.body, ResponseBody::Put(_)), "{answer:?}");
    send(&mut stream, 1001, &Request::WatchCancel { watch_id: 7 });
    let answer = read_response(&mut stream).expect("the cancel's answer");
    assert_eq!(answer.id, 1001);
    assert!(matches!(&answer.body, ResponseBody::Watch(w) if w.canceled));
    // One more fits (149 open); the next is refused, and the connection
    // goes on.
    send(&mut stream, 2000, &watch("w/more"));
    let answer = read_response(&mut stream).unwrap();
    assert!(
        matches!(&answer.body, ResponseBody::Watch(w) if w.created),
        "{answer:?}"
    );
    send(&mut stream, 2001, &watch("w/too-many"));
    let answer = read_response(&mut stream).unwrap();
    assert_eq!(answer.id, 2001);
    assert_eq!(error_code(&answer), ErrorCode::BadRequest);
    send(&mut stream, 2002, &put);
    let answer = read_response(&mut stream).unwrap();
    assert!(matches!(answer.body, ResponseBody::Put(_)), "{answer:?}");
}

/// A client that asks for one large answer and never reads it is cut off
/// after the stall timeout, though no producer is left waiting for room.
///
/// Regression (review of net/ at 6e310c5): the stall timer ran only while
/// a producer waited; the writer waited on the socket with no deadline, so
/// such a client pinned its answer (and its connection) for good.
#[test]
fn a_client_that_never_reads_one_large_answer_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 2, &["--stall-timeout-ms", "500"]);
    put_big_values(&server, 6);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(16 << 10).unwrap();
    socket.connect(&server.client.into()).unwrap();
    let mut stalled: TcpStream = socket.into();
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let range = Request::Range(keel_proto::RangeRequest {
        key: b"{big}/".to_vec(),
        range_end: b"{big}0".to_vec(),
        ..keel_proto::RangeRequest::default()
    });
    send(&mut stalled, 1, &range);
    std::thread::sleep(Duration::from_secs(2));
    // Cut off: what the kernels buffered, then the close, well short of
    // the 6 MiB answer.
    let mut drained = 0usize;
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        match stalled.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => drained += read,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server must close the connection (read {drained} bytes): {e}"),
        }
    }
    assert!(
        drained < 6 << 20,
        "{drained} bytes reached a client that stopped reading"
    );
    status_works(&server);
}
