//! Lock and election give one holder when two contenders' keys land on two
//! idle shards in the same millisecond: the server's wall clock is frozen,
//! so every revision is stamped in one millisecond, and the contenders
//! enqueue at once.
//!
//! Regression: both shards stamped the first write of the millisecond
//! `unix_millis << 16`, so both contenders got the same create revision,
//! each found nobody before it, and both held the lock (or led) with the
//! same fencing revision (issue 17).

mod support;

use std::sync::Arc;
use std::time::Duration;

use keel_client::Client;
use keel_engine::hlc::{ManualClock, KEEL_EPOCH_UNIX_MILLIS};
use keel_engine::routing::shard_of;
use keel_net::server::{Server, ServerConfig};
use support::{block_on, runtime};

const SHARDS: usize = 2;
const ROUNDS: u64 = 12;

fn server(dir: &std::path::Path) -> Server {
    let config = ServerConfig {
        data_dir: dir.to_path_buf(),
        client_address: "127.0.0.1:0".parse().unwrap(),
        core_port_base: 0,
        shards: SHARDS,
        cores: 2,
        pin: false,
        ..ServerConfig::default()
    };
    let frozen = Arc::new(ManualClock::at(KEEL_EPOCH_UNIX_MILLIS + 5_000));
    Server::start_with_clock(config, frozen).expect("server")
}

/// Two lease ids whose contender keys under `name` (`name/<id hex>`) land
/// on shard 0 and shard 1.
fn leases_on_two_shards(name: &str, from: i64) -> (i64, i64) {
    let on = |shard: usize| {
        (from..)
            .find(|id| shard_of(format!("{name}/{id:x}").as_bytes(), SHARDS) == shard)
            .unwrap_or(0)
    };
    (on(0), on(1))
}

/// Runs two contenders at once; checks that exactly one gets through
/// while the other waits, then lets the first go and checks the second
/// follows with another revision.
async fn one_holder_at_a_time<T, F, Fut, R>(label: &str, contend: F, release: R) -> (u64, u64)
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = (T, u64)> + Send + 'static,
    R: AsyncFnOnce(T),
{
    let mut first_task = tokio::spawn(contend(0));
    let mut second_task = tokio::spawn(contend(1));
    let (held, waiting) = tokio::select! {
        held = &mut first_task => (held.expect("task"), second_task),
        held = &mut second_task => (held.expect("task"), first_task),
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiting.is_finished(),
        "{label}: two holders at once (fencing revision {})",
        held.1
    );
    let fence = held.1;
    release(held.0).await;
    let (_, next) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the second contender never got through")
        .expect("task");
    assert_ne!(fence, next, "{label}: fencing revisions differ");
    (fence, next)
}

#[test]
fn two_lock_contenders_on_idle_shards_in_one_millisecond_get_one_holder() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let endpoint = server.client_address().to_string();
    let rt = runtime();
    block_on(&rt, async {
        let client = Client::connect(&[endpoint]).await.unwrap();
        for round in 0..ROUNDS {
            let name = format!("jobs-{round}");
            let (a, b) = leases_on_two_shards(&name, 1 + round as i64 * 1000);
            for lease in [a, b] {
                client.lease_grant(lease, 60).await.unwrap();
            }
            let contend = |which: usize| {
                let client = client.clone();
                let name = name.clone();
                let lease = [a, b][which];
                async move {
                    let guard = client.lock(name, lease).await.expect("lock");
                    let revision = guard.revision();
                    (guard, revision)
                }
            };
            let client = client.clone();
            one_holder_at_a_time(
                &format!("lock round {round}"),
                contend,
                async move |guard| {
                    client.unlock(guard).await.unwrap();
                },
            )
            .await;
        }
    });
}

#[test]
fn two_candidates_on_idle_shards_in_one_millisecond_get_one_leader() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let endpoint = server.client_address().to_string();
    let rt = runtime();
    block_on(&rt, async {
        let client = Client::connect(&[endpoint]).await.unwrap();
        for round in 0..ROUNDS {
            let name = format!("leader-{round}");
            let (a, b) = leases_on_two_shards(&name, 1 + round as i64 * 1000);
            for lease in [a, b] {
                client.lease_grant(lease, 60).await.unwrap();
            }
            let contend = |which: usize| {
                let client = client.clone();
                let name = name.clone();
                let lease = [a, b][which];
                async move {
                    let leadership = client
                        .campaign(name, lease, format!("candidate-{which}"))
                        .await
                        .expect("campaign");
                    let revision = leadership.revision();
                    (leadership, revision)
                }
            };
            let client = client.clone();
            one_holder_at_a_time(
                &format!("election round {round}"),
                contend,
                async move |leadership| client.resign(leadership).await.unwrap(),
            )
            .await;
        }
    });
}
