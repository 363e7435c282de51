//! Memory of one shard holding many keys: fills a keyspace, reads it at
//! random, and prints the process's resident memory split into anonymous
//! memory (what the shard holds) and mapped file pages (the page cache,
//! which the kernel reclaims under pressure).
//!
//! `cargo run --release -p keel-bench --bin shard_memory -- [KEYS] [DIR]`
//! (default 10,000,000 keys in the system temp directory).

use std::time::Instant;

use keel_bench::shard_load;
use keel_engine::btree::{CommitSync, Options};
use keel_engine::mvcc::{RangeRequest, Store};

/// `(VmRSS, RssAnon, RssFile, VmHWM)` in KiB, from `/proc/self/status`.
fn memory() -> anyhow::Result<(u64, u64, u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((
        field("VmRSS:"),
        field("RssAnon:"),
        field("RssFile:"),
        field("VmHWM:"),
    ))
}

fn report(stage: &str) -> anyhow::Result<()> {
    let (rss, anon, file, peak) = memory()?;
    println!(
        "{stage}: rss {} MiB = anonymous {} MiB + file pages {} MiB (peak rss {} MiB)",
        rss / 1024,
        anon / 1024,
        file / 1024,
        peak / 1024
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let keys: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000_000);
    let base = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base)?;
    let path = dir.path().join("kv.db");
    let options = Options {
        commit_sync: CommitSync::OneSync,
        ..Options::default()
    };
    let mut store = Store::open(&path, options)?;
    report("empty")?;
    let started = Instant::now();
    let batch = 10_000;
    let mut loaded = 0;
    while loaded < keys {
        let chunk = (keys - loaded).min(1_000_000);
        shard_load::fill_from(&mut store, loaded, chunk, 100, batch)?;
        loaded += chunk;
        report(&format!(
            "{loaded} keys ({:.0} s)",
            started.elapsed().as_secs_f64()
        ))?;
    }
    let file_bytes = std::fs::metadata(&path)?.len();
    println!("file {} MiB", file_bytes >> 20);
    let reads = Instant::now();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..1_000_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let request = RangeRequest {
            key: shard_load::key(x % keys),
            ..Default::default()
        };
        let found = store.range(&request)?;
        anyhow::ensure!(found.kvs.len() == 1, "key missing");
    }
    println!(
        "1M random gets: {:.2} us each",
        reads.elapsed().as_secs_f64()
    );
    report("after 1M random gets")?;
    Ok(())
}
