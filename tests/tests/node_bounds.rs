//! Memory a node holds stays bounded in bytes, whatever its clients do:
//! tree syncs fall due by bytes; a replay after a crash reads and applies
//! its WAL a bounded chunk at a time; a merged watch holds a fixed number
//! of bytes for a shard that runs ahead of a slow one; and compaction goes
//! on when no write comes (issue 17).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_lite::future::{block_on, or};
use keel_engine::mvcc::{PutRequest, RangeRequest, WatchRequest};
use keel_engine::routing::shard_of;
use keel_engine::shard::{Consistency, Node, NodeConfig, TreeSync, WatchBatch};
use keel_tests::{node_config, timeout, KilledOnDrop};

fn put(node: &Node, key: &[u8], value: Vec<u8>) -> u64 {
    block_on(node.put(PutRequest {
        key: key.to_vec(),
        value,
        ..PutRequest::default()
    }))
    .expect("put")
    .revision
}

/// WAL segment files of shard 0.
fn segments(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("shard-000/wal"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
                .count()
        })
        .unwrap_or(0)
}

/// A node of one shard whose tree syncs fall due only by bytes.
fn by_bytes(dir: &Path, bytes: u64) -> NodeConfig {
    NodeConfig {
        tree_sync: TreeSync {
            entries: 1_000_000,
            interval: Duration::from_secs(3600),
            bytes,
        },
        ..node_config(dir, 1, 1)
    }
}

/// Regression: tree syncs fell due by entries, changed nodes and time,
/// never bytes: a second of large puts stayed in memory, and in the WAL to
/// replay, however large.
#[test]
fn tree_syncs_fall_due_by_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(by_bytes(dir.path(), 8 << 20)).unwrap();
    for i in 0..64u32 {
        put(
            &node,
            format!("big/{i:03}").as_bytes(),
            vec![b'v'; 512 << 10],
        );
    }
    // The last sync's report and release are picked up by a later round.
    let deadline = Instant::now() + Duration::from_secs(10);
    while segments(dir.path()) > 6 {
        assert!(
            Instant::now() < deadline,
            "{} WAL segments of 4 MiB kept after 32 MiB written with syncs due every 8 MiB",
            segments(dir.path())
        );
        put(&node, b"nudge", b"v".to_vec());
        std::thread::sleep(Duration::from_millis(50));
    }
}

const REPLAY_CHILD: &str = "KEEL_REPLAY_CHILD";
/// Values written before the kill, 1 MiB each.
const REPLAY_VALUES: usize = 200;

/// Peak resident memory of this process, in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// Runs this test as a child doing `what` on `dir`; answers its stdout
/// lines once it printed `until` (then kills it), or once it exits.
fn child(what: &str, dir: &Path, until: Option<&str>) -> Vec<String> {
    let mut child = KilledOnDrop::test_child(
        "a_replay_reads_its_wal_a_bounded_chunk_at_a_time",
        REPLAY_CHILD,
        format!("{what}|{}", dir.display()),
    );
    let mut lines = Vec::new();
    for line in BufReader::new(child.stdout()).lines() {
        let Ok(line) = line else { break };
        let done = until.is_some_and(|u| line.ends_with(u));
        lines.push(line);
        if done {
            child.kill();
            break;
        }
    }
    let _ = child.0.wait();
    lines
}

/// Regression: a restart read the whole WAL after the tree's durable
/// index into memory, then applied it as one batch held in one tree
/// transaction: 200 MiB of values left to replay took over 800 MiB.
#[test]
fn a_replay_reads_its_wal_a_bounded_chunk_at_a_time() {
    if let Some(spec) = std::env::var_os(REPLAY_CHILD) {
        let spec = spec.to_string_lossy().into_owned();
        let (what, dir) = spec.split_once('|').expect("child spec");
        let dir = PathBuf::from(dir);
        let say = |line: String| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        };
        if what == "write" {
            // Nothing falls due: every value stays in the WAL's tail.
            let node = Node::start(by_bytes(&dir, 1 << 40)).expect("node");
            for i in 0..REPLAY_VALUES {
                put(&node, format!("v/{i:04}").as_bytes(), vec![b'v'; 1 << 20]);
            }
            say("written".to_string());
            std::thread::sleep(Duration::from_secs(600));
        } else {
            let node = Node::start(by_bytes(&dir, 16 << 20)).expect("replay");
            let all = RangeRequest {
                key: b"v/".to_vec(),
                range_end: b"v0".to_vec(),
                count_only: true,
                ..RangeRequest::default()
            };
            let (_, found) = block_on(node.range(all, Consistency::Linearizable)).unwrap();
            say(format!("replayed {} {}", found.count, peak_rss_kib()));
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let written = child("write", dir.path(), Some("written"));
    assert!(written.iter().any(|l| l.ends_with("written")));
    let replayed = child("replay", dir.path(), None);
    let report = replayed
        .iter()
        .find_map(|l| l.split("replayed ").nth(1))
        .expect("the replay child reported");
    let mut words = report.split(' ');
    let count: usize = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    let peak_mib = words
        .next()
        .and_then(|w| w.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024;
    eprintln!("replayed {count} values of 1 MiB with a peak RSS of {peak_mib} MiB");
    assert_eq!(count, REPLAY_VALUES, "every acknowledged value is back");
    assert!(
        peak_mib < 200,
        "replaying {REPLAY_VALUES} MiB took {peak_mib} MiB of memory"
    );
}

/// Regression: compaction advanced only inside apply batches, so a shard
/// that no write reached kept its history below the compaction revision.
#[test]
fn compaction_goes_on_when_no_writes_come() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(node_config(dir.path(), 1, 1)).unwrap();
    let mut last = 0;
    for i in 0..3000u32 {
        last = put(&node, b"churn", i.to_string().into_bytes());
    }
    block_on(node.client().compact(last)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = block_on(node.client().status()).unwrap();
        if status[0].compacted_revision >= last {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "history still trimmed only to {} of {last}",
            status[0].compacted_revision
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Regression: a merged watch drained every shard's messages into memory
/// while it waited for the slowest shard to close a revision, so a shard
/// that ran ahead filled it with its whole history.
///
/// Shard 1's core is blocked while the watch reads shard 0's 20 MiB of
/// history from its start: the stream may hold only a fixed number of
/// bytes for shard 0 meanwhile, and once shard 1 answers, every event
/// comes, in order. (Shard 1 is blocked before the watch is made, so that
/// its part has never said anything: a quiet shard that had would count
/// as closed up to the node's floor, and hold nothing back.)
#[test]
fn a_merged_watch_holds_bounded_bytes_for_a_shard_that_runs_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(node_config(dir.path(), 2, 2)).unwrap();
    let keys: Vec<Vec<u8>> = (0..)
        .map(|i| format!("ahead/{i:04}").into_bytes())
        .filter(|k| shard_of(k, 2) == 0)
        .take(40)
        .collect();
    let first = put(&node, &keys[0], vec![b'v'; 512 << 10]);
    for key in &keys[1..] {
        put(&node, key, vec![b'v'; 512 << 10]);
    }
    // Block shard 1's core (its only shard) for a while.
    node.spawn_on(
        1,
        Box::new(|| {
            Box::pin(async {
                std::thread::sleep(Duration::from_secs(3));
            })
        }),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // Shard 0's part starts feeding at once; the watch is made once shard
    // 1 takes its part, nearly 3 s later.
    let mut stream = block_on(node.watch(WatchRequest {
        key: vec![0],
        range_end: vec![0],
        start_revision: first,
        ..WatchRequest::default()
    }))
    .unwrap();
    let mut got = Vec::new();
    let mut most_held = stream.held_bytes();
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        let next = block_on(or(async { Some(stream.next().await) }, async {
            timeout(Duration::from_millis(100)).await;
            None
        }));
        most_held = most_held.max(stream.held_bytes());
        if let Some(Ok(WatchBatch::Events(events))) = next {
            got.extend(events);
        }
    }
    assert!(
        most_held <= 2 << 20,
        "the stream held {most_held} bytes for the shard ahead"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < keys.len() {
        assert!(Instant::now() < deadline, "only {} events came", got.len());
        let next = block_on(or(async { Some(stream.next().await) }, async {
            timeout(Duration::from_millis(500)).await;
            None
        }));
        if let Some(Ok(WatchBatch::Events(events))) = next {
            got.extend(events);
        }
    }
    let seen: Vec<&[u8]> = got.iter().map(|e| e.kv.key.as_slice()).collect();
    let expected: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    assert_eq!(seen, expected, "every event, in order");
    eprintln!("merged watch: at most {most_held} bytes held for the shard ahead");
}

/// Regression (review of issue 17): a watch whose reader stops taking
/// events (its connection waits for a slow client) held everything its
/// shard wrote meanwhile. A watch of one shard has one part, which is
/// always the part the stream waits on, and that part could send past
/// its byte limit without end.
#[test]
fn a_watch_nobody_reads_holds_bounded_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(node_config(dir.path(), 2, 2)).unwrap();
    let keys: Vec<Vec<u8>> = (0..)
        .map(|i| format!("unread/{i:04}").into_bytes())
        .filter(|k| shard_of(k, 2) == 0)
        .take(40)
        .collect();
    let mut stream = block_on(node.watch(WatchRequest {
        key: b"unread/".to_vec(),
        range_end: keel_engine::routing::prefix_end(b"unread/"),
        ..WatchRequest::default()
    }))
    .unwrap();
    // Taken once, so that the stream has started and waits on its parts.
    let first = put(&node, &keys[0], b"first".to_vec());
    let started = block_on(stream.next()).unwrap();
    assert!(
        matches!(&started, WatchBatch::Events(e) if e[0].kv.mod_revision == first),
        "{started:?}"
    );
    // 20 MiB written while nobody calls `next`.
    for key in &keys[1..] {
        put(&node, key, vec![b'v'; 512 << 10]);
    }
    std::thread::sleep(Duration::from_millis(500));
    let held = stream.held_bytes();
    assert!(
        held <= 5 << 20,
        "the stream held {held} bytes that nobody read"
    );
    // Read now: every event, in order.
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < keys.len() - 1 {
        assert!(Instant::now() < deadline, "only {} events came", got.len());
        if let WatchBatch::Events(events) = block_on(stream.next()).unwrap() {
            got.extend(events);
        }
    }
    let seen: Vec<&[u8]> = got.iter().map(|e| e.kv.key.as_slice()).collect();
    let expected: Vec<&[u8]> = keys[1..].iter().map(Vec::as_slice).collect();
    assert_eq!(seen, expected, "every event, in order");
    eprintln!("unread watch: {held} bytes held");
}
