//! An in-memory target for the workloads' own tests: point reads, writes
//! and ranges over a map, and a stall that holds every request arriving
//! in a window until the window ends, as a server pausing would.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

/// The fake system.
#[derive(Debug, Default)]
pub struct FakeTarget {
    data: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// Requests arriving in `[from, until)` are answered at `until`.
    stall: Mutex<Option<(Instant, Instant)>>,
}

impl FakeTarget {
    /// Holds every request that arrives in `[from, until)` until `until`.
    pub fn stall(&self, from: Instant, until: Instant) {
        if let Ok(mut stall) = self.stall.lock() {
            *stall = Some((from, until));
        }
    }

    async fn arrive(&self) {
        let now = Instant::now();
        let until = self
            .stall
            .lock()
            .ok()
            .and_then(|s| *s)
            .filter(|(from, until)| *from <= now && now < *until)
            .map(|(_, until)| until);
        if let Some(until) = until {
            tokio::time::sleep_until(until.into()).await;
        }
    }

    /// Whether `key` exists.
    pub async fn get(&self, key: &[u8]) -> bool {
        self.arrive().await;
        self.data.lock().is_ok_and(|d| d.contains_key(key))
    }

    /// Stores `value` under `key`.
    pub async fn put(&self, key: &[u8], value: &[u8]) {
        self.arrive().await;
        if let Ok(mut data) = self.data.lock() {
            data.insert(key.to_vec(), value.to_vec());
        }
    }

    /// How many keys of `[start, end)` a range limited to `limit` reads.
    pub async fn range(&self, start: &[u8], end: &[u8], limit: u64) -> usize {
        self.arrive().await;
        self.data.lock().map_or(0, |d| {
            d.range(start.to_vec()..end.to_vec())
                .take(usize::try_from(limit).unwrap_or(usize::MAX))
                .count()
        })
    }
}
