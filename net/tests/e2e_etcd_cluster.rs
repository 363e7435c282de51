//! etcd's API on a three-member keel: any member takes a write, as any
//! etcd member does (it forwards the proposal to its leader), whichever
//! member leads the key's shard. keel's own clients follow a leader hint
//! instead; etcd's have none to follow.

mod support;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use keel_etcd_api::etcdserverpb::kv_client::KvClient;
use keel_etcd_api::etcdserverpb::{PutRequest, RangeRequest};
use support::{block_on, runtime, Server};

/// A port whose next one is free too (a member's two cores listen on
/// consecutive peer ports).
fn peer_port() -> u16 {
    for _ in 0..100 {
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two free ports");
}

#[test]
fn every_member_takes_writes_for_every_shard_through_etcd_s_api() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["a", "b", "c"];
    let peers: Vec<String> = names
        .iter()
        .map(|_| format!("127.0.0.1:{}", peer_port()))
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
    });
}
