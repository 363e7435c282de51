//! Maintenance's Snapshot and HashKV: both read the keyspace at one
//! revision page by page ([`Pages`]).
//!
//! Snapshot streams a keel snapshot file (`crate::snapshot_file`) of every
//! pair at the node's current revision and the leases. etcd's clients are
//! told how many bytes remain after each chunk (etcd-client waits for 0),
//! so the pairs are read twice: once to count the file's length, once to
//! send it. Both reads are at the same revision, which does not change.
//!
//! HashKV hashes the pairs at a revision: CRC-32 over each pair's key,
//! revisions, version, lease and value, in key order, over every shard
//! (`keel_engine::shard::hash_pair`, which the corruption check hashes
//! each shard with).
//! Members that applied the same writes answer the same hash at the same
//! revision, which is what etcd's corruption check compares (etcd hashes
//! its MVCC history instead; the two hashes are not comparable).

use keel_engine::mvcc::{LeaseInfo, Revision};
use keel_etcd_api::etcdserverpb as pb;
use tokio::sync::mpsc;
use tonic::Status;

use crate::etcd::cores::{client, Cores};
use crate::etcd::header::Headers;
use crate::etcd::pages::Pages;
use crate::snapshot_file;

/// The most bytes in one streamed chunk (etcd sends 32 KiB).
const CHUNK_BYTES: usize = 64 << 10;
/// How long a chunk may wait for the client to take it: a client that
/// stops reading gives up its turn to read the whole keyspace (two at
/// once per node) instead of holding it while its connection lives.
const CHUNK_STALL: std::time::Duration = std::time::Duration::from_secs(10);

/// The node's revision now, and the latest compaction (0 when none).
pub(crate) async fn revisions(cores: &Cores) -> Result<(Revision, Revision), Status> {
    cores
        .call(|node, core| {
            Box::pin(async move {
                let client = client(&node, core);
                let now = client.current_revision().await?;
                let compacted = client
                    .status()
                    .await?
                    .iter()
                    .map(|shard| shard.compacted_revision)
                    .max()
                    .unwrap_or(0);
                Ok((now, compacted))
            })
        })
        .await
}

/// The hash of every pair at `revision` (see the module's doc).
pub(crate) async fn hash_at(cores: &Cores, revision: Revision) -> Result<u32, Status> {
    let mut crc = crc32fast::Hasher::new();
    let mut pages = Pages::at(cores.clone(), revision);
    while let Some(page) = pages.next().await? {
        for pair in &page {
            keel_engine::shard::hash_pair(&mut crc, pair);
        }
    }
    Ok(crc.finalize())
}

/// Where a snapshot's chunks go.
pub(crate) type Chunks = mpsc::Sender<Result<pb::SnapshotResponse, Status>>;

/// Streams a snapshot of the node now into `out`, chunk by chunk, each
/// with the bytes left after it; an error ends the stream.
pub(crate) async fn stream(
    cores: Cores,
    headers: Headers,
    scans: std::sync::Arc<tokio::sync::Semaphore>,
    out: Chunks,
) {
    // A client that goes away while this waits its turn costs no read.
    let _turn = tokio::select! {
        turn = scans.acquire() => turn,
        () = out.closed() => return,
    };
    if let Err(status) = send_snapshot(&cores, &headers, &out).await {
        let _ = out.send(Err(status)).await;
    }
}

async fn send_snapshot(cores: &Cores, headers: &Headers, out: &Chunks) -> Result<(), Status> {
    let (revision, _) = revisions(cores).await?;
    // Leases are not versioned: they are taken as they are now, just
    // after the revision is fixed. A lease granted or revoked while the
    // pairs are read may be in the file without its keys, or its keys
    // without it (net/PROTOCOL.md, "Saved snapshots").
    let leases: Vec<LeaseInfo> = cores
        .call(|node, core| Box::pin(async move { client(&node, core).leases().await }))
        .await?;
    let header = snapshot_file::Header {
        shards: cores.node().shard_count() as u32,
        cluster_id: headers.member().cluster_id,
        revision,
    };

    // The first read: the file's length.
    let (mut pair_count, mut total) = (0u64, snapshot_file::header_len());
    let mut pages = Pages::at(cores.clone(), revision);
    while let Some(page) = pages.next().await? {
        pair_count += page.len() as u64;
        total += page.iter().map(snapshot_file::pair_len).sum::<usize>();
    }
    total += leases.len() * snapshot_file::LEASE_LEN + snapshot_file::END_LEN;
    let body = total;
    let total = snapshot_file::file_len(body);

    // The second: the bytes.
    let mut sender = ChunkSender {
        out,
        header: headers.at(revision),
        left: total,
        buffered: Vec::with_capacity(CHUNK_BYTES),
        crc: crc32fast::Hasher::new(),
        sha: sha2::Sha256::default(),
    };
    sender.add(&snapshot_file::header_bytes(&header)).await?;
    let mut sent_pairs = 0u64;
    let mut pages = Pages::at(cores.clone(), revision);
    while let Some(page) = pages.next().await? {
        for pair in &page {
            sender.add(&snapshot_file::pair_bytes(pair)).await?;
        }
        sent_pairs += page.len() as u64;
    }
    if sent_pairs != pair_count {
        return Err(Status::internal(format!(
            "the keyspace at revision {revision} read {pair_count} pairs, then {sent_pairs}"
        )));
    }
    for lease in &leases {
        sender.add(&snapshot_file::lease_bytes(lease)).await?;
    }
    let end = snapshot_file::end_bytes(pair_count, leases.len() as u64, sender.crc.clone());
    sender.add(&end).await?;
    let tail = snapshot_file::tail_bytes(body, sender.sha.clone());
    sender.add(&tail).await?;
    sender.flush().await?;
    if sender.left != 0 {
        return Err(Status::internal(
            "the snapshot came out shorter than counted",
        ));
    }
    Ok(())
}

/// Cuts the file into chunks and sends each with what is left after it.
struct ChunkSender<'a> {
    out: &'a Chunks,
    header: pb::ResponseHeader,
    /// Bytes not yet sent, this chunk's included.
    left: usize,
    buffered: Vec<u8>,
    /// Over every byte added so far.
    crc: crc32fast::Hasher,
    sha: sha2::Sha256,
}

impl ChunkSender<'_> {
    async fn add(&mut self, bytes: &[u8]) -> Result<(), Status> {
        self.crc.update(bytes);
        sha2::Digest::update(&mut self.sha, bytes);
        for part in bytes.chunks(CHUNK_BYTES) {
            if self.buffered.len() + part.len() > CHUNK_BYTES {
                self.flush().await?;
            }
            self.buffered.extend_from_slice(part);
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Status> {
        if self.buffered.is_empty() {
            return Ok(());
        }
        let blob = std::mem::replace(&mut self.buffered, Vec::with_capacity(CHUNK_BYTES));
        let Some(left) = self.left.checked_sub(blob.len()) else {
            return Err(Status::internal("the snapshot grew while it was sent"));
        };
        self.left = left;
        let chunk = pb::SnapshotResponse {
            header: Some(self.header),
            remaining_bytes: left as u64,
            blob,
            version: String::new(),
        };
        match tokio::time::timeout(CHUNK_STALL, self.out.send(Ok(chunk))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Status::cancelled("the client went away")),
            Err(_) => Err(Status::deadline_exceeded(
                "the client stopped reading the snapshot",
            )),
        }
    }
}
