//! The memory of etcd API answers (docs/etcd.md, "Answer memory"): a range
//! larger than the largest answer is refused, and large answers hold room
//! from the front's budget until their bodies are sent, so a client that
//! asks and never reads cannot make the server hold more.

mod support;

use std::time::Duration;

use keel_etcd_api::etcdserverpb::kv_client::KvClient;
use keel_etcd_api::etcdserverpb::{PutRequest, RangeRequest};
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

#[test]
fn a_range_past_the_largest_answer_is_refused_and_one_within_it_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        2,
        &["--outbound-bytes", "1048576", "--answer-bytes", "4194304"],
    );
    let endpoint = format!("http://{}", server.endpoint());
    block_on(&runtime(), async move {
        let mut kv = KvClient::connect(endpoint).await.expect("connect");
        // One shard's keys (a hash tag), so that one read gathers them.
        fill(&mut kv, "{big}/", 12).await;
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

/// Opens a raw HTTP/2 connection and asks for `request` without reading
/// the answer's body: its flow-control window (64 KiB) stops the server.
async fn ask_and_never_read(
    address: &str,
    request: &RangeRequest,
) -> (h2::client::SendRequest<bytes::Bytes>, h2::RecvStream) {
    let tcp = tokio::net::TcpStream::connect(address).await.expect("tcp");
    let (mut client, connection) = h2::client::handshake(tcp).await.expect("h2");
    tokio::spawn(connection);
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
    let answer = answer.await.expect("answer head");
    assert_eq!(answer.status(), 200);
    (client, answer.into_body())
}

#[test]
fn a_large_answer_holds_its_room_until_its_client_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    // Room for one large answer of up to 2 MiB at a time.
    let server = Server::start(
        dir.path(),
        2,
        &["--outbound-bytes", "2097152", "--answer-bytes", "2097152"],
    );
    let address = server.endpoint();
    let endpoint = format!("http://{address}");
    block_on(&runtime(), async move {
        let mut kv = KvClient::connect(endpoint).await.expect("connect");
        fill(&mut kv, "{big}/", 12).await;
        // 1.2 MB, which the connection's window does not take.
        let (_client, mut unread) = ask_and_never_read(&address, &prefix_range("{big}/")).await;
        // Another large range waits for the room...
        let mut other = kv.clone();
        let waiting = tokio::spawn(async move { other.range(prefix_range("{big}/")).await });
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            !waiting.is_finished(),
            "a second large answer was gathered while the first was held"
        );
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
        let mut read = 0;
        while let Some(chunk) = unread.data().await {
            let chunk = chunk.expect("chunk");
            read += chunk.len();
            let _ = unread.flow_control().release_capacity(chunk.len());
        }
        assert!(
            read > 12 * VALUE_BYTES,
            "the whole answer came: {read} bytes"
        );
        let answer = tokio::time::timeout(Duration::from_secs(20), waiting)
            .await
            .expect("the second large answer is served once the first is read")
            .expect("task")
            .expect("range");
        assert_eq!(answer.into_inner().kvs.len(), 12);
    });
}
