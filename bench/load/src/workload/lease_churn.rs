//! Lease churn at a steady rate, the way short-lived sessions use leases:
//! `--grants` leases a second are granted (open loop), each gets one key
//! with a put, and then `--revoke-percent` of them are revoked half their
//! TTL after the grant's answer while the rest are left to expire. Leases
//! thus end at most `--grants` a second, which the suite keeps under
//! etcd's limit of 1,000 expiry revokes a second (the lease burst is the
//! workload that hits it).
//!
//! - A grant is timed from when it was due (open loop); its put and its
//!   revoke from when each was sent (each waits for the step before it).
//! - An expiry is timed from the lease's deadline (the grant's answer plus
//!   the TTL) to the receipt of its key's delete event by a watcher of the
//!   prefix; it has no rate, since leases expire when they are due.
//! - Every failure is an error: of the grant, the put or the revoke; a
//!   watch that cannot be set up or fails; a revoked or expired lease whose
//!   key is not deleted within [`EXPIRY_GRACE`] of its end.
//! - Leases granted in the warm-up are not measured, but they do expire
//!   during the measured window, as in a steady state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use rand::Rng;

use super::lease::{collect_deletes, Deleted};
use super::{drain, timed, value_with_sequence, Context};
use crate::keys::{worker_rng, Distribution, KeySpace};
use crate::record::{Op, OpTotals};
use crate::report::{OpReport, RunReport};
use crate::schedule::{pace, InFlight};

/// How long after the last lease's end the run waits for its key to go.
const EXPIRY_GRACE: Duration = Duration::from_secs(30);

/// How a measured lease whose key was attached ended.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// Revoked by the client (answered) at this time.
    Revoked(Instant),
    /// Left to expire; due at this deadline.
    Expires(Instant),
}

impl Ending {
    /// When the key should be gone.
    fn at(self) -> Instant {
        match self {
            Ending::Revoked(at) | Ending::Expires(at) => at,
        }
    }
}

pub(super) async fn run(context: &Context) -> Result<RunReport> {
    let args = &context.args;
    let rate = args.churn_grant_rate();
    let ttl_seconds = args.lease_ttl_seconds();
    let ttl = Duration::from_secs(ttl_seconds.unsigned_abs());
    let hold = ttl / 2;
    let revoke_percent = args.revoke_percent;
    // A key per lease: every lease the pacer can grant.
    let leases = (rate * (args.warmup + args.duration).as_secs_f64()).ceil() as u64 + 1;
    let keys = Arc::new(KeySpace::new(
        "bench/c/",
        leases,
        args.key_size,
        Distribution::Uniform,
        1.0,
    )?);

    // The watcher of the leased keys' deletions is in place first. Its
    // failure to start is an error of every expiry it would have timed.
    context.progress.phase("watch");
    let deleted: Deleted = Arc::default();
    let watcher = match context.target.watch_prefix(0, keys.prefix(), false).await {
        Ok(stream) => Ok(tokio::spawn(collect_deletes(stream, deleted.clone()))),
        Err(error) => Err(format!(
            "the watch of the leased keys could not be created: {error:#}"
        )),
    };

    let endings: Arc<Mutex<HashMap<u64, Ending>>> = Arc::default();
    let start = Instant::now();
    let from = start + args.warmup;
    let end = from + args.duration;
    context.progress.phase("warm-up");
    let in_flight = InFlight::default();
    let pacer = {
        let runtime = tokio::runtime::Handle::current();
        let target = context.target.clone();
        let recorder = context.recorder.clone();
        let endings = endings.clone();
        let in_flight = in_flight.clone();
        let keys = keys.clone();
        let value = Arc::new(value_with_sequence(0, args.value_size));
        let seed = args.seed;
        pace(rate, start, end, move |n, due| {
            let target = target.clone();
            let recorder = recorder.clone();
            let endings = endings.clone();
            let value = value.clone();
            let key = keys.key(n);
            let revoke = worker_rng(seed, n).gen_range(0..100u8) < revoke_percent;
            let guard = in_flight.enter();
            runtime.spawn(async move {
                let measured = due >= from;
                let connection = n as usize;
                let grant = target.lease_grant(connection, ttl_seconds);
                let Some(id) = timed(&recorder, Op::Grant, due, measured, grant).await else {
                    return;
                };
                let granted = Instant::now();
                let put = target.put(connection, &key, &value, Some(id));
                if timed(&recorder, Op::Write, granted, measured, put)
                    .await
                    .is_none()
                {
                    return;
                }
                let ending = if revoke {
                    tokio::time::sleep_until((granted + hold).into()).await;
                    let began = Instant::now();
                    let revoked = target.lease_revoke(connection, id);
                    timed(&recorder, Op::Revoke, began, measured, revoked)
                        .await
                        .map(|()| Ending::Revoked(Instant::now()))
                } else {
                    Some(Ending::Expires(granted + ttl))
                };
                if let Some(ending) = ending.filter(|_| measured) {
                    if let Ok(mut endings) = endings.lock() {
                        endings.insert(n, ending);
                    }
                }
                drop(guard);
            });
        })?
    };
    let server_cpu = context.run_pacer(pacer, from, end).await?;
    // The last grants' revokes are still to come, half a TTL on.
    context.progress.phase("revokes");
    drain(&context.recorder, &in_flight, Op::Revoke).await;

    context.progress.phase("expiry");
    let expected: Vec<(Vec<u8>, Ending)> = endings
        .lock()
        .map_err(|_| anyhow!("poisoned"))?
        .iter()
        .map(|(n, ending)| (keys.key(*n), *ending))
        .collect();
    let watch_failure = match watcher {
        Ok(watcher) => {
            let last_end = expected.iter().map(|(_, ending)| ending.at()).max();
            let wait_until = last_end.unwrap_or_else(Instant::now) + EXPIRY_GRACE;
            while Instant::now() < wait_until && !watcher.is_finished() {
                let gone = deleted.lock().map_or(0, |deleted| {
                    expected
                        .iter()
                        .filter(|(key, _)| deleted.contains_key(key))
                        .count()
                });
                if gone >= expected.len() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if watcher.is_finished() {
                match watcher.await {
                    Ok(Err(error)) => {
                        Some(format!("the watch of the leased keys failed: {error:#}"))
                    }
                    Ok(Ok(())) | Err(_) => None,
                }
            } else {
                watcher.abort();
                None
            }
        }
        Err(failure) => Some(failure),
    };

    let deleted = deleted.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    let missing = |what: &str| match &watch_failure {
        Some(failure) => format!("{what} was not seen deleted: {failure}"),
        None => format!("{what} was not deleted within {} s", EXPIRY_GRACE.as_secs()),
    };
    let (mut revoked, mut expired, mut early) = (0u64, 0u64, 0u64);
    for (key, ending) in &expected {
        match (ending, deleted.get(key)) {
            (Ending::Revoked(_), Some(_)) => revoked += 1,
            (Ending::Revoked(_), None) => context
                .recorder
                .failure(Op::Revoke, &missing("a revoked lease's key")),
            (Ending::Expires(deadline), Some(at)) => {
                expired += 1;
                if at < deadline {
                    early += 1;
                }
                context
                    .recorder
                    .success(Op::Expiry, at.saturating_duration_since(*deadline));
            }
            (Ending::Expires(_), None) => context.recorder.failure(
                Op::Expiry,
                &missing("a leased key (after its lease's deadline)"),
            ),
        }
    }

    let seconds = args.duration.as_secs_f64();
    let mut notes = vec![format!(
        "{} leases of {ttl_seconds} s granted with their keys in the measured window: \
         {revoked} revoked {:.1} s after their grant and {expired} expired, keys seen deleted; \
         leases ended at most {rate} a second",
        expected.len(),
        hold.as_secs_f64(),
    )];
    if early > 0 {
        notes.push(format!(
            "{early} keys were deleted before their lease's deadline as the client saw it \
             (the server starts the TTL when it grants, a little before the client hears back)"
        ));
    }
    if let Some(failure) = watch_failure {
        notes.push(failure);
    }
    let row = |totals: &OpTotals| {
        let asked = (totals.op == Op::Grant).then_some(rate);
        let window = (totals.op != Op::Expiry).then_some(args.duration);
        OpReport::from_totals(totals, window, asked)
    };
    let mode = format!("open loop, {rate} grants/s");
    Ok(context.report(mode, seconds, row, notes, server_cpu))
}

#[cfg(test)]
mod tests {
    use super::super::run_on;
    use crate::args::Cli;
    use crate::fake_target::FakeTarget;
    use crate::report::{OpReport, RunReport};
    use crate::target::Target;
    use clap::Parser;

    async fn churn(options: &[&str]) -> RunReport {
        let common = [
            "--workload",
            "lease-churn",
            "--grants",
            "100/s",
            "--lease-ttl",
            "2s",
            "--duration",
            "1s",
            "--warmup",
            "300ms",
        ];
        let cli = Cli::try_parse_from(
            std::iter::once("bench")
                .chain(common)
                .chain(options.iter().copied()),
        )
        .unwrap();
        run_on(cli.run, Target::Fake(FakeTarget::default()))
            .await
            .unwrap()
    }

    fn op<'a>(report: &'a RunReport, name: &str) -> Option<&'a OpReport> {
        report.ops.iter().find(|op| op.op == name)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_measured_lease_is_granted_keyed_and_revoked_or_seen_expiring() {
        let report = churn(&[]).await;
        for op in &report.ops {
            assert_eq!(op.errors, 0, "{}: {:?}", op.op, op.first_error);
        }
        // Grants due in the measured second: 100, at the asked rate.
        let grants = op(&report, "lease grant").unwrap();
        assert_eq!(grants.count, 100);
        assert_eq!(grants.target_rate, Some(100.0));
        assert_eq!(op(&report, "write").unwrap().count, 100);
        let revoked = op(&report, "lease revoke").unwrap().count;
        let expired = op(&report, "expiry").unwrap();
        assert_eq!(revoked + expired.count, 100);
        assert!((25..=75).contains(&revoked), "{revoked} of 100 revoked");
        assert_eq!(expired.rate, None, "expiries come when they are due");
        // The fake deletes a key within a few milliseconds of its deadline.
        assert!(
            expired.latency_us.max < 100_000.0,
            "{:?}",
            expired.latency_us
        );
        assert_eq!(
            report.name,
            "lease churn: 100 grants/s, 2 s TTL, 50% revoked"
        );
        assert!(
            report.notes[0].starts_with("100 leases of 2 s"),
            "{:?}",
            report.notes
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_revoked_share_follows_the_option() {
        let report = churn(&["--revoke-percent", "0"]).await;
        assert!(op(&report, "lease revoke").is_none());
        assert_eq!(op(&report, "expiry").unwrap().count, 100);
        let report = churn(&["--revoke-percent", "100"]).await;
        assert!(op(&report, "expiry").is_none());
        let revoke = op(&report, "lease revoke").unwrap();
        assert_eq!((revoke.count, revoke.errors), (100, 0));
    }
}
