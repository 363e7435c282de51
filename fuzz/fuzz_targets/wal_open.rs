//! Arbitrary bytes as the last segment of a write-ahead log: opening and
//! reading must return entries or errors, never panic or hang.
#![no_main]

use keel_wal::{Wal, WalConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("keel-fuzz-wal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    let mut segment = data.to_vec();
    segment.resize(16 * 4096, 0);
    if std::fs::write(dir.join("0000000000000001-0000000000000001.wal"), &segment).is_err() {
        return;
    }
    let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            if let Ok(wal) = Wal::open(&dir, WalConfig { segment_size: 16 * 4096 }).await {
                let (first, last) = (wal.first_index(), wal.last_index());
                let _ = wal.read(first..last.saturating_add(1)).await;
                let _ = wal.close().await;
            }
        });
    if let Ok(handle) = handle {
        let _ = handle.join();
    }
});
