//! Arbitrary bytes as the last segment of a write-ahead log: opening and
//! reading must return entries or errors, never panic or hang. The first
//! input byte chooses whether checksums are re-sealed first (so mutations
//! reach the structural checks) or left as they are.
#![no_main]

use keel_wal::{fuzzing, Wal, WalConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, bytes)) = data.split_first() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("keel-fuzz-wal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    let mut segment = bytes.to_vec();
    segment.resize(16 * 4096, 0);
    if control & 1 == 1 {
        fuzzing::reseal(&mut segment);
    }
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
