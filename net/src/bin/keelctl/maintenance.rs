//! Maintenance commands that go through etcd's `Maintenance` service (the
//! client port serves it beside keel's protocol): `endpoint hashkv`.

use std::time::Duration;

use keel_etcd_api::etcdserverpb::HashKvRequest;
use serde_json::json;

use crate::cli::Failure;
use crate::connect::Connect;
use crate::etcd_format::table;
use crate::output::{print_json, Format};

/// One endpoint's hash.
struct Hashed {
    endpoint: String,
    hash: u32,
    revision: i64,
    compact_revision: i64,
}

async fn hash_kv(
    connect: &Connect,
    endpoint: &str,
    revision: i64,
    shard: Option<u32>,
    timeout: Duration,
) -> Result<Hashed, String> {
    let ask = async {
        let mut client = connect.maintenance(endpoint).await?;
        let mut request = connect.request(HashKvRequest { revision });
        if let Some(shard) = shard {
            // keel's own metadata: one shard's hash (docs/corruption.md).
            request.metadata_mut().insert(
                "keel-shard",
                shard.to_string().parse().map_err(|_| "bad shard")?,
            );
        }
        client
            .hash_kv(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| status.message().to_string())
    };
    let answer = tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| format!("no answer within {} s", timeout.as_secs()))??;
    Ok(Hashed {
        endpoint: endpoint.to_string(),
        hash: answer.hash,
        revision: answer.hash_revision,
        compact_revision: answer.compact_revision,
    })
}

/// `endpoint hashkv [--cluster] [--rev N] [--shard S]`: the hash of the
/// keyspace (or of shard S alone) at one
/// revision (the first endpoint's current one unless given) from the first
/// endpoint, or with `cluster` from every endpoint given (etcdctl's
/// `--cluster` asks the member list; keel's lists no client addresses).
/// Members that applied the same writes print the same hash; when they
/// differ the command fails, naming the endpoints that differ from the
/// hash most endpoints have (or saying that no hash has most).
pub(crate) async fn endpoint_hashkv(
    connect: &Connect,
    endpoints: &[&str],
    cluster: bool,
    revision: i64,
    shard: Option<u32>,
    timeout: Duration,
    format: Format,
) -> Result<(), Failure> {
    let Some((first, others)) = endpoints.split_first() else {
        return Err(Failure::bad_args("no endpoint given"));
    };
    let first = hash_kv(connect, first, revision, shard, timeout).await?;
    let at = first.revision;
    let mut hashed = vec![first];
    if cluster {
        for endpoint in others {
            hashed.push(hash_kv(connect, endpoint, at, shard, timeout).await?);
        }
    }
    match format {
        Format::Simple => {
            for h in &hashed {
                println!("{}, {}", h.endpoint, h.hash);
            }
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = hashed
                .iter()
                .map(|h| {
                    vec![
                        h.endpoint.clone(),
                        h.hash.to_string(),
                        h.revision.to_string(),
                    ]
                })
                .collect();
            print!("{}", table(&["endpoint", "hash", "hash revision"], &rows));
        }
        Format::Json => print_json(&json!(hashed
            .iter()
            .map(|h| json!({
                "Endpoint": h.endpoint,
                "HashKV": {
                    "hash": h.hash,
                    "compact_revision": h.compact_revision,
                    "hash_revision": h.revision,
                }
            }))
            .collect::<Vec<_>>())),
        other => return Err(Failure::unsupported(other)),
    }
    let hashes: Vec<u32> = hashed.iter().map(|h| h.hash).collect();
    if hashes.windows(2).all(|pair| pair[0] == pair[1]) {
        return Ok(());
    }
    let votes = |hash: u32| hashes.iter().filter(|h| **h == hash).count();
    let common = hashes
        .iter()
        .copied()
        .find(|hash| 2 * votes(*hash) > hashes.len());
    let Some(common) = common else {
        return Err(Failure::from(format!(
            "the hashes at revision {at} differ, and no hash is held by most endpoints"
        )));
    };
    let differing: Vec<&str> = hashed
        .iter()
        .filter(|h| h.hash != common)
        .map(|h| h.endpoint.as_str())
        .collect();
    Err(Failure::from(format!(
        "the hashes at revision {at} differ: {} differ from the hash most endpoints have, {common}",
        differing.join(", ")
    )))
}

/// `snapshot save FILE`: etcd's `Maintenance.Snapshot` from `endpoint`,
/// streamed into `FILE.part`, synced, checked whole, then renamed to
/// `FILE` (a save cut short leaves no `FILE`).
pub(crate) async fn snapshot_save(
    connect: &Connect,
    endpoint: Option<&str>,
    file: &std::path::Path,
) -> Result<(), Failure> {
    use std::io::Write;
    let endpoint = endpoint.ok_or_else(|| Failure::bad_args("no endpoint given"))?;
    let part = std::path::PathBuf::from(format!("{}.part", file.display()));
    let saved = async {
        let mut client = connect
            .maintenance(endpoint)
            .await?
            .max_decoding_message_size(usize::MAX);
        let mut chunks = client
            .snapshot(connect.request(keel_etcd_api::etcdserverpb::SnapshotRequest {}))
            .await
            .map_err(|status| status.message().to_string())?
            .into_inner();
        // Plain blocking writes: keelctl does nothing else meanwhile.
        let mut out =
            std::fs::File::create(&part).map_err(|e| format!("{}: {e}", part.display()))?;
        let mut left = None;
        while let Some(chunk) = chunks
            .message()
            .await
            .map_err(|status| status.message().to_string())?
        {
            out.write_all(&chunk.blob)
                .map_err(|e| format!("{}: {e}", part.display()))?;
            left = Some(chunk.remaining_bytes);
        }
        if left != Some(0) {
            return Err("the snapshot stream ended before its last chunk".to_string());
        }
        out.sync_all()
            .map_err(|e| format!("{}: {e}", part.display()))?;
        drop(out);
        let bytes = std::fs::read(&part).map_err(|e| format!("{}: {e}", part.display()))?;
        keel_net::snapshot_file::read(&bytes).map_err(|e| e.to_string())?;
        std::fs::rename(&part, file).map_err(|e| format!("{}: {e}", file.display()))
    };
    match saved.await {
        Ok(()) => {
            println!("Snapshot saved at {}", file.display());
            Ok(())
        }
        Err(error) => {
            let _ = std::fs::remove_file(&part);
            Err(Failure::from(error))
        }
    }
}

/// `snapshot status FILE`: checks the file whole and prints, as etcdctl
/// does, its hash (CRC-32 of the file), revision, keys and size; `-w
/// table` and `-w json` add its shards and leases.
pub(crate) fn snapshot_status(file: &std::path::Path, format: Format) -> Result<(), Failure> {
    let bytes =
        std::fs::read(file).map_err(|e| Failure::from(format!("{}: {e}", file.display())))?;
    let snapshot = keel_net::snapshot_file::read(&bytes)
        .map_err(|e| Failure::from(format!("{}: {e}", file.display())))?;
    let hash = crc32fast::hash(&bytes);
    let header = snapshot.header;
    let (keys, size) = (snapshot.pairs.len(), bytes.len());
    match format {
        Format::Simple => println!("{hash:x}, {}, {keys}, {size}", header.revision),
        Format::Table => print!(
            "{}",
            table(
                &[
                    "hash",
                    "revision",
                    "total keys",
                    "total size",
                    "shards",
                    "leases"
                ],
                &[vec![
                    format!("{hash:x}"),
                    header.revision.to_string(),
                    keys.to_string(),
                    size.to_string(),
                    header.shards.to_string(),
                    snapshot.leases.len().to_string(),
                ]],
            )
        ),
        Format::Json => print_json(&json!({
            "hash": hash,
            "revision": header.revision,
            "totalKey": keys,
            "totalSize": size,
            "shards": header.shards,
            "leases": snapshot.leases.len(),
        })),
        other => return Err(Failure::unsupported(other)),
    }
    Ok(())
}
