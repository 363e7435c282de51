//! kill -9 of a node process under concurrent writes loses no acknowledged
//! write and shows nothing half-written.
//!
//! The test binary runs itself as a child (selected by an environment
//! variable). The child starts a node of 4 shards on 2 cores and writes
//! from 16 threads, each putting its own sequence of keys and printing
//! `ack KEY REVISION` once a put is acknowledged. The parent kills the child
//! with SIGKILL at a random moment, starts the node on the same directory
//! itself, and checks: every acknowledged key is there with its value and
//! revision; every other key it finds is one a writer was about to write
//! (the put was in flight), with the right value; new writes get revisions
//! above every one acknowledged before. Several rounds build on each other.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use futures_lite::future::block_on;
use keel_engine::mvcc::{PutRequest, RangeRequest};
use keel_engine::shard::{Consistency, Node, TreeSync};
use keel_tests::{node_config, KilledOnDrop};
use rand::{Rng, SeedableRng};

const ROUNDS: usize = 5;
const CHILD_VAR: &str = "KEEL_NODE_KILL9_CHILD";
const WRITERS: usize = 16;

fn key(round: usize, writer: usize, seq: u64) -> Vec<u8> {
    format!("r{round}/w{writer:02}/{seq:08}").into_bytes()
}

/// 8 KiB: WAL segments of 4 MiB fill every few hundred writes,
/// so segments are released between rounds.
fn value(key: &[u8]) -> Vec<u8> {
    let mut value = key.to_vec();
    value.resize(8 << 10, b'=');
    value
}

/// The node of every round: trees made durable every 300 entries, so that
/// restarts replay from many points and WAL segments are released.
fn config(dir: &Path) -> keel_engine::shard::NodeConfig {
    keel_engine::shard::NodeConfig {
        tree_sync: TreeSync {
            entries: 300,
            interval: Duration::from_millis(50),
            ..TreeSync::default()
        },
        ..node_config(dir, 4, 2)
    }
}

/// The shards whose first WAL segment is gone: segments were released.
fn shards_that_released_segments(dir: &Path) -> usize {
    (0..4)
        .filter(|shard| {
            std::fs::read_dir(dir.join(format!("shard-{shard:03}/wal")))
                .map(|entries| {
                    !entries.filter_map(Result::ok).any(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        name.starts_with("0000000000000001-") && name.ends_with(".wal")
                    })
                })
                .unwrap_or(false)
        })
        .count()
}

/// The child: write forever from many threads, reporting acknowledgements.
fn child(dir: PathBuf, round: usize) {
    let node = Node::start(config(&dir)).expect("child node");
    std::thread::scope(|scope| {
        for writer in 0..WRITERS {
            let node = &node;
            scope.spawn(move || {
                for seq in 0.. {
                    let key = key(round, writer, seq);
                    let request = PutRequest {
                        key: key.clone(),
                        value: value(&key),
                        ..PutRequest::default()
                    };
                    let applied = block_on(node.put(request)).expect("child put");
                    let mut out = std::io::stdout().lock();
                    writeln!(
                        out,
                        "ack {} {}",
                        String::from_utf8_lossy(&key),
                        applied.revision
                    )
                    .expect("report");
                    out.flush().expect("flush");
                }
            });
        }
    });
}

/// Runs a child until killed; returns what it acknowledged: key -> revision.
fn run_child(dir: &Path, round: usize, rng: &mut impl Rng) -> BTreeMap<Vec<u8>, u64> {
    let mut child = KilledOnDrop::test_child(
        "a_killed_node_keeps_every_acknowledged_write",
        CHILD_VAR,
        format!("{}|{round}", dir.display()),
    );
    let stdout = child.stdout();
    let (started, first_ack) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut acked = BTreeMap::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut parts = line.split(' ');
            if let (Some("ack"), Some(key), Some(revision)) =
                (parts.next(), parts.next(), parts.next())
            {
                if acked.is_empty() {
                    let _ = started.send(());
                }
                let revision: u64 = revision.parse().expect("revision");
                acked.insert(key.as_bytes().to_vec(), revision);
            }
        }
        acked
    });
    first_ack
        .recv_timeout(Duration::from_secs(60))
        .expect("the child never acknowledged a write");
    std::thread::sleep(Duration::from_millis(rng.gen_range(20..600)));
    child.kill();
    reader.join().expect("reader")
}

#[test]
fn a_killed_node_keeps_every_acknowledged_write() {
    if let Some(spec) = std::env::var_os(CHILD_VAR) {
        let spec = spec.to_string_lossy().into_owned();
        let (dir, round) = spec.rsplit_once('|').expect("child spec");
        child(PathBuf::from(dir), round.parse().expect("round"));
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut acknowledged: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    for round in 0..ROUNDS {
        let acked = run_child(dir.path(), round, &mut rng);
        assert!(!acked.is_empty(), "round {round}: nothing acknowledged");
        acknowledged.extend(acked);
        let node = Node::start(config(dir.path())).expect("restart after kill -9");
        let everything = RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..RangeRequest::default()
        };
        let (_, found) =
            block_on(node.range(everything, Consistency::Linearizable)).expect("read back");
        let found: BTreeMap<Vec<u8>, (Vec<u8>, u64)> = found
            .kvs
            .into_iter()
            .map(|kv| (kv.key, (kv.value, kv.mod_revision)))
            .collect();
        for (key, revision) in &acknowledged {
            let Some((stored, stored_revision)) = found.get(key) else {
                panic!(
                    "round {round}: acknowledged {} is missing",
                    String::from_utf8_lossy(key)
                );
            };
            assert_eq!(
                stored,
                &value(key),
                "round {round}: value of an acknowledged key"
            );
            assert_eq!(stored_revision, revision, "round {round}: revision");
        }
        // Anything else is a put that was in flight: the next of some
        // writer's sequence, whole.
        for (key, (stored, _)) in &found {
            if !acknowledged.contains_key(key) {
                assert_eq!(
                    stored,
                    &value(key),
                    "round {round}: unacknowledged key is whole"
                );
                acknowledged.insert(key.clone(), found[key].1);
            }
        }
        let highest = acknowledged.values().copied().max().unwrap_or(0);
        // A write after the restart goes on above, and is checked with the
        // rest next round (after a clean shutdown and a kill).
        let after_key = format!("after/{round}").into_bytes();
        let after = block_on(node.put(PutRequest {
            key: after_key.clone(),
            value: value(&after_key),
            ..PutRequest::default()
        }))
        .expect("write after restart");
        assert!(
            after.revision > highest,
            "round {round}: revisions go on above"
        );
        acknowledged.insert(after_key, after.revision);
        node.shutdown();
    }
    // Each shard wrote about 5 MiB, more than a 4 MiB segment, and its
    // tree was made durable many times since: its first segment went.
    let written: usize = acknowledged.len() * (8 << 10);
    let released = shards_that_released_segments(dir.path());
    assert!(
        released > 0,
        "no shard released a WAL segment after {written} bytes written"
    );
}
