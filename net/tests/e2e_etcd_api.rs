//! etcd's v3 gRPC API on keel's client port (docs/etcd.md), driven by a
//! gRPC client built from keel-etcd-api and by Debian's etcdctl 3.4, beside
//! keel's own protocol on the same port.

mod support;

use std::process::Command;

use keel_etcd_api::etcdserverpb::kv_client::KvClient;
use keel_etcd_api::etcdserverpb::{
    compare, request_op, response_op, CompactionRequest, Compare, DeleteRangeRequest, PutRequest,
    RangeRequest, RequestOp, TxnRequest,
};
use support::{block_on, keelctl, runtime, Server};

/// A server of 2 shards for a gRPC client: its directory (kept while the
/// test runs), the server, a runtime, and its endpoint as a URL.
fn grpc_server() -> (tempfile::TempDir, Server, tokio::runtime::Runtime, String) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 2, &[]);
    let endpoint = format!("http://{}", server.endpoint());
    (dir, server, runtime(), endpoint)
}

#[test]
fn kv_calls_answer_as_etcd_does_beside_keels_own_protocol() {
    let (_dir, server, runtime, endpoint) = grpc_server();
    block_on(&runtime, async {
        let mut kv = KvClient::connect(endpoint).await.expect("gRPC connect");
        let put = kv
            .put(PutRequest {
                key: b"a".to_vec(),
                value: b"1".to_vec(),
                ..PutRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        let header = put.header.expect("a header");
        assert!(header.revision > 0 && header.member_id != 0 && header.cluster_id != 0);
        // A put again, with the previous value.
        let again = kv
            .put(PutRequest {
                key: b"a".to_vec(),
                value: b"2".to_vec(),
                prev_kv: true,
                ..PutRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again.prev_kv.unwrap().value, b"1");
        let got = kv
            .range(RangeRequest {
                key: b"a".to_vec(),
                ..RangeRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.count, 1);
        let a = &got.kvs[0];
        assert_eq!((a.value.as_slice(), a.version), (&b"2"[..], 2));
        assert_eq!(a.create_revision, header.revision);
        assert_eq!(got.header.unwrap().revision, a.mod_revision);

        // Kubernetes' create: a txn on mod_revision 0, then its failure
        // branch reads the key.
        let create = |value: &'static [u8]| TxnRequest {
            compare: vec![Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Mod as i32,
                key: b"b".to_vec(),
                target_union: Some(compare::TargetUnion::ModRevision(0)),
                ..Compare::default()
            }],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: b"b".to_vec(),
                    value: value.to_vec(),
                    ..PutRequest::default()
                })),
            }],
            failure: vec![RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key: b"b".to_vec(),
                    ..RangeRequest::default()
                })),
            }],
        };
        let first = kv.txn(create(b"x")).await.unwrap().into_inner();
        assert!(first.succeeded);
        let second = kv.txn(create(b"y")).await.unwrap().into_inner();
        assert!(!second.succeeded);
        match &second.responses[0].response {
            Some(response_op::Response::ResponseRange(range)) => {
                assert_eq!(range.kvs[0].value, b"x");
            }
            other => panic!("not a range: {other:?}"),
        }

        let deleted = kv
            .delete_range(DeleteRangeRequest {
                key: b"a".to_vec(),
                range_end: b"c".to_vec(),
                ..DeleteRangeRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(deleted.deleted, 2);

        // etcd's code and message, which clients map errors by.
        let future = kv
            .compact(CompactionRequest {
                revision: i64::MAX / 2,
                physical: false,
            })
            .await
            .unwrap_err();
        assert_eq!(future.code(), tonic::Code::OutOfRange);
        assert_eq!(
            future.message(),
            "etcdserver: mvcc: required revision is a future revision"
        );
        let empty = kv.put(PutRequest::default()).await.unwrap_err();
        assert_eq!(
            (empty.code(), empty.message()),
            (
                tonic::Code::InvalidArgument,
                "etcdserver: key is not provided"
            )
        );
    });
    // keel's own protocol on the same port still works.
    let put = Command::new(keelctl())
        .args(["--endpoints", &server.endpoint(), "put", "k", "v"])
        .output()
        .unwrap();
    assert!(put.status.success(), "{put:?}");
}

#[test]
fn etcdctl_puts_gets_and_deletes_on_keels_port() {
    if Command::new("etcdctl").arg("version").output().is_err() {
        eprintln!("etcdctl is not installed (apt-get install etcd-client); not run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 2, &[]);
    let etcdctl = |args: &[&str]| {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &server.endpoint(), "--command-timeout", "5s"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(etcdctl(&["put", "foo", "bar"]), "OK\n");
    assert_eq!(etcdctl(&["get", "foo"]), "foo\nbar\n");
    assert_eq!(etcdctl(&["get", "f", "--prefix", "--keys-only"]), "foo\n\n");
    assert_eq!(etcdctl(&["del", "foo"]), "1\n");
    assert_eq!(etcdctl(&["get", "foo"]), "");

    // Leases: grant, attach, time to live with keys, keep-alive, list,
    // revoke; the key goes with the lease.
    let granted = etcdctl(&["lease", "grant", "30"]);
    let id = granted.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(granted, format!("lease {id} granted with TTL(30s)\n"));
    assert_eq!(etcdctl(&["put", "--lease", &id, "leased", "v"]), "OK\n");
    let ttl = etcdctl(&["lease", "timetolive", &id, "--keys"]);
    assert!(
        ttl.starts_with(&format!("lease {id} granted with TTL(30s), remaining("))
            && ttl.ends_with("attached keys([leased])\n"),
        "{ttl}"
    );
    assert_eq!(
        etcdctl(&["lease", "keep-alive", "--once", &id]),
        format!("lease {id} keepalived with TTL(30)\n")
    );
    assert_eq!(
        etcdctl(&["lease", "list"]),
        format!("found 1 leases\n{id}\n")
    );
    assert_eq!(
        etcdctl(&["lease", "revoke", &id]),
        format!("lease {id} revoked\n")
    );
    assert_eq!(etcdctl(&["get", "leased"]), "");
    assert_eq!(
        etcdctl(&["lease", "timetolive", &id]),
        format!("lease {id} already expired\n")
    );

    // Go's concurrency.Mutex: its transaction reads the lock's prefix,
    // across shards, after putting its own key.
    assert_eq!(
        etcdctl(&["lock", "mylock", "echo", "holding the lock"]),
        "holding the lock\n"
    );

    // Maintenance and the member list.
    let status = etcdctl(&["endpoint", "status"]);
    assert!(
        status.starts_with(&format!("{}, ", server.endpoint())),
        "{status}"
    );
    assert!(status.contains(", 3.6.0, "), "{status}");
    // etcdctl 3.4 prints a healthy endpoint on stderr.
    let health = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &server.endpoint(), "endpoint", "health"])
        .output()
        .unwrap();
    assert!(health.status.success(), "{health:?}");
    assert!(
        String::from_utf8_lossy(&health.stderr).contains("is healthy"),
        "{health:?}"
    );
    assert_eq!(etcdctl(&["alarm", "list"]), "");
    assert!(etcdctl(&["defrag"]).starts_with("Finished defragmenting etcd member"));
    let members = etcdctl(&["member", "list"]);
    assert!(
        members.ends_with(&format!(
            ", started, default, , http://{}, false\n",
            server.endpoint()
        )),
        "{members}"
    );
}

/// etcd's HTTP endpoints, over plain HTTP/1.1.
#[test]
fn health_and_version_answer_over_http_1() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    // The version reported is the one configured.
    let server = Server::start(dir.path(), 2, &["--etcd-version", "3.5.17"]);
    let get = |path: &str| {
        let mut stream = std::net::TcpStream::connect(server.endpoint()).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: keel\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    let health = get("/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(
        health.ends_with("{\"health\":\"true\",\"reason\":\"\"}"),
        "{health}"
    );
    let version = get("/version");
    assert!(
        version.ends_with("{\"etcdserver\":\"3.5.17\",\"etcdcluster\":\"3.5.17\"}"),
        "{version}"
    );
    assert!(get("/livez").ends_with("ok"));
}

/// Watches over etcd's API: created in order, events with their previous
/// values from a past revision, filters, progress, cancel, and a watch
/// from before a compaction cancelled with etcd's reason.
#[test]
fn watches_answer_as_etcds() {
    use keel_etcd_api::etcdserverpb::watch_client::WatchClient;
    use keel_etcd_api::etcdserverpb::watch_create_request::FilterType;
    use keel_etcd_api::etcdserverpb::watch_request::RequestUnion;
    use keel_etcd_api::etcdserverpb::{
        WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
    };
    use keel_etcd_api::mvccpb::event::EventType;

    let (_dir, _server, runtime, endpoint) = grpc_server();
    block_on(&runtime, async {
        let mut kv = KvClient::connect(endpoint.clone()).await.unwrap();
        let put = |key: &str, value: &str| PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..PutRequest::default()
        };
        let first = kv.put(put("w/a", "1")).await.unwrap().into_inner();
        let first = first.header.unwrap().revision;
        kv.put(put("w/b", "2")).await.unwrap();
        kv.put(put("w/a", "3")).await.unwrap();
        kv.delete_range(DeleteRangeRequest {
            key: b"w/b".to_vec(),
            ..DeleteRangeRequest::default()
        })
        .await
        .unwrap();

        let (asks, asked) = tokio::sync::mpsc::channel::<WatchRequest>(16);
        let asked = futures_util::stream::unfold(asked, |mut asked| async move {
            asked.recv().await.map(|ask| (ask, asked))
        });
        let mut watch = WatchClient::connect(endpoint).await.unwrap();
        let mut answers = watch.watch(asked).await.unwrap().into_inner();
        let create = |create: WatchCreateRequest| WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(create)),
        };
        // Watch 0: the prefix from the first put, with previous values.
        asks.send(create(WatchCreateRequest {
            key: b"w/".to_vec(),
            range_end: b"w0".to_vec(),
            start_revision: first,
            prev_kv: true,
            ..WatchCreateRequest::default()
        }))
        .await
        .unwrap();
        let created: WatchResponse = answers.message().await.unwrap().unwrap();
        assert!(created.created && !created.canceled);
        assert_eq!(created.watch_id, 0);
        let mut events = Vec::new();
        while events.len() < 4 {
            let answer = answers.message().await.unwrap().unwrap();
            assert_eq!(answer.watch_id, 0);
            events.extend(answer.events);
        }
        // (type, key, previous value)
        type Seen<'a> = (i32, &'a [u8], Option<&'a [u8]>);
        let seen: Vec<Seen> = events
            .iter()
            .map(|e| {
                let kv = e.kv.as_ref().unwrap();
                (
                    e.r#type,
                    kv.key.as_slice(),
                    e.prev_kv.as_ref().map(|p| p.value.as_slice()),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                (EventType::Put as i32, &b"w/a"[..], None),
                (EventType::Put as i32, &b"w/b"[..], None),
                (EventType::Put as i32, &b"w/a"[..], Some(&b"1"[..])),
                (EventType::Delete as i32, &b"w/b"[..], Some(&b"2"[..])),
            ]
        );
        // Watch 1: deletes only, from now.
        asks.send(create(WatchCreateRequest {
            key: b"w/".to_vec(),
            range_end: b"w0".to_vec(),
            filters: vec![FilterType::Noput as i32],
            ..WatchCreateRequest::default()
        }))
        .await
        .unwrap();
        let created = answers.message().await.unwrap().unwrap();
        assert!(created.created && created.watch_id == 1);
        kv.put(put("w/c", "4")).await.unwrap();
        kv.delete_range(DeleteRangeRequest {
            key: b"w/c".to_vec(),
            ..DeleteRangeRequest::default()
        })
        .await
        .unwrap();
        // Watch 0 sees both; watch 1 the delete alone.
        let (mut zero, mut one) = (Vec::new(), Vec::new());
        while zero.len() < 2 || one.is_empty() {
            let answer = answers.message().await.unwrap().unwrap();
            match answer.watch_id {
                0 => zero.extend(answer.events),
                1 => one.extend(answer.events),
                other => panic!("watch {other}"),
            }
        }
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].r#type, EventType::Delete as i32);
        // A progress request: each watch says how far it is.
        asks.send(WatchRequest {
            request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
        })
        .await
        .unwrap();
        let mut progressed = std::collections::BTreeSet::new();
        while progressed.len() < 2 {
            let answer = answers.message().await.unwrap().unwrap();
            assert!(answer.events.is_empty(), "{answer:?}");
            assert!(answer.header.unwrap().revision > first);
            progressed.insert(answer.watch_id);
        }
        // Cancel watch 1.
        asks.send(WatchRequest {
            request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest {
                watch_id: 1,
            })),
        })
        .await
        .unwrap();
        loop {
            let answer = answers.message().await.unwrap().unwrap();
            if answer.watch_id == 1 {
                assert!(answer.canceled, "events after a cancel: {answer:?}");
                break;
            }
        }
        // Ids are not given twice on a stream: the next is 2, not 1.
        asks.send(create(WatchCreateRequest {
            key: b"w/".to_vec(),
            range_end: b"w0".to_vec(),
            ..WatchCreateRequest::default()
        }))
        .await
        .unwrap();
        loop {
            let answer = answers.message().await.unwrap().unwrap();
            if answer.created {
                assert_eq!(answer.watch_id, 2, "{answer:?}");
                break;
            }
        }

        // A watch from before a compaction is cancelled, with the
        // compaction's revision and etcd's reason.
        let now = kv.put(put("w/d", "5")).await.unwrap().into_inner();
        let now = now.header.unwrap().revision;
        kv.compact(CompactionRequest {
            revision: now,
            physical: false,
        })
        .await
        .unwrap();
        asks.send(create(WatchCreateRequest {
            key: b"w/a".to_vec(),
            start_revision: first,
            watch_id: 7,
            ..WatchCreateRequest::default()
        }))
        .await
        .unwrap();
        loop {
            let answer = answers.message().await.unwrap().unwrap();
            if answer.watch_id != 7 {
                continue;
            }
            if answer.created && !answer.canceled {
                continue;
            }
            assert!(answer.canceled, "{answer:?}");
            assert_eq!(
                answer.cancel_reason,
                "etcdserver: mvcc: required revision has been compacted"
            );
            assert!(answer.compact_revision >= now, "{answer:?}");
            break;
        }
    });
}

/// etcd's Lock service: a second caller waits until the holder unlocks,
/// then holds the lock under its own lease's key.
#[test]
fn a_lock_is_held_by_one_caller_at_a_time() {
    use keel_etcd_api::etcdserverpb::lease_client::LeaseClient;
    use keel_etcd_api::etcdserverpb::LeaseGrantRequest;
    use keel_etcd_api::v3lockpb::lock_client::LockClient;
    use keel_etcd_api::v3lockpb::{LockRequest, UnlockRequest};

    let (_dir, _server, runtime, endpoint) = grpc_server();
    block_on(&runtime, async {
        let mut leases = LeaseClient::connect(endpoint.clone()).await.unwrap();
        let grant = LeaseGrantRequest { ttl: 60, id: 0 };
        let first_lease = leases.lease_grant(grant).await.unwrap().into_inner().id;
        let second_lease = leases.lease_grant(grant).await.unwrap().into_inner().id;
        let mut locks = LockClient::connect(endpoint).await.unwrap();
        let lock = |lease: i64| LockRequest {
            name: b"jobs".to_vec(),
            lease,
        };
        let first = locks.lock(lock(first_lease)).await.unwrap().into_inner();
        assert_eq!(first.key, format!("jobs/{first_lease:x}").into_bytes());
        let mut waiting = locks.clone();
        let second = tokio::spawn(async move { waiting.lock(lock(second_lease)).await });
        // Still held by the first.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!second.is_finished(), "the second caller took a held lock");
        locks
            .unlock(UnlockRequest {
                key: first.key.clone(),
            })
            .await
            .unwrap();
        let second = second.await.unwrap().unwrap().into_inner();
        assert_eq!(second.key, format!("jobs/{second_lease:x}").into_bytes());
        assert!(second.header.unwrap().revision > first.header.unwrap().revision);

        // A waiter whose lease is revoked while it waits holds nothing
        // when the holder lets go: etcd's "session is expired".
        let third_lease = leases.lease_grant(grant).await.unwrap().into_inner().id;
        let mut waiting = locks.clone();
        let third = tokio::spawn(async move { waiting.lock(lock(third_lease)).await });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!third.is_finished());
        leases
            .lease_revoke(keel_etcd_api::etcdserverpb::LeaseRevokeRequest { id: third_lease })
            .await
            .unwrap();
        locks
            .unlock(UnlockRequest {
                key: second.key.clone(),
            })
            .await
            .unwrap();
        let expired = third.await.unwrap().unwrap_err();
        assert_eq!(expired.message(), "mutex: session is expired");

        // Without a lease, each caller gets one of its own (etcd's
        // session): the second waits for the first.
        let unleased = LockRequest {
            name: b"unleased".to_vec(),
            lease: 0,
        };
        let first = locks.lock(unleased.clone()).await.unwrap().into_inner();
        let mut waiting = locks.clone();
        let second = tokio::spawn(async move { waiting.lock(unleased).await });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(
            !second.is_finished(),
            "two holders of a lock taken without a lease"
        );
        locks
            .unlock(UnlockRequest {
                key: first.key.clone(),
            })
            .await
            .unwrap();
        let second = second.await.unwrap().unwrap().into_inner();
        assert_ne!(second.key, first.key);
    });
}

/// etcd's Election service: the first candidate leads, a second waits;
/// the leader proclaims a new value, observers see each leader and value,
/// a resignation hands leadership to the second, and a proclamation from
/// a candidate that no longer leads is refused.
#[test]
fn an_election_has_one_leader_at_a_time_and_observers_see_each() {
    use keel_etcd_api::etcdserverpb::lease_client::LeaseClient;
    use keel_etcd_api::etcdserverpb::LeaseGrantRequest;
    use keel_etcd_api::v3electionpb::election_client::ElectionClient;
    use keel_etcd_api::v3electionpb::{
        CampaignRequest, LeaderRequest, ProclaimRequest, ResignRequest,
    };

    let (_dir, _server, runtime, endpoint) = grpc_server();
    block_on(&runtime, async {
        let mut leases = LeaseClient::connect(endpoint.clone()).await.unwrap();
        let grant = LeaseGrantRequest { ttl: 60, id: 0 };
        let first_lease = leases.lease_grant(grant).await.unwrap().into_inner().id;
        let second_lease = leases.lease_grant(grant).await.unwrap().into_inner().id;
        let mut election = ElectionClient::connect(endpoint).await.unwrap();
        let name = b"primary".to_vec();
        let leader_request = LeaderRequest { name: name.clone() };
        let no_leader = election.leader(leader_request.clone()).await.unwrap_err();
        assert_eq!(no_leader.message(), "election: no leader");
        let mut observed = election
            .observe(leader_request.clone())
            .await
            .unwrap()
            .into_inner();

        let for_name = name.clone();
        let campaign = move |lease: i64, value: &str| CampaignRequest {
            name: for_name.clone(),
            lease,
            value: value.as_bytes().to_vec(),
        };
        let first = election
            .campaign(campaign(first_lease, "a"))
            .await
            .unwrap()
            .into_inner()
            .leader
            .unwrap();
        let mut waiting = election.clone();
        let second =
            tokio::spawn(async move { waiting.campaign(campaign(second_lease, "b")).await });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(
            !second.is_finished(),
            "a second leader while the first leads"
        );

        election
            .proclaim(ProclaimRequest {
                leader: Some(first.clone()),
                value: b"a2".to_vec(),
            })
            .await
            .unwrap();
        let now = election
            .leader(leader_request.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(now.kv.unwrap().value, b"a2");

        election
            .resign(ResignRequest {
                leader: Some(first.clone()),
            })
            .await
            .unwrap();
        let second = second.await.unwrap().unwrap().into_inner().leader.unwrap();
        assert_eq!(second.key, format!("primary/{second_lease:x}").into_bytes());
        let refused = election
            .proclaim(ProclaimRequest {
                leader: Some(first),
                value: b"late".to_vec(),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.message(), "election: not leader");

        // The observer saw a, a2, then b.
        let mut values = Vec::new();
        while values.len() < 3 {
            let leader = observed.message().await.unwrap().unwrap();
            values.push(String::from_utf8(leader.kv.unwrap().value).unwrap());
        }
        assert_eq!(values, ["a", "a2", "b"]);
    });
}

/// MoveLeader moves every shard's leadership: to the member that leads
/// them already it succeeds, to a member that does not exist it is refused
/// with etcd's error.
#[test]
fn move_leader_names_a_member_or_is_refused_as_etcd_refuses_it() {
    use keel_etcd_api::etcdserverpb::maintenance_client::MaintenanceClient;
    use keel_etcd_api::etcdserverpb::{MoveLeaderRequest, StatusRequest};

    let (_dir, _server, runtime, endpoint) = grpc_server();
    block_on(&runtime, async {
        let mut maintenance = MaintenanceClient::connect(endpoint).await.unwrap();
        let status = maintenance
            .status(StatusRequest {})
            .await
            .unwrap()
            .into_inner();
        let me = status.header.unwrap().member_id;
        assert_eq!(status.leader, me);
        let moved = maintenance
            .move_leader(MoveLeaderRequest { target_id: me })
            .await
            .unwrap()
            .into_inner();
        // etcd's MoveLeader and Defragment answers carry no header, and
        // clients' tests (etcd-client's) check that.
        assert_eq!(moved.header, None);
        let defragmented = maintenance
            .defragment(keel_etcd_api::etcdserverpb::DefragmentRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(defragmented.header, None);
        let refused = maintenance
            .move_leader(MoveLeaderRequest { target_id: me ^ 1 })
            .await
            .unwrap_err();
        assert_eq!(
            (refused.code(), refused.message()),
            (
                tonic::Code::FailedPrecondition,
                "etcdserver: bad leader transferee"
            )
        );
    });
}

/// Snapshot streams a keel snapshot file of every pair and lease, which
/// reads back whole, its chunks counting down to 0 bytes left; HashKV
/// hashes the pairs at a revision, the same whenever asked.
#[test]
fn snapshot_streams_every_pair_and_hash_kv_is_stable_at_a_revision() {
    use keel_etcd_api::etcdserverpb::lease_client::LeaseClient;
    use keel_etcd_api::etcdserverpb::maintenance_client::MaintenanceClient;
    use keel_etcd_api::etcdserverpb::{HashKvRequest, LeaseGrantRequest, SnapshotRequest};

    let (_dir, _server, runtime, endpoint) = grpc_server();
    block_on(&runtime, async {
        let mut kv = KvClient::connect(endpoint.clone()).await.unwrap();
        let mut maintenance = MaintenanceClient::connect(endpoint.clone()).await.unwrap();
        let mut leases = LeaseClient::connect(endpoint).await.unwrap();
        let lease = leases
            .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
            .await
            .unwrap()
            .into_inner()
            .id;
        // More than a page (256 pairs) and more than a chunk (64 KiB).
        for i in 0..600 {
            kv.put(PutRequest {
                key: format!("key-{i:04}").into_bytes(),
                value: vec![b'v'; 200],
                lease: if i % 100 == 0 { lease } else { 0 },
                ..PutRequest::default()
            })
            .await
            .unwrap();
        }

        let mut chunks = maintenance
            .snapshot(SnapshotRequest {})
            .await
            .unwrap()
            .into_inner();
        let (mut bytes, mut lefts) = (Vec::new(), Vec::new());
        while let Some(chunk) = chunks.message().await.unwrap() {
            bytes.extend_from_slice(&chunk.blob);
            lefts.push(chunk.remaining_bytes);
        }
        assert!(lefts.len() > 1, "{lefts:?}");
        assert_eq!(lefts.last(), Some(&0));
        assert!(lefts.windows(2).all(|w| w[0] > w[1]), "{lefts:?}");
        let snapshot = keel_net::snapshot_file::read(&bytes).unwrap();
        assert_eq!(snapshot.pairs.len(), 600);
        assert_eq!(snapshot.leases.len(), 1);
        assert_eq!(snapshot.leases[0].id, lease);
        assert_eq!(
            snapshot.pairs.iter().filter(|p| p.lease == lease).count(),
            6
        );
        let all = kv
            .range(RangeRequest {
                key: vec![0],
                range_end: vec![0],
                ..RangeRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        let read: Vec<(Vec<u8>, i64)> = all
            .kvs
            .iter()
            .map(|p| (p.key.clone(), p.mod_revision))
            .collect();
        let saved: Vec<(Vec<u8>, i64)> = snapshot
            .pairs
            .iter()
            .map(|p| (p.key.clone(), p.mod_revision as i64))
            .collect();
        assert_eq!(read, saved);

        let hash_at = |revision: i64| {
            let mut maintenance = maintenance.clone();
            async move {
                maintenance
                    .hash_kv(HashKvRequest { revision })
                    .await
                    .map(|answer| answer.into_inner())
            }
        };
        let now = hash_at(0).await.unwrap();
        assert_eq!(now.compact_revision, -1);
        assert_eq!(hash_at(now.hash_revision).await.unwrap().hash, now.hash);
        let put = kv
            .put(PutRequest {
                key: b"key-0000".to_vec(),
                value: b"changed".to_vec(),
                ..PutRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        let revision = put.header.unwrap().revision;
        assert_eq!(hash_at(now.hash_revision).await.unwrap().hash, now.hash);
        assert_ne!(hash_at(revision).await.unwrap().hash, now.hash);
        let future = hash_at(revision + 1_000_000_000).await.unwrap_err();
        assert_eq!(future.code(), tonic::Code::OutOfRange);
    });
}

/// A watch created with `progress_notify` gets an answer with no events
/// at each interval with no events (here 300 ms, `--watch-progress-interval-ms`),
/// at a revision past the writes it did not watch; a watch that did not
/// ask gets none.
#[test]
fn an_idle_watch_that_asked_for_progress_notifications_gets_them() {
    use keel_etcd_api::etcdserverpb::watch_client::WatchClient;
    use keel_etcd_api::etcdserverpb::watch_request::RequestUnion;
    use keel_etcd_api::etcdserverpb::{WatchCreateRequest, WatchRequest};

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 2, &["--watch-progress-interval-ms", "300"]);
    let endpoint = format!("http://{}", server.endpoint());
    let runtime = runtime();
    block_on(&runtime, async {
        let mut kv = KvClient::connect(endpoint.clone()).await.unwrap();
        let (asks, asked) = tokio::sync::mpsc::channel::<WatchRequest>(16);
        let asked = futures_util::stream::unfold(asked, |mut asked| async move {
            asked.recv().await.map(|ask| (ask, asked))
        });
        let mut watch = WatchClient::connect(endpoint).await.unwrap();
        let mut answers = watch.watch(asked).await.unwrap().into_inner();
        for (key, progress_notify) in [("notified", true), ("quiet", false)] {
            let create = WatchCreateRequest {
                key: key.as_bytes().to_vec(),
                progress_notify,
                ..WatchCreateRequest::default()
            };
            asks.send(WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(create)),
            })
            .await
            .unwrap();
            let created = answers.message().await.unwrap().unwrap();
            assert!(created.created, "{created:?}");
        }
        let elsewhere = kv
            .put(PutRequest {
                key: b"elsewhere".to_vec(),
                value: b"1".to_vec(),
                ..PutRequest::default()
            })
            .await
            .unwrap()
            .into_inner()
            .header
            .unwrap()
            .revision;
        // Ten ticks in 3 s: a notification at each (not at every
        // other, as when a notification counted as activity).
        let until = tokio::time::Instant::now() + std::time::Duration::from_millis(3000);
        let mut progress = Vec::new();
        while let Ok(answer) = tokio::time::timeout_at(until, answers.message()).await {
            let answer = answer.unwrap().unwrap();
            assert!(answer.events.is_empty(), "{answer:?}");
            progress.push((answer.watch_id, answer.header.unwrap().revision));
        }
        assert!(
            progress.len() >= 7,
            "at least seven notifications in 3 s: {progress:?}"
        );
        assert!(progress.iter().all(|(id, _)| *id == 0), "{progress:?}");
        assert!(
            progress.last().is_some_and(|(_, at)| *at >= elsewhere),
            "{progress:?}, the unwatched put at {elsewhere}"
        );
    });
}

/// A lease TTL under etcd's minimum is granted the minimum (2 s), and one
/// over its maximum is refused with etcd's error.
#[test]
fn lease_ttls_out_of_range_are_treated_as_etcd_treats_them() {
    use keel_etcd_api::etcdserverpb::lease_client::LeaseClient;
    use keel_etcd_api::etcdserverpb::LeaseGrantRequest;

    let (_dir, _server, runtime, endpoint) = grpc_server();
    block_on(&runtime, async {
        let mut leases = LeaseClient::connect(endpoint).await.unwrap();
        for asked in [0, 1, -5] {
            let granted = leases
                .lease_grant(LeaseGrantRequest { ttl: asked, id: 0 })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(granted.ttl, 2, "asked {asked}");
        }
        let refused = leases
            .lease_grant(LeaseGrantRequest {
                ttl: 9_000_000_001,
                id: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(
            (refused.code(), refused.message()),
            (tonic::Code::OutOfRange, "etcdserver: too large lease TTL")
        );
    });
}
