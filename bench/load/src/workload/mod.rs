//! The workloads: what a run does between connecting and reporting.

mod kv;
mod lease;
mod lease_churn;
mod watch;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::args::{RunArgs, Workload};
use crate::cpu::ProcessCpu;
use crate::keys::KeySpace;
use crate::progress::Progress;
use crate::record::{Op, OpTotals, Recorder};
use crate::report::{OpReport, RunReport};
use crate::schedule::InFlight;
use crate::target::Target;

/// How long one request may wait for its answer; one not answered by
/// then is a timeout (an error whose wait counts in the latencies).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What every workload shares.
pub(crate) struct Context {
    pub(crate) args: RunArgs,
    pub(crate) target: Arc<Target>,
    pub(crate) recorder: Arc<Recorder>,
    pub(crate) progress: Progress,
    /// The sockets the target's connections open, when known.
    pub(crate) sockets: Option<usize>,
    /// The server's process (`--server-pid`).
    pub(crate) server_cpu: Option<ProcessCpu>,
}

impl Context {
    /// The run's report: its `mode`, the `seconds` measured, a row per
    /// kind of operation (made by `row` from the recorder's totals),
    /// `notes`, and the server's CPU seconds over the measured window,
    /// which the rows of requests get as CPU per request.
    pub(crate) fn report(
        &self,
        mode: String,
        seconds: f64,
        row: impl Fn(&OpTotals) -> OpReport,
        notes: Vec<String>,
        server_cpu_seconds: Option<f64>,
    ) -> RunReport {
        let totals = self.recorder.totals();
        let requests: u64 = totals
            .iter()
            .filter(|t| t.op.is_request())
            .map(|t| t.latencies.len().saturating_sub(t.timeouts))
            .sum();
        let cpu_per_request = server_cpu_seconds
            .filter(|_| requests > 0)
            .map(|seconds| seconds * 1e6 / requests as f64);
        let ops = totals
            .iter()
            .map(|t| OpReport {
                server_cpu_us: cpu_per_request.filter(|_| t.op.is_request()),
                ..row(t)
            })
            .collect();
        RunReport {
            name: self.args.run_name(),
            label: self.args.run_label(),
            target: self.args.target.to_string(),
            mode,
            connections: self.target.connections(),
            sockets: self.sockets,
            server_cpu_seconds,
            seconds,
            ops,
            notes,
            plot: None,
        }
    }

    /// The server's CPU seconds from `from` to `end`, sampled beside the
    /// work when each comes; `None` without `--server-pid`.
    pub(crate) fn measure_server_cpu(
        &self,
        from: Instant,
        end: Instant,
    ) -> tokio::task::JoinHandle<Result<Option<f64>>> {
        let cpu = self.server_cpu.clone();
        tokio::spawn(async move {
            match cpu {
                Some(cpu) => cpu.between(from, end).await.map(Some),
                None => Ok(None),
            }
        })
    }

    /// Waits for `pacer` (from [`crate::schedule::pace`]) to have issued
    /// its last request, showing the measure phase from `from`; answers
    /// the server's CPU seconds over `[from, end)` (`None` without
    /// `--server-pid`).
    ///
    /// # Errors
    /// When the pacer thread panicked or a CPU sample failed.
    pub(crate) async fn run_pacer(
        &self,
        pacer: std::thread::JoinHandle<u64>,
        from: Instant,
        end: Instant,
    ) -> Result<Option<f64>> {
        let server_cpu = self.measure_server_cpu(from, end);
        let (joined, ()) = tokio::join!(
            tokio::task::spawn_blocking(move || pacer.join()),
            self.progress.phase_from("measure", from)
        );
        joined?.map_err(|_| anyhow::anyhow!("the pacer thread panicked"))?;
        server_cpu.await?
    }

    /// The server's CPU seconds so far; `None` without `--server-pid`.
    ///
    /// # Errors
    /// When the server's process has gone.
    pub(crate) fn server_cpu_now(&self) -> Result<Option<f64>> {
        self.server_cpu
            .as_ref()
            .map(ProcessCpu::seconds)
            .transpose()
    }
}

/// Connects, runs the workload `args` describe, and reports.
///
/// # Errors
/// When the target cannot be reached, the options are inconsistent, or
/// the setup (prefill, watches) fails.
pub async fn run(args: RunArgs) -> Result<RunReport> {
    args.validate()?;
    let target = Target::connect(&args.target, args.connections, &args.security()).await?;
    run_on(args, target).await
}

/// Runs the workload `args` describe against `target`.
async fn run_on(args: RunArgs, target: Target) -> Result<RunReport> {
    let server_cpu = crate::cpu::open(&args.server_pid)?;
    let scraper = args
        .scrape
        .clone()
        .map(|url| crate::scrape::Scraper::start(url, args.scrape_interval));
    let sockets = Some(target.sockets().await?);
    let target = Arc::new(target);
    let recorder = Arc::new(Recorder::new());
    let progress = Progress::start(recorder.clone());
    let context = Context {
        args,
        target,
        recorder,
        progress,
        sockets,
        server_cpu,
    };
    let mut report = match context.args.workload {
        Workload::Kv => kv::run(&context).await,
        Workload::Watch => watch::run(&context).await,
        Workload::Lease => lease::run(&context).await,
        Workload::LeaseChurn => lease_churn::run(&context).await,
    }?;
    if let Some(scraper) = scraper {
        report.notes.push(scraper.finish());
    }
    Ok(report)
}

/// Runs `request` with the request timeout and records it as `op`, timed
/// from `since`, in the totals when `measured`. A request that gets no
/// answer in time is recorded as a timeout: an error whose wait counts.
/// Answers the request's value when it succeeded.
pub(crate) async fn timed<T>(
    recorder: &Recorder,
    op: Op,
    since: Instant,
    measured: bool,
    request: impl Future<Output = Result<T>>,
) -> Option<T> {
    let outcome = tokio::time::timeout(REQUEST_TIMEOUT, request).await.ok();
    record(recorder, op, since, measured, outcome)
}

/// Records a request's `outcome` (`None`: it timed out) as [`timed`] does.
fn record<T>(
    recorder: &Recorder,
    op: Op,
    since: Instant,
    measured: bool,
    outcome: Option<Result<T>>,
) -> Option<T> {
    match outcome {
        Some(outcome) => {
            recorder.record(op, since.elapsed(), &outcome, measured);
            outcome.ok()
        }
        None => {
            recorder.timeout(op, since.elapsed(), measured);
            None
        }
    }
}

/// How much earlier than [`REQUEST_TIMEOUT`] a [`WorkerTimer`] may give up.
const TIMER_SLACK: Duration = Duration::from_secs(1);

/// The timeout of a worker that sends one request after another: one
/// timer, moved on only when it falls more than [`TIMER_SLACK`] behind the
/// request's own deadline, so most requests cost no timer of their own (a
/// timer each took about a tenth of the generator's time at full load). A
/// request times out between `REQUEST_TIMEOUT - TIMER_SLACK` and
/// `REQUEST_TIMEOUT` after it began.
pub(crate) struct WorkerTimer {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl WorkerTimer {
    pub(crate) fn new() -> WorkerTimer {
        WorkerTimer {
            sleep: Box::pin(tokio::time::sleep(REQUEST_TIMEOUT)),
        }
    }

    /// As [`timed`], with this worker's timer.
    pub(crate) async fn timed<T>(
        &mut self,
        recorder: &Recorder,
        op: Op,
        since: Instant,
        measured: bool,
        request: impl Future<Output = Result<T>>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::from_std(since) + REQUEST_TIMEOUT;
        if self.sleep.deadline() + TIMER_SLACK < deadline {
            self.sleep.as_mut().reset(deadline);
        }
        let outcome = tokio::select! {
            biased;
            outcome = request => Some(outcome),
            () = self.sleep.as_mut() => None,
        };
        record(recorder, op, since, measured, outcome)
    }
}

/// Waits for the requests still in flight at the end of a run. Each has
/// its own timeout, so this ends soon after it; any left then (which would
/// mean a request's task hung past its timeout) are errors of `op`.
pub(crate) async fn drain(recorder: &Recorder, in_flight: &InFlight, op: Op) {
    if !in_flight
        .drained(REQUEST_TIMEOUT + Duration::from_secs(5))
        .await
    {
        for _ in 0..in_flight.count() {
            recorder.record::<(), _>(
                op,
                Duration::ZERO,
                &Err("still unanswered at the end of the run"),
                true,
            );
        }
    }
}

/// A value of `size` bytes that starts with `sequence` (8 bytes, little
/// endian), so a watcher can tell which put an event came from.
pub(crate) fn value_with_sequence(sequence: u64, size: usize) -> Vec<u8> {
    let mut value = sequence.to_le_bytes().to_vec();
    value.resize(size.max(8), b'v');
    value
}

/// The sequence number a value from [`value_with_sequence`] carries.
pub(crate) fn sequence_of(value: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = value.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// Writes every key of `keys` once, with `workers` writers.
///
/// # Errors
/// On the first failed write: reads of a half-written keyspace would
/// measure the wrong thing.
pub(crate) async fn prefill(context: &Context, keys: &KeySpace, workers: usize) -> Result<()> {
    context.progress.phase("prefill");
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..workers.max(1) {
        let target = context.target.clone();
        let keys = keys.clone();
        let next = next.clone();
        let value = value_with_sequence(0, context.args.value_size);
        tasks.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= keys.count() {
                    return Ok::<(), anyhow::Error>(());
                }
                let key = keys.key(index);
                let put = target.put(worker, &key, &value, None);
                tokio::time::timeout(REQUEST_TIMEOUT, put)
                    .await
                    .map_err(|_| {
                        anyhow::anyhow!("no answer within {} s", REQUEST_TIMEOUT.as_secs())
                    })??;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("prefill failed: {e:#}"),
            Err(e) => bail!("prefill task failed: {e}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Cli;
    use crate::fake_target::FakeTarget;
    use clap::Parser;

    fn args(options: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(options.iter().copied()));
        cli.unwrap().run
    }

    fn reads(report: &RunReport) -> &crate::report::OpReport {
        report.ops.iter().find(|op| op.op == "read").unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_timer_times_out_each_request_that_hangs_near_its_own_deadline() {
        let recorder = Recorder::new();
        let mut timer = WorkerTimer::new();
        let now = || tokio::time::Instant::now().into_std();
        let answered = timer.timed(&recorder, Op::Read, now(), true, async { Ok(7) });
        assert_eq!(answered.await, Some(7));
        for pause in [3, 0, 5] {
            tokio::time::sleep(Duration::from_secs(pause)).await;
            let began = tokio::time::Instant::now();
            let hung = std::future::pending::<Result<u8>>();
            let outcome = timer.timed(&recorder, Op::Read, began.into_std(), true, hung);
            assert_eq!(outcome.await, None);
            let waited = began.elapsed();
            assert!(
                waited >= REQUEST_TIMEOUT - TIMER_SLACK && waited <= REQUEST_TIMEOUT,
                "timed out after {waited:?}"
            );
        }
        let totals = recorder.totals();
        assert_eq!((totals[0].errors, totals[0].timeouts), (3, 3));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_open_loop_charges_a_stall_to_every_request_due_during_it() {
        // 1,000 reads a second for 1 s; the target stops answering for
        // 200 ms in the middle. Every read due in the stall waits for its
        // end, so about 150 of them take 50 ms or more (15%), the slowest
        // about 200 ms. A generator that waited for answers before sending
        // would have sent a handful of requests during the stall instead
        // and reported a p90 of microseconds.
        let fake = FakeTarget::default();
        let start = Instant::now();
        fake.stall(
            start + Duration::from_millis(400),
            start + Duration::from_millis(600),
        );
        let options = [
            "--reads",
            "1000/s",
            "--duration",
            "1s",
            "--warmup",
            "0s",
            "--no-prefill",
        ];
        let report = run_on(args(&options), Target::Fake(fake)).await.unwrap();
        let read = reads(&report);
        assert_eq!(read.count, 1000, "every due request is sent, stall or not");
        assert_eq!(read.errors, 0);
        assert!(read.latency_us.p90 >= 40_000.0, "{:?}", read.latency_us);
        assert!(
            (150_000.0..400_000.0).contains(&read.latency_us.max),
            "{:?}",
            read.latency_us
        );
        assert!(read.latency_us.p50 < 10_000.0, "{:?}", read.latency_us);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_requests_due_in_the_measured_window_count() {
        let options = [
            "--reads",
            "1000/s",
            "--writes",
            "200/s",
            "--duration",
            "500ms",
            "--warmup",
            "300ms",
            "--keys",
            "100",
        ];
        let report = run_on(args(&options), Target::Fake(FakeTarget::default()))
            .await
            .unwrap();
        let count = |name: &str| report.ops.iter().find(|op| op.op == name).unwrap().count;
        // Due at start + n / rate: reads 300..800, writes 60..160.
        assert_eq!(count("read"), 500);
        assert_eq!(count("write"), 100);
        assert_eq!(reads(&report).errors, 0, "the prefill wrote every key read");
        assert_eq!(reads(&report).rate, Some(1000.0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ranges_over_a_prefilled_keyspace_read_every_key_asked_for() {
        // A range that read fewer keys than the prefill wrote would be an
        // error; 5 of the 10 keys are asked for and found.
        let fake = FakeTarget::default();
        let options = [
            "--max",
            "ranges",
            "--duration",
            "200ms",
            "--warmup",
            "0s",
            "--keys",
            "10",
            "--range-size",
            "5",
            "--concurrency",
            "2",
        ];
        let report = run_on(args(&options), Target::Fake(fake)).await.unwrap();
        let range = report.ops.iter().find(|op| op.op == "range").unwrap();
        assert_eq!(range.errors, 0, "{:?}", range.first_error);
        assert!(range.count > 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_with_the_servers_pid_reports_its_cpu_per_request() {
        // The "server" is this process: the fake target runs in it.
        let pid = std::process::id().to_string();
        let options = [
            "--max",
            "writes",
            "--duration",
            "300ms",
            "--warmup",
            "0s",
            "--keys",
            "100",
            "--concurrency",
            "4",
            "--server-pid",
            &pid,
        ];
        let report = run_on(args(&options), Target::Fake(FakeTarget::default()))
            .await
            .unwrap();
        assert_eq!(report.sockets, Some(1));
        let cpu = report.server_cpu_seconds.unwrap();
        let writes = report.ops.iter().find(|op| op.op == "write").unwrap();
        let per_write = writes.server_cpu_us.unwrap();
        let done = writes.rate.unwrap() * 0.3;
        assert!(
            (per_write * done / 1e6 - cpu).abs() <= cpu * 0.01 + 1e-9,
            "{per_write} us x {done} writes is not {cpu} s"
        );
        let without = run_on(
            args(&options[..options.len() - 2]),
            Target::Fake(FakeTarget::default()),
        )
        .await
        .unwrap();
        assert_eq!(without.server_cpu_seconds, None);
        assert!(without.ops.iter().all(|op| op.server_cpu_us.is_none()));
    }

    #[tokio::test]
    async fn a_server_pid_that_is_no_process_is_refused_before_the_run() {
        let options = ["--reads", "10/s", "--server-pid", "4294967295"];
        let error = run_on(args(&options), Target::Fake(FakeTarget::default()))
            .await
            .unwrap_err();
        assert!(format!("{error:#}").contains("--server-pid"), "{error:#}");
    }

    #[test]
    fn a_value_carries_its_sequence_and_has_the_asked_size() {
        let value = value_with_sequence(123_456, 256);
        assert_eq!(value.len(), 256);
        assert_eq!(sequence_of(&value), Some(123_456));
        // Values shorter than the sequence grow to hold it.
        assert_eq!(value_with_sequence(5, 3).len(), 8);
        assert_eq!(sequence_of(b"short"), None);
    }
}
