//! Users, roles and permissions on a real `keel` (docs/security.md,
//! "Auth"), through keel's protocol (the client crate) and etcd's gRPC
//! API: what a user may not do is refused with etcd's error, and changes
//! nothing; a token stops working once its user's password changes, its
//! user is deleted, auth is disabled, or it expires; a client
//! certificate's common name is its user.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use keel_client::{Client, ClientOptions, Cmp, CompareResult, Credentials, ErrorCode, Op, Txn};
use keel_etcd_api::etcdserverpb::auth_client::AuthClient;
use keel_etcd_api::etcdserverpb::kv_client::KvClient;
use keel_etcd_api::etcdserverpb::watch_client::WatchClient;
use keel_etcd_api::etcdserverpb::{
    request_op, watch_request, AuthenticateRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest, WatchCreateRequest, WatchRequest,
};
use support::{block_on, keelctl, runtime, Server};

/// keelctl as root (or as nobody with `user: None`) on `server`.
fn ctl(server: &Server, user: Option<&str>, args: &[&str]) -> Result<String, String> {
    let mut command = std::process::Command::new(keelctl());
    command.args(["--endpoints", &server.endpoint()]);
    if let Some(user) = user {
        command.args(["--user", user]);
    }
    let out = command.args(args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

/// A server with auth on: root (password `rootpw`), and alice
/// (`alicepw`) who may read and write `/app/` and read `/shared`.
fn server_with_users(dir: &std::path::Path, extra: &[&str]) -> Server {
    let mut flags = vec!["--bcrypt-cost", "4"];
    flags.extend_from_slice(extra);
    let server = Server::start(&dir.join("data"), 2, &flags);
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["user", "add", "alice:alicepw"],
        &["role", "add", "app"],
        &[
            "role",
            "grant-permission",
            "app",
            "readwrite",
            "/app/",
            "--prefix",
        ],
        &["role", "grant-permission", "app", "read", "/shared"],
        &["user", "grant-role", "alice", "app"],
        &["put", "/secret/a", "s"],
        &["put", "/shared", "x"],
    ] {
        ctl(&server, None, args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    }
    ctl(&server, None, &["auth", "enable"]).unwrap();
    server
}

fn as_user(user: &str, password: &str) -> ClientOptions {
    ClientOptions {
        request_timeout: Some(Duration::from_secs(5)),
        credentials: Some(Credentials {
            user: user.into(),
            password: password.into(),
        }),
        ..ClientOptions::default()
    }
}

fn code_of(error: &keel_client::Error) -> Option<ErrorCode> {
    match error {
        keel_client::Error::Server { code, .. } => Some(*code),
        _ => None,
    }
}

/// A gRPC request carrying `token`.
fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("token", token.parse().unwrap());
    request
}

async fn token_of(endpoint: &str, name: &str, password: &str) -> Result<String, tonic::Status> {
    let mut auth = AuthClient::connect(endpoint.to_string()).await.unwrap();
    let answer = auth
        .authenticate(AuthenticateRequest {
            name: name.into(),
            password: password.into(),
        })
        .await?;
    Ok(answer.into_inner().token)
}

#[test]
fn a_user_is_refused_outside_its_range_on_keels_protocol_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_users(dir.path(), &[]);
    let rt = runtime();
    block_on(&rt, async {
        let endpoints = [server.endpoint()];
        let alice = Client::connect_with(&endpoints, as_user("alice", "alicepw"))
            .await
            .unwrap();
        // Inside its range: reads and writes.
        alice.put("/app/x", "1").await.unwrap();
        assert_eq!(alice.get("/app/x").await.unwrap().unwrap().value, b"1");
        assert_eq!(alice.get_prefix("/app/").await.unwrap().1.kvs.len(), 1);
        assert_eq!(alice.get("/shared").await.unwrap().unwrap().value, b"x");
        let denied = |result: keel_client::Result<()>, what: &str| {
            let error = result.expect_err(what);
            assert_eq!(
                code_of(&error),
                Some(ErrorCode::PermissionDenied),
                "{what}: {error}"
            );
            assert_eq!(error.to_string(), "etcdserver: permission denied", "{what}");
        };
        // A point, a prefix and a range outside it.
        denied(alice.get("/secret/a").await.map(drop), "point read");
        denied(alice.get_prefix("/").await.map(drop), "prefix read");
        let past = keel_client::proto::RangeRequest {
            key: b"/app/".to_vec(),
            range_end: b"/b".to_vec(),
            ..Default::default()
        };
        denied(alice.range(past).await.map(drop), "range past it");
        denied(
            alice.put("/shared", "y").await.map(drop),
            "write on a read-only key",
        );
        denied(alice.delete("/secret/a").await.map(drop), "delete");
        // Inside a transaction: a compare, and an operation of the branch
        // that would not even run.
        let txn = Txn::new()
            .when([Cmp::key("/app/x").version(CompareResult::Greater, 0)])
            .and_then([Op::put("/app/y", "2")])
            .or_else([Op::get("/secret/a")]);
        denied(
            alice.txn(txn.build()).await.map(drop),
            "the failure branch's read",
        );
        let txn = Txn::new()
            .when([Cmp::key("/secret/a").value(CompareResult::Equal, "s")])
            .and_then([Op::put("/app/y", "2")]);
        denied(alice.txn(txn.build()).await.map(drop), "a compare's read");
        assert_eq!(alice.get("/app/y").await.unwrap(), None, "no branch ran");
        // In a watch: refused at create.
        let watched = alice.watch_prefix("/secret/").await.err();
        let refused = watched.expect("a watch outside the range was created");
        assert_eq!(
            code_of(&refused),
            Some(ErrorCode::PermissionDenied),
            "{refused}"
        );
        // Admin requests need root.
        let compacted = alice.compact(1).await;
        assert_eq!(
            code_of(&compacted.unwrap_err()),
            Some(ErrorCode::PermissionDenied)
        );

        let root = Client::connect_with(&endpoints, as_user("root", "rootpw"))
            .await
            .unwrap();
        assert_eq!(root.get("/secret/a").await.unwrap().unwrap().value, b"s");
        assert_eq!(root.get("/shared").await.unwrap().unwrap().value, b"x");
        // Nobody: refused as unauthenticated.
        let nobody = Client::connect_with(&endpoints, ClientOptions::default()).await;
        let refused = match nobody {
            Err(error) => error,
            Ok(client) => client.get("/app/x").await.unwrap_err(),
        };
        assert_eq!(
            code_of(&refused),
            Some(ErrorCode::Unauthenticated),
            "{refused}"
        );
        // A wrong password: refused at login.
        let wrong = Client::connect_with(&endpoints, as_user("alice", "nope")).await;
        let refused = match wrong {
            Err(error) => error,
            Ok(client) => client.get("/app/x").await.unwrap_err(),
        };
        assert_eq!(code_of(&refused), Some(ErrorCode::AuthFailed), "{refused}");
    });
}

#[test]
fn etcds_api_refuses_outside_the_range_in_txns_and_watches() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_users(dir.path(), &[]);
    let endpoint = format!("http://{}", server.endpoint());
    let rt = runtime();
    block_on(&rt, async {
        let token = token_of(&endpoint, "alice", "alicepw").await.unwrap();
        let mut kv = KvClient::connect(endpoint.clone()).await.unwrap();
        let range = |key: &str, end: &str| RangeRequest {
            key: key.into(),
            range_end: end.into(),
            ..RangeRequest::default()
        };
        kv.range(with_token(range("/app/", "/app0"), &token))
            .await
            .unwrap();
        for (what, request) in [
            ("point", range("/secret/a", "")),
            ("prefix", range("/", "0")),
            ("everything", range("\0", "\0")),
        ] {
            let refused = kv.range(with_token(request, &token)).await.unwrap_err();
            assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{what}");
            assert_eq!(refused.message(), "etcdserver: permission denied", "{what}");
        }
        let txn = TxnRequest {
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: b"/app/t".to_vec(),
                    value: b"1".to_vec(),
                    ..PutRequest::default()
                })),
            }],
            failure: vec![RequestOp {
                request: Some(request_op::Request::RequestTxn(TxnRequest {
                    success: vec![RequestOp {
                        request: Some(request_op::Request::RequestRange(range("/secret/a", ""))),
                    }],
                    ..TxnRequest::default()
                })),
            }],
            ..TxnRequest::default()
        };
        let refused = kv.txn(with_token(txn, &token)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "nested read");
        let got = kv
            .range(with_token(range("/app/t", ""), &token))
            .await
            .unwrap();
        assert!(got.into_inner().kvs.is_empty(), "the refused txn wrote");
        // No token at all.
        let refused = kv.range(range("/app/", "/app0")).await.unwrap_err();
        assert_eq!(refused.message(), "etcdserver: user name is empty");
        // A forged one.
        let refused = kv
            .range(with_token(range("/app/", "/app0"), "keel1.AAAA.BBBB"))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert_eq!(refused.message(), "etcdserver: invalid auth token");

        // A watch outside the range is cancelled at create (id -1, etcd's
        // reason); the stream goes on and a permitted one is created.
        let mut watch = WatchClient::connect(endpoint.clone()).await.unwrap();
        let create = |key: &str, end: &str| WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: key.into(),
                    range_end: end.into(),
                    ..WatchCreateRequest::default()
                },
            )),
        };
        let asks = futures_util::stream::iter(vec![
            create("/secret/", "/secret0"),
            create("/app/", "/app0"),
        ])
        .chain(futures_util::stream::pending());
        let mut answers = watch
            .watch(with_token(asks, &token))
            .await
            .unwrap()
            .into_inner();
        let first = answers.message().await.unwrap().unwrap();
        assert!(first.created && first.canceled, "{first:?}");
        assert_eq!(first.watch_id, -1);
        assert_eq!(
            first.cancel_reason,
            "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
        );
        let second = answers.message().await.unwrap().unwrap();
        assert!(second.created && !second.canceled, "{second:?}");
        assert_eq!(second.watch_id, 0, "the refused create took no id");
    });
    // The JSON gateway: the token in `Authorization`, as etcd's gateway.
    let gateway = |token: Option<&str>, key: &str| {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(server.endpoint()).unwrap();
        let body = format!("{{\"key\": \"{key}\"}}");
        let authorization = token
            .map(|t| format!("Authorization: {t}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "POST /v3/kv/range HTTP/1.1\r\nHost: keel\r\n{authorization}Content-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    let token = block_on(&rt, token_of(&endpoint, "alice", "alicepw")).unwrap();
    use base64::Engine;
    let b64 = |k: &str| base64::engine::general_purpose::STANDARD.encode(k);
    assert!(gateway(Some(&token), &b64("/app/x")).starts_with("HTTP/1.1 200"));
    let refused = gateway(Some(&token), &b64("/secret/a"));
    assert!(refused.contains("permission denied"), "{refused}");
    let refused = gateway(None, &b64("/app/x"));
    assert!(refused.contains("user name is empty"), "{refused}");
}

#[test]
fn tokens_stop_working_when_their_user_changes_or_auth_goes_and_when_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_users(dir.path(), &["--auth-token-ttl", "2"]);
    let endpoint = format!("http://{}", server.endpoint());
    let rt = runtime();
    block_on(&rt, async {
        let mut kv = KvClient::connect(endpoint.clone()).await.unwrap();
        let read = || RangeRequest {
            key: b"/app/".to_vec(),
            range_end: b"/app0".to_vec(),
            ..RangeRequest::default()
        };
        let refused_token = |status: tonic::Status| {
            assert_eq!(status.message(), "etcdserver: invalid auth token");
        };
        // A new password: the old token is refused, the new one works.
        let old = token_of(&endpoint, "alice", "alicepw").await.unwrap();
        kv.range(with_token(read(), &old)).await.unwrap();
        // (Its new password is read from stdin, here empty.)
        ctl(
            &server,
            Some("root:rootpw"),
            &["user", "passwd", "alice", "--interactive=false"],
        )
        .unwrap();
        refused_token(kv.range(with_token(read(), &old)).await.unwrap_err());
        // The role taken away: refused at once, with the token still valid.
        let fresh = token_of(&endpoint, "alice", "").await.unwrap();
        kv.range(with_token(read(), &fresh)).await.unwrap();
        ctl(
            &server,
            Some("root:rootpw"),
            &["user", "revoke-role", "alice", "app"],
        )
        .unwrap();
        let denied = kv.range(with_token(read(), &fresh)).await.unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        // Deleted ("disabled"): its token and its login are refused.
        ctl(&server, Some("root:rootpw"), &["user", "delete", "alice"]).unwrap();
        refused_token(kv.range(with_token(read(), &fresh)).await.unwrap_err());
        let login = token_of(&endpoint, "alice", "").await.unwrap_err();
        assert_eq!(
            login.message(),
            "etcdserver: authentication failed, invalid user ID or password"
        );
        // Expiry (a 2 s TTL here).
        let root = token_of(&endpoint, "root", "rootpw").await.unwrap();
        kv.range(with_token(read(), &root)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        refused_token(kv.range(with_token(read(), &root)).await.unwrap_err());
        // keel's client logs in again on its own when its token expires.
        let client = Client::connect_with(&[server.endpoint()], as_user("root", "rootpw"))
            .await
            .unwrap();
        client.put("/k", "1").await.unwrap();
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        client.put("/k", "2").await.unwrap();
        // Auth disabled: every token goes with it, and nobody needs one.
        let root = token_of(&endpoint, "root", "rootpw").await.unwrap();
        ctl(&server, Some("root:rootpw"), &["auth", "disable"]).unwrap();
        kv.range(read()).await.unwrap();
        ctl(&server, None, &["auth", "enable"]).unwrap();
        refused_token(kv.range(with_token(read(), &root)).await.unwrap_err());
    });
}

#[test]
fn a_lease_is_revoked_only_by_a_user_who_may_delete_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_users(dir.path(), &[]);
    let rt = runtime();
    block_on(&rt, async {
        let endpoints = [server.endpoint()];
        let root = Client::connect_with(&endpoints, as_user("root", "rootpw"))
            .await
            .unwrap();
        let alice = Client::connect_with(&endpoints, as_user("alice", "alicepw"))
            .await
            .unwrap();
        let (lease, _) = root.lease_grant(0, 60).await.unwrap();
        let with_lease = |key: &str| keel_client::proto::PutRequest {
            key: key.as_bytes().to_vec(),
            value: b"1".to_vec(),
            lease,
            ..Default::default()
        };
        root.put_with(with_lease("/app/l")).await.unwrap();
        root.put_with(with_lease("/secret/l")).await.unwrap();
        let refused = alice.lease_revoke(lease).await.unwrap_err();
        assert_eq!(code_of(&refused), Some(ErrorCode::PermissionDenied));
        // Nor may she list its keys (etcd's CVE-2023-32082); its TTL she may.
        let listed = alice.lease_time_to_live(lease, true).await.unwrap_err();
        assert_eq!(code_of(&listed), Some(ErrorCode::PermissionDenied));
        assert!(alice.lease_time_to_live(lease, false).await.is_ok());
        assert!(
            root.get("/secret/l").await.unwrap().is_some(),
            "revoked anyway"
        );
        // Nor may alice attach a key to it (it would let her revoke it).
        let refused = alice.put_with(with_lease("/app/m")).await.unwrap_err();
        assert_eq!(code_of(&refused), Some(ErrorCode::PermissionDenied));
        root.delete("/secret/l").await.unwrap();
        alice.lease_revoke(lease).await.unwrap();
        assert_eq!(root.get("/app/l").await.unwrap(), None);
    });
}

#[test]
fn only_root_manages_users_and_takes_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_users(dir.path(), &[]);
    let as_alice = Some("alice:alicepw");
    for args in [
        &["user", "list"][..],
        &["user", "add", "mallory:pw"],
        &[
            "role",
            "grant-permission",
            "app",
            "readwrite",
            "/",
            "--prefix",
        ],
        &["auth", "disable"],
        &["endpoint", "hashkv"],
        &[
            "snapshot",
            "save",
            dir.path().join("s.db").to_str().unwrap(),
        ],
    ] {
        let refused = ctl(&server, as_alice, args).expect_err(&format!("{args:?} was taken"));
        assert!(refused.contains("permission denied"), "{args:?}: {refused}");
    }
    assert_eq!(
        ctl(&server, as_alice, &["user", "get", "alice"]).unwrap(),
        "User: alice\nRoles: app"
    );
    let users = ctl(&server, Some("root:rootpw"), &["user", "list"]).unwrap();
    assert_eq!(users, "alice\nroot", "mallory was added");
}

#[test]
fn a_common_name_is_no_user_without_client_cert_auth() {
    use support::certs::Authority;
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new(&dir.path().join("certs"), "keel");
    let server_pair = ca.valid("server", "server");
    let root_pair = ca.valid("root-cert", "root");
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let ca_file = path(&ca.cert);
    // A client certificate is required (--trusted-ca-file), but its name
    // is not the user: that takes --client-cert-auth, as in etcd.
    let server = Server::start(
        &dir.path().join("data"),
        2,
        &[
            "--bcrypt-cost",
            "4",
            "--cert-file",
            &path(&server_pair.cert),
            "--key-file",
            &path(&server_pair.key),
            "--trusted-ca-file",
            &ca_file,
        ],
    );
    let ctl_as = |user: Option<&str>, args: &[&str]| {
        let mut command = std::process::Command::new(keelctl());
        command
            .args(["--endpoints", &format!("https://{}", server.endpoint())])
            .args(["--cacert", &ca_file])
            .args([
                "--cert",
                &path(&root_pair.cert),
                "--key",
                &path(&root_pair.key),
            ]);
        if let Some(user) = user {
            command.args(["--user", user]);
        }
        let out = command.args(args).output().unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
        match out.status.success() {
            true => Ok(text(&out.stdout)),
            false => Err(text(&out.stderr)),
        }
    };
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["auth", "enable"],
    ] {
        ctl_as(None, args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    }
    let refused = ctl_as(None, &["put", "k", "v"]).unwrap_err();
    assert!(refused.contains("user name is empty"), "{refused}");
    assert_eq!(
        ctl_as(Some("root:rootpw"), &["put", "k", "v"]).unwrap(),
        "OK"
    );
}

#[test]
fn a_client_certificates_common_name_is_its_user_without_a_token() {
    use support::certs::Authority;
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new(&dir.path().join("certs"), "keel");
    let server_pair = ca.valid("server", "server");
    let alice_pair = ca.valid("alice", "alice");
    let mallory_pair = ca.valid("mallory", "mallory");
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (cert, key, ca_file) = (
        path(&server_pair.cert),
        path(&server_pair.key),
        path(&ca.cert),
    );
    let server = Server::start(
        &dir.path().join("data"),
        2,
        &[
            "--bcrypt-cost",
            "4",
            "--cert-file",
            &cert,
            "--key-file",
            &key,
            "--trusted-ca-file",
            &ca_file,
            "--client-cert-auth",
        ],
    );
    let ctl_as = |pair: &support::certs::Pair, args: &[&str]| {
        let out = std::process::Command::new(keelctl())
            .args(["--endpoints", &format!("https://{}", server.endpoint())])
            .args([
                "--cacert",
                &ca_file,
                "--cert",
                &path(&pair.cert),
                "--key",
                &path(&pair.key),
            ])
            .args(args)
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
        match out.status.success() {
            true => Ok(text(&out.stdout)),
            false => Err(text(&out.stderr)),
        }
    };
    // Set up as nobody (auth is off), then on.
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["user", "add", "alice", "--no-password"],
        &["role", "add", "app"],
        &[
            "role",
            "grant-permission",
            "app",
            "readwrite",
            "/app/",
            "--prefix",
        ],
        &["user", "grant-role", "alice", "app"],
        &["put", "/secret", "s"],
        &["auth", "enable"],
    ] {
        ctl_as(&alice_pair, args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    }
    // alice by her certificate alone: keel's protocol (keelctl) ...
    assert_eq!(ctl_as(&alice_pair, &["put", "/app/a", "1"]).unwrap(), "OK");
    let refused = ctl_as(&alice_pair, &["get", "/secret"]).unwrap_err();
    assert!(refused.contains("permission denied"), "{refused}");
    // ... and etcd's API (etcdctl, when installed).
    if std::process::Command::new("etcdctl")
        .arg("version")
        .output()
        .is_ok()
    {
        let etcdctl = |args: &[&str]| {
            std::process::Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &format!("https://{}", server.endpoint())])
                .args(["--cacert", &ca_file])
                .args([
                    "--cert",
                    &path(&alice_pair.cert),
                    "--key",
                    &path(&alice_pair.key),
                ])
                .args(args)
                .output()
                .unwrap()
        };
        let got = etcdctl(&["get", "/app/a", "--print-value-only"]);
        assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "1");
        let refused = etcdctl(&["get", "/secret"]);
        assert!(!refused.status.success());
        assert!(String::from_utf8_lossy(&refused.stderr).contains("permission denied"));
    }
    // A certificate whose name is no user: refused, and nothing written.
    let refused = ctl_as(&mallory_pair, &["put", "/app/b", "1"]).unwrap_err();
    assert!(refused.contains("permission denied"), "{refused}");
    assert_eq!(ctl_as(&alice_pair, &["get", "/app/b"]).unwrap(), "");
    // A user without a password cannot log in with one.
    let refused = ctl_as(&mallory_pair, &["--user", "alice:", "get", "/app/a"]).unwrap_err();
    assert!(refused.contains("authentication failed"), "{refused}");
}

#[test]
fn a_jwt_made_before_an_auth_change_is_refused_as_old() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("jwt-secret");
    std::fs::write(&secret, b"a secret shared by every member").unwrap();
    let spec = format!("jwt,priv-key={},sign-method=HS256,ttl=5m", secret.display());
    let server = server_with_users(dir.path(), &["--auth-token", &spec]);
    let endpoint = format!("http://{}", server.endpoint());
    let rt = runtime();
    block_on(&rt, async {
        let token = token_of(&endpoint, "alice", "alicepw").await.unwrap();
        assert!(
            !token.starts_with("keel1.") && token.matches('.').count() == 2,
            "{token}"
        );
        let mut kv = KvClient::connect(endpoint.clone()).await.unwrap();
        let read = || RangeRequest {
            key: b"/app/".to_vec(),
            range_end: b"/app0".to_vec(),
            ..RangeRequest::default()
        };
        kv.range(with_token(read(), &token)).await.unwrap();
        // Any change of the record: the JWT is old (etcd's error).
        ctl(&server, Some("root:rootpw"), &["role", "add", "another"]).unwrap();
        let old = kv.range(with_token(read(), &token)).await.unwrap_err();
        assert_eq!(old.message(), "etcdserver: revision of auth store is old");
        let fresh = token_of(&endpoint, "alice", "alicepw").await.unwrap();
        kv.range(with_token(read(), &fresh)).await.unwrap();
        // keel's client logs in again when its JWT is old.
        let client = Client::connect_with(&[server.endpoint()], as_user("alice", "alicepw"))
            .await
            .unwrap();
        client.put("/app/j", "1").await.unwrap();
        ctl(
            &server,
            Some("root:rootpw"),
            &["role", "add", "yet-another"],
        )
        .unwrap();
        client.put("/app/j", "2").await.unwrap();
    });
}
