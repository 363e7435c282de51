//! NOSPACE, as etcd has it: past the backend quota, or once a tree file is
//! full, a NOSPACE alarm goes up on every shard. Writes that take space
//! (puts, transactions with a put, lease grants) are refused with
//! `NoSpace`; reads, watches, deletes, revokes and compaction go on;
//! nothing acknowledged is lost; the alarm stays across a restart; and once
//! space is freed, disarming it lets writes through again.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_lite::future::block_on;
use keel_engine::mvcc::{
    AlarmKind, DeleteRangeRequest, KvError, PutRequest, RangeRequest, RequestOp, TxnRequest,
    WatchRequest,
};
use keel_engine::shard::{Consistency, Node, NodeConfig, NodeError, TreeSync, WatchBatch};
use keel_tests::{node_config, watch_events, SmallDisk};

fn put(node: &Node, key: &str, len: usize) -> Result<u64, NodeError> {
    block_on(node.put(PutRequest {
        key: key.as_bytes().to_vec(),
        value: vec![b'v'; len],
        ..PutRequest::default()
    }))
    .map(|applied| applied.revision)
}

fn is_no_space<T: std::fmt::Debug>(result: &Result<T, NodeError>) -> bool {
    matches!(result, Err(NodeError::Kv(KvError::NoSpace)))
}

/// Every key, with its value length.
fn everything(node: &Node) -> Vec<(String, usize)> {
    let all = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..RangeRequest::default()
    };
    let (_, found) = block_on(node.range(all, Consistency::Linearizable)).expect("read");
    found
        .kvs
        .into_iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                kv.value.len(),
            )
        })
        .collect()
}

/// Writes 4 KiB values until one is refused with `NoSpace`; answers the
/// keys acknowledged.
fn fill(node: &Node, prefix: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut acked = Vec::new();
    for i in 0..20_000 {
        let key = format!("{prefix}/{i:05}");
        match put(node, &key, 4096) {
            Ok(_) => acked.push(key),
            Err(NodeError::Kv(KvError::NoSpace)) => return acked,
            Err(e) => panic!("put {key}: {e}"),
        }
        assert!(Instant::now() < deadline, "never refused");
    }
    panic!("20,000 puts and no NOSPACE");
}

/// What every NOSPACE test checks once the alarm is up: the alarm is
/// listed; what takes space is refused; reads, watches, deletes and
/// compaction work; every acknowledged key is there.
fn check_alarm_up(node: &Node, acked: &[String]) {
    let client = node.client();
    // The refusal comes first; the alarm is raised through the log (as in
    // etcd), a moment later.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut alarms = block_on(client.alarms()).unwrap();
    while alarms.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        alarms = block_on(client.alarms()).unwrap();
    }
    // Shards that stopped are not asked for alarms: say which did.
    let status = block_on(client.status());
    assert_eq!(alarms.len(), 1, "{alarms:?}; {status:?}");
    assert_eq!(alarms[0].kind, AlarmKind::NoSpace);
    assert!(is_no_space(&put(node, "refused", 10)));
    assert!(is_no_space(&block_on(client.lease_grant(0, 60))));
    let txn = TxnRequest {
        success: vec![RequestOp::Put(PutRequest {
            key: b"refused".to_vec(),
            value: b"v".to_vec(),
            ..PutRequest::default()
        })],
        ..TxnRequest::default()
    };
    assert!(is_no_space(&block_on(node.txn(txn))));
    let found = everything(node);
    for key in acked {
        assert!(
            found.iter().any(|(k, len)| k == key && *len == 4096),
            "acknowledged {key} is missing"
        );
    }
}

/// Deletes all but one in `keep_one_in` of the acknowledged keys (a watch
/// sees it) and compacts: answers the keys kept.
fn free_space(node: &Node, acked: &[String], keep_one_in: usize) -> Vec<String> {
    let mut watch = block_on(node.watch(WatchRequest {
        key: acked[0].as_bytes().to_vec(),
        ..WatchRequest::default()
    }))
    .unwrap();
    let mut kept = Vec::new();
    for (i, key) in acked.iter().enumerate() {
        if i % keep_one_in != keep_one_in - 1 {
            block_on(node.delete_range(DeleteRangeRequest {
                key: key.as_bytes().to_vec(),
                ..DeleteRangeRequest::default()
            }))
            .expect("deletes go on under NOSPACE");
        } else {
            kept.push(key.clone());
        }
    }
    let events = watch_events(&mut watch, 1, "a watch under NOSPACE");
    assert_eq!(events[0].kv.key, acked[0].as_bytes());
    let now = block_on(node.client().current_revision()).unwrap();
    block_on(node.client().compact(now)).expect("compaction goes on under NOSPACE");
    kept
}

/// Every key in `kept` is there.
fn assert_kept(node: &Node, kept: &[String]) {
    let found = everything(node);
    for key in kept {
        assert!(found.iter().any(|(k, _)| k == key), "{key} is missing");
    }
}

/// Disarms until a write goes through (the freed space shows once the
/// trees have synced).
fn disarm_and_write(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let disarmed = block_on(node.client().disarm_alarms()).unwrap();
        assert!(disarmed.len() <= 1);
        match put(node, "after/disarm", 10) {
            Ok(_) => break,
            Err(NodeError::Kv(KvError::NoSpace)) => {}
            Err(e) => panic!("a write after the disarm: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "still no room after freeing half: {:?}",
            block_on(node.client().status())
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let alarms = block_on(node.client().alarms()).unwrap();
    let status = block_on(node.client().status());
    assert!(alarms.is_empty(), "{alarms:?}; {status:?}");
}

fn quick_syncs(config: NodeConfig) -> NodeConfig {
    NodeConfig {
        tree_sync: TreeSync {
            interval: Duration::from_millis(50),
            ..TreeSync::default()
        },
        ..config
    }
}

#[test]
fn the_backend_quota_raises_nospace_and_a_disarm_after_freeing_lifts_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = |dir: &Path| NodeConfig {
        quota_backend_bytes: 1 << 20,
        ..quick_syncs(node_config(dir, 2, 2))
    };
    let node = Node::start(config(dir.path())).unwrap();
    let acked = fill(&node, "q");
    assert!(acked.len() > 50, "only {} puts before NOSPACE", acked.len());
    check_alarm_up(&node, &acked);

    // The alarm is state: it is up after a restart too.
    node.shutdown();
    let node = Node::start(config(dir.path())).unwrap();
    check_alarm_up(&node, &acked);

    // The quota is checked against what the last tree sync counted, so
    // the fill can pass it by up to one sync's writes (twice the quota
    // here, at times): freeing half is not always enough.
    let kept = free_space(&node, &acked, 4);
    disarm_and_write(&node);
    assert_kept(&node, &kept);
}

#[test]
fn a_full_tree_file_raises_nospace_and_a_disarm_after_freeing_lifts_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = quick_syncs(node_config(dir.path(), 1, 1));
    config.tree.max_file_size = 4 << 20;
    let node = Node::start(config.clone()).unwrap();
    let acked = fill(&node, "f");
    assert!(acked.len() > 50, "only {} puts before NOSPACE", acked.len());
    check_alarm_up(&node, &acked);
    node.shutdown();
    let node = Node::start(config).unwrap();
    check_alarm_up(&node, &acked);
    let kept = free_space(&node, &acked, 2);
    disarm_and_write(&node);
    assert_kept(&node, &kept);
    // Watches report what was written after the disarm, too.
    let mut watch = block_on(node.watch(WatchRequest {
        key: b"after/".to_vec(),
        range_end: b"after0".to_vec(),
        ..WatchRequest::default()
    }))
    .unwrap();
    put(&node, "after/again", 10).unwrap();
    let batch = block_on(watch.next()).unwrap();
    assert!(matches!(batch, WatchBatch::Events(events) if events.len() == 1));
}

/// Writes `mib` MiB of zeros into `path`, or as much as fits.
fn filler(path: &Path, mib: usize) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..mib {
        if file.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = file.sync_all();
}

/// A real full disk: the WAL finds no room for its next segment, or a tree
/// sync finds no room for its pages. The NOSPACE alarm goes up, writes are
/// refused, reads, deletes and compaction go on, nothing acknowledged is
/// lost, the node starts again on the full disk, and once room is freed
/// and the alarm disarmed, writes go through.
#[test]
fn a_full_disk_raises_nospace_and_a_disarm_after_freeing_lifts_it() {
    let Some(disk) = SmallDisk::new(64) else {
        return;
    };
    let data = disk.mount.join("keel");
    // Room the test gives back once the disk is full.
    filler(&disk.mount.join("filler"), 16);
    let config = || quick_syncs(node_config(&data, 2, 2));
    let node = Node::start(config()).unwrap();
    let acked = fill(&node, "d");
    assert!(acked.len() > 50, "only {} puts before NOSPACE", acked.len());
    let df = std::process::Command::new("df")
        .arg(&disk.mount)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    eprintln!("NOSPACE after {} puts of 4 KiB:\n{df}", acked.len());
    check_alarm_up(&node, &acked);
    let kept = free_space(&node, &acked, 2);
    node.shutdown();
    // Whatever the shutdown gave back (WAL segments the tree made
    // redundant) is taken again: the start is on a disk with no block free.
    filler(&disk.mount.join("top-up"), 64);

    let node = Node::start(config()).expect("a start on a full disk");
    check_alarm_up(&node, &kept);
    std::fs::remove_file(disk.mount.join("filler")).unwrap();
    std::fs::remove_file(disk.mount.join("top-up")).unwrap();
    disarm_and_write(&node);
    assert_kept(&node, &kept);
    for i in 0..50 {
        put(&node, &format!("after/{i}"), 4096).expect("writes after the disarm");
    }
    drop(node);
    drop(disk);
}
