//! Three members in one process with shards led from different members:
//! writes that span shards (a range delete, a compaction, a lease's grant
//! and revoke with their mirrors) work from any member, carried to each
//! shard's leader; and a write that starts after another was answered gets
//! the higher revision though the members' wall clocks disagree by far
//! (docs/node.md, "Revisions across members").

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_engine::hlc::{ManualClock, WallClock, KEEL_EPOCH_UNIX_MILLIS};
use keel_engine::mvcc::{DeleteRangeRequest, PutRequest, Response, Revision};
use keel_engine::routing::shard_of;
use keel_engine::shard::{Consistency, NodeError};
use keel_tests::cluster::{with_timeout, InProcessCluster, Outcome};

const SHARDS: usize = 4;
const CORES: usize = 2;

/// Waits until the shards' leaders are spread over every member and have
/// stayed where they are for 1.5 s (leadership is handed to where it is
/// spread to, checked each second); answers each shard's leader.
fn wait_until_every_member_leads(cluster: &InProcessCluster, within: Duration) -> Vec<usize> {
    let deadline = Instant::now() + within;
    let mut settled: Option<(Vec<usize>, Instant)> = None;
    loop {
        let leaders = cluster.wait_for_leaders(within);
        let distinct: BTreeSet<usize> = leaders.iter().copied().collect();
        match &settled {
            Some((seen, since)) if *seen == leaders && distinct.len() == cluster.size() => {
                if since.elapsed() >= Duration::from_millis(1_500) {
                    return leaders;
                }
            }
            _ => settled = Some((leaders.clone(), Instant::now())),
        }
        assert!(
            Instant::now() < deadline,
            "leaders not spread and settled: {leaders:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A key of `shard` starting with `prefix`.
fn key_of(prefix: &str, shard: usize) -> Vec<u8> {
    (0..)
        .map(|n| format!("{prefix}{n}").into_bytes())
        .find(|key| shard_of(key, SHARDS) == shard)
        .unwrap_or_default()
}

fn put(cluster: &InProcessCluster, key: &[u8], lease: i64) -> Revision {
    let request = PutRequest {
        key: key.to_vec(),
        value: b"v".to_vec(),
        lease,
        ..PutRequest::default()
    };
    match cluster.put_request(0, request, Instant::now() + Duration::from_secs(5)) {
        Outcome::Applied(applied) => applied.revision,
        other => panic!("put {key:?}: {other:?}"),
    }
}

/// The keys under `prefix` member `i` reads, linearizably.
fn keys_under(cluster: &InProcessCluster, i: usize, prefix: &str) -> Vec<Vec<u8>> {
    let node = cluster.node(i).expect("running");
    let request = keel_engine::mvcc::RangeRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: prefix_end(prefix),
        ..Default::default()
    };
    match with_timeout(node.range(request, Consistency::Linearizable)) {
        Some(Ok((_, answer))) => answer.kvs.into_iter().map(|kv| kv.key).collect(),
        other => panic!("range {prefix} on member {i}: {other:?}"),
    }
}

fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

#[test]
fn writes_that_span_shards_work_from_every_member_though_it_leads_only_some() {
    let cluster = InProcessCluster::start(3, SHARDS, CORES, 31);
    let leaders = wait_until_every_member_leads(&cluster, Duration::from_secs(20));
    for member in 0..cluster.size() {
        let client = cluster.node(member).expect("running").client();
        let led: Vec<usize> = (0..SHARDS).filter(|s| leaders[*s] == member).collect();
        assert!(led.len() < SHARDS, "member {member} leads every shard");

        // A lease granted here has its home and its mirrors on shards led
        // from the other members too; a key of every shard attaches to it.
        let lease = with_timeout(client.lease_grant(0, 600))
            .expect("grant answered")
            .unwrap_or_else(|e| panic!("grant on member {member}: {e}"));
        let prefix = format!("lease{member}/");
        for shard in 0..SHARDS {
            put(&cluster, &key_of(&prefix, shard), lease);
        }
        assert_eq!(keys_under(&cluster, member, &prefix).len(), SHARDS);
        with_timeout(client.lease_revoke(lease))
            .expect("revoke answered")
            .unwrap_or_else(|e| panic!("revoke on member {member}: {e}"));
        for reader in 0..cluster.size() {
            assert_eq!(
                keys_under(&cluster, reader, &prefix),
                Vec::<Vec<u8>>::new(),
                "member {reader} still holds keys of the lease member {member} revoked"
            );
        }

        // A range delete over every shard.
        let prefix = format!("range{member}/");
        let mut last = 0;
        for shard in 0..SHARDS {
            last = put(&cluster, &key_of(&prefix, shard), 0);
        }
        let request = DeleteRangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(&prefix),
            prev_kv: true,
        };
        let deleted = with_timeout(client.delete_range(request))
            .expect("delete answered")
            .unwrap_or_else(|e| panic!("delete on member {member}: {e}"));
        match deleted.response {
            Response::DeleteRange(answer) => {
                assert_eq!(answer.deleted, SHARDS as u64);
                assert_eq!(answer.prev_kvs.len(), SHARDS, "the pairs came back");
            }
            other => panic!("{other:?}"),
        }
        assert!(keys_under(&cluster, (member + 1) % 3, &prefix).is_empty());

        // A compaction of every shard.
        with_timeout(client.compact(last))
            .expect("compact answered")
            .unwrap_or_else(|e| panic!("compact on member {member}: {e}"));
    }
}

#[test]
fn a_write_answered_first_has_the_lower_revision_though_its_leaders_clock_is_ahead() {
    // Member 0's wall clock is a second ahead of the others' and moves a
    // millisecond before each of its writes; the others' stand still. So
    // member 0 stamps revisions far above member 1's own, and only what
    // member 1 hears of them can put its writes after member 0's.
    let start = KEEL_EPOCH_UNIX_MILLIS + 400 * 24 * 3600 * 1000;
    let ahead_clock = Arc::new(ManualClock::at(start + 1_000));
    let clocks: Vec<Option<Arc<dyn WallClock>>> = vec![
        Some(ahead_clock.clone()),
        Some(Arc::new(ManualClock::at(start))),
        Some(Arc::new(ManualClock::at(start))),
    ];
    let cluster = InProcessCluster::start_with_clocks(3, SHARDS, CORES, 37, clocks);
    let leaders = wait_until_every_member_leads(&cluster, Duration::from_secs(20));
    let ahead = (0..SHARDS)
        .find(|s| leaders[*s] == 0)
        .expect("member 0 leads");
    let behind = (0..SHARDS)
        .find(|s| leaders[*s] == 1)
        .expect("member 1 leads");
    let keys = [key_of("ahead/", ahead), key_of("behind/", behind)];

    // Then member 1 hears nothing from member 0, so it cannot learn of
    // member 0's revisions from its entries or its frames: only through
    // member 2, which every write of member 0's shard now needs.
    for cut in [false, true] {
        cluster.net.set_cut(cluster.id(0), cluster.id(1), cut);
        let mut last = 0;
        for round in 0..40 {
            if round % 2 == 0 {
                ahead_clock.set(ahead_clock.unix_millis() + 1);
            }
            let revision = put(&cluster, &keys[round % 2], 0);
            assert!(
                revision > last,
                "cut {cut}, round {round}: revision {revision} after {last} was answered"
            );
            last = revision;
        }
    }
}

#[test]
fn a_read_across_shards_on_a_member_that_missed_a_write_answers_it_or_nothing() {
    let cluster = InProcessCluster::start(3, SHARDS, CORES, 41);
    let leaders = wait_until_every_member_leads(&cluster, Duration::from_secs(20));
    let shard = 0;
    let leader = leaders[shard];
    let reader = (leader + 1) % 3;
    // The reader hears nothing from the shard's leader, so its replica of
    // the shard misses the write; a read across shards there must wait
    // for it (or fail), never answer without it.
    cluster
        .net
        .set_cut(cluster.id(leader), cluster.id(reader), true);
    let key = key_of("missed/", shard);
    put(&cluster, &key, 0);
    let node = cluster.node(reader).expect("running");
    let request = keel_engine::mvcc::RangeRequest {
        key: b"missed/".to_vec(),
        range_end: prefix_end("missed/"),
        ..Default::default()
    };
    let answer = std::thread::scope(|scope| {
        let read = scope.spawn(|| with_timeout(node.range(request, Consistency::Linearizable)));
        std::thread::sleep(Duration::from_millis(300));
        cluster
            .net
            .set_cut(cluster.id(leader), cluster.id(reader), false);
        read.join().expect("reader")
    });
    match answer {
        Some(Ok((_, found))) => {
            let keys: Vec<Vec<u8>> = found.kvs.into_iter().map(|kv| kv.key).collect();
            assert_eq!(
                keys,
                vec![key],
                "the read missed a write answered before it began"
            );
        }
        other => panic!("the read did not answer once the link was mended: {other:?}"),
    }
}

/// The member leading `shard` now, waiting through an election.
fn leader_now(cluster: &InProcessCluster, shard: usize) -> usize {
    cluster.wait_for_leaders(Duration::from_secs(20))[shard]
}

/// Whether `key` is there, read linearizably on running member `i`.
fn present(cluster: &InProcessCluster, i: usize, key: &[u8]) -> bool {
    match cluster.get(i, key, Consistency::Linearizable) {
        Some(Ok((_, found))) => !found.kvs.is_empty(),
        other => panic!("read on member {i}: {other:?}"),
    }
}

#[test]
fn a_lease_kept_alive_under_one_leader_outlives_its_failover_and_expires_under_the_next() {
    let mut cluster = InProcessCluster::start(3, SHARDS, CORES, 43);
    wait_until_every_member_leads(&cluster, Duration::from_secs(20));
    const TTL: i64 = 3;
    let first = cluster.node(0).expect("running").client();
    let lease = with_timeout(first.lease_grant(0, TTL))
        .expect("grant answered")
        .expect("granted");
    let home = keel_engine::shard::home_of_lease(lease, SHARDS);
    let key = key_of("leased/", (home + 1) % SHARDS);
    put(&cluster, &key, lease);

    // Kept alive on the home's leader for twice its TTL.
    let renewed_until = Instant::now() + Duration::from_secs(2 * TTL as u64);
    while Instant::now() < renewed_until {
        let leader = leader_now(&cluster, home);
        let client = cluster.node(leader).expect("running").client();
        match with_timeout(client.lease_keep_alive(lease)).expect("keep-alive answered") {
            Ok(_) => std::thread::sleep(Duration::from_millis(500)),
            // Leadership moved between the look and the ask (or while the
            // renewal's reset was in flight).
            Err(NodeError::NotLeader { .. } | NodeError::OutcomeUnknown { .. }) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(other) => panic!("keep-alive: {other}"),
        }
    }
    // Its leader goes; the last renewal was under it. The next leader must
    // not expire the lease before a TTL has passed since that renewal.
    let old = leader_now(&cluster, home);
    let renewed = Instant::now();
    cluster.stop_member(old);
    let reader = (old + 1) % 3;
    while renewed.elapsed() < Duration::from_secs(TTL as u64 - 1) {
        assert!(
            present(&cluster, reader, &key),
            "the key went {:?} after the lease's last renewal",
            renewed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Not kept alive any more: the new leader expires it, and its key goes
    // on every shard, within the TTL and an election's worth.
    let deadline = renewed + Duration::from_secs(TTL as u64 * 2 + 3);
    while present(&cluster, reader, &key) {
        assert!(
            Instant::now() < deadline,
            "the lease outlived its TTL by {:?} under the new leader",
            renewed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    cluster.start_member(old);
}

#[test]
fn a_leases_time_to_live_is_told_by_its_homes_leader_only() {
    let cluster = InProcessCluster::start(3, SHARDS, CORES, 47);
    wait_until_every_member_leads(&cluster, Duration::from_secs(20));
    let client = cluster.node(0).expect("running").client();
    let lease = with_timeout(client.lease_grant(0, 60))
        .expect("grant answered")
        .expect("granted");
    let home = keel_engine::shard::home_of_lease(lease, SHARDS);
    std::thread::sleep(Duration::from_millis(2_100));
    // Asked of the leader as a majority names it now (leadership may still
    // move while it spreads): the leader tells the time left, any other
    // replica names the leader.
    let mut told = None;
    for _ in 0..20 {
        let leader = leader_now(&cluster, home);
        let on_leader = cluster.node(leader).expect("running").client();
        match with_timeout(on_leader.lease_time_to_live(lease, false)).expect("answered") {
            Ok(status) => {
                told = Some((leader, status.expect("there")));
                break;
            }
            Err(NodeError::NotLeader { .. }) => std::thread::sleep(Duration::from_millis(100)),
            Err(other) => panic!("the leader told {other:?}"),
        }
    }
    let (leader, status) = told.expect("a leader told the time left");
    assert!(status.remaining <= 58, "{status:?}");
    // Every other member names a leader instead (the one it knows).
    for follower in (0..3).filter(|m| *m != leader) {
        let on_follower = cluster.node(follower).expect("running").client();
        match with_timeout(on_follower.lease_time_to_live(lease, false)).expect("answered") {
            Err(NodeError::NotLeader { leader: named, .. }) => {
                assert_ne!(named, cluster.id(follower))
            }
            other => panic!("member {follower}, not the home's leader, told {other:?}"),
        }
    }
}

/// The system clock moved by a fixed offset: a host whose clock is off.
#[derive(Debug)]
struct OffsetClock(u64);

impl WallClock for OffsetClock {
    fn unix_millis(&self) -> u64 {
        keel_engine::hlc::SystemClock.unix_millis() + self.0
    }
}

#[test]
fn a_watch_over_every_shard_on_a_member_that_leads_some_hands_out_every_write_in_order() {
    // Writes to a shard member 0 leads and one member 2 leads, watched on
    // member 1, which leads neither: the watch must hand them out in
    // revision order, every one. Member 0's clock is a second ahead, so its
    // revisions tell nothing of when a write of member 2's came.
    let clocks: Vec<Option<Arc<dyn WallClock>>> =
        vec![Some(Arc::new(OffsetClock(1_000))), None, None];
    let cluster = InProcessCluster::start_with_clocks(3, SHARDS, CORES, 53, clocks);
    let leaders = wait_until_every_member_leads(&cluster, Duration::from_secs(20));
    let of_member = |m: usize| (0..SHARDS).find(|s| leaders[*s] == m).expect("leads one");
    let (fast, slow) = (of_member(0), of_member(2));
    let watcher = cluster.node(1).expect("running").client();
    let request = keel_engine::mvcc::WatchRequest {
        key: b"raced/".to_vec(),
        range_end: prefix_end("raced/"),
        ..Default::default()
    };
    // Member 1 hears nothing from member 2 while the writes go on: it
    // applies member 0's shard as the writes come, and member 2's only
    // once the link is mended, when every entry of it is older than the
    // newest of member 0's it has.
    cluster.net.set_cut(cluster.id(2), cluster.id(1), true);
    const WRITES: usize = 100;
    let (acknowledged, seen) = std::thread::scope(|scope| {
        let mut stream = futures_lite::future::block_on(watcher.watch(request)).expect("watch");
        let writers: Vec<_> = [fast, slow, fast, slow, fast, slow]
            .into_iter()
            .enumerate()
            .map(|(writer, shard)| {
                let cluster = &cluster;
                scope.spawn(move || {
                    (0..WRITES)
                        .map(|n| {
                            let key = key_of(&format!("raced/{writer}/{n}/"), shard);
                            put(cluster, &key, 0);
                            key
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let acknowledged: BTreeSet<Vec<u8>> = writers
            .into_iter()
            .flat_map(|w| w.join().expect("writer"))
            .collect();
        cluster.net.set_cut(cluster.id(2), cluster.id(1), false);
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while seen.len() < acknowledged.len() && Instant::now() < deadline {
            let batch = futures_lite::future::block_on(futures_lite::future::or(
                async { Some(stream.next().await) },
                async {
                    keel_tests::timeout(Duration::from_secs(1)).await;
                    None
                },
            ));
            if let Some(Ok(keel_engine::shard::WatchBatch::Events(events))) = batch {
                seen.extend(events.into_iter().map(|e| (e.kv.mod_revision, e.kv.key)));
            }
        }
        (acknowledged, seen)
    });
    for pair in seen.windows(2) {
        assert!(
            pair[0].0 < pair[1].0,
            "events out of order: {:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
    let keys: BTreeSet<Vec<u8>> = seen.into_iter().map(|(_, key)| key).collect();
    assert_eq!(keys, acknowledged, "the watch missed or invented writes");
}

#[test]
fn a_merged_watch_goes_on_after_its_member_was_cut_off_longer_than_a_read_waits() {
    let cluster = InProcessCluster::start(3, SHARDS, CORES, 59);
    let leaders = wait_until_every_member_leads(&cluster, Duration::from_secs(20));
    let member = 1;
    // The watching member leads a shard (whose close will find no
    // majority), and another member leads one.
    assert!(leaders.contains(&member));
    let other = (0..SHARDS)
        .find(|s| leaders[*s] != member)
        .expect("another leads one");
    let client = cluster.node(member).expect("running").client();
    let request = keel_engine::mvcc::WatchRequest {
        key: b"watched/".to_vec(),
        range_end: prefix_end("watched/"),
        ..Default::default()
    };
    let mut stream = futures_lite::future::block_on(client.watch(request)).expect("watch");
    // Written where the watching member does not lead: the shard it leads
    // must be asked to close it.
    let before = put(&cluster, &key_of("before/", other), 0);
    // Cut off while every shard is asked to close `before`: a shard it led
    // has no majority for its round, past the 5 s a ReadIndex waits.
    cluster
        .net
        .isolate(cluster.id(member), &cluster.ids(), true);
    stream.request_progress(before);
    std::thread::sleep(Duration::from_secs(7));
    cluster
        .net
        .isolate(cluster.id(member), &cluster.ids(), false);
    // With nothing more written, the progress asked for comes: the close
    // that expired while cut off was asked again (nobody else would ask).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut progress = None;
    while progress.is_none() && Instant::now() < deadline {
        let batch = futures_lite::future::block_on(futures_lite::future::or(
            async { Some(stream.next().await) },
            async {
                keel_tests::timeout(Duration::from_millis(500)).await;
                None
            },
        ));
        match batch {
            Some(Ok(keel_engine::shard::WatchBatch::Progress(at))) => progress = Some(at),
            Some(Ok(keel_engine::shard::WatchBatch::Events(events))) => {
                panic!("events nobody wrote: {events:?}")
            }
            Some(other) => panic!("{other:?}"),
            None => {}
        }
    }
    assert_eq!(
        progress,
        Some(before),
        "the watch stalled after its member was cut off"
    );
}

#[test]
fn a_moved_leader_stays_put_and_a_drained_member_leads_nothing_until_undrained() {
    let cluster = InProcessCluster::start(3, SHARDS, CORES, 61);
    let leaders = wait_until_every_member_leads(&cluster, Duration::from_secs(20));
    let client = cluster.node(0).expect("running").client();
    // Shard 0 moved to a member that does not lead it, from member 0.
    let shard = 0;
    let to = (leaders[shard] + 1) % 3;
    let moved = with_timeout_long(client.move_leader(shard, cluster.id(to)));
    assert!(moved, "leadership did not reach member {to}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(leader_now(&cluster, shard), to, "the spread moved it back");
    // Every member's status shows the pin and the shard's three voters.
    for member in 0..3 {
        let status = &cluster.status(member).expect("status")[shard];
        assert_eq!(status.pinned_leader, cluster.id(to));
        assert_eq!(status.voters.len(), 3);
        assert!(status.learners.is_empty());
    }
    // Writes go on to the moved shard.
    put(&cluster, &key_of("moved/", shard), 0);

    // Member 1 drained: it leads nothing, for as long as it stays drained,
    // and writes to every shard go on.
    let drained = 1;
    let before = cluster.wait_for_leaders(Duration::from_secs(20));
    let done = with_timeout_long(client.drain(cluster.id(drained)));
    assert!(done, "member {drained} still leads a shard");
    std::thread::sleep(Duration::from_secs(3));
    let now = cluster.wait_for_leaders(Duration::from_secs(20));
    assert!(!now.contains(&drained), "a drained member leads: {now:?}");
    // Only the shards it led moved.
    for shard in (0..SHARDS).filter(|s| before[*s] != drained) {
        assert_eq!(
            now[shard], before[shard],
            "shard {shard} moved: {before:?} -> {now:?}"
        );
    }
    let status = cluster.status(0).expect("status");
    assert!(status
        .iter()
        .all(|s| s.avoided == vec![cluster.id(drained)]));
    for shard in 0..SHARDS {
        put(&cluster, &key_of("drained/", shard), 0);
    }
    // Some member must be left to lead.
    with_timeout_long(client.drain(cluster.id(0)));
    let last = futures_lite::future::block_on(client.drain(cluster.id(2)));
    assert!(
        matches!(last, Err(NodeError::InvalidRequest(_))),
        "draining every member: {last:?}"
    );
    with_timeout_long(client.undrain(cluster.id(0)));
    // Undrained: it leads again where the spread (or a pin) says.
    with_timeout_long(client.undrain(cluster.id(drained)));
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cluster
        .wait_for_leaders(Duration::from_secs(20))
        .contains(&drained)
    {
        assert!(
            Instant::now() < deadline,
            "member {drained} never led again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a call that may wait for leadership to move (up to 10 s).
fn with_timeout_long<T, E: std::fmt::Debug>(
    call: impl std::future::Future<Output = Result<T, E>>,
) -> T {
    futures_lite::future::block_on(futures_lite::future::or(
        async { Some(call.await) },
        async {
            keel_tests::timeout(Duration::from_secs(15)).await;
            None
        },
    ))
    .expect("answered within 15 s")
    .expect("done")
}
