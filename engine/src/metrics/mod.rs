//! What a node counts while it runs, for the metrics endpoint
//! (docs/metrics.md).
//!
//! Every figure here has one writer: a shard's figures are written only on
//! the core that runs the shard, the WAL's by that shard's flusher on the
//! same core. So recording is a plain load and store of a relaxed atomic
//! (no locked instruction, no lock, nothing sent to another core), and the
//! cache line stays with its core until a scrape reads it. A scrape reads
//! every shard's figures from another thread and sums them; a figure read
//! while its shard writes is at worst one recording old.

mod shard;

pub use shard::{NodeMetrics, PeerRoundTrips, ShardMetrics};

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// A count that only grows. One writer (see the module's note).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the figure's one writer may call this: two writers
    /// would lose counts (never memory safety).
    pub fn add(&self, n: u64) {
        let now = self.0.load(Ordering::Relaxed);
        self.0.store(now.wrapping_add(n), Ordering::Relaxed);
    }

    /// Adds one (as [`Counter::add`]).
    pub fn inc(&self) {
        self.add(1);
    }

    /// The count so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down. Any thread may set it.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// The value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Most buckets a [`Histogram`] has (beside `+Inf`).
const MAX_BUCKETS: usize = 16;

/// Upper bounds in seconds: `first * 2^i` for `i` in `0..count`, as
/// Prometheus' `ExponentialBuckets(first, 2, count)` (etcd's histograms).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Buckets {
    /// The first upper bound, in seconds.
    pub first: f64,
    /// How many bounds (at most 16).
    pub count: usize,
}

/// etcd's `etcd_disk_wal_fsync_duration_seconds` and
/// `etcd_disk_backend_commit_duration_seconds`: 1 ms to about 8 s.
pub const DISK_BUCKETS: Buckets = Buckets {
    first: 0.001,
    count: 14,
};

/// etcd's `etcd_network_peer_round_trip_time_seconds`: 0.1 ms to about 3 s.
pub const NETWORK_BUCKETS: Buckets = Buckets {
    first: 0.0001,
    count: 16,
};

/// keel's request latencies (a ReadIndex round): 0.1 ms to about 3 s.
pub const REQUEST_BUCKETS: Buckets = NETWORK_BUCKETS;

/// A distribution of durations in fixed buckets. One writer (see the
/// module's note).
#[derive(Debug)]
pub struct Histogram {
    buckets: Buckets,
    /// Each bucket's upper bound, in nanoseconds.
    bounds_nanos: [u64; MAX_BUCKETS],
    /// Observations per bucket (not cumulative); the last counts those
    /// past every bound.
    counts: [AtomicU64; MAX_BUCKETS + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// An empty histogram over `buckets` (more than 16 are cut to 16).
    pub fn new(buckets: Buckets) -> Histogram {
        let buckets = Buckets {
            count: buckets.count.min(MAX_BUCKETS),
            ..buckets
        };
        let mut bounds_nanos = [u64::MAX; MAX_BUCKETS];
        for (i, bound) in bounds_nanos.iter_mut().take(buckets.count).enumerate() {
            *bound = (buckets.first * 2f64.powi(i as i32) * 1e9) as u64;
        }
        Histogram {
            buckets,
            bounds_nanos,
            counts: Default::default(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one duration. Only the figure's one writer may call this.
    pub fn observe(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = self
            .bounds_nanos
            .iter()
            .take(self.buckets.count)
            .position(|&bound| nanos <= bound)
            .unwrap_or(self.buckets.count);
        if let Some(count) = self.counts.get(bucket) {
            count.store(count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed);
        self.sum_nanos
            .store(sum.saturating_add(nanos), Ordering::Relaxed);
    }

    /// What it holds now.
    pub fn read(&self) -> HistogramReading {
        let mut reading = HistogramReading::empty(self.buckets);
        reading.add(self);
        reading
    }
}

/// A histogram as read at a scrape, possibly the sum of several.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramReading {
    buckets: Buckets,
    counts: [u64; MAX_BUCKETS + 1],
    sum_nanos: u64,
}

impl HistogramReading {
    /// Nothing observed, over `buckets`.
    pub fn empty(buckets: Buckets) -> HistogramReading {
        HistogramReading {
            buckets: Buckets {
                count: buckets.count.min(MAX_BUCKETS),
                ..buckets
            },
            counts: [0; MAX_BUCKETS + 1],
            sum_nanos: 0,
        }
    }

    /// Adds what `histogram` holds (which must have the same buckets; one
    /// with others is left out).
    pub fn add(&mut self, histogram: &Histogram) {
        if histogram.buckets != self.buckets {
            return;
        }
        for (sum, count) in self.counts.iter_mut().zip(&histogram.counts) {
            *sum = sum.wrapping_add(count.load(Ordering::Relaxed));
        }
        self.sum_nanos = self
            .sum_nanos
            .wrapping_add(histogram.sum_nanos.load(Ordering::Relaxed));
    }

    /// Adds another reading (one with other buckets is left out).
    pub fn merge(&mut self, other: &HistogramReading) {
        if other.buckets != self.buckets {
            return;
        }
        for (sum, count) in self.counts.iter_mut().zip(&other.counts) {
            *sum = sum.wrapping_add(*count);
        }
        self.sum_nanos = self.sum_nanos.wrapping_add(other.sum_nanos);
    }

    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The observed durations together, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos as f64 / 1e9
    }

    /// `(upper bound in seconds, observations in the bucket)` for each
    /// bucket, `+Inf` last (not cumulative: the text encoder adds them up).
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        let bounds = (0..self.buckets.count)
            .map(|i| self.buckets.first * 2f64.powi(i as i32))
            .chain(std::iter::once(f64::INFINITY));
        bounds.zip(self.counts.iter().copied()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_is_counted_in_the_first_bucket_that_holds_it() {
        let histogram = Histogram::new(DISK_BUCKETS);
        histogram.observe(Duration::from_micros(500)); // <= 1 ms
        histogram.observe(Duration::from_millis(1)); // <= 1 ms, the bound itself
        histogram.observe(Duration::from_micros(1500)); // <= 2 ms
        histogram.observe(Duration::from_secs(60)); // past every bound
        let reading = histogram.read();
        let buckets = reading.buckets();
        assert_eq!(buckets.len(), 15);
        assert_eq!(buckets[0], (0.001, 2));
        assert_eq!(buckets[1], (0.002, 1));
        assert!(buckets[2..14].iter().all(|(_, count)| *count == 0));
        assert_eq!(buckets[14], (f64::INFINITY, 1));
        assert_eq!(reading.count(), 4);
        assert!((reading.sum_seconds() - 60.003).abs() < 1e-9);
    }

    #[test]
    fn readings_of_several_histograms_add_up() {
        let (a, b) = (
            Histogram::new(NETWORK_BUCKETS),
            Histogram::new(NETWORK_BUCKETS),
        );
        a.observe(Duration::from_micros(50));
        b.observe(Duration::from_micros(150));
        b.observe(Duration::from_micros(150));
        let mut sum = HistogramReading::empty(NETWORK_BUCKETS);
        sum.add(&a);
        sum.add(&b);
        assert_eq!(sum.buckets()[0], (0.0001, 1));
        assert_eq!(sum.buckets()[1], (0.0002, 2));
        // Different buckets are not mixed in.
        sum.add(&Histogram::new(DISK_BUCKETS));
        assert_eq!(sum.count(), 3);
    }

    #[test]
    fn counters_and_gauges_hold_what_was_recorded() {
        let counter = Counter::default();
        counter.inc();
        counter.add(41);
        assert_eq!(counter.get(), 42);
        let gauge = Gauge::default();
        gauge.set(-3);
        assert_eq!(gauge.get(), -3);
    }
}
