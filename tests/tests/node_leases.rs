//! Leases across shards: keys on every shard attach to one lease; revoke
//! and expiry delete them everywhere; a put naming a dead lease fails on
//! any shard; expiry goes on across a restart; a revoke cut short by a
//! crash finishes when the node starts again.

use std::time::{Duration, Instant};

use futures_lite::future::block_on;
use keel_engine::btree::Options;
use keel_engine::mvcc::{
    Entry, KvError, LeaseHomes, LeaseTask, LeaseTaskKind, PutRequest, RangeRequest, Store,
};
use keel_engine::routing::shard_of;
use keel_engine::shard::{home_of_lease, Consistency, Node, NodeError};
use keel_tests::node_config;

const SHARDS: usize = 4;

/// Keys named so that every shard holds some.
fn keys_on_every_shard(prefix: &str) -> Vec<Vec<u8>> {
    let keys: Vec<Vec<u8>> = (0..16)
        .map(|i| format!("{prefix}/{i:02}").into_bytes())
        .collect();
    for shard in 0..SHARDS {
        assert!(
            keys.iter().any(|k| shard_of(k, SHARDS) == shard),
            "shard {shard} holds none of the keys"
        );
    }
    keys
}

fn put(node: &Node, key: &[u8], lease: i64) -> Result<u64, NodeError> {
    block_on(node.put(PutRequest {
        key: key.to_vec(),
        value: b"v".to_vec(),
        lease,
        ..PutRequest::default()
    }))
    .map(|applied| applied.revision)
}

fn present(node: &Node, prefix: &str) -> Vec<Vec<u8>> {
    let mut end = prefix.as_bytes().to_vec();
    end.push(b'0');
    let request = RangeRequest {
        key: format!("{prefix}/").into_bytes(),
        range_end: end,
        keys_only: true,
        ..RangeRequest::default()
    };
    let (_, found) = block_on(node.range(request, Consistency::Linearizable)).expect("range");
    found.kvs.into_iter().map(|kv| kv.key).collect()
}

fn is_lease_not_found(result: Result<u64, NodeError>) -> bool {
    matches!(result, Err(NodeError::Kv(KvError::LeaseNotFound(_))))
}

#[test]
fn a_lease_spans_shards_and_its_revoke_clears_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(node_config(dir.path(), SHARDS, 2)).unwrap();
    let client = node.client();
    let lease = block_on(client.lease_grant(0, 60)).unwrap();
    let other = block_on(client.lease_grant(0, 60)).unwrap();
    assert_ne!(
        home_of_lease(lease, SHARDS),
        home_of_lease(other, SHARDS),
        "homes go round"
    );
    let keys = keys_on_every_shard("svc");
    for key in &keys {
        put(&node, key, lease).unwrap();
    }
    put(&node, b"svc/kept", other).unwrap();
    let status = block_on(client.lease_time_to_live(lease, true))
        .unwrap()
        .expect("lease");
    assert_eq!(status.keys, keys);
    assert_eq!(status.granted_ttl, 60);
    assert!(status.remaining > 55);
    assert_eq!(block_on(client.lease_keep_alive(lease)).unwrap(), 60);
    let listed: Vec<i64> = block_on(client.leases())
        .unwrap()
        .iter()
        .map(|l| l.id)
        .collect();
    let mut expected = vec![lease, other];
    expected.sort();
    assert_eq!(listed, expected);

    block_on(client.lease_revoke(lease)).unwrap();
    assert_eq!(present(&node, "svc"), vec![b"svc/kept".to_vec()]);
    assert_eq!(
        block_on(client.lease_time_to_live(lease, true)).unwrap(),
        None
    );
    for key in &keys {
        assert!(
            is_lease_not_found(put(&node, key, lease)),
            "put with a revoked lease"
        );
    }
    assert!(is_lease_not_found(put(&node, b"never", 424242)));
    assert!(matches!(
        block_on(client.lease_revoke(lease)),
        Err(NodeError::Kv(KvError::LeaseNotFound(_)))
    ));
    node.shutdown();
}

#[test]
fn leases_expire_across_shards_while_the_node_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(node_config(dir.path(), SHARDS, 2)).unwrap();
    let short = block_on(node.client().lease_grant(0, 2)).unwrap();
    let long = block_on(node.client().lease_grant(0, 600)).unwrap();
    let keys = keys_on_every_shard("eph");
    for key in &keys {
        put(&node, key, short).unwrap();
    }
    put(&node, b"eph/long", long).unwrap();
    node.shutdown();

    // Down for longer than the short TTL; after the restart the lease runs
    // out its TTL again (as etcd does) and then goes, on every shard.
    std::thread::sleep(Duration::from_millis(2500));
    let node = Node::start(node_config(dir.path(), SHARDS, 2)).unwrap();
    assert_eq!(
        present(&node, "eph").len(),
        keys.len() + 1,
        "still there at start"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while present(&node, "eph").len() > 1 {
        assert!(Instant::now() < deadline, "the short lease never expired");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(present(&node, "eph"), vec![b"eph/long".to_vec()]);
    for key in &keys {
        assert!(is_lease_not_found(put(&node, key, short)), "expired lease");
    }
    assert_eq!(
        block_on(node.client().lease_time_to_live(short, false)).unwrap(),
        None
    );
    node.shutdown();
}

/// Leaves lease `id` (grant revision 1) on every shard but its home, each
/// mirror holding the keys of `keys` on its shard: what an earlier grant's
/// mirrors look like when its revoke never reached them.
fn stale_mirrors(node: &Node, id: i64, keys: &[Vec<u8>]) -> usize {
    let home = home_of_lease(id, SHARDS);
    let task = LeaseTask {
        id,
        kind: LeaseTaskKind::Grant,
        ttl: 600,
        granted_revision: 1,
    };
    for shard in (0..SHARDS).filter(|s| *s != home) {
        let entry = Entry::LeaseMirror { tasks: vec![task] };
        block_on(node.write_to(shard, entry)).unwrap();
    }
    let mut attached = 0;
    for key in keys.iter().filter(|k| shard_of(k, SHARDS) != home) {
        put(node, key, id).unwrap();
        attached += 1;
    }
    attached
}

/// The home applied a revoke and a crash came before any mirror heard of
/// it: the task the revoke recorded on the home is carried to the mirrors
/// once the node is back, and their keys go.
///
/// The state is made by applying the revoke to the home's tree file while
/// the node is down, at the tree's last applied index: as if the crash
/// came after the home applied it and before its task's round began.
#[test]
fn a_revoke_cut_short_by_a_crash_reaches_the_mirrors_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_on_every_shard("cut");
    let lease = {
        let node = Node::start(node_config(dir.path(), SHARDS, 2)).unwrap();
        let lease = block_on(node.client().lease_grant(0, 600)).unwrap();
        for key in &keys {
            put(&node, key, lease).unwrap();
        }
        node.shutdown();
        lease
    };
    let home = home_of_lease(lease, SHARDS);
    {
        let path = dir.path().join(format!("shard-{home:03}/kv.db"));
        let mut store = Store::open(path, Options::default()).unwrap();
        store.set_lease_homes(LeaseHomes {
            shard: home,
            shards: SHARDS,
        });
        let (index, revision) = (
            store.applied_index(),
            store.current_revision() + SHARDS as u64,
        );
        store
            .apply(index, revision, &Entry::LeaseRevoke { id: lease })
            .unwrap();
        assert_eq!(store.lease_tasks(None, 10).unwrap().len(), 1);
    }

    let node = Node::start(node_config(dir.path(), SHARDS, 2)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !present(&node, "cut").is_empty() {
        assert!(Instant::now() < deadline, "the mirrors kept the keys");
        std::thread::sleep(Duration::from_millis(20));
    }
    for shard in 0..SHARDS {
        let held = block_on(node.client().shard_leases(shard)).unwrap();
        assert!(held.iter().all(|l| l.id != lease), "shard {shard} kept it");
    }
    for key in &keys {
        assert!(is_lease_not_found(put(&node, key, lease)));
    }
    node.shutdown();
}

/// Regression (found in review): granting an id again while a stale
/// mirror of the earlier lease was left on another shard adopted the
/// mirror, keys and all.
#[test]
fn a_grant_replaces_a_stale_mirror_and_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(node_config(dir.path(), SHARDS, 2)).unwrap();
    let lease = 4242;
    let keys = keys_on_every_shard("old");
    assert!(stale_mirrors(&node, lease, &keys) > 0);
    block_on(node.client().lease_grant(lease, 600)).unwrap();
    assert_eq!(
        present(&node, "old"),
        Vec::<Vec<u8>>::new(),
        "stale keys went"
    );
    let status = block_on(node.client().lease_time_to_live(lease, true))
        .unwrap()
        .expect("granted again");
    assert!(status.keys.is_empty());
    for key in &keys {
        put(&node, key, lease).unwrap();
    }
    node.shutdown();
}
