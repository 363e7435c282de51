//! etcd's JSON gateway on keel's client port, spoken as curl speaks it in
//! etcd's documentation: HTTP/1.1 POSTs of JSON with base64 bytes and
//! int64 as strings, streamed watch and keep-alive answers as
//! `{"result": ...}` lines, errors in grpc-gateway's shape.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};
use support::Server;

fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// POSTs `body` to `path` and reads the whole answer: its status and body.
fn post(server: &Server, path: &str, body: &str) -> (u16, String) {
    let answer = post_raw(server, path, "application/json", body);
    let status = answer[9..12].parse().unwrap();
    let body = answer.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

/// POSTs `body` as `content_type` to `path`; answers the whole answer,
/// head and body.
fn post_raw(server: &Server, path: &str, content_type: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(server.endpoint()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: keel\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

fn ok(server: &Server, path: &str, body: Value) -> Value {
    let (status, answer) = post(server, path, &body.to_string());
    assert_eq!(status, 200, "{path}: {answer}");
    serde_json::from_str(&answer).unwrap()
}

/// A streamed answer's lines, as they come: the JSON lines of a chunked
/// body (the chunk sizes between them are skipped).
struct Lines(BufReader<TcpStream>);

impl Lines {
    fn open(server: &Server, path: &str, body: &Value) -> Lines {
        let mut stream = TcpStream::connect(server.endpoint()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let body = body.to_string();
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: keel\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut lines = Lines(BufReader::new(stream));
        let status = lines.raw();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        lines
    }

    fn raw(&mut self) -> String {
        let mut line = String::new();
        self.0.read_line(&mut line).unwrap();
        line
    }

    /// The next JSON line of the body.
    fn next(&mut self) -> Value {
        loop {
            let line = self.raw();
            assert!(!line.is_empty(), "the stream ended");
            if line.starts_with('{') {
                return serde_json::from_str(&line).unwrap();
            }
        }
    }
}

#[test]
fn a_service_registers_with_a_lease_and_is_watched_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 2, &[]);

    // The seed use case: a lease, and the service's key under it.
    let lease = ok(&server, "/v3/lease/grant", json!({"TTL": 30}));
    let id = lease["ID"].as_str().expect("int64 as a string").to_string();
    assert_eq!(lease["TTL"], "30");
    let mut watch = Lines::open(
        &server,
        "/v3/watch",
        &json!({"create_request": {"key": b64("/services/"), "range_end": b64("/services0")}}),
    );
    let created = watch.next();
    assert_eq!(created["result"]["created"], true, "{created}");
    let put = ok(
        &server,
        "/v3/kv/put",
        json!({"key": b64("/services/web/1"), "value": b64("10.0.0.1:80"), "lease": id}),
    );
    let revision = put["header"]["revision"].as_str().unwrap().to_string();

    let event = watch.next();
    let kv = &event["result"]["events"][0]["kv"];
    assert_eq!(kv["key"], b64("/services/web/1"), "{event}");
    assert_eq!(kv["value"], b64("10.0.0.1:80"));
    assert_eq!(kv["mod_revision"], revision.as_str());
    assert_eq!(kv["lease"], id.as_str());
    // A PUT is the enum's default, which grpc-gateway leaves out.
    assert!(
        event["result"]["events"][0].get("type").is_none(),
        "{event}"
    );

    let found = ok(
        &server,
        "/v3/kv/range",
        json!({"key": b64("/services/"), "range_end": b64("/services0")}),
    );
    assert_eq!(found["count"], "1");
    assert_eq!(found["kvs"][0]["value"], b64("10.0.0.1:80"));

    // Kept alive over the keep-alive stream, one request in the body.
    let (status, renewed) = post(
        &server,
        "/v3/lease/keepalive",
        &json!({"ID": id}).to_string(),
    );
    assert_eq!(status, 200);
    let renewed = renewed
        .lines()
        .find(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .expect("a keep-alive answer");
    assert_eq!(renewed["result"]["TTL"], "30", "{renewed}");

    // Revoking the lease deletes the key: the watch sees a DELETE.
    ok(&server, "/v3/lease/revoke", json!({"ID": id}));
    let event = watch.next();
    assert_eq!(event["result"]["events"][0]["type"], "DELETE", "{event}");
    let gone = ok(
        &server,
        "/v3/kv/range",
        json!({"key": b64("/services/web/1")}),
    );
    assert!(gone.get("kvs").is_none(), "{gone}");
}

#[test]
fn gateway_errors_have_grpc_gateway_s_shape_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 2, &[]);

    // A path nobody serves: etcd's plain 404 to curl, gRPC's
    // Unimplemented to a gRPC call.
    let (status, body) = post(&server, "/v3/kv/nothing", "{}");
    assert_eq!((status, body.as_str()), (404, "Not Found"));
    let answer = post_raw(&server, "/etcdserverpb.KV/Nothing", "application/grpc", "");
    assert!(
        answer.to_ascii_lowercase().contains("grpc-status: 12"),
        "{answer}"
    );

    let (status, body) = post(&server, "/v3/kv/put", "{\"key\": 12}");
    assert_eq!(status, 400, "{body}");
    let refused: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(refused["code"], 3, "{body}");
    assert_eq!(refused["error"], refused["message"]);

    let (status, body) = post(
        &server,
        "/v3/kv/put",
        &json!({"key": b64("k"), "value": b64("v"), "lease": "12345"}).to_string(),
    );
    assert_eq!(status, 404, "{body}");
    let refused: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        refused,
        json!({"code": 5, "error": "etcdserver: requested lease not found",
               "message": "etcdserver: requested lease not found"})
    );

    // A compacted revision, as etcd answers it.
    let first = ok(
        &server,
        "/v3/kv/put",
        json!({"key": b64("k"), "value": b64("1")}),
    );
    ok(
        &server,
        "/v3/kv/put",
        json!({"key": b64("k"), "value": b64("2")}),
    );
    let latest = ok(
        &server,
        "/v3/kv/put",
        json!({"key": b64("k"), "value": b64("3")}),
    );
    ok(
        &server,
        "/v3/kv/compaction",
        json!({"revision": latest["header"]["revision"]}),
    );
    let (status, body) = post(
        &server,
        "/v3/kv/range",
        &json!({"key": b64("k"), "revision": first["header"]["revision"]}).to_string(),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("etcdserver: mvcc: required revision has been compacted"),
        "{body}"
    );

    // A streaming call whose first message does not decode is refused
    // before it opens; a later one ends the stream with an error line.
    let (status, body) = post(&server, "/v3/watch", "{\"create_request\": {\"key\": 12}}");
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(
        &server,
        "/v3/watch",
        &format!(
            "{{\"create_request\": {{\"key\": \"{}\"}}}} {{\"cancel",
            b64("k")
        ),
    );
    assert_eq!(status, 200, "{body}");
    let lines: Vec<Value> = body
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{body}");
    assert_eq!(lines[0]["result"]["created"], true, "{body}");
    assert_eq!(lines[1]["error"]["grpc_code"], 3, "{body}");
    assert_eq!(lines[1]["error"]["http_code"], 400, "{body}");

    // etcd's paths: the user list (empty, with auth off), a login while
    // auth is off (etcd's FailedPrecondition, 412), HashKV of its own.
    let listed = ok(&server, "/v3/auth/user/list", json!({}));
    assert!(listed["header"].is_object(), "{listed}");
    let (status, body) = post(&server, "/v3/auth/authenticate", "{\"name\": \"a\"}");
    assert_eq!(status, 412, "{body}");
    assert!(body.contains("authentication is not enabled"), "{body}");
    let hashed = ok(&server, "/v3/maintenance/hashkv", json!({}));
    assert!(hashed["hash_revision"].is_string(), "{hashed}");

    // An empty body is the empty request, as in grpc-gateway.
    let (status, body) = post(&server, "/v3/maintenance/status", "");
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert!(answer["version"].is_string(), "{body}");
}

/// Asks `/version` on a kept-alive HTTP/1.1 connection; answers whether
/// an answer came (not: the connection was closed first).
fn version_answered(stream: &mut TcpStream) -> bool {
    if stream
        .write_all(b"GET /version HTTP/1.1\r\nHost: keel\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    // The head, then the body by its length.
    while !got.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => got.push(byte[0]),
            _ => return false,
        }
    }
    let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("a content-length");
    let mut body = vec![0; length];
    stream.read_exact(&mut body).is_ok() && head.starts_with("http/1.1 200")
}

/// The front serves at most `--max-connections` connections of etcd's
/// API at once, as each core does its own: past it, a new one is closed
/// unanswered, and those it serves go on; once they leave, there is room
/// again.
#[test]
fn the_front_closes_connections_past_its_cap() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 2, &["--max-connections", "3"]);
    let open = || {
        let stream = TcpStream::connect(server.endpoint()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream
    };
    let mut served: Vec<TcpStream> = (0..3).map(|_| open()).collect();
    for stream in &mut served {
        assert!(version_answered(stream), "one of the first three is served");
    }
    let mut refused = open();
    assert!(!version_answered(&mut refused), "a fourth is closed");
    for stream in &mut served {
        assert!(version_answered(stream), "the first three are still served");
    }
    drop(served);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !version_answered(&mut open()) {
        assert!(
            std::time::Instant::now() < deadline,
            "no room after they left"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
