//! TLS on the client, core and metrics ports of a real `keel`: keel's
//! protocol, etcd's gRPC (through keelctl's maintenance calls) and HTTP
//! all work over it, and what must be refused is: plaintext, a client or
//! server certificate from another authority, an expired certificate, no
//! client certificate where one is required. Each refusal leaves the data
//! as it was. A renewed certificate is used without a restart.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use keel_client::tls::TlsFiles;
use keel_client::{Client, ClientOptions, ClientTls};
use support::certs::{Authority, Leaf, Pair};
use support::{block_on, keelctl, runtime, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The certificates of one test: the cluster's authority, a stranger's,
/// and the server's and a client's certificates from the first.
struct Certificates {
    ca: Authority,
    stranger: Authority,
    server: Pair,
    client: Pair,
}

fn certificates(dir: &Path) -> Certificates {
    let ca = Authority::new(&dir.join("certs"), "keel");
    let stranger = Authority::new(&dir.join("stranger"), "stranger");
    Certificates {
        server: ca.valid("server", "keel server"),
        client: ca.valid("client", "alice"),
        ca,
        stranger,
    }
}

/// A server with TLS on its client port (client certificates required)
/// and on a metrics port of its own.
fn tls_server(dir: &Path, certs: &Certificates) -> Server {
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let (cert, key, ca) = (
        path(&certs.server.cert),
        path(&certs.server.key),
        path(&certs.ca.cert),
    );
    Server::start(
        &dir.join("data"),
        2,
        &[
            "--cert-file",
            &cert,
            "--key-file",
            &key,
            "--trusted-ca-file",
            &ca,
            "--client-cert-auth",
            "--listen-metrics",
            "https://127.0.0.1:0",
        ],
    )
}

fn files(ca: &Path, pair: Option<&Pair>) -> TlsFiles {
    TlsFiles {
        ca: Some(ca.to_path_buf()),
        cert: pair.map(|p| p.cert.clone()),
        key: pair.map(|p| p.key.clone()),
    }
}

fn options(tls: Option<TlsFiles>) -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Some(Duration::from_secs(4)),
        tls: tls.map(|files| ClientTls::from_files(&files).unwrap()),
        ..ClientOptions::default()
    }
}

/// A put through a client made with `tls`; the error's text if it fails.
async fn try_put(server: &Server, tls: Option<TlsFiles>, key: &str) -> Result<(), String> {
    let client = Client::connect_with(&[server.endpoint()], options(tls))
        .await
        .map_err(|e| e.to_string())?;
    client.put(key, "v").await.map_err(|e| e.to_string())?;
    Ok(())
}

/// A raw TLS connection to `address` offering `alpn`.
async fn raw_tls(
    address: std::net::SocketAddr,
    files: &TlsFiles,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let config = keel_client::tls::client_config(files, alpn).unwrap();
    let stream = tokio::net::TcpStream::connect(address).await?;
    let name = keel_client::tls::server_name(&address.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
}

/// The status line and body of `GET path` over HTTP/1.1 on `stream`.
async fn get<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    path: &str,
) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: keel\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// The value of `key`, read over TLS with the client's certificate.
async fn value_of(server: &Server, certs: &Certificates, key: &str) -> Option<Vec<u8>> {
    let tls = files(&certs.ca.cert, Some(&certs.client));
    let client = Client::connect_with(&[server.endpoint()], options(Some(tls)))
        .await
        .unwrap();
    client.get(key).await.unwrap().map(|kv| kv.value)
}

#[test]
fn keel_protocol_etcd_grpc_and_http_work_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certificates(dir.path());
    let server = tls_server(dir.path(), &certs);
    let rt = runtime();
    let tls = files(&certs.ca.cert, Some(&certs.client));
    block_on(&rt, async {
        // Keys of both shards: the shard-aware client goes to the core
        // ports as well as the client port.
        let client = Client::connect_with(&[server.endpoint()], options(Some(tls.clone())))
            .await
            .unwrap();
        for i in 0..20 {
            client
                .put(format!("key{i}"), format!("v{i}"))
                .await
                .unwrap();
        }
        for i in 0..20 {
            let kv = client.get(format!("key{i}")).await.unwrap().unwrap();
            assert_eq!(kv.value, format!("v{i}").into_bytes());
        }
        // HTTP/1 on the client port (no ALPN for keel: the front serves it).
        let stream = raw_tls(server.client, &tls, &[b"http/1.1"]).await.unwrap();
        let answer = get(stream, "/health").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.200}");
        // And on the metrics port.
        let stream = raw_tls(server.metrics.unwrap(), &tls, &[]).await.unwrap();
        let answer = get(stream, "/metrics").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.200}");
        assert!(answer.contains("etcd_server_has_leader"), "{answer:.400}");
    });
    // keelctl over TLS: keel's protocol (put, get) and etcd's gRPC (hashkv).
    let keelctl = |args: &[&str]| {
        let out = std::process::Command::new(keelctl())
            .args(["--endpoints", &format!("https://{}", server.endpoint())])
            .args(["--cacert", certs.ca.cert.to_str().unwrap()])
            .args(["--cert", certs.client.cert.to_str().unwrap()])
            .args(["--key", certs.client.key.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "keelctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(keelctl(&["put", "ctl", "over tls"]), "OK\n");
    assert_eq!(keelctl(&["get", "ctl"]), "ctl\nover tls\n");
    let hashes = keelctl(&["endpoint", "hashkv", "-w", "json"]);
    assert!(hashes.contains("\"hash\""), "{hashes}");
}

#[test]
fn plaintext_to_a_tls_port_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certificates(dir.path());
    let server = tls_server(dir.path(), &certs);
    let rt = runtime();
    block_on(&rt, async {
        let refused = try_put(&server, None, "plain").await;
        assert!(refused.is_err(), "a plaintext put was taken");
        // An HTTP/1 client hears why, as from etcd (Go's words).
        for port in [server.client.port(), server.core_ports[0]] {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            let answer = get(stream, "/health").await;
            assert!(
                answer.starts_with("HTTP/1.0 400 Bad Request")
                    && answer.contains("Client sent an HTTP request to an HTTPS server."),
                "{answer:.200}"
            );
        }
        let stream = tokio::net::TcpStream::connect(server.metrics.unwrap())
            .await
            .unwrap();
        let answer = get(stream, "/metrics").await;
        assert!(!answer.contains("etcd_server_has_leader"), "{answer:.200}");
        assert_eq!(value_of(&server, &certs, "plain").await, None);
    });
}

#[test]
fn certificates_of_another_authority_expired_or_missing_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certificates(dir.path());
    let server = tls_server(dir.path(), &certs);
    let expired_client = certs.ca.sign(Leaf {
        name: "expired-client",
        common_name: "alice",
        expired: true,
        serial: 7,
    });
    let stranger_client = certs.stranger.valid("stranger-client", "alice");
    let rt = runtime();
    block_on(&rt, async {
        let attempts = [
            (
                "a client certificate from another authority",
                files(&certs.ca.cert, Some(&stranger_client)),
            ),
            (
                "an expired client certificate",
                files(&certs.ca.cert, Some(&expired_client)),
            ),
            ("no client certificate", files(&certs.ca.cert, None)),
            (
                "a server certificate the client's authority did not sign",
                files(&certs.stranger.cert, Some(&certs.client)),
            ),
        ];
        for (what, tls) in attempts {
            let refused = try_put(&server, Some(tls), what).await;
            let error = refused.err().unwrap_or_else(|| panic!("{what}: taken"));
            eprintln!("{what}: {error}");
            assert!(
                error.contains("certificate")
                    || error.contains("alert")
                    || error.contains("Certificate"),
                "{what}: an unclear error: {error}"
            );
            assert_eq!(value_of(&server, &certs, what).await, None, "{what}");
        }
    });
    drop(server);
    // A server whose own certificate expired: clients refuse it.
    let expired_server = certs.ca.sign(Leaf {
        name: "expired-server",
        common_name: "keel server",
        expired: true,
        serial: 8,
    });
    let old = Certificates {
        server: expired_server,
        ..certs
    };
    let server = tls_server(&dir.path().join("expired"), &old);
    block_on(&rt, async {
        let refused = try_put(&server, Some(files(&old.ca.cert, Some(&old.client))), "k").await;
        let error = refused.expect_err("an expired server was trusted");
        assert!(
            error.contains("expired") || error.contains("Expired"),
            "{error}"
        );
    });
}

#[test]
fn a_renewed_certificate_is_used_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certificates(dir.path());
    let server = tls_server(dir.path(), &certs);
    let tls = files(&certs.ca.cert, Some(&certs.client));
    let rt = runtime();
    block_on(&rt, async {
        let before = Client::connect_with(&[server.endpoint()], options(Some(tls.clone())))
            .await
            .unwrap();
        before.put("a", "1").await.unwrap();
        let first = raw_tls(server.client, &tls, &[b"h2"]).await.unwrap();
        let shown = |stream: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>| {
            stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
        };
        let original = shown(&first);
        // Renew: a new key and certificate (another serial) written over
        // the old files, as cert-manager or an operator would.
        let renewed = certs.ca.sign(Leaf {
            name: "renewed",
            common_name: "keel server",
            expired: false,
            serial: 2,
        });
        std::fs::copy(&renewed.key, &certs.server.key).unwrap();
        std::fs::copy(&renewed.cert, &certs.server.cert).unwrap();
        let renewed_der = keel_client::tls::read_certificates(&renewed.cert).unwrap()[0].to_vec();
        assert_ne!(renewed_der, original);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let stream = raw_tls(server.client, &tls, &[b"h2"]).await.unwrap();
            if shown(&stream) == renewed_der {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the renewed certificate was never used"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Connections made before still work.
        before.put("b", "2").await.unwrap();
        assert_eq!(before.get("a").await.unwrap().unwrap().value, b"1");
        drop(first);
    });
}
