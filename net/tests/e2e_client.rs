//! The client crate against the real `keel` binary: every operation and
//! every error a client can meet, on 4 shards over 2 cores.

mod support;

use std::time::Duration;

use keel_client::proto::{
    DeleteRangeRequest, PutRequest, RangeRequest, SortOrder, SortTarget, WatchCreate,
};
use keel_client::{Client, Cmp, CompareResult, Error, ErrorCode, EventKind, Op, Txn};
use support::{block_on, runtime, Server};

fn code(error: Error) -> ErrorCode {
    error
        .code()
        .unwrap_or_else(|| panic!("expected a server error, got {error:?}"))
}

#[test]
fn keys_ranges_deletes_and_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 4, &[]);
    let rt = runtime();
    block_on(&rt, async {
        let client = Client::connect(&[server.endpoint()]).await.unwrap();
        let status = client.status().await.unwrap();
        assert_eq!((status.shards, status.cores), (4, 2));
        assert_eq!(status.core_ports, server.core_ports);
        assert_eq!(status.shard_info.len(), 4);

        let first = client.put("app/a", "1").await.unwrap();
        let second = client.put("app/b", "2").await.unwrap();
        assert!(second > first);
        client.put("app/c", "3").await.unwrap();
        client.put("other", "x").await.unwrap();
        let kv = client.get("app/a").await.unwrap().unwrap();
        assert_eq!(
            (kv.value.as_slice(), kv.version, kv.create_revision),
            (&b"1"[..], 1, first)
        );
        assert!(client.get("missing").await.unwrap().is_none());

        let (_, all) = client.get_prefix("app/").await.unwrap();
        let keys: Vec<_> = all.kvs.iter().map(|kv| kv.key.clone()).collect();
        assert_eq!(
            keys,
            vec![b"app/a".to_vec(), b"app/b".to_vec(), b"app/c".to_vec()]
        );

        // limit, sort, keys_only, count_only, and a read at a past revision.
        let request = RangeRequest {
            key: b"app/".to_vec(),
            range_end: keel_client::prefix_end(b"app/"),
            limit: 2,
            sort_order: SortOrder::Descend,
            sort_target: SortTarget::Key,
            keys_only: true,
            ..RangeRequest::default()
        };
        let (_, page) = client.range(request).await.unwrap();
        assert_eq!(page.kvs.len(), 2);
        assert!(page.more);
        assert_eq!(page.count, 3);
        assert_eq!(page.kvs[0].key, b"app/c");
        assert!(page.kvs[0].value.is_empty());
        let (_, counted) = client
            .range(RangeRequest {
                key: vec![0],
                range_end: vec![0],
                count_only: true,
                ..RangeRequest::default()
            })
            .await
            .unwrap();
        assert_eq!((counted.count, counted.kvs.len()), (4, 0));
        client.put("app/a", "1b").await.unwrap();
        let (at, old) = client
            .range(RangeRequest {
                key: b"app/a".to_vec(),
                revision: first,
                ..RangeRequest::default()
            })
            .await
            .unwrap();
        assert_eq!((at, old.kvs[0].value.as_slice()), (first, &b"1"[..]));

        // put with prev_kv; ignore_value on a missing key.
        let (_, put) = client
            .put_with(PutRequest {
                key: b"app/b".to_vec(),
                value: b"2b".to_vec(),
                prev_kv: true,
                ..PutRequest::default()
            })
            .await
            .unwrap();
        assert_eq!(put.prev_kv.unwrap().value, b"2");
        let refused = client
            .put_with(PutRequest {
                key: b"nothing-here".to_vec(),
                ignore_value: true,
                ..PutRequest::default()
            })
            .await
            .unwrap_err();
        assert_eq!(code(refused), ErrorCode::KeyNotFound);
        assert_eq!(
            code(client.put("", "v").await.unwrap_err()),
            ErrorCode::BadRequest
        );
        let huge = vec![b'k'; 3000];
        assert_eq!(
            code(client.put(huge, "v").await.unwrap_err()),
            ErrorCode::TooLarge
        );

        // A delete over every shard, with the deleted pairs.
        let (_, deleted) = client
            .delete_range(DeleteRangeRequest {
                key: b"app/".to_vec(),
                range_end: keel_client::prefix_end(b"app/"),
                prev_kv: true,
            })
            .await
            .unwrap();
        assert_eq!(deleted.deleted, 3);
        assert_eq!(deleted.prev_kvs.len(), 3);
        assert_eq!(client.delete("other").await.unwrap(), 1);
        assert_eq!(client.delete("other").await.unwrap(), 0);

        // Compaction, and the errors around it.
        let now = client.put("k", "v").await.unwrap();
        client.compact(now).await.unwrap();
        let below = client
            .range(RangeRequest {
                key: b"k".to_vec(),
                revision: first,
                ..RangeRequest::default()
            })
            .await
            .unwrap_err();
        assert!(matches!(
            below,
            Error::Server { code: ErrorCode::Compacted, revision, .. } if revision == now
        ));
        assert_eq!(
            code(client.compact(first).await.unwrap_err()),
            ErrorCode::Compacted
        );
        let ahead = client.compact(now + (1 << 40)).await.unwrap_err();
        assert_eq!(code(ahead), ErrorCode::FutureRevision);
    });
}

#[test]
fn transactions_and_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 4, &[]);
    let rt = runtime();
    block_on(&rt, async {
        let client = Client::connect(&[server.endpoint()]).await.unwrap();
        let created = client.put("{acct:1}/balance", "10").await.unwrap();
        let txn = Txn::new()
            .when([Cmp::key("{acct:1}/balance").value(CompareResult::Equal, "10")])
            .and_then([
                Op::put("{acct:1}/balance", "7"),
                Op::put("{acct:1}/log", "-3"),
                Op::get("{acct:1}/balance"),
            ])
            .or_else([Op::get("{acct:1}/balance")]);
        let (_, answer) = client.txn(txn.clone().build()).await.unwrap();
        assert!(answer.succeeded);
        assert_eq!(answer.responses.len(), 3);
        let (_, again) = client.txn(txn.build()).await.unwrap();
        assert!(!again.succeeded, "the balance is 7 now");
        let fenced = Txn::new()
            .when([Cmp::key("{acct:1}/balance").create_revision(CompareResult::Equal, created)])
            .and_then([Op::delete("{acct:1}/log")]);
        assert!(client.txn(fenced.build()).await.unwrap().1.succeeded);

        let across = Txn::new().and_then([Op::put("{a}/x", "1"), Op::put("{b}/x", "1")]);
        let error = client.txn(across.build()).await.unwrap_err();
        assert_eq!(code(error.clone()), ErrorCode::CrossShardTxn);
        assert!(error.to_string().contains("hash tag"), "{error}");
        let many = Txn::new().and_then((0..129).map(|i| Op::put(format!("{{t}}/{i}"), "v")));
        assert_eq!(
            code(client.txn(many.build()).await.unwrap_err()),
            ErrorCode::TooManyOps
        );
        let twice = Txn::new().and_then([Op::put("{t}/k", "1"), Op::put("{t}/k", "2")]);
        assert_eq!(
            code(client.txn(twice.build()).await.unwrap_err()),
            ErrorCode::DuplicateKey
        );
        // Nothing of the refused ones was written.
        assert!(client.get("{t}/k").await.unwrap().is_none());
        assert!(client.get("{a}/x").await.unwrap().is_none());
    });
}

#[test]
fn watches_report_every_event_and_resume_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), 4, &[]);
    let rt = runtime();
    block_on(&rt, async {
        let client = Client::connect(&[server.endpoint()]).await.unwrap();
        let mut watcher = client
            .watch(WatchCreate {
                key: b"svc/".to_vec(),
                range_end: keel_client::prefix_end(b"svc/"),
                prev_kv: true,
                ..WatchCreate::default()
            })
            .await
            .unwrap();
        client.put("svc/a", "1").await.unwrap();
        client.put("svc/a", "2").await.unwrap();
        client.put("elsewhere", "x").await.unwrap();
        client.delete("svc/a").await.unwrap();
        let mut events = Vec::new();
        while events.len() < 3 {
            events.extend(watcher.next().await.unwrap().events);
        }
        let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::Put, EventKind::Put, EventKind::Delete]);
        assert_eq!(events[1].prev_kv.as_ref().unwrap().value, b"1");

        // A progress notification: no events, at a revision past them.
        watcher.request_progress().await.unwrap();
        let progress = watcher.next().await.unwrap();
        assert!(progress.events.is_empty());
        assert!(progress.revision >= events[2].kv.mod_revision);

        // Restart the server; writes made while it is back must all come.
        server.restart();
        let client2 = Client::connect(&[server.endpoint()]).await.unwrap();
        let mut written = Vec::new();
        for i in 0..5 {
            written.push(client2.put(format!("svc/{i}"), "v").await.unwrap());
        }
        let mut seen = Vec::new();
        while seen.len() < 5 {
            let batch = watcher.next().await.unwrap();
            seen.extend(batch.events.iter().map(|e| e.kv.mod_revision));
        }
        assert_eq!(seen, written);
        assert!(watcher.reconnects() >= 1);

        // Cancel; a watch below the compaction point is refused.
        watcher.cancel().await.unwrap();
        let now = client2.put("svc/z", "v").await.unwrap();
        client2.compact(now).await.unwrap();
        // As etcd: the watch is created, then cancelled as compacted.
        let mut old = client2
            .watch(WatchCreate {
                key: b"svc/z".to_vec(),
                start_revision: written[0],
                ..WatchCreate::default()
            })
            .await
            .unwrap();
        let old = old.next().await;
        assert!(
            matches!(old, Err(Error::Compacted { compact_revision }) if compact_revision == now),
            "{:?}",
            old.err()
        );
    });
}

#[test]
fn leases_expire_keys_unless_kept_alive() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 4, &[]);
    let rt = runtime();
    block_on(&rt, async {
        let client = Client::connect(&[server.endpoint()]).await.unwrap();
        let (kept, ttl) = client.lease_grant(0, 2).await.unwrap();
        assert_eq!(ttl, 2);
        let (dropped, _) = client.lease_grant(0, 2).await.unwrap();
        for (i, lease) in [kept, dropped].into_iter().enumerate() {
            for shard_key in ["a", "b", "c", "d"] {
                let request = PutRequest {
                    key: format!("lease{i}/{shard_key}").into_bytes(),
                    value: b"v".to_vec(),
                    lease,
                    ..PutRequest::default()
                };
                client.put_with(request).await.unwrap();
            }
        }
        let status = client.lease_time_to_live(kept, true).await.unwrap();
        assert_eq!((status.granted_ttl, status.keys.len()), (2, 4));
        let listed: Vec<_> = client
            .lease_leases()
            .await
            .unwrap()
            .iter()
            .map(|l| l.id)
            .collect();
        assert!(listed.contains(&kept) && listed.contains(&dropped));
        let keep_alive = client.lease_keep_alive(kept, 2);
        tokio::time::sleep(Duration::from_millis(4500)).await;
        assert_eq!(keep_alive.state(), keel_client::LeaseState::Alive(2));
        let (_, left) = client.get_prefix("lease").await.unwrap();
        let keys: Vec<_> = left
            .kvs
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).to_string())
            .collect();
        assert_eq!(keys, ["lease0/a", "lease0/b", "lease0/c", "lease0/d"]);
        assert_eq!(
            client.lease_time_to_live(dropped, false).await.unwrap().ttl,
            -1
        );
        assert_eq!(client.lease_keep_alive_once(dropped).await.unwrap(), 0);
        drop(keep_alive);
        client.lease_revoke(kept).await.unwrap();
        assert_eq!(client.get_prefix("lease").await.unwrap().1.count, 0);
        let gone = client.lease_revoke(kept).await.unwrap_err();
        assert_eq!(code(gone), ErrorCode::LeaseNotFound);
        let missing = PutRequest {
            key: b"k".to_vec(),
            lease: kept,
            ..PutRequest::default()
        };
        assert_eq!(
            code(client.put_with(missing).await.unwrap_err()),
            ErrorCode::LeaseNotFound
        );
        let (explicit, _) = client.lease_grant(77, 30).await.unwrap();
        assert_eq!(explicit, 77);
        assert_eq!(
            code(client.lease_grant(77, 30).await.unwrap_err()),
            ErrorCode::LeaseExists
        );
    });
}

#[test]
fn locks_serialise_holders_and_elections_fail_over() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 4, &[]);
    let rt = runtime();
    block_on(&rt, async {
        let client = Client::connect(&[server.endpoint()]).await.unwrap();
        let (first_lease, _) = client.lease_grant(0, 30).await.unwrap();
        let (second_lease, _) = client.lease_grant(0, 30).await.unwrap();
        let first = client.lock("jobs", first_lease).await.unwrap();
        let waiter = {
            let client = client.clone();
            tokio::spawn(async move { client.lock("jobs", second_lease).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiter.is_finished(), "the second holder must wait");
        let fence = first.revision();
        client.unlock(first).await.unwrap();
        let second = waiter.await.unwrap().unwrap();
        assert!(second.revision() > fence, "fencing revisions grow");

        // Election: a leader, an observer, and failover when its lease goes.
        let mut observer = client.observe("leader").await.unwrap();
        let (lease_a, _) = client.lease_grant(0, 30).await.unwrap();
        let (lease_b, _) = client.lease_grant(0, 30).await.unwrap();
        let a = client.campaign("leader", lease_a, "node-a").await.unwrap();
        assert_eq!(observer.next().await.unwrap().value, b"node-a");
        let b = {
            let client = client.clone();
            tokio::spawn(async move { client.campaign("leader", lease_b, "node-b").await })
        };
        client.proclaim(&a, "node-a2").await.unwrap();
        assert_eq!(observer.next().await.unwrap().value, b"node-a2");
        let (_, leader) = client.leader("leader").await.unwrap();
        assert_eq!(leader.unwrap().value, b"node-a2");
        client.lease_revoke(lease_a).await.unwrap();
        let b = b.await.unwrap().unwrap();
        assert!(b.revision() > a.revision());
        assert_eq!(observer.next().await.unwrap().value, b"node-b");
        assert!(matches!(
            client.proclaim(&a, "stale").await,
            Err(Error::LeaseLost(_))
        ));
        client.resign(b).await.unwrap();
        assert!(client.leader("leader").await.unwrap().1.is_none());
    });
}

#[test]
fn many_requests_in_flight_on_one_client() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 4, &[]);
    let rt = runtime();
    block_on(&rt, async {
        let client = Client::connect(&[server.endpoint()]).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..500 {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                client.put(format!("p/{i}"), format!("{i}")).await
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let (_, all) = client.get_prefix("p/").await.unwrap();
        assert_eq!(all.count, 500);
    });
}

#[test]
fn a_revision_larger_than_one_watch_response_arrives_whole() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 2, &[]);
    let rt = runtime();
    block_on(&rt, async {
        let client = Client::connect(&[server.endpoint()]).await.unwrap();
        let value = vec![b'v'; 20_000];
        for i in 0..100 {
            client
                .put(format!("{{big}}/{i:03}"), value.clone())
                .await
                .unwrap();
        }
        let mut watcher = client
            .watch(WatchCreate {
                key: b"{big}/".to_vec(),
                range_end: keel_client::prefix_end(b"{big}/"),
                prev_kv: true,
                ..WatchCreate::default()
            })
            .await
            .unwrap();
        // One delete: 100 events at one revision, about 2 MB with their
        // previous values, more than one response's 1 MiB.
        let (revision, _) = client
            .delete_range(DeleteRangeRequest {
                key: b"{big}/".to_vec(),
                range_end: keel_client::prefix_end(b"{big}/"),
                prev_kv: false,
            })
            .await
            .unwrap();
        let batch = watcher.next().await.unwrap();
        assert_eq!(batch.revision, revision);
        assert_eq!(batch.events.len(), 100, "a revision must not be split");
        assert!(watcher.next_revision() > revision);
    });
}

#[test]
fn a_waiter_whose_lease_expired_does_not_get_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 2, &[]);
    let rt = runtime();
    block_on(&rt, async {
        let client = Client::connect(&[server.endpoint()]).await.unwrap();
        let (holder_lease, _) = client.lease_grant(0, 30).await.unwrap();
        let holder = client.lock("expiring", holder_lease).await.unwrap();
        // A waiter whose lease nobody keeps alive.
        let (waiter_lease, _) = client.lease_grant(0, 1).await.unwrap();
        let waiter = {
            let client = client.clone();
            tokio::spawn(async move { client.lock("expiring", waiter_lease).await })
        };
        tokio::time::sleep(Duration::from_millis(3000)).await;
        client.unlock(holder).await.unwrap();
        let outcome = waiter.await.unwrap();
        assert!(
            matches!(outcome, Err(Error::LeaseLost(lease)) if lease == waiter_lease),
            "{outcome:?}"
        );
    });
}

#[test]
fn a_keep_alive_that_cannot_reach_the_server_reports_the_lease_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), 2, &[]);
    let rt = runtime();
    block_on(&rt, async {
        let client = Client::connect(&[server.endpoint()]).await.unwrap();
        let (lease, ttl) = client.lease_grant(0, 2).await.unwrap();
        let mut keep_alive = client.lease_keep_alive(lease, ttl);
        server.stop();
        let lost = tokio::time::timeout(Duration::from_secs(10), keep_alive.lost()).await;
        assert!(matches!(lost, Ok(Error::LeaseLost(id)) if id == lease));
        assert_eq!(keep_alive.state(), keel_client::LeaseState::Lost);
    });
}

/// A server that stops answering without closing anything (SIGSTOP: the
/// connection stays up, the renewal hangs): the keep-alive reports the
/// lease lost by its deadline, the last acknowledged renewal's send time
/// plus its TTL, whatever the renewal call is doing.
///
/// Regression (review of net/ at 6e310c5): the keep-alive awaited the
/// hanging renewal with no deadline, so `lost()` stayed pending until TCP
/// gave up (about 15 minutes) while the server would have expired the
/// lease after its TTL: two lock holders.
#[test]
fn a_keep_alive_reports_the_lease_lost_by_its_deadline_when_the_server_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), 2, &[]);
    let rt = runtime();
    const TTL: i64 = 3;
    block_on(&rt, async {
        let client = Client::connect(&[server.endpoint()]).await.unwrap();
        let (lease, ttl) = client.lease_grant(0, TTL).await.unwrap();
        assert_eq!(ttl, TTL);
        let mut keep_alive = client.lease_keep_alive(lease, ttl);
        // Renewed at least once (every TTL / 3).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(keep_alive.state(), keel_client::LeaseState::Alive(TTL));
        server.signal("STOP");
        let stopped = std::time::Instant::now();
        let lost = tokio::time::timeout(Duration::from_secs(30), keep_alive.lost()).await;
        let after = stopped.elapsed();
        server.signal("CONT");
        assert!(
            matches!(lost, Ok(Error::LeaseLost(id)) if id == lease),
            "{lost:?} after {after:?}"
        );
        assert!(
            after <= Duration::from_secs(TTL as u64 + 1),
            "lost {after:?} after the server stopped, past TTL + 1 s"
        );
        eprintln!("keep-alive: lease lost {after:?} after SIGSTOP (TTL {TTL} s)");
    });
    server.stop();
}

/// A lock or campaign given up while it waits (a timeout drops it) takes
/// its key out of the line, so the next contender gets its turn when the
/// holder leaves.
///
/// Regression (review of net/ at 6e310c5): the key stayed under its live
/// lease, and when its turn came it held the lock (or led) for nobody,
/// blocking everyone after it for as long as the lease lived.
#[test]
fn a_lock_or_campaign_given_up_while_waiting_leaves_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 4, &[]);
    let rt = runtime();
    block_on(&rt, async {
        let client = Client::connect(&[server.endpoint()]).await.unwrap();
        let mut leases = Vec::new();
        for _ in 0..6 {
            leases.push(client.lease_grant(0, 60).await.unwrap().0);
        }
        // Lock: a holder, one that gives up, and one that comes after.
        let holder = client.lock("{queue}/lock", leases[0]).await.unwrap();
        let gave_up = tokio::time::timeout(
            Duration::from_millis(300),
            client.lock("{queue}/lock", leases[1]),
        )
        .await;
        assert!(gave_up.is_err(), "it had to wait");
        let next = {
            let client = client.clone();
            let lease = leases[2];
            tokio::spawn(async move { client.lock("{queue}/lock", lease).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        client.unlock(holder).await.unwrap();
        let next = tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("the next contender gets the lock once the holder leaves")
            .unwrap()
            .unwrap();
        client.unlock(next).await.unwrap();

        // Election: the same with candidates.
        let leader = client
            .campaign("{queue}/leader", leases[3], "a")
            .await
            .unwrap();
        let gave_up = tokio::time::timeout(
            Duration::from_millis(300),
            client.campaign("{queue}/leader", leases[4], "b"),
        )
        .await;
        assert!(gave_up.is_err(), "it had to wait");
        let next = {
            let client = client.clone();
            let lease = leases[5];
            tokio::spawn(async move { client.campaign("{queue}/leader", lease, "c").await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        client.resign(leader).await.unwrap();
        let next = tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("the next candidate leads once the leader resigns")
            .unwrap()
            .unwrap();
        let (_, shown) = client.leader("{queue}/leader").await.unwrap();
        assert_eq!(shown.unwrap().value, b"c");
        client.resign(next).await.unwrap();
    });
}

/// Forwards connections to `127.0.0.2:port` (the port returned) to
/// `target`, as a load balancer in front of the client port would.
fn forward(target: std::net::SocketAddr) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for inbound in listener.incoming() {
            let Ok(inbound) = inbound else { return };
            let Ok(outbound) = std::net::TcpStream::connect(target) else {
                continue;
            };
            let (mut in_read, mut out_write) =
                (inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
            let (mut out_read, mut in_write) = (outbound, inbound);
            std::thread::spawn(move || std::io::copy(&mut in_read, &mut out_write));
            std::thread::spawn(move || std::io::copy(&mut out_read, &mut in_write));
        }
    });
    port
}

/// A listener on `127.0.0.2:port` whose queue is full: a connection to it
/// gets no answer at all, as behind a firewall that drops packets.
fn black_hole(port: u16) -> (socket2::Socket, Vec<std::net::TcpStream>) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let address: std::net::SocketAddr = format!("127.0.0.2:{port}").parse().unwrap();
    socket.bind(&address.into()).unwrap();
    socket.listen(0).unwrap();
    let mut queued = Vec::new();
    while let Ok(stream) =
        std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200))
    {
        queued.push(stream);
        assert!(queued.len() < 16, "the queue never filled");
    }
    (socket, queued)
}

/// The client reaches the server through the client port only; the cores'
/// own ports drop every connection (a Kubernetes Service, a firewall).
/// Each call then completes within one connect timeout, and the client
/// remembers the failure instead of dialling again on every call.
///
/// Regression (review of net/ at 6e310c5): a connect had no timeout (the
/// kernel gives up on a SYN after about 127 s) and its failure was not
/// remembered, so every single-shard call waited that long again.
#[test]
fn unreachable_core_ports_cost_one_connect_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 2, &[]);
    let front = forward(server.client);
    let _holes: Vec<_> = server.core_ports.iter().map(|p| black_hole(*p)).collect();
    let rt = runtime();
    block_on(&rt, async {
        let options = keel_client::ClientOptions {
            connect_timeout: Duration::from_millis(300),
            core_retry: Duration::from_secs(60),
            ..keel_client::ClientOptions::default()
        };
        let client = Client::connect_with(&[format!("127.0.0.2:{front}")], options.clone())
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let mut slowest = Duration::ZERO;
        for i in 0..20 {
            let call = std::time::Instant::now();
            client.put(format!("through/{i}"), "v").await.unwrap();
            slowest = slowest.max(call.elapsed());
        }
        let total = started.elapsed();
        eprintln!("20 puts with the core ports dropped: {total:?}, slowest {slowest:?}");
        assert!(slowest < Duration::from_secs(1), "a put took {slowest:?}");
        // One connect timeout per core at most, not one per call.
        assert!(total < Duration::from_millis(2 * 300 + 700), "{total:?}");

        // Calls at once: those that waited while one tried the core's port
        // learn that it failed (review of issue 18: each tried it again,
        // one after another).
        let fresh = Client::connect_with(&[format!("127.0.0.2:{front}")], options)
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..20 {
            let client = fresh.clone();
            calls.spawn(async move { client.put(format!("together/{i}"), "v").await });
        }
        while let Some(done) = calls.join_next().await {
            done.unwrap().unwrap();
        }
        let together = started.elapsed();
        eprintln!("20 puts at once with the core ports dropped: {together:?}");
        assert!(
            together < Duration::from_millis(2 * 300 + 700),
            "{together:?}"
        );
    });
}

/// A watcher the application does not read holds a bounded buffer: past
/// it the watch resumes from history when read, and every event still
/// comes, in order, once.
///
/// Regression (review of net/ at 6e310c5): every watch's channel in the
/// client was unbounded, and the reader took everything the server sent,
/// so the server's flow control never engaged and memory grew without end.
#[test]
fn an_unread_watcher_holds_a_bounded_buffer_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 2, &[]);
    let rt = runtime();
    block_on(&rt, async {
        let client = Client::connect(&[server.endpoint()]).await.unwrap();
        let mut watcher = client.watch_prefix("flood/").await.unwrap();
        const PUTS: usize = 2000;
        let value = vec![b'x'; 16 << 10];
        let mut puts = tokio::task::JoinSet::new();
        for i in 0..PUTS {
            let client = client.clone();
            let value = value.clone();
            puts.spawn(async move { client.put(format!("flood/{i:05}"), value).await });
            if puts.len() >= 32 {
                puts.join_next().await.unwrap().unwrap().unwrap();
            }
        }
        while let Some(done) = puts.join_next().await {
            done.unwrap().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let held = watcher.buffered_bytes();
        assert!(
            held <= 10 << 20,
            "{held} bytes wait for a watcher nobody reads (32 MiB were written)"
        );
        let mut seen = std::collections::BTreeSet::new();
        let mut last = 0;
        while seen.len() < PUTS {
            let batch = watcher.next().await.unwrap();
            for event in batch.events {
                assert!(event.kv.mod_revision > last, "in order");
                last = event.kv.mod_revision;
                assert!(seen.insert(event.kv.key), "once");
            }
        }
        eprintln!(
            "unread watcher: {held} bytes held; {} reconnects",
            watcher.reconnects()
        );
    });
}

/// A call to a server that hangs (SIGSTOP: the connection stays up) fails
/// with `Timeout` at its deadline instead of waiting forever.
///
/// Regression (review of net/ at 6e310c5): calls had no deadline.
#[test]
fn a_call_to_a_hung_server_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), 2, &[]);
    let rt = runtime();
    block_on(&rt, async {
        let options = keel_client::ClientOptions {
            request_timeout: Some(Duration::from_secs(1)),
            ..keel_client::ClientOptions::default()
        };
        let client = Client::connect_with(&[server.endpoint()], options)
            .await
            .unwrap();
        client.put("before", "v").await.unwrap();
        let mut watcher = client.watch_prefix("during").await.unwrap();
        server.signal("STOP");
        let started = std::time::Instant::now();
        let outcome = client.put("during", "v").await;
        let took = started.elapsed();
        // A watcher's own calls keep the deadline too.
        let started = std::time::Instant::now();
        let progress = watcher.request_progress().await;
        let progress_took = started.elapsed();
        server.signal("CONT");
        assert!(
            matches!(&outcome, Err(Error::Indeterminate(e)) if matches!(**e, Error::Timeout(_))),
            "{outcome:?}"
        );
        assert!(took < Duration::from_millis(1500), "{took:?}");
        assert!(matches!(progress, Err(Error::Timeout(_))), "{progress:?}");
        assert!(
            progress_took < Duration::from_millis(1500),
            "{progress_took:?}"
        );
        // The server back, calls go on.
        client.put("after", "v").await.unwrap();
    });
    server.stop();
}

/// The client's sockets probe a silent peer: TCP keepalive is on, with the
/// configured idle time and interval, so a server that vanishes without a
/// word (a partition, a dead machine) is found out by the kernel.
#[test]
fn the_clients_sockets_have_tcp_keepalive() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 2, &[]);
    let rt = runtime();
    block_on(&rt, async {
        let options = keel_client::ClientOptions {
            keepalive_time: Duration::from_secs(7),
            keepalive_interval: Duration::from_secs(3),
            ..keel_client::ClientOptions::default()
        };
        let client = Client::connect_with(&[server.endpoint()], options)
            .await
            .unwrap();
        client.put("k", "v").await.unwrap();
        // Every socket of this process connected to the server's ports.
        let ports: Vec<u16> = std::iter::once(server.client.port())
            .chain(server.core_ports.iter().copied())
            .collect();
        let mut checked = 0;
        for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if !peer_port(fd).is_some_and(|port| ports.contains(&port)) {
                continue;
            }
            let on = socket_option(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE);
            let idle = socket_option(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE);
            let interval = socket_option(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL);
            assert_eq!(
                (on, idle, interval),
                (Some(1), Some(7), Some(3)),
                "socket {fd}"
            );
            checked += 1;
        }
        assert!(checked >= 1, "no client socket to the server found");
        drop(client);
    });
}

/// The peer port of socket `fd`, if it is a connected IPv4 socket.
#[allow(unsafe_code)] // getpeername on this process's own fd: no safe wrapper in std
fn peer_port(fd: i32) -> Option<u16> {
    // SAFETY: a plain system call writing into a local struct of the size given.
    unsafe {
        let mut address: libc::sockaddr_in = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let done = libc::getpeername(
            fd,
            (&mut address as *mut libc::sockaddr_in).cast(),
            &mut len,
        );
        (done == 0 && i32::from(address.sin_family) == libc::AF_INET)
            .then(|| u16::from_be(address.sin_port))
    }
}

/// An integer socket option of `fd`.
#[allow(unsafe_code)] // getsockopt: no safe wrapper in std
fn socket_option(fd: i32, level: i32, name: i32) -> Option<i32> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a plain system call writing into a local int of the size given.
    let done = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (done == 0).then_some(value)
}
