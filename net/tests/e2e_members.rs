//! Membership changes through `keelctl` against real `keel` processes
//! (docs/membership.md): a one-member cluster takes a learner, which joins
//! with `--initial-cluster-state existing`, serves only what a learner may,
//! is promoted, updated and removed; a member that was never added cannot
//! join; a removed member's data directory does not start again.

mod support;

use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{keelctl, Server};

fn run(endpoint: &str, args: &[&str]) -> Output {
    let mut child = Command::new(keelctl())
        .args(["--endpoints", endpoint])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(b"");
    child.wait_with_output().unwrap()
}

fn ok(endpoint: &str, args: &[&str]) -> String {
    let output = run(endpoint, args);
    assert!(
        output.status.success(),
        "keelctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn fails(endpoint: &str, args: &[&str]) -> String {
    let output = run(endpoint, args);
    assert!(!output.status.success(), "keelctl {args:?} succeeded");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Two consecutive free ports on 127.0.0.1 (a member's peer ports for its
/// two cores); the first.
fn peer_port() -> u16 {
    for _ in 0..100 {
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two free ports");
}

/// Runs `keelctl` until it succeeds or `within` passes.
fn eventually(endpoint: &str, args: &[&str], within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let output = run(endpoint, args);
        if output.status.success() {
            return String::from_utf8(output.stdout).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "keelctl {args:?} kept failing: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `keelctl` until what it prints contains `needle`.
fn until_it_says(endpoint: &str, args: &[&str], needle: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let output = run(endpoint, args);
        let said = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() && said.contains(needle) {
            return said;
        }
        assert!(
            Instant::now() < deadline,
            "keelctl {args:?} never said {needle:?}: {said}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `--initial-cluster` line `member add` printed.
fn printed_initial_cluster(added: &str) -> String {
    added
        .lines()
        .find_map(|l| l.strip_prefix("KEEL_INITIAL_CLUSTER=\""))
        .map(|l| l.trim_end_matches('"').to_string())
        .unwrap_or_else(|| panic!("no initial cluster in {added:?}"))
}

fn id_of(list: &str, name: &str) -> String {
    list.lines()
        .find(|l| l.split(", ").nth(2) == Some(name))
        .and_then(|l| l.split(", ").next())
        .unwrap_or_else(|| panic!("{name} not in {list:?}"))
        .to_string()
}

#[test]
fn a_learner_joins_serves_only_what_a_learner_may_and_is_promoted_updated_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (peer_port(), peer_port());
    let peer_a = format!("127.0.0.1:{port_a}");
    let peer_b = format!("127.0.0.1:{port_b}");
    let a = Server::start(
        &dir.path().join("a"),
        2,
        &[
            "--name",
            "a",
            "--listen-peer",
            &peer_a,
            "--initial-cluster",
            &format!("a={peer_a}"),
        ],
    );
    let ea = a.endpoint();
    ok(&ea, &["put", "before", "1"]);

    // A member nobody added is refused when it asks to join.
    let stranger = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["--name", "c", "--data-dir"])
        .arg(dir.path().join("c"))
        .args(["--listen-client", "127.0.0.1:0", "--core-port-base", "0"])
        .args(["--cores", "2", "--no-pin", "--listen-peer", &peer_b])
        .args(["--initial-cluster", &format!("a={peer_a},c={peer_b}")])
        .args(["--initial-cluster-state", "existing"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!stranger.status.success());
    let said = String::from_utf8_lossy(&stranger.stderr);
    assert!(said.contains("no member is named \"c\""), "{said}");

    // Added as a learner, with what to start it with.
    let added = ok(
        &ea,
        &[
            "member",
            "add",
            "b",
            "--peer-urls",
            &format!("http://{peer_b}"),
        ],
    );
    assert!(
        added.starts_with("Member ") && added.contains(" added to cluster "),
        "{added}"
    );
    let initial = printed_initial_cluster(&added);
    // Members are listed by id, and b's is random.
    let mut printed: Vec<&str> = initial.split(',').collect();
    printed.sort_unstable();
    let (a_url, b_url) = (format!("a=http://{peer_a}"), format!("b=http://{peer_b}"));
    assert_eq!(printed, vec![a_url.as_str(), b_url.as_str()]);
    let b = Server::start(
        &dir.path().join("b"),
        2,
        &[
            "--name",
            "b",
            "--listen-peer",
            &peer_b,
            "--initial-cluster",
            &initial,
            "--initial-cluster-state",
            "existing",
        ],
    );
    let eb = b.endpoint();

    // The learner serves status, the member list and serializable reads
    // once it caught up, and refuses the rest.
    until_it_says(
        &eb,
        &["endpoint", "status"],
        ", false, true, ",
        Duration::from_secs(20),
    );
    let list = ok(&ea, &["member", "list"]);
    let id_b = id_of(&list, "b");
    let row = format!("{id_b}, started, b, http://{peer_b}, , true");
    until_it_says(&ea, &["member", "list"], &row, Duration::from_secs(10));
    // Once it has caught up, its serializable read has the key.
    until_it_says(
        &eb,
        &["get", "before", "--consistency", "s"],
        "before\n1\n",
        Duration::from_secs(20),
    );
    assert!(ok(&eb, &["member", "list"]).contains(", b, "));
    for args in [
        &["put", "k", "v"][..],
        &["get", "before"][..],
        &["lease", "grant", "10"][..],
    ] {
        let why = fails(&eb, args);
        assert!(why.contains("not supported for learner"), "{args:?}: {why}");
    }

    // Promoted (once caught up): it serves everything.
    let promoted = eventually(&ea, &["member", "promote", &id_b], Duration::from_secs(30));
    assert!(
        promoted.contains(&format!("Member {id_b} promoted in cluster ")),
        "{promoted}"
    );
    // Given both members, the client finds each shard's leader, b too.
    let both = format!("{ea},{eb}");
    eventually(&both, &["put", "k", "v"], Duration::from_secs(30));
    assert_eq!(ok(&both, &["get", "k"]), "k\nv\n");
    until_it_says(
        &eb,
        &["get", "k", "--consistency", "s"],
        "k\nv\n",
        Duration::from_secs(10),
    );
    let row = format!("{id_b}, started, b, http://{peer_b}, , false");
    until_it_says(&ea, &["member", "list"], &row, Duration::from_secs(10));

    // The same address again is an update that changes nothing; another
    // member's address is refused.
    let updated = eventually(
        &ea,
        &[
            "member",
            "update",
            &id_b,
            "--peer-urls",
            &format!("http://{peer_b}"),
        ],
        Duration::from_secs(30),
    );
    assert!(updated.contains("updated in cluster"), "{updated}");
    let why = fails(&ea, &["member", "update", &id_b, "--peer-urls", &peer_a]);
    assert!(why.contains("another member's"), "{why}");
    // Removing the last voter but one leaves one of one: allowed; the
    // removed member's id is never given again.
    let id_a = id_of(&ok(&ea, &["member", "list"]), "a");
    let removed = eventually(&eb, &["member", "remove", &id_a], Duration::from_secs(30));
    assert!(
        removed.contains(&format!("Member {id_a} removed from cluster")),
        "{removed}"
    );
    // b follows the list once its replica of shard 0 applied the removal.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = ok(&eb, &["member", "list"]);
        if !list.contains(", a, ") {
            assert!(list.contains(", b, "), "{list}");
            break;
        }
        assert!(Instant::now() < deadline, "{list}");
        std::thread::sleep(Duration::from_millis(100));
    }
    eventually(&eb, &["put", "after", "2"], Duration::from_secs(30));
    assert_eq!(ok(&eb, &["get", "after"]), "after\n2\n");
    // Asked again once every shard let it go: it was removed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let why = fails(&eb, &["member", "remove", &id_a]);
        if !why.contains("still changing") {
            assert!(why.contains("was removed"), "{why}");
            break;
        }
        assert!(Instant::now() < deadline, "{why}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The removed member's directory does not serve again.
    drop(a);
    let again = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["--name", "a", "--data-dir"])
        .arg(dir.path().join("a"))
        .args(["--listen-client", "127.0.0.1:0", "--core-port-base", "0"])
        .args([
            "--shards",
            "2",
            "--cores",
            "2",
            "--no-pin",
            "--listen-peer",
            &peer_a,
        ])
        .args(["--initial-cluster", &format!("a={peer_a}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!again.status.success());
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(said.contains("was removed from the cluster"), "{said}");
}
