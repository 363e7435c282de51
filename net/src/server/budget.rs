//! A budget of bytes that futures reserve before they spend memory, and
//! give back when they drop what they reserved. Three are used:
//!
//! - a core's request bytes (docs/server.md, "Inbound memory"): a
//!   connection reserves a frame's announced length before it reads the
//!   frame's body, and holds it until the request is answered. So the
//!   partial and decoded requests of every connection of a core hold at
//!   most the budget (and a read's worth per connection), whatever clients
//!   announce; a client that announces a frame and sends it slowly, or
//!   never, is cut off at the frame deadline;
//! - a core's large answers, and each connection's answers ("Outbound
//!   memory", `answers.rs`): a request reserves room for its answer before
//!   it runs, and the answer holds it until it is written to the socket.
//!
//! Waiters are served first come, first served, and a release wakes only
//! the first waiter, once its bytes are free: a thousand connections
//! waiting cost nothing while other requests come and go.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// One core's request bytes: what is free, and who waits for it.
pub(crate) struct ByteBudget {
    total: usize,
    /// Below zero while frames taken whole exceed the budget.
    free: Cell<isize>,
    /// Waiting reservations, in the order they came.
    queue: RefCell<VecDeque<Ticket>>,
    next_ticket: Cell<u64>,
}

struct Ticket {
    id: u64,
    bytes: usize,
    waker: Waker,
}

/// Bytes of a core's budget held for one request; given back when dropped.
pub(crate) struct Reservation {
    budget: Rc<ByteBudget>,
    bytes: usize,
}

impl ByteBudget {
    pub(crate) fn new(total: usize) -> Rc<ByteBudget> {
        Rc::new(ByteBudget {
            total,
            free: Cell::new(signed(total)),
            queue: RefCell::new(VecDeque::new()),
            next_ticket: Cell::new(0),
        })
    }

    /// The budget's size.
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    /// Takes `bytes` now, even past the budget: for a frame already read
    /// whole, whose memory is spent (at most a read's worth per
    /// connection). Counting it makes frames still to be read wait.
    pub(crate) fn take(self: &Rc<Self>, bytes: usize) -> Reservation {
        let bytes = bytes.min(self.total);
        self.free.set(self.free.get() - signed(bytes));
        Reservation {
            budget: self.clone(),
            bytes,
        }
    }

    /// Waits, behind those who came first, until `bytes` are free, and
    /// takes them. A request larger than the whole budget waits for all
    /// of it.
    pub(crate) fn reserve(self: &Rc<Self>, bytes: usize) -> Reserve {
        Reserve {
            budget: self.clone(),
            bytes: bytes.min(self.total),
            ticket: None,
        }
    }

    /// Wakes the first waiter if its bytes are free.
    fn wake_first(&self) {
        if let Some(first) = self.queue.borrow().front() {
            if self.free.get() >= signed(first.bytes) {
                first.waker.wake_by_ref();
            }
        }
    }
}

/// A reservation being waited for; dropped before it is granted, it
/// leaves the queue.
pub(crate) struct Reserve {
    budget: Rc<ByteBudget>,
    bytes: usize,
    ticket: Option<u64>,
}

impl Future for Reserve {
    type Output = Reservation;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reservation> {
        let budget = self.budget.clone();
        let bytes = self.bytes;
        let mut queue = budget.queue.borrow_mut();
        let first = match self.ticket {
            None => queue.is_empty(),
            Some(id) => queue.front().is_some_and(|t| t.id == id),
        };
        if first && budget.free.get() >= signed(bytes) {
            if self.ticket.take().is_some() {
                queue.pop_front();
            }
            drop(queue);
            budget.free.set(budget.free.get() - signed(bytes));
            // The next in line may fit too.
            budget.wake_first();
            return Poll::Ready(Reservation {
                budget: budget.clone(),
                bytes,
            });
        }
        match self.ticket {
            None => {
                let id = budget.next_ticket.get();
                budget.next_ticket.set(id + 1);
                queue.push_back(Ticket {
                    id,
                    bytes,
                    waker: cx.waker().clone(),
                });
                self.ticket = Some(id);
            }
            Some(id) => {
                if let Some(ticket) = queue.iter_mut().find(|t| t.id == id) {
                    if !ticket.waker.will_wake(cx.waker()) {
                        ticket.waker = cx.waker().clone();
                    }
                }
            }
        }
        Poll::Pending
    }
}

impl Drop for Reserve {
    fn drop(&mut self) {
        let Some(id) = self.ticket else {
            return;
        };
        let was_first = {
            let mut queue = self.budget.queue.borrow_mut();
            let was_first = queue.front().is_some_and(|t| t.id == id);
            queue.retain(|t| t.id != id);
            was_first
        };
        if was_first {
            self.budget.wake_first();
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let budget = &self.budget;
        budget.free.set(budget.free.get() + signed(self.bytes));
        budget.wake_first();
    }
}

/// Budget sizes fit an `isize` (a `usize` past it counts as the most).
fn signed(bytes: usize) -> isize {
    isize::try_from(bytes).unwrap_or(isize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{block_on, poll_once};

    #[test]
    fn waiters_are_served_in_order_as_bytes_come_back() {
        let budget = ByteBudget::new(100);
        let held = block_on(budget.reserve(80));
        let mut big = Box::pin(budget.reserve(50));
        let mut small = Box::pin(budget.reserve(10));
        assert!(block_on(poll_once(&mut big)).is_none());
        // First come, first served: the small one waits behind the big one.
        assert!(block_on(poll_once(&mut small)).is_none());
        drop(held);
        let big = block_on(poll_once(&mut big)).expect("the first in line");
        let small = block_on(poll_once(&mut small)).expect("the next fits too");
        drop((big, small));
        assert_eq!(budget.free.get(), 100);
    }

    #[test]
    fn a_release_wakes_no_one_whose_bytes_are_not_free() {
        let budget = ByteBudget::new(100);
        let held = block_on(budget.reserve(90));
        let mut waiting = Box::pin(budget.reserve(50));
        assert!(block_on(poll_once(&mut waiting)).is_none());
        let small = budget.take(5);
        drop(small);
        assert!(block_on(poll_once(&mut waiting)).is_none());
        drop(held);
        assert!(block_on(poll_once(&mut waiting)).is_some());
    }

    #[test]
    fn a_waiter_that_gives_up_leaves_the_queue() {
        let budget = ByteBudget::new(100);
        let held = block_on(budget.reserve(100));
        let mut first = Box::pin(budget.reserve(60));
        let mut second = Box::pin(budget.reserve(30));
        assert!(block_on(poll_once(&mut first)).is_none());
        assert!(block_on(poll_once(&mut second)).is_none());
        drop(first);
        drop(held);
        assert!(block_on(poll_once(&mut second)).is_some());
    }

    #[test]
    fn a_whole_frame_is_counted_without_waiting() {
        let budget = ByteBudget::new(100);
        let held = block_on(budget.reserve(100));
        let taken = budget.take(40);
        assert_eq!(budget.free.get(), -40);
        drop(held);
        assert_eq!(budget.free.get(), 60);
        drop(taken);
        assert_eq!(budget.free.get(), 100);
    }
}
