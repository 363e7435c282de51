//! Heavy answers take turns (docs/server.md, "Heavy answers"). Encoding an
//! answer of many MiB is milliseconds of one task's time, most of it page
//! faults on fresh memory. glommio polls a core's I/O only between passes
//! over its run queue, so when a dozen such answers become ready at once
//! (a burst of large ranges, or the room freed by connections cut off) and
//! are encoded in one pass, every other request on the core, a put's WAL
//! write included, waits for all of them.
//!
//! So a core encodes one heavy answer at a time, and each waits for a timer
//! before it starts: the core polls its I/O (and runs what that woke)
//! between two of them. Smaller answers never wait.

use std::time::Duration;

use glommio::sync::{Permit, Semaphore};
use keel_proto::ResponseBody;

/// Answers hinted at this many bytes or more take turns.
pub(crate) const HEAVY_ANSWER_BYTES: usize = 1 << 20;

/// How long a heavy answer waits once its turn came: any timer at all, so
/// that the wait ends at the core's next I/O poll.
const POLL_PAUSE: Duration = Duration::from_micros(50);

/// One core's turns for heavy answers.
pub(crate) struct HeavyAnswers {
    turn: Semaphore,
}

impl HeavyAnswers {
    pub(crate) fn new() -> HeavyAnswers {
        HeavyAnswers {
            turn: Semaphore::new(1),
        }
    }

    /// Waits for `body`'s turn if it is heavy; it is held until dropped.
    /// An answer whose frame may not reach [`HEAVY_ANSWER_BYTES`] (a small
    /// room's) is never heavy, and is not even measured.
    pub(crate) async fn turn_for(
        &self,
        body: &ResponseBody,
        frame_limit: usize,
    ) -> Option<Turn<'_>> {
        if frame_limit < HEAVY_ANSWER_BYTES
            || keel_proto::response_size_hint(body) < HEAVY_ANSWER_BYTES
        {
            return None;
        }
        Some(self.turn().await)
    }

    /// Waits for the core's turn, then for its next I/O poll.
    async fn turn(&self) -> Turn<'_> {
        // The semaphore is never closed, so the permit always comes; were
        // it missing, the answer would merely not wait its turn.
        let permit = self.turn.acquire_permit(1).await.ok();
        glommio::timer::sleep(POLL_PAUSE).await;
        Turn { _permit: permit }
    }
}

/// A heavy answer's turn, held while it is encoded.
pub(crate) struct Turn<'a> {
    _permit: Option<Permit<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    fn run_local<T, F>(body: impl FnOnce() -> F + Send + 'static) -> T
    where
        T: Send + 'static,
        F: std::future::Future<Output = T> + 'static,
    {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(body)
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn heavy_answers_take_turns_with_a_timer_poll_between_two() {
        let (polls_seen, first_was_over) = run_local(|| async {
            let heavy = Rc::new(HeavyAnswers::new());
            // Counts the core's timer polls: each wake needs one.
            let polls = Rc::new(Cell::new(0u64));
            let counter = {
                let polls = polls.clone();
                glommio::spawn_local(async move {
                    loop {
                        glommio::timer::sleep(Duration::from_micros(1)).await;
                        polls.set(polls.get() + 1);
                    }
                })
            };
            let first_over = Rc::new(Cell::new(false));
            let first = heavy.turn().await;
            let second = {
                let (heavy, polls, first_over) = (heavy.clone(), polls.clone(), first_over.clone());
                glommio::spawn_local(async move {
                    let _turn = heavy.turn().await;
                    (polls.get(), first_over.get())
                })
            };
            // Let the second ask while the first holds the turn; then let
            // whatever that timer's poll woke (the counter, maybe) run
            // before the count is read, so that only a later poll counts.
            glommio::timer::sleep(Duration::from_millis(1)).await;
            futures_lite::future::yield_now().await;
            let before = polls.get();
            first_over.set(true);
            drop(first);
            let (at_second, first_was_over) = second.await;
            drop(counter);
            (at_second - before, first_was_over)
        });
        assert!(first_was_over, "two heavy answers held the turn at once");
        assert!(polls_seen >= 1, "no timer poll between two turns");
    }

    #[test]
    fn only_answers_of_a_mib_or_more_take_turns() {
        use keel_proto::{KeyValue, RangeResponse};
        let answer = |value: usize| {
            ResponseBody::Range(RangeResponse {
                kvs: vec![KeyValue {
                    key: b"k".to_vec(),
                    value: vec![0; value],
                    ..KeyValue::default()
                }],
                ..RangeResponse::default()
            })
        };
        run_local(move || async move {
            let heavy = HeavyAnswers::new();
            let room = 8 << 20;
            let held = heavy.turn_for(&answer(HEAVY_ANSWER_BYTES), room).await;
            assert!(held.is_some());
            // Light answers pass while a heavy one holds the turn.
            assert!(heavy.turn_for(&answer(64 << 10), room).await.is_none());
        });
    }
}
