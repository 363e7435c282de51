//! A checker of etcd's watch guarantees on recorded watch streams
//! (etcd's API guarantees, "Watch APIs"; its robustness suite checks the
//! same): given the true sequence of events in a key range, and what a
//! watch handed out (across every reconnect to whichever member), it says
//! which guarantee a stream broke, if any:
//!
//! - **Ordered**: events come in revision order.
//! - **Unique**: no event comes twice.
//! - **Atomic**: a response holds every event of each revision it holds.
//! - **Reliable**: no event between two that came is missing.
//! - **Resumable**: a watch re-opened (on another member) after the last
//!   revision it handed out goes on as if unbroken; checked as part of the
//!   one stream it makes with what came before.
//! - **Bookmarkable**: a response's revision says every event up to it
//!   has come.
//!
//! The truth is a stream of its own: a watch from the first revision
//! read to the end, itself checked to hold every acknowledged write.

use std::collections::{BTreeMap, BTreeSet};

/// One event as a watcher saw it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SeenEvent {
    /// The revision of the change.
    pub revision: u64,
    /// The key.
    pub key: Vec<u8>,
    /// The value after a put; `None` for a delete.
    pub value: Option<Vec<u8>>,
}

/// One response of a watch: its events and the revision it says
/// everything up to has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenResponse {
    /// Every event up to here has come, with this response or before.
    pub revision: u64,
    /// Its events.
    pub events: Vec<SeenEvent>,
}

/// A watch's whole recording: the first revision it was to report, and
/// every response, in the order they came, across reconnects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recording {
    /// The first revision the watch reports.
    pub start: u64,
    /// What it handed out.
    pub responses: Vec<SeenResponse>,
}

/// A broken guarantee, with where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchViolation {
    /// An event came after one of a later revision.
    #[error("ordered: revision {got} came after revision {after}")]
    Unordered {
        /// The late event's revision.
        got: u64,
        /// The revision it followed.
        after: u64,
    },
    /// An event came twice.
    #[error("unique: {0:?} came twice")]
    Duplicate(SeenEvent),
    /// A response held part of a revision.
    #[error("atomic: response {response} holds {held} of revision {revision}'s {all} events")]
    Split {
        /// Which response.
        response: usize,
        /// The revision.
        revision: u64,
        /// Its events in that response.
        held: usize,
        /// Its events in truth.
        all: usize,
    },
    /// An event between two that came is missing.
    #[error("reliable: {0:?} is missing")]
    Missing(SeenEvent),
    /// An event no write made came.
    #[error("reliable: {0:?} never happened")]
    Invented(SeenEvent),
    /// A response's revision said an event had come that had not.
    #[error(
        "bookmarkable: response {response} says all up to {revision} came, but not {missing:?}"
    )]
    FalseBookmark {
        /// Which response.
        response: usize,
        /// Its revision.
        revision: u64,
        /// An event at or below it that had not come.
        missing: SeenEvent,
    },
}

/// Checks one recording against `truth` (every event in the watched
/// range, in revision order).
///
/// # Errors
/// The first guarantee broken.
pub fn check(truth: &[SeenEvent], recording: &Recording) -> Result<(), WatchViolation> {
    let relevant: Vec<&SeenEvent> = truth
        .iter()
        .filter(|e| e.revision >= recording.start)
        .collect();
    let known: BTreeSet<&SeenEvent> = relevant.iter().copied().collect();
    let per_revision: BTreeMap<u64, usize> =
        relevant.iter().fold(BTreeMap::new(), |mut counts, e| {
            *counts.entry(e.revision).or_insert(0) += 1;
            counts
        });
    let mut came: BTreeSet<&SeenEvent> = BTreeSet::new();
    let mut last = 0;
    // `relevant[..checked]` have all come.
    let mut checked = 0;
    for (n, response) in recording.responses.iter().enumerate() {
        let mut held: BTreeMap<u64, usize> = BTreeMap::new();
        for event in &response.events {
            if event.revision < last {
                return Err(WatchViolation::Unordered {
                    got: event.revision,
                    after: last,
                });
            }
            last = event.revision;
            if !known.contains(event) {
                return Err(WatchViolation::Invented(event.clone()));
            }
            if !came.insert(event) {
                return Err(WatchViolation::Duplicate(event.clone()));
            }
            *held.entry(event.revision).or_insert(0) += 1;
        }
        for (&revision, &count) in &held {
            let all = per_revision.get(&revision).copied().unwrap_or(0);
            if count != all {
                return Err(WatchViolation::Split {
                    response: n,
                    revision,
                    held: count,
                    all,
                });
            }
        }
        // Everything up to the response's revision, and up to its last
        // event, has come (what came before was checked already).
        let through = response.revision.max(last);
        while let Some(next) = relevant.get(checked).filter(|e| e.revision <= through) {
            if !came.contains(*next) {
                return Err(if next.revision <= last {
                    WatchViolation::Missing((*next).clone())
                } else {
                    WatchViolation::FalseBookmark {
                        response: n,
                        revision: response.revision,
                        missing: (*next).clone(),
                    }
                });
            }
            checked += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(revision: u64, key: &str) -> SeenEvent {
        SeenEvent {
            revision,
            key: key.as_bytes().to_vec(),
            value: Some(format!("{key}@{revision}").into_bytes()),
        }
    }

    fn delete(revision: u64, key: &str) -> SeenEvent {
        SeenEvent {
            revision,
            key: key.as_bytes().to_vec(),
            value: None,
        }
    }

    /// Revisions 10 (a, b together), 20 (c), 30 (a deleted), 40 (d).
    fn truth() -> Vec<SeenEvent> {
        vec![
            put(10, "a"),
            put(10, "b"),
            put(20, "c"),
            delete(30, "a"),
            put(40, "d"),
        ]
    }

    fn response(revision: u64, events: Vec<SeenEvent>) -> SeenResponse {
        SeenResponse { revision, events }
    }

    fn recording(start: u64, responses: Vec<SeenResponse>) -> Recording {
        Recording { start, responses }
    }

    #[test]
    fn a_faithful_stream_with_a_resume_in_the_middle_passes() {
        let t = truth();
        let whole = recording(
            1,
            vec![
                response(10, vec![t[0].clone(), t[1].clone()]),
                response(25, vec![t[2].clone()]),
                // Reconnected elsewhere from 26: a progress, then the rest.
                response(26, vec![]),
                response(40, vec![t[3].clone(), t[4].clone()]),
            ],
        );
        assert_eq!(check(&t, &whole), Ok(()));
        // A watch that starts late sees only what follows its start.
        let late = recording(30, vec![response(45, vec![t[3].clone(), t[4].clone()])]);
        assert_eq!(check(&t, &late), Ok(()));
    }

    #[test]
    fn each_broken_guarantee_is_named() {
        let t = truth();
        let cases = [
            (
                vec![
                    response(20, vec![t[0].clone(), t[1].clone(), t[2].clone()]),
                    response(20, vec![t[1].clone()]),
                ],
                "ordered",
            ),
            (
                vec![
                    response(10, vec![t[0].clone(), t[1].clone()]),
                    response(20, vec![t[2].clone(), t[2].clone()]),
                ],
                "unique",
            ),
            (
                vec![
                    response(9, vec![t[0].clone()]),
                    response(10, vec![t[1].clone()]),
                ],
                "atomic",
            ),
            (
                vec![
                    response(10, vec![t[0].clone(), t[1].clone()]),
                    response(30, vec![t[3].clone()]),
                ],
                "reliable",
            ),
            (vec![response(20, vec![put(15, "x")])], "reliable"),
            (
                vec![
                    response(10, vec![t[0].clone(), t[1].clone()]),
                    response(35, vec![]),
                ],
                "bookmarkable",
            ),
        ];
        for (responses, guarantee) in cases {
            let outcome = check(&t, &recording(1, responses.clone()));
            let named = outcome
                .as_ref()
                .err()
                .map(|v| v.to_string())
                .unwrap_or_default();
            assert!(
                named.starts_with(guarantee),
                "{responses:?}: wanted {guarantee}, got {outcome:?}"
            );
        }
    }
}
