//! The log handle and its group-commit flusher.
//!
//! `append` validates and queues a record synchronously, then returns a
//! [`Durable`] future. One flusher task per log takes the *whole* queue,
//! writes it with one durable (O_DIRECT | O_DSYNC) write, and wakes every
//! waiter whose record it carried. Appends made while that write is in flight queue up for
//! the next one: under load each write carries everything that arrived during
//! the previous one, and no timer is involved.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::{poll_fn, Future};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use crate::config::WalConfig;
use crate::error::{Error, Result};
use crate::format::{decode_record, RecordKind, RECORD_HEADER_LEN};
use crate::log_index::LogIndex;
use crate::queue::Queue;
use crate::recovery::recover;
use crate::writer::{sync_dir, Flushed, Preparing, SegmentFile, Writer};

/// An entry read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its position in the log.
    pub index: u64,
    /// The caller's type byte (1..=127).
    pub kind: u8,
    /// The caller's bytes.
    pub payload: Vec<u8>,
}

/// Counters of a log since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Records made durable (entries, markers and state records).
    pub records: u64,
    /// Durable writes issued (O_DSYNC writes: each is a write plus its
    /// sync). `records / syncs` is the group-commit factor.
    pub syncs: u64,
    /// Read I/Os issued by [`Wal::read`] and [`Wal::read_limited`].
    pub reads: u64,
}

/// State shared by the handle, the flusher task and pending [`Durable`]s.
/// Owned by one executor; never borrowed across an `.await`.
struct Shared {
    dir: PathBuf,
    /// Set while the next segment could not be prepared for lack of space:
    /// the segment being appended to is all the room left.
    space_low: Rc<std::cell::Cell<bool>>,
    /// An exclusive lock on `DATA_DIR/LOCK`, held until the flusher and every
    /// handle are gone, so that two logs never write one directory.
    _lock: std::fs::File,
    config: WalConfig,
    inner: RefCell<Inner>,
    /// Told how long each durable write took (`Wal::observe_syncs`).
    sync_observer: RefCell<Option<SyncObserver>>,
}

/// Called with the time each durable write (a write and its sync, one
/// group commit) took, on the log's executor.
pub type SyncObserver = Box<dyn Fn(std::time::Duration)>;

struct Inner {
    /// Set by the first failed write or sync; from then on every call fails
    /// (fail-stop: nothing is retried over possibly lost pages).
    failure: Option<String>,
    /// Set by `close`/drop: the flusher drains the queue and exits.
    closing: bool,
    flusher_done: bool,
    /// Records accepted and not yet taken by the flusher.
    queue: Queue,
    /// Asked to try again to prepare the next segment.
    retry_prepare: bool,
    /// Segment files the flusher let go of, for `close` to close.
    to_close: Vec<Rc<SegmentFile>>,
    /// A preparation of the next segment that the flusher let go of, told
    /// to stop: `close` awaits it so that it closes its file (a dropped
    /// log drops it).
    preparing: Option<Preparing>,
    /// A spare queue whose buffers the flusher hands back for reuse.
    spare: Queue,
    /// The write generation the current `queue` will become. Invariant:
    /// `durable_generation < queue_generation`.
    queue_generation: u64,
    /// Every record of every generation up to this one is durable.
    durable_generation: u64,
    /// The index the next appended entry must carry (counts queued records).
    accepted_next: u64,
    /// Durable live entries.
    index: LogIndex,
    /// The latest durable state blob.
    state: Option<Vec<u8>>,
    /// Every live segment by seq, for reads and release.
    segments: BTreeMap<u64, Rc<SegmentFile>>,
    /// The segment the flusher appends to; never released.
    active_seq: Option<u64>,
    waiters: Vec<Waker>,
    flusher_waker: Option<Waker>,
    stats: WalStats,
}

impl Inner {
    fn check_usable(&self) -> Result<()> {
        if let Some(failure) = &self.failure {
            return Err(Error::Failed(failure.clone()));
        }
        if self.closing {
            return Err(Error::Closed);
        }
        Ok(())
    }

    fn enqueue(&mut self, kind: RecordKind, index: u64, payload: &[u8]) -> u64 {
        self.queue.push(kind, index, payload);
        if let Some(waker) = self.flusher_waker.take() {
            waker.wake();
        }
        self.queue_generation
    }

    fn wake_waiters(&mut self) -> Vec<Waker> {
        std::mem::take(&mut self.waiters)
    }
}

/// A segmented write-ahead log bound to the current glommio executor.
///
/// Not `Send`: a log belongs to the core that opened it. See the crate docs
/// for the call-order rules.
pub struct Wal {
    shared: Rc<Shared>,
}

impl Wal {
    /// Opens (creating if needed) the log in `dir`, verifying every segment.
    ///
    /// Must run inside a glommio executor; the log's flusher task is spawned
    /// on it.
    ///
    /// # Errors
    /// [`Error::Corruption`] names the file and offset of damage that is not a
    /// torn tail of the last segment; the directory is then left untouched.
    /// A torn tail is cut off after being copied to a `.broken` file.
    pub async fn open(dir: impl AsRef<Path>, config: WalConfig) -> Result<Wal> {
        config.validate()?;
        // Absolute: io_uring may resolve a relative path from a worker
        // thread, where it was seen to fail with EBADF.
        let dir = std::path::absolute(dir.as_ref())
            .map_err(|e| Error::io("resolve path", dir.as_ref(), e))?;
        let lock = lock_dir(&dir)?;
        let recovered = recover(&dir).await?;
        // The state is carried into every new segment; one saved under a
        // larger segment size might not fit a segment of this size.
        if let Some(state) = &recovered.state {
            if state.len() > config.max_payload() {
                return Err(Error::InvalidArgument(format!(
                    "the saved state of {} bytes does not fit segments of {} bytes \
                     (at most {}); open with the segment size it was written with",
                    state.len(),
                    config.segment_size,
                    config.max_payload()
                )));
            }
        }
        let active_seq = recovered.active.as_ref().map(|a| a.segment.seq);
        let mut writer = Writer::new(
            dir.clone(),
            config.segment_size,
            recovered.active,
            recovered.next_seq,
            recovered.last_crc,
            recovered.index.next_index(),
            recovered.state.clone(),
        );
        let space_low = writer.space_low_flag();
        if active_seq.is_none() {
            writer.await_prepared().await?;
        }
        let shared = Rc::new(Shared {
            dir,
            space_low,
            _lock: lock,
            config,
            inner: RefCell::new(Inner {
                failure: None,
                closing: false,
                flusher_done: false,
                queue: Queue::default(),
                retry_prepare: false,
                to_close: Vec::new(),
                preparing: None,
                spare: Queue::default(),
                queue_generation: 1,
                durable_generation: 0,
                accepted_next: recovered.index.next_index(),
                index: recovered.index,
                state: recovered.state,
                segments: recovered.segments,
                active_seq,
                waiters: Vec::new(),
                flusher_waker: None,
                stats: WalStats::default(),
            }),
            sync_observer: RefCell::new(None),
        });
        glommio::spawn_local(run_flusher(shared.clone(), writer)).detach();
        Ok(Wal { shared })
    }

    /// From now on, `observer` is told how long each durable write takes
    /// (for metrics); it replaces any observer before it.
    pub fn observe_syncs(&self, observer: SyncObserver) {
        *self.shared.sync_observer.borrow_mut() = Some(observer);
    }

    /// Whether the log is short of room: the last attempt to prepare its
    /// next segment failed for lack of space (and no other is under way),
    /// so the segment being appended to is all the room left (a whole
    /// segment, when it is first seen). Appends still work until it is
    /// full; [`Wal::retry_prepare`] tries again.
    pub fn space_low(&self) -> bool {
        self.shared.space_low.get()
    }

    /// Tries again to prepare the next segment, in the background, if the
    /// last attempt failed ([`Wal::space_low`] shows the outcome).
    pub fn retry_prepare(&self) {
        let mut inner = self.shared.inner.borrow_mut();
        inner.retry_prepare = true;
        if let Some(waker) = inner.flusher_waker.take() {
            waker.wake();
        }
    }

    /// Appends one entry. It must carry index [`Wal::next_index`]; `kind` is
    /// the caller's type byte, 1..=127.
    ///
    /// The record is queued before this returns, so appends are ordered by
    /// call, not by when their futures are polled. The future resolves once
    /// the record is written and fdatasync'ed.
    pub fn append(&self, index: u64, kind: u8, payload: &[u8]) -> Durable {
        self.append_batch(std::iter::once((index, kind, payload)))
    }

    /// Appends consecutive entries `(index, kind, payload)` as one unit of
    /// durability. Either all are queued or, on a bad argument, none.
    pub fn append_batch<'a>(
        &self,
        entries: impl IntoIterator<Item = (u64, u8, &'a [u8])> + Clone,
    ) -> Durable {
        let mut inner = self.shared.inner.borrow_mut();
        if let Err(e) = inner.check_usable() {
            return Durable::ready(Err(e));
        }
        let max_payload = self.shared.config.max_payload();
        let mut expected = inner.accepted_next;
        for (index, kind, payload) in entries.clone() {
            let problem = if index != expected {
                Some(format!("entry index {index}, expected {expected}"))
            } else if !RecordKind::is_entry_kind(kind) {
                Some(format!("entry type {kind} is outside 1..=127"))
            } else if payload.len() > max_payload {
                Some(format!(
                    "payload of {} bytes exceeds {max_payload}",
                    payload.len()
                ))
            } else {
                None
            };
            if let Some(problem) = problem {
                return Durable::ready(Err(Error::InvalidArgument(problem)));
            }
            expected += 1;
        }
        if expected == inner.accepted_next {
            return Durable::ready(Ok(()));
        }
        let mut generation = inner.queue_generation;
        for (index, kind, payload) in entries {
            generation = inner.enqueue(RecordKind::Entry(kind), index, payload);
        }
        inner.accepted_next = expected;
        Durable::pending(self.shared.clone(), generation)
    }

    /// Drops every entry above `index` (a Raft log conflict). The next entry
    /// appended carries `index + 1`. `index` must be below the next index.
    pub fn truncate_after(&self, index: u64) -> Durable {
        let mut inner = self.shared.inner.borrow_mut();
        if let Err(e) = inner.check_usable() {
            return Durable::ready(Err(e));
        }
        if index >= inner.accepted_next {
            let last = inner.accepted_next - 1;
            return Durable::ready(Err(Error::InvalidArgument(format!(
                "cannot truncate after {index}: the last entry is {last}"
            ))));
        }
        let generation = inner.enqueue(RecordKind::Truncate, index, &[]);
        inner.accepted_next = index + 1;
        Durable::pending(self.shared.clone(), generation)
    }

    /// Drops every entry; the next entry appended carries `last_index + 1`
    /// (for example after installing a snapshot that ends at `last_index`).
    pub fn reset(&self, last_index: u64) -> Durable {
        let mut inner = self.shared.inner.borrow_mut();
        if let Err(e) = inner.check_usable() {
            return Durable::ready(Err(e));
        }
        if last_index == u64::MAX {
            return Durable::ready(Err(Error::InvalidArgument("reset to u64::MAX".to_string())));
        }
        let generation = inner.enqueue(RecordKind::Reset, last_index, &[]);
        inner.accepted_next = last_index + 1;
        Durable::pending(self.shared.clone(), generation)
    }

    /// Durably replaces the caller's state blob (for Raft: its HardState).
    /// The latest one survives restarts and segment release.
    pub fn save_state(&self, payload: &[u8]) -> Durable {
        let mut inner = self.shared.inner.borrow_mut();
        if let Err(e) = inner.check_usable() {
            return Durable::ready(Err(e));
        }
        let max_payload = self.shared.config.max_payload();
        if payload.len() > max_payload {
            return Durable::ready(Err(Error::InvalidArgument(format!(
                "state of {} bytes exceeds {max_payload}",
                payload.len()
            ))));
        }
        let index = inner.accepted_next - 1;
        let generation = inner.enqueue(RecordKind::State, index, payload);
        Durable::pending(self.shared.clone(), generation)
    }

    /// The latest durable state blob.
    pub fn state(&self) -> Option<Vec<u8>> {
        self.shared.inner.borrow().state.clone()
    }

    /// Index of the first durable entry (when empty, `last_index() + 1`).
    pub fn first_index(&self) -> u64 {
        self.shared.inner.borrow().index.first_index()
    }

    /// Index of the last durable entry (`first_index() - 1` when empty).
    pub fn last_index(&self) -> u64 {
        self.shared.inner.borrow().index.last_index()
    }

    /// The index the next appended entry must carry; counts entries that are
    /// queued but not yet durable.
    pub fn next_index(&self) -> u64 {
        self.shared.inner.borrow().accepted_next
    }

    /// Counters since open.
    pub fn stats(&self) -> WalStats {
        self.shared.inner.borrow().stats
    }

    /// Number of live segment files.
    pub fn segment_count(&self) -> usize {
        self.shared.inner.borrow().segments.len()
    }

    /// Reads the durable entries with indexes in `range`.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] if any index is not held; [`Error::Corruption`]
    /// if the bytes read back no longer verify.
    pub async fn read(&self, range: Range<u64>) -> Result<Vec<Entry>> {
        self.read_limited(range, u64::MAX).await
    }

    /// Like [`Wal::read`], but stops once the payloads returned reach
    /// `max_bytes` (always returning at least one entry if any is asked for).
    pub async fn read_limited(&self, range: Range<u64>, max_bytes: u64) -> Result<Vec<Entry>> {
        let runs = self.plan_read(range, max_bytes)?;
        self.shared.inner.borrow_mut().stats.reads += runs.len() as u64;
        let mut entries = Vec::new();
        for run in runs {
            read_run(&run, &mut entries).await?;
        }
        Ok(entries)
    }

    /// Groups the locations of `range` into spans of one segment, each read
    /// with one I/O. A span also covers the other records between its
    /// entries (state records are written between entries all the time):
    /// reading them is far cheaper than one I/O per entry, which made a
    /// follower's catch-up read of a few thousand entries take seconds.
    fn plan_read(&self, range: Range<u64>, max_bytes: u64) -> Result<Vec<ReadRun>> {
        let inner = self.shared.inner.borrow();
        inner.check_usable()?;
        let (first, last) = (inner.index.first_index(), inner.index.last_index());
        if range.start > range.end
            || (range.start < range.end && (range.start < first || range.end - 1 > last))
        {
            let index = if range.start < first {
                range.start
            } else {
                range.end.saturating_sub(1)
            };
            return Err(Error::OutOfRange { index, first, last });
        }
        let mut runs: Vec<ReadRun> = Vec::new();
        let mut budget = 0u64;
        for index in range {
            if budget >= max_bytes && !runs.is_empty() {
                break;
            }
            let at = inner
                .index
                .location(index)
                .ok_or(Error::OutOfRange { index, first, last })?;
            budget += u64::from(at.frame_len);
            let segment = inner.segments.get(&at.seq).ok_or_else(|| {
                Error::Failed(format!("segment {} of entry {index} is gone", at.seq))
            })?;
            let frame = FrameAt {
                offset: at.offset,
                len: at.frame_len,
            };
            match runs.last_mut() {
                Some(run) if run.can_take(at.seq, frame) => run.take(frame),
                _ => runs.push(ReadRun {
                    segment: segment.clone(),
                    first_index: index,
                    offset: at.offset,
                    len: u64::from(at.frame_len),
                    frames: vec![frame],
                }),
            }
        }
        Ok(runs)
    }

    /// Deletes whole segments that hold only entries below `index` (and no
    /// state that is still the latest). Returns how many were deleted.
    /// The active segment is never deleted.
    pub async fn release_below(&self, index: u64) -> Result<usize> {
        let doomed: Vec<Rc<SegmentFile>> = {
            let inner = self.shared.inner.borrow();
            inner.check_usable()?;
            // Entries at or above `probe` must stay readable; everything in
            // segments below the one holding `probe` is older (log_index.rs).
            let probe = index.max(inner.index.first_index());
            let keep_from = inner
                .index
                .location(probe)
                .map(|l| l.seq)
                .or(inner.active_seq)
                .unwrap_or(0);
            let keep_from = inner.active_seq.map_or(keep_from, |a| keep_from.min(a));
            inner
                .segments
                .range(..keep_from)
                .map(|(_, s)| s.clone())
                .collect()
        };
        if doomed.is_empty() {
            return Ok(0);
        }
        for segment in &doomed {
            // Oldest first: a crash part-way leaves a gap-free suffix.
            std::fs::remove_file(&segment.path)
                .map_err(|e| Error::io("remove", &segment.path, e))?;
            let mut inner = self.shared.inner.borrow_mut();
            inner.segments.remove(&segment.seq);
            inner.index.forget_segments_below(segment.seq + 1);
        }
        sync_dir(&self.shared.dir).await?;
        Ok(doomed.len())
    }

    /// Makes everything queued durable, stops the flusher and closes the log.
    pub async fn close(self) -> Result<()> {
        {
            let mut inner = self.shared.inner.borrow_mut();
            inner.closing = true;
            if let Some(waker) = inner.flusher_waker.take() {
                waker.wake();
            }
        }
        let shared = self.shared.clone();
        poll_fn(|cx| {
            let mut inner = shared.inner.borrow_mut();
            if inner.flusher_done {
                Poll::Ready(())
            } else {
                inner.waiters.push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        let (mut files, preparing) = {
            let mut inner = self.shared.inner.borrow_mut();
            let mut files = std::mem::take(&mut inner.to_close);
            files.extend(std::mem::take(&mut inner.segments).into_values());
            (files, inner.preparing.take())
        };
        if let Some(preparing) = preparing {
            // Stopped at its next chunk; a finished one is closed below.
            if let Ok(segment) = preparing.await {
                files.push(Rc::new(segment));
            }
        }
        close_files(files).await;
        let failure = self.shared.inner.borrow().failure.clone();
        match failure {
            Some(failure) => Err(Error::Failed(failure)),
            None => Ok(()),
        }
    }
}

/// Closes each file no one else holds (a file still shared is closed
/// when its last holder drops it).
async fn close_files(files: Vec<Rc<SegmentFile>>) {
    // The active segment is listed twice (the writer's and the map's).
    let mut unique: Vec<Rc<SegmentFile>> = Vec::with_capacity(files.len());
    for file in files {
        if !unique.iter().any(|u| Rc::ptr_eq(u, &file)) {
            unique.push(file);
        }
    }
    for file in unique {
        if let Ok(segment) = Rc::try_unwrap(file) {
            let _ = segment.file.close().await;
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        let mut inner = self.shared.inner.borrow_mut();
        inner.closing = true;
        if let Some(waker) = inner.flusher_waker.take() {
            waker.wake();
        }
    }
}

/// Creates `dir` if needed and takes its lock file.
fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    let path = dir.join(LOCK_FILE_NAME);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::InUse {
            dir: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io("lock", &path, e)),
    }
}

/// Name of the lock file in a log directory.
const LOCK_FILE_NAME: &str = "LOCK";

/// The most bytes of other records a read span skips between two of its
/// entries; a larger gap (entries truncated and written again further on)
/// starts a new span.
const MAX_READ_GAP: u64 = 64 * 1024;

/// The longest read span: bounds the buffer of one read I/O.
const MAX_READ_SPAN: u64 = 8 * 1024 * 1024;

/// Where one entry's frame lies in its segment.
#[derive(Clone, Copy)]
struct FrameAt {
    offset: u64,
    len: u32,
}

/// Consecutive entries of one segment, in file order, read with one I/O
/// of `len` bytes from `offset` (the span may hold other records too).
struct ReadRun {
    segment: Rc<SegmentFile>,
    first_index: u64,
    offset: u64,
    len: u64,
    frames: Vec<FrameAt>,
}

impl ReadRun {
    /// Whether `frame`, the next entry, can join this span.
    fn can_take(&self, seq: u64, frame: FrameAt) -> bool {
        let end = self.offset + self.len;
        self.segment.seq == seq
            && frame.offset >= end
            && frame.offset - end <= MAX_READ_GAP
            && frame.offset + u64::from(frame.len) - self.offset <= MAX_READ_SPAN
    }

    fn take(&mut self, frame: FrameAt) {
        self.len = frame.offset + u64::from(frame.len) - self.offset;
        self.frames.push(frame);
    }
}

async fn read_run(run: &ReadRun, out: &mut Vec<Entry>) -> Result<()> {
    let path = &run.segment.path;
    let len = usize::try_from(run.len)
        .map_err(|_| Error::Failed(format!("read of {} bytes", run.len)))?;
    let bytes = run
        .segment
        .file
        .read_at(run.offset, len)
        .await
        .map_err(|e| Error::glommio("read", path, e))?;
    for (expected, frame) in (run.first_index..).zip(&run.frames) {
        let offset = frame.offset;
        // Both fit: every frame lies inside the span (`ReadRun::take`).
        let from = usize::try_from(frame.offset - run.offset).unwrap_or(usize::MAX);
        let record = bytes.get(from..).unwrap_or_default();
        let header = decode_record(record, crate::format::MAX_PAYLOAD_LEN)
            .map_err(|p| Error::corruption(path, offset, p.describe()))?;
        let RecordKind::Entry(kind) = header.kind else {
            return Err(Error::corruption(path, offset, "expected an entry record"));
        };
        if header.index != expected {
            return Err(Error::corruption(
                path,
                offset,
                format!("expected entry {expected}"),
            ));
        }
        let start = RECORD_HEADER_LEN;
        let payload = record
            .get(start..start + header.payload_len as usize)
            .unwrap_or_default();
        out.push(Entry {
            index: header.index,
            kind,
            payload: payload.to_vec(),
        });
    }
    Ok(())
}

/// The flusher: one write + one fdatasync per batch of queued records.
async fn run_flusher(shared: Rc<Shared>, mut writer: Writer) {
    loop {
        let retry = std::mem::take(&mut shared.inner.borrow_mut().retry_prepare);
        if retry {
            writer.retry_prepare().await;
        }
        let taken = poll_fn(|cx| {
            let mut guard = shared.inner.borrow_mut();
            let inner = &mut *guard;
            if inner.failure.is_some() {
                // Fail-stop: never write, sync or acknowledge after a failure.
                Poll::Ready(None)
            } else if inner.retry_prepare {
                Poll::Ready(Some(None))
            } else if !inner.queue.is_empty() {
                let generation = inner.queue_generation;
                inner.queue_generation += 1;
                let mut batch = std::mem::take(&mut inner.spare);
                std::mem::swap(&mut batch, &mut inner.queue);
                Poll::Ready(Some(Some((batch, generation))))
            } else if inner.closing {
                Poll::Ready(None)
            } else {
                inner.flusher_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        let Some(taken) = taken else {
            break;
        };
        let Some((mut batch, generation)) = taken else {
            continue;
        };
        let started = std::time::Instant::now();
        let result = writer.flush(&batch).await;
        if result.is_ok() {
            if let Some(observe) = shared.sync_observer.borrow().as_ref() {
                observe(started.elapsed());
            }
        }
        let (waiters, stop) = {
            let mut inner = shared.inner.borrow_mut();
            let stop = match result {
                Ok(flushed) => match apply_flushed(&mut inner, flushed, writer.active_seq()) {
                    Ok(()) => {
                        inner.durable_generation = generation;
                        batch.clear();
                        inner.spare = batch;
                        false
                    }
                    Err(reason) => {
                        // The queue was validated on append, so this is a bug;
                        // stop rather than serve a wrong log.
                        tracing::error!(dir = %shared.dir.display(), %reason, "write-ahead log index rejected a flushed record");
                        inner.failure =
                            Some(format!("log index rejected a flushed record: {reason}"));
                        true
                    }
                },
                Err(error) => {
                    tracing::error!(dir = %shared.dir.display(), %error, "write-ahead log stopped");
                    inner.failure = Some(error.to_string());
                    true
                }
            };
            (inner.wake_waiters(), stop)
        };
        waiters.into_iter().for_each(Waker::wake);
        if stop {
            break;
        }
    }
    // The files are closed by `close`, explicitly: a dropped glommio file
    // is closed only on a later I/O cycle, which an executor about to end
    // may never run (the descriptor would stay open).
    let (prepared, preparing, active) = writer.into_files();
    let waiters = {
        let mut inner = shared.inner.borrow_mut();
        inner.preparing = preparing;
        inner.to_close.extend(prepared.map(Rc::new));
        inner.to_close.extend(active);
        inner.flusher_done = true;
        inner.wake_waiters()
    };
    waiters.into_iter().for_each(Waker::wake);
}

/// Makes a durable flush visible: new segments, record locations, state.
fn apply_flushed(
    inner: &mut Inner,
    flushed: Flushed,
    active_seq: Option<u64>,
) -> std::result::Result<(), String> {
    for segment in flushed.new_segments {
        inner.segments.insert(segment.seq, segment);
    }
    inner.active_seq = active_seq;
    for applied in &flushed.applied {
        inner.index.apply(applied.kind, applied.index, applied.at)?;
    }
    if flushed.state.is_some() {
        inner.state = flushed.state;
    }
    inner.stats.records += flushed.applied.len() as u64;
    inner.stats.syncs += flushed.syncs;
    Ok(())
}

/// Resolves once the records it stands for are durable, or the log failed.
#[must_use = "a record is only durable once its Durable future resolves"]
pub struct Durable {
    shared: Option<Rc<Shared>>,
    generation: u64,
    ready: Option<Result<()>>,
}

impl Durable {
    fn ready(result: Result<()>) -> Durable {
        Durable {
            shared: None,
            generation: 0,
            ready: Some(result),
        }
    }

    fn pending(shared: Rc<Shared>, generation: u64) -> Durable {
        Durable {
            shared: Some(shared),
            generation,
            ready: None,
        }
    }
}

impl Future for Durable {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if let Some(result) = self.ready.take() {
            return Poll::Ready(result);
        }
        let Some(shared) = self.shared.as_ref() else {
            return Poll::Ready(Err(Error::Closed));
        };
        let mut inner = shared.inner.borrow_mut();
        if inner.durable_generation >= self.generation {
            return Poll::Ready(Ok(()));
        }
        if let Some(failure) = &inner.failure {
            return Poll::Ready(Err(Error::Failed(failure.clone())));
        }
        if inner.flusher_done {
            return Poll::Ready(Err(Error::Closed));
        }
        inner.waiters.push(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::faults;
    use crate::test_support::run_local;

    fn small() -> WalConfig {
        WalConfig {
            segment_size: 16 * 4096,
        }
    }

    fn payload(index: u64, len: usize) -> Vec<u8> {
        (0..len).map(|i| (index as usize * 31 + i) as u8).collect()
    }

    #[test]
    fn appends_read_back_across_segments_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run_local(move || async move {
            let wal = Wal::open(&path, small()).await.unwrap();
            for i in 1..=300u64 {
                wal.append(i, 3, &payload(i, (i as usize * 37) % 900))
                    .await
                    .unwrap();
            }
            assert!(
                wal.segment_count() > 2,
                "300 records of ~450 B span several 64 KiB segments"
            );
            let all = wal.read(1..301).await.unwrap();
            assert_eq!(all.len(), 300);
            for e in &all {
                assert_eq!(e.payload, payload(e.index, (e.index as usize * 37) % 900));
                assert_eq!(e.kind, 3);
            }
            wal.close().await.unwrap();
            let wal = Wal::open(&path, small()).await.unwrap();
            assert_eq!((wal.first_index(), wal.last_index()), (1, 300));
            assert_eq!(wal.read(1..301).await.unwrap(), all);
            wal.append(301, 1, b"after reopen").await.unwrap();
            assert_eq!(
                wal.read(301..302).await.unwrap()[0].payload,
                b"after reopen"
            );
        });
    }

    #[test]
    fn concurrent_appends_share_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run_local(move || async move {
            let wal = Rc::new(Wal::open(&path, WalConfig::default()).await.unwrap());
            let pending: Vec<Durable> = (1..=200u64)
                .map(|i| wal.append(i, 1, &payload(i, 100)))
                .collect();
            for durable in pending {
                durable.await.unwrap();
            }
            let stats = wal.stats();
            assert_eq!(stats.records, 200);
            assert!(
                stats.syncs <= 3,
                "200 queued appends took {} syncs",
                stats.syncs
            );
            assert_eq!(wal.read(1..201).await.unwrap().len(), 200);
        });
    }

    #[test]
    fn truncate_reset_and_state_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run_local(move || async move {
            let wal = Wal::open(&path, small()).await.unwrap();
            for i in 1..=10u64 {
                wal.append(i, 1, &payload(i, 10)).await.unwrap();
            }
            wal.truncate_after(6).await.unwrap();
            assert_eq!(wal.last_index(), 6);
            wal.append(7, 2, b"new seven").await.unwrap();
            wal.save_state(b"term=3 vote=2").await.unwrap();
            assert!(wal.append(9, 1, b"gap").await.is_err());
            wal.close().await.unwrap();

            let wal = Wal::open(&path, small()).await.unwrap();
            assert_eq!((wal.first_index(), wal.last_index()), (1, 7));
            assert_eq!(wal.read(7..8).await.unwrap()[0].payload, b"new seven");
            assert_eq!(wal.state().as_deref(), Some(&b"term=3 vote=2"[..]));
            wal.reset(100).await.unwrap();
            assert_eq!((wal.first_index(), wal.last_index()), (101, 100));
            wal.append(101, 1, b"after snapshot").await.unwrap();
            wal.close().await.unwrap();

            let wal = Wal::open(&path, small()).await.unwrap();
            assert_eq!((wal.first_index(), wal.last_index()), (101, 101));
            assert!(matches!(
                wal.read(7..8).await,
                Err(Error::OutOfRange { .. })
            ));
        });
    }

    #[test]
    fn a_state_too_large_for_the_segment_size_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run_local(move || async move {
            let large = WalConfig {
                segment_size: 64 * 4096,
            };
            let wal = Wal::open(&path, large.clone()).await.unwrap();
            let state = payload(1, small().max_payload() + 8);
            wal.save_state(&state).await.unwrap();
            wal.close().await.unwrap();
            assert!(matches!(
                Wal::open(&path, small()).await.map(|_| ()),
                Err(Error::InvalidArgument(_))
            ));
            let wal = Wal::open(&path, large).await.unwrap();
            assert_eq!(wal.state(), Some(state));
        });
    }

    #[test]
    fn release_deletes_old_segments_and_keeps_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run_local(move || async move {
            let wal = Wal::open(&path, small()).await.unwrap();
            wal.save_state(b"hard state").await.unwrap();
            for i in 1..=400u64 {
                wal.append(i, 1, &payload(i, 500)).await.unwrap();
            }
            let before = wal.segment_count();
            let released = wal.release_below(350).await.unwrap();
            assert!(released >= 2 && wal.segment_count() == before - released);
            assert!(wal.first_index() <= 350 && wal.first_index() > 1);
            assert_eq!(wal.read(350..401).await.unwrap().len(), 51);
            assert!(matches!(
                wal.read(1..2).await,
                Err(Error::OutOfRange { .. })
            ));
            wal.close().await.unwrap();

            let wal = Wal::open(&path, small()).await.unwrap();
            assert_eq!(wal.state().as_deref(), Some(&b"hard state"[..]));
            assert!(wal.first_index() <= 350);
            assert_eq!(wal.last_index(), 400);
            wal.append(401, 1, b"more").await.unwrap();
            // Everything below the end: all but the active segment go.
            wal.release_below(10_000).await.unwrap();
            assert_eq!(wal.segment_count(), 1);
        });
    }

    #[test]
    fn bad_calls_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run_local(move || async move {
            let wal = Wal::open(&path, small()).await.unwrap();
            wal.append(1, 1, b"one").await.unwrap();
            let too_big = vec![0u8; small().max_payload() + 1];
            for result in [
                wal.append(3, 1, b"gap").await,
                wal.append(2, 0, b"kind 0").await,
                wal.append(2, 0x80, b"internal kind").await,
                wal.append(2, 1, &too_big).await,
                wal.append_batch([(2, 1, &b"ok"[..]), (4, 1, &b"gap"[..])])
                    .await,
                wal.truncate_after(2).await,
            ] {
                assert!(
                    matches!(result, Err(Error::InvalidArgument(_))),
                    "{result:?}"
                );
            }
            assert_eq!(wal.next_index(), 2);
            wal.append(2, 1, b"two").await.unwrap();
            assert!(matches!(
                wal.read(0..2).await,
                Err(Error::OutOfRange { .. })
            ));
            assert!(matches!(
                wal.read(2..4).await,
                Err(Error::OutOfRange { .. })
            ));
            assert_eq!(wal.read(2..2).await.unwrap(), vec![]);
        });
    }

    #[test]
    fn read_limited_returns_at_least_one_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run_local(move || async move {
            let wal = Wal::open(&path, small()).await.unwrap();
            for i in 1..=10u64 {
                wal.append(i, 1, &payload(i, 100)).await.unwrap();
            }
            assert_eq!(wal.read_limited(1..11, 0).await.unwrap().len(), 1);
            assert_eq!(wal.read_limited(1..11, 300).await.unwrap().len(), 3);
        });
    }

    /// A Raft log writes a state record between entries all the time; a
    /// read must still fetch a segment's entries with one I/O, not one per
    /// entry (a catch-up read of 6,000 entries took seconds that way).
    #[test]
    fn a_read_spans_the_state_records_between_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run_local(move || async move {
            let wal = Wal::open(&path, WalConfig::default()).await.unwrap();
            for i in 1..=200u64 {
                let entry = wal.append(i, 1, &payload(i, 100));
                let state = wal.save_state(&i.to_le_bytes());
                entry.await.unwrap();
                state.await.unwrap();
            }
            let before = wal.stats().reads;
            let entries = wal.read(1..201).await.unwrap();
            assert_eq!(entries.len(), 200);
            for (entry, i) in entries.iter().zip(1u64..) {
                assert_eq!((entry.index, &entry.payload), (i, &payload(i, 100)));
            }
            assert_eq!(wal.stats().reads - before, 1);
            wal.close().await.unwrap();
        });
    }

    /// A failed write must stop the log for good: later appends, reads and
    /// close all fail, and nothing is retried. Reopening recovers every
    /// record acknowledged before the failure.
    #[test]
    fn failed_write_is_sticky() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run_local(move || async move {
            let wal = Wal::open(&path, small()).await.unwrap();
            for i in 1..=5u64 {
                wal.append(i, 1, &payload(i, 50)).await.unwrap();
            }
            faults::fail_writes_after(Some(0));
            let failed = wal.append(6, 1, b"lost").await;
            assert!(
                matches!(failed, Err(Error::Failed(ref m)) if m.contains("injected")),
                "{failed:?}"
            );
            faults::fail_writes_after(None);
            assert!(matches!(
                wal.append(7, 1, b"x").await,
                Err(Error::Failed(_))
            ));
            assert!(matches!(wal.read(1..2).await, Err(Error::Failed(_))));
            assert!(matches!(wal.close().await, Err(Error::Failed(_))));
            let wal = Wal::open(&path, small()).await.unwrap();
            assert_eq!(wal.last_index(), 5);
        });
    }

    /// A failed directory fsync while rolling to a new segment stops the log
    /// too: the new segment's name may not be durable.
    #[test]
    fn failed_sync_is_sticky() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run_local(move || async move {
            let wal = Wal::open(&path, small()).await.unwrap();
            wal.append(1, 1, b"one").await.unwrap();
            faults::fail_syncs_after(Some(0));
            let big = payload(2, small().max_payload());
            let mut failure = None;
            for index in 2..10 {
                if let Err(e) = wal.append(index, 1, &big).await {
                    failure = Some(e);
                    break;
                }
            }
            faults::fail_syncs_after(None);
            let failure = failure.expect("a roll must have synced the directory");
            assert!(
                matches!(failure, Error::Failed(ref m) if m.contains("fsync directory")),
                "{failure:?}"
            );
            let next = wal.next_index();
            assert!(matches!(
                wal.append(next, 1, b"x").await,
                Err(Error::Failed(_))
            ));
            assert!(matches!(wal.save_state(b"s").await, Err(Error::Failed(_))));
            drop(wal);
            let wal = Wal::open(&path, small()).await.unwrap();
            assert!(wal.last_index() >= 1);
        });
    }

    /// Regression: after a failed directory fsync during a segment roll, the
    /// flusher went on to write the next queued batch, skipped the rename it
    /// believed done, and acknowledged records that sat in a file still named
    /// `.tmp` (deleted on the next open).
    #[test]
    fn nothing_is_acknowledged_after_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run_local(move || async move {
            let wal = Wal::open(&path, small()).await.unwrap();
            wal.append(1, 1, b"one").await.unwrap();
            faults::fail_syncs_after(Some(0));
            let big = payload(2, small().max_payload());
            let first_wave: Vec<Durable> = (2..4).map(|i| wal.append(i, 1, &big)).collect();
            // Let the flusher take the first wave (which must roll) and start
            // its I/O, then queue a second wave behind it. State records
            // apply cleanly whatever happened to the first wave, so only the
            // fail-stop rule keeps them from being acknowledged.
            futures_lite::future::yield_now().await;
            let second_wave: Vec<Durable> =
                (0..4).map(|i| wal.save_state(&payload(i, 10))).collect();
            for durable in first_wave {
                assert!(matches!(durable.await, Err(Error::Failed(_))));
            }
            // Closing waits for the flusher to finish; only then are the
            // second wave's futures polled, so a write of them after the
            // failure would show as an acknowledgement.
            assert!(matches!(wal.close().await, Err(Error::Failed(_))));
            for durable in second_wave {
                assert!(matches!(durable.await, Err(Error::Failed(_))));
            }
            faults::fail_syncs_after(None);
        });
    }

    /// Regression: a segment holding only state records (the log's entries
    /// all released) reopened as an empty log starting at index 1.
    #[test]
    fn a_segment_of_state_records_keeps_the_log_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run_local(move || async move {
            let wal = Wal::open(&path, small()).await.unwrap();
            wal.save_state(b"small").await.unwrap();
            for i in 1..=5u64 {
                wal.append(i, 1, &payload(i, 100)).await.unwrap();
            }
            wal.reset(100).await.unwrap();
            let big_state = payload(7, small().max_payload());
            wal.save_state(&big_state).await.unwrap();
            wal.save_state(&big_state).await.unwrap(); // surely rolled by now
            wal.release_below(101).await.unwrap();
            assert_eq!(wal.segment_count(), 1);
            wal.close().await.unwrap();
            let wal = Wal::open(&path, small()).await.unwrap();
            assert_eq!(
                (wal.first_index(), wal.last_index(), wal.next_index()),
                (101, 100, 101)
            );
            assert_eq!(wal.state(), Some(big_state));
            wal.append(101, 1, b"continues").await.unwrap();
        });
    }

    /// Regression: the configured segment size was applied to segments
    /// written with another size, so a reopened log with a larger size wrote
    /// past the end its header declared, and one with a smaller size called
    /// large records corrupt.
    #[test]
    fn segments_keep_the_size_they_were_written_with() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run_local(move || async move {
            let large = WalConfig {
                segment_size: 32 * 4096,
            };
            // Small segments first, then more appends under a larger size:
            // the small active segment must still end where its header says.
            let wal = Wal::open(&path, small()).await.unwrap();
            for i in 1..=5u64 {
                wal.append(i, 1, &payload(i, 3000)).await.unwrap();
            }
            wal.close().await.unwrap();
            let wal = Wal::open(&path, large.clone()).await.unwrap();
            for i in 6..=40u64 {
                wal.append(i, 1, &payload(i, 3000)).await.unwrap();
            }
            // A record only a large segment can hold stays readable when
            // the log is reopened with small segments.
            let big = payload(41, large.max_payload());
            wal.append(41, 1, &big).await.unwrap();
            wal.close().await.unwrap();
            for config in [small(), large, WalConfig::default()] {
                let wal = Wal::open(&path, config).await.unwrap();
                assert_eq!(wal.last_index(), 41);
                assert_eq!(wal.read(1..42).await.unwrap().len(), 41);
                assert_eq!(wal.read(41..42).await.unwrap()[0].payload, big);
                wal.close().await.unwrap();
            }
        });
    }

    #[test]
    fn an_empty_batch_is_durable_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run_local(move || async move {
            let wal = Wal::open(&path, small()).await.unwrap();
            let nothing: [(u64, u8, &[u8]); 0] = [];
            wal.append_batch(nothing).await.unwrap();
            assert_eq!(wal.stats().syncs, 0);
        });
    }

    /// Two logs on one directory would overwrite each other's records.
    #[test]
    fn a_directory_is_opened_by_one_log_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run_local(move || async move {
            let wal = Wal::open(&path, small()).await.unwrap();
            assert!(matches!(
                Wal::open(&path, small()).await,
                Err(Error::InUse { .. })
            ));
            wal.close().await.unwrap();
            Wal::open(&path, small()).await.unwrap();
        });
    }
}
