//! The Raft log as raft-rs sees it: an in-memory copy of the WAL's tail
//! (raft-rs reads its log synchronously; the WAL reads through io_uring),
//! and the bytes of Raft entries and Raft state inside WAL records
//! (engine/FORMAT.md, "Raft log").
//!
//! Invariant: every entry here is in the WAL, or queued to it ahead of any
//! acknowledgement that depends on it; entries at or below `compacted` are
//! applied, and may be gone from both.

use std::collections::VecDeque;

use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

/// WAL record type byte of a Raft entry (format version 1).
pub(crate) const RAFT_ENTRY_KIND: u8 = 1;
/// Bytes a WAL payload adds to a Raft entry's data (term, type, context
/// length; keel proposes no context).
pub const ENTRY_OVERHEAD: usize = 8 + 1 + 4;
/// Version byte of the state blob.
const STATE_VERSION: u8 = 1;

/// A WAL record or state blob that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad Raft record in the WAL: {0}")]
pub struct RecordError(pub String);

/// The log raft-rs reads.
#[derive(Debug, Default)]
pub struct LogStore {
    hard_state: HardState,
    conf_state: ConfState,
    /// The index below the first entry kept, and its term.
    compacted: (u64, u64),
    entries: VecDeque<Entry>,
}

impl LogStore {
    /// A log holding `entries` (consecutive) after `compacted = (index, term)`.
    pub fn new(
        hard_state: HardState,
        conf_state: ConfState,
        compacted: (u64, u64),
        entries: Vec<Entry>,
    ) -> LogStore {
        LogStore {
            hard_state,
            conf_state,
            compacted,
            entries: entries.into(),
        }
    }

    /// The persisted hard state.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// The membership.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
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
        self.compacted.0 + self.entries.len() as u64
    }

    /// Appends `entries`, first dropping any kept entry at or above the
    /// first one's index (a conflict the leader resolved).
    ///
    /// # Errors
    /// When `entries` would leave a gap or rewrite compacted entries.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), RecordError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index <= self.compacted.0 || first.index > self.last() + 1 {
            return Err(RecordError(format!(
                "append at {} to a log holding {}..={}",
                first.index,
                self.compacted.0 + 1,
                self.last()
            )));
        }
        self.entries
            .truncate((first.index - self.compacted.0 - 1) as usize);
        self.entries.extend(entries.iter().cloned());
        Ok(())
    }

    /// Forgets entries at or below `index` (applied, and durable in the
    /// state machine or no longer needed by any peer).
    pub fn compact_to(&mut self, index: u64) {
        if index <= self.compacted.0 || index > self.last() {
            return;
        }
        let drop = (index - self.compacted.0) as usize;
        let term = self
            .entries
            .get(drop - 1)
            .map_or(self.compacted.1, |e| e.term);
        self.entries.drain(..drop);
        self.compacted = (index, term);
    }

    /// How many entries are kept in memory.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is kept in memory.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.compacted.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let from = (low - self.compacted.0 - 1) as usize;
        let to = (high - self.compacted.0 - 1) as usize;
        let mut out: Vec<Entry> = self.entries.range(from..to).cloned().collect();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        if index == self.compacted.0 {
            return Ok(self.compacted.1);
        }
        if index < self.compacted.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.entries
            .get((index - self.compacted.0 - 1) as usize)
            .map(|e| e.term)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.compacted.0 + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // A single-voter group never sends one. Streaming the tree file to
        // a follower comes with multi-node clusters.
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

/// The WAL state blob: the hard state and the membership.
pub fn encode_state(hard_state: &HardState, conf_state: &ConfState) -> Vec<u8> {
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
    out
}

/// Reads what [`encode_state`] wrote.
///
/// # Errors
/// [`RecordError`] for a short or unknown blob.
pub fn decode_state(blob: &[u8]) -> Result<(HardState, ConfState), RecordError> {
    let bad = |what: &str| RecordError(format!("state blob of {} bytes: {what}", blob.len()));
    let (&version, mut rest) = blob.split_first().ok_or_else(|| bad("empty"))?;
    if version != STATE_VERSION {
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
    let auto_leave = match rest {
        [flag] => *flag != 0,
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
    Ok((hard_state, conf_state))
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
        let blob = encode_state(&hs, &cs);
        assert_eq!(decode_state(&blob), Ok((hs, cs)));
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
            vec![entry(6, 2, b"a"), entry(7, 2, b"b")],
        );
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
        assert_eq!(log.first_index().unwrap(), 8);
        assert_eq!(log.term(7).unwrap(), 3);
        assert!(log
            .entries(7, 9, None, GetEntriesContext::empty(false))
            .is_err());
        assert_eq!(log.len(), 1);
    }
}
