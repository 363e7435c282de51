//! Where the B+-tree's bytes live: a narrow trait so that tests can record
//! every write and sync, and the file implementation (pwrite + mmap).
//!
//! Reads return slices of one shared mapping; writes go through `pwrite`
//! into the same page cache, so a read sees every completed write. The
//! engine only writes pages no reader can reach (copy-on-write, and freed
//! pages are reused only once no snapshot can see them), so a slice handed
//! out is never changed while it is alive.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The byte store under one B+-tree file.
#[allow(clippy::len_without_is_empty)] // a file's length, not a collection's
pub trait Storage {
    /// The file's current length in bytes.
    fn len(&self) -> u64;
    /// The most bytes the file may grow to.
    fn capacity(&self) -> u64;
    /// Grows or shrinks the file, never past [`Storage::capacity`]. Growth
    /// allocates the new bytes on the medium, so that a full disk shows
    /// here, as an error before anything is written, and not in a later
    /// write or sync.
    fn set_len(&self, len: u64) -> Result<()>;
    /// Writes `data` at `offset` (not yet durable).
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<()>;
    /// Makes every completed write durable.
    fn sync_data(&self) -> Result<()>;
    /// Bytes `[offset, offset + len)`, which must lie within the file.
    fn read(&self, offset: u64, len: usize) -> Result<&[u8]>;
    /// The file's path, for error messages.
    fn path(&self) -> &Path;
}

/// A file read through a memory map and written with `pwrite`.
pub struct FileStorage {
    file: std::fs::File,
    path: PathBuf,
    map: crate::btree::mapping::Mapping,
    len: std::cell::Cell<u64>,
}

impl FileStorage {
    /// Opens (creating if needed) `path`. The file may grow to `max_len`
    /// bytes: that much address space is reserved up front so the mapping
    /// never moves under a reader.
    pub fn open(path: impl AsRef<Path>, max_len: u64) -> Result<FileStorage> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat", &path, e))?
            .len();
        // A longer file would be read past the mapping's end.
        if len > max_len {
            return Err(Error::FileTooLarge {
                file: path,
                len,
                limit: max_len,
            });
        }
        let map = crate::btree::mapping::Mapping::new(&file, max_len)
            .map_err(|e| Error::io("mmap", &path, e))?;
        Ok(FileStorage {
            file,
            path,
            map,
            len: std::cell::Cell::new(len),
        })
    }

    /// Another handle on the file, for syncs and a meta write run on
    /// another thread (see `DeferredDurability`).
    pub(crate) fn clone_file(&self) -> Result<std::fs::File> {
        self.file
            .try_clone()
            .map_err(|e| Error::io("dup", &self.path, e))
    }
}

impl Storage for FileStorage {
    fn len(&self) -> u64 {
        self.len.get()
    }

    fn capacity(&self) -> u64 {
        self.map.len() as u64
    }

    fn set_len(&self, len: u64) -> Result<()> {
        if len > self.map.len() as u64 {
            return Err(Error::InvalidArgument(format!(
                "file would grow to {len} bytes, beyond the {} reserved",
                self.map.len()
            )));
        }
        let current = self.len.get();
        if len > current {
            // Allocated, not sparse: a write into a hole can fail for lack
            // of space when it is written back, after the caller was told
            // it succeeded.
            match rustix::fs::fallocate(
                &self.file,
                rustix::fs::FallocateFlags::empty(),
                current,
                len - current,
            ) {
                Ok(()) => {}
                // A file system without fallocate (some network and FUSE
                // ones): sparse growth, as before; a full disk then shows
                // at write-back instead.
                Err(rustix::io::Errno::OPNOTSUPP) => self
                    .file
                    .set_len(len)
                    .map_err(|e| Error::io("set_len", &self.path, e))?,
                Err(e) => return Err(Error::io("fallocate", &self.path, e.into())),
            }
        } else {
            self.file
                .set_len(len)
                .map_err(|e| Error::io("set_len", &self.path, e))?;
        }
        self.len.set(len);
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        self.file
            .write_all_at(data, offset)
            .map_err(|e| Error::io("pwrite", &self.path, e))
    }

    fn sync_data(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io("fdatasync", &self.path, e))
    }

    fn read(&self, offset: u64, len: usize) -> Result<&[u8]> {
        let end = offset.saturating_add(len as u64);
        if end > self.len.get() {
            return Err(Error::Corruption {
                file: self.path.clone(),
                page: offset / crate::btree::PAGE_SIZE as u64,
                reason: format!(
                    "read of {len} bytes at {offset} runs past the end of the file ({})",
                    self.len.get()
                ),
            });
        }
        Ok(self.map.slice(offset as usize, len))
    }

    fn path(&self) -> &Path {
        &self.path
    }
}
