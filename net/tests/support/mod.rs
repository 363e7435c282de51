//! Starts the real `keel` binary on 127.0.0.1 ports chosen at runtime and
//! stops it by its process id.
#![allow(dead_code)]

pub mod certs;
pub mod metrics;
pub mod raw;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `keel` process.
pub struct Server {
    child: Option<Child>,
    pub client: SocketAddr,
    pub core_ports: Vec<u16>,
    /// Where `/metrics` is served apart, when `--listen-metrics` was given.
    pub metrics: Option<SocketAddr>,
    pub data_dir: PathBuf,
    extra: Vec<String>,
}

/// The `keel` of this build, or the one `TEST_KEEL_BIN` names (to run a
/// test against a release build).
fn keel() -> String {
    std::env::var("TEST_KEEL_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_keel").to_string())
}

/// The `keelctl` of this build, or the one `TEST_KEELCTL_BIN` names.
pub fn keelctl() -> String {
    std::env::var("TEST_KEELCTL_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_keelctl").to_string())
}

impl Server {
    /// A server of `shards` shards on 2 cores, unpinned (tests run side by
    /// side), on free ports.
    pub fn start(data_dir: &Path, shards: usize, extra: &[&str]) -> Server {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Server::launch(data_dir, shards, "127.0.0.1:0", extra)
    }

    fn launch(data_dir: &Path, shards: usize, client: &str, extra: Vec<String>) -> Server {
        let mut child = Command::new(keel())
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen-client", client])
            .args(["--core-port-base", "0"])
            .args(["--shards", &shards.to_string(), "--cores", "2", "--no-pin"])
            .args(&extra)
            .env(
                "KEEL_LOG",
                std::env::var("TEST_KEEL_LOG").unwrap_or("warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start keel");
        let stdout = child.stdout.take().expect("keel's stdout");
        let mut line = String::new();
        let mut stdout = BufReader::new(stdout);
        stdout.read_line(&mut line).expect("read keel's first line");
        // keel: metrics on http://127.0.0.1:PORT/metrics
        let metrics = extra.iter().any(|a| a == "--listen-metrics").then(|| {
            let mut metrics = String::new();
            stdout
                .read_line(&mut metrics)
                .expect("read keel's metrics line");
            metrics
                .trim()
                .strip_prefix("keel: metrics on http://")
                .or_else(|| metrics.trim().strip_prefix("keel: metrics on https://"))
                .and_then(|rest| rest.strip_suffix("/metrics"))
                .unwrap_or_else(|| panic!("unexpected second line from keel: {metrics:?}"))
                .parse()
                .expect("metrics address")
        });
        // keel: listening on 127.0.0.1:PORT (core ports A,B)
        let rest = line
            .strip_prefix("keel: listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from keel: {line:?}"));
        let (client, ports) = rest.split_once(" (core ports ").expect("core ports");
        let core_ports = ports
            .trim()
            .trim_end_matches(')')
            .split(',')
            .map(|p| p.parse().expect("port"))
            .collect();
        Server {
            child: Some(child),
            client: client.parse().expect("client address"),
            core_ports,
            metrics,
            data_dir: data_dir.to_path_buf(),
            extra,
        }
    }

    pub fn endpoint(&self) -> String {
        self.client.to_string()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The server's resident memory, from /proc, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// Sends `signal` (a name such as `STOP` or `CONT`) to the server.
    /// For `STOP`, returns once every thread of it is stopped: a signal is
    /// delivered to each thread when it next leaves the kernel, and a
    /// thread still running could take what the test sends next.
    pub fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            signal(child.id(), name);
            if name == "STOP" {
                wait_until_stopped(child.id());
            }
        }
    }

    /// SIGTERM, then waits for a clean exit (SIGKILL after 30 s).
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        signal(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops cleanly and starts again on the same directory and client
    /// address (the core ports are picked anew; the client finds them in
    /// the shard map, or goes through the client port).
    pub fn restart(&mut self) {
        let status = self.stop();
        assert!(
            status.is_some_and(|s| s.success()),
            "keel exited with {status:?}"
        );
        let client = self.client.to_string();
        let extra = std::mem::take(&mut self.extra);
        *self = Server::launch(&self.data_dir.clone(), 0, &client, extra);
    }
}

impl Server {
    /// SIGKILL (nothing is flushed or synced), then starts again on the
    /// same directory and client address.
    pub fn kill_and_restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "KILL");
            let _ = child.wait();
        }
        let client = self.client.to_string();
        let extra = std::mem::take(&mut self.extra);
        *self = Server::launch(&self.data_dir.clone(), 0, &client, extra);
    }
}

/// Waits (up to 10 s) until every thread of `pid` is in state T.
fn wait_until_stopped(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let stopped = || {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return true;
        };
        tasks.flatten().all(|task| {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // The state follows the command name's closing parenthesis.
            stat.rsplit_once(") ")
                .is_none_or(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
        })
    };
    while !stopped() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Sends a signal by pid with the `kill` command (no unsafe code in tests).
fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status();
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `count` ports whose next ones are free too (a member's two cores listen
/// on consecutive peer ports), all different: each pair is held until
/// every pair is chosen.
pub fn peer_ports(count: usize) -> Vec<u16> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..100 {
        if ports.len() == count {
            break;
        }
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        if port == u16::MAX {
            continue;
        }
        if let Ok(next) = std::net::TcpListener::bind(("127.0.0.1", port + 1)) {
            ports.push(port);
            held.push((first, next));
        }
    }
    assert_eq!(ports.len(), count, "no {count} pairs of free ports");
    ports
}

/// A tokio runtime for a test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs `future` with a 60 s limit.
pub fn block_on<T>(
    runtime: &tokio::runtime::Runtime,
    future: impl std::future::Future<Output = T>,
) -> T {
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), future)
            .await
            .expect("the test took over 60 s")
    })
}
