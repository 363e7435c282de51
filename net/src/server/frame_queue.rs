//! The frames a connection has queued and not yet handed to its socket,
//! in order. Small frames are copied back to back into shared buffers, so
//! that one write takes many of them; a large frame (a large answer,
//! built in place) is moved in whole and never copied again: copying it
//! would touch as much fresh memory again, which is what a large answer
//! costs most.

use std::collections::VecDeque;

use keel_proto::Frame;

/// Frames up to this size are copied into a shared buffer.
const COPIED_FRAME_BYTES: usize = 64 << 10;

/// A shared buffer takes frames until it holds this much; then the next
/// one starts.
const SHARED_BUFFER_BYTES: usize = 256 << 10;

/// One part of the queue.
enum Chunk {
    /// Small frames, back to back.
    Shared(Vec<u8>),
    /// One large frame.
    Whole(Frame),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Shared(bytes) => bytes,
            Chunk::Whole(frame) => frame,
        }
    }
}

#[derive(Default)]
pub(crate) struct FrameQueue {
    chunks: VecDeque<Chunk>,
    /// Bytes of every chunk.
    bytes: usize,
    /// An emptied shared buffer kept for the next small frames.
    spare: Vec<u8>,
}

impl FrameQueue {
    /// Bytes queued.
    pub(crate) fn len(&self) -> usize {
        self.bytes
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Queues a copy of `frame`, a small one (the shared buffers stay
    /// within [`SHARED_BUFFER_BYTES`] when every copied frame is within
    /// [`COPIED_FRAME_BYTES`]).
    fn push_copy(&mut self, frame: &[u8]) {
        let fits_last = matches!(self.chunks.back(),
            Some(Chunk::Shared(bytes)) if bytes.len() + frame.len() <= SHARED_BUFFER_BYTES);
        if !fits_last {
            let buffer = std::mem::take(&mut self.spare);
            self.chunks.push_back(Chunk::Shared(buffer));
        }
        if let Some(Chunk::Shared(bytes)) = self.chunks.back_mut() {
            bytes.extend_from_slice(frame);
            self.bytes += frame.len();
        }
    }

    /// Queues `frame`: moved when it is large, copied when it is small.
    pub(crate) fn push(&mut self, frame: Frame) {
        if frame.len() <= COPIED_FRAME_BYTES {
            self.push_copy(&frame);
        } else {
            self.bytes += frame.len();
            self.chunks.push_back(Chunk::Whole(frame));
        }
    }

    /// Everything queued, in order, leaving the queue empty.
    pub(crate) fn take(&mut self) -> FrameQueue {
        FrameQueue {
            chunks: std::mem::take(&mut self.chunks),
            bytes: std::mem::take(&mut self.bytes),
            spare: Vec::new(),
        }
    }

    /// Drops everything queued.
    pub(crate) fn clear(&mut self) {
        self.chunks.clear();
        self.bytes = 0;
    }

    /// The queued bytes, chunk by chunk, in order.
    pub(crate) fn slices(&self) -> impl Iterator<Item = &[u8]> {
        self.chunks.iter().map(Chunk::bytes)
    }

    /// Takes back a shared buffer of `written` (emptied) for later small
    /// frames. It is never large: it holds at most [`SHARED_BUFFER_BYTES`].
    pub(crate) fn recycle(&mut self, written: FrameQueue) {
        let shared = written.chunks.into_iter().find_map(|chunk| match chunk {
            Chunk::Shared(bytes) => Some(bytes),
            Chunk::Whole(_) => None,
        });
        if let (Some(mut bytes), 0) = (shared, self.spare.capacity()) {
            bytes.clear();
            self.spare = bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collected(queue: &FrameQueue) -> Vec<u8> {
        queue.slices().flatten().copied().collect()
    }

    #[test]
    fn frames_come_out_in_order_small_ones_sharing_a_buffer() {
        let mut queue = FrameQueue::default();
        queue.push_copy(b"ab");
        queue.push(Frame::from_vec(b"cd".to_vec()));
        let large = vec![7u8; COPIED_FRAME_BYTES + 1];
        queue.push(Frame::from_vec(large.clone()));
        queue.push_copy(b"ef");
        assert_eq!(queue.len(), 6 + large.len());
        assert_eq!(queue.slices().count(), 3, "ab+cd shared, the large one, ef");
        let mut expected = b"abcd".to_vec();
        expected.extend(&large);
        expected.extend(b"ef");
        assert_eq!(collected(&queue), expected);
    }

    #[test]
    fn a_large_frame_is_moved_not_copied() {
        let mut queue = FrameQueue::default();
        let large = vec![1u8; COPIED_FRAME_BYTES * 2];
        let at = large.as_ptr();
        queue.push(Frame::from_vec(large));
        assert_eq!(queue.slices().next().map(<[u8]>::as_ptr), Some(at));
    }

    #[test]
    fn a_shared_buffer_is_bounded_and_its_memory_reused_after_a_write() {
        let mut queue = FrameQueue::default();
        let frame = vec![3u8; COPIED_FRAME_BYTES];
        for _ in 0..(SHARED_BUFFER_BYTES / COPIED_FRAME_BYTES + 1) {
            queue.push_copy(&frame);
        }
        assert_eq!(queue.slices().count(), 2);
        assert!(queue.slices().all(|s| s.len() <= SHARED_BUFFER_BYTES));
        let written = queue.take();
        assert!(queue.is_empty() && queue.slices().next().is_none());
        let first = written.slices().next().map(<[u8]>::as_ptr);
        queue.recycle(written);
        queue.push_copy(b"x");
        assert_eq!(queue.slices().next().map(<[u8]>::as_ptr), first);
        assert_eq!(collected(&queue), b"x");
        queue.clear();
        assert_eq!(queue.len(), 0);
    }
}
