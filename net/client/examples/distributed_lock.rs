//! A distributed lock guarding a counter: four workers each take the lock,
//! read, increment and write under a fencing check, then release it. The
//! final count shows no increment was lost.
//!
//! The lock and the counter share the hash tag `{counter}`, so the fenced
//! write (a transaction over both keys) stays on one shard.
//!
//! `cargo run -p keel-client --example distributed_lock`.

use keel_client::{Client, Cmp, CompareResult, Op, Txn};

/// Runs the workers; answers the final count.
pub async fn run(endpoint: &str) -> keel_client::Result<u64> {
    let client = Client::connect(&[endpoint]).await?;
    client.put("{counter}/value", "0").await?;
    let mut workers = Vec::new();
    for worker in 0..4 {
        let client = client.clone();
        workers.push(tokio::spawn(async move {
            let (lease, ttl) = client.lease_grant(0, 10).await?;
            let _keep_alive = client.lease_keep_alive(lease, ttl);
            for _ in 0..5 {
                let guard = client.lock("{counter}/lock", lease).await?;
                let current = client
                    .get("{counter}/value")
                    .await?
                    .map(|kv| kv.value)
                    .unwrap_or_default();
                let next = String::from_utf8_lossy(&current)
                    .parse::<u64>()
                    .unwrap_or(0)
                    + 1;
                // Fencing: the write only happens while this holder's lock
                // key is still the one with its revision.
                let fenced = Txn::new()
                    .when([Cmp::key(guard.key().to_vec())
                        .create_revision(CompareResult::Equal, guard.revision())])
                    .and_then([Op::put("{counter}/value", next.to_string())]);
                let (_, answer) = client.txn(fenced.build()).await?;
                assert!(answer.succeeded, "the lock holder's write is fenced in");
                client.unlock(guard).await?;
            }
            client.lease_revoke(lease).await?;
            println!("worker {worker} done");
            Ok::<_, keel_client::Error>(())
        }));
    }
    for worker in workers {
        worker
            .await
            .map_err(|e| keel_client::Error::Protocol(e.to_string()))??;
    }
    let count = client
        .get("{counter}/value")
        .await?
        .map(|kv| kv.value)
        .unwrap_or_default();
    let count = String::from_utf8_lossy(&count).parse::<u64>().unwrap_or(0);
    println!("counter = {count}");
    Ok(count)
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> keel_client::Result<()> {
    let endpoint = std::env::var("KEEL_ENDPOINT").unwrap_or_else(|_| "127.0.0.1:2379".into());
    run(&endpoint).await.map(|_| ())
}
