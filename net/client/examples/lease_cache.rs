//! A cache whose entries vanish when their lease expires, and a watcher
//! that evicts them from a local copy as they go.
//!
//! `cargo run -p keel-client --example lease_cache`.

use std::collections::HashMap;
use std::time::Duration;

use keel_client::proto::PutRequest;
use keel_client::{Client, EventKind};

/// Caches two entries for 1 s and follows them until both are evicted;
/// answers the local copy at the end (empty).
pub async fn run(endpoint: &str) -> keel_client::Result<HashMap<String, String>> {
    let client = Client::connect(&[endpoint]).await?;
    let mut watcher = client.watch_prefix("cache/").await?;
    let (lease, _) = client.lease_grant(0, 1).await?;
    for (key, value) in [("cache/user:1", "ann"), ("cache/user:2", "bob")] {
        client
            .put_with(PutRequest {
                key: key.into(),
                value: value.into(),
                lease,
                ..PutRequest::default()
            })
            .await?;
    }
    let mut local = HashMap::new();
    let mut evicted = 0;
    while evicted < 2 {
        let batch = tokio::time::timeout(Duration::from_secs(30), watcher.next())
            .await
            .map_err(|_| keel_client::Error::Protocol("no expiry within 30 s".into()))??;
        for event in batch.events {
            let key = String::from_utf8_lossy(&event.kv.key).into_owned();
            match event.kind {
                EventKind::Put => {
                    println!("cached {key}");
                    local.insert(key, String::from_utf8_lossy(&event.kv.value).into_owned());
                }
                EventKind::Delete => {
                    println!("evicted {key} (lease expired)");
                    local.remove(&key);
                    evicted += 1;
                }
            }
        }
    }
    Ok(local)
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> keel_client::Result<()> {
    let endpoint = std::env::var("KEEL_ENDPOINT").unwrap_or_else(|_| "127.0.0.1:2379".into());
    run(&endpoint).await.map(|_| ())
}
