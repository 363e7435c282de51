//! `DATA_DIR/node.meta`: the shard count and the cluster, fixed when the
//! directory is created (engine/FORMAT.md, "Node meta file"). Written to a
//! temporary file, synced, renamed, and the directory synced, so it is
//! either whole or absent; a CRC-32 covers every byte before it.
//!
//! Version 3 adds the cluster: its id, this member's id and every member.
//! Older directories are refused with an error that says why: version 1
//! revisions (`unix_millis << 16`) cannot be carried over, and version 2
//! directories gave every shard's one voter the Raft id 1, which is not
//! this member's id.

use std::io::Write;
use std::path::Path;

use crate::shard::cluster::{Cluster, Member};
use crate::shard::error::{NodeError, NodeResult};

const MAGIC: &[u8; 8] = b"KEELNODE";
const VERSION: u32 = 3;
/// The version before revisions below 2^53.
const VERSION_WIDE_REVISIONS: u32 = 1;
/// The version before clusters.
const VERSION_SINGLE_VOTER: u32 = 2;
const FILE: &str = "node.meta";
/// Shard counts above this are refused: shards share out the logical part
/// of a revision (`hlc.rs`).
pub(crate) const MAX_SHARDS: usize = crate::hlc::MAX_SHARDS;
/// Longest member name or peer address recorded.
pub(crate) const MAX_FIELD: usize = 255;
/// Most members a cluster may have.
pub(crate) const MAX_MEMBERS: usize = 64;

/// What the file records.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Recorded {
    shards: usize,
    cluster: Cluster,
}

fn encode(recorded: &Recorded) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(64);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend_from_slice(&(recorded.shards as u32).to_le_bytes());
    bytes.extend_from_slice(&recorded.cluster.id.to_le_bytes());
    bytes.extend_from_slice(&recorded.cluster.me.to_le_bytes());
    bytes.extend_from_slice(&(recorded.cluster.members.len() as u32).to_le_bytes());
    for member in &recorded.cluster.members {
        bytes.extend_from_slice(&member.id.to_le_bytes());
        for field in [&member.name, &member.peer_address] {
            bytes.push(field.len() as u8);
            bytes.extend_from_slice(field.as_bytes());
        }
    }
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

/// Reads the fields of a verified body in order.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("the file ends early".to_string());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes(bytes.try_into().map_err(|_| "short")?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let bytes = self.take(8)?;
        Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| "short")?))
    }

    fn text(&mut self) -> Result<String, String> {
        let len = self.take(1)?.first().copied().unwrap_or(0) as usize;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| "a name is not UTF-8".to_string())
    }
}

fn decode(bytes: &[u8]) -> Result<Recorded, String> {
    if bytes.len() < 20 {
        return Err(format!("{} bytes, expected at least 20", bytes.len()));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err("checksum mismatch".to_string());
    }
    let mut fields = Fields(body);
    if fields.take(8)? != MAGIC {
        return Err("not a keel node file".to_string());
    }
    match fields.u32()? {
        VERSION => {}
        VERSION_WIDE_REVISIONS => {
            return Err("the directory was written by a keel whose revisions were \
                 unix_millis << 16 (version 1); revisions are now below 2^53 and \
                 cannot be carried over: start from an empty data directory"
                .to_string())
        }
        VERSION_SINGLE_VOTER => {
            return Err("the directory was written by a keel without clusters \
                 (version 2), whose shards' one voter had Raft id 1 instead of the \
                 member's id: start from an empty data directory"
                .to_string())
        }
        other => return Err(format!("unknown version {other}")),
    }
    let shards = fields.u32()? as usize;
    if !(1..=MAX_SHARDS).contains(&shards) {
        return Err(format!("{shards} shards; 1 to {MAX_SHARDS} allowed"));
    }
    let id = fields.u64()?;
    let me = fields.u64()?;
    let count = fields.u32()? as usize;
    if !(1..=MAX_MEMBERS).contains(&count) {
        return Err(format!("{count} members; 1 to {MAX_MEMBERS} allowed"));
    }
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        members.push(Member {
            id: fields.u64()?,
            name: fields.text()?,
            peer_address: fields.text()?,
            learner: false,
        });
    }
    if !fields.0.is_empty() {
        return Err("bytes after the last member".to_string());
    }
    Ok(Recorded {
        shards,
        cluster: Cluster {
            id,
            me,
            members,
            removed: Vec::new(),
            revision: 0,
        },
    })
}

/// The shard count and the cluster `dir` was created for, if it was.
///
/// # Errors
/// A damaged file.
pub fn recorded_cluster(dir: &Path) -> NodeResult<Option<(usize, Cluster)>> {
    let path = dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => decode(&bytes)
            .map(|recorded| Some((recorded.shards, recorded.cluster)))
            .map_err(|e| NodeError::Start(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(NodeError::Start(format!("{}: {e}", path.display()))),
    }
}

/// Why `wanted` is not the cluster the directory was created for, if it
/// is not.
fn mismatch(recorded: &Cluster, wanted: &Cluster) -> Option<String> {
    let list = |c: &Cluster| {
        let mut members: Vec<String> = c
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_address))
            .collect();
        members.sort();
        members.join(",")
    };
    if recorded.members != wanted.members {
        return Some(format!(
            "the directory belongs to a cluster of {}, not {}; a member's data \
             directory cannot move to another cluster",
            list(recorded),
            list(wanted)
        ));
    }
    if recorded.me != wanted.me {
        let name = |c: &Cluster| c.member(c.me).map(|m| m.name.clone()).unwrap_or_default();
        return Some(format!(
            "the directory is member {:?}'s, not {:?}'s",
            name(recorded),
            name(wanted)
        ));
    }
    if recorded.id != wanted.id {
        return Some(format!(
            "the directory belongs to cluster {:x}, not {:x} (another \
             --initial-cluster-token)",
            recorded.id, wanted.id
        ));
    }
    None
}

/// The directory's shard count, once its cluster is checked: read back,
/// or recorded now as `requested` (0: `default`) with `cluster`.
///
/// # Errors
/// A damaged file, `requested` differing from what is recorded, or a
/// cluster that is not the one recorded.
pub(crate) fn open_or_create(
    dir: &Path,
    requested: usize,
    default: usize,
    cluster: &Cluster,
) -> NodeResult<usize> {
    let path = dir.join(FILE);
    let fail = |what: String| NodeError::Start(format!("{}: {what}", path.display()));
    match std::fs::read(&path) {
        Ok(bytes) => {
            let recorded = decode(&bytes).map_err(fail)?;
            if requested != 0 && requested != recorded.shards {
                return Err(fail(format!(
                    "the directory was created with {} shards, not {requested}; \
                     the shard count cannot change",
                    recorded.shards
                )));
            }
            if let Some(why) = mismatch(&recorded.cluster, cluster) {
                return Err(fail(why));
            }
            Ok(recorded.shards)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let shards = if requested == 0 { default } else { requested };
            if !(1..=MAX_SHARDS).contains(&shards) {
                return Err(fail(format!("{shards} shards; 1 to {MAX_SHARDS} allowed")));
            }
            if cluster.members.len() > MAX_MEMBERS {
                return Err(fail(format!("at most {MAX_MEMBERS} members")));
            }
            let long = cluster
                .members
                .iter()
                .flat_map(|m| [&m.name, &m.peer_address])
                .find(|field| field.len() > MAX_FIELD);
            if let Some(field) = long {
                return Err(fail(format!("{field:?} is longer than {MAX_FIELD} bytes")));
            }
            let recorded = Recorded {
                shards,
                cluster: cluster.clone(),
            };
            let temporary = dir.join(format!("{FILE}.tmp"));
            let write = || -> std::io::Result<()> {
                let mut file = std::fs::File::create(&temporary)?;
                file.write_all(&encode(&recorded))?;
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
        let one = Cluster::single("default");
        assert_eq!(open_or_create(dir.path(), 0, 3, &one).unwrap(), 3);
        assert_eq!(open_or_create(dir.path(), 0, 8, &one).unwrap(), 3);
        assert_eq!(open_or_create(dir.path(), 3, 8, &one).unwrap(), 3);
        assert!(open_or_create(dir.path(), 4, 8, &one).is_err());
        let mut bytes = std::fs::read(dir.path().join(FILE)).unwrap();
        bytes[12] ^= 1;
        std::fs::write(dir.path().join(FILE), &bytes).unwrap();
        let err = open_or_create(dir.path(), 0, 8, &one).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    #[test]
    fn a_directory_refuses_another_cluster_or_member() {
        let initial = Cluster::parse_initial("a=h:1,b=h:2,c=h:3").unwrap();
        let a = Cluster::bootstrap("a", &initial, "t").unwrap();
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(open_or_create(dir.path(), 2, 8, &a).unwrap(), 2);
        assert_eq!(open_or_create(dir.path(), 0, 8, &a).unwrap(), 2);
        let b = Cluster::bootstrap("b", &initial, "t").unwrap();
        let err = open_or_create(dir.path(), 0, 8, &b)
            .unwrap_err()
            .to_string();
        assert!(err.contains("member \"a\"'s, not \"b\"'s"), "{err}");
        let other_token = Cluster::bootstrap("a", &initial, "u").unwrap();
        let err = open_or_create(dir.path(), 0, 8, &other_token)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--initial-cluster-token"), "{err}");
        let two = Cluster::bootstrap("a", &initial[..2], "t").unwrap();
        let err = open_or_create(dir.path(), 0, 8, &two)
            .unwrap_err()
            .to_string();
        assert!(err.contains("a=h:1,b=h:2,c=h:3, not a=h:1,b=h:2"), "{err}");
        let err = open_or_create(dir.path(), 0, 8, &Cluster::single("a"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot move"), "{err}");
    }

    #[test]
    fn older_directories_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        for (version, says) in [(1u32, "unix_millis << 16"), (2, "without clusters")] {
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&version.to_le_bytes());
            bytes.extend_from_slice(&4u32.to_le_bytes());
            let crc = crc32fast::hash(&bytes);
            bytes.extend_from_slice(&crc.to_le_bytes());
            std::fs::write(dir.path().join(FILE), &bytes).unwrap();
            let err = open_or_create(dir.path(), 0, 8, &Cluster::single("default"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{err}");
        }
    }
}
