//! The command line of `bench`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};

use crate::keys::Distribution;
use crate::target::TargetUrl;

/// keel's load generator: one workload against keel or a real etcd, with
/// latency measured from each request's intended send time.
#[derive(Debug, Parser)]
#[command(name = "bench", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Turns the JSON of finished runs into a Markdown comparison.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The run's settings.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Commands other than a run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Writes Markdown tables comparing the runs in the given JSON files
    /// (from `--json`), one table per run name, each with the ratios of
    /// every label to the last.
    Report {
        /// JSON files written by `bench --json`.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
    },
}

/// What to run and how.
#[derive(Debug, Clone, ClapArgs)]
pub struct RunArgs {
    /// The system: keel://HOST:PORT or etcd://HOST:PORT.
    #[arg(long, default_value = "keel://127.0.0.1:2379")]
    pub target: TargetUrl,

    /// The workload: kv operations (reads, writes, ranges), watch fan-out,
    /// a burst of leases expiring together, or lease churn at a steady rate.
    #[arg(long, value_enum, default_value_t = Workload::Kv)]
    pub workload: Workload,

    /// Open loop: point reads per second (e.g. 2000/s).
    #[arg(long, value_parser = parse_rate, value_name = "N/s")]
    pub reads: Option<f64>,
    /// Open loop: durable writes per second (the watch workload's put rate).
    #[arg(long, value_parser = parse_rate, value_name = "N/s")]
    pub writes: Option<f64>,
    /// Open loop: range reads of --range-size keys per second.
    #[arg(long, value_parser = parse_rate, value_name = "N/s")]
    pub ranges: Option<f64>,

    /// Closed loop: as many operations as --concurrency workers can issue,
    /// each waiting for its answer before the next.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "writes")]
    pub max: Option<MaxOps>,
    /// Closed loop: workers (each with one request in flight); also the
    /// lease workload's workers.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// `--max mix`: the share of reads, in percent (the rest are writes).
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub read_percent: u8,

    /// How long to measure (e.g. 10s, 500ms, 2m).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// How long to run before measuring.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub warmup: Duration,
    /// Connections to the target; operations are spread over them.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Threads of the load generator.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,

    /// Keys in the keyspace.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// How keys are picked.
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    pub distribution: Distribution,
    /// The exponent of the zipfian distribution.
    #[arg(long, default_value_t = 0.99)]
    pub zipf_exponent: f64,
    /// Bytes per key (longer if the key numbers need it).
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Do not write every key before the run. Reads of keys that do not
    /// exist then count as successes.
    #[arg(long)]
    pub no_prefill: bool,
    /// Serve reads from the replica's state without a Raft round.
    #[arg(long)]
    pub serializable: bool,
    /// Keys per range read.
    #[arg(long, default_value_t = 1000)]
    pub range_size: u64,
    /// The seed of every random choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Watch workload: watchers of the prefix the writes go to.
    #[arg(long, default_value_t = 1000)]
    pub watchers: usize,
    /// Watch workload: how an etcd client carries its watches: a gRPC
    /// stream per watcher, or one stream per connection carrying all of
    /// its watchers (what etcd's Go client does). keel's client carries a
    /// connection's watches on its sockets either way.
    #[arg(long, value_enum, default_value_t = WatchStreams::PerWatcher)]
    pub watch_streams: WatchStreams,
    /// Lease workload: leases granted, renewed once and left to expire.
    #[arg(long, default_value_t = 10_000)]
    pub leases: usize,
    /// Lease and lease-churn workloads: the leases' time to live.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub lease_ttl: Duration,
    /// Lease-churn workload: leases granted per second, open loop
    /// (default 500/s).
    #[arg(long, value_parser = parse_rate, value_name = "N/s")]
    pub grants: Option<f64>,
    /// Lease-churn workload: the share of leases revoked after half their
    /// TTL, in percent; the rest are left to expire.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub revoke_percent: u8,

    /// The server's process id, when it runs on this machine: its CPU time
    /// over the measured window (from /proc/PID/stat) goes into the report.
    /// For a cluster on this machine, every member's, comma-separated: the
    /// report has their sum.
    #[arg(long, value_name = "PID,...", value_delimiter = ',')]
    pub server_pid: Vec<u32>,

    /// Fetch this metrics endpoint (`http://HOST:PORT/metrics`) every
    /// `--scrape-interval` for the whole run, as Prometheus would; the
    /// report's notes say how often and how long each took.
    #[arg(long, value_name = "URL", value_parser = crate::scrape::parse_scrape_url)]
    pub scrape: Option<crate::scrape::ScrapeUrl>,
    /// Time between two scrapes (`--scrape`).
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub scrape_interval: Duration,

    /// The run's name in reports (default: from the workload).
    #[arg(long)]
    pub name: Option<String>,
    /// The run's label in tables and plots (default: the target's system).
    #[arg(long)]
    pub label: Option<String>,
    /// Speak TLS to the target, checking its certificate against these
    /// authorities (PEM).
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// The client certificate shown over TLS (PEM), for a server that
    /// asks for one.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// The private key of --cert.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Log in as this user (`name:password`) on a target with auth on
    /// (keel targets).
    #[arg(long)]
    pub user: Option<String>,
    /// Print the results as JSON on standard output instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Add this run's latency percentiles to an SVG chart (created if
    /// missing; runs already in it stay, so several runs share a chart).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
}

/// The workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Point reads, writes and range reads.
    Kv,
    /// --watchers watch one prefix; --writes puts per second go to it.
    Watch,
    /// --leases leases with a key each: granted, renewed once, expired
    /// together.
    Lease,
    /// --grants leases a second with a key each, each revoked after half
    /// its TTL or left to expire.
    LeaseChurn,
}

/// How an etcd client carries its watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WatchStreams {
    /// A gRPC stream per watcher.
    PerWatcher,
    /// One gRPC stream per connection, carrying all of its watchers.
    PerConnection,
}

/// What a closed-loop run issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MaxOps {
    /// Durable puts.
    Writes,
    /// Point reads.
    Reads,
    /// Range reads of --range-size keys.
    Ranges,
    /// --read-percent reads, the rest writes.
    Mix,
}

impl RunArgs {
    /// Checks that the options make one runnable workload.
    ///
    /// # Errors
    /// Names the conflict or the missing option.
    pub fn validate(&self) -> Result<()> {
        let open_loop = self.reads.is_some() || self.writes.is_some() || self.ranges.is_some();
        if self.grants.is_some() && self.workload != Workload::LeaseChurn {
            bail!("--grants is the lease-churn workload's rate (--workload lease-churn)");
        }
        match self.workload {
            Workload::Kv => {
                if open_loop && self.max.is_some() {
                    bail!("--max runs a closed loop; it cannot be combined with --reads, --writes or --ranges rates");
                }
                if !open_loop && self.max.is_none() {
                    bail!("say what to run: rates (--reads 2000/s, --writes 200/s, --ranges 10/s) or --max [writes|reads|ranges|mix]");
                }
            }
            Workload::Watch => {
                if self.max.is_some() || self.reads.is_some() || self.ranges.is_some() {
                    bail!("the watch workload takes --writes N/s and --watchers N only");
                }
                if self.watchers == 0 {
                    bail!("the watch workload needs at least one watcher");
                }
            }
            Workload::Lease => {
                if open_loop || self.max.is_some() {
                    bail!("the lease workload takes --leases, --lease-ttl and --concurrency only");
                }
                check_lease_ttl(self.lease_ttl)?;
            }
            Workload::LeaseChurn => {
                if open_loop || self.max.is_some() {
                    bail!("the lease-churn workload takes --grants, --lease-ttl and --revoke-percent only");
                }
                check_lease_ttl(self.lease_ttl)?;
            }
        }
        if self.concurrency == 0 || self.connections == 0 || self.threads == 0 {
            bail!("--concurrency, --connections and --threads must be at least 1");
        }
        if self.duration.is_zero() {
            bail!("--duration must be more than 0");
        }
        Ok(())
    }

    /// The run's name: `--name`, or one made from the workload.
    pub fn run_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        let serializable = if self.serializable {
            " serializable"
        } else {
            ""
        };
        match self.workload {
            Workload::Watch => format!(
                "watch: {} watchers{}, {} writes/s",
                self.watchers,
                match self.watch_streams {
                    WatchStreams::PerWatcher => "",
                    WatchStreams::PerConnection => " on a stream per connection",
                },
                self.watch_write_rate()
            ),
            Workload::Lease => format!("lease burst: {} leases", self.leases),
            Workload::LeaseChurn => format!(
                "lease churn: {} grants/s, {} s TTL, {}% revoked",
                self.churn_grant_rate(),
                self.lease_ttl_seconds(),
                self.revoke_percent
            ),
            Workload::Kv => match self.max {
                Some(ops) => format!(
                    "max {}{serializable}, concurrency {}",
                    match ops {
                        MaxOps::Writes => "writes".to_string(),
                        MaxOps::Reads => "reads".to_string(),
                        MaxOps::Ranges => format!("ranges of {}", self.range_size),
                        MaxOps::Mix =>
                            format!("{}/{} mix", self.read_percent, 100 - self.read_percent),
                    },
                    self.concurrency
                ),
                None => {
                    let mut parts = Vec::new();
                    for (rate, what) in [
                        (self.reads, "reads"),
                        (self.writes, "writes"),
                        (self.ranges, "ranges"),
                    ] {
                        if let Some(rate) = rate {
                            parts.push(format!("{rate} {what}/s"));
                        }
                    }
                    format!("{}{serializable}", parts.join(" + "))
                }
            },
        }
    }

    /// The keyspace the options describe, under `prefix`.
    ///
    /// # Errors
    /// When `--keys` is 0 or the zipfian exponent is not positive.
    pub fn keyspace(&self, prefix: &str) -> Result<crate::keys::KeySpace> {
        crate::keys::KeySpace::new(
            prefix,
            self.keys,
            self.key_size,
            self.distribution,
            self.zipf_exponent,
        )
    }

    /// The watch workload's put rate: `--writes`, else 100 a second.
    pub fn watch_write_rate(&self) -> f64 {
        self.writes.unwrap_or(100.0)
    }

    /// The lease-churn workload's grant rate: `--grants`, else 500 a
    /// second (half of etcd's limit of 1,000 expiry revokes a second).
    pub fn churn_grant_rate(&self) -> f64 {
        self.grants.unwrap_or(500.0)
    }

    /// `--lease-ttl` in the whole seconds a lease is granted for, rounded
    /// up so that a lease never lives shorter than asked.
    pub fn lease_ttl_seconds(&self) -> i64 {
        i64::try_from(self.lease_ttl.as_secs() + u64::from(self.lease_ttl.subsec_nanos() > 0))
            .unwrap_or(i64::MAX)
    }

    /// How to reach the target: TLS when `--cacert` is given.
    pub fn security(&self) -> crate::target::Security {
        crate::target::Security {
            tls: self.cacert.as_ref().map(|ca| keel_client::tls::TlsFiles {
                ca: Some(ca.clone()),
                cert: self.cert.clone(),
                key: self.key.clone(),
            }),
            credentials: self.user.as_ref().map(|user| {
                let (user, password) = user.split_once(':').unwrap_or((user, ""));
                keel_client::Credentials {
                    user: user.to_string(),
                    password: password.to_string(),
                }
            }),
        }
    }

    /// The run's label: `--label`, or the target's system.
    pub fn run_label(&self) -> String {
        self.label
            .clone()
            .unwrap_or_else(|| self.target.kind.scheme().to_string())
    }
}

/// etcd refuses TTLs under about 1.5 s (it raises them to its minimum).
fn check_lease_ttl(ttl: Duration) -> Result<()> {
    if ttl < Duration::from_secs(2) {
        bail!("--lease-ttl must be at least 2s (etcd's shortest is about 1.5s)");
    }
    Ok(())
}

/// Parses a rate: `2000/s`, `2000`, or `120/m`.
///
/// # Errors
/// When it is not a positive number per second or minute.
pub fn parse_rate(text: &str) -> Result<f64> {
    let (number, per) = match text.split_once('/') {
        Some((number, unit)) => match unit {
            "s" => (number, 1.0),
            "m" => (number, 60.0),
            other => bail!("a rate is per second (/s) or per minute (/m), not /{other}"),
        },
        None => (text, 1.0),
    };
    let count: f64 = number.trim().parse().map_err(|_| {
        anyhow!("a rate is a number of operations per second, like 2000/s, not {text:?}")
    })?;
    if !(count.is_finite() && count > 0.0) {
        bail!("a rate must be more than 0, not {text:?}");
    }
    Ok(count / per)
}

/// Parses a duration: `10s`, `500ms`, `2m`, or a plain number of seconds.
///
/// # Errors
/// When it is not a number with one of those units.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| anyhow!("a duration is like 10s, 500ms or 2m, not {text:?}"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        other => bail!("unknown duration unit {other:?} in {text:?}: use ms, s or m"),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| anyhow!("duration {text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<RunArgs> {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))?;
        cli.run.validate()?;
        Ok(cli.run)
    }

    #[test]
    fn rates_and_durations_parse_with_their_units() {
        assert_eq!(parse_rate("2000/s").unwrap(), 2000.0);
        assert_eq!(parse_rate("2000").unwrap(), 2000.0);
        assert_eq!(parse_rate("120/m").unwrap(), 2.0);
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("10/h").is_err());
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("10h").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn the_issue_examples_parse() {
        let run = parse(&["--reads", "2000/s"]).unwrap();
        assert_eq!(run.reads, Some(2000.0));
        assert_eq!(run.run_name(), "2000 reads/s");
        let run = parse(&["--reads", "1800/s", "--writes", "200/s"]).unwrap();
        assert_eq!(run.run_name(), "1800 reads/s + 200 writes/s");
        let run = parse(&["--max", "--concurrency", "512"]).unwrap();
        assert_eq!(run.max, Some(MaxOps::Writes));
        assert_eq!(run.run_name(), "max writes, concurrency 512");
        let run = parse(&[
            "--max",
            "reads",
            "--serializable",
            "--target",
            "etcd://127.0.0.1:2379",
        ])
        .unwrap();
        assert_eq!(run.run_name(), "max reads serializable, concurrency 64");
        assert_eq!(run.run_label(), "etcd");
        let run = parse(&["--workload", "watch"]).unwrap();
        assert_eq!(run.run_name(), "watch: 1000 watchers, 100 writes/s");
        let run = parse(&["--workload", "lease"]).unwrap();
        assert_eq!(run.run_name(), "lease burst: 10000 leases");
    }

    #[test]
    fn lease_churn_defaults_to_half_of_etcds_expiry_limit() {
        let run = parse(&["--workload", "lease-churn", "--lease-ttl", "3s"]).unwrap();
        assert_eq!(run.churn_grant_rate(), 500.0);
        assert_eq!(run.revoke_percent, 50);
        assert_eq!(
            run.run_name(),
            "lease churn: 500 grants/s, 3 s TTL, 50% revoked"
        );
        let run = parse(&[
            "--workload",
            "lease-churn",
            "--grants",
            "200/s",
            "--lease-ttl",
            "2.5s",
            "--revoke-percent",
            "0",
            "--server-pid",
            "42",
        ])
        .unwrap();
        assert_eq!(run.churn_grant_rate(), 200.0);
        assert_eq!(run.lease_ttl_seconds(), 3, "TTLs round up to whole seconds");
        assert_eq!(run.server_pid, vec![42]);
    }

    #[test]
    fn conflicting_or_missing_choices_are_refused() {
        let refused = |args: &[&str]| parse(args).unwrap_err().to_string();
        assert!(refused(&[]).contains("say what to run"));
        assert!(refused(&["--max", "--reads", "10/s"]).contains("closed loop"));
        assert!(refused(&["--workload", "watch", "--reads", "10/s"]).contains("watch workload"));
        assert!(refused(&["--workload", "lease", "--lease-ttl", "1s"]).contains("at least 2s"));
        assert!(refused(&["--max", "--connections", "0"]).contains("at least 1"));
        assert!(refused(&["--max", "--grants", "10/s"]).contains("lease-churn"));
        assert!(refused(&["--workload", "lease-churn", "--writes", "10/s"]).contains("lease-churn"));
        assert!(refused(&["--workload", "lease-churn", "--max"]).contains("lease-churn"));
        assert!(
            refused(&["--workload", "lease-churn", "--lease-ttl", "1s"]).contains("at least 2s")
        );
        assert!(Cli::try_parse_from([
            "bench",
            "--workload",
            "lease-churn",
            "--revoke-percent",
            "101"
        ])
        .is_err());
        assert!(refused(&["--max", "--target", "keel:/x"]).contains("keel://HOST:PORT"));
    }
}
