//! Arbitrary bytes as a B+-tree file, with checksums re-sealed so that the
//! bytes reach the structural checks: opening, auditing, and walking every
//! tree both ways must return values or errors, never panic or hang.
#![no_main]

use keel_engine::btree::fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("keel-fuzz-btree-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("kv.db");
    let mut file = data.to_vec();
    fuzzing::reseal(&mut file);
    if std::fs::write(&path, &file).is_ok() {
        fuzzing::open_and_walk(&path);
    }
});
