//! kill -9 at random moments loses no acknowledged record.
//!
//! The test binary runs itself as a child (selected by an environment
//! variable): the child appends from 16 concurrent tasks and prints each index
//! as soon as its append is acknowledged. The parent kills the child with
//! SIGKILL at a random moment, reopens the log, and checks that every index
//! the child printed is there with the right bytes, and that everything else
//! the log holds is intact too. Then the next round appends on top of it.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use common::{payload_for, run_local};
use keel_wal::{Wal, WalConfig};
use rand::{Rng, SeedableRng};

const ROUNDS: usize = 8;
const CHILD_DIR_VAR: &str = "KEEL_WAL_KILL9_CHILD_DIR";
const WRITERS: usize = 16;

fn config() -> WalConfig {
    WalConfig {
        segment_size: 16 * 4096,
    }
}

fn payload_len(index: u64) -> usize {
    (index as usize * 97) % 1500
}

/// The child: append forever, printing `ack N` once N is durable.
fn child_writer(dir: PathBuf) {
    run_local(move || async move {
        let wal = Rc::new(Wal::open(&dir, config()).await.expect("child open"));
        let tasks: Vec<_> = (0..WRITERS)
            .map(|_| {
                let wal = wal.clone();
                glommio::spawn_local(async move {
                    loop {
                        let index = wal.next_index();
                        let payload = payload_for(index, payload_len(index));
                        wal.append(index, 1, &payload).await.expect("child append");
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "ack {index}").expect("report ack");
                        out.flush().expect("flush ack");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
    });
}

/// Runs one child until it is killed; returns the indexes it acknowledged.
fn run_child_until_killed(dir: &Path, rng: &mut impl Rng) -> Vec<u64> {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "kill9_loses_no_acknowledged_record",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_VAR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut acked = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(index) = line
                .strip_prefix("ack ")
                .and_then(|n| n.parse::<u64>().ok())
            {
                if acked.is_empty() {
                    let _ = tx.send(());
                }
                acked.push(index);
            }
        }
        acked
    });
    // Wait for the child to be appending, then let it run a random while.
    rx.recv_timeout(Duration::from_secs(30))
        .expect("child never acknowledged an append");
    std::thread::sleep(Duration::from_millis(rng.gen_range(5..300)));
    child.kill().expect("SIGKILL child");
    child.wait().expect("reap child");
    reader.join().expect("reader thread")
}

/// Reopens the log and checks it holds every acknowledged index, intact.
fn verify(dir: &Path, acked: &[u64]) -> u64 {
    let dir = dir.to_path_buf();
    let acked = acked.to_vec();
    run_local(move || async move {
        let wal = Wal::open(&dir, config())
            .await
            .expect("reopen after kill -9");
        let (first, last) = (wal.first_index(), wal.last_index());
        let entries = wal.read(first..last + 1).await.expect("read back");
        for entry in &entries {
            assert_eq!(
                entry.payload,
                payload_for(entry.index, payload_len(entry.index)),
                "entry {}",
                entry.index
            );
        }
        for index in &acked {
            assert!(
                (first..=last).contains(index),
                "acknowledged index {index} is missing (log holds {first}..={last})"
            );
        }
        wal.close().await.expect("close");
        last
    })
}

#[test]
fn kill9_loses_no_acknowledged_record() {
    if let Some(dir) = std::env::var_os(CHILD_DIR_VAR) {
        child_writer(PathBuf::from(dir));
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut total_acked = 0;
    let mut last = 0;
    for round in 0..ROUNDS {
        let acked = run_child_until_killed(dir.path(), &mut rng);
        assert!(!acked.is_empty(), "round {round}: nothing acknowledged");
        assert!(
            acked.iter().all(|&i| i > last),
            "round {round}: appends resume after the log's end"
        );
        total_acked += acked.len();
        last = verify(dir.path(), &acked);
    }
    assert!(
        total_acked > 100,
        "only {total_acked} appends acknowledged over {ROUNDS} rounds"
    );
}
