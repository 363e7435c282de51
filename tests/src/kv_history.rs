//! keel histories of puts and gets, checked for linearizability against
//! keel's etcd reference model (`engine/tests/support/etcd_model.rs`), one
//! partition per shard.
//!
//! Every put writes a value no other put writes, so a read names the put
//! it saw. A put whose outcome is unknown takes, if some read saw its
//! value, the revision that read reported (as etcd's robustness suite
//! patches its histories); one no read saw may have taken effect unseen
//! or not at all, which no read can tell apart, so it is left out.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::time::Duration;

use keel_engine::mvcc::{Entry, PutRequest, RangeRequest};

#[path = "../../engine/tests/support/etcd_model.rs"]
mod etcd_model;

use crate::linearizability::{check_partitions, Model, Operation, Verdict};

/// What a client asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvInput {
    /// Put `value` (unique in the history) under `key`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// For a put whose outcome is unknown: the revision a read saw it
        /// at (set by [`check`]).
        seen_at: Option<u64>,
    },
    /// Read `key` (linearizably).
    Get {
        /// The key.
        key: Vec<u8>,
    },
}

/// What it was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOutput {
    /// The put was acknowledged at `revision`.
    Put {
        /// Its revision.
        revision: u64,
    },
    /// The key's value and modification revision, if it exists.
    Get {
        /// What was found.
        found: Option<(Vec<u8>, u64)>,
    },
}

/// A recorded operation.
pub type KvOperation = Operation<KvInput, KvOutput>;

/// A live pair as reads see it: key, value, modification revision, version.
type Visible = (Vec<u8>, Vec<u8>, u64, u64);

/// The reference model's state, compared by what reads can see: the
/// current revision and every live pair's value and revisions.
#[derive(Clone)]
pub struct KvState {
    model: Rc<etcd_model::Model>,
    seen: Rc<Vec<Visible>>,
    current: u64,
}

impl KvState {
    fn new(mut model: etcd_model::Model) -> KvState {
        // Histories here read only the head: older versions and the change
        // log are dropped, so a step clones a few keys, not the history.
        for versions in model.versions.values_mut() {
            let keep = versions.len().saturating_sub(1);
            versions.drain(..keep);
        }
        model.log.clear();
        let seen = model
            .head()
            .into_iter()
            .map(|(key, kv)| (key, kv.value, kv.mod_revision, kv.version))
            .collect();
        KvState {
            current: model.current,
            model: Rc::new(model),
            seen: Rc::new(seen),
        }
    }
}

impl PartialEq for KvState {
    fn eq(&self, other: &KvState) -> bool {
        self.current == other.current && self.seen == other.seen
    }
}

impl Eq for KvState {}

impl Hash for KvState {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.current.hash(state);
        self.seen.hash(state);
    }
}

/// The etcd model as a sequential specification of puts and gets.
pub struct EtcdKv;

impl Model for EtcdKv {
    type State = KvState;
    type Input = KvInput;
    type Output = KvOutput;

    fn init(&self) -> KvState {
        KvState::new(etcd_model::Model::default())
    }

    fn step(&self, state: &KvState, input: &KvInput, output: Option<&KvOutput>) -> Option<KvState> {
        match (input, output) {
            (
                KvInput::Put {
                    key,
                    value,
                    seen_at,
                },
                output,
            ) => {
                let revision = match output {
                    Some(KvOutput::Put { revision }) => *revision,
                    None => (*seen_at)?,
                    Some(KvOutput::Get { .. }) => return None,
                };
                let mut model = (*state.model).clone();
                let put = PutRequest {
                    key: key.clone(),
                    value: value.clone(),
                    ..PutRequest::default()
                };
                model.apply(revision, &Entry::Put(put)).ok()?;
                Some(KvState::new(model))
            }
            (KvInput::Get { key }, Some(KvOutput::Get { found })) => {
                let request = RangeRequest {
                    key: key.clone(),
                    ..RangeRequest::default()
                };
                let answer = state.model.range(&request).ok()?;
                let actual = answer
                    .kvs
                    .first()
                    .map(|kv| (kv.value.clone(), kv.mod_revision));
                (actual == *found).then(|| state.clone())
            }
            // A read with no answer tells nothing.
            (KvInput::Get { .. }, None) => Some(state.clone()),
            (KvInput::Get { .. }, Some(KvOutput::Put { .. })) => None,
        }
    }
}

/// Checks a history split by shard (`partition_of(key)`), within `budget`.
/// Reads that failed should be left out by the caller (they tell nothing);
/// puts whose outcome is unknown are patched as the module says.
pub fn check(
    history: Vec<KvOperation>,
    partition_of: impl Fn(&[u8]) -> usize,
    budget: Duration,
) -> Verdict {
    // The revision each value was read at.
    let mut read_at: HashMap<(Vec<u8>, Vec<u8>), u64> = HashMap::new();
    for operation in &history {
        if let (
            KvInput::Get { key },
            Some((
                _,
                KvOutput::Get {
                    found: Some((value, at)),
                },
            )),
        ) = (&operation.input, &operation.returned)
        {
            read_at.insert((key.clone(), value.clone()), *at);
        }
    }
    let mut partitions: BTreeMap<usize, Vec<KvOperation>> = BTreeMap::new();
    for mut operation in history {
        let key = match &mut operation.input {
            KvInput::Put {
                key,
                value,
                seen_at,
            } => {
                if operation.returned.is_none() {
                    *seen_at = read_at.get(&(key.clone(), value.clone())).copied();
                    if seen_at.is_none() {
                        continue;
                    }
                }
                key.clone()
            }
            KvInput::Get { key } => {
                if operation.returned.is_none() {
                    continue;
                }
                key.clone()
            }
        };
        partitions
            .entry(partition_of(&key))
            .or_default()
            .push(operation);
    }
    let partitions: Vec<Vec<KvOperation>> = partitions.into_values().collect();
    check_partitions(&EtcdKv, &partitions, budget)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(call: u64, ret: Option<u64>, key: &str, value: &str, revision: u64) -> KvOperation {
        Operation {
            client: 0,
            call,
            returned: ret.map(|r| (r, KvOutput::Put { revision })),
            input: KvInput::Put {
                key: key.into(),
                value: value.into(),
                seen_at: None,
            },
        }
    }

    fn get(call: u64, ret: u64, key: &str, found: Option<(&str, u64)>) -> KvOperation {
        Operation {
            client: 1,
            call,
            returned: Some((
                ret,
                KvOutput::Get {
                    found: found.map(|(v, r)| (v.into(), r)),
                },
            )),
            input: KvInput::Get { key: key.into() },
        }
    }

    fn verdict(history: Vec<KvOperation>) -> Verdict {
        // Keys starting with "a" on one shard, the rest on another.
        check(
            history,
            |key| usize::from(key.first() != Some(&b'a')),
            Duration::from_secs(10),
        )
    }

    #[test]
    fn a_history_keel_could_produce_is_linearizable() {
        let history = vec![
            put(0, Some(10), "a", "1", 100),
            put(5, Some(15), "a", "2", 101),
            get(12, 13, "a", Some(("1", 100))),
            get(16, 17, "a", Some(("2", 101))),
            put(0, Some(3), "b", "x", 50),
            get(4, 5, "b", Some(("x", 50))),
        ];
        assert_eq!(verdict(history), Verdict::Linearizable);
    }

    #[test]
    fn a_lost_acknowledged_write_is_found() {
        let history = vec![put(0, Some(1), "a", "1", 100), get(2, 3, "a", None)];
        assert!(matches!(
            verdict(history),
            Verdict::Illegal { partition: 0, .. }
        ));
    }

    #[test]
    fn revisions_against_real_time_are_found() {
        // The second put started after the first was acknowledged, yet got
        // a lower revision.
        let history = vec![
            put(0, Some(1), "b", "1", 100),
            put(2, Some(3), "b", "2", 90),
        ];
        assert!(matches!(verdict(history), Verdict::Illegal { .. }));
    }

    #[test]
    fn a_read_of_the_wrong_revision_is_found() {
        let history = vec![
            put(0, Some(1), "a", "1", 100),
            get(2, 3, "a", Some(("1", 99))),
        ];
        assert!(matches!(verdict(history), Verdict::Illegal { .. }));
    }

    #[test]
    fn an_unknown_put_counts_once_a_read_saw_it_and_only_after_its_call() {
        let seen = vec![
            put(0, None, "a", "1", 0),
            get(50, 51, "a", Some(("1", 100))),
            put(60, Some(61), "a", "2", 110),
            get(62, 63, "a", Some(("2", 110))),
        ];
        assert_eq!(verdict(seen), Verdict::Linearizable);
        let unseen = vec![put(0, None, "a", "1", 0), get(50, 51, "a", None)];
        assert_eq!(verdict(unseen), Verdict::Linearizable);
        let before_its_call = vec![get(0, 1, "a", Some(("1", 100))), put(5, None, "a", "1", 0)];
        assert!(matches!(verdict(before_its_call), Verdict::Illegal { .. }));
    }

    #[test]
    fn a_stale_read_on_another_shard_does_not_hide_behind_a_good_one() {
        let history = vec![
            put(0, Some(1), "a", "1", 100),
            get(2, 3, "a", Some(("1", 100))),
            put(0, Some(1), "b", "1", 101),
            get(2, 3, "b", None),
        ];
        assert!(matches!(
            verdict(history),
            Verdict::Illegal { partition: 1, .. }
        ));
    }
}
