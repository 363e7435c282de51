//! Durable writes and reads per second through a [`Node`] with S=1 and S=2
//! shards (one core each). Writes go to scattered keys, so with S=2 they
//! spread over both shards; each is acknowledged only once its WAL record
//! is synced and applied. Reads are point gets of preloaded keys,
//! linearizable (ReadIndex) and serializable.
//!
//! Clients run either on a third thread (`put/`, `get_*/`: it competes with
//! the shards for the CPUs) or on the node's own cores beside the shards,
//! shard-aware (`*_in_core/`), as the server's connections will.
//!
//! `cargo bench -p keel-bench --bench node`. Files go to `$KEEL_BENCH_DIR`;
//! `KEEL_BENCH_NODE_KEYS` sets the preloaded keys (default 100,000).
#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use keel_bench::bench_dir;
use keel_bench::node_load::{run_on_cores, scattered_key, Clients};
use keel_engine::mvcc::{PutRequest, RangeRequest};
use keel_engine::routing::shard_of;
use keel_engine::shard::{Consistency, Node, NodeConfig};

/// Concurrent writers: enough to fill a WAL group commit on each shard.
const WRITE_CLIENTS: usize = 256;
/// Concurrent readers.
const READ_CLIENTS: usize = 64;

fn preloaded_keys() -> u64 {
    std::env::var("KEEL_BENCH_NODE_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

async fn put(node: Arc<Node>, key: Vec<u8>) {
    let request = PutRequest {
        key,
        value: vec![b'v'; 100],
        ..PutRequest::default()
    };
    node.put(request).await.expect("put");
}

/// The preloaded keys' numbers, by the core that owns their shard.
fn keys_by_core(keys: u64, shards: usize, cores: usize) -> Vec<Vec<u64>> {
    let mut owned = vec![Vec::new(); cores];
    for i in 0..keys {
        let shard = shard_of(&keel_bench::shard_load::key(i), shards);
        owned[shard % cores].push(i);
    }
    owned
}

/// Operation `i`'s key among `owned` (scattered).
fn pick(owned: &[u64], i: u64) -> Vec<u8> {
    let at = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % owned.len() as u64;
    keel_bench::shard_load::key(owned[at as usize])
}

fn node_benches(c: &mut Criterion) {
    let keys = preloaded_keys();
    let clients = Clients::new();
    for shards in [1usize, 2] {
        let dir = bench_dir();
        let node = Arc::new(
            Node::start(NodeConfig {
                shards,
                cores: shards,
                pin: true,
                ..NodeConfig::new(dir.path())
            })
            .expect("start node"),
        );
        // Every key once, so reads hit.
        clients.run(&node, WRITE_CLIENTS, keys, move |node, i| {
            put(node, keel_bench::shard_load::key(i))
        });

        let mut group = c.benchmark_group("node");
        group.throughput(Throughput::Elements(1));
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(10));
        group.bench_function(format!("put/S={shards}"), |b| {
            b.iter_custom(|ops| {
                clients.run(&node, WRITE_CLIENTS, ops, move |node, i| {
                    put(node, scattered_key(i, keys))
                })
            });
        });
        // The same with the clients on the node's own cores, as the server's
        // connections will be, so no third thread competes for the CPUs.
        // The clients are shard-aware: each core's clients use keys of the
        // shards on that core, as the shard-aware client sends each request
        // to its shard's core.
        let owned = Arc::new(keys_by_core(keys, shards, node.core_count()));
        let local = owned.clone();
        group.bench_function(format!("put_in_core/S={shards}"), |b| {
            b.iter_custom(|ops| {
                let owned = local.clone();
                run_on_cores(&node, WRITE_CLIENTS / shards, ops, move |node, core, i| {
                    let key = pick(&owned[core], i);
                    async move {
                        let request = PutRequest {
                            key,
                            value: vec![b'v'; 100],
                            ..PutRequest::default()
                        };
                        let client = node.via_core(core).expect("core");
                        client.put(request).await.expect("put");
                    }
                })
            });
        });
        for consistency in [Consistency::Linearizable, Consistency::Serializable] {
            let name = format!("get_{consistency:?}_in_core/S={shards}").to_lowercase();
            let local = owned.clone();
            group.bench_function(name, |b| {
                b.iter_custom(|ops| {
                    let owned = local.clone();
                    run_on_cores(&node, READ_CLIENTS / shards, ops, move |node, core, i| {
                        let key = pick(&owned[core], i);
                        async move {
                            let request = RangeRequest {
                                key,
                                ..RangeRequest::default()
                            };
                            let client = node.via_core(core).expect("core");
                            let (_, found) = client.range(request, consistency).await.expect("get");
                            assert_eq!(found.kvs.len(), 1, "preloaded key");
                        }
                    })
                });
            });
        }
        for (name, consistency) in [
            ("get_linearizable", Consistency::Linearizable),
            ("get_serializable", Consistency::Serializable),
        ] {
            group.bench_function(format!("{name}/S={shards}"), |b| {
                b.iter_custom(|ops| {
                    clients.run(&node, READ_CLIENTS, ops, move |node, i| async move {
                        let request = RangeRequest {
                            key: scattered_key(i, keys),
                            ..RangeRequest::default()
                        };
                        let (_, found) = node.range(request, consistency).await.expect("get");
                        assert_eq!(found.kvs.len(), 1, "preloaded key");
                    })
                });
            });
        }
        group.finish();
        drop(node);
    }
}

criterion_group!(benches, node_benches);
criterion_main!(benches);
