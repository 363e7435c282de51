//! A lease burst, the way service registration uses leases when many
//! clients start at once: `--leases` leases are granted, each with a key
//! attached; then each is renewed once (etcd's over its connection's one
//! keep-alive stream, as etcd's Go client renews); then all are left to
//! expire together, so etcd's limit of 1,000 expiries a second shows.
//! (`lease_churn` is the steady-state counterpart, under that limit.)
//! Grants, attaching puts and renewals are timed like any request. An
//! expiry is timed from the lease's deadline (its renewal's acknowledgement
//! plus the TTL) to the receipt of its key's delete event by a watcher; it
//! has no rate, since leases expire when they are due. A renewed key never
//! deleted is an error.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use super::{timed, value_with_sequence, Context};
use crate::keys::{Distribution, KeySpace};
use crate::record::{Op, OpTotals};
use crate::report::{OpReport, RunReport};
use crate::target::{EventStream, KeepAlive, Target};

/// How long after the last deadline the run waits for the last expiry.
const EXPIRY_GRACE: Duration = Duration::from_secs(60);

/// When each leased key's delete event arrived.
pub(super) type Deleted = Arc<Mutex<HashMap<Vec<u8>, Instant>>>;

/// A granted lease with its key attached, ready to be renewed.
struct Granted {
    keep_alive: KeepAlive,
}

pub(super) async fn run(context: &Context) -> Result<RunReport> {
    let args = &context.args;
    let count = args.leases;
    let ttl_seconds = args.lease_ttl_seconds();
    let ttl = Duration::from_secs(ttl_seconds.unsigned_abs());
    let keys = Arc::new(KeySpace::new(
        "bench/l/",
        count as u64,
        args.key_size,
        Distribution::Uniform,
        1.0,
    )?);

    // The watcher of the leased keys' deletions is in place first.
    let deleted: Deleted = Arc::default();
    let watch = context.target.watch_prefix(0, keys.prefix(), false).await?;
    let watcher = tokio::spawn(collect_deletes(watch, deleted.clone()));

    context.progress.phase("grant");
    let value = Arc::new(value_with_sequence(0, args.value_size));
    let granted_from = Instant::now();
    let cpu_before = context.server_cpu_now()?;
    let granted: Vec<Option<Granted>> = for_each_lease(context, count, {
        let recorder = context.recorder.clone();
        let keys = keys.clone();
        move |target, i, connection| {
            let recorder = recorder.clone();
            let key = keys.key(i as u64);
            let value = value.clone();
            async move {
                let began = Instant::now();
                let grant = target.lease_grant(connection, ttl_seconds);
                let id = timed(&recorder, Op::Grant, began, true, grant).await?;
                let began = Instant::now();
                let put = target.put(connection, &key, &value, Some(id));
                timed(&recorder, Op::Write, began, true, put).await?;
                // Not timed: readying the renewal is setup (and no I/O:
                // etcd's keep-alive stream opened with the connection).
                // A failure still counts, as a failed renewal.
                match target.keep_alive_handle(connection, id).await {
                    Ok(keep_alive) => Some(Granted { keep_alive }),
                    Err(error) => {
                        recorder.failure(Op::KeepAlive, &error);
                        None
                    }
                }
            }
        }
    })
    .await?;
    let grant_phase = granted_from.elapsed();

    context.progress.phase("keep-alive");
    let granted: Arc<Vec<Mutex<Option<Granted>>>> =
        Arc::new(granted.into_iter().map(Mutex::new).collect());
    let renewed_from = Instant::now();
    let deadlines: Vec<Option<Instant>> = for_each_lease(context, count, {
        let recorder = context.recorder.clone();
        let granted = granted.clone();
        move |_target, i, _connection| {
            let recorder = recorder.clone();
            let lease = granted
                .get(i)
                .and_then(|slot| slot.lock().ok().and_then(|mut g| g.take()));
            async move {
                let mut lease = lease?;
                let began = Instant::now();
                let renewal = lease.keep_alive.renew();
                timed(&recorder, Op::KeepAlive, began, true, renewal).await?;
                Some(Instant::now() + ttl)
            }
        }
    })
    .await?;
    let keep_alive_phase = renewed_from.elapsed();
    // The measured window is the two phases; the expiries come after it.
    let server_cpu = match (cpu_before, context.server_cpu_now()?) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    // The etcd streams are no longer needed; closing them renews nothing.
    drop(granted);

    context.progress.phase("expiry");
    let renewed: HashSet<Vec<u8>> = deadlines
        .iter()
        .enumerate()
        .filter(|(_, deadline)| deadline.is_some())
        .map(|(i, _)| keys.key(i as u64))
        .collect();
    let last_deadline = deadlines.iter().flatten().max().copied();
    let wait_until = last_deadline.unwrap_or_else(Instant::now) + EXPIRY_GRACE;
    while Instant::now() < wait_until && !watcher.is_finished() {
        let gone = deleted
            .lock()
            .map_or(0, |d| d.keys().filter(|k| renewed.contains(*k)).count());
        if gone >= renewed.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let watch_failure = if watcher.is_finished() {
        match watcher.await {
            Ok(Err(error)) => Some(format!("the watch of the leased keys failed: {error:#}")),
            Ok(Ok(())) | Err(_) => None,
        }
    } else {
        watcher.abort();
        None
    };

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

    let first_deadline = deadlines.iter().flatten().min().copied();
    let row = |totals: &OpTotals| {
        let phase = match totals.op {
            Op::Grant | Op::Write => Some(grant_phase),
            Op::KeepAlive => Some(keep_alive_phase),
            _ => None,
        };
        OpReport::from_totals(totals, phase, None)
    };
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
    notes.extend(watch_failure);
    let mode = format!("{} workers", args.concurrency);
    let seconds = grant_phase.as_secs_f64() + keep_alive_phase.as_secs_f64();
    Ok(context.report(mode, seconds, row, notes, server_cpu))
}

/// Runs `step(target, i, connection)` for every lease `i` on
/// `--concurrency` worker tasks (spread over the runtime's threads);
/// answers the results in lease order.
async fn for_each_lease<T, F, Fut>(
    context: &Context,
    count: usize,
    step: F,
) -> Result<Vec<Option<T>>>
where
    T: Send + 'static,
    F: Fn(Arc<Target>, usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<T>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let results: Arc<Mutex<Vec<Option<T>>>> =
        Arc::new(Mutex::new((0..count).map(|_| None).collect()));
    let step = Arc::new(step);
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..context.args.concurrency {
        let next = next.clone();
        let results = results.clone();
        let target = context.target.clone();
        let step = step.clone();
        workers.spawn(async move {
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
    while let Some(done) = workers.join_next().await {
        done?;
    }
    let mut results = results.lock().map_err(|_| anyhow!("poisoned"))?;
    Ok(std::mem::take(&mut *results))
}

/// Notes when each key's delete event arrives, until the watch fails.
pub(super) async fn collect_deletes(mut stream: EventStream, deleted: Deleted) -> Result<()> {
    loop {
        let events = stream.next().await?;
        let now = Instant::now();
        let mut deleted = deleted.lock().map_err(|_| anyhow!("poisoned"))?;
        for event in events.into_iter().filter(|e| !e.is_put) {
            deleted.entry(event.key).or_insert(now);
        }
    }
}
