//! Records accepted by `append` and waiting for the next write.
//!
//! Payloads are copied into one contiguous buffer so that a burst of small
//! appends costs no allocation per record; the flusher swaps the whole queue
//! out and hands the emptied buffers back for reuse.

use crate::format::RecordKind;

#[derive(Debug, Clone, Copy)]
struct QueuedRecord {
    kind: RecordKind,
    index: u64,
    start: usize,
    len: usize,
}

/// One queued record, borrowed from the queue.
pub(crate) struct QueuedRef<'a> {
    pub(crate) kind: RecordKind,
    pub(crate) index: u64,
    pub(crate) payload: &'a [u8],
}

/// An ordered batch of records.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    records: Vec<QueuedRecord>,
    bytes: Vec<u8>,
}

impl Queue {
    pub(crate) fn push(&mut self, kind: RecordKind, index: u64, payload: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(payload);
        self.records.push(QueuedRecord {
            kind,
            index,
            start,
            len: payload.len(),
        });
    }

    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.records.clear();
        self.bytes.clear();
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = QueuedRef<'_>> {
        self.records.iter().map(|r| QueuedRef {
            kind: r.kind,
            index: r.index,
            payload: self.bytes.get(r.start..r.start + r.len).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_payloads() {
        let mut q = Queue::default();
        q.push(RecordKind::Entry(1), 1, b"ab");
        q.push(RecordKind::State, 1, b"");
        q.push(RecordKind::Entry(2), 2, b"cde");
        let got: Vec<_> = q
            .iter()
            .map(|r| (r.kind, r.index, r.payload.to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![
                (RecordKind::Entry(1), 1, b"ab".to_vec()),
                (RecordKind::State, 1, vec![]),
                (RecordKind::Entry(2), 2, b"cde".to_vec()),
            ]
        );
        q.clear();
        assert!(q.is_empty());
    }
}
