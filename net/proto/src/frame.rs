//! Frames: a `u32` little-endian length, then that many bytes of one
//! flatbuffer. A frame longer than [`MAX_FRAME_LEN`] is refused before any
//! of it is buffered; a flatbuffer is verified (bounds, offsets, UTF-8,
//! nesting) before any field is read.

use crate::generated::keel::proto::{Request, Response};

/// Bytes of the length prefix.
pub const FRAME_HEADER_LEN: usize = 4;

/// The largest frame body: a request of etcd's 1.5 MiB limit plus room for
/// the flatbuffer's own tables.
pub const MAX_FRAME_LEN: usize = 2 << 20;

/// A decoder's buffer grown past this (by a large frame) is let go once it
/// is empty: an idle connection keeps at most this much.
const KEPT_CAPACITY: usize = 32 << 10;

/// The largest response frame body. Answers can be much larger than
/// requests (a range over many keys); the server refuses to build one
/// larger than this and answers `TooLarge` instead, asking for a limit.
pub const MAX_RESPONSE_FRAME_LEN: usize = 64 << 20;

/// How deep tables may nest in a verified message: enough for transactions
/// as deep as the keyspace allows (it refuses more than 128 operations, so
/// more than about 130 levels), with three tables per level.
pub const MAX_NESTING: usize = 3 * 160 + 16;

/// A frame or message that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix announces more than [`MAX_FRAME_LEN`].
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A frame of zero bytes.
    #[error("empty frame")]
    Empty,
    /// The bytes are not a valid message of the expected type.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// An encoded frame (length prefix, then message) in a buffer it owns,
/// from `start` on. A large answer is built in place, behind room for its
/// prefix, so its bytes are written once and never copied afterwards.
#[derive(Debug, Default)]
pub struct Frame {
    buffer: Vec<u8>,
    start: usize,
}

impl Frame {
    /// A frame that is the whole of `bytes`.
    pub fn from_vec(bytes: Vec<u8>) -> Frame {
        Frame {
            buffer: bytes,
            start: 0,
        }
    }

    /// The frame of `buffer` from `start` on (all of it is framed there
    /// already; a `start` past the end leaves it empty).
    pub(crate) fn starting_at(buffer: Vec<u8>, start: usize) -> Frame {
        Frame { buffer, start }
    }

    /// The frame's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.get(self.start..).unwrap_or_default()
    }
}

impl std::ops::Deref for Frame {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// `message` with its length prefix.
///
/// # Errors
/// [`FrameError::TooLarge`] when it does not fit a frame.
pub fn encode_frame(message: &[u8]) -> Result<Vec<u8>, FrameError> {
    encode_frame_within(message, MAX_FRAME_LEN)
}

/// `message` with its length prefix, refused above `max` bytes (a response
/// may be up to [`MAX_RESPONSE_FRAME_LEN`]).
///
/// # Errors
/// [`FrameError::TooLarge`] when it is longer than `max`.
pub fn encode_frame_within(message: &[u8], max: usize) -> Result<Vec<u8>, FrameError> {
    if message.len() > max {
        return Err(FrameError::TooLarge {
            len: message.len(),
            max,
        });
    }
    let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + message.len());
    frame.extend_from_slice(&(message.len() as u32).to_le_bytes());
    frame.extend_from_slice(message);
    Ok(frame)
}

fn options(max_len: usize) -> flatbuffers::VerifierOptions {
    flatbuffers::VerifierOptions {
        max_depth: MAX_NESTING,
        max_tables: max_len / 4,
        max_apparent_size: max_len,
        ignore_missing_null_terminator: false,
    }
}

/// A verified request.
///
/// # Errors
/// [`FrameError::Malformed`] for bytes that do not verify.
pub fn decode_request(bytes: &[u8]) -> Result<Request<'_>, FrameError> {
    crate::generated::keel::proto::root_as_request_with_opts(&options(MAX_FRAME_LEN), bytes)
        .map_err(|e| FrameError::Malformed(e.to_string()))
}

/// A verified response.
///
/// # Errors
/// [`FrameError::Malformed`] for bytes that do not verify.
pub fn decode_response(bytes: &[u8]) -> Result<Response<'_>, FrameError> {
    flatbuffers::root_with_opts::<Response>(&options(MAX_RESPONSE_FRAME_LEN), bytes)
        .map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Splits a byte stream into frames. Feed it what the socket gives; take
/// whole frames out. A length prefix over the limit is refused before its
/// body is buffered, so a peer cannot make it hold more than one frame's
/// limit beyond what a single read returned.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    /// Bytes of `buffer` already handed out; dropped when more bytes come
    /// (`extend`, `read_room`) or room is made, so each byte is moved at
    /// most once however many frames one read holds.
    consumed: usize,
    /// Initialised bytes at the end of `buffer` past the data: room for
    /// reads ([`FrameDecoder::read_room`]), kept from one read to the next
    /// so that it is zeroed once, not per read. Never data.
    unfilled: usize,
    /// Bytes the last `read_room` offered and `filled` has not yet
    /// taken: the most a `filled` may count as data.
    offered: usize,
    max_len: usize,
}

impl Default for FrameDecoder {
    fn default() -> FrameDecoder {
        FrameDecoder::new()
    }
}

impl FrameDecoder {
    /// A decoder of requests: frames up to [`MAX_FRAME_LEN`].
    pub fn new() -> FrameDecoder {
        FrameDecoder::with_limit(MAX_FRAME_LEN)
    }

    /// A decoder of frames up to `max_len` bytes (a client reading
    /// responses uses [`MAX_RESPONSE_FRAME_LEN`]).
    pub fn with_limit(max_len: usize) -> FrameDecoder {
        FrameDecoder {
            buffer: Vec::new(),
            consumed: 0,
            unfilled: 0,
            offered: 0,
            max_len,
        }
    }

    /// Adds bytes read from the stream.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.compact();
        self.buffer.extend_from_slice(bytes);
    }

    /// Room for the stream's next read, of `at_most` bytes, at the end of
    /// the buffer itself (so a read lands where the frame is kept, with no
    /// buffer of its own). Say how much the read filled with
    /// [`FrameDecoder::filled`]; until then none of it is data.
    ///
    /// A read needs initialised bytes: room is zeroed when the buffer
    /// first grows to it, then reused. Only what reads may fill is
    /// touched, so a connection that reads little holds little.
    pub fn read_room(&mut self, at_most: usize) -> &mut [u8] {
        // What was handed out goes; the room behind the data stays.
        let data_end = self.data_end();
        if self.consumed > 0 && self.consumed <= data_end {
            self.buffer.copy_within(self.consumed..data_end, 0);
        }
        let data_end = data_end.saturating_sub(self.consumed);
        self.consumed = 0;
        let room_end = data_end.saturating_add(at_most);
        if self.buffer.len() < room_end {
            self.buffer.resize(room_end, 0);
        }
        self.unfilled = self.buffer.len() - data_end;
        self.offered = at_most;
        self.buffer.get_mut(data_end..room_end).unwrap_or_default()
    }

    /// The last [`FrameDecoder::read_room`] got `read` bytes (no more than
    /// it offered, once).
    pub fn filled(&mut self, read: usize) {
        let read = read.min(self.offered);
        self.offered = 0;
        self.unfilled = self.unfilled.saturating_sub(read);
    }

    /// Bytes still to come of the next frame, once its length has come.
    pub fn rest_of_next(&self) -> Option<usize> {
        self.announced()
            .map(|len| (FRAME_HEADER_LEN + len).saturating_sub(self.buffered()))
    }

    /// Drops what was handed out and the room behind the data.
    fn compact(&mut self) {
        self.buffer.truncate(self.data_end());
        self.unfilled = 0;
        self.offered = 0;
        self.buffer.drain(..self.consumed);
        self.consumed = 0;
    }

    /// Where the data ends and the room for reads begins.
    fn data_end(&self) -> usize {
        self.buffer.len().saturating_sub(self.unfilled)
    }

    /// The bytes buffered and not yet handed out.
    fn unread(&self) -> &[u8] {
        self.buffer
            .get(self.consumed..self.data_end())
            .unwrap_or_default()
    }

    /// Makes room for the whole of the next frame, whose length has come,
    /// at once and at its size (not by doubling as its bytes come). A
    /// server calls it once it has budgeted the frame.
    pub fn make_room_for_next(&mut self) {
        if let Some(len) = self.announced().filter(|len| *len <= self.max_len) {
            self.compact();
            let whole = FRAME_HEADER_LEN + len;
            self.buffer
                .reserve_exact(whole.saturating_sub(self.buffer.len()));
        }
    }

    /// Whether the next frame is all here.
    pub fn next_is_whole(&self) -> bool {
        self.announced()
            .is_some_and(|len| self.buffered() >= FRAME_HEADER_LEN + len)
    }

    /// The body length the next frame's header announces, once the header
    /// has arrived (whether or not the body has).
    pub fn announced(&self) -> Option<usize> {
        self.unread()
            .first_chunk::<FRAME_HEADER_LEN>()
            .map(|header| u32::from_le_bytes(*header) as usize)
    }

    /// Bytes buffered and not yet handed out.
    pub fn buffered(&self) -> usize {
        self.unread().len()
    }

    /// The next whole frame's body, `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] or [`FrameError::Empty`] for a bad length
    /// prefix; the stream cannot be resynchronised after it, so the caller
    /// should close the connection.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let unread = self.unread();
        let Some(header) = unread.first_chunk::<FRAME_HEADER_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(*header) as usize;
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > self.max_len {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_len,
            });
        }
        let Some(body) = unread.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
            return Ok(None);
        };
        let frame = body.to_vec();
        self.consumed += FRAME_HEADER_LEN + len;
        if self.consumed == self.data_end() && self.buffer.capacity() > KEPT_CAPACITY {
            // A large frame's buffer is not kept by an idle connection.
            *self = FrameDecoder::with_limit(self.max_len);
        }
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generated::keel::proto::*;
    use flatbuffers::FlatBufferBuilder;

    fn put_request(id: u64, key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::new();
        let key = fbb.create_vector(key);
        let value = fbb.create_vector(value);
        let put = PutRequest::create(
            &mut fbb,
            &PutRequestArgs {
                key: Some(key),
                value: Some(value),
                prev_kv: true,
                ..Default::default()
            },
        );
        let request = Request::create(
            &mut fbb,
            &RequestArgs {
                id,
                body_type: RequestBody::PutRequest,
                body: Some(put.as_union_value()),
            },
        );
        fbb.finish(request, None);
        fbb.finished_data().to_vec()
    }

    /// Room kept from read to read holds old bytes (moved data, junk): none
    /// of it is ever taken for data, however `filled` is called.
    #[test]
    fn old_bytes_in_the_kept_room_are_never_data() {
        let frame = encode_frame(&put_request(1, b"k", b"v")).unwrap();
        let next = encode_frame(&put_request(2, b"k", b"w")).unwrap();
        let mut decoder = FrameDecoder::new();
        let room = decoder.read_room(256);
        room.fill(0xff);
        room[..frame.len()].copy_from_slice(&frame);
        room[frame.len()..frame.len() + 2].copy_from_slice(&next[..2]);
        decoder.filled(frame.len() + 2);
        assert!(decoder.next_frame().unwrap().is_some());
        // Two bytes of the next header moved to the front; old bytes behind.
        let _ = decoder.read_room(4);
        assert_eq!(decoder.buffered(), 2);
        assert_eq!(decoder.announced(), None);
        // A read claims more than it was offered, or is counted twice.
        let room = decoder.read_room(2);
        room.copy_from_slice(&next[2..4]);
        decoder.filled(100);
        decoder.filled(100);
        assert_eq!(decoder.buffered(), 4);
        assert_eq!(decoder.announced(), Some(next.len() - 4));
    }

    /// Regression: a connection that once sent a frame of up to 256 KiB
    /// kept that buffer, touched, for the rest of its life, outside every
    /// budget.
    #[test]
    fn an_idle_decoder_keeps_a_small_buffer() {
        let big = encode_frame(&put_request(1, b"k", &[7; 200 << 10])).unwrap();
        // Fed as a client does, and as the server reads: its room made
        // for the whole frame, then reads of up to 64 KiB into it.
        let mut fed = FrameDecoder::new();
        fed.extend(&big);
        let mut read = FrameDecoder::new();
        read.read_room(4).copy_from_slice(&big[..4]);
        read.filled(4);
        read.make_room_for_next();
        for part in big[4..].chunks(64 << 10) {
            read.read_room(part.len()).copy_from_slice(part);
            read.filled(part.len());
        }
        for decoder in [&mut fed, &mut read] {
            assert!(decoder.next_frame().unwrap().is_some());
            assert!(
                decoder.buffer.capacity() <= 32 << 10,
                "an idle decoder keeps {} bytes",
                decoder.buffer.capacity()
            );
        }
    }

    /// Reads straight into the decoder's room: only what a read filled is
    /// data; room a read did not fill (or a read that never completed)
    /// is never data, though it is kept for the next read.
    #[test]
    fn reads_into_the_decoders_room_keep_only_what_they_filled() {
        let mut stream = encode_frame(&put_request(7, b"k", b"v")).unwrap();
        stream.extend(encode_frame(&put_request(8, b"k2", &[9; 3000])).unwrap());
        for step in [1, 3, 7, 64, 4096] {
            let mut decoder = FrameDecoder::new();
            let mut frames = Vec::new();
            for part in stream.chunks(step) {
                // A read offered room and cancelled: nothing of it counts.
                decoder.read_room(step * 2).fill(0xff);
                let room = decoder.read_room(step * 2);
                room[..part.len()].copy_from_slice(part);
                decoder.filled(part.len());
                while let Some(frame) = decoder.next_frame().unwrap() {
                    frames.push(frame);
                }
            }
            let bodies: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
            let whole = [
                &stream[4..4 + frames[0].len()],
                &stream[8 + frames[0].len()..],
            ];
            assert_eq!(bodies, whole, "reads of {step} bytes");
            assert_eq!(decoder.buffered(), 0);
        }
        // Room offered and not filled is never read as a header.
        let mut decoder = FrameDecoder::new();
        let _ = decoder.read_room(16);
        assert_eq!(decoder.announced(), None);
        assert_eq!(decoder.buffered(), 0);
        // A large frame's rest is what its room must take, no more.
        decoder.filled(0);
        decoder.extend(&(100_000u32).to_le_bytes());
        decoder.extend(&[1; 1000]);
        assert_eq!(decoder.rest_of_next(), Some(99_000));
    }

    #[test]
    fn a_request_round_trips_through_frames_split_anywhere() {
        let message = put_request(7, b"k", b"v");
        let mut stream = encode_frame(&message).unwrap();
        stream.extend(encode_frame(&put_request(8, b"k2", b"v2")).unwrap());
        for split in 0..stream.len() {
            let mut decoder = FrameDecoder::new();
            let mut frames = Vec::new();
            for part in [&stream[..split], &stream[split..]] {
                decoder.extend(part);
                while let Some(frame) = decoder.next_frame().unwrap() {
                    frames.push(frame);
                }
            }
            assert_eq!(frames.len(), 2, "split at {split}");
            let first = decode_request(&frames[0]).unwrap();
            assert_eq!(first.id(), 7);
            let put = first.body_as_put_request().unwrap();
            assert_eq!(put.key().unwrap().bytes(), b"k");
            assert!(put.prev_kv());
            assert_eq!(decode_request(&frames[1]).unwrap().id(), 8);
            assert_eq!(decoder.buffered(), 0);
        }
    }

    #[test]
    fn bad_lengths_are_refused_before_anything_is_buffered() {
        let mut decoder = FrameDecoder::new();
        decoder.extend(&((MAX_FRAME_LEN + 1) as u32).to_le_bytes());
        assert!(matches!(
            decoder.next_frame(),
            Err(FrameError::TooLarge { .. })
        ));
        let mut decoder = FrameDecoder::new();
        decoder.extend(&0u32.to_le_bytes());
        assert_eq!(decoder.next_frame(), Err(FrameError::Empty));
        assert!(encode_frame(&vec![0; MAX_FRAME_LEN + 1]).is_err());
    }

    #[test]
    fn damaged_messages_fail_verification_not_reads() {
        let message = put_request(1, b"key", b"value");
        for len in 0..message.len() {
            // Any answer but a panic is fine for a prefix; most fail.
            let _ = decode_request(&message[..len]);
        }
        assert!(decode_request(&[]).is_err());
        for at in 0..message.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut damaged = message.clone();
                damaged[at] ^= flip;
                if let Ok(request) = decode_request(&damaged) {
                    // Verified: every field read is in bounds.
                    if let Some(put) = request.body_as_put_request() {
                        let _ = put.key().map(|k| k.bytes().len());
                        let _ = put.value().map(|v| v.bytes().len());
                    }
                }
            }
        }
    }

    #[test]
    fn transactions_nest_as_deep_as_the_keyspace_allows_and_no_deeper() {
        fn nested(levels: usize) -> Vec<u8> {
            let mut fbb = FlatBufferBuilder::new();
            let mut txn = TxnRequest::create(&mut fbb, &TxnRequestArgs::default());
            for _ in 1..levels {
                let op = RequestOp::create(
                    &mut fbb,
                    &RequestOpArgs {
                        op_type: Op::TxnRequest,
                        op: Some(txn.as_union_value()),
                    },
                );
                let success = fbb.create_vector(&[op]);
                txn = TxnRequest::create(
                    &mut fbb,
                    &TxnRequestArgs {
                        success: Some(success),
                        ..Default::default()
                    },
                );
            }
            let request = Request::create(
                &mut fbb,
                &RequestArgs {
                    id: 1,
                    body_type: RequestBody::TxnRequest,
                    body: Some(txn.as_union_value()),
                },
            );
            fbb.finish(request, None);
            fbb.finished_data().to_vec()
        }
        assert!(decode_request(&nested(150)).is_ok());
        assert!(decode_request(&nested(400)).is_err());
    }
}
