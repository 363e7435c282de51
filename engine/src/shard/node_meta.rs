//! `DATA_DIR/node.meta`: the shard count, fixed when the directory is
//! created (engine/FORMAT.md, "Node meta file"). 20 bytes: magic
//! `KEELNODE`, version `u32`, shards `u32`, CRC-32 of the 16 bytes before,
//! all little-endian. Written to a temporary file, synced, renamed, and the
//! directory synced, so it is either whole or absent.
//!
//! The version is the data directory's: version 2 has revisions below 2^53
//! that name their shard (`hlc.rs`). A directory of version 1 (revisions
//! `unix_millis << 16`, about 1.2e17) is refused with an error that says
//! so: its revisions cannot be carried over.

use std::io::Write;
use std::path::Path;

use crate::shard::error::{NodeError, NodeResult};

const MAGIC: &[u8; 8] = b"KEELNODE";
const VERSION: u32 = 2;
/// The version before revisions below 2^53.
const VERSION_WIDE_REVISIONS: u32 = 1;
const FILE: &str = "node.meta";
/// Shard counts above this are refused: shards share out the logical part
/// of a revision (`hlc.rs`).
pub(crate) const MAX_SHARDS: usize = crate::hlc::MAX_SHARDS;

fn encode(shards: u32) -> [u8; 20] {
    let mut bytes = [0u8; 20];
    bytes[..8].copy_from_slice(MAGIC);
    bytes[8..12].copy_from_slice(&VERSION.to_le_bytes());
    bytes[12..16].copy_from_slice(&shards.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..16]);
    bytes[16..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

fn decode(bytes: &[u8]) -> Result<usize, String> {
    let bytes: &[u8; 20] = bytes
        .try_into()
        .map_err(|_| format!("{} bytes, expected 20", bytes.len()))?;
    let (body, crc) = bytes.split_at(16);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err("checksum mismatch".to_string());
    }
    let (magic, rest) = body.split_at(8);
    if magic != MAGIC {
        return Err("not a keel node file".to_string());
    }
    let (version, shards) = rest.split_at(4);
    let word = |b: &[u8]| b.try_into().map(u32::from_le_bytes).unwrap_or(0);
    match word(version) {
        VERSION => {}
        VERSION_WIDE_REVISIONS => {
            return Err("the directory was written by a keel whose revisions were \
                 unix_millis << 16 (version 1); revisions are now below 2^53 and \
                 cannot be carried over: start from an empty data directory"
                .to_string())
        }
        other => return Err(format!("unknown version {other}")),
    }
    let shards = word(shards) as usize;
    if !(1..=MAX_SHARDS).contains(&shards) {
        return Err(format!("{shards} shards; 1 to {MAX_SHARDS} allowed"));
    }
    Ok(shards)
}

/// The directory's shard count: read back, or recorded now as `requested`
/// (0: `default`).
///
/// # Errors
/// A damaged file, or `requested` differing from what is recorded.
pub(crate) fn open_or_create(dir: &Path, requested: usize, default: usize) -> NodeResult<usize> {
    let path = dir.join(FILE);
    let fail = |what: String| NodeError::Start(format!("{}: {what}", path.display()));
    match std::fs::read(&path) {
        Ok(bytes) => {
            let shards = decode(&bytes).map_err(fail)?;
            if requested != 0 && requested != shards {
                return Err(fail(format!(
                    "the directory was created with {shards} shards, not {requested}; \
                     the shard count cannot change"
                )));
            }
            Ok(shards)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let shards = if requested == 0 { default } else { requested };
            if !(1..=MAX_SHARDS).contains(&shards) {
                return Err(fail(format!("{shards} shards; 1 to {MAX_SHARDS} allowed")));
            }
            let temporary = dir.join(format!("{FILE}.tmp"));
            let write = || -> std::io::Result<()> {
                let mut file = std::fs::File::create(&temporary)?;
                file.write_all(&encode(shards as u32))?;
                file.sync_all()?;
                std::fs::rename(&temporary, &path)?;
                std::fs::File::open(dir)?.sync_all()
            };
            write().map_err(|e| fail(e.to_string()))?;
            Ok(shards)
        }
        Err(e) => Err(fail(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shard_count_is_recorded_once_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(open_or_create(dir.path(), 0, 3).unwrap(), 3);
        assert_eq!(open_or_create(dir.path(), 0, 8).unwrap(), 3);
        assert_eq!(open_or_create(dir.path(), 3, 8).unwrap(), 3);
        assert!(open_or_create(dir.path(), 4, 8).is_err());
        let mut bytes = std::fs::read(dir.path().join(FILE)).unwrap();
        assert_eq!(bytes.len(), 20);
        bytes[12] ^= 1;
        std::fs::write(dir.path().join(FILE), &bytes).unwrap();
        assert!(open_or_create(dir.path(), 0, 8).is_err());
    }
}
