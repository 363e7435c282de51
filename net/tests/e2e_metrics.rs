//! The metrics endpoint (docs/metrics.md): what a scrape says, read with a
//! Prometheus text-format parser, against what the test did to the server.

mod support;

use std::time::{Duration, Instant};

use keel_etcd_api::etcdserverpb::kv_client::KvClient;
use keel_etcd_api::etcdserverpb::watch_client::WatchClient;
use keel_etcd_api::etcdserverpb::watch_request::RequestUnion;
use keel_etcd_api::etcdserverpb::{PutRequest, RangeRequest, WatchCreateRequest, WatchRequest};
use prometheus_parse::Scrape;
use support::metrics::{buckets, has, scrape, total};
use support::{block_on, runtime, Server};

const PUTS: usize = 7;

/// A server of two shards with its metrics on a port of their own: its
/// directory (kept while it runs), the server and the metrics address.
fn server_with_metrics() -> (tempfile::TempDir, Server, std::net::SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 2, &["--listen-metrics", "127.0.0.1:0"]);
    let metrics = server.metrics.expect("the metrics address");
    (dir, server, metrics)
}

/// `total` in `after` less `total` in `before`.
fn grew(before: &Scrape, after: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    total(after, name, labels) - total(before, name, labels)
}

/// Scrapes until `holds` is true of a scrape, for up to 10 s.
fn scrape_until(address: std::net::SocketAddr, what: &str, holds: impl Fn(&Scrape) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if holds(&scrape(address)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no scrape within 10 s showed {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_scrape_counts_what_clients_did() {
    let (_dir, server, metrics) = server_with_metrics();
    let endpoint = format!("http://{}", server.endpoint());
    let runtime = runtime();
    let before = scrape(metrics);
    assert_eq!(total(&before, "etcd_server_has_leader", &[]), 1.0);
    assert!(total(&before, "etcd_mvcc_db_total_size_in_bytes", &[]) > 0.0);
    block_on(&runtime, async {
        let mut kv = KvClient::connect(endpoint.clone()).await.unwrap();
        for i in 0..PUTS {
            kv.put(PutRequest {
                key: format!("key-{i}").into_bytes(),
                value: b"v".to_vec(),
                ..PutRequest::default()
            })
            .await
            .unwrap();
        }
        kv.range(RangeRequest {
            key: b"key-0".to_vec(),
            ..RangeRequest::default()
        })
        .await
        .unwrap();
        let refused = kv
            .range(RangeRequest {
                key: b"key-0".to_vec(),
                revision: 1 << 52,
                ..RangeRequest::default()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::OutOfRange);
    });
    let after = scrape(metrics);
    let put = [("grpc_method", "Put"), ("grpc_service", "etcdserverpb.KV")];
    assert_eq!(
        grew(&before, &after, "grpc_server_started_total", &put),
        PUTS as f64
    );
    let put_ok = [put[0], put[1], ("grpc_code", "OK"), ("grpc_type", "unary")];
    assert_eq!(
        grew(&before, &after, "grpc_server_handled_total", &put_ok),
        PUTS as f64
    );
    let range_refused = [("grpc_method", "Range"), ("grpc_code", "OutOfRange")];
    assert_eq!(
        grew(&before, &after, "grpc_server_handled_total", &range_refused),
        1.0
    );
    // Each put is one proposal and one applied entry on its shard.
    assert!(grew(&before, &after, "keel_shard_proposals_total", &[]) >= PUTS as f64);
    assert!(grew(&before, &after, "keel_shard_applied_entries_total", &[]) >= PUTS as f64);
    // Every put waited for a durable WAL write (several may share one).
    let syncs = grew(
        &before,
        &after,
        "etcd_disk_wal_fsync_duration_seconds_count",
        &[],
    );
    assert!(syncs >= 1.0, "{syncs}");
    let fsync = buckets(&after, "etcd_disk_wal_fsync_duration_seconds", &[]);
    assert_eq!(fsync.len(), 15, "etcd's 14 buckets and +Inf: {fsync:?}");
    assert_eq!(
        fsync.last().map(|b| b.1),
        Some(total(
            &after,
            "etcd_disk_wal_fsync_duration_seconds_count",
            &[]
        ))
    );
    assert!(fsync.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative");
    // The linearizable range went through a ReadIndex round.
    assert!(
        grew(
            &before,
            &after,
            "keel_shard_read_index_duration_seconds_count",
            &[]
        ) >= 1.0
    );
    // Per shard, with its core: both shards of this two-core server.
    for shard in ["0", "1"] {
        assert!(has(
            &after,
            "keel_shard_applied_index",
            &[("shard", shard), ("core", shard)]
        ));
    }
    // The client port serves the same metrics.
    let on_client_port = scrape(server.client);
    assert!(total(&on_client_port, "grpc_server_started_total", &put) >= PUTS as f64);
}

#[test]
fn a_watch_is_counted_while_open_and_handled_once_its_client_leaves() {
    let (_dir, server, metrics) = server_with_metrics();
    let endpoint = format!("http://{}", server.endpoint());
    let runtime = runtime();
    let watch = [("grpc_method", "Watch"), ("grpc_type", "bidi_stream")];
    let (asks, answers) = block_on(&runtime, async {
        let (asks, asked) = tokio::sync::mpsc::channel::<WatchRequest>(1);
        asks.send(WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: b"watched".to_vec(),
                ..WatchCreateRequest::default()
            })),
        })
        .await
        .unwrap();
        let asked = tokio_stream_of(asked);
        let mut client = WatchClient::connect(endpoint).await.unwrap();
        let mut answers = client.watch(asked).await.unwrap().into_inner();
        let created = answers.message().await.unwrap().unwrap();
        assert!(created.created);
        (asks, answers)
    });
    scrape_until(metrics, "the open watch", |s| {
        total(s, "etcd_debugging_mvcc_watcher_total", &[]) >= 1.0
            && total(s, "grpc_server_started_total", &watch) == 1.0
    });
    assert_eq!(
        total(&scrape(metrics), "grpc_server_handled_total", &watch),
        0.0
    );
    // The client goes away: the call is handled, as canceled.
    drop(answers);
    drop(asks);
    drop(runtime);
    scrape_until(metrics, "the watch handled as canceled", |s| {
        let canceled = [watch[0], watch[1], ("grpc_code", "Canceled")];
        total(s, "grpc_server_handled_total", &canceled) == 1.0
            && total(s, "etcd_debugging_mvcc_watcher_total", &[]) == 0.0
    });
}

/// A stream of what `asked` receives (the watch's request side stays
/// open while its sender lives).
fn tokio_stream_of(
    asked: tokio::sync::mpsc::Receiver<WatchRequest>,
) -> impl futures_util::Stream<Item = WatchRequest> {
    futures_util::stream::unfold(asked, |mut asked| async move {
        asked.recv().await.map(|ask| (ask, asked))
    })
}

#[test]
fn a_call_its_client_gives_up_on_is_handled_as_canceled() {
    use keel_etcd_api::etcdserverpb::lease_client::LeaseClient;
    use keel_etcd_api::etcdserverpb::LeaseGrantRequest;
    use keel_etcd_api::v3lockpb::lock_client::LockClient;
    use keel_etcd_api::v3lockpb::LockRequest;

    let (_dir, server, metrics) = server_with_metrics();
    let endpoint = format!("http://{}", server.endpoint());
    let runtime = runtime();
    block_on(&runtime, async {
        let leases = LeaseClient::connect(endpoint.clone()).await.unwrap();
        let grant = || {
            let mut leases = leases.clone();
            async move {
                leases
                    .lease_grant(LeaseGrantRequest {
                        ttl: 60,
                        ..LeaseGrantRequest::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .id
            }
        };
        let (holder, waiter) = (grant().await, grant().await);
        let mut locks = LockClient::connect(endpoint).await.unwrap();
        locks
            .lock(LockRequest {
                name: b"the-lock".to_vec(),
                lease: holder,
            })
            .await
            .unwrap();
        // The second waits for the first, and its client gives up first.
        let waited = tokio::time::timeout(
            Duration::from_millis(500),
            locks.lock(LockRequest {
                name: b"the-lock".to_vec(),
                lease: waiter,
            }),
        )
        .await;
        assert!(waited.is_err(), "the lock was held");
    });
    let lock = [("grpc_method", "Lock"), ("grpc_service", "v3lockpb.Lock")];
    scrape_until(
        metrics,
        "the abandoned lock call handled as canceled",
        |s| {
            let canceled = [lock[0], lock[1], ("grpc_code", "Canceled")];
            total(s, "grpc_server_started_total", &lock) == 2.0
                && total(s, "grpc_server_handled_total", &canceled) == 1.0
        },
    );
}
