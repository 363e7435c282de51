//! Snapshots (docs/snapshots.md): `keelctl snapshot save` from a three-
//! member cluster while a client writes, `keel restore` into a new
//! three-member cluster, and every key (value, create and mod revisions,
//! version, lease), every lease and the revision come back; a damaged or
//! truncated file is refused and leaves no directory behind.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_client::Client;
use keel_proto::{KeyValue, RangeRequest};
use keel_tests::process_cluster::{keel_binary, keelctl_binary, ProcessCluster};

/// Every pair at `revision` (0: now), in key order.
fn everything(cluster: &ProcessCluster, client: &Client, revision: u64) -> (u64, Vec<KeyValue>) {
    let (at, answer) = cluster
        .block_on(client.range(RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision,
            ..RangeRequest::default()
        }))
        .expect("range over everything");
    (at, answer.kvs)
}

fn keelctl(cluster: &ProcessCluster, args: &[&str]) -> std::process::Output {
    Command::new(keelctl_binary())
        .args(["--endpoints", &cluster.endpoints()[0]])
        .args(args)
        .output()
        .expect("run keelctl")
}

fn restore(file: &std::path::Path, into: &ProcessCluster, i: usize) -> std::process::Output {
    Command::new(keel_binary())
        .arg("restore")
        .arg(file)
        .arg("--data-dir")
        .arg(into.data_dir(i))
        .args(["--name", &format!("m{i}")])
        .args(["--initial-cluster", into.initial_cluster()])
        .output()
        .expect("run keel restore")
}

#[test]
fn a_snapshot_saved_during_writes_restores_every_key_lease_and_revision() {
    let source = ProcessCluster::start(3, 2, 2);
    let client = source.cluster_client().expect("a client");
    // Keys on both shards, some written several times (versions, create
    // below mod), some deleted, some with a lease.
    let (lease, _) = source
        .block_on(client.lease_grant(0, 600))
        .expect("lease grant");
    for i in 0..40 {
        let key = format!("key-{i:02}");
        for round in 0..(1 + i % 3) {
            source.put_applied(&key, &format!("v{round}"));
        }
    }
    for i in 0..5 {
        source
            .block_on(client.delete(format!("key-{i:02}")))
            .expect("delete");
    }
    for i in 0..6 {
        source
            .block_on(client.put_with(keel_proto::PutRequest {
                key: format!("leased-{i}").into_bytes(),
                value: b"alive".to_vec(),
                lease,
                ..keel_proto::PutRequest::default()
            }))
            .expect("put with a lease");
    }
    // A writer goes on while the snapshot is saved.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let writing = writing.clone();
        let client = client.clone();
        let runtime = keel_tests::client_runtime();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while writing.load(Ordering::Relaxed) && n < 100_000 {
                let _ = runtime.block_on(client.put(
                    format!("during-{:03}", n % 300).into_bytes(),
                    n.to_string().into_bytes(),
                ));
                n += 1;
            }
            n
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keel.snapshot");
    let saved = keelctl(&source, &["snapshot", "save", file.to_str().unwrap()]);
    assert!(saved.status.success(), "{saved:?}");
    std::thread::sleep(Duration::from_millis(300));
    writing.store(false, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(written > 10, "the writer wrote during the save ({written})");

    let status = keelctl(
        &source,
        &["-w", "json", "snapshot", "status", file.to_str().unwrap()],
    );
    assert!(status.status.success(), "{status:?}");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let revision = status["revision"].as_u64().expect("revision");
    assert_eq!(status["shards"], 2);
    assert_eq!(status["leases"], 1);
    // What the source held at the snapshot's revision.
    let (_, expected) = everything(&source, &client, revision);
    assert!(expected.iter().any(|kv| kv.key.starts_with(b"during-")));
    assert_eq!(status["totalKey"].as_u64(), Some(expected.len() as u64));
    drop(source);

    // A damaged or truncated file is refused, and leaves nothing.
    let target = ProcessCluster::create(3, 2, 2, &[]);
    let bytes = std::fs::read(&file).unwrap();
    let damaged = dir.path().join("damaged");
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x10;
    std::fs::write(&damaged, &flipped).unwrap();
    let truncated = dir.path().join("truncated");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    for bad in [&damaged, &truncated] {
        let refused = restore(bad, &target, 0);
        assert!(!refused.status.success(), "{refused:?}");
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(said.contains("snapshot"), "{said}");
        assert!(
            !target.data_dir(0).exists(),
            "a refused restore wrote a directory"
        );
    }

    for i in 0..3 {
        let restored = restore(&file, &target, i);
        assert!(restored.status.success(), "{restored:?}");
    }
    target.start_all();
    let restored_client = target.cluster_client().expect("a client");
    let (now, got) = everything(&target, &restored_client, 0);
    assert_eq!(
        now, revision,
        "the restored cluster is at the snapshot's revision"
    );
    assert_eq!(got.len(), expected.len());
    for (got, expected) in got.iter().zip(&expected) {
        assert_eq!(got, expected, "{}", String::from_utf8_lossy(&expected.key));
    }
    // Every member has it all.
    for i in 0..3 {
        for kv in expected.iter().step_by(7) {
            let key = String::from_utf8_lossy(&kv.key).into_owned();
            let (value, modified) = target.get(i, &key).unwrap().expect("the key");
            assert_eq!(
                (value.as_bytes(), modified),
                (kv.value.as_slice(), kv.mod_revision)
            );
        }
    }
    // The lease is back, and still holds its keys.
    let leases = target
        .block_on(restored_client.lease_leases())
        .expect("lease list");
    assert_eq!(leases.iter().map(|l| l.id).collect::<Vec<_>>(), vec![lease]);
    let live = target
        .block_on(restored_client.lease_time_to_live(lease, true))
        .expect("time to live");
    assert_eq!(live.keys.len(), 6);
    assert!(live.ttl > 0 && live.ttl <= 600, "{}", live.ttl);
    // New writes go above the snapshot's revision, on every shard.
    for shard in 0..2 {
        let at = target.put_applied(&target.key_of_shard(shard, "after"), "v");
        assert!(at > revision);
    }
    // Revoking the lease deletes its keys on whichever shard they are.
    target
        .block_on(restored_client.lease_revoke(lease))
        .expect("revoke");
    let (_, left) = everything(&target, &restored_client, 0);
    assert!(!left.iter().any(|kv| kv.key.starts_with(b"leased-")));
}
