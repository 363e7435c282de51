//! A snapshot on a connection of its own (net/PROTOCOL.md, "Snapshots"):
//! after a snapshot hello, the shard, the `MsgSnapshot` and the file's
//! length, then the file in checksummed chunks of up to 1 MiB; the
//! receiver writes it beside the shard's tree, syncs it, hands it to the
//! shard and answers one byte (1: taken, 0: refused). The sender tells its
//! shard how it ended, within bounded time, so raft-rs never waits on a
//! snapshot that went nowhere.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use keel_engine::shard::{decode_message, encode_message, PeerInbox, RaftMessage, RaftMessageType};

use crate::peer::wire::{Hello, SNAPSHOT_CHUNK_BYTES};

/// How long one read or write of a snapshot stream may stall.
const STALL: Duration = Duration::from_secs(10);
/// How long the receiver may take to sync and hand over the file.
const ANSWER_WAIT: Duration = Duration::from_secs(60);
/// Bytes of the `MsgSnapshot` at most (its metadata; the data is empty).
const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Sends `file` with `message` to `address`; answers whether the peer
/// took it.
pub(crate) async fn send(
    address: SocketAddr,
    hello: Hello,
    shard: usize,
    message: RaftMessage,
    file: PathBuf,
) -> bool {
    let to = message.to;
    match send_file(address, hello, shard, &message, &file).await {
        Ok(taken) => taken,
        Err(error) => {
            tracing::warn!(shard, peer = %format!("{to:x}"), %error, "snapshot send failed");
            false
        }
    }
}

async fn send_file(
    address: SocketAddr,
    hello: Hello,
    shard: usize,
    message: &RaftMessage,
    file: &Path,
) -> std::io::Result<bool> {
    // Opened first: the file stays readable while this sends it, even if a
    // newer snapshot replaces it on disk.
    let mut source = std::fs::File::open(file)?;
    let len = source.metadata()?.len();
    let mut stream = TcpStream::connect_timeout(address, Duration::from_secs(1)).await?;
    stream.set_nodelay(true)?;
    stream
        .set_write_timeout(Some(STALL))
        .map_err(std::io::Error::from)?;
    stream.write_all(&hello.encode()).await?;
    let bytes = encode_message(message);
    let mut header = Vec::with_capacity(20);
    header.extend_from_slice(&(shard as u32).to_le_bytes());
    header.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    header.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
    stream.write_all(&header).await?;
    stream.write_all(&bytes).await?;
    stream.write_all(&len.to_le_bytes()).await?;
    let mut chunk = vec![0u8; SNAPSHOT_CHUNK_BYTES];
    let mut left = len;
    while left > 0 {
        let n = (left as usize).min(chunk.len());
        let part = chunk.get_mut(..n).unwrap_or_default();
        source.read_exact(part)?;
        stream.write_all(&(n as u32).to_le_bytes()).await?;
        stream
            .write_all(&crc32fast::hash(part).to_le_bytes())
            .await?;
        stream.write_all(part).await?;
        left -= n as u64;
    }
    stream.flush().await?;
    stream
        .set_read_timeout(Some(ANSWER_WAIT))
        .map_err(std::io::Error::from)?;
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).await?;
    Ok(answer == [1])
}

/// Reads one snapshot after its hello (already checked) and hands it to
/// its shard; answers whether it was taken. Anything wrong removes the
/// partial file and refuses it.
pub(crate) async fn receive(
    stream: &mut TcpStream,
    hello: &Hello,
    inbox: &PeerInbox,
) -> std::io::Result<()> {
    stream
        .set_read_timeout(Some(STALL))
        .map_err(std::io::Error::from)?;
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

fn bad(what: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.into())
}

async fn receive_file(
    stream: &mut TcpStream,
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
        left -= n as u64;
    }
    // Durable before the shard may rename it into place.
    let synced = glommio::executor()
        .spawn_blocking(move || file.sync_all())
        .await;
    synced?;
    Ok((shard, message, path))
}
