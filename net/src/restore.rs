//! `keel restore FILE --data-dir D --name N --initial-cluster ...`
//! (docs/snapshots.md): checks a saved snapshot (`crate::snapshot_file`)
//! whole, then builds member N's data directory of a new cluster from it
//! (`keel_engine::shard::restore_member`). Run it for every member of the
//! new cluster with the same file and `--initial-cluster`, then start them
//! with those flags.

use std::path::Path;

use keel_engine::shard::{restore_member, Restorable, Restored};

use crate::server::{Overrides, ServerConfig};
use crate::snapshot_file;

/// Why a restore did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The file cannot be read.
    #[error("{path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// The file is not a whole, undamaged keel snapshot.
    #[error("{path}: {error}")]
    Snapshot {
        /// The file.
        path: String,
        /// What is wrong with it.
        error: snapshot_file::SnapshotError,
    },
    /// The settings name no cluster this member can be in.
    #[error(transparent)]
    Config(#[from] crate::server::ConfigError),
    /// Building the directory failed; nothing was left in its place.
    #[error(transparent)]
    Node(#[from] keel_engine::shard::NodeError),
}

/// Restores `file` into the data directory `overrides` name, for the
/// member and cluster they name (defaults as `keel`'s); answers what it
/// restored.
///
/// # Errors
/// [`RestoreError`]: nothing is written unless the file is whole and the
/// directory new.
pub fn restore_file(
    file: &Path,
    mut overrides: Overrides,
) -> Result<(ServerConfig, Restored), RestoreError> {
    // The member listens nowhere now: its peer address is the one the
    // initial cluster gives it (the check that the two agree is for a
    // server that listens).
    if let (Some(name), Some(initial)) = (&overrides.name, &overrides.initial_cluster) {
        let listed = keel_engine::shard::Cluster::parse_initial(initial)
            .map_err(crate::server::ConfigError::Invalid)?;
        let mine = listed
            .iter()
            .find(|(listed, _)| listed == name)
            .and_then(|(_, address)| address.parse().ok());
        if mine.is_some() {
            overrides.advertise_peer = mine;
        }
    }
    let config = overrides.apply(ServerConfig::default())?;
    let cluster = config.cluster.cluster(&config.name)?;
    let path = file.display().to_string();
    let bytes = std::fs::read(file).map_err(|error| RestoreError::Read {
        path: path.clone(),
        error,
    })?;
    let snapshot =
        snapshot_file::read(&bytes).map_err(|error| RestoreError::Snapshot { path, error })?;
    drop(bytes);
    let restorable = Restorable {
        revision: snapshot.header.revision,
        shards: snapshot.header.shards as usize,
        pairs: snapshot.pairs,
        leases: snapshot.leases,
    };
    let restored = restore_member(&config.data_dir, &cluster, &restorable)?;
    Ok((config, restored))
}
