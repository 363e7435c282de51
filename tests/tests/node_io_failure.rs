//! A disk so full that even the room kept for recovery is gone: the I/O
//! failure stops the shards it hits, and only them. They say why in the
//! node's status, every call to them is answered with why, the node shuts
//! down promptly, and it starts again once room is freed, with every
//! acknowledged write.
//!
//! The failure is real: a loop-mounted ext4 image (skipped with a message
//! when that cannot be made) filled to its last block while the node
//! deletes and compacts under a NOSPACE alarm, until a WAL has to roll
//! over and finds no room for its next segment.
//!
//! Found on the way: a shard that stopped while it was compacting (or
//! expiring leases) went round its loop at once, forever, without
//! yielding, so its core's other tasks never ran and the node's shutdown
//! waited for good (seen in the full-disk test before NOSPACE was
//! handled; this test does not hit that window every time).

use std::time::{Duration, Instant};

use futures_lite::future::block_on;
use keel_engine::mvcc::{DeleteRangeRequest, KvError, PutRequest, RangeRequest};
use keel_engine::shard::{Consistency, Node, NodeConfig, NodeError, TreeSync};
use keel_tests::{node_config, SmallDisk};

fn put(node: &Node, key: &str, len: usize) -> Result<u64, NodeError> {
    block_on(node.put(PutRequest {
        key: key.as_bytes().to_vec(),
        value: vec![b'v'; len],
        ..PutRequest::default()
    }))
    .map(|a| a.revision)
}

/// Adds zeros to `path` until the file system has no block left.
fn fill_to_the_last_block(path: &std::path::Path) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("filler");
    for size in [1 << 20, 64 << 10, 4 << 10] {
        let chunk = vec![0u8; size];
        while file.write_all(&chunk).is_ok() {}
    }
    let _ = file.sync_all();
}

#[test]
fn a_disk_full_to_the_last_block_stops_its_shards_and_the_node_still_shuts_down() {
    let Some(disk) = SmallDisk::new(64) else {
        return;
    };
    let data = disk.mount.join("keel");
    let config = || NodeConfig {
        tree_sync: TreeSync {
            interval: Duration::from_millis(20),
            ..TreeSync::default()
        },
        ..node_config(&data, 2, 2)
    };
    let node = Node::start(config()).unwrap();
    // History for compaction to trim, then puts until NOSPACE.
    let mut acked = Vec::new();
    for i in 0..1000 {
        let key = format!("churn/{}", i % 16);
        put(&node, &key, 100).unwrap();
        acked.push(key);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0.. {
        let key = format!("fill/{i:05}");
        match put(&node, &key, 4096) {
            Ok(_) => acked.push(key),
            Err(NodeError::Kv(KvError::NoSpace)) => break,
            Err(e) => panic!("{key}: {e}"),
        }
        assert!(Instant::now() < deadline, "never NOSPACE");
    }
    fill_to_the_last_block(&disk.mount.join("filler"));
    let now = block_on(node.client().current_revision()).unwrap();
    block_on(node.client().compact(now)).unwrap();
    // Deletes go on under NOSPACE, into the room each WAL has left, until
    // one has to roll over: then its shard stops, saying why. (Each tree
    // sync lets the WAL give back old segments: the filler takes that
    // room too.)
    let big_key = "x".repeat(2000);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut deletes = 0;
    let reason = loop {
        deletes += 1;
        if deletes % 100 == 0 {
            fill_to_the_last_block(&disk.mount.join("filler"));
        }
        let delete = DeleteRangeRequest {
            key: big_key.as_bytes().to_vec(),
            ..DeleteRangeRequest::default()
        };
        match block_on(node.delete_range(delete)) {
            Ok(_) => {}
            Err(NodeError::ShardStopped { reason, .. }) => break reason,
            Err(e) => panic!("a delete under NOSPACE: {e}"),
        }
        assert!(Instant::now() < deadline, "no shard ever stopped");
    };
    assert!(reason.contains("No space left"), "{reason}");
    let status = block_on(node.client().status()).unwrap();
    assert!(status.iter().any(|s| s.stopped.is_some()), "{status:?}");
    // The node shuts down promptly.
    let (done, stopped) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        node.shutdown();
        let _ = done.send(());
    });
    stopped
        .recv_timeout(Duration::from_secs(20))
        .expect("the node's shutdown hung after a shard stopped");

    std::fs::remove_file(disk.mount.join("filler")).unwrap();
    let node = Node::start(config()).expect("a start once room is freed");
    let all = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        keys_only: true,
        ..RangeRequest::default()
    };
    let (_, found) = block_on(node.range(all, Consistency::Linearizable)).unwrap();
    let found: Vec<String> = found
        .kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect();
    for key in &acked {
        assert!(found.contains(key), "acknowledged {key} is missing");
    }
    block_on(node.client().disarm_alarms()).unwrap();
    put(&node, "after/restart", 10).expect("writes go on");
    drop(node);
    drop(disk);
}
