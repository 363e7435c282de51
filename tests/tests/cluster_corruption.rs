//! The corruption check (docs/corruption.md) against silent damage: one
//! member's tree file is changed while it is stopped, with its checksums
//! sealed again so that nothing but a comparison with the other members'
//! copies can tell. The shard's leader finds it at its next check and
//! raises a CORRUPT alarm naming that member; the shard then refuses
//! writes, the other shard takes them, and the damaged copy still answers
//! reads (what the checksums let through).

use std::time::{Duration, Instant};

use keel_proto::AlarmType;
use keel_tests::process_cluster::{keelctl_binary, ProcessCluster, WriteOutcome};
use keel_tests::tree_file::rewrite_and_reseal;

const MARKER: &str = "precious-value-that-must-not-change";

#[test]
fn a_member_whose_tree_was_changed_behind_its_checksums_is_named_corrupt() {
    let cluster = ProcessCluster::start_with(3, 2, 2, &["--corrupt-check-interval-ms", "500"]);
    let shard = 1;
    let key = cluster.key_of_shard(shard, "precious");
    cluster.put_applied(&key, MARKER);
    for n in 0..20 {
        cluster.put_applied(&cluster.key_of_shard(shard, &format!("filler-{n}")), "v");
    }
    // Every member has the key (a linearizable read waits for it).
    for i in 0..3 {
        assert_eq!(cluster.get(i, &key).unwrap().unwrap().0, MARKER);
    }
    let victim = 2;
    cluster.stop(victim);
    let tree = cluster
        .data_dir(victim)
        .join(format!("shard-{shard:03}"))
        .join("kv.db");
    let changed = rewrite_and_reseal(&tree, MARKER.as_bytes(), b'P');
    assert!(changed >= 1, "the value is in the tree file");
    cluster.start_member(victim);
    // The damaged copy is read without complaint: checksums cannot see it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let damaged = loop {
        match cluster.get(victim, &key) {
            Ok(Some((value, _))) => break value,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            other => panic!("the victim does not answer: {other:?}"),
        }
    };
    assert_ne!(damaged, MARKER);
    // The check names the victim, and only it. Usually within seconds; a
    // check that asked the victim while its peer links were still coming
    // back asks again every 3 s (seen taking 27 s once).
    let victim_id = cluster.ids()[victim];
    let deadline = Instant::now() + Duration::from_secs(90);
    let alarms = loop {
        let alarms = cluster.alarms(0).unwrap_or_default();
        if !alarms.is_empty() || Instant::now() > deadline {
            break alarms;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(alarms.len(), 1, "one alarm: {alarms:?}");
    assert_eq!(alarms[0].alarm, AlarmType::Corrupt);
    assert_eq!(alarms[0].member_id, victim_id);
    // The shard refuses writes; the other shard takes them.
    match cluster.put(&cluster.key_of_shard(shard, "after"), "v") {
        WriteOutcome::Refused(why) => assert!(why.contains("corrupt"), "{why}"),
        other => panic!("a write to the corrupt shard: {other:?}"),
    }
    cluster.put_applied(&cluster.key_of_shard(0, "after"), "v");
    // On demand, as etcdctl's: every member's hash at one revision; the
    // command fails naming the member that differs. Per shard: the other
    // shard's copies agree.
    let endpoints = cluster.endpoints();
    let hashkv = |extra: &[&str]| {
        std::process::Command::new(keelctl_binary())
            .args(["--endpoints", &endpoints.join(",")])
            .args(["endpoint", "hashkv", "--cluster"])
            .args(extra)
            .output()
            .expect("run keelctl")
    };
    let other_shard = hashkv(&["--shard", "0"]);
    assert!(other_shard.status.success(), "{other_shard:?}");
    let damaged_shard = hashkv(&["--shard", "1"]);
    assert_eq!(damaged_shard.status.code(), Some(1), "{damaged_shard:?}");
    let hashkv = hashkv(&[]);
    let printed = String::from_utf8_lossy(&hashkv.stdout);
    let complaint = String::from_utf8_lossy(&hashkv.stderr);
    assert_eq!(hashkv.status.code(), Some(1), "{printed}{complaint}");
    assert_eq!(printed.lines().count(), 3, "{printed}");
    let hashes: Vec<&str> = printed
        .lines()
        .map(|line| line.rsplit(", ").next().unwrap_or_default())
        .collect();
    assert_eq!(hashes[0], hashes[1], "{printed}");
    assert_ne!(hashes[2], hashes[0], "{printed}");
    assert!(
        complaint.contains(&format!("{} differ", endpoints[victim])),
        "{complaint}"
    );
}
