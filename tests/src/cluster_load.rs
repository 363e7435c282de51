//! A steady load on a [`ProcessCluster`] that records every operation for
//! the linearizability checker: one writer per shard on a key of its own
//! (a probe: its acknowledgements show when each shard took writes again),
//! writers and readers over a few shared keys, every written value unique.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::kv_history::{KvInput, KvOperation, KvOutput};
use crate::linearizability::Operation;
use crate::process_cluster::{ProcessCluster, WriteOutcome};

/// Shared keys the random writers and readers use (etcd's robustness
/// traffic uses 10).
const SHARED_KEYS: usize = 6;

/// What the load recorded.
#[derive(Default)]
pub struct Recorded {
    /// Every operation, as the checker takes them.
    pub history: Vec<KvOperation>,
    /// Each probe's acknowledged writes: `(shard, call, return)` in ns
    /// since the load began.
    pub probe_acks: Vec<(usize, u64, u64)>,
    /// Writes acknowledged, unknown, refused; reads done, failed.
    pub counts: [usize; 5],
}

/// A running load; [`Load::finish`] stops it and hands over the record.
pub struct Load {
    began: Instant,
    stop: AtomicBool,
    recorded: Mutex<Recorded>,
    next_value: AtomicUsize,
}

impl Load {
    /// A load whose clock starts now.
    pub fn new() -> Load {
        Load {
            began: Instant::now(),
            stop: AtomicBool::new(false),
            recorded: Mutex::default(),
            next_value: AtomicUsize::new(0),
        }
    }

    /// Nanoseconds since the load began.
    pub fn now(&self) -> u64 {
        self.began.elapsed().as_nanos() as u64
    }

    /// Runs the load's threads in `scope` until [`Load::stop`].
    pub fn run<'scope>(
        &'scope self,
        scope: &'scope std::thread::Scope<'scope, '_>,
        cluster: &'scope ProcessCluster,
        seed: u64,
    ) {
        let shared: Vec<String> = (0..SHARED_KEYS)
            .map(|i| cluster.key_of_shard(i % cluster.shards(), &format!("shared-{i}")))
            .collect();
        for shard in 0..cluster.shards() {
            let key = cluster.key_of_shard(shard, "probe");
            scope.spawn(move || {
                while !self.stop.load(Ordering::Relaxed) {
                    self.write(cluster, shard, &key, Some(shard));
                }
            });
        }
        for writer in 0..2 {
            let shared = shared.clone();
            let client = cluster.shards() + writer;
            scope.spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed + client as u64);
                while !self.stop.load(Ordering::Relaxed) {
                    let key = &shared[rng.gen_range(0..shared.len())];
                    self.write(cluster, client, key, None);
                }
            });
        }
        for reader in 0..2 {
            let shared = shared.clone();
            let client = cluster.shards() + 2 + reader;
            scope.spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed + client as u64);
                while !self.stop.load(Ordering::Relaxed) {
                    let key = &shared[rng.gen_range(0..shared.len())];
                    let member = rng.gen_range(0..cluster.size());
                    self.read(cluster, client, member, key);
                    std::thread::sleep(Duration::from_millis(2));
                }
            });
        }
    }

    fn write(&self, cluster: &ProcessCluster, client: usize, key: &str, probe: Option<usize>) {
        let value = format!("v{}", self.next_value.fetch_add(1, Ordering::Relaxed));
        let call = self.now();
        let outcome = cluster.put(key, &value);
        let returned = self.now();
        let mut recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        let returned = match outcome {
            WriteOutcome::Applied(revision) => {
                recorded.counts[0] += 1;
                if let Some(shard) = probe {
                    recorded.probe_acks.push((shard, call, returned));
                }
                Some((returned, KvOutput::Put { revision }))
            }
            WriteOutcome::Unknown => {
                recorded.counts[1] += 1;
                None
            }
            // Refused: it did not take effect; nothing to check.
            WriteOutcome::Refused(_) => {
                recorded.counts[2] += 1;
                drop(recorded);
                std::thread::sleep(Duration::from_millis(20));
                return;
            }
        };
        recorded.history.push(Operation {
            client,
            call,
            returned,
            input: KvInput::Put {
                key: key.as_bytes().to_vec(),
                value: value.into_bytes(),
                seen_at: None,
            },
        });
    }

    fn read(&self, cluster: &ProcessCluster, client: usize, member: usize, key: &str) {
        let call = self.now();
        let got = cluster.get(member, key);
        let returned = self.now();
        let mut recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        match got {
            Ok(found) => {
                recorded.counts[3] += 1;
                recorded.history.push(Operation {
                    client,
                    call,
                    returned: Some((
                        returned,
                        KvOutput::Get {
                            found: found.map(|(v, r)| (v.into_bytes(), r)),
                        },
                    )),
                    input: KvInput::Get {
                        key: key.as_bytes().to_vec(),
                    },
                });
            }
            Err(_) => {
                recorded.counts[4] += 1;
                drop(recorded);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Tells the threads to stop (the scope waits for them).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Lets [`Load::run`] start threads again after a stop: one record over
    /// several runs (a test may change the cluster between them).
    pub fn resume(&self) {
        self.stop.store(false, Ordering::Relaxed);
    }

    /// The record, once the threads are done.
    pub fn finish(self) -> Recorded {
        self.recorded
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// How long writes to every shard went unanswered after `at` (ns
    /// since the load began): for each shard, the time from `at` until
    /// its probe's first write called at or after `at` was acknowledged;
    /// the longest of them. `None` while some shard has no such write.
    pub fn unavailable_after(&self, at: u64, shards: usize) -> Option<Duration> {
        let recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        let mut worst = 0u64;
        for shard in 0..shards {
            let first = recorded
                .probe_acks
                .iter()
                .filter(|(s, call, _)| *s == shard && *call >= at)
                .map(|(_, _, ret)| *ret)
                .min()?;
            worst = worst.max(first.saturating_sub(at));
        }
        Some(Duration::from_nanos(worst))
    }
}

impl Default for Load {
    fn default() -> Load {
        Load::new()
    }
}
