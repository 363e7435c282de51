//! The memory of etcd API answers (docs/etcd.md, "What a
//! client can make the front hold"): a range
//! larger than the largest answer is refused, and large answers hold room
//! from the front's budget until their bodies are sent, so a client that
//! asks and never reads cannot make the server hold more.

mod support;

use std::time::Duration;

use keel_etcd_api::etcdserverpb::kv_client::KvClient;
use keel_etcd_api::etcdserverpb::{PutRequest, RangeRequest, RangeResponse};
use prost::Message;
use support::{block_on, runtime, Server};

const VALUE_BYTES: usize = 100 << 10;

/// Puts `count` values of [`VALUE_BYTES`] under `prefix`.
async fn fill(kv: &mut KvClient<tonic::transport::Channel>, prefix: &str, count: usize) {
    for i in 0..count {
        kv.put(PutRequest {
            key: format!("{prefix}{i:03}").into_bytes(),
            value: vec![b'v'; VALUE_BYTES],
            ..PutRequest::default()
        })
        .await
        .expect("put");
    }
}

fn prefix_range(prefix: &str) -> RangeRequest {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    RangeRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: end,
        ..RangeRequest::default()
    }
}

/// Runs `test` with a client and the server's address, against a server
/// whose largest answer is `largest` bytes, with room for `rooms` of them
/// and a stall timeout of `stall_ms`, once 12 values of 100 KiB (1.2 MB)
/// are under "{big}/" (one hash tag: one shard gathers them).
fn with_big_values<F, Fut>(largest: usize, rooms: usize, stall_ms: u64, test: F)
where
    F: FnOnce(KvClient<tonic::transport::Channel>, String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let (budget, largest, stall) = (
        (largest * rooms).to_string(),
        largest.to_string(),
        stall_ms.to_string(),
    );
    let flags = [
        "--outbound-bytes",
        largest.as_str(),
        "--answer-bytes",
        budget.as_str(),
        "--stall-timeout-ms",
        stall.as_str(),
    ];
    let server = Server::start(dir.path(), 2, &flags);
    let address = server.endpoint();
    block_on(&runtime(), async move {
        let mut kv = KvClient::connect(format!("http://{address}"))
            .await
            .expect("connect");
        fill(&mut kv, "{big}/", 12).await;
        test(kv, address).await;
    });
}

#[test]
fn a_range_past_the_largest_answer_is_refused_and_one_within_it_served() {
    with_big_values(1 << 20, 4, 60_000, |mut kv, _address| async move {
        let refused = match kv.range(prefix_range("{big}/")).await {
            Ok(answer) => panic!(
                "1.2 MB is past the largest answer (1 MiB), yet {} pairs came",
                answer.into_inner().kvs.len()
            ),
            Err(refused) => refused,
        };
        assert_eq!(
            refused.code(),
            tonic::Code::ResourceExhausted,
            "{refused:?}"
        );
        assert!(refused.message().contains("ask for less"), "{refused:?}");
        let mut within = prefix_range("{big}/");
        within.limit = 8;
        let answer = kv.range(within).await.expect("800 KB is within it");
        assert_eq!(answer.into_inner().kvs.len(), 8);
    });
}

/// A raw HTTP/2 connection, for a client that asks and never reads: its
/// flow-control window (64 KiB) stops the server's answers.
async fn raw_connection(address: &str) -> h2::client::SendRequest<bytes::Bytes> {
    let tcp = tokio::net::TcpStream::connect(address).await.expect("tcp");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2");
    tokio::spawn(connection);
    client
}

/// Asks for `request` over `client`; answers the future of the answer's
/// head.
fn ask(
    client: &mut h2::client::SendRequest<bytes::Bytes>,
    address: &str,
    request: &RangeRequest,
) -> h2::client::ResponseFuture {
    let ask = http::Request::post(format!("http://{address}/etcdserverpb.KV/Range"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (answer, mut body) = client.send_request(ask, false).expect("send");
    let message = request.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(&message);
    body.send_data(framed.into(), true).expect("body");
    answer
}

/// Asks for `request` on a connection of its own and never reads the
/// answer's body.
async fn ask_and_never_read(
    address: &str,
    request: &RangeRequest,
) -> (h2::client::SendRequest<bytes::Bytes>, h2::RecvStream) {
    let mut client = raw_connection(address).await;
    let answer = ask(&mut client, address, request)
        .await
        .expect("answer head");
    assert_eq!(answer.status(), 200);
    (client, answer.into_body())
}

/// Reads `body` to its end; answers the bytes read, or the error that
/// ended it.
async fn read_all(body: &mut h2::RecvStream) -> Result<usize, h2::Error> {
    let mut read = 0;
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        read += chunk.len();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    Ok(read)
}

/// A large range over `kv`'s connection, asked while another answer holds
/// the only room: still waiting 2 s later (`held` says what failed if not).
async fn a_large_range_waits(
    kv: &KvClient<tonic::transport::Channel>,
    held: &str,
) -> tokio::task::JoinHandle<Result<tonic::Response<RangeResponse>, tonic::Status>> {
    let mut other = kv.clone();
    let waiting = tokio::spawn(async move { other.range(prefix_range("{big}/")).await });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!waiting.is_finished(), "{held}");
    waiting
}

/// Reads `unread`, the answer holding the room, whole; `waiting` is then
/// served (`served` says what failed if not).
async fn read_then_served(
    unread: &mut h2::RecvStream,
    waiting: tokio::task::JoinHandle<Result<tonic::Response<RangeResponse>, tonic::Status>>,
    served: &str,
) {
    let read = read_all(unread).await.expect("the answer holding the room");
    assert!(
        read > 12 * VALUE_BYTES,
        "the whole answer came: {read} bytes"
    );
    let answer = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect(served)
        .expect("task")
        .expect("range");
    assert_eq!(answer.into_inner().kvs.len(), 12);
}

#[test]
fn a_large_answer_holds_its_room_until_its_client_reads_it() {
    // Room for one large answer of up to 2 MiB at a time.
    with_big_values(2 << 20, 1, 60_000, |mut kv, address| async move {
        // 1.2 MB, which the connection's window does not take.
        let (_client, mut unread) = ask_and_never_read(&address, &prefix_range("{big}/")).await;
        // Another large range waits for the room...
        let waiting = a_large_range_waits(
            &kv,
            "a second large answer was gathered while the first was held",
        )
        .await;
        // ...while small calls go on.
        kv.put(PutRequest {
            key: b"small".to_vec(),
            value: b"1".to_vec(),
            ..PutRequest::default()
        })
        .await
        .expect("a put");
        let mut keys = prefix_range("{big}/");
        keys.keys_only = true;
        let keys = kv.range(keys).await.expect("a small range");
        assert_eq!(keys.into_inner().kvs.len(), 12);
        // Once the first is read, the second is served.
        read_then_served(
            &mut unread,
            waiting,
            "the second large answer is served once the first is read",
        )
        .await;
    });
}

#[test]
fn a_connection_has_one_large_answer_at_a_time() {
    // Room for two large answers of up to 2 MiB at once.
    with_big_values(2 << 20, 2, 60_000, |mut kv, address| async move {
        // One connection asks for two large answers and reads neither:
        // it holds one room, not both.
        let mut client = raw_connection(&address).await;
        let first = ask(&mut client, &address, &prefix_range("{big}/"));
        let second = ask(&mut client, &address, &prefix_range("{big}/"));
        // Either may take the connection's room; the other waits for it.
        let _head = tokio::select! {
            head = first => head,
            head = second => head,
        }
        .expect("one answer's head");
        let other = tokio::time::timeout(Duration::from_secs(5), kv.range(prefix_range("{big}/")))
            .await
            .expect("another connection's large answer is served while the first holds one room")
            .expect("range");
        assert_eq!(other.into_inner().kvs.len(), 12);
    });
}

#[test]
fn a_connection_that_stops_reading_a_large_answer_is_closed_after_the_stall_timeout() {
    // Room for one large answer; a stall of 2 s closes its connection.
    with_big_values(2 << 20, 1, 2_000, |mut kv, address| async move {
        let (_client, mut unread) = ask_and_never_read(&address, &prefix_range("{big}/")).await;
        // Waits for the room, which comes back when the stalled
        // connection is closed.
        let other = tokio::time::timeout(Duration::from_secs(10), kv.range(prefix_range("{big}/")))
            .await
            .expect("the room came back after the stall")
            .expect("range");
        assert_eq!(other.into_inner().kvs.len(), 12);
        // The stalled client finds its answer cut short.
        if let Ok(read) = read_all(&mut unread).await {
            assert!(read < 12 * VALUE_BYTES, "the whole answer came: {read}");
        }
    });
}

#[test]
fn a_large_answer_of_the_json_gateway_holds_its_room_until_read() {
    with_big_values(2 << 20, 1, 60_000, |kv, address| async move {
        // The gateway's range over HTTP/2 (h2c), not read.
        let mut client = raw_connection(&address).await;
        let ask = http::Request::post(format!("http://{address}/v3/kv/range"))
            .header("content-type", "application/json")
            .body(())
            .expect("request");
        let (answer, mut body) = client.send_request(ask, false).expect("send");
        // "{big}/" and "{big}0" in base64.
        let json = r#"{"key":"e2JpZ30v","range_end":"e2JpZ30w"}"#;
        body.send_data(bytes::Bytes::from(json), true)
            .expect("body");
        let answer = answer.await.expect("answer head");
        assert_eq!(answer.status(), 200);
        let mut unread = answer.into_body();
        let waiting = a_large_range_waits(
            &kv,
            "a gRPC large answer was gathered while the gateway's held the room",
        )
        .await;
        read_then_served(
            &mut unread,
            waiting,
            "served once the gateway's answer is read",
        )
        .await;
    });
}
