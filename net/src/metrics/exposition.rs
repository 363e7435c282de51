//! One scrape: every shard's figures and the front's call counts, read
//! and summed now, written in Prometheus' text format by
//! `prometheus-client` (docs/metrics.md lists every metric).

use std::sync::Arc;

use keel_engine::metrics::{Histogram, HistogramReading, NodeMetrics, ShardMetrics};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::grpc_calls::{CallType, GrpcCalls, CODES, METHODS};

/// The content type of [`scrape`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// What a scrape reads.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Every shard's figures on this member.
    pub node: Arc<NodeMetrics>,
    /// The etcd API front's calls.
    pub calls: Arc<GrpcCalls>,
    /// The etcd version the member reports.
    pub etcd_version: String,
}

/// The metrics as Prometheus' text format (version 0.0.4).
pub fn scrape(sources: &Sources) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(sources.clone()));
    let mut text = String::new();
    // Writing to a String cannot fail, and `Sources::encode` fails only
    // when its writer does.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
    text
}

type Labels = Vec<(&'static str, String)>;

fn shard_labels(shard: &ShardMetrics) -> Labels {
    vec![
        ("shard", shard.shard.to_string()),
        ("core", shard.core.to_string()),
    ]
}

/// Writes one metric: a descriptor and one sample per label set.
struct Family<'e, 'a> {
    encoder: &'e mut DescriptorEncoder<'a>,
}

impl Family<'_, '_> {
    fn gauges(&mut self, name: &str, help: &str, samples: &[(Labels, i64)]) -> std::fmt::Result {
        let mut metric = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, value) in samples {
            metric.encode_family(labels)?.encode_gauge(value)?;
        }
        Ok(())
    }

    fn gauge(&mut self, name: &str, help: &str, value: i64) -> std::fmt::Result {
        self.encoder
            .encode_descriptor(name, help, None, MetricType::Gauge)?
            .encode_gauge(&value)
    }

    /// `name` is without `_total`, which the encoder adds.
    fn counters(&mut self, name: &str, help: &str, samples: &[(Labels, u64)]) -> std::fmt::Result {
        let mut metric = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, value) in samples {
            metric
                .encode_family(labels)?
                .encode_counter::<NoLabelSet, _, u64>(value, None)?;
        }
        Ok(())
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) -> std::fmt::Result {
        self.encoder
            .encode_descriptor(name, help, None, MetricType::Counter)?
            .encode_counter::<NoLabelSet, _, u64>(&value, None)
    }

    fn histograms(
        &mut self,
        name: &str,
        help: &str,
        samples: &[(Labels, HistogramReading)],
    ) -> std::fmt::Result {
        let mut metric = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (labels, reading) in samples {
            metric
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(
                    reading.sum_seconds(),
                    reading.count(),
                    &reading.buckets(),
                    None,
                )?;
        }
        Ok(())
    }
}

/// The sum of one histogram of every shard.
fn summed(
    node: &NodeMetrics,
    histogram: impl Fn(&ShardMetrics) -> &Histogram,
) -> Vec<(Labels, HistogramReading)> {
    let mut sum: Option<HistogramReading> = None;
    for shard in &node.shards {
        let histogram = histogram(shard);
        match &mut sum {
            Some(sum) => sum.add(histogram),
            None => sum = Some(histogram.read()),
        }
    }
    sum.map(|sum| vec![(Vec::new(), sum)]).unwrap_or_default()
}

fn per_shard<T>(node: &NodeMetrics, value: impl Fn(&ShardMetrics) -> T) -> Vec<(Labels, T)> {
    node.shards
        .iter()
        .map(|shard| (shard_labels(shard), value(shard)))
        .collect()
}

impl Collector for Sources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let mut out = Family {
            encoder: &mut encoder,
        };
        self.encode_etcd(&mut out)?;
        self.encode_grpc(&mut out)?;
        self.encode_shards(&mut out)
    }
}

impl Sources {
    /// etcd's metrics, where keel has the same meaning (summed over the
    /// member's shards; docs/metrics.md says how each maps).
    fn encode_etcd(&self, out: &mut Family<'_, '_>) -> std::fmt::Result {
        let node = &*self.node;
        let shards = &node.shards;
        let sum = |f: &dyn Fn(&ShardMetrics) -> i64| shards.iter().map(|s| f(s)).sum::<i64>();
        let every_shard_led = shards.iter().all(|s| s.has_leader.get() == 1);
        out.gauge(
            "etcd_server_has_leader",
            "Whether every shard of this member has a leader (1) or not (0).",
            i64::from(every_shard_led),
        )?;
        out.gauge(
            "etcd_server_is_leader",
            "Whether this member leads at least one shard (1) or none (0).",
            i64::from(shards.iter().any(|s| s.is_leader.get() == 1)),
        )?;
        out.counter(
            "etcd_server_leader_changes_seen",
            "Leader changes seen, over every shard of this member.",
            shards.iter().map(|s| s.leader_changes.get()).sum(),
        )?;
        out.gauges(
            "etcd_server_id",
            "This member's id, as a label.",
            &[(vec![("server_id", format!("{:x}", node.member))], 1)],
        )?;
        out.gauges(
            "etcd_server_version",
            "The etcd version this member reports, as a label.",
            &[(vec![("server_version", self.etcd_version.clone())], 1)],
        )?;
        out.gauge(
            "etcd_server_proposals_committed_total",
            "Committed Raft entries, summed over the shards' commit indexes.",
            sum(&|s| s.commit_index.get()),
        )?;
        out.gauge(
            "etcd_server_proposals_applied_total",
            "Applied Raft entries, summed over the shards' applied indexes.",
            sum(&|s| s.applied_index.get()),
        )?;
        out.gauge(
            "etcd_server_proposals_pending",
            "Proposals of this member's leaders not yet applied.",
            sum(&|s| s.proposals_pending.get()),
        )?;
        out.counter(
            "etcd_server_proposals_failed",
            "Proposals whose writers were told they failed or may have.",
            shards.iter().map(|s| s.proposals_failed.get()).sum(),
        )?;
        out.histograms(
            "etcd_disk_wal_fsync_duration_seconds",
            "Durable WAL writes (write and sync, one group commit), every shard.",
            &summed(node, |s| &s.wal_sync),
        )?;
        out.histograms(
            "etcd_disk_backend_commit_duration_seconds",
            "Commits of the shards' B+-tree files.",
            &summed(node, |s| &s.tree_sync),
        )?;
        out.gauge(
            "etcd_mvcc_db_total_size_in_bytes",
            "Bytes of the shards' tree files together.",
            sum(&|s| s.db_size.get()),
        )?;
        out.gauge(
            "etcd_mvcc_db_total_size_in_use_in_bytes",
            "Bytes of the shards' tree files in use together.",
            sum(&|s| s.db_in_use.get()),
        )?;
        out.gauge(
            "etcd_debugging_mvcc_watcher_total",
            "Watches open on this member's shards (a watch over several shards counts on each).",
            sum(&|s| s.watchers.get()),
        )?;
        out.histograms(
            "etcd_network_peer_round_trip_time_seconds",
            "Heartbeat round trips to each peer, over every shard this member leads.",
            &self.peer_round_trips(),
        )
    }

    fn peer_round_trips(&self) -> Vec<(Labels, HistogramReading)> {
        let mut by_peer: Vec<(u64, HistogramReading)> = Vec::new();
        for shard in &self.node.shards {
            for (peer, reading) in shard.peer_round_trips.read() {
                match by_peer.iter_mut().find(|(p, _)| *p == peer) {
                    Some((_, sum)) => sum.merge(&reading),
                    None => by_peer.push((peer, reading)),
                }
            }
        }
        by_peer.sort_by_key(|(peer, _)| *peer);
        by_peer
            .into_iter()
            .map(|(peer, reading)| (vec![("To", format!("{peer:x}"))], reading))
            .collect()
    }

    /// go-grpc-prometheus' server metrics for etcd's API front.
    fn encode_grpc(&self, out: &mut Family<'_, '_>) -> std::fmt::Result {
        let method_labels = |(service, name, kind): &(&str, &str, CallType)| -> Labels {
            vec![
                ("grpc_method", name.to_string()),
                ("grpc_service", service.to_string()),
                ("grpc_type", kind.label().to_string()),
            ]
        };
        let started: Vec<(Labels, u64)> = METHODS
            .iter()
            .enumerate()
            .map(|(m, method)| (method_labels(method), self.calls.started_count(m)))
            .collect();
        out.counters(
            "grpc_server_started",
            "RPCs started on the server.",
            &started,
        )?;
        let mut handled = Vec::new();
        for (m, method) in METHODS.iter().enumerate() {
            for (code, name) in CODES.iter().enumerate() {
                let count = self.calls.handled_count(m, code);
                // Every method's OK, and any other code that happened.
                if count > 0 || code == 0 {
                    let mut labels = vec![("grpc_code", name.to_string())];
                    labels.extend(method_labels(method));
                    handled.push((labels, count));
                }
            }
        }
        out.counters(
            "grpc_server_handled",
            "RPCs completed on the server, by status code.",
            &handled,
        )
    }

    /// keel's own, per shard (with its core, for sums by core).
    fn encode_shards(&self, out: &mut Family<'_, '_>) -> std::fmt::Result {
        let node = &*self.node;
        out.counters(
            "keel_shard_proposals",
            "Entries proposed by the shard's leader on this member.",
            &per_shard(node, |s| s.proposals.get()),
        )?;
        out.counters(
            "keel_shard_proposals_failed",
            "Proposals whose writers were told they failed or may have.",
            &per_shard(node, |s| s.proposals_failed.get()),
        )?;
        out.counters(
            "keel_shard_applied_entries",
            "Committed entries applied to the shard's keyspace.",
            &per_shard(node, |s| s.applied_entries.get()),
        )?;
        out.counters(
            "keel_shard_leader_changes",
            "Leader changes the shard's replica saw.",
            &per_shard(node, |s| s.leader_changes.get()),
        )?;
        out.gauges(
            "keel_shard_is_leader",
            "Whether this member leads the shard.",
            &per_shard(node, |s| s.is_leader.get()),
        )?;
        out.gauges(
            "keel_shard_has_leader",
            "Whether the shard's replica knows a leader.",
            &per_shard(node, |s| s.has_leader.get()),
        )?;
        out.gauges(
            "keel_shard_term",
            "The shard's Raft term.",
            &per_shard(node, |s| s.term.get()),
        )?;
        out.gauges(
            "keel_shard_applied_index",
            "The shard's last applied Raft index.",
            &per_shard(node, |s| s.applied_index.get()),
        )?;
        out.histograms(
            "keel_shard_read_index_duration_seconds",
            "ReadIndex rounds (linearizable reads) from asking to the index.",
            &per_shard(node, |s| s.read_index.read()),
        )?;
        out.histograms(
            "keel_shard_wal_sync_duration_seconds",
            "The shard's durable WAL writes (one group commit each).",
            &per_shard(node, |s| s.wal_sync.read()),
        )?;
        out.histograms(
            "keel_shard_tree_sync_duration_seconds",
            "The shard's tree commits, start to end (in the background).",
            &per_shard(node, |s| s.tree_sync.read()),
        )?;
        out.histograms(
            "keel_shard_tree_sync_wait_seconds",
            "Time the shard stood still waiting for a tree commit.",
            &per_shard(node, |s| s.tree_sync_wait.read()),
        )?;
        out.gauges(
            "keel_shard_db_size_bytes",
            "Bytes of the shard's tree file.",
            &per_shard(node, |s| s.db_size.get()),
        )?;
        out.gauges(
            "keel_shard_watchers",
            "Watches fed by the shard.",
            &per_shard(node, |s| s.watchers.get()),
        )?;
        out.gauges(
            "keel_shard_watch_backlog_bytes",
            "Bytes of events the shard sent to watches, not yet handed out.",
            &per_shard(node, |s| s.watch_backlog.get()),
        )?;
        out.counters(
            "keel_shard_snapshot_sends",
            "Snapshots the shard's leader sent to followers.",
            &per_shard(node, |s| s.snapshot_sends.get()),
        )?;
        out.counters(
            "keel_shard_snapshot_send_failures",
            "Snapshots a follower did not get.",
            &per_shard(node, |s| s.snapshot_send_failures.get()),
        )?;
        out.counters(
            "keel_shard_hash_asks",
            "Members asked for their hash of the shard (corruption checks).",
            &per_shard(node, |s| s.hash_asks.get()),
        )?;
        out.counters(
            "keel_shard_snapshots_installed",
            "Snapshots the shard's replica installed (it was behind).",
            &per_shard(node, |s| s.snapshots_installed.get()),
        )
    }
}
