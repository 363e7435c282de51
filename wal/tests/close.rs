//! Closing a log closes every file it opened, before its executor ends.
//!
//! Regression: segment files were dropped, not closed; glommio closes a
//! dropped file on a later I/O cycle, which an executor that ends right
//! after never runs, so the descriptors stayed open (a node restarted in
//! one process leaked them, and a file system it used could not be
//! unmounted).

mod common;

use std::path::Path;

use common::run_local;
use keel_wal::{Wal, WalConfig};

/// Descriptors of this process open on files under `dir`.
fn open_under(dir: &Path) -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter(|target| target.starts_with(dir))
        .map(|target| target.display().to_string())
        .collect()
}

#[test]
fn a_closed_log_leaves_no_file_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run_local(move || async move {
        let config = WalConfig {
            segment_size: 16 * 4096,
        };
        let wal = Wal::open(&path, config.clone()).await.unwrap();
        // Enough to roll over several segments.
        for index in 1..=200 {
            wal.append(index, 1, &[7u8; 1000]).await.unwrap();
        }
        wal.close().await.unwrap();
        // Reopened and read: the segments it reads are closed too.
        let wal = Wal::open(&path, config).await.unwrap();
        assert_eq!(wal.read(150..200).await.unwrap().len(), 50);
        wal.close().await.unwrap();
    });
    let open = open_under(dir.path());
    assert!(open.is_empty(), "still open: {open:?}");
}
