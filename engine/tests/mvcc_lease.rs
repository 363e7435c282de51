//! Leases with a fake clock: expiry decided by the leader and applied as
//! bounded revoke entries, keep-alive, no revival after the deadline,
//! storms, lost proposals, and remaining TTL carried across a leader change
//! by checkpoints.

use std::time::Duration;

use keel_engine::btree::Options;
use keel_engine::mvcc::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

struct Shard {
    store: Store,
    rev: u64,
    _dir: tempfile::TempDir,
}

impl Shard {
    fn new() -> Shard {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("kv.db"), Options::default()).unwrap();
        Shard {
            store,
            rev: 0,
            _dir: dir,
        }
    }

    fn apply(&mut self, entry: &Entry) -> KvResult<Response> {
        self.rev += 1;
        self.store
            .apply(self.rev, self.rev, entry)
            .map(|a| a.response)
    }

    fn grant(&mut self, lessor: &mut Lessor, id: LeaseId, ttl: i64, now: Duration) {
        self.apply(&Entry::LeaseGrant { id, ttl }).unwrap();
        lessor.granted(id, ttl, now);
    }

    fn put(&mut self, key: &str, lease: LeaseId) {
        let put = PutRequest {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            lease,
            ..Default::default()
        };
        self.apply(&Entry::Put(put)).unwrap();
    }

    fn keys(&self) -> Vec<Vec<u8>> {
        let all = RangeRequest {
            key: vec![0],
            range_end: vec![0],
            keys_only: true,
            ..Default::default()
        };
        self.store
            .range(&all)
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| kv.key)
            .collect()
    }

    /// Applies an expiry entry as the leader would, and tells the lessor.
    fn expire(&mut self, lessor: &mut Lessor, entry: Entry) -> Vec<LeaseId> {
        let Response::LeaseExpire { revoked } = self.apply(&entry).unwrap() else {
            panic!("expiry answer")
        };
        let Entry::LeaseExpire { ids } = entry else {
            panic!("expiry entry")
        };
        lessor.revoked(&ids);
        revoked
    }
}

fn leader(shard: &Shard, now: Duration) -> Lessor {
    let mut lessor = Lessor::new(LessorConfig {
        checkpoint_interval: secs(30),
        ..LessorConfig::default()
    });
    lessor.promote(&shard.store.leases().unwrap(), now);
    lessor
}

#[test]
fn a_lease_expires_at_its_ttl_and_takes_its_keys_in_one_revision() {
    let mut shard = Shard::new();
    let mut lessor = leader(&shard, secs(0));
    shard.grant(&mut lessor, 7, 10, secs(0));
    shard.put("a", 7);
    shard.put("b", 7);
    shard.put("c", 0);
    assert_eq!(
        shard.store.lease_keys(7).unwrap(),
        vec![b"a".to_vec(), b"b".to_vec()]
    );
    assert_eq!(lessor.remaining(7, secs(3)), Some(7));
    assert_eq!(lessor.expired(secs(9)), None);
    let entry = lessor.expired(secs(10)).expect("expired at its TTL");
    assert_eq!(entry, Entry::LeaseExpire { ids: vec![7] });
    let before = shard.store.current_revision();
    assert_eq!(shard.expire(&mut lessor, entry), vec![7]);
    assert_eq!(shard.keys(), vec![b"c".to_vec()]);
    assert_eq!(shard.store.lease(7).unwrap(), None);
    // Both deletes carry the one revision of the expiry.
    let at = RangeRequest {
        key: b"a".to_vec(),
        range_end: b"c".to_vec(),
        revision: before,
        ..Default::default()
    };
    assert_eq!(shard.store.range(&at).unwrap().count, 2);
    assert_eq!(shard.store.current_revision(), before + 1);
}

#[test]
fn keep_alive_extends_but_cannot_revive_an_expired_lease() {
    let mut shard = Shard::new();
    let mut lessor = leader(&shard, secs(0));
    shard.grant(&mut lessor, 1, 10, secs(0));
    assert_eq!(lessor.keep_alive(1, secs(8)).unwrap().ttl, 10);
    assert_eq!(lessor.expired(secs(17)), None);
    assert_eq!(lessor.remaining(1, secs(17)), Some(1));
    assert!(lessor.expired(secs(18)).is_some());
    assert!(matches!(
        lessor.keep_alive(1, secs(18)),
        Err(KvError::LeaseNotFound(1))
    ));
    assert!(matches!(
        lessor.keep_alive(99, secs(1)),
        Err(KvError::LeaseNotFound(99))
    ));
}

#[test]
fn an_expiry_storm_goes_out_in_bounded_batches_with_writes_in_between() {
    let mut shard = Shard::new();
    let mut lessor = leader(&shard, secs(0));
    for id in 1..=1000 {
        shard.grant(&mut lessor, id, 5, secs(0));
        shard.put(&format!("k/{id:04}"), id);
    }
    let mut batches = 0;
    let mut revoked = 0;
    while let Some(entry) = lessor.expired(secs(5)) {
        let Entry::LeaseExpire { ids } = &entry else {
            panic!("expiry entry")
        };
        assert!(ids.len() <= 100, "batch of {}", ids.len());
        // At most one expiry in flight: nothing more until this applies.
        assert_eq!(lessor.expired(secs(5)), None);
        revoked += shard.expire(&mut lessor, entry).len();
        batches += 1;
        shard.put("writes/go/on", 0);
    }
    assert_eq!((revoked, batches), (1000, 10));
    assert_eq!(shard.keys(), vec![b"writes/go/on".to_vec()]);
    assert!(shard.store.leases().unwrap().is_empty());
}

#[test]
fn a_lost_expiry_is_proposed_again_after_the_retry_delay() {
    let mut shard = Shard::new();
    let mut lessor = leader(&shard, secs(0));
    shard.grant(&mut lessor, 3, 5, secs(0));
    let first = lessor.expired(secs(5)).unwrap();
    assert_eq!(lessor.expired(secs(6)), None);
    let again = lessor
        .expired(secs(8))
        .expect("re-proposed after retry_after");
    assert_eq!(first, again);
    shard.expire(&mut lessor, again);
    assert_eq!(lessor.expired(secs(20)), None);
}

#[test]
fn remaining_ttl_survives_a_leader_change_through_checkpoints() {
    let mut shard = Shard::new();
    let mut old_leader = leader(&shard, secs(0));
    shard.grant(&mut old_leader, 1, 100, secs(0));
    shard.grant(&mut old_leader, 2, 100, secs(0));
    assert_eq!(
        old_leader.checkpoints(secs(10)),
        None,
        "nothing due before the interval"
    );
    // Lease 2 is kept alive at 50: its checkpoint must say "full TTL".
    old_leader.keep_alive(2, secs(50)).unwrap();
    let checkpoint = old_leader.checkpoints(secs(60)).expect("due");
    assert_eq!(
        checkpoint,
        Entry::LeaseCheckpoint {
            checkpoints: vec![(1, 40), (2, 90)]
        }
    );
    shard.apply(&checkpoint).unwrap();
    assert_eq!(shard.store.lease(1).unwrap().unwrap().remaining_ttl, 40);

    // The leader changes at 61; the new one starts from the checkpoints,
    // not from the full TTL (etcd issues 9888 and 12105).
    old_leader.demote();
    assert_eq!(
        old_leader.expired(secs(1000)),
        None,
        "a follower proposes nothing"
    );
    let mut new_leader = leader(&shard, secs(61));
    assert_eq!(new_leader.remaining(1, secs(61)), Some(40));
    assert_eq!(new_leader.remaining(2, secs(61)), Some(90));
    assert_eq!(new_leader.expired(secs(100)), None);
    assert_eq!(
        new_leader.expired(secs(101)),
        Some(Entry::LeaseExpire { ids: vec![1] })
    );

    // Without checkpoints a leader change would have restarted lease 1 at
    // 100 seconds: a checkpoint of 0 means exactly that.
    shard
        .apply(&Entry::LeaseCheckpoint {
            checkpoints: vec![(1, 0)],
        })
        .unwrap();
    let restarted = leader(&shard, secs(61));
    assert_eq!(restarted.remaining(1, secs(61)), Some(100));
}

#[test]
fn time_to_live_lists_the_attached_keys_and_list_gives_every_lease() {
    let mut shard = Shard::new();
    let mut lessor = leader(&shard, secs(0));
    shard.grant(&mut lessor, 5, 60, secs(0));
    shard.grant(&mut lessor, 6, 60, secs(0));
    shard.put("x", 5);
    shard.put("y", 5);
    shard.put("y", 6);
    assert_eq!(shard.store.lease_keys(5).unwrap(), vec![b"x".to_vec()]);
    assert_eq!(shard.store.lease_keys(6).unwrap(), vec![b"y".to_vec()]);
    let ids: Vec<LeaseId> = shard.store.leases().unwrap().iter().map(|l| l.id).collect();
    assert_eq!(ids, vec![5, 6]);
    assert_eq!(shard.store.lease(5).unwrap().unwrap().ttl, 60);
    assert_eq!(lessor.remaining(5, secs(15)), Some(45));
    shard.apply(&Entry::LeaseRevoke { id: 5 }).unwrap();
    lessor.revoked(&[5]);
    assert_eq!(shard.keys(), vec![b"y".to_vec()]);
    assert!(matches!(
        shard.apply(&Entry::LeaseRevoke { id: 5 }),
        Err(KvError::LeaseNotFound(5))
    ));
}

#[test]
fn a_keep_alive_is_checkpointed_before_the_interval_is_up() {
    let mut shard = Shard::new();
    let mut lessor = leader(&shard, secs(0));
    shard.grant(&mut lessor, 1, 100, secs(0));
    let first = lessor.checkpoints(secs(30)).expect("due at the interval");
    assert_eq!(
        first,
        Entry::LeaseCheckpoint {
            checkpoints: vec![(1, 70)]
        }
    );
    shard.apply(&first).unwrap();
    // Renewed at 40: a new leader must not start it from the 70 recorded
    // at 30, so it is recorded again at once, not at 60.
    lessor.keep_alive(1, secs(40)).unwrap();
    let renewed = lessor
        .checkpoints(secs(41))
        .expect("renewal recorded early");
    assert_eq!(
        renewed,
        Entry::LeaseCheckpoint {
            checkpoints: vec![(1, 99)]
        }
    );
    assert_eq!(lessor.checkpoints(secs(42)), None);
}

#[test]
fn checkpoints_take_turns_when_more_leases_are_renewed_than_one_entry_holds() {
    let mut lessor = Lessor::new(LessorConfig {
        checkpoint_batch: 2,
        ..LessorConfig::default()
    });
    lessor.promote(&[], secs(0));
    for id in 1..=5 {
        lessor.granted(id, 100, secs(0));
    }
    let mut recorded = Vec::new();
    for round in 1..=3 {
        // Every lease is renewed before each entry: without turns the
        // lowest ids would take every entry.
        for id in 1..=5 {
            lessor.keep_alive(id, secs(round)).unwrap();
        }
        match lessor.checkpoints(secs(round)) {
            Some(Entry::LeaseCheckpoint { checkpoints }) => {
                recorded.extend(checkpoints.iter().map(|(id, _)| *id))
            }
            other => panic!("round {round}: {other:?}"),
        }
    }
    assert_eq!(recorded, vec![1, 2, 3, 4, 5, 1]);
}

#[test]
fn keep_alives_move_the_deadline_without_leaving_stale_expiries() {
    let mut lessor = Lessor::new(LessorConfig::default());
    lessor.promote(&[], secs(0));
    lessor.granted(1, 10, secs(0));
    lessor.granted(2, 10, secs(0));
    for t in 1..=1000 {
        lessor.keep_alive(1, Duration::from_millis(t * 10)).unwrap();
    }
    // Lease 1 was last renewed at 10 s: it lives to 20 s; lease 2 expires
    // at 10 s alone.
    assert_eq!(
        lessor.expired(secs(10)),
        Some(Entry::LeaseExpire { ids: vec![2] })
    );
    lessor.revoked(&[2]);
    assert_eq!(lessor.expired(secs(19)), None);
    assert_eq!(
        lessor.expired(secs(20)),
        Some(Entry::LeaseExpire { ids: vec![1] })
    );
}

#[test]
fn unbounded_intervals_mean_never_not_a_panic() {
    let mut shard = Shard::new();
    let mut lessor = Lessor::new(LessorConfig {
        checkpoint_interval: Duration::MAX,
        retry_after: Duration::MAX,
        ..LessorConfig::default()
    });
    lessor.promote(&shard.store.leases().unwrap(), secs(0));
    shard.grant(&mut lessor, 4, 10, secs(0));
    assert_eq!(lessor.checkpoints(secs(5)), None, "never due by time");
    assert!(lessor.expired(secs(10)).is_some());
    assert_eq!(lessor.expired(secs(1000)), None, "never proposed again");
}

/// A renewal of a lease whose stored row holds a checkpointed remaining
/// TTL carries the entry that clears it, once: the replica answers the
/// keep-alive only after that entry applied. Without it, a crash right
/// after the answer would restart the lease from the old, shorter TTL.
#[test]
fn a_keep_alive_of_a_checkpointed_lease_carries_the_reset() {
    let mut shard = Shard::new();
    let mut old = leader(&shard, secs(0));
    shard.grant(&mut old, 1, 100, secs(0));
    shard.grant(&mut old, 2, 100, secs(0));
    shard
        .apply(&Entry::LeaseCheckpoint {
            checkpoints: vec![(1, 40)],
        })
        .unwrap();
    let mut lessor = leader(&shard, secs(10));
    let renewal = lessor.keep_alive(1, secs(11)).unwrap();
    assert_eq!(renewal.ttl, 100);
    let reset = renewal.reset.expect("the checkpoint must be cleared first");
    assert_eq!(
        reset,
        Entry::LeaseCheckpoint {
            checkpoints: vec![(1, 0)]
        }
    );
    shard.apply(&reset).unwrap();
    assert_eq!(shard.store.lease(1).unwrap().unwrap().remaining_ttl, 0);
    // Once cleared, and for a lease never checkpointed: nothing to log.
    assert_eq!(lessor.keep_alive(1, secs(12)).unwrap().reset, None);
    assert_eq!(lessor.keep_alive(2, secs(12)).unwrap().reset, None);
    // A checkpoint this leader records sets it again.
    let due = lessor
        .checkpoints(secs(50))
        .expect("renewed leases are due");
    shard.apply(&due).unwrap();
    assert!(shard.store.lease(1).unwrap().unwrap().remaining_ttl > 0);
    assert!(lessor.keep_alive(1, secs(51)).unwrap().reset.is_some());
}

/// The shard of a node with three shards that is the home of `home`'s
/// leases and mirrors the rest.
fn shard_of_three(home: usize) -> Shard {
    let mut shard = Shard::new();
    shard.store.set_lease_homes(LeaseHomes {
        shard: home,
        shards: 3,
    });
    shard
}

/// A lease id whose home is `shard` of three.
fn homed_on(shard: usize, from: LeaseId) -> LeaseId {
    (from..)
        .find(|id| LeaseHomes { shard, shards: 3 }.is_home(*id))
        .unwrap()
}

#[test]
fn a_home_records_a_task_with_every_grant_revoke_and_expiry() {
    let mut home = shard_of_three(0);
    let (a, b) = (homed_on(0, 10), homed_on(0, 100));
    let elsewhere = homed_on(1, 10);
    home.apply(&Entry::LeaseGrant { id: a, ttl: 30 }).unwrap();
    home.apply(&Entry::LeaseGrant { id: b, ttl: 40 }).unwrap();
    let granted_a = home.store.lease(a).unwrap().unwrap().granted_revision;
    let tasks = home.store.lease_tasks(None, 10).unwrap();
    assert_eq!(
        tasks,
        vec![
            LeaseTask {
                id: a,
                kind: LeaseTaskKind::Grant,
                ttl: 30,
                granted_revision: granted_a
            },
            LeaseTask {
                id: b,
                kind: LeaseTaskKind::Grant,
                ttl: 40,
                granted_revision: granted_a + 1
            },
        ]
    );
    // A grant of a lease homed elsewhere is refused here.
    assert!(matches!(
        home.apply(&Entry::LeaseGrant {
            id: elsewhere,
            ttl: 5
        }),
        Err(KvError::InvalidLease(_))
    ));
    // The revoke replaces the grant's task; done removes only what it
    // names, as it still is.
    home.apply(&Entry::LeaseRevoke { id: a }).unwrap();
    let revoke_a = LeaseTask {
        id: a,
        kind: LeaseTaskKind::Revoke,
        ttl: 30,
        granted_revision: granted_a,
    };
    assert_eq!(home.store.lease_tasks(None, 10).unwrap()[0], revoke_a);
    home.apply(&Entry::LeaseTasksDone {
        tasks: vec![tasks[0], tasks[1]],
    })
    .unwrap();
    assert_eq!(
        home.store.lease_tasks(None, 10).unwrap(),
        vec![revoke_a],
        "the grant task of b went; a's revoke, newer than what was done, stays"
    );
    home.apply(&Entry::LeaseExpire {
        ids: vec![b, elsewhere],
    })
    .unwrap();
    let after_a = home.store.lease_tasks(Some(a), 10).unwrap();
    assert_eq!(after_a.len(), 1);
    assert_eq!(after_a[0].kind, LeaseTaskKind::Revoke);
    assert_eq!(after_a[0].id, b);
}

#[test]
fn a_mirror_follows_its_home_by_grant_revision_and_ignores_what_is_late() {
    let mut mirror = shard_of_three(1);
    let id = homed_on(0, 500);
    let task = |kind, granted_revision| LeaseTask {
        id,
        kind,
        ttl: 60,
        granted_revision,
    };
    let carry = |shard: &mut Shard, tasks: Vec<LeaseTask>| {
        shard.apply(&Entry::LeaseMirror { tasks }).unwrap();
    };
    carry(&mut mirror, vec![task(LeaseTaskKind::Grant, 1000)]);
    mirror.put("svc/a", id);
    // The same grant again, or an older one: nothing changes.
    carry(&mut mirror, vec![task(LeaseTaskKind::Grant, 1000)]);
    carry(&mut mirror, vec![task(LeaseTaskKind::Grant, 900)]);
    assert_eq!(mirror.keys(), vec![b"svc/a".to_vec()]);
    // A revoke of an older grant leaves the newer mirror and its keys.
    carry(&mut mirror, vec![task(LeaseTaskKind::Revoke, 999)]);
    assert_eq!(mirror.keys(), vec![b"svc/a".to_vec()]);
    assert_eq!(
        mirror.store.lease(id).unwrap().unwrap().granted_revision,
        1000
    );
    // The revoke of this grant removes it with its keys, and a put naming
    // it then fails here.
    carry(&mut mirror, vec![task(LeaseTaskKind::Revoke, 1000)]);
    assert!(mirror.keys().is_empty());
    assert_eq!(mirror.store.lease(id).unwrap(), None);
    // A newer grant of the same id replaces a stale mirror and its keys.
    carry(&mut mirror, vec![task(LeaseTaskKind::Grant, 1100)]);
    mirror.put("svc/b", id);
    carry(&mut mirror, vec![task(LeaseTaskKind::Grant, 1200)]);
    assert!(mirror.keys().is_empty(), "the stale mirror's keys went");
    assert_eq!(
        mirror.store.lease(id).unwrap().unwrap().granted_revision,
        1200
    );
    // Tasks of leases homed on this shard are not mirror work.
    let own = homed_on(1, 500);
    carry(
        &mut mirror,
        vec![LeaseTask {
            id: own,
            ..task(LeaseTaskKind::Grant, 5)
        }],
    );
    assert_eq!(mirror.store.lease(own).unwrap(), None);
}
