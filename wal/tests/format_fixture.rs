//! Format version 1, pinned by files checked in under `tests/fixtures/v1/`.
//!
//! The fixture was written by a fixed sequence of calls (`write_workload`).
//! The test writes the same sequence again and requires byte-identical files,
//! so any change to the on-disk bytes fails here first: bump the version in
//! FORMAT.md, keep the old fixture, and add a new one. It also opens a copy of
//! the checked-in fixture and checks what it holds, so logs written by older
//! builds stay readable.
//!
//! Regenerate (only together with a version bump):
//! `KEEL_REGENERATE_WAL_FIXTURE=1 cargo test -p keel-wal --test format_fixture`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{payload_for, run_local, LogView};
use keel_wal::{Wal, WalConfig};

fn config() -> WalConfig {
    WalConfig {
        segment_size: 4 * 4096,
    }
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

/// Rolls twice, truncates, saves state, resets and appends again; each call
/// awaited alone so the bytes do not depend on timing.
async fn write_workload(dir: &Path) -> LogView {
    let wal = Wal::open(dir, config()).await.expect("open");
    wal.save_state(b"term=1 vote=0").await.expect("state");
    for index in 1..=20u64 {
        wal.append(
            index,
            (index % 3 + 1) as u8,
            &payload_for(index, 180 * index as usize),
        )
        .await
        .expect("append");
    }
    wal.truncate_after(17).await.expect("truncate");
    wal.append(18, 9, b"rewritten eighteen")
        .await
        .expect("append");
    wal.save_state(b"term=2 vote=1").await.expect("state");
    wal.reset(40).await.expect("reset");
    wal.append(41, 1, b"after reset").await.expect("append");
    let view = LogView::observe(&wal).await;
    wal.close().await.expect("close");
    view
}

fn segment_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry"))
        .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().to_string(),
                std::fs::read(e.path()).expect("read"),
            )
        })
        .collect()
}

#[test]
fn format_v1_fixture_is_reproduced_byte_for_byte_and_still_opens() {
    let fresh = tempfile::tempdir().expect("dir");
    let path = fresh.path().to_path_buf();
    let expected = run_local(move || async move { write_workload(&path).await });
    assert_eq!(expected.next_index, 42);
    assert_eq!(expected.entries.len(), 1);
    assert_eq!(expected.state.as_deref(), Some(&b"term=2 vote=1"[..]));

    let written = segment_files(fresh.path());
    assert!(written.len() >= 3, "the workload must roll segments");
    if std::env::var_os("KEEL_REGENERATE_WAL_FIXTURE").is_some() {
        std::fs::create_dir_all(fixture_dir()).expect("fixture dir");
        for (name, bytes) in &written {
            std::fs::write(fixture_dir().join(name), bytes).expect("write fixture");
        }
    }
    let fixture = segment_files(&fixture_dir());
    assert_eq!(
        fixture.keys().collect::<Vec<_>>(),
        written.keys().collect::<Vec<_>>(),
        "segment names differ from format v1"
    );
    for (name, bytes) in &written {
        assert!(
            fixture[name] == *bytes,
            "{name} differs from format v1: bump the version (FORMAT.md)"
        );
    }

    let copy = tempfile::tempdir().expect("dir");
    for name in fixture.keys() {
        std::fs::copy(fixture_dir().join(name), copy.path().join(name)).expect("copy fixture");
    }
    let path = copy.path().to_path_buf();
    let reopened = run_local(move || async move {
        let wal = Wal::open(&path, config()).await.expect("open v1 fixture");
        LogView::observe(&wal).await
    });
    assert_eq!(reopened, expected);
}
