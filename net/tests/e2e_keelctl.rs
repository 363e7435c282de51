//! keelctl against the real `keel` binary: each command's output, and a
//! clear message with a non-zero exit status for each failure.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use support::{keelctl, Server};

fn run(server: &Server, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(keelctl())
        .args(["--endpoints", &server.endpoint()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs a command that must succeed; answers its stdout.
fn ok(server: &Server, args: &[&str]) -> String {
    let output = run(server, args, "");
    assert!(
        output.status.success(),
        "keelctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Runs a command that must fail with status 1 (a failed call, as
/// etcdctl's); answers its stderr.
fn fails(server: &Server, args: &[&str], stdin: &str) -> String {
    fails_with(server, 1, args, stdin)
}

/// Runs a command that must fail with etcdctl's `status` for it; answers
/// its stderr.
fn fails_with(server: &Server, status: i32, args: &[&str], stdin: &str) -> String {
    let output = run(server, args, stdin);
    assert_eq!(
        output.status.code(),
        Some(status),
        "keelctl {args:?} must exit with {status}"
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.starts_with("Error: "), "{stderr}");
    stderr
}

#[test]
fn every_command_against_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 2, &[]);
    assert_eq!(ok(&server, &["put", "a", "1"]), "OK\n");
    assert_eq!(ok(&server, &["get", "a"]), "a\n1\n");
    ok(&server, &["put", "app/x", "10"]);
    ok(&server, &["put", "app/y", "20"]);
    assert_eq!(
        ok(&server, &["get", "--prefix", "app/"]),
        "app/x\n10\napp/y\n20\n"
    );
    assert_eq!(
        ok(&server, &["get", "--prefix", "app/", "--keys-only"]),
        "app/x\n\napp/y\n\n"
    );
    assert_eq!(
        ok(&server, &["get", "--prefix", "app/", "--count-only"]),
        "2\n"
    );
    assert_eq!(
        ok(
            &server,
            &[
                "get",
                "--prefix",
                "app/",
                "--sort-by",
                "value",
                "--order",
                "descend",
                "--limit",
                "1",
                "--print-value-only"
            ]
        ),
        "20\n"
    );
    assert_eq!(
        ok(&server, &["get", "app/", "app0"]),
        "app/x\n10\napp/y\n20\n"
    );
    let json = ok(&server, &["get", "a", "-w", "json"]);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["kvs"][0]["key"], "YQ==");
    assert_eq!(value["kvs"][0]["value"], "MQ==");
    let first = value["kvs"][0]["mod_revision"].as_u64().unwrap();
    ok(&server, &["put", "a", "2"]);
    assert_eq!(
        ok(&server, &["get", "a", "--rev", &first.to_string()]),
        "a\n1\n"
    );
    assert_eq!(ok(&server, &["put", "a", "3", "--prev-kv"]), "OK\na\n2\n");

    // txn, etcdctl's syntax.
    ok(&server, &["put", "{u}/name", "ann"]);
    let txn =
        "value(\"{u}/name\") = \"ann\"\n\nput {u}/name \"ann b\"\nget {u}/name\n\nget {u}/name\n";
    let output = run(&server, &["txn"], txn);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "SUCCESS\n\nOK\n\n{u}/name\nann b\n"
    );

    // del.
    assert_eq!(ok(&server, &["del", "--prefix", "app/"]), "2\n");
    assert_eq!(ok(&server, &["get", "--prefix", "app/"]), "");

    // Leases.
    let granted = ok(&server, &["lease", "grant", "60"]);
    let id = granted.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(granted, format!("lease {id} granted with TTL(60s)\n"));
    ok(&server, &["put", "leased", "v", "--lease", &id]);
    assert!(
        ok(&server, &["lease", "timetolive", &id, "--keys"]).contains("attached keys([leased])")
    );
    assert!(ok(&server, &["lease", "list"]).contains(&id));
    assert!(
        ok(&server, &["lease", "keep-alive", &id, "--once"]).contains("keepalived with TTL(60)")
    );
    assert_eq!(
        ok(&server, &["lease", "revoke", &id]),
        format!("lease {id} revoked\n")
    );
    assert_eq!(ok(&server, &["get", "leased"]), "");
    assert!(ok(&server, &["lease", "timetolive", &id]).contains("already expired"));

    // Watch from a past revision, until two events.
    let watched = ok(
        &server,
        &["watch", "a", "--rev", &first.to_string(), "--count", "2"],
    );
    assert_eq!(watched, "PUT\na\n1\nPUT\na\n2\n");

    // Lock around a command: only the command prints.
    assert_eq!(ok(&server, &["lock", "job", "echo", "held"]), "held\n");

    // Status (etcdctl's columns), health (on stderr, as etcdctl's),
    // members, compaction.
    let status = ok(&server, &["endpoint", "status"]);
    assert!(
        status.contains(", 0.1.0, ") && status.contains(", true, false, "),
        "{status}"
    );
    let health = run(&server, &["endpoint", "health"], "");
    assert!(health.status.success());
    assert!(String::from_utf8_lossy(&health.stderr).contains("is healthy"));
    assert!(ok(&server, &["member", "list"]).contains("started, default"));
    assert_eq!(
        ok(&server, &["compaction", &first.to_string()]),
        format!("compacted revision {first}\n")
    );
}

#[test]
fn every_failure_says_why_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 2, &[]);
    ok(&server, &["put", "k", "v"]);
    let compacted = ok(&server, &["get", "k", "-w", "json"]);
    let value: serde_json::Value = serde_json::from_str(&compacted).unwrap();
    let revision = value["header"]["revision"].as_u64().unwrap();
    ok(&server, &["compaction", &revision.to_string()]);

    assert!(fails(&server, &["get", "k", "--rev", "1"], "").contains("compacted"));
    assert!(fails(&server, &["compaction", "1"], "").contains("Compacted"));
    assert!(fails(
        &server,
        &["get", "k", "--rev", &(revision << 1).to_string()],
        ""
    )
    .contains("FutureRevision"));
    assert!(
        fails_with(&server, 128, &["lease", "revoke", "zz"], "").contains("expecting ID in Hex")
    );
    assert!(fails(&server, &["lease", "revoke", "123"], "").contains("LeaseNotFound"));
    assert!(fails(&server, &["put", "k", "v", "--lease", "abc"], "").contains("LeaseNotFound"));
    assert!(fails(&server, &["put", "", "v"], "").contains("BadRequest"));
    assert!(
        fails_with(&server, 128, &["get", "k", "z", "--prefix"], "").contains("too many arguments")
    );
    assert!(fails_with(&server, 3, &["txn"], "size(\"k\") = \"1\"\n\n\n").contains("bad compare"));
    assert!(fails_with(&server, 128, &["put", "k"], "").contains("input from stdin"));
    assert!(fails_with(
        &server,
        2,
        &["lease", "keep-alive", "--once", "1234abcd"],
        ""
    )
    .contains("expired or revoked"));
    assert!(
        fails_with(&server, 4, &["get", "k", "-w", "table"], "").contains("table not supported")
    );
    let other = (0..)
        .map(|i| format!("t{i}"))
        .find(|tag| {
            keel_proto::routing::shard_of(tag.as_bytes(), 2)
                != keel_proto::routing::shard_of(b"a", 2)
        })
        .unwrap();
    let across = format!("\nput {{a}}/k 1\nput {{{other}}}/k 2\n\n");
    assert!(fails(&server, &["txn"], &across).contains("hash tag"));
    assert!(fails_with(&server, 128, &["elect", "e"], "").contains("proposal"));
    // A server that is not there.
    let gone = Command::new(keelctl())
        .args(["--endpoints", "127.0.0.1:1", "get", "k"])
        .output()
        .unwrap();
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("cannot connect to 127.0.0.1:1"));
}

/// `endpoint status` names a shard that stopped and why, and the node
/// serves its other shards.
#[test]
fn endpoint_status_names_a_stopped_shard() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), 2, &[]);
    ok(&server, &["put", "a", "1"]);
    server.stop();
    // Both meta slots of shard 1's tree file damaged: it cannot be opened.
    let tree = dir.path().join("shard-001/kv.db");
    let mut bytes = std::fs::read(&tree).unwrap();
    bytes[..8192].fill(0xa5);
    std::fs::write(&tree, &bytes).unwrap();
    let server = Server::start(dir.path(), 0, &[]);
    // etcdctl's one line, the stopped shard in its errors column.
    let status = ok(&server, &["endpoint", "status"]);
    assert_eq!(status.lines().count(), 1, "{status}");
    assert!(
        status.contains(", shard 1 stopped: ") && status.contains("kv.db"),
        "{status}"
    );
    let json = ok(&server, &["endpoint", "status", "-w", "json"]);
    assert!(json.contains("\"stopped\""), "{json}");
    // A key of shard 0 still answers ("a" lives on one of them; find one
    // that answers).
    let answered = (0..8).any(|i| {
        run(&server, &["put", &format!("k{i}"), "v"], "")
            .status
            .success()
    });
    assert!(answered, "no shard answers a put");
}

/// `alarm list` and `alarm disarm` as etcdctl's: past the backend quota a
/// NOSPACE alarm is listed, a put is refused with "database space
/// exceeded", reads go on, `endpoint status` shows it, and once space is
/// freed a disarm lets puts through again.
#[test]
fn alarm_list_and_disarm_as_etcdctl() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 2, &["--quota-backend-bytes", "1048576"]);
    let rt = support::runtime();
    let client =
        support::block_on(&rt, keel_client::Client::connect(&[server.endpoint()])).unwrap();
    support::block_on(&rt, async {
        for i in 0..20_000 {
            match client.put(format!("fill/{i:05}"), vec![b'v'; 4096]).await {
                Ok(_) => {}
                Err(e) if e.code() == Some(keel_client::ErrorCode::NoSpace) => return,
                Err(e) => panic!("put {i}: {e}"),
            }
        }
        panic!("no NOSPACE after 20,000 puts past a 1 MiB quota");
    });
    assert!(ok(&server, &["alarm", "list"]).starts_with("memberID:"));
    let list = ok(&server, &["alarm", "list"]);
    assert_eq!(list.lines().count(), 1, "{list}");
    assert!(list.trim_end().ends_with(" alarm:NOSPACE"), "{list}");
    let refused = fails(&server, &["put", "x", "y"], "");
    assert!(refused.contains("database space exceeded"), "{refused}");
    assert_eq!(
        ok(&server, &["get", "fill/00000", "--print-value-only"]).len(),
        4097
    );
    assert!(ok(&server, &["endpoint", "status"]).contains("alarm:NOSPACE"));
    // Free space: delete what filled it, and compact.
    support::block_on(&rt, async {
        let request = keel_client::proto::DeleteRangeRequest {
            key: b"fill/".to_vec(),
            range_end: b"fill0".to_vec(),
            ..Default::default()
        };
        let (revision, _) = client.delete_range(request).await.unwrap();
        client.compact(revision).await.unwrap();
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let disarmed = ok(&server, &["alarm", "disarm"]);
        assert!(
            disarmed.is_empty() || disarmed.contains("alarm:NOSPACE"),
            "{disarmed}"
        );
        if run(&server, &["put", "x", "y"], "").status.success() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still refused");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    assert_eq!(ok(&server, &["alarm", "list"]), "");
    assert_eq!(ok(&server, &["get", "x", "--print-value-only"]), "y\n");
}

/// etcdctl's spellings of what keelctl has (from etcdctl's
/// documentation): every key with `get "" --prefix` and `get "" --from-key`,
/// upper-case `--sort-by` and `--order` values, `--command-timeout 5s`,
/// and hex lease ids and the `c` and `m` targets in `txn` compares.
///
/// Regression (review of net/ at 6e310c5): each of these failed.
#[test]
fn etcdctl_spellings_work() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 2, &[]);
    ok(&server, &["put", "b", "1"]);
    ok(&server, &["put", "a", "2"]);
    ok(&server, &["put", "c", "3"]);
    let all = "a\n2\nb\n1\nc\n3\n";
    assert_eq!(ok(&server, &["get", "", "--prefix"]), all);
    assert_eq!(ok(&server, &["get", "", "--from-key"]), all);
    assert_eq!(
        ok(
            &server,
            &[
                "get",
                "",
                "--prefix",
                "--sort-by",
                "VALUE",
                "--order",
                "DESCEND"
            ]
        ),
        "c\n3\na\n2\nb\n1\n"
    );
    assert_eq!(
        ok(
            &server,
            &["get", "a", "--consistency", "S", "--command-timeout", "5s"]
        ),
        "a\n2\n"
    );
    assert_eq!(
        ok(&server, &["--command-timeout=1500ms", "get", "a"]),
        "a\n2\n"
    );
    // A lease id as etcdctl prints it (hex), in a txn compare.
    let granted = ok(&server, &["lease", "grant", "60"]);
    let lease = granted.split_whitespace().nth(1).unwrap().to_string();
    ok(&server, &["put", "{t}/k", "v", "--lease", &lease]);
    let txn = format!(
        "lease(\"{{t}}/k\") = \"{lease}\"\nc(\"{{t}}/k\") > \"0\"\nm(\"{{t}}/k\") > \"0\"\n\nput {{t}}/k w\n\nput {{t}}/k x\n\n"
    );
    let output = run(&server, &["txn"], &txn);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "SUCCESS\n\nOK\n");
    assert_eq!(ok(&server, &["get", "{t}/k", "--print-value-only"]), "w\n");
    // Everything goes with `del "" --prefix`.
    ok(&server, &["del", "", "--prefix"]);
    assert_eq!(ok(&server, &["get", "", "--prefix"]), "");
}

/// `keelctl lock NAME COMMAND` tells the command what it holds
/// (KEEL_LOCK_KEY, KEEL_LOCK_REV, as etcdctl's ETCD_LOCK_*); a `lock`
/// interrupted while it waits leaves the line, so the next one gets the
/// lock as soon as the holder lets go.
///
/// Regression (review of net/ at 6e310c5): no variables were set, and an
/// interrupted waiter died with its lease alive for its TTL (60 s), its key
/// in line, holding up everyone after it.
#[test]
fn lock_sets_its_variables_and_an_interrupted_waiter_leaves_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 2, &[]);
    let output = ok(
        &server,
        &[
            "lock",
            "jobs",
            "sh",
            "-c",
            "echo \"$KEEL_LOCK_KEY $KEEL_LOCK_REV\"",
        ],
    );
    // Only the command prints (as etcdctl's lock with a command).
    let told = output.lines().next().unwrap();
    let (told_key, told_rev) = told.split_once(' ').unwrap();
    assert!(told_key.starts_with("jobs/"), "{output}");
    assert!(told_rev.parse::<u64>().unwrap() > 0, "{told}");

    let spawn = |args: &[&str]| {
        Command::new(keelctl())
            .args(["--endpoints", &server.endpoint()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let interrupt = |child: &std::process::Child| {
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
    };
    let holder = spawn(&["lock", "jobs"]);
    std::thread::sleep(std::time::Duration::from_millis(700));
    let waiter = spawn(&["lock", "jobs"]);
    std::thread::sleep(std::time::Duration::from_millis(700));
    interrupt(&waiter);
    let waited = waiter.wait_with_output().unwrap();
    assert!(
        !waited.status.success(),
        "an interrupted waiter does not get the lock"
    );
    interrupt(&holder);
    assert!(holder.wait_with_output().unwrap().status.success());
    // The next one gets it at once (not after the waiter's lease expired).
    let started = std::time::Instant::now();
    let next = ok(
        &server,
        &["--command-timeout", "10s", "lock", "jobs", "true"],
    );
    assert!(next.is_empty(), "only the command prints: {next}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "the next lock waited {:?}",
        started.elapsed()
    );
}
