//! A snapshot on a connection of its own (net/PROTOCOL.md, "Snapshots"):
//! after a snapshot hello, the shard, the `MsgSnapshot` and the file's
//! length, then the file in checksummed chunks of up to 1 MiB; the
//! receiver writes it beside the shard's tree, syncs it, hands it to the
//! shard and answers one byte (1: taken, 0: refused). The sender tells its
//! shard how it ended, within bounded time, so raft-rs never waits on a
//! snapshot that went nowhere.

use std::cell::Cell;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use keel_engine::btree::CommitImage;
use keel_engine::shard::{
    decode_message, encode_message, PeerInbox, PinnedSnapshot, RaftMessage, RaftMessageType,
};

use crate::peer::stream::{PeerStream, PeerTls};
use crate::peer::wire::{Hello, SNAPSHOT_CHUNK_BYTES};

/// How long one read or write of a snapshot stream may stall.
const STALL: Duration = Duration::from_secs(10);
/// How long the receiver may take to sync and hand over the file.
const ANSWER_WAIT: Duration = Duration::from_secs(60);
/// Chunks of a snapshot read ahead of its stream, at most.
const READ_AHEAD_CHUNKS: usize = 4;
/// Bytes of the `MsgSnapshot` at most (its metadata; the data is empty).
const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Paces one core's snapshot streams to a rate, all together: a stream
/// at full speed takes the core (reading, checksumming and sending a
/// gigabyte in about a second) and its shards' writes wait for it.
pub(crate) struct Pacer {
    /// Bytes per second; 0 is no limit.
    rate: u64,
    /// When the bytes taken so far have all had their time.
    next_free: Cell<Instant>,
}

impl Pacer {
    pub(crate) fn new(rate: u64) -> Pacer {
        Pacer {
            rate,
            next_free: Cell::new(Instant::now()),
        }
    }

    /// How long `bytes` take at the rate.
    fn time_for(&self, bytes: usize) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(bytes as f64 / self.rate as f64)
    }

    /// Waits until `bytes` more may go.
    pub(crate) async fn take(&self, bytes: usize) {
        let now = Instant::now();
        // Time not used while no stream sent is not saved up for a burst.
        let start = self.next_free.get().max(now);
        self.next_free.set(start + self.time_for(bytes));
        if start > now {
            glommio::timer::sleep(start - now).await;
        }
    }
}

/// Sends the tree file `source` reads as, with `message`, to `address`;
/// answers whether the peer took it. `source` is held (and its commit
/// pinned) until the send ends.
pub(crate) async fn send(
    address: SocketAddr,
    hello: Hello,
    shard: usize,
    message: RaftMessage,
    source: Rc<PinnedSnapshot>,
    pacer: Rc<Pacer>,
    tls: PeerTls,
) -> bool {
    let to = message.to;
    let sent = send_file(
        (address, tls.as_deref()),
        hello,
        shard,
        &message,
        source.image(),
        &pacer,
    );
    match sent.await {
        Ok(taken) => taken,
        Err(error) => {
            tracing::warn!(shard, peer = %format!("{to:x}"), %error, "snapshot send failed");
            false
        }
    }
}

async fn send_file(
    (address, tls): (SocketAddr, Option<&crate::tls::ServerTls>),
    hello: Hello,
    shard: usize,
    message: &RaftMessage,
    source: &CommitImage,
    pacer: &Pacer,
) -> std::io::Result<bool> {
    let len = source.len();
    let mut stream = PeerStream::connect(address, Duration::from_secs(1), tls).await?;
    stream.set_write_timeout(Some(STALL))?;
    stream.write_all(&hello.encode()).await?;
    let bytes = encode_message(message);
    let mut header = Vec::with_capacity(20);
    header.extend_from_slice(&(shard as u32).to_le_bytes());
    header.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    header.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
    stream.write_all(&header).await?;
    stream.write_all(&bytes).await?;
    stream.write_all(&len.to_le_bytes()).await?;
    let chunks = read_ahead(source.try_clone()?);
    let mut left = len;
    while left > 0 {
        let (part, crc) = chunks
            .recv_async()
            .await
            .map_err(|_| std::io::Error::other("the snapshot's reader stopped"))??;
        pacer.take(part.len()).await;
        stream.write_all(&(part.len() as u32).to_le_bytes()).await?;
        stream.write_all(&crc.to_le_bytes()).await?;
        stream.write_all(&part).await?;
        left = left.saturating_sub(part.len() as u64);
    }
    stream.flush().await?;
    stream.set_read_timeout(Some(ANSWER_WAIT))?;
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).await?;
    Ok(answer == [1])
}

/// Reads `source` in chunks, each with its CRC-32, on a thread of its own
/// and a few chunks ahead of the stream: a tree file of tens of gigabytes
/// is not all in the page cache, and a disk read on the core would hold
/// its shards. The thread ends when the stream drops the receiver (the pin
/// is the stream's: a chunk read after it ended is never sent).
fn read_ahead(source: CommitImage) -> flume::Receiver<std::io::Result<(Vec<u8>, u32)>> {
    let (chunks, taken) = flume::bounded(READ_AHEAD_CHUNKS);
    // A thread that cannot start drops `chunks`: the stream hears that the
    // reader stopped.
    let _ = std::thread::Builder::new()
        .name("keel-snapshot-read".to_string())
        .spawn(move || {
            let len = source.len();
            let mut offset = 0u64;
            while offset < len {
                let n = usize::try_from(len - offset)
                    .map_or(SNAPSHOT_CHUNK_BYTES, |left| left.min(SNAPSHOT_CHUNK_BYTES));
                let mut part = vec![0u8; n];
                let read = source.read_at(&mut part, offset).map(|()| {
                    let crc = crc32fast::hash(&part);
                    (part, crc)
                });
                let failed = read.is_err();
                if chunks.send(read).is_err() || failed {
                    return;
                }
                offset += n as u64;
            }
        });
    taken
}

/// Reads one snapshot after its hello (already checked) and hands it to
/// its shard; answers whether it was taken. Anything wrong removes the
/// partial file and refuses it.
pub(crate) async fn receive(
    stream: &mut PeerStream,
    hello: &Hello,
    inbox: &PeerInbox,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(STALL))?;
    let mut taken = false;
    let mut written = None;
    let outcome = receive_file(stream, hello, inbox, &mut written).await;
    match outcome {
        Ok((shard, message, path)) => match inbox.deliver_snapshot(shard, message, path.clone()) {
            Ok(()) => taken = true,
            Err(refusal) => {
                tracing::warn!(%refusal, "snapshot refused");
                let _ = std::fs::remove_file(&path);
            }
        },
        Err(error) => {
            tracing::warn!(%error, "snapshot receive failed");
            if let Some(path) = written {
                let _ = std::fs::remove_file(path);
            }
        }
    }
    stream.write_all(&[u8::from(taken)]).await?;
    stream.flush().await
}

/// Starts writing `[offset, offset + len)` of `file` back to the disk now,
/// without waiting for it: dirty pages of a snapshot of gigabytes, left
/// for the final sync, would be written back all at once, and every WAL
/// sync on the disk would wait behind them. Best effort (the final sync
/// makes the file durable either way).
#[allow(unsafe_code)] // sync_file_range: no safe wrapper in std or rustix
fn start_writeback(file: &std::fs::File, offset: u64, len: usize) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a valid open descriptor and a byte range; the call reads or
    // writes no memory of this process.
    let _ = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
}

fn bad(what: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.into())
}

async fn receive_file(
    stream: &mut PeerStream,
    hello: &Hello,
    inbox: &PeerInbox,
    written: &mut Option<PathBuf>,
) -> std::io::Result<(usize, RaftMessage, PathBuf)> {
    let mut header = [0u8; 12];
    stream.read_exact(&mut header).await?;
    let word = |at: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(header.get(at..at + 4).unwrap_or(&[0; 4]));
        u32::from_le_bytes(w)
    };
    let (shard, message_len, message_crc) = (word(0) as usize, word(4) as usize, word(8));
    if message_len > MAX_MESSAGE_BYTES {
        return Err(bad(format!("a snapshot message of {message_len} bytes")));
    }
    let mut bytes = vec![0u8; message_len];
    stream.read_exact(&mut bytes).await?;
    if crc32fast::hash(&bytes) != message_crc {
        return Err(bad("snapshot message checksum mismatch"));
    }
    let message = decode_message(&bytes).map_err(|e| bad(e.to_string()))?;
    if message.get_msg_type() != RaftMessageType::MsgSnapshot || message.from != hello.from {
        return Err(bad("not a snapshot from the hello's sender"));
    }
    let index = message.get_snapshot().get_metadata().index;
    let path = inbox
        .snapshot_path(shard, message.from, index)
        .ok_or_else(|| bad(format!("no shard {shard}")))?;
    let mut len = [0u8; 8];
    stream.read_exact(&mut len).await?;
    let len = u64::from_le_bytes(len);
    let mut file = std::fs::File::create(&path)?;
    *written = Some(path.clone());
    let mut left = len;
    let mut chunk = vec![0u8; SNAPSHOT_CHUNK_BYTES];
    while left > 0 {
        let mut head = [0u8; 8];
        stream.read_exact(&mut head).await?;
        let mut n = [0u8; 4];
        n.copy_from_slice(head.get(..4).unwrap_or(&[0; 4]));
        let mut crc = [0u8; 4];
        crc.copy_from_slice(head.get(4..).unwrap_or(&[0; 4]));
        let n = u32::from_le_bytes(n) as usize;
        if n == 0 || n > SNAPSHOT_CHUNK_BYTES || n as u64 > left {
            return Err(bad(format!(
                "a snapshot chunk of {n} bytes with {left} to come"
            )));
        }
        let part = chunk.get_mut(..n).unwrap_or_default();
        stream.read_exact(part).await?;
        if crc32fast::hash(part) != u32::from_le_bytes(crc) {
            return Err(bad("snapshot chunk checksum mismatch"));
        }
        file.write_all(part)?;
        start_writeback(&file, len - left, n);
        left -= n as u64;
    }
    // Durable before the shard may rename it into place.
    // On a thread of its own: a sync of gigabytes must not hold the core's
    // blocking pool, where its tree syncs wait.
    keel_engine::shard::on_own_thread("keel-snapshot-sync", move || file.sync_all()).await?;
    Ok((shard, message, path))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Each chunk books its time after the ones before it, whatever
    /// stream sent them; no limit books none.
    #[test]
    fn the_pacer_books_each_chunk_after_the_last() {
        let pacer = Pacer::new(1 << 20);
        let before = Instant::now();
        // The first chunk goes at once (nothing was booked), and books a
        // second: the next one waits for it.
        futures_lite::future::block_on(pacer.take(1 << 20));
        let booked = pacer.next_free.get() - before;
        assert!(booked >= Duration::from_millis(999), "{booked:?}");
        assert!(booked < Duration::from_secs(2), "{booked:?}");
        let unlimited = Pacer::new(0);
        futures_lite::future::block_on(unlimited.take(1 << 30));
        assert!(unlimited.next_free.get() <= Instant::now());
    }
}
