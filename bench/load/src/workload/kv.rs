//! Point reads, durable writes and range reads, either open loop (each kind
//! at its own rate) or closed loop (`--concurrency` workers, flat out).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use rand::rngs::StdRng;
use rand::Rng;

use super::{drain, prefill, timed, value_with_sequence, Context, WorkerTimer};
use crate::args::MaxOps;
use crate::keys::{worker_rng, KeySpace};
use crate::record::{Op, OpTotals, Recorder};
use crate::report::{OpReport, RunReport};
use crate::schedule::{pace, InFlight};
use crate::target::Target;

/// Writers of the prefill.
const PREFILL_WORKERS: usize = 64;

/// What one operation needs, shared by every task.
struct KvOps {
    target: Arc<Target>,
    keys: KeySpace,
    value: Vec<u8>,
    serializable: bool,
    range_size: u64,
    /// Every key exists, so a read that finds nothing is an error.
    prefilled: bool,
}

impl KvOps {
    async fn perform(&self, op: Op, rng: &mut StdRng, connection: usize) -> Result<()> {
        match op {
            Op::Read => {
                let key = self.keys.pick(rng);
                let found = self.target.get(connection, &key, self.serializable).await?;
                if self.prefilled && !found {
                    bail!("key {} not found", String::from_utf8_lossy(&key));
                }
            }
            Op::Write => {
                let key = self.keys.pick(rng);
                self.target.put(connection, &key, &self.value, None).await?;
            }
            Op::Range => {
                // This keyspace's keys only, not others left under the prefix
                // by runs with more keys.
                let (start, end) = self.keys.bounds();
                let read = self
                    .target
                    .range(connection, &start, &end, self.range_size, self.serializable)
                    .await?;
                let expected = self.range_size.min(self.keys.count());
                if self.prefilled && (read as u64) < expected {
                    bail!("a range read {read} keys of {expected}");
                }
            }
            other => bail!("{} is not a kv operation", other.name()),
        }
        Ok(())
    }
}

/// The measured window: operations that start (or are due) in
/// `[from, end)` count.
#[derive(Debug, Clone, Copy)]
struct Window {
    from: Instant,
    end: Instant,
}

impl Window {
    fn contains(&self, at: Instant) -> bool {
        at >= self.from && at < self.end
    }
}

pub(super) async fn run(context: &Context) -> Result<RunReport> {
    let args = &context.args;
    let keys = args.keyspace("bench/k/")?;
    if !args.no_prefill {
        prefill(context, &keys, PREFILL_WORKERS).await?;
    }
    let ops = Arc::new(KvOps {
        target: context.target.clone(),
        keys,
        value: value_with_sequence(0, args.value_size),
        serializable: args.serializable,
        range_size: args.range_size,
        prefilled: !args.no_prefill,
    });
    let start = Instant::now();
    let window = Window {
        from: start + args.warmup,
        end: start + args.warmup + args.duration,
    };
    context.progress.phase("warm-up");
    let rates: Vec<(Op, f64)> = [
        (Op::Read, args.reads),
        (Op::Write, args.writes),
        (Op::Range, args.ranges),
    ]
    .into_iter()
    .filter_map(|(op, rate)| rate.map(|r| (op, r)))
    .collect();
    let work = async {
        match args.max {
            Some(max) => closed_loop(context, &ops, max, window).await,
            None => open_loop(context, &ops, &rates, start, window).await,
        }
    };
    let server_cpu = context.measure_server_cpu(window.from, window.end);
    let ((), worked) = tokio::join!(context.progress.phase_from("measure", window.from), work);
    worked?;
    let server_cpu = server_cpu.await??;
    let mode = match args.max {
        Some(_) => format!("closed loop, concurrency {}", args.concurrency),
        None => "open loop".to_string(),
    };
    let seconds = args.duration.as_secs_f64();
    let row = |totals: &OpTotals| {
        let asked = rates
            .iter()
            .find(|(op, _)| *op == totals.op)
            .map(|(_, r)| *r);
        OpReport::from_totals(totals, Some(args.duration), asked)
    };
    Ok(context.report(mode, seconds, row, Vec::new(), server_cpu))
}

/// One pacer per kind at its rate; each request is its own task, timed
/// from when it was due.
async fn open_loop(
    context: &Context,
    ops: &Arc<KvOps>,
    rates: &[(Op, f64)],
    start: Instant,
    window: Window,
) -> Result<()> {
    let runtime = tokio::runtime::Handle::current();
    let in_flight = InFlight::default();
    let mut pacers = Vec::new();
    for (kind, (op, rate)) in rates.iter().copied().enumerate() {
        let ops = ops.clone();
        let recorder = context.recorder.clone();
        let runtime = runtime.clone();
        let in_flight = in_flight.clone();
        let seed = context.args.seed ^ ((kind as u64) << 56);
        let pacer = pace(rate, start, window.end, move |n, due| {
            let ops = ops.clone();
            let recorder = recorder.clone();
            let guard = in_flight.enter();
            runtime.spawn(async move {
                let mut rng = worker_rng(seed, n);
                let request = ops.perform(op, &mut rng, n as usize);
                timed(&recorder, op, due, window.contains(due), request).await;
                drop(guard);
            });
        })?;
        pacers.push(pacer);
    }
    for pacer in pacers {
        tokio::task::spawn_blocking(move || pacer.join())
            .await?
            .map_err(|_| anyhow!("a pacer thread panicked"))?;
    }
    // Leftovers (none unless a task hung past its timeout) are charged to
    // the first kind.
    let first = rates.first().map_or(Op::Read, |(op, _)| *op);
    drain(&context.recorder, &in_flight, first).await;
    Ok(())
}

/// `--concurrency` workers, each with one request in flight at a time.
async fn closed_loop(
    context: &Context,
    ops: &Arc<KvOps>,
    max: MaxOps,
    window: Window,
) -> Result<()> {
    let args = &context.args;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..args.concurrency {
        let ops = ops.clone();
        let recorder: Arc<Recorder> = context.recorder.clone();
        let seed = args.seed;
        let read_percent = args.read_percent;
        workers.spawn(async move {
            let mut rng = worker_rng(seed, worker as u64);
            let mut timer = WorkerTimer::new();
            loop {
                let began = Instant::now();
                if began >= window.end {
                    return;
                }
                let op = match max {
                    MaxOps::Writes => Op::Write,
                    MaxOps::Reads => Op::Read,
                    MaxOps::Ranges => Op::Range,
                    MaxOps::Mix if rng.gen_range(0..100u8) < read_percent => Op::Read,
                    MaxOps::Mix => Op::Write,
                };
                let request = ops.perform(op, &mut rng, worker);
                let measured = window.contains(began);
                timer.timed(&recorder, op, began, measured, request).await;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done?;
    }
    Ok(())
}
