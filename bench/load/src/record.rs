//! Latency and error counts per kind of operation, shared by every task of
//! a run. The progress line sees everything; the totals only what the
//! caller says falls in the measured window (not the warm-up).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

/// The kinds of operation a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// A point read.
    Read,
    /// A durable put.
    Write,
    /// A range read of many keys.
    Range,
    /// A watch event: from the put's acknowledgement to its receipt.
    Event,
    /// A lease grant.
    Grant,
    /// One lease renewal.
    KeepAlive,
    /// A lease revoked by its client.
    Revoke,
    /// A leased key's deletion event, from its lease's deadline.
    Expiry,
}

impl Op {
    /// Every kind, in report order.
    pub const ALL: [Op; 8] = [
        Op::Read,
        Op::Write,
        Op::Range,
        Op::Event,
        Op::Grant,
        Op::KeepAlive,
        Op::Revoke,
        Op::Expiry,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write => "write",
            Op::Range => "range",
            Op::Event => "watch event",
            Op::Grant => "lease grant",
            Op::KeepAlive => "keep-alive",
            Op::Revoke => "lease revoke",
            Op::Expiry => "expiry",
        }
    }

    /// Whether it is a request the client sends (else something the
    /// server does on its own account: a watch event, an expiry). The
    /// server's CPU per operation is per request.
    pub fn is_request(self) -> bool {
        !matches!(self, Op::Event | Op::Expiry)
    }

    fn index(self) -> usize {
        Op::ALL.iter().position(|op| *op == self).unwrap_or(0)
    }
}

/// Latencies are kept from 1 us to 10 minutes with 3 significant digits.
const LOWEST_NANOS: u64 = 1_000;
const HIGHEST_NANOS: u64 = 600_000_000_000;

/// A histogram of nanoseconds with the bounds every recorder uses.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(LOWEST_NANOS, HIGHEST_NANOS, 3)
        .expect("constant bounds that hdrhistogram accepts")
}

struct OpRecord {
    /// Every latency since measuring began.
    total: Mutex<Histogram<u64>>,
    /// Latencies since the progress line last looked.
    interval: Mutex<Histogram<u64>>,
    errors: AtomicU64,
    timeouts: AtomicU64,
    interval_errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

/// What one kind of operation did over the whole measurement.
pub struct OpTotals {
    /// The kind.
    pub op: Op,
    /// Latencies of the successful operations, in nanoseconds.
    pub latencies: Histogram<u64>,
    /// Failed operations (timeouts included).
    pub errors: u64,
    /// Operations that got no answer in time: errors whose wait is in
    /// `latencies` too, so that a stalled target is not rewarded.
    pub timeouts: u64,
    /// The first failure's message.
    pub first_error: Option<String>,
}

/// One progress interval of one kind of operation.
pub struct OpInterval {
    /// The kind.
    pub op: Op,
    /// Successful operations in the interval.
    pub count: u64,
    /// Failed operations in the interval.
    pub errors: u64,
    /// Their 99th percentile latency.
    pub p99: Duration,
}

/// The shared recorder of a run.
pub struct Recorder {
    ops: Vec<OpRecord>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Recorder {
        Recorder {
            ops: Op::ALL
                .iter()
                .map(|_| OpRecord {
                    total: Mutex::new(new_histogram()),
                    interval: Mutex::new(new_histogram()),
                    errors: AtomicU64::new(0),
                    timeouts: AtomicU64::new(0),
                    interval_errors: AtomicU64::new(0),
                    first_error: Mutex::new(None),
                })
                .collect(),
        }
    }

    fn op(&self, op: Op) -> Option<&OpRecord> {
        self.ops.get(op.index())
    }

    /// A measured success of `op` that took `latency`.
    pub fn success(&self, op: Op, latency: Duration) {
        self.record::<(), &str>(op, latency, &Ok(()), true);
    }

    /// A measured failure of `op`.
    pub fn failure(&self, op: Op, error: &dyn std::fmt::Display) {
        self.record::<(), _>(op, Duration::ZERO, &Err(error), true);
    }

    /// A request of `op` that got no answer within `waited`: an error, and
    /// its wait goes into the latencies (a stalled target must not look
    /// faster for the requests it never answered).
    pub fn timeout(&self, op: Op, waited: Duration, measured: bool) {
        self.record::<(), &str>(op, waited, &Ok(()), measured);
        let message = format!("no answer within {} s", waited.as_secs());
        self.record::<(), _>(op, Duration::ZERO, &Err(message), measured);
        if let Some(record) = self.op(op).filter(|_| measured) {
            record.timeouts.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records the outcome of `op`: always in the progress interval, and in
    /// the totals when `measured` (the operation belongs to the measured
    /// window). The first failure's message is kept for the report.
    pub fn record<T, E: std::fmt::Display>(
        &self,
        op: Op,
        latency: Duration,
        outcome: &Result<T, E>,
        measured: bool,
    ) {
        let Some(record) = self.op(op) else {
            return;
        };
        match outcome {
            Ok(_) => {
                let nanos = u64::try_from(latency.as_nanos())
                    .unwrap_or(u64::MAX)
                    .clamp(LOWEST_NANOS, HIGHEST_NANOS);
                if measured {
                    if let Ok(mut total) = record.total.lock() {
                        total.saturating_record(nanos);
                    }
                }
                if let Ok(mut interval) = record.interval.lock() {
                    interval.saturating_record(nanos);
                }
            }
            Err(error) => {
                record.interval_errors.fetch_add(1, Ordering::Relaxed);
                if measured {
                    record.errors.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut first) = record.first_error.lock() {
                        first.get_or_insert_with(|| error.to_string());
                    }
                }
            }
        }
    }

    /// What happened since the last call, for each kind that did anything;
    /// starts a new interval.
    pub fn take_interval(&self) -> Vec<OpInterval> {
        let mut intervals = Vec::new();
        for (op, record) in Op::ALL.iter().zip(&self.ops) {
            let (count, p99) = match record.interval.lock() {
                Ok(mut histogram) => {
                    let seen = (histogram.len(), histogram.value_at_quantile(0.99));
                    histogram.reset();
                    seen
                }
                Err(_) => (0, 0),
            };
            let errors = record.interval_errors.swap(0, Ordering::Relaxed);
            if count > 0 || errors > 0 {
                intervals.push(OpInterval {
                    op: *op,
                    count,
                    errors,
                    p99: Duration::from_nanos(p99),
                });
            }
        }
        intervals
    }

    /// Everything measured, for each kind that did anything.
    pub fn totals(&self) -> Vec<OpTotals> {
        let mut totals = Vec::new();
        for (op, record) in Op::ALL.iter().zip(&self.ops) {
            let latencies = record
                .total
                .lock()
                .map(|h| h.clone())
                .unwrap_or_else(|_| new_histogram());
            let errors = record.errors.load(Ordering::Relaxed);
            if latencies.is_empty() && errors == 0 {
                continue;
            }
            totals.push(OpTotals {
                op: *op,
                latencies,
                errors,
                timeouts: record.timeouts.load(Ordering::Relaxed),
                first_error: record.first_error.lock().ok().and_then(|e| e.clone()),
            });
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_outside_the_measured_window_counts_in_the_totals() {
        let recorder = Recorder::new();
        let outside = |latency| recorder.record::<(), &str>(Op::Read, latency, &Ok(()), false);
        outside(Duration::from_millis(1));
        recorder.record::<(), _>(Op::Write, Duration::ZERO, &Err("refused"), false);
        assert!(recorder.totals().is_empty());
        recorder.success(Op::Read, Duration::from_millis(2));
        outside(Duration::from_millis(3));
        let totals = recorder.totals();
        assert_eq!(totals.len(), 1);
        assert_eq!(totals[0].latencies.len(), 1);
        assert_eq!(totals[0].latencies.max() / 1_000_000, 2);
    }

    #[test]
    fn failures_are_counted_and_the_first_message_kept() {
        let recorder = Recorder::new();
        recorder.record::<(), _>(Op::Write, Duration::ZERO, &Err("first"), true);
        recorder.record::<(), _>(Op::Write, Duration::ZERO, &Err("second"), true);
        recorder.record::<_, String>(Op::Write, Duration::from_micros(5), &Ok(()), true);
        // Outside the measured window: only the progress line sees it.
        recorder.record::<(), _>(Op::Write, Duration::ZERO, &Err("warm-up"), false);
        let totals = recorder.totals();
        assert_eq!(recorder.take_interval()[0].errors, 3);
        assert_eq!(totals[0].op, Op::Write);
        assert_eq!(totals[0].errors, 2);
        assert_eq!(totals[0].latencies.len(), 1);
        assert_eq!(totals[0].first_error.as_deref(), Some("first"));
    }

    #[test]
    fn an_interval_holds_only_what_happened_since_the_last_one() {
        let recorder = Recorder::new();
        for _ in 0..99 {
            recorder.success(Op::Read, Duration::from_micros(100));
        }
        recorder.success(Op::Read, Duration::from_millis(50));
        recorder.failure(Op::Read, &"x");
        let first = recorder.take_interval();
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].count, first[0].errors), (100, 1));
        assert!(first[0].p99 < Duration::from_micros(101));
        assert!(recorder.take_interval().is_empty());
        assert_eq!(recorder.totals()[0].latencies.len(), 100);
    }

    #[test]
    fn a_timeout_is_an_error_whose_wait_is_in_the_latencies() {
        let recorder = Recorder::new();
        recorder.timeout(Op::Read, Duration::from_secs(10), true);
        recorder.timeout(Op::Read, Duration::from_secs(10), false);
        let totals = recorder.totals();
        assert_eq!((totals[0].errors, totals[0].timeouts), (1, 1));
        assert_eq!(totals[0].latencies.len(), 1);
        assert!(totals[0].latencies.max() >= 9_990_000_000);
        assert_eq!(
            totals[0].first_error.as_deref(),
            Some("no answer within 10 s")
        );
    }

    #[test]
    fn latencies_outside_the_bounds_are_clamped_not_lost() {
        let recorder = Recorder::new();
        recorder.success(Op::Range, Duration::ZERO);
        recorder.success(Op::Range, Duration::from_secs(3600));
        let totals = recorder.totals();
        assert_eq!(totals[0].latencies.len(), 2);
    }
}
