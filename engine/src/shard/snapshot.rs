//! Snapshots of a shard for followers that fell past the leader's WAL
//! (docs/cluster.md, "Snapshots").
//!
//! Making one: every tree of the shard's B+-tree file, read at one commit,
//! is copied into a new file beside it (`snapshot-at-<index>.db`), synced,
//! with that commit's applied index. The copy is also compacted: it holds
//! no free pages.
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
use std::ops::Bound;
use std::path::{Path, PathBuf};

use crate::btree::{Database, Options};
use crate::mvcc::Store;

const PENDING: &str = "install.pending";

/// Copies the tree of `store` at its last commit into a new file in `dir`;
/// answers the commit's applied index and the file.
///
/// # Errors
/// A message naming the failure (the partial file is removed).
pub(crate) fn make(store: &Store, dir: &Path, options: Options) -> Result<(u64, PathBuf), String> {
    let read = store
        .database()
        .begin_read()
        .map_err(|e| format!("snapshot read: {e}"))?;
    let index = read.applied_index();
    let path = dir.join(format!("snapshot-at-{index}.db"));
    let copy = || -> Result<(), String> {
        let _ = std::fs::remove_file(&path);
        let target = Database::open(&path, options).map_err(|e| e.to_string())?;
        let mut write = target.begin_write().map_err(|e| e.to_string())?;
        for name in read.tree_names().map_err(|e| e.to_string())? {
            let source = read.view(&name).map_err(|e| e.to_string())?;
            let mut tree = write.tree(&name).map_err(|e| e.to_string())?;
            for row in source
                .range(Bound::Unbounded, Bound::Unbounded)
                .map_err(|e| e.to_string())?
            {
                let (key, value) = row.map_err(|e| e.to_string())?;
                tree.insert(key, value).map_err(|e| e.to_string())?;
            }
        }
        write.set_applied_index(index);
        write.commit().map_err(|e| e.to_string())?;
        Ok(())
    };
    match copy() {
        Ok(()) => Ok((index, path)),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(format!("snapshot copy: {e}"))
        }
    }
}

/// Removes snapshot files in `dir` other than `keep`: made ones that were
/// superseded, and received ones never installed.
pub(crate) fn remove_others(dir: &Path, keep: Option<&Path>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snapshot-") && Some(path.as_path()) != keep {
            let _ = std::fs::remove_file(&path);
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
