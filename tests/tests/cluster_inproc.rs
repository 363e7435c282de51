//! Three members in one process over an in-memory network with seeded
//! faults (`keel_tests::mem_net`): every shard is replicated and led by
//! one member per term, writes reach the leader by following not-leader
//! hints, linearizable reads work on followers, a member that was away
//! catches up from the leader's WAL, a leader cut off from the majority
//! acknowledges nothing, and no acknowledged write is lost while messages
//! are dropped, duplicated, delayed and links are cut.
//!
//! `KEEL_CLUSTER_SEED` picks the fault seed (default: fixed) and
//! `KEEL_CLUSTER_SECONDS` how long the fault run lasts (default 3).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel_engine::shard::{Consistency, NodeError};
use keel_tests::cluster::{InProcessCluster, Outcome};
use keel_tests::mem_net::Faults;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn value_of(
    cluster: &InProcessCluster,
    i: usize,
    key: &str,
    consistency: Consistency,
) -> Option<Vec<u8>> {
    match cluster.get(i, key.as_bytes(), consistency) {
        Some(Ok((_, answer))) => answer.kvs.first().map(|kv| kv.value.clone()),
        other => panic!("{key} on member {i}: {other:?}"),
    }
}

/// Waits until every running member has applied the same index on every
/// shard as the others.
fn wait_until_converged(cluster: &InProcessCluster, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let applied: Vec<Vec<u64>> = (0..cluster.size())
            .filter(|i| cluster.node(*i).is_some())
            .filter_map(|i| cluster.status(i))
            .map(|s| s.iter().map(|s| s.applied_index).collect())
            .collect();
        let running = (0..cluster.size())
            .filter(|i| cluster.node(*i).is_some())
            .count();
        if applied.len() == running && applied.windows(2).all(|w| w[0] == w[1]) {
            return;
        }
        assert!(Instant::now() < deadline, "not converged: {applied:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn three_members_replicate_every_shard_and_followers_read_linearizably() {
    let cluster = InProcessCluster::start(3, 4, 2, 1);
    let leaders = cluster.wait_for_leaders(Duration::from_secs(20));
    assert_eq!(leaders.len(), 4);
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in 0..40 {
        let key = format!("key/{n}");
        match cluster.put(n % 3, key.as_bytes(), format!("v{n}").as_bytes(), deadline) {
            Outcome::Applied(_) => {}
            other => panic!("{key}: {other:?}"),
        }
    }
    // A linearizable read on any member sees every acknowledged write.
    for i in 0..3 {
        for n in (0..40).step_by(7) {
            let key = format!("key/{n}");
            assert_eq!(
                value_of(&cluster, i, &key, Consistency::Linearizable),
                Some(format!("v{n}").into_bytes()),
                "member {i}, {key}"
            );
        }
    }
    wait_until_converged(&cluster, Duration::from_secs(10));
    for i in 0..3 {
        assert_eq!(
            value_of(&cluster, i, "key/39", Consistency::Serializable),
            Some(b"v39".to_vec())
        );
    }
}

#[test]
fn a_write_to_a_follower_is_refused_with_the_leaders_id() {
    let cluster = InProcessCluster::start(3, 1, 1, 2);
    let leader = cluster.wait_for_leaders(Duration::from_secs(20))[0];
    let follower = (leader + 1) % 3;
    let node = cluster.node(follower).unwrap();
    let refused = futures_lite::future::block_on(node.put(keel_engine::mvcc::PutRequest {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    }));
    match refused {
        Err(NodeError::NotLeader {
            shard: 0,
            leader: hint,
        }) => {
            assert_eq!(hint, cluster.id(leader));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_member_that_was_away_catches_up_from_the_leaders_wal() {
    let mut cluster = InProcessCluster::start(3, 2, 1, 3);
    let leaders = cluster.wait_for_leaders(Duration::from_secs(20));
    // A member that leads no shard goes away (so writes need no election).
    let away = (0..3)
        .find(|i| !leaders.contains(i))
        .unwrap_or((leaders[0] + 1) % 3);
    cluster.stop_member(away);
    let deadline = Instant::now() + Duration::from_secs(60);
    for n in 0..300 {
        let key = format!("away/{n}");
        match cluster.put((away + 1) % 3, key.as_bytes(), b"x", deadline) {
            Outcome::Applied(_) => {}
            other => panic!("{key}: {other:?}"),
        }
    }
    cluster.start_member(away);
    wait_until_converged(&cluster, Duration::from_secs(30));
    for n in [0, 150, 299] {
        let key = format!("away/{n}");
        assert_eq!(
            value_of(&cluster, away, &key, Consistency::Serializable),
            Some(b"x".to_vec()),
            "{key} on the member that was away"
        );
    }
}

#[test]
fn a_leader_cut_off_from_the_majority_acknowledges_nothing() {
    let cluster = InProcessCluster::start(3, 1, 1, 4);
    let leader = cluster.wait_for_leaders(Duration::from_secs(20))[0];
    cluster
        .net
        .isolate(cluster.id(leader), &cluster.ids(), true);
    // Writes sent to the cut-off leader never succeed; the others elect a
    // new leader and take writes.
    let old = std::thread::scope(|scope| {
        let old = scope.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(4);
            let mut acknowledged = Vec::new();
            let mut n = 0;
            while Instant::now() < deadline {
                let node = cluster.node(leader).unwrap();
                let key = format!("minority/{n}");
                let put = futures_lite::future::block_on(futures_lite::future::or(
                    async {
                        Some(
                            node.put(keel_engine::mvcc::PutRequest {
                                key: key.clone().into_bytes(),
                                value: b"lost".to_vec(),
                                ..Default::default()
                            })
                            .await,
                        )
                    },
                    async {
                        keel_tests::timeout(Duration::from_millis(500)).await;
                        None
                    },
                ));
                if let Some(Ok(_)) = put {
                    acknowledged.push(key);
                }
                n += 1;
            }
            acknowledged
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let majority = (leader + 1) % 3;
        // Its hint may name the old leader until the others elect another:
        // a write sent there has no answer, and is sent again.
        loop {
            match cluster.put(majority, b"majority", b"yes", deadline) {
                Outcome::Applied(_) => break,
                Outcome::Unknown if Instant::now() < deadline => {}
                other => panic!("the majority took no write: {other:?}"),
            }
        }
        old.join().unwrap()
    });
    assert!(old.is_empty(), "a minority leader acknowledged {old:?}");
    cluster.net.heal();
    cluster.wait_for_leaders(Duration::from_secs(20));
    wait_until_converged(&cluster, Duration::from_secs(20));
    for i in 0..3 {
        assert_eq!(
            value_of(&cluster, i, "majority", Consistency::Linearizable),
            Some(b"yes".to_vec())
        );
        assert_eq!(
            value_of(&cluster, i, "minority/0", Consistency::Serializable),
            None
        );
    }
}

/// For each (shard, term), the leaders any member named: at most one.
type Terms = BTreeMap<(usize, u64), BTreeSet<u64>>;

#[test]
fn no_acknowledged_write_is_lost_under_drops_duplicates_delays_and_cuts() {
    let seed = env_u64("KEEL_CLUSTER_SEED", 0x6b65_656c);
    let seconds = env_u64("KEEL_CLUSTER_SECONDS", 3);
    eprintln!("seed {seed}, {seconds} s");
    let cluster = InProcessCluster::start(3, 3, 1, seed);
    cluster.wait_for_leaders(Duration::from_secs(20));
    cluster.net.set_faults(Faults {
        drop: 0.05,
        duplicate: 0.05,
        delay: 0.2,
        max_delay: Duration::from_millis(30),
    });
    let stop = AtomicBool::new(false);
    let terms: Mutex<Terms> = Mutex::default();
    let acknowledged: Mutex<Vec<(String, String)>> = Mutex::default();
    let unknown = Arc::new(Mutex::new(0usize));
    std::thread::scope(|scope| {
        for writer in 0..3 {
            let (cluster, stop, acknowledged, unknown) = (&cluster, &stop, &acknowledged, &unknown);
            scope.spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("w{writer}/{n}");
                    let value = format!("{seed}:{writer}:{n}");
                    let deadline = Instant::now() + Duration::from_secs(5);
                    match cluster.put(writer, key.as_bytes(), value.as_bytes(), deadline) {
                        Outcome::Applied(_) => acknowledged.lock().unwrap().push((key, value)),
                        Outcome::Unknown => *unknown.lock().unwrap() += 1,
                        Outcome::Refused(_) => {}
                    }
                    n += 1;
                }
            });
        }
        let (cluster_ref, stop_ref, terms_ref) = (&cluster, &stop, &terms);
        scope.spawn(move || {
            while !stop_ref.load(Ordering::Relaxed) {
                for i in 0..cluster_ref.size() {
                    for status in cluster_ref.status(i).unwrap_or_default() {
                        if status.leader != 0 {
                            terms_ref
                                .lock()
                                .unwrap()
                                .entry((status.shard, status.raft_term))
                                .or_default()
                                .insert(status.leader);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        // The nemesis: cut one member off, then another link one way.
        let ids = cluster.ids();
        let end = Instant::now() + Duration::from_secs(seconds);
        // On a busy machine writes sent to a member just cut off wait out
        // their deadline: the faults go on (up to four times as long)
        // until enough writes were acknowledged to mean something.
        let latest_end = Instant::now() + Duration::from_secs(4 * seconds);
        let enough = || acknowledged.lock().unwrap().len() >= 50;
        let mut round = 0usize;
        while Instant::now() < end || (!enough() && Instant::now() < latest_end) {
            let victim = ids[round % 3];
            cluster.net.isolate(victim, &ids, true);
            std::thread::sleep(Duration::from_millis(700));
            cluster.net.isolate(victim, &ids, false);
            cluster
                .net
                .set_cut(ids[(round + 1) % 3], ids[(round + 2) % 3], true);
            std::thread::sleep(Duration::from_millis(300));
            cluster
                .net
                .set_cut(ids[(round + 1) % 3], ids[(round + 2) % 3], false);
            round += 1;
        }
        stop.store(true, Ordering::Relaxed);
    });
    let stats = cluster.net.stats();
    cluster.net.heal();
    cluster.wait_for_leaders(Duration::from_secs(20));
    wait_until_converged(&cluster, Duration::from_secs(30));
    let acknowledged = acknowledged.into_inner().unwrap();
    eprintln!(
        "{} acknowledged, {} unknown; network {stats:?}",
        acknowledged.len(),
        unknown.lock().unwrap()
    );
    assert!(stats.dropped > 0 && stats.duplicated > 0 && stats.delayed > 0 && stats.cut > 0);
    // Few when the machine is busy: writes sent to a member just cut off
    // wait out their call timeout.
    assert!(acknowledged.len() >= 10, "too few writes to mean anything");
    for (shard_term, leaders) in terms.into_inner().unwrap() {
        assert!(
            leaders.len() <= 1,
            "{shard_term:?} had leaders {leaders:x?}"
        );
    }
    for i in 0..3 {
        for (key, value) in &acknowledged {
            assert_eq!(
                value_of(&cluster, i, key, Consistency::Serializable),
                Some(value.clone().into_bytes()),
                "{key} on member {i}"
            );
        }
    }
}

#[test]
fn a_leader_nobody_hears_is_replaced_though_it_hears_everybody() {
    let cluster = InProcessCluster::start(3, 1, 1, 5);
    let leader = cluster.wait_for_leaders(Duration::from_secs(20))[0];
    let ids = cluster.ids();
    for &other in ids.iter().filter(|id| **id != cluster.id(leader)) {
        cluster.net.set_cut(cluster.id(leader), other, true);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let majority = (leader + 1) % 3;
        match cluster.put(majority, b"k", b"v", deadline) {
            Outcome::Applied(_) => break,
            Outcome::Unknown if Instant::now() < deadline => {}
            other => panic!("no new leader took the write: {other:?}"),
        }
    }
    let new_leader = cluster.leader_of(0);
    assert!(new_leader.is_some_and(|l| l != leader), "{new_leader:?}");
}

/// Stops a follower of the one shard, writes 7,000 entries of 2 KiB (past
/// the leader's 5,000-entry catch-up tail, in 4 MiB WAL segments that tree
/// syncs release), and starts it again; answers the member that was away.
fn leave_a_member_behind(cluster: &mut InProcessCluster) -> usize {
    let leader = cluster.wait_for_leaders(Duration::from_secs(20))[0];
    let away = (leader + 1) % 3;
    cluster.stop_member(away);
    cluster.write_past_the_catch_up_tail(leader);
    match cluster.put(
        leader,
        b"last",
        b"x",
        Instant::now() + Duration::from_secs(10),
    ) {
        Outcome::Applied(_) => {}
        other => panic!("last: {other:?}"),
    }
    cluster.start_member(away);
    away
}

#[test]
fn a_member_past_the_catch_up_tail_catches_up_by_snapshot() {
    let mut cluster = InProcessCluster::start(3, 1, 1, 6);
    let away = leave_a_member_behind(&mut cluster);
    wait_until_converged(&cluster, Duration::from_secs(60));
    assert!(
        cluster.net.stats().snapshots >= 1,
        "{:?}",
        cluster.net.stats()
    );
    for key in ["w0/0", "w3/1749", "last"] {
        assert!(
            value_of(&cluster, away, key, Consistency::Serializable).is_some(),
            "{key} on the member that was away"
        );
    }
    // It goes on taking entries after the snapshot, and keeps them across
    // a restart (its WAL starts after the snapshot).
    let leader = cluster.leader_of(0).unwrap();
    match cluster.put(
        leader,
        b"after",
        b"y",
        Instant::now() + Duration::from_secs(10),
    ) {
        Outcome::Applied(_) => {}
        other => panic!("after: {other:?}"),
    }
    wait_until_converged(&cluster, Duration::from_secs(20));
    cluster.stop_member(away);
    cluster.start_member(away);
    wait_until_converged(&cluster, Duration::from_secs(20));
    assert_eq!(
        value_of(&cluster, away, "after", Consistency::Serializable),
        Some(b"y".to_vec())
    );
    // The snapshot's pin on the leader's tree (which keeps its freed pages
    // from reuse) is let go once no send holds it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leader = cluster.leader_of(0).unwrap();
        let pinned = cluster
            .status(leader)
            .and_then(|shards| shards.first().map(|shard| shard.snapshot_pinned))
            .expect("the leader's status");
        if pinned == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the snapshot at {pinned} is still pinned"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_member_that_cannot_catch_up_fails_its_reads_instead_of_holding_them() {
    // With every snapshot lost, a member past the leader's WAL cannot catch
    // up. Its linearizable reads must fail in bounded time, not wait (and
    // hold memory) for good.
    let mut cluster = InProcessCluster::start(3, 1, 1, 7);
    cluster.net.refuse_snapshots(true);
    let away = leave_a_member_behind(&mut cluster);
    std::thread::sleep(Duration::from_secs(1));
    let node = cluster.node(away).unwrap();
    let read = futures_lite::future::block_on(futures_lite::future::or(
        async {
            Some(
                node.range(
                    keel_engine::mvcc::RangeRequest {
                        key: b"last".to_vec(),
                        ..Default::default()
                    },
                    Consistency::Linearizable,
                )
                .await,
            )
        },
        async {
            keel_tests::timeout(Duration::from_secs(15)).await;
            None
        },
    ));
    match read {
        Some(Err(NodeError::Behind { .. } | NodeError::NoLeader { .. })) => {}
        Some(other) => panic!("a member past the tail answered {other:?}"),
        None => panic!("a read on a member past the tail was held for 15 s"),
    }
}

/// Each member's count of led shards, by core: `counts[member][core]`.
fn leadership_by_member_and_core(cluster: &InProcessCluster, cores: usize) -> Vec<Vec<usize>> {
    let mut counts = vec![vec![0; cores]; cluster.size()];
    for shard in 0..cluster.shards() {
        if let Some(leader) = cluster.leader_of(shard) {
            counts[leader][shard % cores] += 1;
        }
    }
    counts
}

/// Waits until every member leads one shard on each of its cores (six
/// shards over two cores and three members), answering how long it took.
fn wait_until_spread(cluster: &InProcessCluster, within: Duration) -> Duration {
    let began = Instant::now();
    loop {
        let counts = leadership_by_member_and_core(cluster, 2);
        if counts.iter().flatten().all(|n| *n == 1) {
            return began.elapsed();
        }
        assert!(
            began.elapsed() < within,
            "leadership not spread after {within:?}: {counts:?} (shards led, by member and core)"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Leadership is spread evenly over members and their cores once the
/// cluster starts, and again after a member that was away comes back
/// (elections alone leave it leading nothing).
#[test]
fn leadership_spreads_over_members_and_cores_and_returns_after_a_restart() {
    let mut cluster = InProcessCluster::start(3, 6, 2, 11);
    cluster.wait_for_leaders(Duration::from_secs(10));
    let took = wait_until_spread(&cluster, Duration::from_secs(15));
    eprintln!("spread {took:?} after the first leaders");
    let away = cluster.leader_of(0).expect("a leader");
    cluster.stop_member(away);
    cluster.wait_for_leaders(Duration::from_secs(10));
    cluster.start_member(away);
    let took = wait_until_spread(&cluster, Duration::from_secs(20));
    eprintln!("spread again {took:?} after the member came back");
}
