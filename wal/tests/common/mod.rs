//! Helpers shared by the log's integration tests.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::future::Future;

use keel_wal::Wal;

/// Runs `body` on a fresh glommio executor thread with 1 MiB of I/O memory.
pub fn run_local<T, F, G>(body: G) -> T
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(body)
        .expect("spawn executor")
        .join()
        .expect("executor thread")
}

/// What a log holds, as seen through its public API.
#[derive(Clone, PartialEq, Eq)]
pub struct LogView {
    pub entries: Vec<(u64, u8, Vec<u8>)>,
    pub next_index: u64,
    pub state: Option<Vec<u8>>,
}

/// Payloads shown as length and checksum, so failures stay readable.
impl std::fmt::Debug for LogView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries: Vec<String> = self
            .entries
            .iter()
            .map(|(i, k, p)| format!("{i}:k{k}:{}B:{:08x}", p.len(), crc32fast::hash(p)))
            .collect();
        let state = self
            .state
            .as_ref()
            .map(|s| format!("{}B:{:08x}", s.len(), crc32fast::hash(s)));
        write!(
            f,
            "LogView {{ next: {}, state: {state:?}, entries: {entries:?} }}",
            self.next_index
        )
    }
}

impl LogView {
    pub fn empty() -> LogView {
        LogView {
            entries: Vec::new(),
            next_index: 1,
            state: None,
        }
    }

    /// Reads everything the log holds.
    pub async fn observe(wal: &Wal) -> LogView {
        let (first, last) = (wal.first_index(), wal.last_index());
        let entries = wal
            .read(first..last + 1)
            .await
            .expect("read whole log")
            .into_iter()
            .map(|e| (e.index, e.kind, e.payload))
            .collect();
        LogView {
            entries,
            next_index: last + 1,
            state: wal.state(),
        }
    }
}

/// Deterministic payload bytes for an entry.
pub fn payload_for(index: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (index.wrapping_mul(131) as usize + i * 7) as u8)
        .collect()
}
