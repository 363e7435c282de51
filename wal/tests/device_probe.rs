//! Opening a log checks the device with a non-empty file (`probe_device`):
//! a log with a segment opens that one, so it reopens on a disk with no
//! block free (`tests/tests/node_nospace.rs` starts a node on one); a
//! probe file left behind by a failed probe is removed with the other
//! `.tmp` files.

mod common;

use common::run_local;
use keel_wal::{Wal, WalConfig};

#[test]
fn a_reopen_leaves_no_probe_file_and_reads_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let probe = dir.path().join("device-probe.tmp");
    run_local(move || async move {
        let config = WalConfig {
            segment_size: 16 * 4096,
        };
        let wal = Wal::open(&path, config.clone()).await.unwrap();
        for index in 1..=20 {
            wal.append(index, 1, &[7u8; 1000]).await.unwrap();
        }
        wal.close().await.unwrap();
        // What a probe whose write failed on a full disk leaves.
        std::fs::write(path.join("device-probe.tmp"), b"").unwrap();
        let wal = Wal::open(&path, config).await.unwrap();
        assert_eq!(wal.read(1..21).await.unwrap().len(), 20);
        wal.close().await.unwrap();
    });
    assert!(!probe.exists(), "the probe file was left behind");
}
