//! Watches on three keel processes, checked against etcd's watch
//! guarantees (`keel_tests::watch_check`): two watchers of one prefix,
//! given the members in different orders, record every response while a
//! writer puts, deletes and writes two keys in one transaction, and a
//! member is SIGKILLed and restarted, twice. A watcher whose member dies
//! re-opens its watch on another member after the last revision it got.
//! A third watch, opened at the end from the first revision, is the
//! truth: it must hold every acknowledged write, and each recording must
//! be ordered, unique, atomic, reliable and bookmarked against it.
//!
//! `KEEL_WATCH_ROUNDS` sets how many kill rounds run (default 2).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel_client::proto::WatchCreate;
use keel_client::{Client, ClientOptions, Event, Op, Txn, WatchResponse};
use keel_tests::process_cluster::ProcessCluster;
use keel_tests::watch_check::{check, Recording, SeenEvent, SeenResponse};

const PREFIX: &str = "watched/";

fn rounds() -> usize {
    std::env::var("KEEL_WATCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

fn seen(event: &Event) -> SeenEvent {
    SeenEvent {
        revision: event.kv.mod_revision,
        key: event.kv.key.clone(),
        value: (event.kind == keel_client::EventKind::Put).then(|| event.kv.value.clone()),
    }
}

fn seen_response(response: &WatchResponse) -> SeenResponse {
    SeenResponse {
        revision: response.revision,
        events: response.events.iter().map(seen).collect(),
    }
}

async fn client_for(endpoints: Vec<String>) -> Client {
    let options = ClientOptions {
        connect_timeout: Duration::from_millis(300),
        request_timeout: Some(Duration::from_secs(5)),
        ..ClientOptions::default()
    };
    Client::connect_with(&endpoints, options)
        .await
        .expect("a member answers")
}

fn watch_from(start: u64) -> WatchCreate {
    let (key, range_end) = keel_client::prefix_range(PREFIX.as_bytes());
    WatchCreate {
        key,
        range_end,
        start_revision: start,
        ..WatchCreate::default()
    }
}

/// Records a watch from `start` until `stop` is set and it has reported
/// everything up to `until` (asking for progress now and then), or
/// `deadline` passes.
async fn record(
    client: Client,
    start: u64,
    stop: Arc<AtomicBool>,
    until: Arc<AtomicU64>,
    deadline: Instant,
) -> (Recording, u64) {
    let mut watcher = client.watch(watch_from(start)).await.expect("watch");
    let mut recording = Recording {
        start,
        responses: Vec::new(),
    };
    let mut through = 0;
    while Instant::now() < deadline {
        if stop.load(Ordering::SeqCst) && through >= until.load(Ordering::SeqCst) {
            break;
        }
        let next = tokio::time::timeout(Duration::from_millis(300), watcher.next()).await;
        match next {
            Ok(Ok(response)) => {
                through = through.max(response.revision);
                recording.responses.push(seen_response(&response));
            }
            Ok(Err(error)) => panic!("the watch failed: {error}"),
            // Quiet: a bookmark says how far it is.
            Err(_) => {
                let _ = watcher.request_progress().await;
            }
        }
    }
    (recording, watcher.reconnects())
}

/// Keeps `recording`'s events at or below `last`, and its bookmarks no
/// higher: writes of unknown outcome may land after the truth stopped.
fn up_to(mut recording: Recording, last: u64) -> Recording {
    for response in &mut recording.responses {
        response.events.retain(|e| e.revision <= last);
        response.revision = response.revision.min(last);
    }
    recording
}

#[test]
fn watches_keep_etcds_guarantees_through_killed_members_and_resume_on_another() {
    let cluster = ProcessCluster::start(3, 3, 1);
    cluster.wait_for_leaders(Duration::from_secs(20));
    let runtime = keel_tests::client_runtime();
    let endpoints = cluster.endpoints();
    let writer = runtime.block_on(client_for(endpoints.clone()));
    let base = runtime
        .block_on(writer.put(format!("{PREFIX}base"), "0"))
        .expect("first put");
    let start = base + 1;

    // Two watchers, each given the members starting from another one.
    let stop = Arc::new(AtomicBool::new(false));
    let until = Arc::new(AtomicU64::new(u64::MAX));
    let deadline = Instant::now() + Duration::from_secs(120);
    let watchers: Vec<_> = [1usize, 2]
        .into_iter()
        .map(|first| {
            let mut order = endpoints.clone();
            order.rotate_left(first);
            let (stop, until) = (stop.clone(), until.clone());
            runtime.spawn(async move {
                let client = client_for(order).await;
                record(client, start, stop, until, deadline).await
            })
        })
        .collect();

    // The writer: puts, deletes and two-key transactions, while members
    // are killed and restarted.
    let acknowledged: Arc<Mutex<Vec<SeenEvent>>> = Arc::default();
    let writing = Arc::new(AtomicBool::new(true));
    let load = {
        let (writer, acknowledged, writing) =
            (writer.clone(), acknowledged.clone(), writing.clone());
        runtime.spawn(async move {
            let mut n = 0u64;
            while writing.load(Ordering::SeqCst) {
                n += 1;
                let key = format!("{PREFIX}k{}", n % 40);
                let value = format!("v{n}");
                if n.is_multiple_of(7) {
                    // A delete's event is checked through the truth only.
                    let _ = writer.delete(key.clone()).await;
                } else if n.is_multiple_of(5) {
                    // Two keys of one shard in one revision.
                    let (a, b) = (format!("{PREFIX}{{t{n}}}a"), format!("{PREFIX}{{t{n}}}b"));
                    let txn = Txn::new()
                        .and_then([
                            Op::put(a.clone(), value.clone()),
                            Op::put(b.clone(), value.clone()),
                        ])
                        .build();
                    if let Ok((revision, _)) = writer.txn(txn).await {
                        let mut acked = acknowledged.lock().unwrap();
                        for key in [a, b] {
                            acked.push(SeenEvent {
                                revision,
                                key: key.into_bytes(),
                                value: Some(value.clone().into_bytes()),
                            });
                        }
                    }
                } else if let Ok(revision) = writer.put(key.clone(), value.clone()).await {
                    acknowledged.lock().unwrap().push(SeenEvent {
                        revision,
                        key: key.into_bytes(),
                        value: Some(value.into_bytes()),
                    });
                }
            }
        })
    };
    for round in 0..rounds() {
        std::thread::sleep(Duration::from_millis(1_500));
        let victim = round % cluster.size();
        cluster.kill(victim);
        std::thread::sleep(Duration::from_millis(1_500));
        cluster.start_member(victim);
    }
    std::thread::sleep(Duration::from_millis(1_500));
    writing.store(false, Ordering::SeqCst);
    runtime.block_on(load).expect("writer");
    let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
    let last = acknowledged
        .iter()
        .map(|e| e.revision)
        .max()
        .unwrap_or(base);
    until.store(last, Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    let recordings: Vec<(Recording, u64)> = watchers
        .into_iter()
        .map(|w| runtime.block_on(w).expect("watcher"))
        .collect();

    // The truth: a watch from the start, read to the last acknowledged
    // revision, on whichever member answers.
    let (truth, _) = runtime.block_on(async {
        let client = client_for(endpoints.clone()).await;
        let stop = Arc::new(AtomicBool::new(true));
        let until = Arc::new(AtomicU64::new(last));
        record(
            client,
            start,
            stop,
            until,
            Instant::now() + Duration::from_secs(30),
        )
        .await
    });
    let truth: Vec<SeenEvent> = up_to(truth, last)
        .responses
        .into_iter()
        .flat_map(|r| r.events)
        .collect();
    let in_truth: std::collections::BTreeSet<&SeenEvent> = truth.iter().collect();
    for write in &acknowledged {
        assert!(
            in_truth.contains(write),
            "an acknowledged write is not in the truth: {write:?}"
        );
    }
    let mut reconnects = 0;
    for (n, (recording, reconnected)) in recordings.into_iter().enumerate() {
        let recording = up_to(recording, last);
        let through = recording
            .responses
            .iter()
            .map(|r| r.revision)
            .max()
            .unwrap_or(0);
        assert!(
            through >= last,
            "watcher {n} reported only up to {through} of {last}"
        );
        if let Err(violation) = check(&truth, &recording) {
            panic!("watcher {n}: {violation}");
        }
        reconnects += reconnected;
    }
    eprintln!(
        "{} acknowledged writes, {} events in the truth, {} kills, {reconnects} watch re-opens",
        acknowledged.len(),
        truth.len(),
        rounds()
    );
    assert!(reconnects >= 1, "no watch had to re-open on another member");
}
