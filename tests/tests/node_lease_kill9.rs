//! Leases across a kill -9: grants, revokes and mass expiry under write
//! load, a SIGKILL at a random moment, and a restart, round after round.
//!
//! The test binary runs itself as a child (selected by an environment
//! variable). The child starts a node of 4 shards on 2 cores and, until it
//! is killed, from several threads:
//! - grants long leases and attaches keys on every shard to them, printing
//!   each grant and each key once acknowledged (`keep`);
//! - grants leases, attaches keys, then revokes them, printing each
//!   acknowledged revoke (`revoked`);
//! - grants bursts of 1-second leases with a key each (`short`), which
//!   expire while it runs;
//! - writes plain keys.
//!
//! The parent kills it with SIGKILL after a random delay, starts the node
//! on the same directory itself (which must work), and checks:
//! - every acknowledged key of a live lease is there, attached to it;
//! - no revoked lease, nor any key of one, is left on any shard;
//! - every short lease and its keys are gone within its TTL plus a second
//!   of the restart (a restart restarts a lease's TTL, as etcd does);
//! - every mirror matches its home, every home lease has its mirrors, and
//!   every key with a lease names a live one.
//!
//! Regression: lease repair read the shards' trees before their WALs were
//! replayed, so a crash shortly after grants failed the next start ("lease
//! … already exists"), or revoked a live lease's mirror with its keys, or
//! left a dead lease's mirrors forever; a grant's or revoke's fan-out to
//! the mirrors lived only in a task on the leader (issue 17).
//!
//! `KEEL_KILL9_ROUNDS` sets the number of rounds (default 6).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_lite::future::block_on;
use keel_engine::mvcc::{Entry, PutRequest, RangeRequest};
use keel_engine::routing::home_of_lease;
use keel_engine::shard::{Node, NodeClient, NodeConfig, TreeSync};
use keel_tests::{node_config, KilledOnDrop};
use rand::{Rng, SeedableRng};

const CHILD_VAR: &str = "KEEL_LEASE_KILL9_CHILD";
const SHARDS: usize = 4;
/// Seconds a short lease lives.
const SHORT_TTL: i64 = 1;

fn rounds() -> usize {
    std::env::var("KEEL_KILL9_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

/// Trees made durable at different moments on each shard, so a crash
/// finds homes and mirrors synced to different points.
fn config(dir: &Path, round: usize) -> NodeConfig {
    NodeConfig {
        tree_sync: TreeSync {
            entries: 200 + 100 * (round as u64 % 3),
            interval: Duration::from_millis(150),
            ..TreeSync::default()
        },
        ..node_config(dir, SHARDS, 2)
    }
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn put(node: &Node, key: &str, lease: i64) -> bool {
    let request = PutRequest {
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
        lease,
        ..PutRequest::default()
    };
    block_on(node.put(request)).is_ok()
}

/// The child: leases and writes from several threads until killed.
fn child(dir: PathBuf, round: usize) {
    let node = Node::start(config(&dir, round)).expect("child node");
    say("started".to_string());
    let node = &node;
    std::thread::scope(|scope| {
        for worker in 0..2 {
            scope.spawn(move || {
                for n in 0.. {
                    let Ok(lease) = block_on(node.client().lease_grant(0, 600)) else {
                        continue;
                    };
                    say(format!("grant {lease}"));
                    for k in 0..4 {
                        let key = format!("keep/{round}/{worker}/{n}/{k}");
                        if put(node, &key, lease) {
                            say(format!("keep {key} {lease}"));
                        }
                    }
                }
            });
            scope.spawn(move || {
                for n in 0.. {
                    let Ok(lease) = block_on(node.client().lease_grant(0, 600)) else {
                        continue;
                    };
                    for k in 0..4 {
                        let key = format!("gone/{round}/{worker}/{n}/{k}");
                        if put(node, &key, lease) {
                            say(format!("doomed {key} {lease}"));
                        }
                    }
                    if block_on(node.client().lease_revoke(lease)).is_ok() {
                        say(format!("revoked {lease}"));
                    }
                }
            });
        }
        scope.spawn(move || {
            for burst in 0.. {
                for n in 0..50 {
                    let Ok(lease) = block_on(node.client().lease_grant(0, SHORT_TTL)) else {
                        continue;
                    };
                    say(format!("short {lease}"));
                    let key = format!("short/{round}/{burst}/{n}");
                    if put(node, &key, lease) {
                        say(format!("shortkey {key} {lease}"));
                    }
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        for worker in 0..2 {
            scope.spawn(move || {
                for n in 0.. {
                    put(node, &format!("load/{round}/{worker}/{n}"), 0);
                }
            });
        }
    });
}

/// What one child acknowledged before it was killed.
#[derive(Default)]
struct Acked {
    granted: BTreeSet<i64>,
    kept: BTreeMap<String, i64>,
    doomed: BTreeMap<String, i64>,
    revoked: BTreeSet<i64>,
    short: BTreeSet<i64>,
    short_keys: BTreeMap<String, i64>,
}

impl Acked {
    fn take(&mut self, line: &str) {
        let words: Vec<&str> = line.split(' ').collect();
        let id = |at: usize| words.get(at).and_then(|w| w.parse::<i64>().ok());
        match (words.first().copied(), id(1), id(2)) {
            (Some("grant"), Some(lease), _) => {
                self.granted.insert(lease);
            }
            (Some("revoked"), Some(lease), _) => {
                self.revoked.insert(lease);
            }
            (Some("short"), Some(lease), _) => {
                self.short.insert(lease);
            }
            (Some("keep"), _, Some(lease)) => {
                self.kept.insert(words[1].into(), lease);
            }
            (Some("doomed"), _, Some(lease)) => {
                self.doomed.insert(words[1].into(), lease);
            }
            (Some("shortkey"), _, Some(lease)) => {
                self.short_keys.insert(words[1].into(), lease);
            }
            _ => {}
        }
    }
}

/// Runs a child until killed, at a random moment after it started.
fn run_child(dir: &Path, round: usize, rng: &mut impl Rng) -> Acked {
    let mut child = KilledOnDrop::test_child(
        "leases_survive_kill_9_during_grants_revokes_and_expiry",
        CHILD_VAR,
        format!("{}|{round}", dir.display()),
    );
    let stdout = child.stdout();
    let (started, first) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut acked = Acked::default();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.ends_with("started") {
                let _ = started.send(());
            }
            acked.take(&line);
        }
        acked
    });
    first
        .recv_timeout(Duration::from_secs(60))
        .expect("the child never started");
    std::thread::sleep(Duration::from_millis(rng.gen_range(300..2500)));
    child.kill();
    reader.join().expect("reader")
}

/// Every key, with its lease.
fn keys(node: &Node) -> BTreeMap<String, i64> {
    let all = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        keys_only: true,
        ..RangeRequest::default()
    };
    let (_, found) = block_on(node.range(all, keel_engine::shard::Consistency::Linearizable))
        .expect("read everything");
    found
        .kvs
        .into_iter()
        .map(|kv| (String::from_utf8_lossy(&kv.key).into_owned(), kv.lease))
        .collect()
}

/// Why the shards' leases do not yet agree, if they do not: a mirror
/// whose home lease is gone or another grant, a home lease missing a
/// mirror, a key naming a lease that is gone.
fn disagreement(client: &NodeClient<'_>, keys: &BTreeMap<String, i64>) -> Option<String> {
    let held: Vec<BTreeMap<i64, u64>> = (0..SHARDS)
        .map(|shard| {
            block_on(client.shard_leases(shard))
                .expect("shard leases")
                .into_iter()
                .map(|l| (l.id, l.granted_revision))
                .collect()
        })
        .collect();
    for (shard, leases) in held.iter().enumerate() {
        for (id, granted) in leases {
            let home = home_of_lease(*id, SHARDS);
            match held[home].get(id) {
                None => return Some(format!("shard {shard} mirrors {id}, gone from home {home}")),
                Some(g) if g != granted => {
                    return Some(format!(
                        "shard {shard} mirrors grant {granted} of {id}, home has {g}"
                    ))
                }
                Some(_) => {}
            }
            if home == shard {
                if let Some(missing) = (0..SHARDS).find(|s| !held[*s].contains_key(id)) {
                    return Some(format!("lease {id} has no mirror on shard {missing}"));
                }
            }
        }
    }
    keys.iter()
        .find(|(_, lease)| {
            **lease != 0 && !held[home_of_lease(**lease, SHARDS)].contains_key(*lease)
        })
        .map(|(key, lease)| format!("{key} names lease {lease}, which is gone"))
}

/// Figures of the whole run, printed at the end.
#[derive(Default, Debug)]
struct Tally {
    rounds: usize,
    kept_keys_checked: usize,
    revoked_leases_checked: usize,
    short_leases_expired: usize,
    slowest_expiry_after_start: Duration,
    slowest_agreement_after_start: Duration,
}

#[test]
fn leases_survive_kill_9_during_grants_revokes_and_expiry() {
    if let Some(spec) = std::env::var_os(CHILD_VAR) {
        let spec = spec.to_string_lossy().into_owned();
        let (dir, round) = spec.rsplit_once('|').expect("child spec");
        child(PathBuf::from(dir), round.parse().expect("round"));
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let mut kept: BTreeMap<String, i64> = BTreeMap::new();
    let mut revoked: BTreeSet<i64> = BTreeSet::new();
    let mut tally = Tally::default();
    for round in 0..rounds() {
        let acked = run_child(dir.path(), round, &mut rng);
        assert!(
            !acked.granted.is_empty(),
            "round {round}: no grant acknowledged"
        );
        kept.extend(acked.kept);
        revoked.extend(acked.revoked.iter().copied());
        let started = Instant::now();
        let node = Node::start(config(dir.path(), round))
            .unwrap_or_else(|e| panic!("round {round}: the node did not start: {e}"));
        let client = node.client();

        // Acknowledged keys of live leases are there, with their lease.
        let found = keys(&node);
        for (key, lease) in &kept {
            assert_eq!(
                found.get(key),
                Some(lease),
                "round {round}: {key} of lease {lease}"
            );
        }
        tally.kept_keys_checked += kept.len();

        // Revoked leases and their keys go; short ones expire; the shards
        // come to agree.
        let deadline = started + Duration::from_secs(SHORT_TTL as u64 + 10);
        let mut expired_at = None;
        loop {
            let found = keys(&node);
            let short_left = acked
                .short_keys
                .keys()
                .filter(|k| found.contains_key(*k))
                .count()
                + acked
                    .short
                    .iter()
                    .filter(|id| {
                        block_on(client.lease_time_to_live(**id, false))
                            .ok()
                            .flatten()
                            .is_some()
                    })
                    .count();
            if short_left == 0 && expired_at.is_none() {
                expired_at = Some(started.elapsed());
            }
            let revoked_left = acked
                .doomed
                .iter()
                .find(|(key, lease)| revoked.contains(lease) && found.contains_key(*key));
            let disagree = disagreement(&client, &found);
            match (short_left, revoked_left, disagree) {
                (0, None, None) => break,
                (short, revoked, disagree) => assert!(
                    Instant::now() < deadline,
                    "round {round}: {short} short leases or keys left, revoked key {revoked:?}, {disagree:?}"
                ),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let agreed = started.elapsed();
        for lease in &revoked {
            assert_eq!(
                block_on(client.lease_time_to_live(*lease, false)).unwrap(),
                None,
                "round {round}: revoked lease {lease} is back"
            );
        }
        let expiry = expired_at.unwrap_or(agreed);
        assert!(
            expiry <= Duration::from_secs(SHORT_TTL as u64 + 1),
            "round {round}: short leases took {expiry:?} after the start to go"
        );
        tally.rounds += 1;
        tally.revoked_leases_checked += revoked.len();
        tally.short_leases_expired += acked.short.len();
        tally.slowest_expiry_after_start = tally.slowest_expiry_after_start.max(expiry);
        tally.slowest_agreement_after_start = tally.slowest_agreement_after_start.max(agreed);
        node.shutdown();
    }
    eprintln!("lease kill -9: {tally:?}");
}

/// A keep-alive of a lease whose stored row holds a checkpointed remaining
/// TTL is answered only once the checkpoint is cleared durably: killed
/// right after the answer, the node brings the lease back with its full
/// TTL, not the old remaining one.
///
/// Regression: the renewal was answered at once and the clearing
/// checkpoint logged at the next 100 ms tick; a crash in between brought
/// the lease back with seconds left, and it expired before its holder's
/// next keep-alive (issue 17).
#[test]
fn a_keep_alive_that_clears_a_checkpoint_is_durable_when_answered() {
    const CHILD: &str = "KEEL_LEASE_RESET_CHILD";
    if let Some(spec) = std::env::var_os(CHILD) {
        let spec = spec.to_string_lossy().into_owned();
        let (dir, lease) = spec.rsplit_once('|').expect("child spec");
        let node = Node::start(config(Path::new(dir), 0)).expect("child node");
        let lease: i64 = lease.parse().expect("lease");
        block_on(node.client().lease_keep_alive(lease)).expect("keep-alive");
        say("renewed".to_string());
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let lease = checkpointed_lease(dir.path());
    for attempt in 0..3 {
        let mut child = KilledOnDrop::test_child(
            "a_keep_alive_that_clears_a_checkpoint_is_durable_when_answered",
            CHILD,
            format!("{}|{lease}", dir.path().display()),
        );
        let mut lines = BufReader::new(child.stdout()).lines();
        let renewed = lines.any(|line| line.is_ok_and(|l| l.ends_with("renewed")));
        child.kill();
        assert!(renewed, "attempt {attempt}: the child never renewed");
        back_with_its_full_ttl(dir.path(), lease, attempt);
    }
}

/// Two keep-alives of a checkpointed lease at once: the second is answered
/// only once the reset the first proposed is durable. The child crashes
/// (abort) the moment the second answer arrives; the lease must come back
/// with its full TTL.
///
/// Regression (review of issue 17): the first keep-alive took the
/// checkpoint flag, so the second was answered at once, before the reset
/// was logged; a crash then brought the lease back with 3 s left.
#[test]
fn two_keep_alives_at_once_are_durable_when_answered() {
    const CHILD: &str = "KEEL_LEASE_RESET_PAIR_CHILD";
    if let Some(spec) = std::env::var_os(CHILD) {
        let spec = spec.to_string_lossy().into_owned();
        let (dir, lease) = spec.rsplit_once('|').expect("child spec");
        let node = Node::start(config(Path::new(dir), 0)).expect("child node");
        let lease: i64 = lease.parse().expect("lease");
        let client = node.client();
        block_on(futures_lite::future::zip(
            async {
                let _ = client.lease_keep_alive(lease).await;
            },
            async {
                client.lease_keep_alive(lease).await.expect("keep-alive");
                say("renewed".to_string());
                // A crash, now: nothing after the answer gets to run.
                std::process::abort();
            },
        ));
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let lease = checkpointed_lease(dir.path());
    for attempt in 0..5 {
        let mut child = KilledOnDrop::test_child(
            "two_keep_alives_at_once_are_durable_when_answered",
            CHILD,
            format!("{}|{lease}", dir.path().display()),
        );
        let mut lines = BufReader::new(child.stdout()).lines();
        let renewed = lines.any(|line| line.is_ok_and(|l| l.ends_with("renewed")));
        let _ = child.0.wait();
        assert!(renewed, "attempt {attempt}: the child never renewed");
        back_with_its_full_ttl(dir.path(), lease, attempt);
    }
}

/// Records a remaining TTL of 3 s for `lease` on its home, as a
/// checkpoint does.
fn checkpoint(node: &Node, lease: i64) {
    let entry = Entry::LeaseCheckpoint {
        checkpoints: vec![(lease, 3)],
    };
    block_on(node.write_to(home_of_lease(lease, SHARDS), entry)).unwrap();
}

/// A lease of 60 s on a node on `dir`, checkpointed with 3 s left.
fn checkpointed_lease(dir: &Path) -> i64 {
    let node = Node::start(config(dir, 0)).unwrap();
    let lease = block_on(node.client().lease_grant(0, 60)).unwrap();
    checkpoint(&node, lease);
    node.shutdown();
    lease
}

/// After the child's renewal and crash: the node on `dir` brings `lease`
/// back with its full TTL, not the checkpointed 3 s; then checkpoints it
/// again for the next attempt.
fn back_with_its_full_ttl(dir: &Path, lease: i64, attempt: usize) {
    let node = Node::start(config(dir, 0)).unwrap();
    let status = block_on(node.client().lease_time_to_live(lease, false))
        .unwrap()
        .expect("the lease lives");
    assert!(
        status.remaining > 50,
        "attempt {attempt}: back with {} s left, not its full 60",
        status.remaining
    );
    checkpoint(&node, lease);
    node.shutdown();
}
