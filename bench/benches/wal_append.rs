//! Durable appends per second: keel's WAL at 1, 8, 64 and 512 concurrent
//! appenders on one core, beside a plain `write` + `fdatasync` loop of the
//! same record sizes in the same directory.
//!
//! `cargo bench -p keel-bench --bench wal_append`. Files go to
//! `$KEEL_BENCH_DIR` (default: the system temp directory); put it on the disk
//! you want to measure. Criterion reports elements (records) per second.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use keel_wal::{Wal, WalConfig};

const RECORD_SIZES: [usize; 2] = [256, 4096];
const APPENDERS: [u64; 4] = [1, 8, 64, 512];

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var_os("KEEL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    tempfile::tempdir_in(base).expect("create bench directory")
}

/// `iters` appends of `size` bytes spread over `appenders` tasks on one
/// glommio executor; returns the time from the first append to the last ack.
fn keel_appends(dir: &Path, size: usize, appenders: u64, iters: u64) -> Duration {
    let dir = dir.to_path_buf();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let wal = Rc::new(Wal::open(&dir, WalConfig::default()).await.expect("open wal"));
            let payload = Rc::new(vec![0xA5u8; size]);
            let start = Instant::now();
            let tasks: Vec<_> = (0..appenders)
                .map(|task| {
                    let (wal, payload) = (wal.clone(), payload.clone());
                    let share = iters / appenders + u64::from(task < iters % appenders);
                    glommio::spawn_local(async move {
                        for _ in 0..share {
                            let index = wal.next_index();
                            wal.append(index, 1, &payload).await.expect("append");
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await;
            }
            let elapsed = start.elapsed();
            let wal = Rc::try_unwrap(wal).ok().expect("all appenders finished");
            wal.close().await.expect("close wal");
            elapsed
        })
        .expect("spawn executor")
        .join()
        .expect("executor thread")
}

/// The baseline: append `size` bytes with write(2), then fdatasync(2).
fn plain_appends(dir: &Path, size: usize, iters: u64) -> Duration {
    let path = dir.join(format!("plain-{size}.log"));
    let mut file = std::fs::File::create(&path).expect("create plain file");
    let payload = vec![0xA5u8; size];
    let start = Instant::now();
    for _ in 0..iters {
        file.write_all(&payload).expect("write");
        file.sync_data().expect("fdatasync");
    }
    let elapsed = start.elapsed();
    drop(file);
    std::fs::remove_file(&path).expect("remove plain file");
    elapsed
}

fn durable_appends(c: &mut Criterion) {
    let dir = bench_dir();
    for size in RECORD_SIZES {
        let mut group = c.benchmark_group(format!("durable_append_{size}B"));
        group.throughput(Throughput::Elements(1));
        group.sample_size(20);
        group.warm_up_time(Duration::from_secs(1));
        group.measurement_time(Duration::from_secs(4));
        group.bench_function("plain_write_fdatasync", |b| {
            b.iter_custom(|iters| plain_appends(dir.path(), size, iters))
        });
        for appenders in APPENDERS {
            group.bench_with_input(BenchmarkId::new("keel_wal", appenders), &appenders, |b, &n| {
                b.iter_custom(|iters| {
                    let run = tempfile::tempdir_in(dir.path()).expect("run directory");
                    keel_appends(run.path(), size, n, iters)
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, durable_appends);
criterion_main!(benches);
