//! `keel restore` (docs/snapshots.md): a new member's data directory built
//! from a saved snapshot, as `etcdutl snapshot restore` builds one.
//!
//! Every member of the new cluster is restored from the same snapshot with
//! the same `--initial-cluster`, so every member's shard `s` is built alike:
//!
//! - `node.meta` records the snapshot's shard count and the new cluster;
//! - each shard's tree holds the shard's pairs as saved (revisions,
//!   version, lease), every lease (with its remaining TTL on its home
//!   shard, as a mirror on the others), is at the snapshot's revision,
//!   compacted there, and has applied index [`RESTORED_INDEX`] with every
//!   new member a voter;
//! - each shard's WAL starts after that index, at term [`RESTORED_TERM`],
//!   as after a snapshot install: raft-rs starts there with nothing to
//!   replay, and a member added later gets the shard by snapshot.
//!
//! The directory is built beside its place (`DIR.restoring`) and renamed
//! into it at the end: a restore cut short leaves no directory a server
//! would start on.

use std::path::{Path, PathBuf};

use raft::eraftpb::{ConfState, HardState};

use crate::btree::Options;
use crate::mvcc::{ConfIds, KeyValue, LeaseInfo, RestoreSeqs, Revision, Store};
use crate::routing::shard_of;
use crate::shard::cluster::Cluster;
use crate::shard::error::{NodeError, NodeResult};
use crate::shard::log_store::encode_state;
use crate::shard::node::shard_dir;
use crate::shard::node_meta;
use crate::shard::replica::home_of_lease;

/// The log index every restored shard starts after (raft-rs refuses a
/// snapshot at 0).
pub const RESTORED_INDEX: u64 = 1;
/// The term of that index.
pub const RESTORED_TERM: u64 = 1;
/// Pairs written per tree commit.
const PAIRS_PER_COMMIT: usize = 4096;

/// What a member is restored from: a snapshot's content.
#[derive(Debug, Clone)]
pub struct Restorable {
    /// The revision every pair was read at; the restored shards start there.
    pub revision: Revision,
    /// The shard count it was taken with (the new cluster has as many).
    pub shards: usize,
    /// Every pair at the revision.
    pub pairs: Vec<KeyValue>,
    /// Every lease.
    pub leases: Vec<LeaseInfo>,
}

/// What a restore did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Restored {
    /// Pairs restored.
    pub pairs: usize,
    /// Leases restored.
    pub leases: usize,
    /// Pairs whose lease was not in the snapshot (revoked while it was
    /// taken): restored with no lease.
    pub leases_dropped: usize,
}

fn failed(what: &str, error: impl std::fmt::Display) -> NodeError {
    NodeError::Start(format!("restore: {what}: {error}"))
}

/// Builds `data_dir` for `cluster`'s member `cluster.me` from `snapshot`.
///
/// # Errors
/// `data_dir` exists and is not empty, or writing it failed (nothing is
/// left in its place).
pub fn restore_member(
    data_dir: &Path,
    cluster: &Cluster,
    snapshot: &Restorable,
) -> NodeResult<Restored> {
    let in_use = std::fs::read_dir(data_dir).is_ok_and(|mut entries| entries.next().is_some());
    if in_use {
        return Err(failed(
            &data_dir.display().to_string(),
            "the directory exists and is not empty; restore into a new one",
        ));
    }
    let building = PathBuf::from(format!("{}.restoring", data_dir.display()));
    if building.exists() {
        std::fs::remove_dir_all(&building).map_err(|e| failed("remove the last attempt", e))?;
    }
    std::fs::create_dir_all(&building).map_err(|e| failed("create the directory", e))?;
    let restored = build(&building, cluster, snapshot);
    let restored = restored.and_then(|restored| {
        if data_dir.exists() {
            std::fs::remove_dir(data_dir).map_err(|e| failed("replace the empty directory", e))?;
        }
        std::fs::rename(&building, data_dir).map_err(|e| failed("move into place", e))?;
        sync_parent(data_dir)?;
        Ok(restored)
    });
    if restored.is_err() {
        let _ = std::fs::remove_dir_all(&building);
    }
    restored
}

fn sync_parent(dir: &Path) -> NodeResult<()> {
    let parent = match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| failed("sync the parent directory", e))
}

fn build(dir: &Path, cluster: &Cluster, snapshot: &Restorable) -> NodeResult<Restored> {
    let shards = snapshot.shards;
    node_meta::open_or_create(dir, shards, shards, cluster)?;
    let known: std::collections::HashSet<i64> = snapshot.leases.iter().map(|l| l.id).collect();
    let mut restored = Restored {
        leases: snapshot.leases.len(),
        ..Restored::default()
    };
    let conf = ConfIds {
        voters: cluster.voters(),
        ..ConfIds::default()
    };
    // Each pair's shard, found once.
    let mut by_shard: Vec<Vec<usize>> = vec![Vec::new(); shards];
    for (i, pair) in snapshot.pairs.iter().enumerate() {
        if let Some(list) = by_shard.get_mut(shard_of(&pair.key, shards)) {
            list.push(i);
        }
    }
    for (shard, mine) in by_shard.iter().enumerate() {
        let shard_path = shard_dir(dir, shard);
        std::fs::create_dir_all(&shard_path).map_err(|e| failed("create a shard", e))?;
        let mut store = Store::open(shard_path.join("kv.db"), Options::default())
            .map_err(|e| failed(&format!("shard {shard}'s tree"), e))?;
        let mut seqs = RestoreSeqs::default();
        let mut chunk = Vec::with_capacity(PAIRS_PER_COMMIT);
        for pair in mine.iter().filter_map(|i| snapshot.pairs.get(*i)) {
            let mut pair = pair.clone();
            if pair.lease != 0 && !known.contains(&pair.lease) {
                pair.lease = 0;
                restored.leases_dropped += 1;
            }
            chunk.push(pair);
            if chunk.len() == PAIRS_PER_COMMIT {
                store
                    .restore_pairs(&chunk, &mut seqs)
                    .map_err(|e| failed(&format!("shard {shard}"), e))?;
                restored.pairs += chunk.len();
                chunk.clear();
            }
        }
        store
            .restore_pairs(&chunk, &mut seqs)
            .map_err(|e| failed(&format!("shard {shard}"), e))?;
        restored.pairs += chunk.len();
        for lease in &snapshot.leases {
            let home = home_of_lease(lease.id, shards) == shard;
            store
                .restore_lease(lease, home)
                .map_err(|e| failed(&format!("shard {shard}"), e))?;
        }
        store
            .finish_restore(RESTORED_INDEX, snapshot.revision, &conf)
            .map_err(|e| failed(&format!("shard {shard}"), e))?;
        drop(store);
        start_log(&shard_path.join("wal"), &conf)?;
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| failed("sync the directory", e))?;
    Ok(restored)
}

/// A shard's WAL that starts after [`RESTORED_INDEX`] at
/// [`RESTORED_TERM`], as after a snapshot install, with `conf`'s voters.
fn start_log(dir: &Path, conf: &ConfIds) -> NodeResult<()> {
    let hard_state = HardState {
        term: RESTORED_TERM,
        commit: RESTORED_INDEX,
        ..HardState::default()
    };
    let conf_state = ConfState {
        voters: conf.voters.clone(),
        ..ConfState::default()
    };
    let state = encode_state(&hard_state, &conf_state, (RESTORED_INDEX, RESTORED_TERM));
    let dir = dir.to_path_buf();
    // The WAL runs on a glommio executor (io_uring): one of its own here.
    let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("keel-restore")
        .io_memory(1 << 20)
        .spawn(move || async move {
            let wal = keel_wal::Wal::open(&dir, keel_wal::WalConfig::default())
                .await
                .map_err(|e| e.to_string())?;
            let reset = wal.reset(RESTORED_INDEX);
            let saved = wal.save_state(&state);
            reset.await.map_err(|e| e.to_string())?;
            saved.await.map_err(|e| e.to_string())?;
            wal.close().await.map_err(|e| e.to_string())
        })
        .map_err(|e| failed("start the WAL's executor", e))?;
    executor
        .join()
        .map_err(|e| failed("the WAL's executor", e))?
        .map_err(|e| failed("the WAL", e))
}
