//! Python's etcd3gw (PyPI), a client of etcd's JSON gateway, runs its own
//! test suite, unchanged, against keel: every test must pass and none may
//! be skipped (its functional tests skip themselves when they find no
//! server, which would hide a gateway that does not answer).
//!
//! keel runs as a cluster of one with a peer address, as an etcd member
//! always is: etcd3gw's `members()` test expects peer URLs, and a keel
//! started without `--listen-peer` has none to list.
//!
//! Needs python3 with venv (Debian's `python3-venv`, which .ci/run
//! installs) and PyPI; the suite is installed into a virtual environment
//! under cargo's target directory once and reused.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::Server;

/// What the suite is run from: pinned so that a new release cannot change
/// the test under us.
const PACKAGES: &[&str] = &["etcd3gw==2.7.0", "oslotest==6.1.1", "pytest==9.2.0"];

/// A port whose next one is free too: keel's core `i` listens for peers
/// on the peer port plus `i`.
fn free_peer_port() -> u16 {
    for _ in 0..100 {
        let first = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = first.local_addr().expect("its address").port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two free ports");
}

/// A virtual environment with etcd3gw's suite and pytest, made once.
fn environment() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("etcd3gw-venv");
    let python = venv.join("bin/python");
    let ready = venv.join(PACKAGES.join(" ").replace(['=', ' '], "_"));
    if ready.exists() {
        return python;
    }
    let _ = std::fs::remove_dir_all(&venv);
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        made,
        "python3 -m venv failed: this test needs python3 and venv (apt-get install python3-venv)"
    );
    let installed = Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check"])
        .args(PACKAGES)
        .status()
        .is_ok_and(|s| s.success());
    assert!(installed, "pip install {PACKAGES:?} failed");
    std::fs::write(&ready, b"").expect("mark the environment ready");
    python
}

/// The counts of a JUnit report's `<testsuite>`: tests, failures, errors,
/// skipped.
fn counts(report: &str) -> [u64; 4] {
    let suite = report
        .split("<testsuite ")
        .nth(1)
        .and_then(|s| s.split('>').next())
        .unwrap_or_else(|| panic!("no <testsuite> in the report: {report}"));
    ["tests", "failures", "errors", "skipped"].map(|name| {
        suite
            .split(&format!(" {name}=\""))
            .nth(1)
            .and_then(|s| s.split('"').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {name} count in <testsuite {suite}>"))
    })
}

#[test]
fn etcd3gw_s_own_tests_pass_against_keel_s_gateway_with_none_skipped() {
    let python = environment();
    let dir = tempfile::tempdir().unwrap();
    let peer = format!("127.0.0.1:{}", free_peer_port());
    let server = Server::start(
        dir.path(),
        2,
        &[
            "--listen-peer",
            &peer,
            "--initial-cluster",
            &format!("default={peer}"),
        ],
    );
    let url = format!("http://{}", server.endpoint());
    let report = dir.path().join("etcd3gw.xml");
    let ran = Command::new(&python)
        .args(["-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"])
        .args(["--pyargs", "etcd3gw.tests", "--junitxml"])
        .arg(&report)
        .env("TOOZ_TEST_HTTP_URL", &url)
        .env("TOOZ_TEST_ETCD_PORT", server.client.port().to_string())
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .status()
        .expect("run pytest");
    let report = std::fs::read_to_string(&report).expect("pytest's report");
    let [tests, failures, errors, skipped] = counts(&report);
    eprintln!("etcd3gw: {tests} tests, {failures} failed, {errors} errors, {skipped} skipped");
    assert!(tests >= 39, "etcd3gw 2.7.0 has 39 tests; {tests} ran");
    assert_eq!(
        (failures, errors, skipped),
        (0, 0, 0),
        "etcd3gw's suite against keel (pytest exit {ran})"
    );
    assert!(ran.success(), "pytest exit {ran}");
}
