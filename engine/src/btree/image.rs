//! One commit of a B+-tree file, read as the bytes of a file that holds
//! that commit alone: a follower's snapshot (`shard/snapshot.rs`), sent
//! straight from the live file, with no copy written.
//!
//! The image is pages `[0, total_pages)` of the commit: page `slot` is the
//! commit's meta slot, the other slot page is zeros, and every other page
//! is read from the file as it is now. Opening the image finds the same
//! catalog, trees, free list and commit list as a crash would leave the
//! original at that commit.
//!
//! Invariant the caller keeps: a read snapshot of the commit stays open
//! while the image is read. Its pin is what keeps every page the commit
//! can reach, its free-list pages and its commit-list pages from being
//! reused (`free_space.rs`): they are the pages that matter, and they do
//! not change under the reader. Pages free at the commit may change
//! between two reads or be cut off the file's end; they are free in the
//! image too, so what they hold does not matter, and past the file's end
//! they read as zeros.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::btree::meta::Meta;
use crate::btree::page::{FIRST_DATA_PAGE, PAGE_SIZE};

/// The bytes of one commit as a file of its own (see the module). It does
/// not hold the commit's pin: whoever reads it keeps the [`ReadTxn`] it
/// came from open meanwhile, or reads whatever reused pages hold.
///
/// [`ReadTxn`]: crate::btree::ReadTxn
#[derive(Debug)]
pub struct CommitImage {
    source: File,
    meta_page: Vec<u8>,
    meta_slot: u64,
    len: u64,
}

const META_BYTES: u64 = FIRST_DATA_PAGE * PAGE_SIZE as u64;

impl CommitImage {
    pub(crate) fn new(source: File, meta: &Meta) -> CommitImage {
        CommitImage {
            source,
            meta_page: meta.encode(),
            meta_slot: meta.slot(),
            len: meta.total_pages.saturating_mul(PAGE_SIZE as u64),
        }
    }

    /// The image's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the image is empty (never: it holds its meta slots).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Another handle on the same image, for another thread.
    ///
    /// # Errors
    /// The file handle could not be copied.
    pub fn try_clone(&self) -> io::Result<CommitImage> {
        Ok(CommitImage {
            source: self.source.try_clone()?,
            meta_page: self.meta_page.clone(),
            meta_slot: self.meta_slot,
            len: self.len,
        })
    }

    /// Fills `buf` with the image's bytes from `offset`.
    ///
    /// # Errors
    /// A range past the image's end, or the read's I/O error.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.saturating_add(buf.len() as u64);
        if end > self.len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bytes up to {end} of a commit image of {}", self.len),
            ));
        }
        let mut filled = 0usize;
        while let Some(rest) = buf.get_mut(filled..).filter(|rest| !rest.is_empty()) {
            let at = offset + filled as u64;
            if at < META_BYTES {
                let page = at / PAGE_SIZE as u64;
                let within = (at % PAGE_SIZE as u64) as usize;
                let n = rest.len().min(PAGE_SIZE - within);
                let target = rest.get_mut(..n).unwrap_or_default();
                match self.meta_page.get(within..within + n) {
                    Some(meta) if page == self.meta_slot => target.copy_from_slice(meta),
                    _ => target.fill(0),
                }
                filled += n;
                continue;
            }
            match self.source.read_at(rest, at) {
                Ok(0) => {
                    // Past the file's end: pages free at the commit, given
                    // back since.
                    rest.fill(0);
                    filled = buf.len();
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes the whole image to a new file at `to` (replacing one there)
    /// and syncs it.
    ///
    /// # Errors
    /// The I/O error (a partial file may be left).
    pub fn write_to(&self, to: &Path) -> io::Result<()> {
        let _ = std::fs::remove_file(to);
        let file = File::create_new(to)?;
        let mut chunk = vec![0u8; 1 << 20];
        let mut offset = 0;
        while offset < self.len {
            let n = usize::try_from(self.len - offset).map_or(chunk.len(), |l| l.min(chunk.len()));
            let part = chunk.get_mut(..n).unwrap_or_default();
            self.read_at(part, offset)?;
            file.write_all_at(part, offset)?;
            offset += n as u64;
        }
        file.sync_all()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use std::ops::Bound;

    use crate::btree::{CommitSync, Database, Options, WriteTxn};

    fn rows(db: &Database) -> Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        let read = db.begin_read().unwrap();
        let mut all = Vec::new();
        for name in read.tree_names().unwrap() {
            let tree = read.view(&name).unwrap();
            for row in tree.range(Bound::Unbounded, Bound::Unbounded).unwrap() {
                let (key, value) = row.unwrap();
                all.push((name.clone(), key.to_vec(), value.to_vec()));
            }
        }
        all
    }

    fn fill(db: &Database, round: u32, applied: u64, commit: impl Fn(WriteTxn)) {
        let mut write = db.begin_write().unwrap();
        for i in 0..300u32 {
            let key = format!("key-{:05}", (i * 7 + round * 13) % 600);
            // Some values long enough for overflow pages, all changing.
            let value = vec![round as u8; if i % 10 == 0 { 9000 } else { 40 }];
            write
                .tree(b"rows")
                .unwrap()
                .insert(key.as_bytes(), &value)
                .unwrap();
            if i % 3 == 0 {
                write
                    .tree(b"other")
                    .unwrap()
                    .insert(key.as_bytes(), b"x")
                    .unwrap();
            }
        }
        write.set_applied_index(applied);
        commit(write);
    }

    /// The image of a commit, read in pieces while later commits (synced,
    /// unsynced, one-sync) rewrite and free pages around it, opens as a
    /// file holding exactly that commit; the page audit accounts for
    /// every page, and the file takes writes like any other.
    #[test]
    fn an_image_holds_the_commit_it_was_taken_of_and_nothing_after() {
        for sync in [CommitSync::TwoSyncs, CommitSync::OneSync] {
            let dir = tempfile::tempdir().unwrap();
            let options = Options {
                commit_sync: sync,
                ..Options::default()
            };
            let db = Database::open(dir.path().join("kv.db"), options.clone()).unwrap();
            for round in 0..4 {
                fill(&db, round, u64::from(round) + 1, |w| w.commit().unwrap());
            }
            // The pinned commit is an unsynced one.
            fill(&db, 4, 5, |w| w.commit_unsynced().unwrap());
            let expected = rows(&db);
            let read = db.begin_read().unwrap();
            let image = read.image().unwrap();
            // Read in odd-sized pieces (across the meta pages' end), with
            // commits between them that reuse and free pages.
            let mut bytes = vec![0u8; image.len() as usize];
            let mut round = 5;
            for (i, piece) in bytes.chunks_mut(5000).enumerate() {
                image.read_at(piece, i as u64 * 5000).unwrap();
                if i % 20 == 0 {
                    fill(&db, round, u64::from(round) + 1, |w| w.commit().unwrap());
                    round += 1;
                }
            }
            drop(read);
            let to = dir.path().join("image.db");
            std::fs::write(&to, &bytes).unwrap();
            let copy = Database::open(&to, options).unwrap();
            assert_eq!(copy.applied_index(), 5);
            assert_eq!(rows(&copy), expected);
            copy.audit().unwrap();
            fill(&copy, 20, 6, |w| w.commit().unwrap());
            copy.audit().unwrap();
        }
    }

    #[test]
    fn reading_past_the_image_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path().join("kv.db"), Options::default()).unwrap();
        fill(&db, 0, 1, |w| w.commit().unwrap());
        let read = db.begin_read().unwrap();
        let image = read.image().unwrap();
        let mut one = [0u8; 1];
        image.read_at(&mut one, image.len() - 1).unwrap();
        assert!(image.read_at(&mut one, image.len()).is_err());
    }
}
