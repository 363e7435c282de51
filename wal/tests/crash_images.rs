//! Crash images: every file state a crash could leave, reopened.
//!
//! A random workload runs on a real log with small segments (so it rolls and
//! releases segments often). After each acknowledged operation the directory
//! is snapshotted along with the log's expected contents after each record of
//! that operation. Between two snapshots one operation was in flight; its
//! write is replayed partially into crash images:
//!
//! - cut at every record boundary and at points inside records (in a header,
//!   just after one, in a payload), in write order across the old segment and
//!   a newly rolled one;
//! - the bytes after the cut left as they were (zeros) or filled with garbage
//!   up to the end of the write's last block;
//! - a new segment whose write did not finish exists only under its prepared
//!   `.tmp` name; a release deletes some prefix of its segments.
//!
//! Reopening each image must yield exactly the log after some prefix of the
//! in-flight operation's records: never less than what was acknowledged,
//! never anything else. A zero-tailed cut at a record boundary must yield
//! exactly the records before the cut.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{payload_for, run_local, LogView};
use keel_wal::{Wal, WalConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SEEDS: u64 = 12;
const OPS_PER_SEED: usize = 45;
const CUTS_PER_STEP: usize = 14;

fn config() -> WalConfig {
    WalConfig {
        segment_size: 8 * 4096,
    }
}

/// One record as the model sees it.
#[derive(Debug, Clone)]
enum Rec {
    Entry(u64, u8, Vec<u8>),
    Truncate(u64),
    Reset(u64),
    State(Vec<u8>),
}

fn apply(view: &LogView, rec: &Rec) -> LogView {
    let mut next = view.clone();
    match rec {
        Rec::Entry(index, kind, payload) => {
            assert_eq!(*index, next.next_index);
            next.entries.push((*index, *kind, payload.clone()));
            next.next_index += 1;
        }
        Rec::Truncate(after) => {
            next.entries.retain(|(i, _, _)| i <= after);
            next.next_index = after + 1;
        }
        Rec::Reset(last) => {
            next.entries.clear();
            next.next_index = last + 1;
        }
        Rec::State(blob) => next.state = Some(blob.clone()),
    }
    next
}

type Snapshot = BTreeMap<String, Vec<u8>>;

fn snapshot(dir: &Path) -> Snapshot {
    std::fs::read_dir(dir)
        .expect("list log dir")
        .map(|e| e.expect("dir entry"))
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.ends_with(".wal") || name.ends_with(".tmp")
        })
        .map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            (name, std::fs::read(e.path()).expect("read log file"))
        })
        .collect()
}

/// One acknowledged operation: the directory before and after it, and the
/// log after each prefix of its records (`states[0]` is before it).
struct Step {
    before: Snapshot,
    after: Snapshot,
    states: Vec<LogView>,
    release: bool,
}

/// Runs a random workload and records a [`Step`] per operation.
async fn record_workload(dir: &Path, seed: u64) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let wal = Wal::open(dir, config()).await.expect("open");
    let max_payload = config().max_payload();
    let mut view = LogView::empty();
    let mut before = snapshot(dir);
    let mut steps = Vec::new();
    for _ in 0..OPS_PER_SEED {
        let mut recs = Vec::new();
        let mut release = false;
        let payload_len = |rng: &mut StdRng| {
            if rng.gen_ratio(1, 12) {
                rng.gen_range(max_payload / 2..=max_payload)
            } else {
                rng.gen_range(0..2500)
            }
        };
        match rng.gen_range(0..100) {
            0..=44 => {
                let n = rng.gen_range(1..=3u64);
                let next = wal.next_index();
                for index in next..next + n {
                    let kind = rng.gen_range(1..=127u8);
                    recs.push(Rec::Entry(
                        index,
                        kind,
                        payload_for(index, payload_len(&mut rng)),
                    ));
                }
                let batch: Vec<(u64, u8, &[u8])> = recs
                    .iter()
                    .map(|r| match r {
                        Rec::Entry(i, k, p) => (*i, *k, p.as_slice()),
                        _ => unreachable!(),
                    })
                    .collect();
                wal.append_batch(batch).await.expect("append batch");
            }
            45..=69 => {
                let mut pending = Vec::new();
                for _ in 0..rng.gen_range(2..=5) {
                    let index = wal.next_index();
                    let payload = payload_for(index, payload_len(&mut rng));
                    pending.push(wal.append(index, 1, &payload));
                    recs.push(Rec::Entry(index, 1, payload));
                }
                for durable in pending {
                    durable.await.expect("concurrent append");
                }
            }
            70..=77 if !view.entries.is_empty() => {
                let first = view.entries[0].0;
                let after = rng.gen_range(first - 1..view.next_index);
                wal.truncate_after(after).await.expect("truncate");
                recs.push(Rec::Truncate(after));
            }
            78..=79 => {
                let last = view.next_index - 1 + rng.gen_range(0..5);
                wal.reset(last).await.expect("reset");
                recs.push(Rec::Reset(last));
            }
            80..=91 => {
                let blob = payload_for(rng.gen(), rng.gen_range(0..200));
                wal.save_state(&blob).await.expect("save state");
                recs.push(Rec::State(blob));
            }
            _ => {
                let below = rng.gen_range(1..=view.next_index);
                wal.release_below(below).await.expect("release");
                release = true;
            }
        }
        let mut states = vec![view.clone()];
        for rec in &recs {
            states.push(apply(states.last().expect("a state"), rec));
        }
        let mut observed = LogView::observe(&wal).await;
        if release {
            // Releasing drops whole old segments; which entries go depends
            // on where segments end, so the model follows the log here.
            let first = wal.first_index();
            let mut released = view.clone();
            released.entries.retain(|(i, _, _)| *i >= first);
            states.push(released);
        }
        let expected = states.last().expect("a state").clone();
        assert_eq!(observed.next_index, expected.next_index, "seed {seed}");
        assert_eq!(observed.state, expected.state, "seed {seed}");
        assert_eq!(observed.entries, expected.entries, "seed {seed}");
        observed = expected;
        let after = snapshot(dir);
        steps.push(Step {
            before,
            after: after.clone(),
            states,
            release,
        });
        before = after;
        view = observed;
    }
    wal.close().await.expect("close");
    steps
}

/// One file's part of an in-flight write.
struct WriteUnit {
    name: String,
    /// Name the file has until its first write is durable, if it is new.
    temp_name: Option<String>,
    start: usize,
    end: usize,
}

fn write_units(step: &Step) -> Vec<WriteUnit> {
    let mut existing = Vec::new();
    let mut fresh = Vec::new();
    for (name, new) in &step.after {
        if !name.ends_with(".wal") {
            continue;
        }
        match step.before.get(name) {
            Some(old) if old == new => {}
            Some(old) => {
                let start = old.iter().zip(new).position(|(a, b)| a != b).unwrap_or(0);
                let end = old
                    .iter()
                    .zip(new)
                    .rposition(|(a, b)| a != b)
                    .map_or(0, |p| p + 1);
                existing.push(WriteUnit {
                    name: name.clone(),
                    temp_name: None,
                    start,
                    end,
                });
            }
            None => {
                let seq = name.split('-').next().expect("seq part");
                let end = new.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
                fresh.push(WriteUnit {
                    name: name.clone(),
                    temp_name: Some(format!("{seq}.tmp")),
                    start: 0,
                    end,
                });
            }
        }
    }
    existing.extend(fresh);
    existing
}

/// Offsets of the record frames that start in `[start, end)` of `bytes`.
fn record_boundaries(bytes: &[u8], start: usize, end: usize) -> Vec<usize> {
    let mut pos = if start < 64 { 64 } else { start & !7 };
    let mut boundaries = Vec::new();
    while pos + 32 <= end {
        boundaries.push(pos);
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        pos += (32 + len).next_multiple_of(8);
    }
    boundaries.push(pos.min(end.next_multiple_of(8)));
    boundaries
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tail {
    Zeros,
    Garbage,
}

/// Builds the image where units before `unit` are complete, `unit` is cut
/// at `cut`, and later units never started.
fn build_image(
    step: &Step,
    units: &[WriteUnit],
    unit: usize,
    cut: usize,
    tail: Tail,
    rng: &mut StdRng,
) -> Snapshot {
    let mut image = step.before.clone();
    for (u, w) in units.iter().enumerate() {
        let new = &step.after[&w.name];
        let complete = u < unit || (u == unit && cut >= w.end);
        if u > unit {
            continue;
        }
        let mut bytes = match &w.temp_name {
            Some(temp) => image.remove(temp).unwrap_or_else(|| vec![0; new.len()]),
            None => image[&w.name].clone(),
        };
        bytes.resize(new.len(), 0);
        let upto = if complete { w.end } else { cut };
        bytes[w.start.min(upto)..upto].copy_from_slice(&new[w.start.min(upto)..upto]);
        if !complete && tail == Tail::Garbage {
            let block_end = w.end.next_multiple_of(4096).min(bytes.len());
            rng.fill(&mut bytes[cut..block_end]);
        }
        let name = match (&w.temp_name, complete) {
            (Some(temp), false) => temp.clone(),
            _ => w.name.clone(),
        };
        image.insert(name, bytes);
    }
    image
}

fn write_image(image: &Snapshot, dir: &Path) {
    for (name, bytes) in image {
        std::fs::write(dir.join(name), bytes).expect("write image file");
    }
}

async fn reopen(dir: &Path) -> LogView {
    let wal = Wal::open(dir, config())
        .await
        .unwrap_or_else(|e| panic!("crash image did not open: {e}"));
    let view = LogView::observe(&wal).await;
    wal.close().await.expect("close");
    view
}

async fn check_step(step: &Step, rng: &mut StdRng, scratch: &Path, seed: u64, images: &mut usize) {
    if step.release {
        check_release(step, scratch, seed, images).await;
        return;
    }
    let units = write_units(step);
    let mut cuts: Vec<(usize, usize, bool)> = Vec::new();
    for (u, w) in units.iter().enumerate() {
        let boundaries = record_boundaries(&step.after[&w.name], w.start, w.end);
        for pair in boundaries.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            cuts.push((u, a, true));
            for inside in [a + 1, a + 8, a + 32, a + 33, (a + b) / 2, b - 1] {
                if inside > a && inside < b {
                    cuts.push((u, inside, false));
                }
            }
        }
        cuts.push((u, w.end, false));
        cuts.push((u, w.end.next_multiple_of(8), true));
    }
    // Keep every boundary cut of the first unit; sample the rest.
    let (mut chosen, mut rest): (Vec<_>, Vec<_>) =
        cuts.into_iter().partition(|&(u, _, b)| u == 0 && b);
    while chosen.len() < CUTS_PER_STEP && !rest.is_empty() {
        chosen.push(rest.swap_remove(rng.gen_range(0..rest.len())));
    }
    let single_existing_file = units.len() == 1 && units[0].temp_name.is_none();
    for (unit, cut, at_boundary) in chosen {
        for tail in [Tail::Zeros, Tail::Garbage] {
            let image = build_image(step, &units, unit, cut, tail, rng);
            let dir = tempfile::tempdir_in(scratch).expect("image dir");
            write_image(&image, dir.path());
            let got = reopen(dir.path()).await;
            *images += 1;
            let position = step.states.iter().position(|s| *s == got);
            assert!(
                position.is_some(),
                "seed {seed}: image cut at {cut} of unit {unit} ({tail:?}) recovered a log that no prefix of the \
                 in-flight records gives: {got:?}\nexpected one of {:?}",
                step.states
            );
            if single_existing_file && at_boundary && tail == Tail::Zeros {
                let w = &units[0];
                let whole = record_boundaries(&step.after[&w.name], w.start, w.end);
                let complete = whole.iter().filter(|&&b| b < cut.min(w.end)).count();
                let expected = &step.states[complete.min(step.states.len() - 1)];
                assert_eq!(
                    &got, expected,
                    "seed {seed}: cut at boundary {cut} must keep exactly the records before it"
                );
            }
        }
    }
    // The whole write landed, renames included: exactly the acknowledged log.
    let dir = tempfile::tempdir_in(scratch).expect("image dir");
    write_image(&step.after, dir.path());
    assert_eq!(
        &reopen(dir.path()).await,
        step.states.last().expect("state"),
        "seed {seed}"
    );
}

/// A release deletes its segments oldest first; a crash can stop after any.
async fn check_release(step: &Step, scratch: &Path, seed: u64, images: &mut usize) {
    let doomed: Vec<&String> = step
        .before
        .keys()
        .filter(|n| n.ends_with(".wal") && !step.after.contains_key(*n))
        .collect();
    let (before, after) = (&step.states[0], step.states.last().expect("state"));
    for deleted in 0..=doomed.len() {
        let mut image = step.before.clone();
        for name in &doomed[..deleted] {
            image.remove(*name);
        }
        let dir = tempfile::tempdir_in(scratch).expect("image dir");
        write_image(&image, dir.path());
        let got = reopen(dir.path()).await;
        *images += 1;
        assert_eq!(got.next_index, before.next_index, "seed {seed}");
        assert_eq!(got.state, before.state, "seed {seed}");
        let first = got.entries.first().map_or(got.next_index, |e| e.0);
        let suffix: Vec<_> = before
            .entries
            .iter()
            .filter(|e| e.0 >= first)
            .cloned()
            .collect();
        assert_eq!(
            got.entries, suffix,
            "seed {seed}: a partial release must leave a suffix of the log"
        );
        assert!(
            got.entries.len() >= after.entries.len(),
            "seed {seed}: a release lost live entries"
        );
    }
}

#[test]
fn every_crash_image_recovers_a_prefix_holding_every_acknowledged_record() {
    let images = run_local(|| async {
        let mut images = 0;
        for seed in 0..SEEDS {
            let work = tempfile::tempdir().expect("work dir");
            let log_dir = work.path().join("log");
            let steps = record_workload(&log_dir, seed).await;
            let scratch = work.path().join("images");
            std::fs::create_dir_all(&scratch).expect("scratch dir");
            let mut rng = StdRng::seed_from_u64(seed ^ 0x5EED);
            for step in &steps {
                check_step(step, &mut rng, &scratch, seed, &mut images).await;
            }
        }
        images
    });
    assert!(images > 1000, "only {images} crash images were checked");
}
