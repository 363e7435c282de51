//! The bytes of the peer protocol (net/PROTOCOL.md, "Peer protocol"): a
//! connection's hello, then frames, each checksummed, that carry the
//! sender's clock and Raft messages and calls between members.
//! Pure functions over byte slices, so that the fuzz target and the tests
//! reach every check without sockets.

use keel_engine::shard::{decode_message, CallPart, RaftMessage};

/// The first bytes of a peer connection that carries Raft messages.
pub const MAGIC: &[u8; 8] = b"KEELPEER";
/// The first bytes of a peer connection that carries one snapshot.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"KEELSNAP";
/// Bytes of one snapshot chunk at most.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// The peer protocol's version: 2 since frames carry the sender's clock
/// and calls between members.
pub const VERSION: u16 = 2;
/// Bytes of a hello.
pub const HELLO_BYTES: usize = 44;
/// Bytes of a frame's header: body length and CRC-32.
pub const HEADER_BYTES: usize = 8;
/// The largest frame body taken: a Raft message carries at least one
/// entry, and an entry may be as large as a WAL record (about 32 MiB with
/// 64 MiB segments).
pub const MAX_FRAME_BYTES: usize = 64 << 20;

/// Why peer bytes were refused (the connection is then closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not a keel peer.
    #[error("not a keel peer connection")]
    BadMagic,
    /// Another protocol version.
    #[error("peer protocol version {0}, this is version {VERSION}")]
    Version(u16),
    /// The bytes do not match their checksum.
    #[error("checksum mismatch")]
    Checksum,
    /// A frame longer than [`MAX_FRAME_BYTES`].
    #[error("a frame of {0} bytes (at most {MAX_FRAME_BYTES})")]
    TooLarge(usize),
    /// A frame whose messages do not fill it exactly.
    #[error("a malformed frame: {0}")]
    Malformed(String),
}

/// Who opens a connection, to whom, and for what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Whether the connection carries one snapshot rather than messages.
    pub snapshot: bool,
    /// The sender's core; it talks to the same core of the receiver.
    pub core: u16,
    /// The sender's shard count: every member must have the same.
    pub shards: u16,
    /// The sender's core count: every member must have the same, so that
    /// core `c` of one serves the same shards as core `c` of another.
    pub cores: u16,
    /// The cluster id.
    pub cluster: u64,
    /// The sending member.
    pub from: u64,
    /// The member it means to reach.
    pub to: u64,
}

impl Hello {
    /// The hello's bytes.
    pub fn encode(&self) -> [u8; HELLO_BYTES] {
        let mut bytes = [0u8; HELLO_BYTES];
        let mut at = 0;
        let magic = if self.snapshot { SNAPSHOT_MAGIC } else { MAGIC };
        for part in [
            &magic[..],
            &VERSION.to_le_bytes(),
            &self.core.to_le_bytes(),
            &self.shards.to_le_bytes(),
            &self.cores.to_le_bytes(),
            &self.cluster.to_le_bytes(),
            &self.from.to_le_bytes(),
            &self.to.to_le_bytes(),
        ] {
            if let Some(slot) = bytes.get_mut(at..at + part.len()) {
                slot.copy_from_slice(part);
            }
            at += part.len();
        }
        let crc = crc32fast::hash(bytes.get(..at).unwrap_or_default());
        if let Some(slot) = bytes.get_mut(at..) {
            slot.copy_from_slice(&crc.to_le_bytes());
        }
        bytes
    }

    /// Reads a hello.
    ///
    /// # Errors
    /// [`WireError`] for another protocol, version or damaged bytes.
    pub fn decode(bytes: &[u8; HELLO_BYTES]) -> Result<Hello, WireError> {
        let (body, crc) = bytes.split_at(HELLO_BYTES - 4);
        let mut reader = Reader(body);
        let snapshot = match reader.take(8)? {
            magic if magic == MAGIC => false,
            magic if magic == SNAPSHOT_MAGIC => true,
            _ => return Err(WireError::BadMagic),
        };
        let version = reader.u16()?;
        if version != VERSION {
            return Err(WireError::Version(version));
        }
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err(WireError::Checksum);
        }
        Ok(Hello {
            snapshot,
            core: reader.u16()?,
            shards: reader.u16()?,
            cores: reader.u16()?,
            cluster: reader.u64()?,
            from: reader.u64()?,
            to: reader.u64()?,
        })
    }
}

/// Bytes of a frame body's clock, before its items.
pub const CLOCK_BYTES: usize = 16;
/// Bytes before an item's own: kind, shard and length.
pub const ITEM_HEADER_BYTES: usize = 9;

/// What a frame says of its sender's clocks when it was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerClock {
    /// The sender's wall clock, milliseconds since the unix epoch.
    pub wall_millis: u64,
    /// The highest revision the sender's node had applied or heard of.
    pub revision: u64,
}

/// What one item of a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    /// A Raft message.
    Raft,
    /// A part of a call between members.
    Call(CallPart),
}

impl ItemKind {
    fn tag(self) -> u8 {
        match self {
            ItemKind::Raft => 1,
            ItemKind::Call(CallPart::Request) => 2,
            ItemKind::Call(CallPart::Answer) => 3,
        }
    }
}

/// One item of a frame, decoded.
#[derive(Debug)]
pub enum Item {
    /// A Raft message of `shard`.
    Raft(u32, RaftMessage),
    /// A part of call `id` about `shard`, its bytes as the engine wrote them.
    Call {
        /// The shard.
        shard: u32,
        /// Request or answer.
        part: CallPart,
        /// The call's id.
        id: u64,
        /// The engine's bytes.
        bytes: Vec<u8>,
    },
}

/// A frame, decoded.
#[derive(Debug)]
pub struct Frame {
    /// The sender's clocks.
    pub clock: PeerClock,
    /// Its items, in the order sent.
    pub items: Vec<Item>,
}

/// Starts a frame body with the sender's clocks.
pub fn start_frame(clock: PeerClock) -> Vec<u8> {
    let mut body = Vec::with_capacity(256);
    body.extend_from_slice(&clock.wall_millis.to_le_bytes());
    body.extend_from_slice(&clock.revision.to_le_bytes());
    body
}

/// Appends one item, already encoded, to a frame body being built. A
/// call's `bytes` start with its id (see [`call_bytes`]).
pub fn push_item(body: &mut Vec<u8>, kind: ItemKind, shard: u32, bytes: &[u8]) {
    body.push(kind.tag());
    body.extend_from_slice(&shard.to_le_bytes());
    body.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    body.extend_from_slice(bytes);
}

/// Appends one Raft message, already encoded, to a frame body being built.
pub fn push_message(body: &mut Vec<u8>, shard: u32, message: &[u8]) {
    push_item(body, ItemKind::Raft, shard, message);
}

/// A call item's bytes: its id, then what the engine wrote.
pub fn call_bytes(id: u64, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + bytes.len());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(bytes);
    out
}

/// The header that goes before `body` on the wire.
pub fn frame_header(body: &[u8]) -> [u8; HEADER_BYTES] {
    let mut header = [0u8; HEADER_BYTES];
    let (len, crc) = header.split_at_mut(4);
    len.copy_from_slice(&(body.len() as u32).to_le_bytes());
    crc.copy_from_slice(&crc32fast::hash(body).to_le_bytes());
    header
}

/// A frame's body length and checksum, from its header.
///
/// # Errors
/// [`WireError::TooLarge`] past [`MAX_FRAME_BYTES`].
pub fn read_header(header: &[u8; HEADER_BYTES]) -> Result<(usize, u32), WireError> {
    let mut reader = Reader(header);
    let len = reader.u32()? as usize;
    let crc = reader.u32()?;
    if len > MAX_FRAME_BYTES {
        return Err(WireError::TooLarge(len));
    }
    Ok((len, crc))
}

/// The clock and items of a frame body whose checksum was `crc`. Nothing
/// is returned unless the whole body checks out.
///
/// # Errors
/// [`WireError`] for a checksum mismatch, a body its items do not fill
/// exactly, an unknown item kind, or bytes that are not a Raft message.
pub fn decode_frame(body: &[u8], crc: u32) -> Result<Frame, WireError> {
    if crc32fast::hash(body) != crc {
        return Err(WireError::Checksum);
    }
    let mut reader = Reader(body);
    let clock = PeerClock {
        wall_millis: reader.u64()?,
        revision: reader.u64()?,
    };
    let mut items = Vec::new();
    while !reader.0.is_empty() {
        let tag = reader.take(1)?.first().copied().unwrap_or(0);
        let shard = reader.u32()?;
        let len = reader.u32()? as usize;
        let mut bytes = Reader(reader.take(len)?);
        let part = match tag {
            1 => {
                let message =
                    decode_message(bytes.0).map_err(|e| WireError::Malformed(e.to_string()))?;
                items.push(Item::Raft(shard, message));
                continue;
            }
            2 => CallPart::Request,
            3 => CallPart::Answer,
            tag => return Err(WireError::Malformed(format!("unknown item kind {tag}"))),
        };
        let id = bytes.u64()?;
        items.push(Item::Call {
            shard,
            part,
            id,
            bytes: bytes.0.to_vec(),
        });
    }
    Ok(Frame { clock, items })
}

pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Malformed(format!(
                "{n} bytes wanted, {} left",
                self.0.len()
            )));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?.first().copied().unwrap_or(0))
    }

    /// A `u8` length and that many bytes of UTF-8.
    pub(crate) fn text(&mut self) -> Result<String, WireError> {
        let len = usize::from(self.u8()?);
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| WireError::Malformed("a name is not UTF-8".to_string()))
    }

    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        let bytes = self.take(2)?;
        Ok(u16::from_le_bytes([
            bytes.first().copied().unwrap_or(0),
            bytes.get(1).copied().unwrap_or(0),
        ]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        let bytes = self.take(4)?;
        let mut word = [0u8; 4];
        word.copy_from_slice(bytes);
        Ok(u32::from_le_bytes(word))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, WireError> {
        let bytes = self.take(8)?;
        let mut word = [0u8; 8];
        word.copy_from_slice(bytes);
        Ok(u64::from_le_bytes(word))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_engine::shard::{encode_message, RaftMessageType};

    fn message(to: u64, term: u64) -> RaftMessage {
        let mut m = RaftMessage::default();
        m.set_msg_type(RaftMessageType::MsgHeartbeat);
        m.to = to;
        m.from = 9;
        m.term = term;
        m.commit = 77;
        m
    }

    #[test]
    fn a_hello_round_trips_and_refuses_damage() {
        let hello = Hello {
            snapshot: false,
            core: 3,
            shards: 8,
            cores: 4,
            cluster: 0xfeed,
            from: 1,
            to: 2,
        };
        let bytes = hello.encode();
        assert_eq!(Hello::decode(&bytes), Ok(hello));
        let snapshot = Hello {
            snapshot: true,
            ..hello
        };
        assert_eq!(Hello::decode(&snapshot.encode()), Ok(snapshot));
        for i in 0..HELLO_BYTES {
            let mut damaged = bytes;
            damaged[i] ^= 0x10;
            assert!(Hello::decode(&damaged).is_err(), "byte {i}");
        }
    }

    #[test]
    fn a_frame_round_trips_and_any_damage_is_refused_whole() {
        let clock = PeerClock {
            wall_millis: 1_800_000_000_000,
            revision: 1 << 45,
        };
        let mut body = start_frame(clock);
        push_message(&mut body, 0, &encode_message(&message(2, 5)));
        push_item(
            &mut body,
            ItemKind::Call(CallPart::Request),
            3,
            &call_bytes(99, b"write"),
        );
        push_message(&mut body, 7, &encode_message(&message(2, 6)));
        push_item(
            &mut body,
            ItemKind::Call(CallPart::Answer),
            4,
            &call_bytes(98, b""),
        );
        let header = frame_header(&body);
        let (len, crc) = read_header(&header).unwrap();
        assert_eq!(len, body.len());
        let frame = decode_frame(&body, crc).unwrap();
        assert_eq!(frame.clock, clock);
        let items = frame.items;
        assert_eq!(items.len(), 4);
        assert!(
            matches!(&items[1], Item::Call { shard: 3, part: CallPart::Request, id: 99, bytes } if bytes == b"write")
        );
        assert!(matches!(&items[2], Item::Raft(7, m) if m.term == 6));
        assert!(
            matches!(&items[3], Item::Call { shard: 4, part: CallPart::Answer, id: 98, bytes } if bytes.is_empty())
        );
        for i in 0..body.len() {
            let mut damaged = body.clone();
            damaged[i] ^= 1;
            assert!(matches!(
                decode_frame(&damaged, crc),
                Err(WireError::Checksum)
            ));
        }
        // Bytes that checksum but do not parse are refused too.
        let short = &body[..body.len() - 1];
        assert!(matches!(
            decode_frame(short, crc32fast::hash(short)),
            Err(WireError::Malformed(_))
        ));
        // An unknown item kind, or a call too short for its id, too.
        let mut unknown = start_frame(clock);
        unknown.extend_from_slice(&[9, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(
            decode_frame(&unknown, crc32fast::hash(&unknown)),
            Err(WireError::Malformed(_))
        ));
        let mut short_call = start_frame(clock);
        push_item(
            &mut short_call,
            ItemKind::Call(CallPart::Answer),
            0,
            &[1, 2, 3],
        );
        assert!(matches!(
            decode_frame(&short_call, crc32fast::hash(&short_call)),
            Err(WireError::Malformed(_))
        ));
        // A body shorter than the clock.
        assert!(decode_frame(&[0; 8], crc32fast::hash(&[0; 8])).is_err());
        let mut huge = [0u8; HEADER_BYTES];
        huge[..4].copy_from_slice(&(MAX_FRAME_BYTES as u32 + 1).to_le_bytes());
        assert!(matches!(read_header(&huge), Err(WireError::TooLarge(_))));
    }
}
