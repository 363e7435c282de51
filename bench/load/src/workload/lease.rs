//! Lease churn, the way service registration uses leases: `--leases`
//! leases are granted, each with a key attached, then each is renewed once,
//! then all are left to expire. Grants, attaching puts and renewals are
//! timed like any request; an expiry is timed from the lease's deadline
//! (its renewal's acknowledgement plus the TTL) to the receipt of its key's
//! delete event by a watcher. A key never deleted is an error.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use super::{value_with_sequence, Context, REQUEST_TIMEOUT};
use crate::keys::{Distribution, KeySpace};
use crate::record::Op;
use crate::report::{OpReport, RunReport};
use crate::target::{EventStream, Target};

/// How long after the last deadline the run waits for the last expiry.
const EXPIRY_GRACE: Duration = Duration::from_secs(60);

/// When each leased key's delete event arrived.
type Deleted = Arc<Mutex<HashMap<Vec<u8>, Instant>>>;

pub(super) async fn run(context: &Context) -> Result<RunReport> {
    let args = &context.args;
    let count = args.leases;
    // TTLs are whole seconds; round up so a lease never lives shorter
    // than asked.
    let ttl_seconds = args.lease_ttl.as_secs_f64().ceil() as i64;
    let ttl = Duration::from_secs(ttl_seconds.unsigned_abs());
    let keys = KeySpace::new(
        "bench/l/",
        count as u64,
        args.key_size,
        Distribution::Uniform,
        1.0,
    )?;
    let target = context.target.clone();
    context.recorder.start_measuring();

    // The watcher of the leased keys' deletions is in place first.
    let deleted: Deleted = Arc::default();
    let watch = target.watch_prefix(0, keys.prefix()).await?;
    let watcher = tokio::spawn(collect_deletes(watch, deleted.clone()));

    context.progress.phase("grant");
    let value = value_with_sequence(0, args.value_size);
    let granted_from = Instant::now();
    let leases: Vec<Option<i64>> = for_each_lease(context, count, |target, i, connection| {
        let key = keys.key(i as u64);
        let value = value.clone();
        let recorder = context.recorder.clone();
        async move {
            let began = Instant::now();
            let grant = in_time(target.lease_grant(connection, ttl_seconds)).await;
            recorder.record(Op::Grant, began.elapsed(), &grant, true);
            let id = grant.ok()?;
            let began = Instant::now();
            let put = in_time(target.put(connection, &key, &value, Some(id))).await;
            recorder.record(Op::Write, began.elapsed(), &put, true);
            put.ok().map(|()| id)
        }
    })
    .await?;
    let grant_phase = granted_from.elapsed();

    context.progress.phase("keep-alive");
    let leases = Arc::new(leases);
    let renewed_from = Instant::now();
    let deadlines: Vec<Option<Instant>> =
        for_each_lease(context, count, |target, i, connection| {
            let lease = leases.get(i).copied().flatten();
            let recorder = context.recorder.clone();
            async move {
                let id = lease?;
                let began = Instant::now();
                let renewal = in_time(target.lease_keep_alive_once(connection, id)).await;
                let now = Instant::now();
                recorder.record(Op::KeepAlive, now.duration_since(began), &renewal, true);
                renewal.ok().map(|()| now + ttl)
            }
        })
        .await?;
    let keep_alive_phase = renewed_from.elapsed();

    context.progress.phase("expiry");
    let last_deadline = deadlines.iter().flatten().max().copied();
    let wait_until = last_deadline.unwrap_or_else(Instant::now) + EXPIRY_GRACE;
    let expected = deadlines.iter().flatten().count();
    while Instant::now() < wait_until {
        if deleted.lock().map_or(0, |d| d.len()) >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watcher.abort();

    let deleted = deleted.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    let mut early = 0u64;
    let mut last_delete: Option<Instant> = None;
    for (i, deadline) in deadlines.iter().enumerate() {
        let Some(deadline) = deadline else {
            continue;
        };
        match deleted.get(&keys.key(i as u64)) {
            Some(at) => {
                if at < deadline {
                    early += 1;
                }
                last_delete = last_delete.max(Some(*at));
                context
                    .recorder
                    .success(Op::Expiry, at.saturating_duration_since(*deadline));
            }
            None => context.recorder.failure(
                Op::Expiry,
                &format!(
                    "a leased key was not deleted {} s after its lease's deadline",
                    EXPIRY_GRACE.as_secs()
                ),
            ),
        }
    }
    context.recorder.stop_measuring();

    let first_deadline = deadlines.iter().flatten().min().copied();
    let expiry_phase = match (first_deadline, last_delete) {
        (Some(first), Some(last)) => last.saturating_duration_since(first),
        _ => Duration::ZERO,
    };
    let ops = context
        .recorder
        .totals()
        .iter()
        .map(|totals| {
            let phase = match totals.op {
                Op::Grant | Op::Write => grant_phase,
                Op::KeepAlive => keep_alive_phase,
                _ => expiry_phase,
            };
            OpReport::from_totals(totals, phase, None)
        })
        .collect();
    let mut notes = vec![format!(
        "{count} leases of {ttl_seconds} s: granted with their keys in {:.2} s, renewed in {:.2} s; \
         the deadlines spanned {:.2} s and the last key went {:.2} s after the last deadline",
        grant_phase.as_secs_f64(),
        keep_alive_phase.as_secs_f64(),
        match (first_deadline, last_deadline) {
            (Some(first), Some(last)) => last.duration_since(first).as_secs_f64(),
            _ => 0.0,
        },
        match (last_deadline, last_delete) {
            (Some(deadline), Some(at)) => at.saturating_duration_since(deadline).as_secs_f64(),
            _ => 0.0,
        },
    )];
    if early > 0 {
        notes.push(format!(
            "{early} keys were deleted before their lease's deadline as the client saw it \
             (the server starts the TTL when it takes the renewal, a little before the client hears back)"
        ));
    }
    Ok(RunReport {
        name: args.run_name(),
        label: args.run_label(),
        target: args.target.to_string(),
        mode: format!("{} workers", args.concurrency),
        connections: context.target.connections(),
        seconds: grant_phase.as_secs_f64()
            + keep_alive_phase.as_secs_f64()
            + expiry_phase.as_secs_f64(),
        ops,
        notes,
        plot: None,
    })
}

/// Runs `step(target, i, connection)` for every lease `i` on
/// `--concurrency` workers; answers the results in lease order.
async fn for_each_lease<T, F, Fut>(
    context: &Context,
    count: usize,
    step: F,
) -> Result<Vec<Option<T>>>
where
    F: Fn(Arc<Target>, usize, usize) -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let next = Arc::new(AtomicUsize::new(0));
    let results: Arc<Mutex<Vec<Option<T>>>> =
        Arc::new(Mutex::new((0..count).map(|_| None).collect()));
    let mut workers = Vec::new();
    for worker in 0..context.args.concurrency {
        let next = next.clone();
        let results = results.clone();
        let target = context.target.clone();
        let step = &step;
        // The workers run concurrently on this task (join_all below), so
        // steps may borrow from the caller.
        workers.push(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return;
                }
                let outcome = step(target.clone(), i, worker).await;
                if let Ok(mut results) = results.lock() {
                    if let Some(slot) = results.get_mut(i) {
                        *slot = outcome;
                    }
                }
            }
        });
    }
    futures_util::future::join_all(workers).await;
    let mut results = results.lock().map_err(|_| anyhow!("poisoned"))?;
    Ok(std::mem::take(&mut *results))
}

/// `request`, failed when its answer takes longer than the timeout.
async fn in_time<T>(request: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(REQUEST_TIMEOUT, request)
        .await
        .map_err(|_| anyhow!("no answer within {} s", REQUEST_TIMEOUT.as_secs()))?
}

/// Notes when each key's delete event arrives, until the watch fails.
async fn collect_deletes(mut stream: EventStream, deleted: Deleted) -> Result<()> {
    loop {
        let events = stream.next().await?;
        let now = Instant::now();
        let mut deleted = deleted.lock().map_err(|_| anyhow!("poisoned"))?;
        for event in events.into_iter().filter(|e| !e.is_put) {
            deleted.entry(event.key).or_insert(now);
        }
    }
}
