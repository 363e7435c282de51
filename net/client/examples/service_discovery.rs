//! Service discovery: read every instance under `services/api/`, then
//! watch the prefix from the revision after that read, so no change is
//! missed between the two.
//!
//! `cargo run -p keel-client --example service_discovery`.

use std::collections::BTreeMap;

use keel_client::proto::WatchCreate;
use keel_client::{prefix_end, Client, EventKind};

/// Follows `services/api/` until it has seen two instances come and one go.
pub async fn run(endpoint: &str) -> keel_client::Result<BTreeMap<String, String>> {
    let client = Client::connect(&[endpoint]).await?;
    let prefix = b"services/api/".to_vec();
    let (revision, current) = client.get_prefix(prefix.clone()).await?;
    let mut instances: BTreeMap<String, String> = current
        .kvs
        .into_iter()
        .map(|kv| (text(&kv.key), text(&kv.value)))
        .collect();
    println!("at revision {revision}: {instances:?}");
    let mut watcher = client
        .watch(WatchCreate {
            range_end: prefix_end(&prefix),
            key: prefix,
            start_revision: revision + 1,
            ..WatchCreate::default()
        })
        .await?;
    // Some instances come and go (another process, in real life).
    let writer = client.clone();
    tokio::spawn(async move {
        let _ = writer.put("services/api/a", "10.0.0.1:80").await;
        let _ = writer.put("services/api/b", "10.0.0.2:80").await;
        let _ = writer.delete("services/api/a").await;
    });
    let mut changes = 0;
    while changes < 3 {
        for event in watcher.next().await?.events {
            let key = text(&event.kv.key);
            match event.kind {
                EventKind::Put => {
                    println!("up: {key} at {}", text(&event.kv.value));
                    instances.insert(key, text(&event.kv.value));
                }
                EventKind::Delete => {
                    println!("down: {key}");
                    instances.remove(&key);
                }
            }
            changes += 1;
        }
    }
    println!("instances now: {instances:?}");
    Ok(instances)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> keel_client::Result<()> {
    let endpoint = std::env::var("KEEL_ENDPOINT").unwrap_or_else(|_| "127.0.0.1:2379".into());
    run(&endpoint).await.map(|_| ())
}
