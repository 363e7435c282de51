//! Service registration: an instance puts its address under
//! `services/<name>/<instance>` attached to a lease, and keeps the lease
//! alive. If the instance dies, its key vanishes when the lease expires.
//!
//! `cargo run -p keel-client --example service_registration` (server at
//! `KEEL_ENDPOINT`, default 127.0.0.1:2379).

use std::time::Duration;

use keel_client::proto::PutRequest;
use keel_client::Client;

/// Registers an instance, stays up for a moment, then deregisters;
/// answers whether the registration was there while serving and gone
/// after.
pub async fn run(endpoint: &str) -> keel_client::Result<bool> {
    let client = Client::connect(&[endpoint]).await?;
    let (lease, ttl) = client.lease_grant(0, 5).await?;
    let keep_alive = client.lease_keep_alive(lease, ttl);
    let key = "services/api/instance-1";
    client
        .put_with(PutRequest {
            key: key.into(),
            value: b"10.0.0.1:8080".to_vec(),
            lease,
            ..PutRequest::default()
        })
        .await?;
    println!("registered {key} with lease {lease:x} (TTL {ttl} s)");
    // Serving... the keep-alive renews the lease every ttl/3 seconds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = client.lease_time_to_live(lease, true).await?;
    println!(
        "lease {lease:x}: {} s left, keys {}",
        status.ttl,
        status.keys.len()
    );
    let registered = client.get(key).await?.is_some();
    // A graceful stop revokes the lease: the registration goes at once.
    drop(keep_alive);
    client.lease_revoke(lease).await?;
    let gone = client.get(key).await?.is_none();
    println!("deregistered: {gone}");
    Ok(registered && gone)
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> keel_client::Result<()> {
    let endpoint = std::env::var("KEEL_ENDPOINT").unwrap_or_else(|_| "127.0.0.1:2379".into());
    run(&endpoint).await.map(|_| ())
}
