//! Snapshots of a shard for followers that fell past the leader's WAL
//! (docs/cluster.md, "Snapshots").
//!
//! Making one: the tree's last commit is pinned (a read snapshot), and
//! each follower is sent the bytes of a file holding that commit alone,
//! read from the live tree file (`btree/image.rs`). Nothing is copied or
//! written: a copy of a large shard, written at once, filled the page
//! cache with dirty pages whose writeback stalled every WAL sync on the
//! disk. The pin lasts while a send is in flight, and a little after
//! (`Replica::release_snapshot`); meanwhile pages freed by later commits
//! are not reused, so the tree file grows by what is written during a
//! send, as etcd's does. The image holds the commit's free pages too.
//!
//! Installing one, crash-safe at every step:
//! 1. the received file is complete and synced (the transport does that);
//! 2. `install.pending` records `(index, term)`, synced;
//! 3. the received file is renamed over `kv.db`, and the directory synced;
//! 4. the WAL is reset to end at `index`, with the hard state and the
//!    snapshot in its state record;
//! 5. `install.pending` is removed.
//!
//! A start that finds `install.pending` finishes step 4 if the tree already
//! holds the snapshot (the rename happened), and otherwise forgets it (the
//! old tree and WAL are whole).

use std::io::Write;
use std::path::Path;

use crate::btree::{CommitImage, ReadTxn};
use crate::mvcc::Store;

const PENDING: &str = "install.pending";

/// A snapshot for followers: one commit of the shard's tree, pinned, read
/// as a file of its own while it is sent. Shared (`Rc`) by the replica and
/// each send in flight; the pin goes with the last of them.
pub struct PinnedSnapshot {
    /// The applied index of the commit.
    index: u64,
    image: CommitImage,
    /// Keeps the commit's pages from being reused while the image is read
    /// (the invariant of `btree/image.rs`).
    _pin: ReadTxn,
}

impl PinnedSnapshot {
    /// The applied index the snapshot holds.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The bytes to send: a tree file holding the commit alone.
    pub fn image(&self) -> &CommitImage {
        &self.image
    }
}

/// Pins the tree of `store` at its last commit for followers, unless that
/// commit is the empty tree never synced (index 0: nothing to send, and
/// raft-rs dies on a snapshot at 0).
///
/// # Errors
/// A message naming the failure.
pub(crate) fn pin(store: &Store) -> Result<Option<PinnedSnapshot>, String> {
    let pin = store
        .database()
        .begin_read()
        .map_err(|e| format!("snapshot read: {e}"))?;
    let index = pin.applied_index();
    if index == 0 {
        return Ok(None);
    }
    let image = pin.image().map_err(|e| format!("snapshot image: {e}"))?;
    Ok(Some(PinnedSnapshot {
        index,
        image,
        _pin: pin,
    }))
}

/// Removes snapshot files in `dir`: received ones never installed, and
/// copies an older keel made for followers.
pub(crate) fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with("snapshot-") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Steps 2 and 3: records the install, then puts `received` in place of
/// `kv.db`.
///
/// # Errors
/// The I/O failure (the shard must stop: the tree may be either).
pub(crate) fn put_in_place(
    dir: &Path,
    received: &Path,
    index: u64,
    term: u64,
) -> std::io::Result<()> {
    let pending = dir.join(PENDING);
    let mut file = std::fs::File::create(&pending)?;
    file.write_all(&index.to_le_bytes())?;
    file.write_all(&term.to_le_bytes())?;
    file.sync_all()?;
    sync_dir(dir)?;
    std::fs::rename(received, dir.join("kv.db"))?;
    sync_dir(dir)
}

/// Step 5: the install is complete.
///
/// # Errors
/// The I/O failure.
pub(crate) fn finish(dir: &Path) -> std::io::Result<()> {
    std::fs::remove_file(dir.join(PENDING))?;
    sync_dir(dir)
}

/// At start: an install cut short, as `(index, term)`, when the tree already
/// holds it (the caller resets the WAL and calls [`finish`]); a record of
/// one that never reached the tree is removed.
///
/// # Errors
/// The I/O failure, or a damaged record.
pub(crate) fn interrupted(dir: &Path, tree_applied: u64) -> Result<Option<(u64, u64)>, String> {
    let pending = dir.join(PENDING);
    let bytes = match std::fs::read(&pending) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", pending.display())),
    };
    let damaged = || format!("{}: {} bytes, expected 16", pending.display(), bytes.len());
    let (index, rest) = bytes.split_first_chunk::<8>().ok_or_else(damaged)?;
    let Some((term, [])) = rest.split_first_chunk::<8>() else {
        return Err(damaged());
    };
    let (index, term) = (u64::from_le_bytes(*index), u64::from_le_bytes(*term));
    if tree_applied == index {
        return Ok(Some((index, term)));
    }
    finish(dir).map_err(|e| format!("{}: {e}", pending.display()))?;
    Ok(None)
}
