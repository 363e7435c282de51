use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Wake;

use super::*;

/// A stream that records each write it takes, takes at most `per_write`
/// bytes a call, and refuses (`Pending`) while `blocked`.
#[derive(Default)]
struct Recorder {
    writes: Vec<Vec<u8>>,
    per_write: usize,
    blocked: bool,
    flushes: usize,
    shut: bool,
}

impl Recorder {
    fn taking(per_write: usize) -> Recorder {
        Recorder {
            per_write,
            ..Recorder::default()
        }
    }

    fn all(&self) -> Vec<u8> {
        self.writes.concat()
    }
}

impl AsyncWrite for Recorder {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.blocked {
            return Poll::Pending;
        }
        let n = buf.len().min(self.per_write);
        self.get_mut().writes.push(buf[..n].to_vec());
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().flushes += 1;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().shut = true;
        Poll::Ready(Ok(()))
    }
}

#[derive(Default)]
struct Wakes(AtomicUsize);

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

struct Harness {
    wakes: Arc<Wakes>,
    waker: std::task::Waker,
}

impl Harness {
    fn new() -> Harness {
        let wakes = Arc::new(Wakes::default());
        Harness {
            waker: wakes.clone().into(),
            wakes,
        }
    }

    fn woken(&self) -> usize {
        self.wakes.0.load(Ordering::SeqCst)
    }

    fn write(&self, s: &mut BatchedWrites<Recorder>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(s).poll_write(&mut Context::from_waker(&self.waker), bytes)
    }

    fn flush(&self, s: &mut BatchedWrites<Recorder>) -> Poll<io::Result<()>> {
        Pin::new(s).poll_flush(&mut Context::from_waker(&self.waker))
    }
}

#[test]
fn writes_before_a_flush_leave_in_one_write_after_one_yield() {
    let h = Harness::new();
    let mut s = BatchedWrites::new(Recorder::taking(usize::MAX));
    assert!(matches!(h.write(&mut s, b"first "), Poll::Ready(Ok(6))));
    assert!(matches!(h.write(&mut s, b"second"), Poll::Ready(Ok(6))));
    // The first flush yields: nothing written yet, the task woken.
    assert!(h.flush(&mut s).is_pending());
    assert_eq!(h.woken(), 1);
    assert!(s.get_ref().writes.is_empty());
    // A write made while the task was behind the others joins the batch.
    assert!(matches!(h.write(&mut s, b" third"), Poll::Ready(Ok(6))));
    assert!(matches!(h.flush(&mut s), Poll::Ready(Ok(()))));
    assert_eq!(s.get_ref().writes, vec![b"first second third".to_vec()]);
    assert_eq!(s.get_ref().flushes, 1);
    // The next batch yields again.
    assert!(matches!(h.write(&mut s, b"x"), Poll::Ready(Ok(1))));
    assert!(h.flush(&mut s).is_pending());
    assert_eq!(h.woken(), 2);
}

#[test]
fn a_flush_with_nothing_buffered_neither_yields_nor_writes() {
    let h = Harness::new();
    let mut s = BatchedWrites::new(Recorder::taking(usize::MAX));
    assert!(matches!(h.flush(&mut s), Poll::Ready(Ok(()))));
    assert_eq!(h.woken(), 0);
    assert!(s.get_ref().writes.is_empty());
    assert_eq!(s.get_ref().flushes, 1);
}

#[test]
fn bytes_arrive_whole_and_in_order_through_short_inner_writes() {
    let h = Harness::new();
    let mut s = BatchedWrites::with_limit(Recorder::taking(3), 8);
    let message: Vec<u8> = (0..100u8).collect();
    let mut sent = 0;
    while sent < message.len() {
        match h.write(&mut s, &message[sent..]) {
            Poll::Ready(Ok(n)) => sent += n,
            other => panic!("a write was refused: {other:?}"),
        }
        // Never more than the limit held.
        assert!(s.buffered() <= 8);
    }
    while h.flush(&mut s).is_pending() {}
    assert_eq!(s.get_ref().all(), message);
    assert!(s.get_ref().writes.iter().all(|w| w.len() <= 3));
}

#[test]
fn a_full_buffer_waits_for_the_inner_stream() {
    let h = Harness::new();
    let mut s = BatchedWrites::with_limit(Recorder::taking(usize::MAX), 4);
    assert!(matches!(h.write(&mut s, b"abcdef"), Poll::Ready(Ok(4))));
    s.inner.blocked = true;
    assert!(h.write(&mut s, b"ef").is_pending());
    assert_eq!(s.buffered(), 4);
    s.inner.blocked = false;
    assert!(matches!(h.write(&mut s, b"ef"), Poll::Ready(Ok(2))));
    assert_eq!(s.get_ref().writes, vec![b"abcd".to_vec()]);
    while h.flush(&mut s).is_pending() {}
    assert_eq!(s.get_ref().all(), b"abcdef");
}

#[test]
fn vectored_writes_take_their_slices_in_order_up_to_the_limit() {
    let h = Harness::new();
    let mut s = BatchedWrites::with_limit(Recorder::taking(usize::MAX), 5);
    let parts = [io::IoSlice::new(b"abc"), io::IoSlice::new(b"defg")];
    let taken = Pin::new(&mut s).poll_write_vectored(&mut Context::from_waker(&h.waker), &parts);
    assert!(matches!(taken, Poll::Ready(Ok(5))));
    while h.flush(&mut s).is_pending() {}
    assert_eq!(s.get_ref().all(), b"abcde");
}

#[test]
fn shutdown_writes_what_is_buffered_first() {
    let h = Harness::new();
    let mut s = BatchedWrites::new(Recorder::taking(usize::MAX));
    assert!(matches!(
        h.write(&mut s, b"last words"),
        Poll::Ready(Ok(10))
    ));
    let shut = Pin::new(&mut s).poll_shutdown(&mut Context::from_waker(&h.waker));
    assert!(matches!(shut, Poll::Ready(Ok(()))));
    assert_eq!(s.get_ref().all(), b"last words");
    assert!(s.get_ref().shut);
}

#[tokio::test]
async fn a_real_stream_carries_every_byte_in_order_through_flushes_and_yields() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (near, mut far) = tokio::io::duplex(1024);
    let mut near = BatchedWrites::with_limit(near, 100);
    let message: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let expected = message.clone();
    let reader = tokio::spawn(async move {
        let mut got = vec![0; expected.len()];
        far.read_exact(&mut got).await.map(|_| got == expected)
    });
    for chunk in message.chunks(37) {
        near.write_all(chunk).await.expect("write");
        near.flush().await.expect("flush");
    }
    assert!(reader.await.expect("reader").expect("read"));
}

#[test]
fn the_buffer_never_grows_past_the_limit_and_is_freed_once_written() {
    let h = Harness::new();
    let limit = 20_000;
    let mut s = BatchedWrites::with_limit(Recorder::taking(usize::MAX), limit);
    for _ in 0..30 {
        assert!(matches!(h.write(&mut s, &[7; 1000]), Poll::Ready(Ok(_))));
        assert!(s.pending.capacity() <= limit, "{}", s.pending.capacity());
    }
    while h.flush(&mut s).is_pending() {}
    assert!(s.pending.capacity() <= KEPT_WHEN_IDLE);
    assert_eq!(s.get_ref().all().len(), 30_000);
}

#[test]
fn shutdown_waits_while_the_inner_stream_cannot_take_the_rest() {
    let h = Harness::new();
    let mut s = BatchedWrites::new(Recorder::taking(usize::MAX));
    assert!(matches!(h.write(&mut s, b"rest"), Poll::Ready(Ok(4))));
    s.inner.blocked = true;
    let cx = &mut Context::from_waker(&h.waker);
    assert!(Pin::new(&mut s).poll_shutdown(cx).is_pending());
    assert!(!s.get_ref().shut, "shut before the rest was written");
    s.inner.blocked = false;
    assert!(matches!(
        Pin::new(&mut s).poll_shutdown(cx),
        Poll::Ready(Ok(()))
    ));
    assert_eq!(s.get_ref().all(), b"rest");
    assert!(s.get_ref().shut);
}

#[test]
fn a_flush_after_its_yield_waits_while_the_inner_stream_cannot_take_more() {
    let h = Harness::new();
    let mut s = BatchedWrites::new(Recorder::taking(usize::MAX));
    assert!(matches!(h.write(&mut s, b"abc"), Poll::Ready(Ok(3))));
    assert!(h.flush(&mut s).is_pending()); // the yield
    s.inner.blocked = true;
    assert!(h.flush(&mut s).is_pending()); // the inner stream is full
    assert_eq!(h.woken(), 1, "only the yield wakes the task itself");
    s.inner.blocked = false;
    assert!(matches!(h.flush(&mut s), Poll::Ready(Ok(()))));
    assert_eq!(s.get_ref().all(), b"abc");
}
