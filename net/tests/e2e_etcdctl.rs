//! keelctl against keel beside etcdctl against a real etcd, over the same
//! command lines (taken from etcd's documentation of etcdctl): after
//! masking what legitimately differs (revisions, lease and member ids,
//! timings), the two print the same text and exit with the same status.
//!
//! Needs Debian's etcd 3.4 (`etcd-server`, `etcd-client`): installed here
//! when missing, as root; without root and without them, the test says so
//! and passes without running.
//!
//! JSON is compared as parsed values (serde_json keeps 64-bit integers
//! exact: keel's member id is above 2^63). Error texts differ (etcd's
//! start with `etcdserver:`), so an error is compared by its status and by
//! whether stderr says `Error:`.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::certs::{Authority, Pair};
use support::{keelctl, Server};

/// Installs etcd and etcdctl if missing; false when they cannot be had.
fn etcd_installed() -> bool {
    let present = |program: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if present("etcd") && present("etcdctl") {
        return etcdctl_is_3_4();
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0");
    if !root {
        eprintln!("etcd or etcdctl is missing and this is not root: apt-get install etcd-server etcd-client; skipping");
        return false;
    }
    let install = "export DEBIAN_FRONTEND=noninteractive; \
        apt-get install -y -q etcd-server etcd-client >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q etcd-server etcd-client >/dev/null; }";
    let installed = Command::new("sh")
        .args(["-c", install])
        .status()
        .is_ok_and(|s| s.success());
    assert!(installed, "apt-get install etcd-server etcd-client failed");
    etcdctl_is_3_4()
}

/// The comparison is with etcdctl 3.4 (Debian's): another version prints
/// other things.
fn etcdctl_is_3_4() -> bool {
    let version = Command::new("etcdctl")
        .arg("version")
        .env("ETCDCTL_API", "3")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    assert!(
        version.starts_with("etcdctl version: 3.4."),
        "the comparison is with etcdctl 3.4 (Debian's etcd-client); this one says {version:?}"
    );
    true
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Where a client reaches a server, and the TLS flags it needs there.
#[derive(Debug, Clone)]
struct Endpoint {
    url: String,
    tls: Vec<String>,
}

/// The certificates of a run over TLS: the same for etcd and keel.
struct Tls {
    ca: String,
    server: Pair,
    client: Pair,
}

impl Tls {
    fn new(dir: &Path) -> Tls {
        let ca = Authority::new(dir, "keel");
        Tls {
            server: ca.valid("server", "server"),
            client: ca.valid("client", "client"),
            ca: ca.cert.display().to_string(),
        }
    }

    /// The server's flags (etcd's names, which keel shares).
    fn server_flags(&self) -> Vec<String> {
        vec![
            format!("--cert-file={}", self.server.cert.display()),
            format!("--key-file={}", self.server.key.display()),
            format!("--trusted-ca-file={}", self.ca),
            "--client-cert-auth".to_string(),
        ]
    }

    /// A client's endpoint at `address`.
    fn endpoint(&self, address: &str) -> Endpoint {
        Endpoint {
            url: format!("https://{address}"),
            tls: vec![
                format!("--cacert={}", self.ca),
                format!("--cert={}", self.client.cert.display()),
                format!("--key={}", self.client.key.display()),
            ],
        }
    }
}

/// A plaintext endpoint at `address`.
fn plain(address: &str) -> Endpoint {
    Endpoint {
        url: address.to_string(),
        tls: Vec::new(),
    }
}

/// A real etcd, stopped when dropped.
struct Etcd {
    child: std::process::Child,
    endpoint: Endpoint,
}

impl Etcd {
    fn start(dir: &Path, tls: Option<&Tls>) -> Etcd {
        let (client, peer) = (free_port(), free_port());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let child = Command::new("etcd")
            .args(tls.map(Tls::server_flags).unwrap_or_default())
            .args([
                "--name",
                "default",
                "--data-dir",
                &dir.display().to_string(),
                "--listen-client-urls",
                &format!("{scheme}://127.0.0.1:{client}"),
                "--advertise-client-urls",
                &format!("{scheme}://127.0.0.1:{client}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-cluster",
                &format!("default=http://127.0.0.1:{peer}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        let etcd = Etcd {
            child,
            endpoint: match tls {
                Some(tls) => tls.endpoint(&format!("127.0.0.1:{client}")),
                None => plain(&format!("127.0.0.1:{client}")),
            },
        };
        // Ready when it answers a linearizable read (it has a leader).
        for _ in 0..100 {
            let probe = run(
                System::Etcd,
                &etcd.endpoint,
                &["get", "probe"],
                None,
                &HashMap::new(),
            );
            if probe.status == 0 {
                return etcd;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd did not answer within 10 s");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    Etcd,
    Keel,
}

/// What one command printed.
#[derive(Debug)]
struct Ran {
    stdout: String,
    stderr: String,
    status: i32,
}

/// Runs one command line; `$NAME` words are replaced from `vars`.
fn run(
    system: System,
    endpoint: &Endpoint,
    line: &[&str],
    stdin: Option<&str>,
    vars: &HashMap<&str, String>,
) -> Ran {
    let words: Vec<String> = line
        .iter()
        .map(|word| {
            let mut word = word.to_string();
            for (name, value) in vars {
                word = word.replace(name, value);
            }
            word
        })
        .collect();
    // A command that runs until interrupted gets SIGINT after 2 s (and
    // SIGKILL 5 s later, should it ignore SIGINT).
    let until_interrupted = matches!(
        words
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice(),
        ["watch", ..] | ["elect", "-l", ..]
    );
    let (program, mut arguments) = match system {
        System::Etcd => ("etcdctl".to_string(), Vec::new()),
        System::Keel => (keelctl().to_string(), Vec::new()),
    };
    arguments.push(format!("--endpoints={}", endpoint.url));
    arguments.extend(endpoint.tls.iter().cloned());
    arguments.extend(words);
    let mut command = if until_interrupted {
        let mut command = Command::new("timeout");
        command.args(["--preserve-status", "-k", "5", "-s", "INT", "2", &program]);
        command
    } else {
        Command::new(&program)
    };
    // Only the command line speaks: no settings from the environment.
    for (name, _) in std::env::vars() {
        if name.starts_with("ETCDCTL_") || name.starts_with("KEELCTL_") {
            command.env_remove(name);
        }
    }
    command
        .args(&arguments)
        .env("ETCDCTL_API", "3")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("run the client");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(stdin) = stdin {
        input.write_all(stdin.as_bytes()).expect("write stdin");
    }
    drop(input);
    let output = child.wait_with_output().expect("wait for the client");
    Ran {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        status: output.status.code().unwrap_or(-1),
    }
}

/// JSON with what legitimately differs masked: header ids and terms
/// dropped, revisions and timings masked, lease ids named, and the
/// create/mod revisions of one output replaced by their rank (so that
/// equal ones stay equal and order is kept).
fn normalise_json(mut value: Value, lease: i64) -> Value {
    fn collect_revisions(value: &Value, into: &mut BTreeSet<i64>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    if key == "create_revision" || key == "mod_revision" {
                        into.extend(child.as_i64());
                    } else {
                        collect_revisions(child, into);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect_revisions(v, into)),
            _ => {}
        }
    }
    fn mask(value: &mut Value, ranks: &HashMap<i64, usize>, lease: i64) {
        match value {
            Value::Object(map) => {
                for key in ["cluster_id", "member_id", "raft_term", "revision"] {
                    map.remove(key);
                }
                for (key, child) in map.iter_mut() {
                    match key.as_str() {
                        "header" | "Header" => *child = Value::String("<HEADER>".into()),
                        "create_revision" | "mod_revision" => {
                            let rank = child.as_i64().and_then(|r| ranks.get(&r));
                            *child = Value::String(format!("<R{}>", rank.copied().unwrap_or(0)));
                        }
                        "lease" | "ID" | "id" => {
                            *child = Value::String(if child.as_i64() == Some(lease) {
                                "<LEASE>".into()
                            } else {
                                "<ID>".into()
                            })
                        }
                        "ttl" | "took" => *child = Value::String("<MASKED>".into()),
                        // etcd lists a lease's keys in no order.
                        "keys" => {
                            if let Value::Array(keys) = child {
                                keys.sort_by_key(|k| k.to_string());
                            }
                        }
                        _ => mask(child, ranks, lease),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| mask(v, ranks, lease)),
            _ => {}
        }
    }
    let mut revisions = BTreeSet::new();
    collect_revisions(&value, &mut revisions);
    let ranks = revisions
        .into_iter()
        .enumerate()
        .map(|(i, r)| (r, i))
        .collect();
    mask(&mut value, &ranks, lease);
    value
}

/// Text with what legitimately differs masked.
fn normalise_text(text: &str, lease: i64) -> String {
    let lease_hex = format!("{lease:016x}");
    let mut lines = Vec::new();
    let mut table_header_seen = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('{') || trimmed.starts_with('[') {
            if let Ok(value) = serde_json::from_str::<Value>(trimmed) {
                lines.push(normalise_json(value, lease).to_string());
                continue;
            }
        }
        let mut line = line.replace(&lease_hex, "<LEASE>");
        if let Some(at) = line.find("took = ") {
            line.truncate(at + "took = ".len());
            line.push_str("<DUR>");
        }
        if let Some(at) = line.find("remaining(") {
            if let Some(end) = line[at..].find("s)") {
                line.replace_range(at + "remaining(".len()..at + end, "<N>");
            }
        }
        // A lease granted by the step itself: its id is new.
        if let Some(rest) = line.strip_prefix("lease ") {
            if let Some((id, granted)) = rest.split_once(" granted with ") {
                if id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    line = format!("lease <NEW> granted with {granted}");
                }
            }
        }
        if let Some(rest) = line.strip_prefix("compacted revision ") {
            if rest.parse::<u64>().is_ok() {
                line = "compacted revision <REV>".into();
            }
        }
        // A lock's or an election's key: the name, then the session's id.
        for name in ["{c}/lk/", "{c}/el/"] {
            if line.starts_with(name) {
                line = format!("{name}<ID>");
            }
        }
        if let (Some(open), Some(close)) = (line.find("attached keys(["), line.rfind("])")) {
            let start = open + "attached keys([".len();
            if start <= close {
                let mut keys: Vec<&str> = line[start..close].split(' ').collect();
                keys.sort_unstable();
                line = format!("{}{}{}", &line[..start], keys.join(" "), &line[close..]);
            }
        }
        // A table: its header row's names only (cells differ in width).
        if line.starts_with('+') {
            continue;
        }
        if line.starts_with('|') {
            if !table_header_seen {
                table_header_seen = true;
                let names: Vec<&str> = line.split('|').map(str::trim).collect();
                lines.push(names.join("|"));
            }
            continue;
        }
        lines.push(line);
    }
    lines.join("\n")
}

/// A fields answer's lines with numbers that differ masked.
fn normalise_fields(text: &str, lease: i64) -> String {
    text.lines()
        .map(|line| {
            for name in [
                "\"ClusterID\"",
                "\"MemberID\"",
                "\"Revision\"",
                "\"RaftTerm\"",
                "\"CreateRevision\"",
                "\"ModRevision\"",
                "\"PrevCreateRevision\"",
                "\"PrevModRevision\"",
            ] {
                if line.starts_with(name) {
                    return format!("{name} : <N>");
                }
            }
            if line.starts_with("\"Lease\"") || line.starts_with("\"ID\"") {
                let masked = if line.ends_with(&format!(": {lease}")) {
                    "<LEASE>"
                } else if line.ends_with(": 0") {
                    "0"
                } else {
                    "<ID>"
                };
                return format!("{} : {masked}", line.split(" :").next().unwrap_or(""));
            }
            line.to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One step of the comparison.
struct Step {
    line: &'static [&'static str],
    stdin: Option<&'static str>,
    /// Whether keelctl serves it yet (`snapshot save` is etcdctl's alone
    /// for now: keelctl's comes with snapshot restore).
    keelctl: bool,
}

const fn step(line: &'static [&'static str]) -> Step {
    Step {
        line,
        stdin: None,
        keelctl: true,
    }
}

const fn etcdctl_only(line: &'static [&'static str]) -> Step {
    Step {
        line,
        stdin: None,
        keelctl: false,
    }
}

const fn with_stdin(line: &'static [&'static str], stdin: &'static str) -> Step {
    Step {
        line,
        stdin: Some(stdin),
        keelctl: true,
    }
}

const TXN_OK: &str =
    "value(\"{c}/c\") = \"3\"\n\nput {c}/t1 v1\nget {c}/c\ndel {c}/nosuch\n\nput {c}/t2 v2\n\n";
const TXN_FAIL: &str =
    "value(\"{c}/c\") = \"nope\"\n\nput {c}/t3 v3\n\nput {c}/t4 v4\nget {c}/t4\n\n";
const TXN_FLAGS: &str =
    "version(\"{c}/t4\") > \"0\"\n\nget {c}/t --prefix --keys-only\nput {c}/t1 v9 --prev-kv\ndel {c}/t2 --prev-kv\n\n\n";

/// Users, roles and permissions, then auth on (etcdctl adds the root role
/// itself), then what users may and may not do, then auth off again.
const AUTH_STEPS: &[Step] = &[
    // A user given while auth is off: no token needed, the call goes on.
    step(&["--user", "root:rootpw", "put", "/before", "1"]),
    step(&["user", "add", "root:rootpw"]),
    step(&["user", "add", "alice:alicepw"]),
    step(&["user", "add", "alice:again"]),
    step(&["role", "add", "app"]),
    step(&[
        "role",
        "grant-permission",
        "app",
        "readwrite",
        "/app/",
        "--prefix",
    ]),
    step(&["role", "grant-permission", "app", "read", "/ro"]),
    step(&["role", "grant-permission", "app", "write", "/wa", "/wz"]),
    step(&[
        "role",
        "grant-permission",
        "app",
        "read",
        "/from",
        "--from-key",
    ]),
    step(&["role", "get", "app"]),
    step(&["role", "get", "nosuch"]),
    step(&["user", "grant-role", "alice", "app"]),
    step(&["user", "grant-role", "alice", "nosuch"]),
    step(&["user", "get", "alice"]),
    step(&["user", "list"]),
    step(&["role", "list"]),
    step(&["auth", "enable"]),
    step(&["put", "/app/a", "1"]),
    step(&["--user", "alice:alicepw", "put", "/app/a", "1"]),
    step(&["--user", "alice:alicepw", "get", "/app/a"]),
    step(&["--user", "alice:alicepw", "get", "/app/", "--prefix"]),
    step(&["--user", "alice:alicepw", "get", "/secret"]),
    step(&["--user", "alice:alicepw", "get", "/", "--prefix"]),
    step(&["--user", "alice:alicepw", "put", "/ro", "x"]),
    step(&["--user", "alice:alicepw", "put", "/wb", "x"]),
    step(&["--user", "alice:alicepw", "get", "/wb"]),
    step(&["--user", "alice:wrong", "get", "/app/a"]),
    step(&["--user", "nobody:pw", "get", "/app/a"]),
    step(&["--user", "root:rootpw", "put", "/secret", "s"]),
    step(&["--user", "root:rootpw", "get", "/secret"]),
    step(&["--user", "alice:alicepw", "user", "list"]),
    step(&["--user", "alice:alicepw", "role", "add", "mine"]),
    step(&["--user", "root:rootpw", "user", "delete", "root"]),
    step(&[
        "--user",
        "root:rootpw",
        "role",
        "revoke-permission",
        "app",
        "/ro",
    ]),
    step(&[
        "--user",
        "root:rootpw",
        "role",
        "revoke-permission",
        "app",
        "/wa",
        "/wz",
    ]),
    step(&[
        "--user",
        "root:rootpw",
        "role",
        "revoke-permission",
        "app",
        "/nosuch",
    ]),
    step(&[
        "--user",
        "root:rootpw",
        "user",
        "revoke-role",
        "alice",
        "app",
    ]),
    step(&["--user", "alice:alicepw", "get", "/app/a"]),
    step(&["--user", "root:rootpw", "user", "delete", "alice"]),
    step(&["--user", "root:rootpw", "role", "delete", "app"]),
    step(&["--user", "root:rootpw", "auth", "disable"]),
    step(&["get", "/app/a"]),
];

/// The command lines, in order; every one of them prints the same (after
/// masking) from both.
const STEPS: &[Step] = &[
    step(&["put", "{c}/a", "1"]),
    step(&["put", "{c}/b", "22"]),
    step(&["put", "{c}/c", "3"]),
    step(&["put", "{c}/d", "10"]),
    step(&["capture-rev", "$REV_B1", "{c}/b"]),
    step(&["put", "{c}/b", "2", "--prev-kv"]),
    step(&["put", "{c}/e", "hello world"]),
    step(&["put", "{c}/f", "--", "-dash"]),
    with_stdin(&["put", "{c}/g"], "line1\nline2\n"),
    step(&["put", "{c}/h"]),
    step(&["put", "{c}/a", "x", "--ignore-value"]),
    step(&["put", "{c}/a", "--ignore-lease"]),
    step(&["get", "{c}/a"]),
    step(&["get", "{c}/a", "-w", "json"]),
    step(&["get", "{c}/a", "-w", "fields"]),
    step(&["get", "{c}/nosuch"]),
    step(&["get", "{c}/nosuch", "-w", "json"]),
    step(&["get", "{c}/", "--prefix"]),
    step(&["get", "{c}/e", "--from-key", "--keys-only", "--limit", "3"]),
    step(&["get", "{c}/a", "{c}/c"]),
    step(&["get", "{c}/", "--prefix", "--limit", "2"]),
    step(&["get", "{c}/", "--prefix", "--limit", "2", "-w", "json"]),
    step(&["get", "{c}/", "--prefix", "--keys-only"]),
    step(&["get", "{c}/", "--prefix", "--print-value-only"]),
    step(&[
        "get",
        "{c}/",
        "--prefix",
        "--sort-by",
        "VALUE",
        "--order",
        "DESCEND",
    ]),
    step(&[
        "get",
        "{c}/",
        "--prefix",
        "--sort-by",
        "MODIFY",
        "--order",
        "DESCEND",
        "--keys-only",
    ]),
    step(&[
        "get",
        "{c}/",
        "--prefix",
        "--sort-by",
        "VERSION",
        "--order",
        "ASCEND",
    ]),
    step(&[
        "get",
        "{c}/",
        "--prefix",
        "--sort-by=CREATE",
        "--order=DESCEND",
    ]),
    step(&[
        "get", "{c}/", "--prefix", "--order", "DESCEND", "--limit", "3",
    ]),
    step(&["get", "{c}/b", "--rev", "$REV_B1"]),
    step(&[
        "get",
        "{c}/",
        "--prefix",
        "--consistency",
        "s",
        "--command-timeout",
        "5s",
    ]),
    step(&["get", "", "--prefix", "--keys-only", "--limit", "1"]),
    step(&["get", "{c}/", "--prefix", "--from-key"]),
    step(&["get"]),
    step(&["get", "{c}/a", "--sort-by", "SIZE"]),
    step(&["get", "{c}/a", "-w", "yaml"]),
    step(&["get", "{c}/a", "-w", "table"]),
    step(&["del", "{c}/nosuch"]),
    step(&["del", "{c}/nosuch", "-w", "json"]),
    step(&["del", "{c}/a", "--prev-kv"]),
    step(&["del", "{c}/b", "{c}/d", "--prev-kv", "-w", "json"]),
    step(&["del", "{c}/g", "-w", "fields"]),
    // The failure branch first, then (with {c}/c back) the success branch.
    with_stdin(&["txn"], TXN_OK),
    step(&["put", "{c}/c", "3"]),
    with_stdin(&["txn"], TXN_OK),
    with_stdin(&["txn"], TXN_FAIL),
    with_stdin(&["txn", "-w", "json"], TXN_OK),
    with_stdin(&["txn", "-w", "json"], TXN_FAIL),
    with_stdin(&["txn"], TXN_FLAGS),
    with_stdin(&["txn", "-w", "json"], TXN_FLAGS),
    with_stdin(&["txn", "-i"], TXN_FAIL),
    step(&["capture-lease", "300"]),
    step(&["put", "{c}/l1", "x", "--lease", "$LEASE"]),
    step(&["put", "{c}/l2", "y", "--lease=$LEASE"]),
    step(&["get", "{c}/l1", "-w", "json"]),
    step(&["lease", "timetolive", "$LEASE"]),
    step(&["lease", "timetolive", "$LEASE", "--keys"]),
    step(&["lease", "timetolive", "$LEASE", "--keys", "-w", "json"]),
    step(&["lease", "keep-alive", "--once", "$LEASE"]),
    step(&["lease", "keep-alive", "--once", "$LEASE", "-w", "json"]),
    step(&["lease", "revoke", "$LEASE"]),
    step(&["get", "{c}/l", "--prefix"]),
    step(&["lease", "timetolive", "$LEASE"]),
    step(&["lease", "keep-alive", "--once", "$LEASE"]),
    step(&["lease", "keep-alive", "$LEASE"]),
    step(&["lease", "list"]),
    step(&["lease", "grant", "abc"]),
    step(&["lease", "timetolive", "zz"]),
    step(&["lease", "revoke"]),
    step(&["put", "{c}/z", "1", "--lease", "zz"]),
    step(&["capture-rev", "$REV_E", "{c}/e"]),
    step(&["compaction", "$REV_E"]),
    step(&["get", "{c}/b", "--rev", "$REV_B1"]),
    step(&["watch", "--rev", "$REV_B1", "{c}/b"]),
    step(&["compaction"]),
    step(&["put", "{c}/w", "1"]),
    step(&["capture-rev", "$REV_W", "{c}/w"]),
    step(&["put", "{c}/w", "2"]),
    step(&["del", "{c}/w"]),
    step(&["watch", "--rev", "$REV_W", "{c}/w", "--prefix"]),
    step(&["watch", "--rev", "$REV_W", "{c}/w", "--prev-kv"]),
    step(&["lock", "{c}/lk", "echo", "locked"]),
    step(&[
        "lock",
        "{c}/lk",
        "--",
        "sh",
        "-c",
        "echo \"${ETCD_LOCK_KEY%/*} ${ETCD_LOCK_REV:+a revision}\"",
    ]),
    step(&["lock", "{c}/lk", "--", "sh", "-c", "exit 3"]),
    step(&["elect", "{c}/el"]),
    step(&["elect", "-l", "{c}/el"]),
    step(&["endpoint", "health"]),
    step(&["endpoint", "health", "-w", "table"]),
    step(&["endpoint", "status", "-w", "table"]),
    step(&["member", "list", "-w", "table"]),
    step(&["alarm", "list"]),
    step(&["alarm", "list", "-w", "json"]),
    // etcd grants its minimum (2 s) to shorter TTLs and refuses one over
    // its maximum; keel's own protocol refuses below 1 s instead.
    etcdctl_only(&["lease", "grant", "0"]),
    etcdctl_only(&["lease", "grant", "--", "-5"]),
    etcdctl_only(&["lease", "grant", "9000000001"]),
    step(&["capture-member"]),
    step(&["move-leader", "$MEMBER"]),
    step(&["move-leader", "1234"]),
    etcdctl_only(&["snapshot", "save", "$SNAPSHOT"]),
];

#[test]
fn keelctl_prints_what_etcdctl_prints_for_the_same_command_lines() {
    if !etcd_installed() {
        return;
    }
    none_differ(&differences_from_etcd(System::Keel, None));
}

/// etcd's own etcdctl against keel's etcd API (docs/etcd.md), on the same
/// port as keel's protocol: the same command lines print the same as
/// against a real etcd.
#[test]
fn etcdctl_prints_the_same_against_keel_as_against_etcd() {
    if !etcd_installed() {
        return;
    }
    none_differ(&differences_from_etcd(System::Etcd, None));
}

/// The same over TLS, with client certificates required: etcd and keel
/// given the same certificates and etcd's flags, etcdctl its `--cacert`,
/// `--cert` and `--key`.
#[test]
fn etcdctl_over_tls_prints_the_same_against_keel_as_against_etcd() {
    if !etcd_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tls = Tls::new(&dir.path().join("certs"));
    none_differ(&differences_from_etcd(System::Etcd, Some(&tls)));
}

/// keelctl over TLS (its `--cacert`, `--cert`, `--key`, and `https://`
/// endpoints) beside etcdctl over TLS.
#[test]
fn keelctl_over_tls_prints_what_etcdctl_prints() {
    if !etcd_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tls = Tls::new(&dir.path().join("certs"));
    none_differ(&differences_from_etcd(System::Keel, Some(&tls)));
}

/// etcdctl's `--user` against keel and against etcd: users, roles,
/// permissions and auth on, the same lines printing the same.
#[test]
fn etcdctl_with_users_prints_the_same_against_keel_as_against_etcd() {
    if !etcd_installed() {
        return;
    }
    none_differ(&run_steps(System::Etcd, None, AUTH_STEPS));
}

/// keelctl's `user`, `role`, `auth` and `--user` beside etcdctl's.
#[test]
fn keelctl_with_users_prints_what_etcdctl_prints() {
    if !etcd_installed() {
        return;
    }
    none_differ(&run_steps(System::Keel, None, AUTH_STEPS));
}

fn none_differ(differences: &[String]) {
    assert!(
        differences.is_empty(),
        "{} command lines differ:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

/// Runs every step with etcdctl against a real etcd and with `client`
/// (keelctl, or etcdctl itself) against keel; answers the steps whose
/// masked outputs differ.
fn differences_from_etcd(client: System, tls: Option<&Tls>) -> Vec<String> {
    run_steps(client, tls, STEPS)
}

/// [`differences_from_etcd`] for the steps `steps`.
fn run_steps(client: System, tls: Option<&Tls>, steps: &[Step]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(&dir.path().join("etcd"), tls);
    let mut flags = tls.map(Tls::server_flags).unwrap_or_default();
    // Logins are bcrypt checks: the cheapest cost keeps the test quick.
    flags.extend(["--bcrypt-cost".to_string(), "4".to_string()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let keel = Server::start(&dir.path().join("keel"), 2, &flags);
    let keel_endpoint = match tls {
        Some(tls) => tls.endpoint(&keel.endpoint()),
        None => plain(&keel.endpoint()),
    };
    let endpoints = [
        (System::Etcd, etcd.endpoint.clone()),
        (client, keel_endpoint),
    ];
    let mut vars: [HashMap<&str, String>; 2] = [HashMap::new(), HashMap::new()];
    for (i, name) in ["etcd", "keel"].iter().enumerate() {
        let file = dir.path().join(format!("{name}.snapshot"));
        vars[i].insert("$SNAPSHOT", file.display().to_string());
    }
    let mut leases = [0i64; 2];
    let mut differences = Vec::new();
    for (number, step) in steps.iter().enumerate() {
        if client == System::Keel && !step.keelctl {
            continue;
        }
        // Steps that capture a value from each system.
        match step.line {
            ["capture-member"] => {
                for (i, (system, endpoint)) in endpoints.iter().enumerate() {
                    let got = run(*system, endpoint, &["member", "list"], None, &vars[i]);
                    let id = got.stdout.split(',').next().unwrap_or_default().to_string();
                    assert!(!id.is_empty(), "{system:?}: no member in {got:?}");
                    vars[i].insert("$MEMBER", id);
                }
                continue;
            }
            ["capture-rev", name, key] => {
                for (i, (system, endpoint)) in endpoints.iter().enumerate() {
                    let got = run(
                        *system,
                        endpoint,
                        &["get", *key, "-w", "json"],
                        None,
                        &vars[i],
                    );
                    let value: Value = serde_json::from_str(got.stdout.trim()).expect("get's JSON");
                    let revision = value["kvs"][0]["mod_revision"]
                        .as_u64()
                        .unwrap_or_else(|| panic!("{system:?}: no revision in {value}"));
                    vars[i].insert(*name, revision.to_string());
                }
                continue;
            }
            ["capture-lease", ttl] => {
                for (i, (system, endpoint)) in endpoints.iter().enumerate() {
                    let got = run(*system, endpoint, &["lease", "grant", *ttl], None, &vars[i]);
                    let id = got.stdout.split_whitespace().nth(1).unwrap_or_default();
                    let id = i64::from_str_radix(id, 16)
                        .unwrap_or_else(|_| panic!("{system:?}: no lease in {got:?}"));
                    leases[i] = id;
                    vars[i].insert("$LEASE", format!("{id:x}"));
                }
                continue;
            }
            _ => {}
        }
        let outputs: Vec<(Ran, String)> = endpoints
            .iter()
            .enumerate()
            .map(|(i, (system, endpoint))| {
                let mut ran = run(*system, endpoint, step.line, step.stdin, &vars[i]);
                // A member's id and a file's path name themselves.
                for name in ["$MEMBER", "$SNAPSHOT"] {
                    if let Some(value) = vars[i].get(name) {
                        ran.stdout = ran.stdout.replace(value.as_str(), name);
                    }
                }
                let shown = if step.line.contains(&"fields") {
                    normalise_fields(&ran.stdout, leases[i])
                } else {
                    normalise_text(&ran.stdout, leases[i])
                };
                (ran, shown)
            })
            .collect();
        let [(etcd_ran, etcd_shown), (keel_ran, keel_shown)] = &outputs[..] else {
            unreachable!("two systems");
        };
        // Errors: the status, and whether stderr says so (the texts differ).
        let says_error = |ran: &Ran| {
            ran.stderr
                .lines()
                .any(|l| l.starts_with("Error:") || l.starts_with("error:"))
        };
        let same = etcd_ran.status == keel_ran.status
            && etcd_shown == keel_shown
            && says_error(etcd_ran) == says_error(keel_ran);
        if !same {
            differences.push(format!(
                "step {number}: {:?}\n  etcdctl on etcd (status {}): {:?}\n    stderr: {:?}\n  {client:?} on keel (status {}): {:?}\n    stderr: {:?}",
                step.line,
                etcd_ran.status,
                etcd_shown,
                etcd_ran.stderr.lines().last().unwrap_or(""),
                keel_ran.status,
                keel_shown,
                keel_ran.stderr.lines().last().unwrap_or(""),
            ));
        }
    }
    drop(etcd);
    // What etcdctl saved from keel is a whole keel snapshot.
    if client == System::Etcd && steps.iter().any(|s| s.line.first() == Some(&"snapshot")) {
        let saved = std::fs::read(&vars[1]["$SNAPSHOT"]).expect("the snapshot etcdctl saved");
        if let Err(error) = keel_net::snapshot_file::read(&saved) {
            differences.push(format!("the snapshot saved from keel: {error}"));
        }
    }
    differences
}
