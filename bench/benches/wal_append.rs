//! Durable appends per second: keel's WAL at 1, 8, 64 and 512 concurrent
//! appenders on one core, beside a plain `write` + `fdatasync` loop of the
//! same record sizes in the same directory.
//!
//! `cargo bench -p keel-bench --bench wal_append`. Files go to
//! `$KEEL_BENCH_DIR` (default: the system temp directory); put it on the disk
//! you want to measure. Criterion reports elements (records) per second.
//!
//! Each configuration keeps one log open across all its samples, as a server
//! does, so the background preparation of the next segment is amortized over
//! the appends the way it is in production.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::mpsc;
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

/// A log on its own executor thread that appends on request.
struct AppendServer {
    requests: mpsc::Sender<u64>,
    timings: mpsc::Receiver<Duration>,
    thread: Option<glommio::ExecutorJoinHandle<()>>,
}

impl AppendServer {
    fn start(dir: &Path, size: usize, appenders: u64) -> AppendServer {
        let dir = dir.to_path_buf();
        let (requests, request_rx) = mpsc::channel::<u64>();
        let (timing_tx, timings) = mpsc::channel();
        let thread = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(move || async move {
                let wal = Rc::new(
                    Wal::open(&dir, WalConfig::default())
                        .await
                        .expect("open wal"),
                );
                let payload = Rc::new(vec![0xA5u8; size]);
                while let Ok(iters) = request_rx.recv() {
                    let elapsed = append_concurrently(&wal, &payload, appenders, iters).await;
                    timing_tx.send(elapsed).expect("report timing");
                }
                let wal = Rc::try_unwrap(wal).ok().expect("all appenders finished");
                wal.close().await.expect("close wal");
            })
            .expect("spawn executor");
        AppendServer {
            requests,
            timings,
            thread: Some(thread),
        }
    }

    fn run(&self, iters: u64) -> Duration {
        self.requests.send(iters).expect("request appends");
        self.timings.recv().expect("timing")
    }
}

impl Drop for AppendServer {
    fn drop(&mut self) {
        let (closed, _) = mpsc::channel();
        self.requests = closed;
        if let Some(thread) = self.thread.take() {
            thread.join().expect("executor thread");
        }
    }
}

/// `iters` appends spread over `appenders` tasks; the time from the first
/// append to the last acknowledgement.
async fn append_concurrently(
    wal: &Rc<Wal>,
    payload: &Rc<Vec<u8>>,
    appenders: u64,
    iters: u64,
) -> Duration {
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
    start.elapsed()
}

/// The baseline: append `size` bytes with write(2), then fdatasync(2).
fn plain_appends(file: &mut std::fs::File, payload: &[u8], iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        file.write_all(payload).expect("write");
        file.sync_data().expect("fdatasync");
    }
    start.elapsed()
}

/// The same loop over a file filled with zeros beforehand (pwrite in place),
/// to show how much of keel's margin comes from its zero-filled segments.
fn prezeroed_appends(
    file: &std::fs::File,
    payload: &[u8],
    cursor: &mut u64,
    iters: u64,
) -> Duration {
    use std::os::unix::fs::FileExt;
    let start = Instant::now();
    for _ in 0..iters {
        if *cursor + payload.len() as u64 > PREZEROED_LEN {
            *cursor = 0;
        }
        file.write_all_at(payload, *cursor).expect("pwrite");
        file.sync_data().expect("fdatasync");
        *cursor += payload.len() as u64;
    }
    start.elapsed()
}

const PREZEROED_LEN: u64 = 64 << 20;

fn prezeroed_file(path: &Path) -> std::fs::File {
    let mut file = std::fs::File::create(path).expect("create prezeroed file");
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..PREZEROED_LEN / zeros.len() as u64 {
        file.write_all(&zeros).expect("write zeros");
    }
    file.sync_all().expect("sync zeros");
    file
}

fn durable_appends(c: &mut Criterion) {
    let dir = bench_dir();
    for size in RECORD_SIZES {
        let mut group = c.benchmark_group(format!("durable_append_{size}B"));
        group.throughput(Throughput::Elements(1));
        group.sample_size(20);
        group.warm_up_time(Duration::from_secs(1));
        group.measurement_time(Duration::from_secs(4));
        let plain_path = dir.path().join(format!("plain-{size}.log"));
        let mut plain = std::fs::File::create(&plain_path).expect("create plain file");
        let payload = vec![0xA5u8; size];
        group.bench_function("plain_write_fdatasync", |b| {
            b.iter_custom(|iters| plain_appends(&mut plain, &payload, iters))
        });
        drop(plain);
        std::fs::remove_file(&plain_path).expect("remove plain file");
        let zeroed_path = dir.path().join(format!("prezeroed-{size}.log"));
        let zeroed = prezeroed_file(&zeroed_path);
        let mut cursor = 0;
        group.bench_function("plain_pwrite_fdatasync_prezeroed", |b| {
            b.iter_custom(|iters| prezeroed_appends(&zeroed, &payload, &mut cursor, iters))
        });
        drop(zeroed);
        std::fs::remove_file(&zeroed_path).expect("remove prezeroed file");
        for appenders in APPENDERS {
            let run_dir = tempfile::tempdir_in(dir.path()).expect("run directory");
            let server = AppendServer::start(run_dir.path(), size, appenders);
            group.bench_with_input(
                BenchmarkId::new("keel_wal", appenders),
                &appenders,
                |b, _| b.iter_custom(|iters| server.run(iters)),
            );
        }
        group.finish();
    }
}

criterion_group!(benches, durable_appends);
criterion_main!(benches);
