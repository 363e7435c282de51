//! etcd's API on a three-member keel: any member takes a write, as any
//! etcd member does (it forwards the proposal to its leader), whichever
//! member leads the key's shard. keel's own clients follow a leader hint
//! instead; etcd's have none to follow. Then the other two members are
//! killed: a watch stream that requires a leader (Go's
//! `WithRequireLeader`) ends with etcd's `no leader`, and one that does not
//! goes on; a call so marked is refused, an unmarked one served.

mod support;

use std::time::{Duration, Instant};

use keel_etcd_api::etcdserverpb::kv_client::KvClient;
use keel_etcd_api::etcdserverpb::{PutRequest, RangeRequest};
use support::metrics::{scrape, total};
use support::{block_on, peer_ports, runtime, Server};

#[test]
fn every_member_takes_writes_for_every_shard_through_etcd_s_api() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["a", "b", "c"];
    let peers: Vec<String> = peer_ports(names.len())
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    let initial = names
        .iter()
        .zip(&peers)
        .map(|(name, peer)| format!("{name}={peer}"))
        .collect::<Vec<_>>()
        .join(",");
    let members: Vec<Server> = names
        .iter()
        .zip(&peers)
        .map(|(name, peer)| {
            Server::start(
                &dir.path().join(name),
                2,
                &[
                    "--name",
                    name,
                    "--listen-peer",
                    peer,
                    "--initial-cluster",
                    &initial,
                    "--listen-metrics",
                    "127.0.0.1:0",
                ],
            )
        })
        .collect();
    let runtime = runtime();
    block_on(&runtime, async {
        let mut clients = Vec::new();
        for member in &members {
            let endpoint = format!("http://{}", member.endpoint());
            clients.push(KvClient::connect(endpoint).await.unwrap());
        }
        // Keys over both shards, each written through every member: each
        // member leads at most some shards, so some of its writes are for
        // a shard another member leads.
        let deadline = Instant::now() + Duration::from_secs(20);
        for (i, client) in clients.iter_mut().enumerate() {
            for k in 0..16 {
                let key = format!("key-{i}-{k}").into_bytes();
                let put = PutRequest {
                    key: key.clone(),
                    value: b"v".to_vec(),
                    ..PutRequest::default()
                };
                // While the cluster elects its first leaders, a write may
                // find none: etcd's `no leader` then, a wait and again.
                loop {
                    match client.put(put.clone()).await {
                        Ok(_) => break,
                        Err(status)
                            if status.message() == "etcdserver: no leader"
                                && Instant::now() < deadline =>
                        {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(status) => panic!("put through member {i}: {status:?}"),
                    }
                }
            }
        }
        // Every write is read back, linearizably, from every member.
        for client in &mut clients {
            for i in 0..names.len() {
                for k in 0..16 {
                    let key = format!("key-{i}-{k}").into_bytes();
                    let read = client
                        .range(RangeRequest {
                            key: key.clone(),
                            ..RangeRequest::default()
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    assert_eq!(read.kvs.len(), 1, "{}", String::from_utf8_lossy(&key));
                }
            }
        }

        check_peer_round_trips(&members);

        let endpoint = format!("http://{}", members[0].endpoint());
        let mut requiring = watch_stream(&endpoint, true).await;
        let mut other = watch_stream(&endpoint, false).await;
        members[1].signal("KILL");
        members[2].signal("KILL");
        let ended = tokio::time::timeout(Duration::from_secs(20), requiring.message())
            .await
            .expect("the stream that requires a leader ended within 20 s");
        let status = ended.expect_err("it ends with an error");
        assert_eq!(
            (status.code(), status.message()),
            (tonic::Code::Unavailable, "etcdserver: no leader")
        );
        let still = tokio::time::timeout(Duration::from_secs(2), other.message()).await;
        assert!(still.is_err(), "the other stream goes on: {still:?}");
        // A call so marked is refused at once while the leader is lost; an
        // unmarked serializable read is still served.
        let mut marked = tonic::Request::new(RangeRequest {
            key: b"key-0-0".to_vec(),
            serializable: true,
            ..RangeRequest::default()
        });
        marked
            .metadata_mut()
            .insert("hasleader", "true".parse().unwrap());
        let refused = clients[0].range(marked).await.unwrap_err();
        assert_eq!(
            (refused.code(), refused.message()),
            (tonic::Code::Unavailable, "etcdserver: no leader")
        );
        let served = clients[0]
            .range(RangeRequest {
                key: b"key-0-0".to_vec(),
                serializable: true,
                ..RangeRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(served.kvs.len(), 1);
    });
    // The member left alone says it has lost its leaders.
    let metrics = members[0].metrics.expect("metrics address");
    let deadline = Instant::now() + Duration::from_secs(20);
    while total(&scrape(metrics), "etcd_server_has_leader", &[]) != 0.0 {
        assert!(
            Instant::now() < deadline,
            "etcd_server_has_leader stayed 1 for 20 s after two members were killed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every member that leads a shard has timed heartbeats to both others
/// (`etcd_network_peer_round_trip_time_seconds`, by member id), and every
/// member knows its shards' leaders.
fn check_peer_round_trips(members: &[Server]) {
    let scrapes: Vec<_> = members
        .iter()
        .map(|m| scrape(m.metrics.expect("metrics address")))
        .collect();
    let ids: Vec<String> = scrapes
        .iter()
        .map(|s| {
            s.samples
                .iter()
                .find(|sample| sample.metric == "etcd_server_id")
                .and_then(|sample| sample.labels.get("server_id"))
                .expect("etcd_server_id")
                .to_string()
        })
        .collect();
    let mut leaders = 0;
    for (i, scrape) in scrapes.iter().enumerate() {
        assert_eq!(total(scrape, "etcd_server_has_leader", &[]), 1.0);
        if total(scrape, "keel_shard_is_leader", &[]) == 0.0 {
            continue;
        }
        leaders += 1;
        for (j, peer) in ids.iter().enumerate().filter(|(j, _)| *j != i) {
            let name = "etcd_network_peer_round_trip_time_seconds_count";
            assert!(
                total(scrape, name, &[("To", peer.as_str())]) > 0.0,
                "member {i} leads a shard but timed no heartbeat to member {j}"
            );
        }
    }
    assert!(leaders >= 1);
}

/// A watch stream on `endpoint` with one watch created, marked as Go's
/// `WithRequireLeader` marks it when `require_leader`.
async fn watch_stream(
    endpoint: &str,
    require_leader: bool,
) -> tonic::Streaming<keel_etcd_api::etcdserverpb::WatchResponse> {
    use keel_etcd_api::etcdserverpb::watch_client::WatchClient;
    use keel_etcd_api::etcdserverpb::watch_request::RequestUnion;
    use keel_etcd_api::etcdserverpb::{WatchCreateRequest, WatchRequest};

    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"watched".to_vec(),
            ..WatchCreateRequest::default()
        })),
    };
    // The stream's request side stays open: a sender kept alive with it.
    let (asks, asked) = tokio::sync::mpsc::channel::<WatchRequest>(1);
    asks.send(create).await.unwrap();
    let asked = futures_util::stream::unfold((asked, asks), |(mut asked, asks)| async move {
        asked.recv().await.map(|ask| (ask, (asked, asks)))
    });
    let mut request = tonic::Request::new(asked);
    if require_leader {
        request
            .metadata_mut()
            .insert("hasleader", "true".parse().unwrap());
    }
    let mut watch = WatchClient::connect(endpoint.to_string()).await.unwrap();
    let mut answers = watch.watch(request).await.unwrap().into_inner();
    let created = answers.message().await.unwrap().unwrap();
    assert!(created.created, "{created:?}");
    answers
}
