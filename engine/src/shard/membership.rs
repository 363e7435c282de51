//! The member list as this node follows it (docs/membership.md): shared by
//! its cores, kept in `DATA_DIR/members` between runs, and changed only
//! through shard 0, whose applied list every member adopts.
//!
//! Invariants:
//! - The list a node holds was applied by its replica of shard 0 (or is
//!   the one the cluster was created with): every list it holds is one the
//!   cluster agreed on, and later lists replace earlier ones.
//! - A change is made from one list and taken only if that list is still
//!   the current one (`Entry::Members`'s base), so concurrent changes
//!   never both apply.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::mvcc::{MemberList, MemberRecord, MembersChange};
use crate::shard::cluster::{Cluster, Member};
use crate::shard::node_meta::{MAX_FIELD, MAX_MEMBERS};

const FILE: &str = "members";
const MAGIC: &[u8; 8] = b"KEELMEMB";
const VERSION: u32 = 1;

/// The cluster as this node knows it now, shared by its cores: read often
/// (every peer frame's sender is checked against it), changed rarely.
#[derive(Clone)]
pub struct ClusterView {
    current: Arc<ArcSwap<Cluster>>,
    dir: Arc<PathBuf>,
    /// Each local shard's Raft configuration (voters, learners, outgoing
    /// voters), by shard, and the union of their ids: a member removed from
    /// the list is still heard while a shard here has it, since the
    /// shard's removal of it needs its votes (a joint configuration).
    configured: Arc<std::sync::Mutex<std::collections::HashMap<usize, Vec<u64>>>>,
    configured_ids: Arc<ArcSwap<Vec<u64>>>,
    /// Bumped whenever `configured_ids` changes.
    configured_version: Arc<std::sync::atomic::AtomicU64>,
    /// The list held was not saved (its save failed).
    unsaved: Arc<std::sync::atomic::AtomicBool>,
    /// The auth record, also followed from shard 0.
    auth: crate::shard::auth_view::AuthView,
}

impl std::fmt::Debug for ClusterView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ClusterView").field(&self.load()).finish()
    }
}

impl ClusterView {
    /// The view of a node whose data directory is `dir`, starting from
    /// `cluster` (what the directory's `members` file says, or the list the
    /// cluster was created with).
    pub(crate) fn new(cluster: Cluster, dir: &Path) -> ClusterView {
        ClusterView {
            current: Arc::new(ArcSwap::from_pointee(cluster)),
            dir: Arc::new(dir.to_path_buf()),
            configured: Arc::default(),
            configured_ids: Arc::default(),
            configured_version: Arc::default(),
            unsaved: Arc::default(),
            auth: Default::default(),
        }
    }

    /// The auth record the node follows.
    pub(crate) fn auth(&self) -> &crate::shard::auth_view::AuthView {
        &self.auth
    }

    /// Records local `shard`'s configuration (at start, and after every
    /// change it applies or snapshot it installs).
    pub(crate) fn set_configured(&self, shard: usize, ids: Vec<u64>) {
        let mut configured = self
            .configured
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        configured.insert(shard, ids);
        let mut union: Vec<u64> = configured.values().flatten().copied().collect();
        union.sort_unstable();
        union.dedup();
        if **self.configured_ids.load() != union {
            self.configured_ids.store(Arc::new(union));
            self.configured_version
                .fetch_add(1, std::sync::atomic::Ordering::Release);
        }
    }

    /// Whether some local shard's configuration has member `id`.
    pub fn is_configured(&self, id: u64) -> bool {
        self.configured_ids.load().binary_search(&id).is_ok()
    }

    /// The list's revision and how often the local configurations'
    /// members changed: a transport keeps its links for both, and looks
    /// again when either moves.
    pub fn versions(&self) -> (u64, u64) {
        (
            self.revision(),
            self.configured_version
                .load(std::sync::atomic::Ordering::Acquire),
        )
    }

    /// The cluster as this node knows it now.
    pub fn load(&self) -> Arc<Cluster> {
        self.current.load_full()
    }

    /// Whether this node is a learner in the list it follows (it serves
    /// status, the list and serializable reads only).
    pub fn me_is_learner(&self) -> bool {
        self.current.load().me_is_learner()
    }

    /// The revision of the list held, without taking a reference to it.
    pub fn revision(&self) -> u64 {
        self.current.load().revision
    }

    /// Adopts `list`, applied by shard 0, if it is newer than the one held,
    /// and saves it in the `members` file for the next start. The list is
    /// the cluster's (committed) whether or not the file could be written:
    /// the node follows it at once, and a failed save is tried again
    /// (`save_again`); a start before that replays shard 0 up to it.
    ///
    /// # Errors
    /// The file could not be written (the view changed nonetheless).
    pub(crate) fn adopt(&self, list: &MemberList) -> Result<bool, String> {
        let current = self.load();
        if list.revision <= current.revision {
            return Ok(false);
        }
        let next = Arc::new(with_list(&current, list));
        self.current.store(next.clone());
        self.unsaved
            .store(true, std::sync::atomic::Ordering::Release);
        write_file(&self.dir, &next)?;
        self.unsaved
            .store(false, std::sync::atomic::Ordering::Release);
        Ok(true)
    }

    /// Saves the list again if its last save failed.
    ///
    /// # Errors
    /// The file could not be written.
    pub(crate) fn save_again(&self) -> Result<(), String> {
        if !self.unsaved.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        write_file(&self.dir, &self.load())?;
        self.unsaved
            .store(false, std::sync::atomic::Ordering::Release);
        Ok(())
    }
}

/// `cluster` with `list`'s members (its id and `me` kept).
pub(crate) fn with_list(cluster: &Cluster, list: &MemberList) -> Cluster {
    Cluster {
        id: cluster.id,
        me: cluster.me,
        members: list
            .members
            .iter()
            .map(|m| Member {
                id: m.id,
                name: m.name.clone(),
                peer_address: m.peer_address.clone(),
                learner: m.learner,
            })
            .collect(),
        removed: list.removed.clone(),
        revision: list.revision,
    }
}

/// The list `cluster` holds, as shard 0 records it.
pub(crate) fn list_of(cluster: &Cluster) -> MemberList {
    MemberList {
        revision: cluster.revision,
        members: cluster
            .members
            .iter()
            .map(|m| MemberRecord {
                id: m.id,
                name: m.name.clone(),
                peer_address: m.peer_address.clone(),
                learner: m.learner,
            })
            .collect(),
        removed: cluster.removed.clone(),
    }
}

/// The cluster `dir`'s `members` file holds, as member `me` of cluster
/// `id`; `None` when there is no file (the list never changed).
///
/// # Errors
/// A damaged file.
pub(crate) fn read_file(dir: &Path, id: u64, me: u64) -> Result<Option<Cluster>, String> {
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    decode(&bytes)
        .map(|list| {
            Some(with_list(
                &Cluster {
                    id,
                    me,
                    members: Vec::new(),
                    removed: Vec::new(),
                    revision: 0,
                },
                &list,
            ))
        })
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes `cluster`'s list to `dir`'s `members` file: a temporary file,
/// synced, renamed over it, the directory synced.
pub(crate) fn write_file(dir: &Path, cluster: &Cluster) -> Result<(), String> {
    let path = dir.join(FILE);
    let temporary = dir.join(format!("{FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&encode(&list_of(cluster)))?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| format!("{}: {e}", path.display()))
}

/// The file's bytes (engine/FORMAT.md, "Members file").
fn encode(list: &MemberList) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&list.revision.to_le_bytes());
    out.extend_from_slice(&(list.members.len() as u32).to_le_bytes());
    for member in &list.members {
        out.extend_from_slice(&member.id.to_le_bytes());
        out.push(u8::from(member.learner));
        for field in [&member.name, &member.peer_address] {
            let bytes = field
                .as_bytes()
                .get(..MAX_FIELD)
                .unwrap_or(field.as_bytes());
            out.push(bytes.len() as u8);
            out.extend_from_slice(bytes);
        }
    }
    out.extend_from_slice(&(list.removed.len() as u32).to_le_bytes());
    for id in &list.removed {
        out.extend_from_slice(&id.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> Result<MemberList, String> {
    let Some((body, crc)) = bytes.split_last_chunk::<4>() else {
        return Err("the file ends early".to_string());
    };
    if crc32fast::hash(body).to_le_bytes() != *crc {
        return Err("checksum mismatch".to_string());
    }
    let mut input = body;
    let mut take = |n: usize| -> Result<&[u8], String> {
        if input.len() < n {
            return Err("the file ends early".to_string());
        }
        let (head, rest) = input.split_at(n);
        input = rest;
        Ok(head)
    };
    if take(8)? != MAGIC {
        return Err("not a keel members file".to_string());
    }
    let u32_of = |b: &[u8]| b.try_into().map(u32::from_le_bytes).map_err(|_| "short");
    let u64_of = |b: &[u8]| b.try_into().map(u64::from_le_bytes).map_err(|_| "short");
    let version = u32_of(take(4)?)?;
    if version != VERSION {
        return Err(format!("unknown version {version}"));
    }
    let revision = u64_of(take(8)?)?;
    let count = u32_of(take(4)?)? as usize;
    if count > MAX_MEMBERS {
        return Err(format!("{count} members; at most {MAX_MEMBERS}"));
    }
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        let id = u64_of(take(8)?)?;
        let learner = match take(1)? {
            [0] => false,
            [1] => true,
            _ => return Err("a bad learner flag".to_string()),
        };
        let mut text = || -> Result<String, String> {
            let len = usize::from(take(1)?.first().copied().unwrap_or(0));
            String::from_utf8(take(len)?.to_vec()).map_err(|_| "a name is not UTF-8".to_string())
        };
        let name = text()?;
        let peer_address = text()?;
        members.push(MemberRecord {
            id,
            name,
            peer_address,
            learner,
        });
    }
    let count = u32_of(take(4)?)? as usize;
    let mut removed = Vec::with_capacity(count.min(bytes.len() / 8));
    for _ in 0..count {
        removed.push(u64_of(take(8)?)?);
    }
    if !input.is_empty() {
        return Err("bytes after the removed ids".to_string());
    }
    Ok(MemberList {
        revision,
        members,
        removed,
    })
}

/// A change an operator asks for (etcd's Cluster API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    /// A new member, a learner unless `learner` is false.
    Add {
        /// Its name (`--name` when it starts).
        name: String,
        /// Its peer address.
        peer_address: String,
        /// Added as a learner (etcd's `--learner`).
        learner: bool,
    },
    /// A learner made a voter.
    Promote(u64),
    /// A member gone for good: its id is never given again.
    Remove(u64),
    /// A member's new peer address.
    Update {
        /// The member.
        id: u64,
        /// Its new peer address.
        peer_address: String,
    },
}

/// The quorum of a group of `voters` voters.
fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

/// The entry that makes `change` to `cluster`'s list, a new member taking
/// id `new_id`; `started(id)` says whether a member is up (heard from
/// lately). Refused, with the reason, when the change names what is not
/// there, would reuse a name, an address or a removed id, or would leave
/// fewer started voters than the new quorum (etcd's
/// `--strict-reconfig-check`).
///
/// # Errors
/// Why the change is refused.
pub(crate) fn make_change(
    cluster: &Cluster,
    change: &MemberChange,
    new_id: u64,
    started: impl Fn(u64) -> bool,
) -> Result<MembersChange, String> {
    let mut list = list_of(cluster);
    let voters = cluster.voters();
    let started_voters = |except: u64| {
        voters
            .iter()
            .filter(|id| **id != except && started(**id))
            .count()
    };
    let address_taken = |address: &str, by_other_than: u64| {
        list.members
            .iter()
            .any(|m| m.peer_address == address && m.id != by_other_than)
    };
    let check_field = |what: &str, field: &str| {
        if field.is_empty() {
            return Err(format!("the {what} is empty"));
        }
        if field.len() > MAX_FIELD {
            return Err(format!("the {what} is longer than {MAX_FIELD} bytes"));
        }
        Ok(())
    };
    let find = |id: u64| {
        if cluster.was_removed(id) {
            return Err(format!("member {id:x} was removed"));
        }
        cluster
            .member(id)
            .cloned()
            .ok_or_else(|| format!("member {id:x} not found"))
    };
    match change {
        MemberChange::Add {
            name,
            peer_address,
            learner,
        } => {
            check_field("name", name)?;
            check_field("peer address", peer_address)?;
            if list.members.len() >= MAX_MEMBERS {
                return Err(format!(
                    "the cluster has {MAX_MEMBERS} members, the most it may have"
                ));
            }
            if list.members.iter().any(|m| m.name == *name) {
                return Err(format!("a member named {name:?} exists"));
            }
            if address_taken(peer_address, 0) {
                return Err(format!("peer address {peer_address} is a member's"));
            }
            if new_id == 0 || cluster.member(new_id).is_some() || cluster.was_removed(new_id) {
                return Err(format!("id {new_id:x} is taken; try again"));
            }
            // A second voter for a lone one is let through, as etcd does
            // (the way to restore a cluster from one member).
            let up = started_voters(0);
            let lone = up == 1 && voters.len() == 1;
            if !(*learner || lone) && up < quorum(voters.len() + 1) {
                return Err(unhealthy("adding a voter", cluster, &started));
            }
            list.members.push(MemberRecord {
                id: new_id,
                name: name.clone(),
                peer_address: peer_address.clone(),
                learner: *learner,
            });
        }
        MemberChange::Promote(id) => {
            let member = find(*id)?;
            if !member.learner {
                return Err(format!(
                    "member {id:x} is not a learner; only a learner can be promoted"
                ));
            }
            // The learner counts as started (etcd's rule).
            if started_voters(0) + 1 < quorum(voters.len() + 1) {
                return Err(unhealthy("promoting a learner", cluster, &started));
            }
            for m in list.members.iter_mut().filter(|m| m.id == *id) {
                m.learner = false;
            }
        }
        MemberChange::Remove(id) => {
            let member = find(*id)?;
            if !member.learner {
                if voters.len() == 1 {
                    return Err("the last voter cannot be removed".to_string());
                }
                if started_voters(*id) < quorum(voters.len() - 1) {
                    return Err(unhealthy("removing a voter", cluster, &started));
                }
            }
            list.members.retain(|m| m.id != *id);
            list.removed.push(*id);
        }
        MemberChange::Update { id, peer_address } => {
            find(*id)?;
            check_field("peer address", peer_address)?;
            if address_taken(peer_address, *id) {
                return Err(format!("peer address {peer_address} is another member's"));
            }
            for m in list.members.iter_mut().filter(|m| m.id == *id) {
                m.peer_address = peer_address.clone();
            }
        }
    }
    list.members.sort_by_key(|m| m.id);
    Ok(MembersChange {
        base: cluster.revision,
        members: list.members,
        removed: list.removed,
    })
}

fn unhealthy(what: &str, cluster: &Cluster, started: &dyn Fn(u64) -> bool) -> String {
    let up: Vec<String> = cluster
        .voters()
        .into_iter()
        .filter(|id| started(*id))
        .map(|id| format!("{id:x}"))
        .collect();
    format!(
        "{what} would leave fewer started voters than the new quorum: the cluster would stop \
         (etcd's strict reconfiguration check; voters started: {}); start the members that \
         are down first",
        up.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Cluster {
        let initial = Cluster::parse_initial("a=h:1,b=h:2,c=h:3").unwrap();
        Cluster::bootstrap("a", &initial, "t").unwrap()
    }

    fn applied(cluster: &Cluster, change: &MembersChange, revision: u64) -> Cluster {
        with_list(
            cluster,
            &MemberList {
                revision,
                members: change.members.clone(),
                removed: change.removed.clone(),
            },
        )
    }

    #[test]
    fn the_members_file_round_trips_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = three();
        assert_eq!(read_file(dir.path(), cluster.id, cluster.me).unwrap(), None);
        let change = make_change(
            &cluster,
            &MemberChange::Add {
                name: "d".into(),
                peer_address: "h:4".into(),
                learner: true,
            },
            77,
            |_| true,
        )
        .unwrap();
        let grown = applied(&cluster, &change, 5);
        write_file(dir.path(), &grown).unwrap();
        let read = read_file(dir.path(), cluster.id, cluster.me)
            .unwrap()
            .unwrap();
        assert_eq!(read, grown);
        assert!(read.member(77).unwrap().learner);
        let path = dir.path().join(FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[14] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(read_file(dir.path(), cluster.id, cluster.me).is_err());
    }

    #[test]
    fn a_view_adopts_only_newer_lists() {
        let dir = tempfile::tempdir().unwrap();
        let view = ClusterView::new(three(), dir.path());
        let change = make_change(
            &view.load(),
            &MemberChange::Remove(member_of(&view, "c")),
            0,
            |_| true,
        )
        .unwrap();
        let list = MemberList {
            revision: 9,
            members: change.members,
            removed: change.removed,
        };
        assert!(view.adopt(&list).unwrap());
        assert_eq!(view.load().members.len(), 2);
        assert!(
            !view.adopt(&list).unwrap(),
            "the same list again changes nothing"
        );
        let old = MemberList {
            revision: 4,
            ..list_of(&three())
        };
        assert!(!view.adopt(&old).unwrap());
        assert_eq!(view.load().revision, 9);
        let read = read_file(dir.path(), view.load().id, view.load().me).unwrap();
        assert_eq!(read.as_ref(), Some(&*view.load()));
    }

    fn member_of(view: &ClusterView, name: &str) -> u64 {
        view.load()
            .members
            .iter()
            .find(|m| m.name == name)
            .unwrap()
            .id
    }

    #[test]
    fn changes_that_would_break_the_cluster_are_refused() {
        let cluster = three();
        let ids = cluster.voters();
        let add = |learner| MemberChange::Add {
            name: "d".into(),
            peer_address: "h:4".into(),
            learner,
        };
        // Two of three up: a fourth voter needs three started.
        let two_up = |id: u64| id != ids[2];
        assert!(make_change(&cluster, &add(false), 9, two_up)
            .unwrap_err()
            .contains("strict"));
        // A learner changes no quorum.
        let change = make_change(&cluster, &add(true), 9, two_up).unwrap();
        let four = applied(&cluster, &change, 3);
        // Removing a voter that is up, with another down, leaves one of two.
        let err = make_change(&cluster, &MemberChange::Remove(ids[0]), 0, two_up).unwrap_err();
        assert!(err.contains("strict"), "{err}");
        // Removing the one that is down leaves two of two.
        let change = make_change(&four, &MemberChange::Remove(ids[2]), 0, two_up).unwrap();
        let shrunk = applied(&four, &change, 4);
        assert!(shrunk.was_removed(ids[2]));
        // A removed id never comes back; a name, an address are not reused.
        let other = MemberChange::Add {
            name: "e".into(),
            peer_address: "h:5".into(),
            learner: true,
        };
        let err = make_change(&shrunk, &other, ids[2], |_| true).unwrap_err();
        assert!(err.contains("taken"), "{err}");
        let err = make_change(&shrunk, &add(true), 10, |_| true).unwrap_err();
        assert!(err.contains("exists"), "{err}");
        let err = make_change(&shrunk, &MemberChange::Remove(ids[2]), 0, |_| true).unwrap_err();
        assert!(err.contains("removed"), "{err}");
        let err = make_change(
            &shrunk,
            &MemberChange::Update {
                id: ids[0],
                peer_address: "h:4".into(),
            },
            0,
            |_| true,
        )
        .unwrap_err();
        assert!(err.contains("another member"), "{err}");
        // Only a learner is promoted.
        let err = make_change(&shrunk, &MemberChange::Promote(ids[0]), 0, |_| true).unwrap_err();
        assert!(err.contains("not a learner"), "{err}");
        let change = make_change(&shrunk, &MemberChange::Promote(9), 0, |_| true).unwrap();
        assert!(change.members.iter().all(|m| !m.learner));
        assert_eq!(change.base, 4);
    }

    #[test]
    fn etcds_exceptions_to_the_strict_check_hold() {
        // A lone voter may get a second one (restoring a cluster).
        let one = Cluster::bootstrap("a", &[("a".into(), "h:1".into())], "t").unwrap();
        let add = MemberChange::Add {
            name: "b".into(),
            peer_address: "h:2".into(),
            learner: false,
        };
        make_change(&one, &add, 9, |_| true).unwrap();
        // A learner being promoted counts as started: two voters of three
        // up and the learner make three of four.
        let cluster = three();
        let ids = cluster.voters();
        let learner = MemberChange::Add {
            name: "d".into(),
            peer_address: "h:4".into(),
            learner: true,
        };
        let change = make_change(&cluster, &learner, 9, |_| true).unwrap();
        let four = applied(&cluster, &change, 2);
        make_change(&four, &MemberChange::Promote(9), 0, |id| id != ids[2]).unwrap();
        let err = make_change(&four, &MemberChange::Promote(9), 0, |id| id == ids[0]).unwrap_err();
        assert!(err.contains("strict"), "{err}");
    }
}
