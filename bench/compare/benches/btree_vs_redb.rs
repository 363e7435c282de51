//! keel's B+-tree file beside redb, same data, same machine, same run.
//!
//! `cargo bench -p keel-bench-compare --bench btree_vs_redb`. Files go to
//! `$KEEL_BENCH_DIR` (default: the system temp directory).
//!
//! Data: 1M random 16-byte keys with 256-byte values.
//! - bulk load in commits of 1,000 (each sample loads all 1M into a new file);
//! - random point reads, warm;
//! - range scans of 1,000 keys from a random start;
//! - single small commits (one insert, durable), on the loaded file;
//! - churn: every key overwritten 10 times in commits of 1,000, reported with
//!   the file size before and after (one run, printed at the end).
//!
//! redb commits with one fsync by default (checksummed commit slots) and
//! with two when two-phase commit is on; keel has the same two choices
//! (`CommitSync::OneSync`, `CommitSync::TwoSyncs`). Loads and reads use
//! keel one-sync and redb default; small commits compare all four.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use keel_engine::btree::{CommitSync, Database, Options};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redb::TableDefinition;

const VALUE_LEN: usize = 256;
const BATCH: usize = 1_000;
const SCAN_LEN: usize = 1_000;
const CHURN_ROUNDS: usize = 10;
const TREE: &[u8] = b"bench";
const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("bench");

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var_os("KEEL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    tempfile::tempdir_in(base).expect("bench directory")
}

/// 1M unless `KEEL_BENCH_KEYS` says otherwise (for a quick look).
fn key_count() -> usize {
    std::env::var("KEEL_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn keys(seed: u64, count: usize) -> Vec<[u8; 16]> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count).map(|_| rng.gen()).collect()
}

fn value(i: usize, round: usize) -> [u8; VALUE_LEN] {
    [(i + round) as u8; VALUE_LEN]
}

/// The two engines behind one interface, so every benchmark runs the same
/// code path for both.
trait Engine {
    fn name(&self) -> &'static str;
    fn load(&self, keys: &[[u8; 16]], round: usize);
    fn get_many(&self, keys: &[[u8; 16]]) -> usize;
    fn scan(&self, start: &[u8], len: usize) -> usize;
    fn small_commit(&self, key: &[u8]);
    fn file_size(&self) -> u64;
}

struct Keel {
    db: Database,
    path: PathBuf,
    label: &'static str,
}

impl Keel {
    fn create(dir: &Path, commit_sync: CommitSync) -> Keel {
        let path = dir.join("keel.db");
        let options = Options {
            commit_sync,
            ..Options::default()
        };
        let db = Database::open(&path, options).expect("open keel");
        let label = match commit_sync {
            CommitSync::TwoSyncs => "keel_two_syncs",
            CommitSync::OneSync => "keel_one_sync",
        };
        Keel { db, path, label }
    }
}

impl Engine for Keel {
    fn name(&self) -> &'static str {
        self.label
    }

    fn load(&self, keys: &[[u8; 16]], round: usize) {
        for (n, chunk) in keys.chunks(BATCH).enumerate() {
            let mut txn = self.db.begin_write().expect("write");
            let mut tree = txn.tree(TREE).expect("tree");
            for (i, key) in chunk.iter().enumerate() {
                tree.insert(key, &value(n * BATCH + i, round))
                    .expect("insert");
            }
            txn.commit().expect("commit");
        }
    }

    fn get_many(&self, keys: &[[u8; 16]]) -> usize {
        let txn = self.db.begin_read().expect("read");
        let tree = txn.tree(TREE).expect("tree").expect("loaded");
        keys.iter()
            .map(|k| tree.get(k).expect("get").map_or(0, <[u8]>::len))
            .sum()
    }

    fn scan(&self, start: &[u8], len: usize) -> usize {
        let txn = self.db.begin_read().expect("read");
        let tree = txn.tree(TREE).expect("tree").expect("loaded");
        tree.range(Bound::Included(start), Bound::Unbounded)
            .expect("range")
            .take(len)
            .map(|e| e.expect("entry").1.len())
            .sum()
    }

    fn small_commit(&self, key: &[u8]) {
        let mut txn = self.db.begin_write().expect("write");
        txn.tree(TREE)
            .expect("tree")
            .insert(key, &[7u8; VALUE_LEN])
            .expect("insert");
        txn.commit().expect("commit");
    }

    fn file_size(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }
}

struct Redb {
    db: redb::Database,
    path: PathBuf,
    two_phase: bool,
    label: &'static str,
}

impl Redb {
    fn create(dir: &Path, two_phase: bool) -> Redb {
        let path = dir.join(if two_phase {
            "redb-2pc.redb"
        } else {
            "redb.redb"
        });
        let db = redb::Database::create(&path).expect("open redb");
        let label = if two_phase { "redb_two_phase" } else { "redb" };
        Redb {
            db,
            path,
            two_phase,
            label,
        }
    }

    fn begin_write(&self) -> redb::WriteTransaction {
        let mut txn = self.db.begin_write().expect("write");
        txn.set_two_phase_commit(self.two_phase);
        txn
    }
}

impl Engine for Redb {
    fn name(&self) -> &'static str {
        self.label
    }

    fn load(&self, keys: &[[u8; 16]], round: usize) {
        for (n, chunk) in keys.chunks(BATCH).enumerate() {
            let txn = self.begin_write();
            {
                let mut table = txn.open_table(TABLE).expect("table");
                for (i, key) in chunk.iter().enumerate() {
                    table
                        .insert(&key[..], &value(n * BATCH + i, round)[..])
                        .expect("insert");
                }
            }
            txn.commit().expect("commit");
        }
    }

    fn get_many(&self, keys: &[[u8; 16]]) -> usize {
        let txn = self.db.begin_read().expect("read");
        let table = txn.open_table(TABLE).expect("table");
        keys.iter()
            .map(|k| {
                table
                    .get(&k[..])
                    .expect("get")
                    .map_or(0, |v| v.value().len())
            })
            .sum()
    }

    fn scan(&self, start: &[u8], len: usize) -> usize {
        let txn = self.db.begin_read().expect("read");
        let table = txn.open_table(TABLE).expect("table");
        table
            .range(start..)
            .expect("range")
            .take(len)
            .map(|e| e.expect("entry").1.value().len())
            .sum()
    }

    fn small_commit(&self, key: &[u8]) {
        let txn = self.begin_write();
        txn.open_table(TABLE)
            .expect("table")
            .insert(key, &[7u8; VALUE_LEN][..])
            .expect("insert");
        txn.commit().expect("commit");
    }

    fn file_size(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }
}

/// keel (one sync) and redb (default, one sync) carry the loaded data for
/// reads; keel with two syncs and redb with two-phase commit join for the
/// small-commit comparison.
fn engines(dir: &Path) -> Vec<Box<dyn Engine>> {
    let sub = |name: &str| {
        let path = dir.join(name);
        std::fs::create_dir_all(&path).expect("dir");
        path
    };
    vec![
        Box::new(Keel::create(&sub("keel1"), CommitSync::OneSync)),
        Box::new(Redb::create(&sub("redb"), false)),
        Box::new(Keel::create(&sub("keel2"), CommitSync::TwoSyncs)),
        Box::new(Redb::create(&sub("redb2"), true)),
    ]
}

fn comparisons(c: &mut Criterion) {
    let root = bench_dir();
    let count = key_count();
    let data = keys(1, count);
    let probe = &data;

    let mut group = c.benchmark_group("bulk_load_in_commits_of_1000");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(1));
    group.measurement_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(count as u64));
    for (n, make) in [("keel_one_sync", 0), ("keel_two_syncs", 2), ("redb", 1)] {
        group.bench_function(n, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    let dir = tempfile::tempdir_in(root.path()).expect("dir");
                    let engine: Box<dyn Engine> = match make {
                        0 => Box::new(Keel::create(dir.path(), CommitSync::OneSync)),
                        2 => Box::new(Keel::create(dir.path(), CommitSync::TwoSyncs)),
                        _ => Box::new(Redb::create(dir.path(), false)),
                    };
                    let start = Instant::now();
                    engine.load(&data, i as usize);
                    total += start.elapsed();
                }
                total
            })
        });
    }
    group.finish();

    // One loaded file per engine for the rest.
    let loaded = engines(root.path());
    for engine in &loaded {
        engine.load(&data, 0);
    }

    let mut group = c.benchmark_group("point_read_warm");
    group.throughput(Throughput::Elements(1));
    for engine in &loaded[..2] {
        group.bench_function(engine.name(), |b| {
            let mut rng = StdRng::seed_from_u64(2);
            b.iter_custom(|iters| {
                let picks: Vec<[u8; 16]> =
                    (0..iters).map(|_| probe[rng.gen_range(0..count)]).collect();
                let start = Instant::now();
                let found = engine.get_many(&picks);
                let elapsed = start.elapsed();
                assert_eq!(
                    found,
                    picks.len() * VALUE_LEN,
                    "every probe is a loaded key"
                );
                elapsed
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("range_scan_1000");
    group.throughput(Throughput::Elements(SCAN_LEN as u64));
    for engine in &loaded[..2] {
        group.bench_function(engine.name(), |b| {
            let mut rng = StdRng::seed_from_u64(3);
            b.iter(|| {
                let start: [u8; 16] = rng.gen();
                engine.scan(&start, SCAN_LEN)
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("small_commit_durable");
    group.sample_size(30);
    for engine in &loaded {
        group.bench_with_input(
            BenchmarkId::from_parameter(engine.name()),
            engine,
            |b, engine| {
                let mut rng = StdRng::seed_from_u64(4);
                b.iter(|| {
                    let key: [u8; 16] = rng.gen();
                    engine.small_commit(&key)
                })
            },
        );
    }
    group.finish();

    for engine in &loaded[..2] {
        let before = engine.file_size();
        let start = Instant::now();
        for round in 1..=CHURN_ROUNDS {
            engine.load(&data, round);
        }
        let elapsed = start.elapsed();
        let after = engine.file_size();
        println!(
            "churn {}: {} overwrites in {:.1} s ({:.0} K/s); file {:.1} MiB after one load, {:.1} MiB after churn ({:.2}x)",
            engine.name(),
            count * CHURN_ROUNDS,
            elapsed.as_secs_f64(),
            (count * CHURN_ROUNDS) as f64 / elapsed.as_secs_f64() / 1e3,
            before as f64 / (1 << 20) as f64,
            after as f64 / (1 << 20) as f64,
            after as f64 / before as f64,
        );
    }
}

criterion_group!(benches, comparisons);
criterion_main!(benches);
