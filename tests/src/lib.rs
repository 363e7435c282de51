//! keel's cross-crate tests: integration, crash and fault tests that span
//! crates live in `tests/tests/`; this library holds what they share.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use futures_lite::future::{block_on, or};
use keel_engine::mvcc::{Event, WatchRequest};
use keel_engine::shard::{NodeConfig, WatchBatch, WatchStream};

pub mod cluster;
pub mod cluster_load;
pub mod fault_proxy;
pub mod kv_history;
pub mod linearizability;
pub mod mem_net;
pub mod process_cluster;
pub mod tree_file;
pub mod watch_check;

/// A node on `dir` with `shards` shards over `cores` unpinned cores (tests
/// share the machine with each other), with 4 MiB WAL segments (the least
/// that holds the largest request) so that
/// many nodes fit on a test machine's disk.
pub fn node_config(dir: &Path, shards: usize, cores: usize) -> NodeConfig {
    NodeConfig {
        shards,
        cores,
        pin: false,
        wal: keel_wal::WalConfig {
            segment_size: 4 << 20,
        },
        ..NodeConfig::new(dir)
    }
}

/// A runtime for keel's (tokio) client in tests: two worker threads.
///
/// # Panics
/// When the runtime cannot be built.
pub fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The leader more than half of `size` members name, among `named` (each
/// member's view of one shard's leader; 0 names none).
pub fn majority_leader(named: impl IntoIterator<Item = u64>, size: usize) -> Option<u64> {
    let mut votes: Vec<(u64, usize)> = Vec::new();
    for leader in named.into_iter().filter(|l| *l != 0) {
        match votes.iter_mut().find(|(id, _)| *id == leader) {
            Some((_, n)) => *n += 1,
            None => votes.push((leader, 1)),
        }
    }
    let (leader, count) = votes.into_iter().max_by_key(|(_, n)| *n)?;
    (count > size / 2).then_some(leader)
}

/// A watch of every key, from now.
pub fn everything() -> WatchRequest {
    WatchRequest {
        key: vec![0],
        range_end: vec![0],
        ..WatchRequest::default()
    }
}

/// Resolves after `after` (one timer thread serves every caller; works
/// under any executor).
pub fn timeout(after: Duration) -> impl Future<Output = ()> {
    let (tx, rx) = flume::bounded::<()>(1);
    let due = std::time::Instant::now() + after;
    // Without a timer thread it resolves at once rather than never.
    let queued = timer_thread().send((due, tx)).is_ok();
    async move {
        if queued {
            let _ = rx.recv_async().await;
        }
    }
}

type TimerRequest = (std::time::Instant, flume::Sender<()>);

/// The one thread that wakes [`timeout`]s, earliest first.
fn timer_thread() -> &'static flume::Sender<TimerRequest> {
    static TIMER: std::sync::OnceLock<flume::Sender<TimerRequest>> = std::sync::OnceLock::new();
    TIMER.get_or_init(|| {
        let (requests, incoming) = flume::unbounded::<TimerRequest>();
        std::thread::spawn(move || {
            let mut due: std::collections::BinaryHeap<
                std::cmp::Reverse<(std::time::Instant, u64)>,
            > = std::collections::BinaryHeap::new();
            let mut waiting = std::collections::HashMap::new();
            let mut next_id = 0u64;
            loop {
                let now = std::time::Instant::now();
                while let Some(std::cmp::Reverse((at, id))) = due.peek().copied() {
                    if at > now {
                        break;
                    }
                    due.pop();
                    if let Some(waker) = waiting.remove(&id) {
                        let _: Result<(), _> = flume::Sender::send(&waker, ());
                    }
                }
                let request = match due.peek() {
                    Some(std::cmp::Reverse((at, _))) => {
                        match incoming.recv_timeout(at.saturating_duration_since(now)) {
                            Ok(request) => Some(request),
                            Err(flume::RecvTimeoutError::Timeout) => None,
                            Err(flume::RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    None => match incoming.recv() {
                        Ok(request) => Some(request),
                        Err(_) => return,
                    },
                };
                if let Some((at, waker)) = request {
                    due.push(std::cmp::Reverse((at, next_id)));
                    waiting.insert(next_id, waker);
                    next_id += 1;
                }
            }
        });
        requests
    })
}

/// Reads at least `count` events from `stream`.
///
/// # Panics
/// After 30 s without the next batch, or on anything but events; the
/// message names `label`.
pub fn watch_events(stream: &mut WatchStream<'_>, count: usize, label: &str) -> Vec<Event> {
    let mut got = Vec::new();
    while got.len() < count {
        let next = block_on(or(async { Some(stream.next().await) }, async {
            timeout(Duration::from_secs(30)).await;
            None
        }));
        match next {
            Some(Ok(WatchBatch::Events(events))) => got.extend(events),
            other => panic!("{label}: {other:?} after {} of {count} events", got.len()),
        }
    }
    got
}

/// A small ext4 file system in a file, loop-mounted for one test, and
/// unmounted and removed when dropped.
pub struct SmallDisk {
    /// Where it is mounted.
    pub mount: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` (with a message) where a loop mount cannot be made: not
    /// root, or no `mkfs.ext4`.
    pub fn new(mib: u64) -> Option<SmallDisk> {
        use std::process::Command;
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0"));
        let mkfs = Command::new("mkfs.ext4").arg("-V").output().is_ok();
        if !root || !mkfs {
            eprintln!("skipped: a loop-mounted ext4 image needs root and mkfs.ext4 (e2fsprogs)");
            return None;
        }
        let dir = tempfile::tempdir().ok()?;
        let image = dir.path().join("disk.img");
        let mount = dir.path().join("mnt");
        std::fs::File::create(&image)
            .ok()?
            .set_len(mib << 20)
            .ok()?;
        std::fs::create_dir(&mount).ok()?;
        // No blocks reserved for root: the test runs as root.
        let made = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&image)
            .status()
            .is_ok_and(|s| s.success());
        let mounted = made
            && Command::new("mount")
                .args(["-o", "loop"])
                .arg(&image)
                .arg(&mount)
                .status()
                .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: mkfs.ext4 or mount -o loop failed");
            return None;
        }
        Some(SmallDisk { mount, _dir: dir })
    }
}

impl SmallDisk {
    /// Remounts it read-only (`true`) or read-write: every write to it
    /// fails with EROFS meanwhile.
    pub fn set_read_only(&self, read_only: bool) -> bool {
        let option = if read_only {
            "remount,ro"
        } else {
            "remount,rw"
        };
        std::process::Command::new("mount")
            .args(["-o", option])
            .arg(&self.mount)
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let unmounted = std::process::Command::new("umount")
            .arg(&self.mount)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Something still holds a file there: detach it anyway.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.mount)
                .status();
        }
    }
}

/// A child process that is killed (SIGKILL) and reaped when this is
/// dropped, so a test that panics leaves no node running; the child is
/// also killed by the kernel if the test process itself dies.
pub struct KilledOnDrop(pub std::process::Child);

impl KilledOnDrop {
    /// Spawns `command`, asking the kernel to SIGKILL the child when its
    /// parent dies.
    ///
    /// # Panics
    /// When the child cannot be spawned.
    #[allow(unsafe_code)] // pre_exec: the one way to set the child's death signal
    pub fn spawn(command: &mut std::process::Command) -> KilledOnDrop {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches only this process.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        KilledOnDrop(command.spawn().expect("spawn child"))
    }

    /// Runs the test `test` of this test binary again, alone, as a child
    /// process with `var` set to `spec` (what the child is to do), its
    /// standard output piped and its errors dropped.
    ///
    /// # Panics
    /// When the child cannot be spawned.
    pub fn test_child(test: &str, var: &str, spec: String) -> KilledOnDrop {
        KilledOnDrop::spawn(
            std::process::Command::new(std::env::current_exe().expect("test binary"))
                .args([test, "--exact", "--nocapture", "--test-threads=1"])
                .env(var, spec)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null()),
        )
    }

    /// The child's standard output (once).
    ///
    /// # Panics
    /// When it was taken already, or not piped.
    pub fn stdout(&mut self) -> std::process::ChildStdout {
        self.0.stdout.take().expect("stdout")
    }

    /// SIGKILL now, and reap.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}
