//! Per-operation cost of one shard's keyspace, on a shard of 1M keys
//! (`KEEL_BENCH_KEYS` overrides): put and txn CAS (batches of 1 and of 100
//! entries per commit), get, a prefix range of 100 keys; compaction of 1M
//! revisions in steps of 500 rows carried by batches of 10 puts (the
//! latency of batches with and without a step is printed); one write
//! fanned out to 10,000 watchers of one prefix.
//!
//! `cargo bench -p keel-bench --bench mvcc`. Files go to `$KEEL_BENCH_DIR`
//! (default: the system temp directory).
#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use keel_bench::bench_dir;
use keel_bench::shard_load::{self, key};
use keel_engine::btree::{CommitSync, Options};
use keel_engine::mvcc::{
    prefix_end, Compare, CompareResult, CompareTarget, Entry, PutRequest, RangeRequest, RequestOp,
    Store, TxnRequest, WatchRequest, WatchUpdate,
};

fn keys() -> u64 {
    std::env::var("KEEL_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn options() -> Options {
    Options {
        commit_sync: CommitSync::OneSync,
        ..Options::default()
    }
}

/// A small xorshift, so the benches need no random crate.
struct Keys(u64);

impl Keys {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

fn put(i: u64) -> Entry {
    Entry::Put(PutRequest {
        key: key(i),
        value: vec![b'u'; 100],
        ..Default::default()
    })
}

/// Applies `entries` as one batch at fresh revisions.
fn apply(store: &mut Store, entries: &[Entry]) {
    shard_load::apply_next(store, entries).expect("entries apply");
}

/// A compare-and-swap of key `i` against its current mod revision.
fn cas(store: &Store, i: u64) -> Entry {
    let current = store
        .range(&RangeRequest {
            key: key(i),
            ..Default::default()
        })
        .expect("get");
    let revision = current.kvs.first().map_or(0, |kv| kv.mod_revision);
    Entry::Txn(TxnRequest {
        compare: vec![Compare {
            key: key(i),
            range_end: Vec::new(),
            target: CompareTarget::Mod(revision),
            result: CompareResult::Equal,
        }],
        success: vec![RequestOp::Put(PutRequest {
            key: key(i),
            value: vec![b'c'; 100],
            ..Default::default()
        })],
        failure: Vec::new(),
    })
}

fn operations(c: &mut Criterion) {
    let dir = bench_dir();
    let mut store = Store::open(dir.path().join("kv.db"), options()).expect("open");
    let count = keys();
    let started = Instant::now();
    shard_load::fill(&mut store, count, 1, 100, 10_000).expect("fill");
    eprintln!(
        "loaded {count} keys in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut rng = Keys(0x2545_f491_4f6c_dd1d);

    let mut group = c.benchmark_group(format!("mvcc/{count}_keys"));
    for batch in [1u64, 100] {
        group.throughput(Throughput::Elements(batch));
        group.bench_function(format!("put/batch_{batch}"), |b| {
            b.iter_batched(
                || (0..batch).map(|_| put(rng.next(count))).collect::<Vec<_>>(),
                |entries| apply(&mut store, &entries),
                BatchSize::SmallInput,
            )
        });
        // Each CAS compares the key's mod revision with the one a read just
        // gave (the read is set-up, not measured), then puts.
        let store_cell = std::cell::RefCell::new(&mut store);
        group.bench_function(format!("txn_cas/batch_{batch}"), |b| {
            b.iter_batched(
                || {
                    let store = store_cell.borrow();
                    (0..batch)
                        .map(|_| cas(&store, rng.next(count)))
                        .collect::<Vec<_>>()
                },
                |entries| apply(&mut store_cell.borrow_mut(), &entries),
                BatchSize::SmallInput,
            )
        });
    }
    group.throughput(Throughput::Elements(1));
    group.bench_function("get", |b| {
        b.iter(|| {
            let request = RangeRequest {
                key: key(rng.next(count)),
                ..Default::default()
            };
            store.range(&request).expect("get")
        })
    });
    group.bench_function("prefix_range_100", |b| {
        b.iter(|| {
            let first = key(rng.next(count) / 100 * 100);
            let prefix = first[..first.len() - 2].to_vec();
            let request = RangeRequest {
                range_end: prefix_end(&prefix),
                key: prefix,
                ..Default::default()
            };
            let found = store.range(&request).expect("range");
            assert_eq!(found.kvs.len() as u64, 100.min(count));
            found
        })
    });
    group.finish();
}

/// Rows a compaction step may remove: one step is one pause for applies.
const COMPACT_STEP_ROWS: usize = 500;

/// Puts per apply batch while compaction runs.
const PUTS_PER_BATCH: u64 = 10;

/// Applies one batch of [`PUTS_PER_BATCH`] puts to fresh keys, carrying a
/// compaction step of `compact_rows` (0: none); returns its duration and
/// whether compaction is done.
fn timed_batch(store: &mut Store, next_key: &mut u64, compact_rows: usize) -> (Duration, bool) {
    let entries: Vec<Entry> = (0..PUTS_PER_BATCH)
        .map(|_| {
            *next_key += 1;
            Entry::Put(PutRequest {
                key: format!("new/{next_key:08}").into_bytes(),
                value: vec![b'n'; 100],
                ..Default::default()
            })
        })
        .collect();
    let started = Instant::now();
    let (_, done) =
        shard_load::apply_next_compacting(store, &entries, compact_rows).expect("batch");
    (started.elapsed(), done)
}

/// Milliseconds at quantile `q` of sorted durations.
fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(at).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

fn distribution(name: &str, mut durations: Vec<Duration>) -> Duration {
    durations.sort();
    eprintln!(
        "{name}: {} batches, ms p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
        durations.len(),
        quantile_ms(&durations, 0.5),
        quantile_ms(&durations, 0.99),
        quantile_ms(&durations, 0.999),
        quantile_ms(&durations, 1.0),
    );
    durations.iter().sum()
}

/// Compaction of 1M revisions (`KEEL_BENCH_KEYS`): 100,000 keys written 10
/// times each, 900,000 versions superseded, compacted to the head while
/// writes go on. Compaction rides in the writes' commits
/// (`apply_batch_compacting`, steps of [`COMPACT_STEP_ROWS`] rows), as a
/// shard runs it. Each sample fills a fresh shard (not timed) and times
/// the batches until compaction is done; then as many batches again
/// without compaction, for comparison. Both latency distributions are
/// printed: the difference is the pause compaction causes to applies.
fn compaction(c: &mut Criterion) {
    let revisions = keys();
    let mut with_compaction = Vec::new();
    let mut without = Vec::new();
    let mut removed = 0;
    let mut group = c.benchmark_group("mvcc/compaction");
    group.sample_size(10);
    group.throughput(Throughput::Elements(revisions));
    let name = format!("{revisions}_revisions_in_batches_of_{PUTS_PER_BATCH}_puts");
    group.bench_function(name, |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let dir = bench_dir();
                let mut store = Store::open(dir.path().join("kv.db"), options()).expect("open");
                let head =
                    shard_load::fill(&mut store, revisions / 10, 10, 100, 10_000).expect("fill");
                apply(&mut store, &[Entry::Compact { revision: head }]);
                let mut next_key = 0;
                let mut batches = 0;
                loop {
                    let (took, done) = timed_batch(&mut store, &mut next_key, COMPACT_STEP_ROWS);
                    total += took;
                    with_compaction.push(took);
                    batches += 1;
                    if done {
                        break;
                    }
                }
                for _ in 0..batches {
                    without.push(timed_batch(&mut store, &mut next_key, 0).0);
                }
                let snap = store.database().begin_read().expect("read");
                // Left: each filled key's newest change, and the puts of the
                // timed batches (new keys).
                let history = snap
                    .tree(b"history")
                    .expect("history")
                    .map_or(0, |t| t.len());
                removed += revisions - (history - next_key);
            }
            total
        })
    });
    group.finish();
    let busy = distribution("batch while compacting", with_compaction);
    let idle = distribution("batch alone", without);
    let extra = busy.saturating_sub(idle).as_secs_f64();
    eprintln!(
        "compaction: {removed} history rows removed in all runs; {:.0} per second of added apply time",
        removed as f64 / extra.max(f64::EPSILON)
    );
}

fn watch_fan_out(c: &mut Criterion) {
    let dir = bench_dir();
    let mut store = Store::open(dir.path().join("kv.db"), options()).expect("open");
    let request = WatchRequest {
        key: b"svc/".to_vec(),
        range_end: prefix_end(b"svc/"),
        ..Default::default()
    };
    let watchers: Vec<_> = (0..10_000)
        .map(|_| store.watch(&request).expect("watch"))
        .collect();
    let write = Entry::Put(PutRequest {
        key: b"svc/endpoint".to_vec(),
        value: vec![b'e'; 100],
        ..Default::default()
    });
    let mut group = c.benchmark_group("mvcc/watch");
    group.throughput(Throughput::Elements(watchers.len() as u64));
    group.bench_function("one_write_to_10000_watchers", |b| {
        b.iter(|| {
            apply(&mut store, std::slice::from_ref(&write));
            let mut delivered = 0;
            for id in store.watches_ready() {
                if let Some(WatchUpdate::Events { events, .. }) =
                    store.watch_poll(id, 1 << 20).expect("poll")
                {
                    delivered += events.len();
                }
            }
            assert_eq!(delivered, watchers.len());
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = operations, compaction, watch_fan_out
}
criterion_main!(benches);
