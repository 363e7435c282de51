//! Leader election with failover: two candidates campaign; the first
//! leads; when its process dies (its lease is revoked here, as expiry
//! would do), the second takes over. An observer sees each leader.
//!
//! `cargo run -p keel-client --example leader_election`.

use keel_client::Client;

/// Runs the failover; answers the leaders the observer saw, in order.
pub async fn run(endpoint: &str) -> keel_client::Result<Vec<String>> {
    let client = Client::connect(&[endpoint]).await?;
    let mut observer = client.observe("election/scheduler").await?;
    let (lease_a, ttl) = client.lease_grant(0, 10).await?;
    let _keep_a = client.lease_keep_alive(lease_a, ttl);
    let (lease_b, ttl) = client.lease_grant(0, 10).await?;
    let _keep_b = client.lease_keep_alive(lease_b, ttl);

    let a = client
        .campaign("election/scheduler", lease_a, "node-a")
        .await?;
    println!("node-a leads (fencing revision {})", a.revision());
    let standby = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .campaign("election/scheduler", lease_b, "node-b")
                .await
        })
    };
    let mut seen = vec![String::from_utf8_lossy(&observer.next().await?.value).into_owned()];

    // node-a dies: its lease goes, and with it its key.
    client.lease_revoke(lease_a).await?;
    let b = standby
        .await
        .map_err(|e| keel_client::Error::Protocol(e.to_string()))??;
    println!("node-b leads (fencing revision {})", b.revision());
    seen.push(String::from_utf8_lossy(&observer.next().await?.value).into_owned());
    client.resign(b).await?;
    client.lease_revoke(lease_b).await?;
    println!("observer saw: {seen:?}");
    Ok(seen)
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> keel_client::Result<()> {
    let endpoint = std::env::var("KEEL_ENDPOINT").unwrap_or_else(|_| "127.0.0.1:2379".into());
    run(&endpoint).await.map(|_| ())
}
