//! Open-loop pacing: requests are due at fixed times whatever the target
//! does, and each one's latency is measured from the time it was due, so
//! a stall delays (and is charged to) every request behind it. That is
//! what avoids coordinated omission.
//!
//! The pacer is an OS thread, not a runtime timer: tokio's timer wheel
//! ticks once a millisecond, which would add up to a millisecond of the
//! generator's own lag to every latency at the rates measured here. A
//! thread sleep on Linux wakes within tens of microseconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Calls `issue(n, due)` for request `n = 0, 1, ...` at `due = start +
/// n / rate` for every `due` before `end`. `issue` must only hand the
/// request off (spawn it), never wait for it. Answers how many it issued.
///
/// # Errors
/// When the OS cannot start the thread.
pub fn pace(
    rate: f64,
    start: Instant,
    end: Instant,
    mut issue: impl FnMut(u64, Instant) + Send + 'static,
) -> std::io::Result<JoinHandle<u64>> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    std::thread::Builder::new()
        .name("bench-pacer".to_string())
        .spawn(move || {
            let mut issued = 0u64;
            while let Some(due) = u32::try_from(issued)
                .ok()
                .and_then(|n| interval.checked_mul(n))
                .and_then(|offset| start.checked_add(offset))
                .filter(|due| *due < end)
            {
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                issue(issued, due);
                issued += 1;
            }
            issued
        })
}

/// Counts requests in flight, so the end of a run can wait for them.
#[derive(Debug, Default, Clone)]
pub struct InFlight(Arc<AtomicU64>);

impl InFlight {
    /// One more request in flight until the guard is dropped.
    pub fn enter(&self) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.0.clone())
    }

    /// Requests in flight now.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Waits until none is in flight, or `limit` passes; answers whether
    /// none is.
    pub async fn drained(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.count() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

/// Marks one request in flight; dropping it marks it done.
#[derive(Debug)]
pub struct InFlightGuard(Arc<AtomicU64>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn requests_are_due_at_fixed_intervals_until_the_end() {
        let start = Instant::now();
        let end = start + Duration::from_millis(100);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let issued = pace(1000.0, start, end, move |n, due| {
            record.lock().unwrap().push((n, due, Instant::now()));
        })
        .unwrap()
        .join()
        .unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(issued, 100);
        assert_eq!(seen.len(), 100);
        for (i, (n, due, called)) in seen.iter().enumerate() {
            assert_eq!(*n, i as u64);
            assert_eq!(*due, start + Duration::from_millis(i as u64));
            // Never early: a request is not issued before it is due.
            assert!(called >= due);
        }
    }

    #[test]
    fn a_slow_issuer_does_not_skip_requests_it_fell_behind_on() {
        let start = Instant::now();
        let end = start + Duration::from_millis(50);
        let issued = pace(1000.0, start, end, |n, _| {
            if n == 0 {
                std::thread::sleep(Duration::from_millis(30));
            }
        })
        .unwrap()
        .join()
        .unwrap();
        assert_eq!(issued, 50);
    }

    #[tokio::test]
    async fn drained_waits_for_every_guard() {
        let in_flight = InFlight::default();
        let guard = in_flight.enter();
        assert_eq!(in_flight.count(), 1);
        assert!(!in_flight.drained(Duration::from_millis(20)).await);
        let later = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(guard);
        });
        assert!(in_flight.drained(Duration::from_secs(5)).await);
        later.await.unwrap();
    }
}
