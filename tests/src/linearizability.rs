//! A linearizability checker for recorded histories: the Wing-Gong search
//! with Lowe's memoisation, as porcupine does it (research:
//! anishathalye/porcupine `checker.go`), with a time budget whose overrun
//! is its own verdict, never a pass.
//!
//! An operation has a call time and, if its caller heard back, a return
//! time and an output. One whose outcome is unknown (a timeout, a lost
//! connection) has neither: it may take effect at any point after its call,
//! or never, so the search may linearize it anywhere after its call or leave
//! it out. A history is linearizable when some order of its operations
//! respects real time (an operation that returned before another was called
//! comes first), contains every operation that returned, and is a legal run
//! of the model.
//!
//! Histories are checked per partition (keel: per shard) — linearizability
//! is compositional — and each partition's search is bounded in time.

use std::collections::HashSet;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A sequential specification.
pub trait Model {
    /// Its state; equal states are searched once.
    type State: Clone + Eq + Hash;
    /// An operation's input.
    type Input;
    /// An operation's output.
    type Output;
    /// The state before any operation.
    fn init(&self) -> Self::State;
    /// The state after `input` is applied to `state` and answered with
    /// `output` (`None`: the answer is unknown), or `None` when that answer
    /// is impossible there.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;
}

/// One recorded operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation<I, O> {
    /// Who issued it (for reports).
    pub client: usize,
    /// When it was called (any monotonic unit, e.g. ns since the start).
    pub call: u64,
    /// When it returned, with its output; `None` when its outcome is
    /// unknown.
    pub returned: Option<(u64, O)>,
    /// What it asked.
    pub input: I,
}

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every partition is linearizable.
    Linearizable,
    /// A partition is not: no order explains it.
    Illegal {
        /// The partition.
        partition: usize,
        /// The operations of the longest linearizable prefix the search
        /// found, in order (indexes into the partition), and the one that
        /// could go no further.
        longest_prefix: Vec<usize>,
    },
    /// The budget ran out before the search finished: nothing is known.
    Unknown {
        /// The partition whose search ran out.
        partition: usize,
    },
}

/// Checks each partition with its share of `budget`.
pub fn check_partitions<M: Model>(
    model: &M,
    partitions: &[Vec<Operation<M::Input, M::Output>>],
    budget: Duration,
) -> Verdict {
    let deadline = Instant::now() + budget;
    for (index, history) in partitions.iter().enumerate() {
        match check(model, history, deadline) {
            Search::Found => {}
            Search::Illegal(longest_prefix) => {
                return Verdict::Illegal {
                    partition: index,
                    longest_prefix,
                }
            }
            Search::OutOfTime => return Verdict::Unknown { partition: index },
        }
    }
    Verdict::Linearizable
}

enum Search {
    Found,
    Illegal(Vec<usize>),
    OutOfTime,
}

/// An entry of the time-ordered list: an operation's call or return.
#[derive(Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
}

/// The doubly linked list of events, by index; `HEAD` is a sentinel.
struct Events {
    events: Vec<Event>,
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Each operation's call and return event indexes.
    call_of: Vec<usize>,
    return_of: Vec<Option<usize>>,
}

const NONE: usize = usize::MAX;

impl Events {
    fn new<I, O>(history: &[Operation<I, O>]) -> Events {
        // (time, calls before returns at one time: closed intervals, so two
        // operations that touch overlap)
        let mut order: Vec<(u64, bool, usize)> = Vec::new();
        for (op, operation) in history.iter().enumerate() {
            order.push((operation.call, true, op));
            if let Some((at, _)) = &operation.returned {
                order.push((*at, false, op));
            }
        }
        order.sort_by_key(|(time, is_call, op)| (*time, !*is_call, *op));
        let n = order.len();
        let head = n;
        let mut events = Vec::with_capacity(n);
        let mut call_of = vec![NONE; history.len()];
        let mut return_of = vec![None; history.len()];
        for (index, (_, is_call, op)) in order.into_iter().enumerate() {
            events.push(Event { op, is_call });
            if is_call {
                call_of[op] = index;
            } else {
                return_of[op] = Some(index);
            }
        }
        // Slot `head` is the sentinel; the list runs head -> 0 -> ... -> n-1.
        let mut next = vec![NONE; n + 1];
        let mut prev = vec![NONE; n + 1];
        let mut last = head;
        for (index, before) in prev.iter_mut().enumerate().take(n) {
            next[last] = index;
            *before = last;
            last = index;
        }
        Events {
            events,
            next,
            prev,
            call_of,
            return_of,
        }
    }

    fn head(&self) -> usize {
        self.events.len()
    }

    fn unlink(&mut self, index: usize) {
        let (p, n) = (self.prev[index], self.next[index]);
        self.next[p] = n;
        if n != NONE {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, index: usize) {
        let (p, n) = (self.prev[index], self.next[index]);
        self.next[p] = index;
        if n != NONE {
            self.prev[n] = index;
        }
    }

    /// Takes an operation's call (and return) out of the list.
    fn lift(&mut self, op: usize) {
        self.unlink(self.call_of[op]);
        if let Some(ret) = self.return_of[op] {
            self.unlink(ret);
        }
    }

    /// Puts them back (the reverse of the last `lift`).
    fn unlift(&mut self, op: usize) {
        if let Some(ret) = self.return_of[op] {
            self.relink(ret);
        }
        self.relink(self.call_of[op]);
    }
}

fn check<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    deadline: Instant,
) -> Search {
    let mut events = Events::new(history);
    let mut returns_left = events.return_of.iter().filter(|r| r.is_some()).count();
    let words = history.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, M::State)> = HashSet::new();
    let mut state = model.init();
    // (operation, state before it)
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut longest: Vec<usize> = Vec::new();
    let mut cursor = events.next[events.head()];
    let mut steps = 0u64;
    loop {
        steps += 1;
        if steps.is_multiple_of(1024) && Instant::now() >= deadline {
            return Search::OutOfTime;
        }
        if returns_left == 0 {
            return Search::Found;
        }
        let event = if cursor == NONE {
            None
        } else {
            Some(events.events[cursor])
        };
        match event {
            Some(Event { op, is_call: true }) => {
                let operation = &history[op];
                let output = operation.returned.as_ref().map(|(_, o)| o);
                let stepped = model.step(&state, &operation.input, output);
                let mut advanced = false;
                if let Some(next_state) = stepped {
                    let mut bits = linearized.clone();
                    bits[op / 64] |= 1 << (op % 64);
                    if cache.insert((bits.clone(), next_state.clone())) {
                        stack.push((op, std::mem::replace(&mut state, next_state)));
                        linearized = bits;
                        events.lift(op);
                        if operation.returned.is_some() {
                            returns_left -= 1;
                        }
                        if stack.len() > longest.len() {
                            longest = stack.iter().map(|(op, _)| *op).collect();
                        }
                        cursor = events.next[events.head()];
                        advanced = true;
                    }
                }
                if !advanced {
                    cursor = events.next[cursor];
                }
            }
            // A return whose operation is not linearized yet (or the end):
            // undo the last choice and try the next one.
            _ => {
                let Some((op, before)) = stack.pop() else {
                    return Search::Illegal(longest);
                };
                state = before;
                linearized[op / 64] &= !(1 << (op % 64));
                events.unlift(op);
                if history[op].returned.is_some() {
                    returns_left += 1;
                }
                cursor = events.next[events.call_of[op]];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One register: write `v` or read `v`.
    struct Register;

    #[derive(Debug, Clone, PartialEq)]
    enum Op {
        Write(u32),
        Read,
    }

    impl Model for Register {
        type State = u32;
        type Input = Op;
        type Output = u32;
        fn init(&self) -> u32 {
            0
        }
        fn step(&self, state: &u32, input: &Op, output: Option<&u32>) -> Option<u32> {
            match input {
                Op::Write(v) => Some(*v),
                Op::Read => match output {
                    Some(seen) if seen != state => None,
                    _ => Some(*state),
                },
            }
        }
    }

    fn op(call: u64, ret: Option<u64>, input: Op, out: u32) -> Operation<Op, u32> {
        Operation {
            client: 0,
            call,
            returned: ret.map(|r| (r, out)),
            input,
        }
    }

    fn verdict(history: Vec<Operation<Op, u32>>) -> Verdict {
        check_partitions(&Register, &[history], Duration::from_secs(10))
    }

    #[test]
    fn overlapping_operations_may_take_effect_in_either_order() {
        let history = vec![
            op(0, Some(10), Op::Write(1), 0),
            op(1, Some(11), Op::Write(2), 0),
            op(2, Some(12), Op::Read, 1),
            op(13, Some(14), Op::Read, 1),
        ];
        assert_eq!(verdict(history), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_after_a_write_returned_is_illegal() {
        let history = vec![op(0, Some(1), Op::Write(1), 0), op(2, Some(3), Op::Read, 0)];
        assert!(matches!(verdict(history), Verdict::Illegal { .. }));
    }

    #[test]
    fn reads_that_go_back_in_time_are_illegal() {
        // Write 1, write 2 concurrently; one reader sees 2 then 1.
        let history = vec![
            op(0, Some(10), Op::Write(1), 0),
            op(0, Some(10), Op::Write(2), 0),
            op(1, Some(2), Op::Read, 2),
            op(3, Some(4), Op::Read, 1),
            op(11, Some(12), Op::Read, 1),
        ];
        // 1 after 2 is fine only if write 1 came last; then 2 must not be
        // read after it.
        assert_eq!(verdict(history.clone()), Verdict::Linearizable);
        let mut back = history;
        back.push(op(13, Some(14), Op::Read, 2));
        assert!(matches!(verdict(back), Verdict::Illegal { .. }));
    }

    #[test]
    fn an_unknown_write_may_take_effect_late_or_never_but_not_before_its_call() {
        let late = vec![
            op(0, None, Op::Write(7), 0),
            op(5, Some(6), Op::Read, 0),
            op(100, Some(101), Op::Read, 7),
        ];
        assert_eq!(verdict(late), Verdict::Linearizable);
        let never = vec![op(0, None, Op::Write(7), 0), op(5, Some(6), Op::Read, 0)];
        assert_eq!(verdict(never), Verdict::Linearizable);
        let early = vec![op(5, Some(6), Op::Read, 7), op(10, None, Op::Write(7), 0)];
        assert!(matches!(verdict(early), Verdict::Illegal { .. }));
    }

    #[test]
    fn a_value_never_written_is_illegal_and_the_prefix_is_reported() {
        let history = vec![
            op(0, Some(1), Op::Write(1), 0),
            op(2, Some(3), Op::Read, 1),
            op(4, Some(5), Op::Read, 9),
        ];
        match verdict(history) {
            Verdict::Illegal {
                partition: 0,
                longest_prefix,
            } => assert_eq!(longest_prefix, vec![0, 1]),
            other => panic!("{other:?}"),
        }
    }

    /// A set of written values; a read answers how many there are.
    struct Set;

    impl Model for Set {
        type State = Vec<u32>;
        type Input = Op;
        type Output = u32;
        fn init(&self) -> Vec<u32> {
            Vec::new()
        }
        fn step(&self, state: &Vec<u32>, input: &Op, output: Option<&u32>) -> Option<Vec<u32>> {
            match input {
                Op::Write(v) => {
                    let mut next = state.clone();
                    next.push(*v);
                    next.sort_unstable();
                    Some(next)
                }
                Op::Read => match output {
                    Some(n) if *n as usize != state.len() => None,
                    _ => Some(state.clone()),
                },
            }
        }
    }

    #[test]
    fn a_search_past_its_budget_says_unknown_never_linearizable() {
        // 40 writes whose outcome is unknown and a read no subset of them
        // explains: every subset is a distinct state, so the search could
        // take 2^40 steps before it could say Illegal.
        let mut history: Vec<_> = (0..40).map(|i| op(0, None, Op::Write(i + 1), 0)).collect();
        history.push(op(10, Some(11), Op::Read, 99));
        let verdict = check_partitions(&Set, &[history], Duration::from_millis(50));
        assert_eq!(verdict, Verdict::Unknown { partition: 0 });
    }
}
