//! Room for answers, reserved before a request runs (docs/server.md,
//! "Outbound memory"). An answer's bytes are held from the moment it is
//! gathered until the socket has taken them, so the room is reserved first
//! and goes with the answer's frame into the outbound queue; the writer
//! gives it back once the frame is written. Hence, whatever a client
//! pipelines and however slowly it reads:
//!
//! - small answers (at most [`SMALL_ANSWER_BYTES`]) of one connection hold
//!   at most [`SMALL_ANSWERS_PER_CONNECTION`] of them;
//! - a connection has one large answer at a time, of at most
//!   `outbound_bytes` (the largest answer), and
//! - the large answers of all of a core's connections hold at most
//!   `answer_bytes`. Small ones never wait for that budget, so puts and
//!   point reads are not held up behind other clients' large ranges.
//!
//! A range does not know its size before it runs: it runs first with a
//! small answer's room and the engine stops it as soon as its answer
//! passes that (`answer_limit`); it then runs again with a large one.

use std::rc::Rc;

use keel_proto::{Request, RequestOp, TxnRequest};

use crate::server::budget::{ByteBudget, Reservation};

/// The most bytes a small answer may take.
pub(crate) const SMALL_ANSWER_BYTES: usize = 16 << 10;

/// Small answers one connection may hold at once.
pub(crate) const SMALL_ANSWERS_PER_CONNECTION: usize = 64;

/// A bound on a response frame's bytes besides its key-value pairs (the
/// header, counts, an error's message), so that an answer limit of
/// `room - FRAME_OVERHEAD` for the pairs keeps the frame within the room.
const FRAME_OVERHEAD: usize = 4 << 10;

/// What a request's answer may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AnswerSize {
    /// At most [`SMALL_ANSWER_BYTES`], or a range tried with that first.
    Small,
    /// Up to the connection's largest answer.
    Large,
}

impl AnswerSize {
    /// The room `request` asks for before it runs. Writes cannot be run
    /// twice, so one that may answer with values asks for a large room;
    /// so do the answers that grow with the keyspace or the node (lease
    /// lists, a lease's keys, the status of every shard).
    pub(crate) fn of(request: &Request) -> AnswerSize {
        match request {
            Request::Put(put) if put.prev_kv => AnswerSize::Large,
            Request::DeleteRange(delete) if delete.prev_kv => AnswerSize::Large,
            Request::Txn(txn) if may_answer_values(txn) => AnswerSize::Large,
            Request::LeaseLeases | Request::Status => AnswerSize::Large,
            Request::LeaseTimeToLive { keys: true, .. } => AnswerSize::Large,
            _ => AnswerSize::Small,
        }
    }
}

/// Whether a transaction's answer may carry values: a read, or a write
/// with `prev_kv`, in either branch, at any depth. Others (compare and
/// swap, a lock's or an election's writes) answer in a few hundred bytes.
fn may_answer_values(txn: &TxnRequest) -> bool {
    txn.success.iter().chain(&txn.failure).any(|op| match op {
        RequestOp::Range(_) => true,
        RequestOp::Put(put) => put.prev_kv,
        RequestOp::DeleteRange(delete) => delete.prev_kv,
        RequestOp::Txn(nested) => may_answer_values(nested),
    })
}

/// One connection's room for answers.
pub(crate) struct ConnectionAnswers {
    small: Rc<ByteBudget>,
    /// One large answer at a time: each reserves all of it.
    large: Rc<ByteBudget>,
    /// The core's budget of large answers.
    core: Rc<ByteBudget>,
    largest: usize,
}

impl ConnectionAnswers {
    /// The room of a connection whose largest answer is `largest` bytes,
    /// on a core whose large answers share `core` (no answer is larger
    /// than the core's whole budget).
    pub(crate) fn new(largest: usize, core: Rc<ByteBudget>) -> ConnectionAnswers {
        let largest = largest.min(core.total()).max(SMALL_ANSWER_BYTES);
        ConnectionAnswers {
            small: ByteBudget::new(SMALL_ANSWER_BYTES * SMALL_ANSWERS_PER_CONNECTION),
            large: ByteBudget::new(largest),
            core,
            largest,
        }
    }

    /// Waits for room for an answer of `size`. A large one waits first for
    /// the connection's turn, then for the core's budget (in that order
    /// everywhere, so no two waits cross).
    pub(crate) async fn reserve(&self, size: AnswerSize) -> AnswerRoom {
        match size {
            AnswerSize::Small => AnswerRoom {
                size,
                bytes: SMALL_ANSWER_BYTES,
                _connection: self.small.reserve(SMALL_ANSWER_BYTES).await,
                _core: None,
            },
            AnswerSize::Large => {
                let connection = self.large.reserve(self.largest).await;
                let core = self.core.reserve(self.largest).await;
                AnswerRoom {
                    size,
                    bytes: self.largest,
                    _connection: connection,
                    _core: Some(core),
                }
            }
        }
    }
}

/// Room held for one answer; given back when dropped (by the writer, once
/// the answer's frame is written).
pub(crate) struct AnswerRoom {
    /// Which room it is (a large one may be as small as a small one when
    /// `outbound_bytes` is that small).
    size: AnswerSize,
    bytes: usize,
    /// Held until the room is dropped: the connection's part, and for a
    /// large answer the core's.
    _connection: Reservation,
    _core: Option<Reservation>,
}

impl AnswerRoom {
    /// The most bytes the answer's frame may take.
    pub(crate) fn frame_limit(&self) -> usize {
        self.bytes
    }

    /// The most bytes its key-value pairs may take (an engine read's
    /// `answer_limit`).
    pub(crate) fn answer_limit(&self) -> usize {
        self.bytes.saturating_sub(FRAME_OVERHEAD).max(1)
    }

    /// Whether this is a small answer's room.
    pub(crate) fn is_small(&self) -> bool {
        self.size == AnswerSize::Small
    }

    /// How many budgets it holds a part of (tests).
    #[cfg(test)]
    fn parts(&self) -> usize {
        1 + usize::from(self._core.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{block_on, poll_once};

    #[test]
    fn a_connection_has_one_large_answer_at_a_time_within_the_cores_budget() {
        let core = ByteBudget::new(3 << 20);
        let first = ConnectionAnswers::new(2 << 20, core.clone());
        let second = ConnectionAnswers::new(2 << 20, core.clone());
        let held = block_on(first.reserve(AnswerSize::Large));
        assert_eq!((held.frame_limit(), held.parts()), (2 << 20, 2));
        // The same connection's next large answer waits for the first.
        let mut next = Box::pin(first.reserve(AnswerSize::Large));
        assert!(block_on(poll_once(&mut next)).is_none());
        // Another connection's waits for the core's budget.
        let mut other = Box::pin(second.reserve(AnswerSize::Large));
        assert!(block_on(poll_once(&mut other)).is_none());
        // Small answers wait for neither.
        let small = block_on(poll_once(Box::pin(second.reserve(AnswerSize::Small))));
        assert!(small.is_some_and(|room| room.is_small()));
        drop(held);
        // First come, first served: the other connection's was first in
        // the core's line.
        assert!(block_on(poll_once(&mut other)).is_some());
    }

    #[test]
    fn only_transactions_that_may_answer_values_ask_for_a_large_room() {
        use keel_proto::{PutRequest, RangeRequest};
        let put = |prev_kv| {
            RequestOp::Put(PutRequest {
                key: b"k".to_vec(),
                prev_kv,
                ..PutRequest::default()
            })
        };
        let txn = |success: Vec<RequestOp>| {
            Request::Txn(TxnRequest {
                success,
                ..TxnRequest::default()
            })
        };
        assert_eq!(AnswerSize::of(&txn(vec![put(false)])), AnswerSize::Small);
        assert_eq!(AnswerSize::of(&txn(vec![put(true)])), AnswerSize::Large);
        let read = RequestOp::Range(RangeRequest::default());
        assert_eq!(
            AnswerSize::of(&txn(vec![put(false), read])),
            AnswerSize::Large
        );
        let nested = RequestOp::Txn(TxnRequest {
            failure: vec![put(true)],
            ..TxnRequest::default()
        });
        assert_eq!(AnswerSize::of(&txn(vec![nested])), AnswerSize::Large);
        assert_eq!(AnswerSize::of(&Request::Status), AnswerSize::Large);
    }

    #[test]
    fn a_large_room_is_large_however_few_its_bytes() {
        // outbound_bytes at or below a small room's size: the range that
        // outgrew its small room must not retry for ever.
        let answers = ConnectionAnswers::new(1 << 10, ByteBudget::new(1 << 20));
        let room = block_on(answers.reserve(AnswerSize::Large));
        assert!(!room.is_small());
        // And no room is larger than the core's whole budget.
        let answers = ConnectionAnswers::new(8 << 20, ByteBudget::new(1 << 20));
        let room = block_on(answers.reserve(AnswerSize::Large));
        assert_eq!(room.frame_limit(), 1 << 20);
    }

    #[test]
    fn small_answers_of_a_connection_are_bounded() {
        let answers = ConnectionAnswers::new(8 << 20, ByteBudget::new(8 << 20));
        let held: Vec<AnswerRoom> = (0..SMALL_ANSWERS_PER_CONNECTION)
            .map(|_| block_on(answers.reserve(AnswerSize::Small)))
            .collect();
        let mut one_more = Box::pin(answers.reserve(AnswerSize::Small));
        assert!(block_on(poll_once(&mut one_more)).is_none());
        drop(held);
        assert!(block_on(poll_once(&mut one_more)).is_some());
    }
}
