//! The MVCC model test through a node, with 1 and 4 shards: random puts,
//! deletes, transactions (most inside one hash tag, some spanning shards,
//! which must be refused and change nothing), compactions, lease grants and
//! revokes, restarts, and ranges at the head and at past revisions, each
//! answered exactly as the reference model of etcd answers it. Watches over
//! every shard must report exactly the model's events.
//!
//! Writes that a node carries out as one entry per shard (a delete over
//! several shards, compaction, lease grant and revoke) take one revision
//! per shard; the model gives them the last one, and reads at the
//! revisions in between are not compared.
//!
//! `KEEL_MODEL_CASES` sets the number of seeds per shard count (default 6).

#[path = "../../engine/tests/support/etcd_model.rs"]
mod etcd_model;
#[path = "../../engine/tests/support/generator.rs"]
mod generator;

use std::collections::BTreeSet;
use std::path::Path;

use etcd_model::{expected_events, normal, Model};
use futures_lite::future::block_on;
use generator::Gen;
use keel_engine::mvcc::*;
use keel_engine::routing::shard_of_range;
use keel_engine::shard::{Consistency, Node, NodeError};
use keel_tests::{everything, node_config, watch_events};
use rand::Rng;

fn same<T: std::fmt::Debug + PartialEq>(
    label: &str,
    node: Result<T, NodeError>,
    model: Result<T, String>,
) {
    match (node, model) {
        (Ok(n), Ok(m)) => assert_eq!(n, m, "{label}"),
        (Err(NodeError::Kv(n)), Err(m)) => assert_eq!(normal(&n), m, "{label}"),
        (n, m) => panic!("{label}: node {n:?}, model {m:?}"),
    }
}

/// Every shard a transaction's keys map to.
fn txn_shards(txn: &TxnRequest, shards: usize, out: &mut BTreeSet<Option<usize>>) {
    for c in &txn.compare {
        out.insert(shard_of_range(&c.key, &c.range_end, shards));
    }
    for op in txn.success.iter().chain(&txn.failure) {
        match op {
            RequestOp::Range(r) => out.insert(shard_of_range(&r.key, &r.range_end, shards)),
            RequestOp::Put(p) => out.insert(shard_of_range(&p.key, &[], shards)),
            RequestOp::DeleteRange(d) => out.insert(shard_of_range(&d.key, &d.range_end, shards)),
            RequestOp::Txn(inner) => {
                txn_shards(inner, shards, out);
                false
            }
        };
    }
}

/// Whether the node must refuse `txn` (docs/node.md, "Transactions"),
/// written apart from the node's code: its compares, writes and nested
/// transactions touch more than one shard, or a top-level range that
/// reads beyond their shard comes before a write of its branch. Answers
/// also whether it has such a range (a read again at its revision).
fn refused_and_spanning(txn: &TxnRequest, shards: usize) -> (bool, bool) {
    let mut touched = BTreeSet::new();
    for c in &txn.compare {
        touched.insert(shard_of_range(&c.key, &c.range_end, shards));
    }
    for op in txn.success.iter().chain(&txn.failure) {
        match op {
            RequestOp::Range(_) => {}
            RequestOp::Txn(inner) => txn_shards(inner, shards, &mut touched),
            other => {
                let mut one = BTreeSet::new();
                let single = TxnRequest {
                    success: vec![other.clone()],
                    ..TxnRequest::default()
                };
                txn_shards(&single, shards, &mut one);
                touched.extend(one);
            }
        }
    }
    let home = match touched.iter().collect::<Vec<_>>().as_slice() {
        [] => Some(0),
        [Some(one)] => Some(*one),
        _ => return (true, false),
    };
    let mut spanning = false;
    for ops in [&txn.success, &txn.failure] {
        let mut written_after = false;
        for op in ops.iter().rev() {
            match op {
                RequestOp::Range(r) => {
                    if shard_of_range(&r.key, &r.range_end, shards) != home {
                        if written_after {
                            return (true, false);
                        }
                        spanning = true;
                    }
                }
                _ => written_after = true,
            }
        }
    }
    (false, spanning)
}

/// Runs one write through the node; answers what it did.
fn write(node: &Node, entry: &Entry) -> Result<Response, NodeError> {
    let client = node.client();
    block_on(async {
        Ok(match entry.clone() {
            Entry::Put(put) => node.put(put).await?.response,
            Entry::DeleteRange(delete) => node.delete_range(delete).await?.response,
            Entry::Txn(txn) => node.txn(txn).await?.response,
            Entry::Compact { revision } => client.compact(revision).await?.response,
            Entry::LeaseGrant { id, ttl } => {
                let id = client.lease_grant(id, ttl).await?;
                Response::LeaseGrant { id, ttl }
            }
            Entry::LeaseRevoke { id } => {
                client.lease_revoke(id).await?;
                Response::LeaseRevoke
            }
            other => panic!("not a client write: {other:?}"),
        })
    })
}

/// Whether the node carries `entry` out as one entry per shard.
fn spans_shards(entry: &Entry, shards: usize) -> bool {
    match entry {
        Entry::Compact { .. } | Entry::LeaseGrant { .. } | Entry::LeaseRevoke { .. } => shards > 1,
        Entry::DeleteRange(d) => shard_of_range(&d.key, &d.range_end, shards).is_none(),
        _ => false,
    }
}

/// Events as comparable: revisions of multi-shard writes mapped to the
/// revision the model gave them, then ordered by (revision, key).
fn normalized(events: Vec<Event>, spans: &[(u64, u64)]) -> Vec<Event> {
    let mut events: Vec<Event> = events
        .into_iter()
        .map(|mut e| {
            if let Some((_, after)) = spans
                .iter()
                .find(|(before, after)| e.kv.mod_revision > *before && e.kv.mod_revision <= *after)
            {
                if e.kind == EventKind::Delete {
                    e.kv.mod_revision = *after;
                }
            }
            e
        })
        .collect();
    events.sort_by(|a, b| (a.kv.mod_revision, &a.kv.key).cmp(&(b.kv.mod_revision, &b.kv.key)));
    events
}

fn run(seed: u64, shards: usize, steps: usize, dir: &Path, spanning_reads: &mut usize) {
    let dir = dir.join(format!("s{shards}-{seed}"));
    let config = || node_config(&dir, shards, shards.min(2));
    let mut node = Node::start(config()).unwrap();
    let mut gen = Gen::for_node(seed);
    let mut model = Model::default();
    // (before, after) of writes spread over shards.
    let mut spans: Vec<(u64, u64)> = Vec::new();
    // A watch over every shard, live since the node last started.
    let mut live = Some(block_on(node.watch(everything())).unwrap());
    let mut live_from = live.as_ref().map_or(0, |w| w.start_revision());
    for step in 0..steps {
        let label = format!("shards {shards} seed {seed} step {step}");
        match gen.rng.gen_range(0..20) {
            0..=10 => {
                let mut entry = gen.entry(model.current);
                match &mut entry {
                    Entry::LeaseExpire { .. } | Entry::LeaseCheckpoint { .. } => continue,
                    Entry::LeaseGrant { id, ttl } => {
                        // The node picks ids by home shard; the model by
                        // revision: name them. Long TTLs: no expiry here.
                        if *id == 0 {
                            *id = gen.rng.gen_range(1..5);
                        }
                        if *ttl > 0 {
                            *ttl += 1000;
                        }
                    }
                    _ => {}
                }
                let before = block_on(node.client().current_revision()).unwrap();
                let answer = write(&node, &entry);
                if let Entry::Txn(txn) = &entry {
                    let (refuse, spanning) = refused_and_spanning(txn, shards);
                    let refused = matches!(&answer, Err(NodeError::CrossShardTxn { .. }));
                    assert_eq!(refused, refuse, "{label}: {txn:?} gave {answer:?}");
                    if spanning && answer.is_ok() {
                        *spanning_reads += 1;
                    }
                }
                let after = block_on(node.client().current_revision()).unwrap();
                if let Err(NodeError::CrossShardTxn { .. }) = &answer {
                    let Entry::Txn(txn) = &entry else {
                        panic!("{label}: cross-shard refusal of {entry:?}")
                    };
                    let mut touched = BTreeSet::new();
                    txn_shards(txn, shards, &mut touched);
                    assert!(
                        touched.len() > 1 || touched.contains(&None),
                        "{label}: {txn:?}"
                    );
                    assert_eq!(before, after, "{label}: a refused txn wrote");
                    continue;
                }
                if before == after {
                    // Refused before anything was logged: a compaction past
                    // the current revision, or a request its static checks
                    // refuse, with the refusal the model gives (which takes
                    // no revision then).
                    let future_compaction = matches!(
                        (&answer, &entry),
                        (Err(NodeError::Kv(KvError::FutureRevision { .. })), Entry::Compact { revision }) if *revision > model.current
                    );
                    if !future_compaction {
                        assert!(
                            check_entry(&entry).is_err(),
                            "{label}: {entry:?} gave {answer:?} and took no revision"
                        );
                        let expected = model.clone().apply(model.current + 1, &entry);
                        same(&format!("{label} {entry:?}"), answer, expected);
                    }
                    continue;
                }
                if spans_shards(&entry, shards) {
                    spans.push((before, after));
                }
                gen.record_revision(after);
                let expected = model.apply(after, &entry);
                same(&format!("{label} {entry:?}"), answer, expected);
            }
            11..=16 => {
                let request = gen.range(model.current);
                let r = request.revision;
                if spans
                    .iter()
                    .any(|(before, after)| r > *before && r < *after)
                {
                    continue;
                }
                let consistency = if gen.rng.gen_bool(0.5) {
                    Consistency::Linearizable
                } else {
                    Consistency::Serializable
                };
                let answer = block_on(node.range(request.clone(), consistency)).map(|(_, r)| r);
                same(
                    &format!("{label} {request:?}"),
                    answer,
                    model.range(&request),
                );
            }
            17 | 18 => {
                let leases: Vec<(i64, i64)> = block_on(node.client().leases())
                    .unwrap()
                    .iter()
                    .map(|l| (l.id, l.ttl))
                    .collect();
                let expected: Vec<(i64, i64)> =
                    model.leases.iter().map(|(id, l)| (*id, l.ttl)).collect();
                assert_eq!(leases, expected, "{label}: leases");
                for id in model.leases.keys() {
                    let keys = model.keys_of_lease(*id);
                    let status = block_on(node.client().lease_time_to_live(*id, true))
                        .unwrap()
                        .expect("lease");
                    assert_eq!(status.keys, keys, "{label}: keys of lease {id}");
                }
            }
            _ => {
                #[allow(unused_assignments)] // ends the borrow of `node`
                {
                    live = None;
                }
                node.shutdown();
                node = Node::start(config()).unwrap();
                let stream = block_on(node.watch(everything())).unwrap();
                live_from = stream.start_revision();
                live = Some(stream);
            }
        }
    }
    // Watches: the live one, and one reading history from the compaction
    // point (or the first write), over every shard.
    let mut live = live.expect("live watch");
    let want = normalized(expected_events(&model, &everything(), live_from), &spans);
    let label = format!("shards {shards} seed {seed}: live watch from {live_from}");
    let got = normalized(watch_events(&mut live, want.len(), &label), &spans);
    assert_eq!(
        got, want,
        "shards {shards} seed {seed}: live watch from {live_from}"
    );
    drop(live);
    let mut from = model.compact.max(gen_first(&model)).max(1);
    // Not inside a write spread over shards: its parts have revisions on
    // both sides of `from`, and the model gives them all the last one.
    if let Some((_, after)) = spans
        .iter()
        .find(|(before, after)| from > *before && from <= *after)
    {
        from = after + 1;
    }
    let mut history = block_on(node.watch(WatchRequest {
        start_revision: from,
        ..everything()
    }))
    .unwrap();
    let want = normalized(expected_events(&model, &everything(), from), &spans);
    let label = format!("shards {shards} seed {seed}: watch from {from}");
    let got = normalized(watch_events(&mut history, want.len(), &label), &spans);
    assert_eq!(got, want, "shards {shards} seed {seed}: watch from {from}");
    drop(history);
    node.shutdown();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The first revision the model saw a change at.
fn gen_first(model: &Model) -> u64 {
    model.log.first().map_or(0, |c| c.0)
}

fn cases() -> u64 {
    generator::model_cases(6)
}

#[test]
fn one_shard_matches_the_reference_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut spanning_reads = 0;
    for seed in 0..cases() {
        run(seed, 1, 150, dir.path(), &mut spanning_reads);
    }
    assert_eq!(spanning_reads, 0, "one shard: no read spans shards");
}

#[test]
fn four_shards_match_the_reference_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut spanning_reads = 0;
    for seed in 0..cases() {
        run(seed, 4, 150, dir.path(), &mut spanning_reads);
    }
    // The transactions whose ranges were read again across shards were
    // checked against the model too.
    assert!(spanning_reads > 0, "no transaction read across shards");
    eprintln!("{spanning_reads} transactions read across shards, checked against the model");
}
