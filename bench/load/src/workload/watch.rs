//! Watch fan-out: `--watchers` watch one prefix while puts go to it at
//! `--writes` per second. An event's latency is from its put's
//! acknowledgement to its receipt by the watcher (zero when the event
//! beats the acknowledgement). Every watcher must see every put of the
//! measured window; a missing event is an error.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use super::{drain, sequence_of, timed, value_with_sequence, Context, REQUEST_TIMEOUT};
use crate::args::WatchStreams;
use crate::keys::worker_rng;
use crate::record::{Op, OpTotals};
use crate::report::{OpReport, RunReport};
use crate::schedule::{pace, InFlight};
use crate::target::EventStream;

/// Watches created at once while setting up.
const WATCH_SETUP_BATCH: usize = 64;

/// What one watcher received: (sequence, receipt time).
type Received = Arc<Mutex<Vec<(u64, Instant)>>>;

pub(super) async fn run(context: &Context) -> Result<RunReport> {
    let args = &context.args;
    let keys = args.keyspace("bench/w/")?;
    let rate = args.watch_write_rate();

    context.progress.phase("watches");
    // Room for every put of the run up front: 1,000 sinks growing (and
    // copying) during the measurement would stall the generator itself.
    let puts = rate * (args.warmup + args.duration).as_secs_f64() * 1.1 + 64.0;
    let received: Vec<Received> = (0..args.watchers)
        .map(|_| Arc::new(Mutex::new(Vec::with_capacity(puts as usize))))
        .collect();
    let mut watchers = tokio::task::JoinSet::new();
    for batch in received.chunks(WATCH_SETUP_BATCH).enumerate() {
        let (batch_index, batch) = batch;
        let mut opening = tokio::task::JoinSet::new();
        for (i, sink) in batch.iter().enumerate() {
            let target = context.target.clone();
            let prefix = keys.prefix().to_vec();
            let connection = batch_index * WATCH_SETUP_BATCH + i;
            let shared = args.watch_streams == WatchStreams::PerConnection;
            let sink = sink.clone();
            opening.spawn(async move {
                let stream = target.watch_prefix(connection, &prefix, shared).await?;
                Ok::<_, anyhow::Error>((stream, sink))
            });
        }
        while let Some(opened) = opening.join_next().await {
            let (stream, sink) = opened??;
            watchers.spawn(collect_events(stream, sink));
        }
    }

    // The writer: puts paced at `rate`, each carrying its sequence number;
    // acknowledgement times by sequence.
    let acknowledged: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let start = Instant::now();
    let from = start + args.warmup;
    let end = from + args.duration;
    context.progress.phase("warm-up");
    let in_flight = InFlight::default();
    let pacer = {
        let runtime = tokio::runtime::Handle::current();
        let target = context.target.clone();
        let recorder = context.recorder.clone();
        let acknowledged = acknowledged.clone();
        let in_flight = in_flight.clone();
        let value_size = args.value_size;
        let seed = args.seed;
        pace(rate, start, end, move |n, due| {
            let target = target.clone();
            let recorder = recorder.clone();
            let acknowledged = acknowledged.clone();
            let key = keys.pick(&mut worker_rng(seed, n));
            let guard = in_flight.enter();
            runtime.spawn(async move {
                let value = value_with_sequence(n, value_size);
                let measured = due >= from;
                let put = target.put(n as usize, &key, &value, None);
                let done = timed(&recorder, Op::Write, due, measured, put).await;
                let now = Instant::now();
                if done.is_some() && measured {
                    if let Ok(mut acknowledged) = acknowledged.lock() {
                        acknowledged.insert(n, now);
                    }
                }
                drop(guard);
            });
        })?
    };
    let server_cpu = context.run_pacer(pacer, from, end).await?;
    drain(&context.recorder, &in_flight, Op::Write).await;

    // Let the last events arrive: until every watcher holds every
    // acknowledged put, or the timeout.
    context.progress.phase("delivery");
    let acknowledged = acknowledged
        .lock()
        .map_err(|_| anyhow!("poisoned"))?
        .clone();
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    while Instant::now() < deadline {
        let complete = received.iter().all(|sink| {
            sink.lock().is_ok_and(|seen| {
                let delivered: HashSet<u64> = seen
                    .iter()
                    .map(|(s, _)| *s)
                    .filter(|s| acknowledged.contains_key(s))
                    .collect();
                delivered.len() >= acknowledged.len()
            })
        });
        if complete {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut failed_watch = None;
    while let Some(ended) = watchers.try_join_next() {
        if let Ok(Err(error)) = ended {
            failed_watch.get_or_insert(error);
        }
    }
    watchers.abort_all();

    let mut missing = 0u64;
    let mut duplicates = 0u64;
    for sink in &received {
        let seen = sink.lock().map_err(|_| anyhow!("poisoned"))?;
        let mut delivered = HashSet::new();
        for (sequence, at) in seen.iter() {
            let Some(acked) = acknowledged.get(sequence) else {
                continue;
            };
            if !delivered.insert(*sequence) {
                duplicates += 1;
                continue;
            }
            context
                .recorder
                .success(Op::Event, at.saturating_duration_since(*acked));
        }
        missing += (acknowledged.len() as u64).saturating_sub(delivered.len() as u64);
    }
    for _ in 0..duplicates {
        context
            .recorder
            .failure(Op::Event, &"an event was delivered twice to one watcher");
    }
    for _ in 0..missing {
        context.recorder.failure(
            Op::Event,
            &format!(
                "an event was not delivered within {} s",
                REQUEST_TIMEOUT.as_secs()
            ),
        );
    }
    let mut notes = vec![format!(
        "{} watchers x {} puts = {} events expected, {missing} missing, {duplicates} delivered twice",
        args.watchers,
        acknowledged.len(),
        args.watchers as u64 * acknowledged.len() as u64
    )];
    if let Some(error) = failed_watch {
        notes.push(format!("a watch failed: {error:#}"));
    }
    let row = |totals: &OpTotals| {
        let asked = (totals.op == Op::Write).then_some(rate);
        OpReport::from_totals(totals, Some(args.duration), asked)
    };
    let mode = format!("open loop, {} watchers", args.watchers);
    Ok(context.report(mode, args.duration.as_secs_f64(), row, notes, server_cpu))
}

/// Receives events until the watch fails, noting each put's sequence and
/// when it arrived.
async fn collect_events(mut stream: EventStream, sink: Received) -> Result<()> {
    loop {
        let events = stream.next().await?;
        let now = Instant::now();
        let mut sink = sink.lock().map_err(|_| anyhow!("poisoned"))?;
        for event in events.iter().filter(|e| e.is_put) {
            if let Some(sequence) = sequence_of(&event.value) {
                sink.push((sequence, now));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::run_on;
    use crate::args::Cli;
    use crate::fake_target::FakeTarget;
    use crate::target::Target;
    use clap::Parser;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_watcher_gets_every_measured_put_once_on_either_kind_of_stream() {
        for streams in ["per-watcher", "per-connection"] {
            let options = [
                "bench",
                "--workload",
                "watch",
                "--watchers",
                "3",
                "--writes",
                "100/s",
                "--duration",
                "500ms",
                "--warmup",
                "100ms",
                "--watch-streams",
                streams,
            ];
            let args = Cli::try_parse_from(options).unwrap().run;
            let report = run_on(args, Target::Fake(FakeTarget::default()))
                .await
                .unwrap();
            let op = |name: &str| report.ops.iter().find(|op| op.op == name).unwrap();
            assert_eq!(op("write").count, 50, "{streams}");
            assert_eq!(op("watch event").count, 150, "{streams}");
            assert_eq!(op("watch event").errors, 0, "{streams}");
            assert!(op("watch event").server_cpu_us.is_none());
        }
    }
}
