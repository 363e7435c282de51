//! The Raft log as raft-rs sees it: an in-memory copy of the WAL's tail
//! (the entries not yet applied), the terms of every entry the WAL still
//! holds, and the bytes of Raft entries and Raft state inside WAL records
//! (engine/FORMAT.md, "Raft log").
//!
//! raft-rs reads its log synchronously; the WAL reads through io_uring.
//! Entries below the in-memory tail (applied, kept in the WAL as a
//! catch-up tail for followers) are read back asynchronously: `entries`
//! answers `LogTemporarilyUnavailable` and queues a [`Fetch`]; the replica
//! reads the WAL, hands the entries back ([`LogStore::fetched`]) and tells
//! raft-rs (`on_entries_fetched`), which asks again and gets them.
//!
//! Invariants: every entry here is in the WAL, or queued to it ahead of any
//! acknowledgement that depends on it; `terms` covers `floor.0..=last`;
//! the in-memory tail is `tail_start..=last`, and every entry below it is
//! applied; entries at or below `floor.0` are gone.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};

use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

/// WAL record type byte of a Raft entry (format version 1).
pub(crate) const RAFT_ENTRY_KIND: u8 = 1;
/// Bytes a WAL payload adds to a Raft entry's data (term, type, context
/// length; keel proposes no context).
pub const ENTRY_OVERHEAD: usize = 8 + 1 + 4;
/// Version byte of the state blob: 2 adds the last snapshot installed.
const STATE_VERSION: u8 = 2;
/// The state blob before snapshots.
const STATE_VERSION_NO_SNAPSHOT: u8 = 1;
/// Reads of the WAL queued at once for followers: one per peer and shard
/// is all raft-rs asks for; more would be a bug, and are refused.
const MAX_FETCHES: usize = 64;

/// A WAL record or state blob that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad Raft record in the WAL: {0}")]
pub struct RecordError(pub String);

/// Entries raft-rs asked for that only the WAL holds.
#[derive(Debug)]
pub struct Fetch {
    /// The first index wanted.
    pub low: u64,
    /// One past the last index wanted.
    pub high: u64,
    /// Bytes wanted at most (at least one entry is returned).
    pub max_size: u64,
    /// What raft-rs is told once they are here.
    pub context: GetEntriesContext,
}

/// The term of every entry from a first index on, as runs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct TermRuns {
    /// `(first index, term)`, indexes increasing.
    runs: Vec<(u64, u64)>,
}

impl TermRuns {
    fn term(&self, index: u64) -> Option<u64> {
        let at = self.runs.partition_point(|(first, _)| *first <= index);
        at.checked_sub(1)
            .and_then(|i| self.runs.get(i))
            .map(|(_, term)| *term)
    }

    /// Records `term` for `index`, forgetting every index above it.
    fn set(&mut self, index: u64, term: u64) {
        let keep = self.runs.partition_point(|(first, _)| *first <= index);
        self.runs.truncate(keep);
        if self.runs.last().map(|(_, t)| *t) != Some(term) {
            self.runs.push((index, term));
        }
    }

    /// Forgets indexes below `index` (its own term stays).
    fn forget_below(&mut self, index: u64) {
        let Some(term) = self.term(index) else {
            return;
        };
        let from = self.runs.partition_point(|(first, _)| *first <= index);
        self.runs.drain(..from);
        self.runs.insert(0, (index, term));
    }
}

/// The log raft-rs reads.
#[derive(Debug, Default)]
pub struct LogStore {
    hard_state: HardState,
    conf_state: ConfState,
    /// The last index whose entry is gone (from memory and the WAL); its
    /// term is still known.
    floor: u64,
    terms: TermRuns,
    /// The in-memory tail, from `tail_start`.
    tail_start: u64,
    entries: VecDeque<Entry>,
    /// WAL reads raft-rs is waiting for.
    fetches: RefCell<Vec<Fetch>>,
    /// WAL reads done, by first index, until raft-rs asks again.
    fetched: RefCell<HashMap<u64, Vec<Entry>>>,
    /// The last snapshot installed here: `(index, term)`, `(0, 0)` for none.
    /// Saved in the state blob, because the WAL is empty right after one.
    installed: (u64, u64),
    /// The highest index raft-rs asked a snapshot for and did not get.
    wanted: std::cell::Cell<Option<u64>>,
    /// The snapshot this replica made for followers, once made.
    made: Option<Snapshot>,
}

impl LogStore {
    /// A log whose entries after `floor = (index, term)` are `older` (in
    /// the WAL only: their index and term) and then `entries` (kept in
    /// memory), all consecutive.
    ///
    /// # Errors
    /// When the indexes are not consecutive.
    pub fn new(
        hard_state: HardState,
        conf_state: ConfState,
        floor: (u64, u64),
        older: &[(u64, u64)],
        entries: Vec<Entry>,
    ) -> Result<LogStore, RecordError> {
        let mut terms = TermRuns::default();
        terms.set(floor.0, floor.1);
        let all = older
            .iter()
            .copied()
            .chain(entries.iter().map(|e| (e.index, e.term)));
        for (next, (index, term)) in (floor.0 + 1..).zip(all) {
            if index != next {
                return Err(RecordError(format!(
                    "entry {index} follows entry {}",
                    next - 1
                )));
            }
            terms.set(index, term);
        }
        Ok(LogStore {
            hard_state,
            conf_state,
            floor: floor.0,
            terms,
            tail_start: floor.0 + older.len() as u64 + 1,
            entries: entries.into(),
            fetches: RefCell::default(),
            fetched: RefCell::default(),
            installed: (0, 0),
            wanted: std::cell::Cell::new(None),
            made: None,
        })
    }

    /// The persisted hard state.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// The membership.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// The configuration after a change applied (or a snapshot installed).
    pub fn set_conf_state(&mut self, conf_state: ConfState) {
        self.conf_state = conf_state;
    }

    /// Replaces the hard state.
    pub fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    /// Records a commit index learned after persisting.
    pub fn set_commit(&mut self, commit: u64) {
        self.hard_state.commit = commit;
    }

    fn last(&self) -> u64 {
        self.tail_start + self.entries.len() as u64 - 1
    }

    /// Appends `entries`, first dropping any kept entry at or above the
    /// first one's index (a conflict the leader resolved).
    ///
    /// # Errors
    /// When `entries` would leave a gap or rewrite applied entries.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), RecordError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index < self.tail_start || first.index > self.last() + 1 {
            return Err(RecordError(format!(
                "append at {} to a log holding {}..={} (applied below {})",
                first.index,
                self.floor + 1,
                self.last(),
                self.tail_start
            )));
        }
        self.entries
            .truncate((first.index - self.tail_start) as usize);
        for entry in entries {
            self.terms.set(entry.index, entry.term);
        }
        self.entries.extend(entries.iter().cloned());
        Ok(())
    }

    /// Drops entries at or below `index` from memory: they are applied,
    /// and the WAL keeps them while followers may need them.
    pub fn compact_to(&mut self, index: u64) {
        if index < self.tail_start || index > self.last() {
            return;
        }
        let drop = (index + 1 - self.tail_start) as usize;
        self.entries.drain(..drop);
        self.tail_start = index + 1;
    }

    /// The WAL no longer holds entries below `first`: they are gone for
    /// good (a follower that needs them needs a snapshot).
    pub fn forget_below(&mut self, first: u64) {
        // The entry before the first one kept stays as the floor: its term
        // is what the next append to a follower checks.
        let floor = first.saturating_sub(1).min(self.tail_start - 1);
        if floor <= self.floor {
            return;
        }
        self.terms.forget_below(floor);
        self.floor = floor;
        self.fetched.borrow_mut().retain(|low, _| *low > floor);
    }

    /// Takes the WAL reads raft-rs is waiting for.
    pub fn take_fetches(&self) -> Vec<Fetch> {
        std::mem::take(&mut *self.fetches.borrow_mut())
    }

    /// Hands over entries read from the WAL for a fetch from `low`.
    pub fn fetched(&self, low: u64, entries: Vec<Entry>) {
        let mut fetched = self.fetched.borrow_mut();
        // One raft-rs did not ask for again (the follower moved on) is
        // dropped with the rest once there are too many.
        if fetched.len() >= MAX_FETCHES {
            fetched.clear();
        }
        fetched.insert(low, entries);
    }

    /// How many entries are kept in memory.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is kept in memory.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The first index kept in memory.
    pub fn tail_start(&self) -> u64 {
        self.tail_start
    }

    /// Records the last snapshot installed (read back from the state blob).
    pub fn set_installed(&mut self, installed: (u64, u64)) {
        self.installed = installed;
    }

    /// The state blob to save: hard state, membership, last snapshot.
    pub fn state_blob(&self) -> Vec<u8> {
        encode_state(&self.hard_state, &self.conf_state, self.installed)
    }

    /// The index raft-rs wants a snapshot at (or above), once: the replica
    /// makes one and hands it over with [`LogStore::set_made`].
    pub fn take_wanted(&self) -> Option<u64> {
        self.wanted.take()
    }

    /// A snapshot made for followers; raft-rs gets it when it asks again.
    pub fn set_made(&mut self, snapshot: Snapshot) {
        self.made = Some(snapshot);
    }

    /// The snapshot made for followers is gone (its pin released); raft-rs
    /// asking again gets a new one.
    pub fn forget_made(&mut self) {
        self.made = None;
    }

    /// The log after installing a snapshot that ends at `(index, term)`:
    /// every entry at or below it is gone, and so is every entry above it
    /// (the leader sends those after the snapshot).
    pub fn apply_snapshot(&mut self, index: u64, term: u64) {
        self.floor = index;
        self.terms = TermRuns::default();
        self.terms.set(index, term);
        self.tail_start = index + 1;
        self.entries.clear();
        self.fetched.borrow_mut().clear();
        self.fetches.borrow_mut().clear();
        self.hard_state.commit = self.hard_state.commit.max(index);
        self.installed = (index, term);
    }
}

impl raft::Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into();
        if low <= self.floor {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if low < self.tail_start {
            if let Some(mut found) = self.fetched.borrow_mut().remove(&low) {
                found.retain(|e| e.index < high);
                raft::util::limit_size(&mut found, max_size);
                return Ok(found);
            }
            // Only a send to a follower reads below the tail; it can wait.
            let mut fetches = self.fetches.borrow_mut();
            if !context.can_async() {
                return Err(raft::Error::Store(StorageError::Compacted));
            }
            // raft-rs asks again at each of the follower's answers
            // (heartbeats too) until the read is done: one read will do.
            // Each ask read anew made a follower's catch-up read the same
            // megabyte dozens of times per loop round, while the shard
            // waited for every read. (Another follower asking from the
            // same index is served at its next answer.)
            if fetches.iter().any(|queued| queued.low == low) {
                return Err(raft::Error::Store(StorageError::LogTemporarilyUnavailable));
            }
            if fetches.len() >= MAX_FETCHES {
                // Not queued: raft-rs asks again at the follower's next
                // answer. (Answered as compacted, this made raft-rs send a
                // snapshot the WAL did not need, one of the tree before it
                // was ever synced: index 0, which raft-rs dies on.)
                return Err(raft::Error::Store(StorageError::LogTemporarilyUnavailable));
            }
            fetches.push(Fetch {
                low,
                high: high.min(self.tail_start),
                max_size: max_size.unwrap_or(u64::MAX),
                context,
            });
            return Err(raft::Error::Store(StorageError::LogTemporarilyUnavailable));
        }
        let from = (low - self.tail_start) as usize;
        let to = (high - self.tail_start) as usize;
        let mut out: Vec<Entry> = self.entries.range(from..to).cloned().collect();
        raft::util::limit_size(&mut out, max_size);
        Ok(out)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        if index < self.floor {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if index > self.last() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        self.terms
            .term(index)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.floor + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        // A follower fell past the WAL's catch-up tail. The replica makes a
        // snapshot after this Ready (its tree pinned at one commit); until
        // then raft-rs is told to ask again later.
        // One made before will do if it is recent enough for the follower,
        // and the log still goes on from it.
        // A member whose configuration it does not name (one added after
        // it was made) refuses it.
        if let Some(made) = self.made.as_ref() {
            let index = made.get_metadata().index;
            let conf = made.get_metadata().get_conf_state();
            let names_it = conf
                .voters
                .iter()
                .chain(&conf.learners)
                .chain(&conf.voters_outgoing)
                .any(|id| *id == to);
            // raft-rs dies on a snapshot at 0 (of a tree never synced).
            if index > 0 && index >= request_index && index >= self.floor && names_it {
                return Ok(made.clone());
            }
        }
        let wanted = self
            .wanted
            .get()
            .map_or(request_index, |w| w.max(request_index));
        self.wanted.set(Some(wanted));
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable,
        ))
    }
}

/// The WAL payload of a Raft entry (its index is the WAL record's).
pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(13 + entry.context.len() + entry.data.len());
    out.extend_from_slice(&entry.term.to_le_bytes());
    out.push(match entry.entry_type {
        EntryType::EntryNormal => 0,
        EntryType::EntryConfChange => 1,
        EntryType::EntryConfChangeV2 => 2,
    });
    out.extend_from_slice(&(entry.context.len() as u32).to_le_bytes());
    out.extend_from_slice(&entry.context);
    out.extend_from_slice(&entry.data);
    out
}

/// Reads what [`encode_entry`] wrote, for the entry at `index`.
///
/// # Errors
/// [`RecordError`] for a short payload or an unknown entry type.
pub fn decode_entry(index: u64, payload: &[u8]) -> Result<Entry, RecordError> {
    let bad = || RecordError(format!("entry {index}: payload of {} bytes", payload.len()));
    let (term, rest) = split_u64(payload).ok_or_else(bad)?;
    let (&kind, rest) = rest.split_first().ok_or_else(bad)?;
    let entry_type = match kind {
        0 => EntryType::EntryNormal,
        1 => EntryType::EntryConfChange,
        2 => EntryType::EntryConfChangeV2,
        other => return Err(RecordError(format!("entry {index}: type {other}"))),
    };
    let (len, rest) = split_u32(rest).ok_or_else(bad)?;
    if rest.len() < len as usize {
        return Err(bad());
    }
    let (context, data) = rest.split_at(len as usize);
    Ok(Entry {
        index,
        term,
        entry_type,
        context: context.to_vec().into(),
        data: data.to_vec().into(),
        ..Entry::default()
    })
}

/// The WAL state blob: the hard state, the membership, and the last
/// snapshot installed `(index, term)`.
pub fn encode_state(
    hard_state: &HardState,
    conf_state: &ConfState,
    installed: (u64, u64),
) -> Vec<u8> {
    let mut out = vec![STATE_VERSION];
    for v in [hard_state.term, hard_state.vote, hard_state.commit] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for ids in [
        &conf_state.voters,
        &conf_state.learners,
        &conf_state.voters_outgoing,
        &conf_state.learners_next,
    ] {
        out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
        for id in ids {
            out.extend_from_slice(&id.to_le_bytes());
        }
    }
    out.push(u8::from(conf_state.auto_leave));
    out.extend_from_slice(&installed.0.to_le_bytes());
    out.extend_from_slice(&installed.1.to_le_bytes());
    out
}

/// What the state blob holds.
pub type SavedState = (HardState, ConfState, (u64, u64));

/// Reads what [`encode_state`] wrote (or its version 1, without a
/// snapshot).
///
/// # Errors
/// [`RecordError`] for a short or unknown blob.
pub fn decode_state(blob: &[u8]) -> Result<SavedState, RecordError> {
    let bad = |what: &str| RecordError(format!("state blob of {} bytes: {what}", blob.len()));
    let (&version, mut rest) = blob.split_first().ok_or_else(|| bad("empty"))?;
    if version != STATE_VERSION && version != STATE_VERSION_NO_SNAPSHOT {
        return Err(bad("unknown version"));
    }
    let mut numbers = [0u64; 3];
    for n in &mut numbers {
        let (v, tail) = split_u64(rest).ok_or_else(|| bad("short"))?;
        *n = v;
        rest = tail;
    }
    let [term, vote, commit] = numbers;
    let hard_state = HardState {
        term,
        vote,
        commit,
        ..HardState::default()
    };
    let mut lists: [Vec<u64>; 4] = Default::default();
    for list in &mut lists {
        let (count, tail) = split_u32(rest).ok_or_else(|| bad("short"))?;
        rest = tail;
        if (count as usize).saturating_mul(8) > rest.len() {
            return Err(bad("list longer than the blob"));
        }
        for _ in 0..count {
            let (id, tail) = split_u64(rest).ok_or_else(|| bad("short"))?;
            list.push(id);
            rest = tail;
        }
    }
    let [voters, learners, voters_outgoing, learners_next] = lists;
    let (&flag, rest) = rest.split_first().ok_or_else(|| bad("short"))?;
    let auto_leave = flag != 0;
    let installed = match (version, rest) {
        (STATE_VERSION_NO_SNAPSHOT, []) => (0, 0),
        (STATE_VERSION, rest) => {
            let (index, rest) = split_u64(rest).ok_or_else(|| bad("short"))?;
            let (term, rest) = split_u64(rest).ok_or_else(|| bad("short"))?;
            if !rest.is_empty() {
                return Err(bad("bad tail"));
            }
            (index, term)
        }
        _ => return Err(bad("bad tail")),
    };
    let conf_state = ConfState {
        voters,
        learners,
        voters_outgoing,
        learners_next,
        auto_leave,
        ..ConfState::default()
    };
    Ok((hard_state, conf_state, installed))
}

fn split_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<8>()?;
    Some((u64::from_le_bytes(*head), rest))
}

fn split_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<4>()?;
    Some((u32::from_le_bytes(*head), rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            data: data.to_vec().into(),
            ..Entry::default()
        }
    }

    #[test]
    fn entries_and_state_round_trip() {
        let mut e = entry(9, 4, b"data");
        e.context = b"ctx".to_vec().into();
        e.entry_type = EntryType::EntryConfChange;
        assert_eq!(decode_entry(9, &encode_entry(&e)), Ok(e.clone()));
        for len in 0..13 {
            assert!(decode_entry(9, &encode_entry(&e)[..len]).is_err());
        }
        let hs = HardState {
            term: 3,
            vote: 1,
            commit: 77,
            ..HardState::default()
        };
        let cs = ConfState {
            voters: vec![1, 2, 3],
            learners: vec![4],
            ..ConfState::default()
        };
        let blob = encode_state(&hs, &cs, (40, 3));
        assert_eq!(decode_state(&blob), Ok((hs.clone(), cs.clone(), (40, 3))));
        // Version 1, before snapshots, still reads.
        let mut old = blob[..blob.len() - 16].to_vec();
        old[0] = STATE_VERSION_NO_SNAPSHOT;
        assert_eq!(decode_state(&old), Ok((hs, cs, (0, 0))));
        for len in 0..blob.len() {
            assert!(decode_state(&blob[..len]).is_err());
        }
    }

    #[test]
    fn the_log_appends_truncates_and_compacts_like_raft_expects() {
        let mut log = LogStore::new(
            HardState::default(),
            ConfState::default(),
            (5, 2),
            &[],
            vec![entry(6, 2, b"a"), entry(7, 2, b"b")],
        )
        .unwrap();
        assert_eq!(
            (log.first_index().unwrap(), log.last_index().unwrap()),
            (6, 7)
        );
        assert_eq!(log.term(5).unwrap(), 2);
        assert!(log.term(4).is_err());
        assert!(log.term(8).is_err());
        // A conflicting append replaces the tail.
        log.append(&[entry(7, 3, b"c"), entry(8, 3, b"d")]).unwrap();
        let got = log
            .entries(6, 9, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(
            got.iter().map(|e| e.term).collect::<Vec<_>>(),
            vec![2, 3, 3]
        );
        assert!(log.append(&[entry(10, 3, b"gap")]).is_err());
        assert!(log.append(&[entry(5, 3, b"old")]).is_err());
        log.compact_to(7);
        // Applied entries leave memory, not the log: their terms stay, and
        // reading them is a fetch from the WAL.
        assert_eq!(log.first_index().unwrap(), 6);
        assert_eq!((log.term(6).unwrap(), log.term(7).unwrap()), (2, 3));
        assert!(log.append(&[entry(7, 4, b"applied")]).is_err());
        assert!(log
            .entries(7, 9, None, GetEntriesContext::empty(false))
            .is_err());
        assert_eq!(log.len(), 1);
        log.forget_below(8);
        assert_eq!(log.first_index().unwrap(), 8);
        assert_eq!(log.term(7).unwrap(), 3);
        assert!(log.term(6).is_err());
    }

    #[test]
    fn entries_below_the_tail_are_fetched_from_the_wal_and_handed_back() {
        let log = LogStore::new(
            HardState::default(),
            ConfState::default(),
            (1, 1),
            &[(2, 1), (3, 2)],
            vec![entry(4, 2, b"d")],
        )
        .unwrap();
        assert_eq!(log.tail_start(), 4);
        assert_eq!(log.term(3).unwrap(), 2);
        let asked = log.entries(2, 5, Some(100), GetEntriesContext::empty(true));
        assert_eq!(
            asked,
            Err(raft::Error::Store(StorageError::LogTemporarilyUnavailable))
        );
        let fetches = log.take_fetches();
        assert_eq!(fetches.len(), 1);
        assert_eq!((fetches[0].low, fetches[0].high), (2, 4));
        assert!(log.take_fetches().is_empty());
        log.fetched(2, vec![entry(2, 1, b"b"), entry(3, 2, b"c")]);
        let got = log
            .entries(2, 5, Some(100), GetEntriesContext::empty(true))
            .unwrap();
        assert_eq!(got.iter().map(|e| e.index).collect::<Vec<_>>(), vec![2, 3]);
        // Asked again before it was read (raft-rs asks at every answer of
        // the follower, heartbeats too): one read, not one per ask.
        for _ in 0..10 {
            let _ = log.entries(3, 5, Some(100), GetEntriesContext::empty(true));
        }
        assert_eq!(log.take_fetches().len(), 1);
        // A full queue: nothing queued, and no claim that they are gone
        // (that would make raft-rs send a snapshot).
        let terms: Vec<(u64, u64)> = (2..200).map(|i| (i, 1)).collect();
        let long = LogStore::new(
            HardState::default(),
            ConfState::default(),
            (1, 1),
            &terms,
            vec![entry(200, 1, b"t")],
        )
        .unwrap();
        for low in 2..2 + MAX_FETCHES as u64 {
            let _ = long.entries(low, 200, Some(100), GetEntriesContext::empty(true));
        }
        assert_eq!(long.fetches.borrow().len(), MAX_FETCHES);
        assert_eq!(
            long.entries(150, 200, Some(100), GetEntriesContext::empty(true)),
            Err(raft::Error::Store(StorageError::LogTemporarilyUnavailable))
        );
        assert_eq!(long.fetches.borrow().len(), MAX_FETCHES);
        // A snapshot of a tree never synced (at 0) is never handed out:
        // raft-rs dies on it.
        let mut fresh = LogStore::new(
            HardState::default(),
            ConfState::default(),
            (0, 0),
            &[],
            Vec::new(),
        )
        .unwrap();
        fresh.set_made(Snapshot::default());
        assert_eq!(
            fresh.snapshot(0, 2),
            Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable
            ))
        );
        // A caller that cannot wait is told the entries are gone.
        assert_eq!(
            log.entries(2, 5, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        );
        assert!(LogStore::new(
            HardState::default(),
            ConfState::default(),
            (1, 1),
            &[(3, 1)],
            Vec::new()
        )
        .is_err());
    }

    #[test]
    fn a_snapshot_is_handed_only_to_a_member_its_configuration_names() {
        let mut log = LogStore::new(
            HardState::default(),
            ConfState::default(),
            (0, 0),
            &[],
            Vec::new(),
        )
        .unwrap();
        let mut made = Snapshot::default();
        made.mut_metadata().index = 5;
        made.mut_metadata().term = 1;
        made.mut_metadata().set_conf_state(ConfState {
            voters: vec![1, 2],
            learners: vec![3],
            ..ConfState::default()
        });
        log.set_made(made);
        for named in [2, 3] {
            assert_eq!(log.snapshot(0, named).unwrap().get_metadata().index, 5);
        }
        // Member 4 was added after it was made: it would refuse it, so
        // another is wanted.
        assert_eq!(
            log.snapshot(0, 4),
            Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable
            ))
        );
        assert_eq!(log.take_wanted(), Some(0));
    }
}
