//! TLS between members (`--peer-cert-file` and its twins): members whose
//! certificates the cluster's authority signed form a cluster and
//! replicate; a member whose certificate another authority signed gets
//! nothing from them and gives them nothing, whichever side connects; a
//! stranger's TLS client and a plaintext client are refused at the peer
//! port.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::certs::{Authority, Pair};
use support::metrics::{scrape, total};
use support::{block_on, peer_ports, runtime, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A member of the cluster `initial`, its peers checked against `ca`.
fn member(dir: &Path, name: &str, peer: &str, initial: &str, ca: &Path, pair: &Pair) -> Server {
    let mut flags: Vec<String> = [
        "--name",
        name,
        "--listen-peer",
        peer,
        "--initial-cluster",
        initial,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    flags.extend(peer_tls_flags(ca, pair));
    flags.push("--peer-client-cert-auth".to_string());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Server::start(&dir.join(name), 2, &flags)
}

/// keelctl with the client ports of `servers`; its stdout if it
/// succeeded.
fn keelctl(servers: &[&Server], args: &[&str]) -> Option<String> {
    let endpoints: Vec<String> = servers.iter().map(|s| s.endpoint()).collect();
    let out = Command::new(support::keelctl())
        .args([
            "--endpoints",
            &endpoints.join(","),
            "--command-timeout",
            "3s",
        ])
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "keelctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn members_speak_tls_and_refuse_a_peer_of_another_authority() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new(&dir.path().join("certs"), "keel");
    let stranger = Authority::new(&dir.path().join("stranger"), "stranger");
    let names = ["a", "b", "c"];
    let peers: Vec<String> = peer_ports(3)
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    let initial = names
        .iter()
        .zip(&peers)
        .map(|(name, peer)| format!("{name}={peer}"))
        .collect::<Vec<_>>()
        .join(",");
    let a = member(
        dir.path(),
        "a",
        &peers[0],
        &initial,
        &ca.cert,
        &ca.valid("a", "a"),
    );
    let b = member(
        dir.path(),
        "b",
        &peers[1],
        &initial,
        &ca.cert,
        &ca.valid("b", "b"),
    );
    // c trusts the cluster's authority, but its own certificate is the
    // stranger's: a and b refuse it as a client and as a server.
    let c_pair = stranger.valid("c", "c");
    let c = member(dir.path(), "c", &peers[2], &initial, &ca.cert, &c_pair);

    // a and b are a quorum: writes take, and both have them.
    let deadline = Instant::now() + Duration::from_secs(30);
    for k in 0..16 {
        let key = format!("key-{k}");
        while keelctl(&[&a, &b], &["put", &key, "v"]).is_none() {
            assert!(Instant::now() < deadline, "no write took");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let serializable = [
        "get",
        "key-",
        "--prefix",
        "--keys-only",
        "--consistency",
        "s",
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    for server in [&a, &b] {
        loop {
            let keys = keelctl(&[server], &serializable).unwrap_or_default();
            if keys.lines().filter(|l| !l.is_empty()).count() == 16 {
                break;
            }
            assert!(Instant::now() < deadline, "a member lacks keys: {keys}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // c learns nothing (not a leader, not an entry), and takes nothing.
    let c_scrape = scrape(c.client);
    assert_eq!(total(&c_scrape, "etcd_server_has_leader", &[]), 0.0);
    let applied = total(&c_scrape, "etcd_server_proposals_applied_total", &[]);
    let a_applied = total(
        &scrape(a.client),
        "etcd_server_proposals_applied_total",
        &[],
    );
    assert!(
        applied + 16.0 <= a_applied,
        "c applied {applied}, a {a_applied}"
    );
    let local = keelctl(&[&c], &serializable).unwrap_or_default();
    assert_eq!(local, "", "c got data from its peers");
    assert!(
        keelctl(&[&c], &["put", "through-c", "v"]).is_none(),
        "c took a write"
    );
    assert_eq!(
        keelctl(&[&a, &b], &["get", "through-c"]).as_deref(),
        Some("")
    );

    let runtime = runtime();
    block_on(&runtime, async {
        // A stranger's TLS client at a's peer port: refused at the
        // handshake (its alert, or the connection closed), never read.
        let files = keel_client::tls::TlsFiles {
            ca: Some(ca.cert.clone()),
            cert: Some(c_pair.cert.clone()),
            key: Some(c_pair.key.clone()),
        };
        let config = keel_client::tls::client_config(&files, &[]).unwrap();
        let stream = tokio::net::TcpStream::connect(peers[0].as_str())
            .await
            .unwrap();
        let name = keel_client::tls::server_name(&peers[0]).unwrap();
        match tokio_rustls::TlsConnector::from(config)
            .connect(name, stream)
            .await
        {
            Err(error) => eprintln!("refused at the handshake: {error}"),
            Ok(mut stream) => {
                let _ = stream.write_all(&[0u8; 64]).await;
                let _ = stream.flush().await;
                let mut buf = [0u8; 16];
                let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
                    .await
                    .expect("the peer port kept a stranger's connection open");
                assert!(
                    matches!(read, Err(_) | Ok(0)),
                    "a stranger's connection was answered: {read:?}"
                );
            }
        }
        // Plaintext at a's peer port: a TLS alert at most, then closed.
        let mut plain = tokio::net::TcpStream::connect(peers[0].as_str())
            .await
            .unwrap();
        plain.write_all(b"KEELPEER and more bytes").await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer))
            .await
            .expect("the peer port kept a plaintext connection open")
            .ok();
        const ALERT_RECORD: u8 = 0x15;
        assert!(
            answer.is_empty() || (answer[0] == ALERT_RECORD && answer.len() <= 7),
            "plaintext was answered: {answer:?}"
        );
    });
    // Still a working cluster of two.
    assert_eq!(
        keelctl(&[&a, &b], &["put", "after", "v"]).as_deref(),
        Some("OK")
    );
    drop((a, b, c));
}

/// The `--peer-*` flags for `pair`, checked against `ca`.
fn peer_tls_flags(ca: &Path, pair: &Pair) -> Vec<String> {
    let path = |p: &Path| p.to_str().unwrap().to_string();
    vec![
        "--peer-cert-file".into(),
        path(&pair.cert),
        "--peer-key-file".into(),
        path(&pair.key),
        "--peer-trusted-ca-file".into(),
        path(ca),
    ]
}

#[test]
fn a_member_joins_over_tls_and_a_stranger_cannot_even_ask() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new(&dir.path().join("certs"), "keel");
    let stranger = Authority::new(&dir.path().join("stranger"), "stranger");
    let ports = peer_ports(2);
    let (peer_a, peer_b) = (
        format!("127.0.0.1:{}", ports[0]),
        format!("127.0.0.1:{}", ports[1]),
    );
    let a = member(
        dir.path(),
        "a",
        &peer_a,
        &format!("a={peer_a}"),
        &ca.cert,
        &ca.valid("a", "a"),
    );
    assert_eq!(
        keelctl(&[&a], &["put", "before", "1"]).as_deref(),
        Some("OK")
    );
    keelctl(
        &[&a],
        &[
            "member",
            "add",
            "b",
            "--peer-urls",
            &format!("http://{peer_b}"),
        ],
    )
    .expect("member add");
    let initial = format!("a={peer_a},b={peer_b}");

    // b, with a certificate of another authority: a refuses its question.
    let refused = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["--name", "b", "--data-dir"])
        .arg(dir.path().join("stranger-b"))
        .args(["--listen-client", "127.0.0.1:0", "--core-port-base", "0"])
        .args(["--cores", "2", "--no-pin", "--listen-peer", &peer_b])
        .args([
            "--initial-cluster",
            &initial,
            "--initial-cluster-state",
            "existing",
        ])
        .args(peer_tls_flags(&ca.cert, &stranger.valid("b", "b")))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("cannot join the cluster"), "{said}");

    // b, with the cluster's certificate: joins, and catches up.
    let b_flags = [
        vec![
            "--name".to_string(),
            "b".into(),
            "--listen-peer".into(),
            peer_b.clone(),
            "--initial-cluster".into(),
            initial.clone(),
            "--initial-cluster-state".into(),
            "existing".into(),
        ],
        peer_tls_flags(&ca.cert, &ca.valid("b", "b")),
    ]
    .concat();
    let b_flags: Vec<&str> = b_flags.iter().map(String::as_str).collect();
    let b = Server::start(&dir.path().join("b"), 2, &b_flags);
    let deadline = Instant::now() + Duration::from_secs(20);
    while keelctl(
        &[&b],
        &["get", "before", "--consistency", "s", "--print-value-only"],
    )
    .as_deref()
        != Some("1")
    {
        assert!(Instant::now() < deadline, "b never caught up over TLS");
        std::thread::sleep(Duration::from_millis(200));
    }
}
