//! keel's load generator, the `bench` binary: one workload, driven against
//! keel (through `keel-client`) or a real etcd (through its gRPC API), with
//! latency measured from each request's intended send time.
//!
//! - [`args`]: the command line;
//! - [`target`]: keel or etcd behind one set of calls;
//! - [`etcd`]: the client of etcd's gRPC API;
//! - [`keys`]: the keyspace and its uniform or zipfian choice;
//! - [`cpu`]: the server's CPU time, from `/proc`;
//! - [`scrape`]: a metrics endpoint fetched through the run (`--scrape`);
//! - [`schedule`]: open-loop pacing;
//! - [`record`]: histograms per kind of operation;
//! - [`workload`]: kv (reads, writes, ranges), watch fan-out, a burst of
//!   expiring leases, lease churn;
//! - [`report`], [`plot`] and [`progress`]: what a run shows.

pub mod args;
pub mod cpu;
pub mod etcd;
#[cfg(test)]
pub(crate) mod fake_target;
pub mod keys;
pub mod plot;
pub mod progress;
pub mod record;
pub mod report;
pub mod schedule;
pub mod scrape;
pub mod target;
pub mod workload;
