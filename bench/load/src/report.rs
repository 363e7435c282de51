//! The results of a run: the table people read, the JSON machines read,
//! and Markdown tables that set runs of the same workload side by side,
//! each system's repeats summed up as their median and range.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::record::OpTotals;

/// Everything a run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The workload's name; runs with the same name are compared.
    pub name: String,
    /// Who ran it (`keel`, `etcd`, or `--label`).
    pub label: String,
    /// The target URL.
    pub target: String,
    /// `open loop`, `closed loop, concurrency N`, or the workload's own.
    pub mode: String,
    /// Connections to the target (`--connections`).
    pub connections: usize,
    /// Sockets those connections open: one each for etcd; for keel, one to
    /// the client port and one to each core's port (opened when a request
    /// first goes to that core).
    #[serde(default)]
    pub sockets: Option<usize>,
    /// The server's CPU time (user and system) over the measured window,
    /// in seconds (`--server-pid`).
    #[serde(default)]
    pub server_cpu_seconds: Option<f64>,
    /// Seconds measured.
    pub seconds: f64,
    /// One entry per kind of operation.
    pub ops: Vec<OpReport>,
    /// Anything else the workload measured, in words.
    pub notes: Vec<String>,
    /// The chart the run was added to (`--plot`), as given.
    #[serde(default)]
    pub plot: Option<String>,
}

/// What one kind of operation did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpReport {
    /// The kind (`read`, `write`, ...).
    pub op: String,
    /// The rate asked for, per second (open loop).
    pub target_rate: Option<f64>,
    /// Successful operations.
    pub count: u64,
    /// Successful operations per second (`None` where a rate means
    /// nothing, as for lease expiries, which happen when they are due).
    pub rate: Option<f64>,
    /// Failed operations.
    pub errors: u64,
    /// The first failure.
    pub first_error: Option<String>,
    /// The server's CPU time per request, in microseconds: its CPU time
    /// over the measured window divided by every request of any kind the
    /// run completed in that window. `None` for what is not a request
    /// (watch events, expiries) and without `--server-pid`.
    #[serde(default)]
    pub server_cpu_us: Option<f64>,
    /// Latency percentiles, in microseconds.
    pub latency_us: Percentiles,
    /// The latency curve for plots: (percentile, microseconds), rising.
    pub curve: Vec<(f64, f64)>,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// The slowest.
    pub max: f64,
}

impl OpReport {
    /// Summarises `totals` over `elapsed` (`None`: no rate), with the
    /// asked rate if any.
    pub fn from_totals(
        totals: &OpTotals,
        elapsed: Option<Duration>,
        target_rate: Option<f64>,
    ) -> OpReport {
        let h = &totals.latencies;
        let micros = |nanos: u64| nanos as f64 / 1000.0;
        let curve = if h.is_empty() {
            Vec::new()
        } else {
            h.iter_quantiles(4)
                .map(|step| {
                    (
                        step.quantile_iterated_to() * 100.0,
                        micros(h.highest_equivalent(step.value_iterated_to())),
                    )
                })
                .collect()
        };
        OpReport {
            op: totals.op.name().to_string(),
            target_rate,
            count: h.len(),
            // Timed-out requests are in the histogram (at their time) but
            // are not successes.
            rate: elapsed.map(|e| {
                h.len().saturating_sub(totals.timeouts) as f64 / e.as_secs_f64().max(1e-9)
            }),
            errors: totals.errors,
            first_error: totals.first_error.clone(),
            server_cpu_us: None,
            latency_us: Percentiles {
                p50: micros(h.value_at_quantile(0.5)),
                p90: micros(h.value_at_quantile(0.9)),
                p99: micros(h.value_at_quantile(0.99)),
                p999: micros(h.value_at_quantile(0.999)),
                max: micros(h.max()),
            },
            curve,
        }
    }
}

/// A latency in microseconds as milliseconds with three significant digits.
pub fn format_latency(micros: f64) -> String {
    let ms = micros / 1000.0;
    if ms < 1.0 {
        format!("{ms:.3} ms")
    } else if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// CPU time in microseconds: three significant digits, in milliseconds
/// from 1 ms.
pub fn format_cpu(micros: f64) -> String {
    if micros >= 1000.0 {
        format_latency(micros)
    } else if micros >= 100.0 {
        format!("{micros:.0} us")
    } else if micros >= 10.0 {
        format!("{micros:.1} us")
    } else {
        format!("{micros:.2} us")
    }
}

fn format_rate(rate: f64) -> String {
    if rate >= 100.0 {
        format!("{rate:.0}")
    } else {
        format!("{rate:.1}")
    }
}

impl RunReport {
    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} against {} ({}, {}, {:.1} s measured)\n",
            self.name,
            self.target,
            self.mode,
            connections(self),
            self.seconds
        );
        let header = [
            "op",
            "asked/s",
            "done/s",
            "server cpu/op",
            "errors",
            "p50",
            "p90",
            "p99",
            "p99.9",
            "max",
        ];
        let mut rows = vec![header.map(str::to_string).to_vec()];
        for op in &self.ops {
            let l = op.latency_us;
            rows.push(vec![
                op.op.clone(),
                op.target_rate.map_or("-".to_string(), format_rate),
                op.rate.map_or("-".to_string(), format_rate),
                op.server_cpu_us.map_or("-".to_string(), format_cpu),
                op.errors.to_string(),
                format_latency(l.p50),
                format_latency(l.p90),
                format_latency(l.p99),
                format_latency(l.p999),
                format_latency(l.max),
            ]);
        }
        let widths: Vec<usize> = (0..header.len())
            .map(|c| {
                rows.iter()
                    .map(|r| r.get(c).map_or(0, String::len))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in &rows {
            for (c, cell) in row.iter().enumerate() {
                let width = widths.get(c).copied().unwrap_or(0);
                if c == 0 {
                    let _ = write!(out, "{cell:<width$}");
                } else {
                    let _ = write!(out, "  {cell:>width$}");
                }
            }
            out.push('\n');
        }
        for op in self.ops.iter().filter(|op| op.errors > 0) {
            if let Some(error) = &op.first_error {
                let _ = writeln!(out, "first {} error: {error}", op.op);
            }
        }
        for note in &self.notes {
            let _ = writeln!(out, "{note}");
        }
        out
    }
}

/// `8 connections` or `8 connections, 24 sockets`.
fn connections(run: &RunReport) -> String {
    match run.sockets {
        Some(sockets) if sockets != run.connections => {
            format!("{} connections, {sockets} sockets", run.connections)
        }
        _ => format!("{} connections", run.connections),
    }
}

/// The median and the range of one figure across the repeats of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// The middle value (the mean of the two middle ones for an even
    /// count).
    pub median: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl Spread {
    /// The spread of `values`, NaNs left out; `None` when none is left.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut values: Vec<f64> = values.into_iter().filter(|v| !v.is_nan()).collect();
        values.sort_by(f64::total_cmp);
        let (min, max) = (*values.first()?, *values.last()?);
        let upper = values.len() / 2;
        let median = if values.len() % 2 == 1 {
            *values.get(upper)?
        } else {
            (*values.get(upper - 1)? + *values.get(upper)?) / 2.0
        };
        Some(Spread { median, min, max })
    }

    /// The median formatted by `format`, then the range when the repeats
    /// differ as formatted: `2.10 ms (1.95–2.40)`.
    fn show(self, format: impl Fn(f64) -> String) -> String {
        let median = format(self.median);
        let (low, high) = (format(self.min), format(self.max));
        if low == high {
            return median;
        }
        let unit = |text: &str| text.split_once(' ').map(|(_, unit)| unit.to_string());
        let number = |text: &str| {
            text.split_once(' ')
                .map_or(text.to_string(), |(number, _)| number.to_string())
        };
        if unit(&low) == unit(&median) && unit(&high) == unit(&median) {
            format!("{median} ({}–{})", number(&low), number(&high))
        } else {
            format!("{median} ({low}–{high})")
        }
    }
}

/// One kind of operation of one system, over that system's repeats of a
/// run.
#[derive(Debug, Clone, PartialEq)]
pub struct OpSummary {
    /// The kind.
    pub op: String,
    /// The rate asked for (open loop), from the first repeat.
    pub target_rate: Option<f64>,
    /// The achieved rates.
    pub rate: Option<Spread>,
    /// The server's CPU per request, in microseconds.
    pub server_cpu_us: Option<Spread>,
    /// Errors of every repeat together.
    pub errors: u64,
    /// p50, p90, p99, p99.9 and the maximum, in microseconds.
    pub latency_us: [Spread; 5],
}

/// Each kind of operation of `runs` (repeats of one run by one system), in
/// first-seen order, as the median and range over the repeats that did it.
pub fn summarize(runs: &[&RunReport]) -> Vec<OpSummary> {
    let mut kinds: Vec<&str> = Vec::new();
    for op in runs.iter().flat_map(|run| &run.ops) {
        if !kinds.contains(&op.op.as_str()) {
            kinds.push(&op.op);
        }
    }
    let mut summaries = Vec::new();
    for kind in kinds {
        let ops: Vec<&OpReport> = runs
            .iter()
            .filter_map(|run| run.ops.iter().find(|op| op.op == kind))
            .collect();
        let latency = |percentile: fn(&Percentiles) -> f64| {
            Spread::of(ops.iter().map(|op| percentile(&op.latency_us)))
        };
        let (Some(p50), Some(p90), Some(p99), Some(p999), Some(max)) = (
            latency(|l| l.p50),
            latency(|l| l.p90),
            latency(|l| l.p99),
            latency(|l| l.p999),
            latency(|l| l.max),
        ) else {
            continue;
        };
        summaries.push(OpSummary {
            op: kind.to_string(),
            target_rate: ops.iter().find_map(|op| op.target_rate),
            rate: Spread::of(ops.iter().filter_map(|op| op.rate)),
            server_cpu_us: Spread::of(ops.iter().filter_map(|op| op.server_cpu_us)),
            errors: ops.iter().map(|op| op.errors).sum(),
            latency_us: [p50, p90, p99, p999, max],
        });
    }
    summaries
}

/// One system's repeats of one run.
struct SystemRuns<'a> {
    label: &'a str,
    runs: Vec<&'a RunReport>,
    ops: Vec<OpSummary>,
}

/// Markdown: per run name (in first-seen order), one table with a row per
/// label and operation, and, when two or more labels ran it, rows saying
/// how each label compares with the last. Runs with the same name and
/// label are repeats: a row gives their median with the range across them,
/// and the comparison compares medians.
pub fn markdown(runs: &[RunReport]) -> String {
    let mut order: Vec<&str> = Vec::new();
    let mut by_name: BTreeMap<&str, Vec<&RunReport>> = BTreeMap::new();
    for run in runs {
        if !by_name.contains_key(run.name.as_str()) {
            order.push(&run.name);
        }
        by_name.entry(&run.name).or_default().push(run);
    }
    let mut out = String::new();
    for name in order {
        let group = by_name.get(name).cloned().unwrap_or_default();
        let mut systems: Vec<SystemRuns> = Vec::new();
        for run in &group {
            match systems.iter_mut().find(|s| s.label == run.label) {
                Some(system) => system.runs.push(run),
                None => systems.push(SystemRuns {
                    label: &run.label,
                    runs: vec![run],
                    ops: Vec::new(),
                }),
            }
        }
        for system in &mut systems {
            system.ops = summarize(&system.runs);
        }
        let _ = writeln!(out, "### {name}\n");
        let _ = writeln!(out, "{}\n", table_caption(&systems));
        out.push_str(
            "| run | op | done/s | server CPU/op | errors | p50 | p90 | p99 | p99.9 | max |\n",
        );
        out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
        for system in &systems {
            for op in &system.ops {
                let [p50, p90, p99, p999, max] = op.latency_us.map(|l| l.show(format_latency));
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {p50} | {p90} | {p99} | {p999} | {max} |",
                    system.label,
                    op.op,
                    op.rate.map_or("-".to_string(), |r| r.show(format_rate)),
                    op.server_cpu_us
                        .map_or("-".to_string(), |c| c.show(format_cpu)),
                    op.errors,
                );
            }
        }
        // Each label against the last (etcd, in compare.sh's order).
        let others = systems.len().saturating_sub(1);
        for (ours, theirs) in systems
            .iter()
            .take(others)
            .filter_map(|ours| systems.last().map(|theirs| (ours, theirs)))
        {
            for op in &ours.ops {
                let Some(other) = theirs.ops.iter().find(|o| o.op == op.op) else {
                    continue;
                };
                let [a50, a90, a99, a999, a_max] = op.latency_us.map(|l| l.median);
                let [b50, b90, b99, b999, b_max] = other.latency_us.map(|l| l.median);
                let p50 = latency_ratio(a50, b50);
                let p90 = latency_ratio(a90, b90);
                let p99 = latency_ratio(a99, b99);
                let p999 = latency_ratio(a999, b999);
                let max = latency_ratio(a_max, b_max);
                let cpu = match (op.server_cpu_us, other.server_cpu_us) {
                    (Some(a), Some(b)) => latency_ratio(a.median, b.median),
                    _ => "-".to_string(),
                };
                let _ = writeln!(
                    out,
                    "| **{} vs {}** | {} | **{}** | {cpu} | | {p50} | {p90} | **{p99}** | {p999} | {max} |",
                    ours.label,
                    theirs.label,
                    op.op,
                    rate_comparison(op, other),
                );
            }
        }
        out.push('\n');
        let mut charts: Vec<&str> = Vec::new();
        for chart in group.iter().filter_map(|run| run.plot.as_deref()) {
            if !charts.contains(&chart) {
                charts.push(chart);
            }
        }
        for chart in charts {
            let _ = writeln!(out, "![latency by percentile: {name}]({chart})\n");
        }
        for system in &systems {
            for (repeat, run) in system.runs.iter().enumerate() {
                let who = if system.runs.len() == 1 {
                    system.label.to_string()
                } else {
                    format!("{}, run {}", system.label, repeat + 1)
                };
                for note in &run.notes {
                    let _ = writeln!(out, "- {who}: {note}");
                }
                for op in run.ops.iter().filter(|op| op.errors > 0) {
                    if let Some(error) = &op.first_error {
                        let _ = writeln!(out, "- {who}: first {} error: {error}", op.op);
                    }
                }
            }
        }
        out.push('\n');
    }
    out
}

/// The line above a table: the mode, each system's connections and
/// sockets, and how many repeats the figures sum up.
fn table_caption(systems: &[SystemRuns]) -> String {
    let mode = systems
        .first()
        .and_then(|s| s.runs.first())
        .map_or(String::new(), |run| run.mode.clone());
    let sockets: Vec<String> = systems
        .iter()
        .filter_map(|s| {
            s.runs
                .first()
                .map(|run| format!("{}: {}", s.label, connections(run)))
        })
        .collect();
    let mut caption = format!("{mode}; {}.", sockets.join("; "));
    let counts: Vec<usize> = systems.iter().map(|s| s.runs.len()).collect();
    if counts.iter().any(|n| *n > 1) {
        let runs = if counts.windows(2).all(|w| w.first() == w.last()) {
            format!("{} runs of each", counts.first().copied().unwrap_or(0))
        } else {
            systems
                .iter()
                .map(|s| format!("{} runs of {}", s.runs.len(), s.label))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = write!(
            caption,
            " Medians of {runs}, with the range in brackets; errors of all runs together."
        );
    }
    caption
}

/// The rate cell of a comparison: "same rate" when both kept up with an
/// open loop's asked rate without errors, else the ratio of the (median)
/// rates.
fn rate_comparison(ours: &OpSummary, theirs: &OpSummary) -> String {
    let (Some(a), Some(b)) = (ours.rate, theirs.rate) else {
        return "-".to_string();
    };
    let kept_up = |op: &OpSummary, rate: Spread| {
        op.errors == 0
            && op
                .target_rate
                .is_some_and(|asked| rate.median >= asked * 0.99)
    };
    if kept_up(ours, a) && kept_up(theirs, b) {
        "same rate".to_string()
    } else {
        rate_ratio(a.median, b.median)
    }
}

/// How `ours` compares with `theirs`, where more is better (a rate):
/// "2.50x more" or "1.30x fewer"; a dash when it means nothing.
fn rate_ratio(ours: f64, theirs: f64) -> String {
    compare(ours, theirs, "more", "fewer")
}

/// How `ours` compares with `theirs`, where less is better (a latency):
/// "4.00x lower" or "1.20x higher".
fn latency_ratio(ours: f64, theirs: f64) -> String {
    compare(theirs, ours, "lower", "higher")
}

fn compare(better_if_larger: f64, other: f64, better: &str, worse: &str) -> String {
    if !(better_if_larger.is_finite() && other.is_finite())
        || better_if_larger <= 0.0
        || other <= 0.0
    {
        return "-".to_string();
    }
    let (ratio, word) = if better_if_larger >= other {
        (better_if_larger / other, better)
    } else {
        (other / better_if_larger, worse)
    };
    if ratio >= 10.0 {
        format!("{ratio:.0}x {word}")
    } else {
        format!("{ratio:.2}x {word}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{new_histogram, Op};

    fn totals(op: Op, micros: &[u64], errors: u64) -> OpTotals {
        let mut latencies = new_histogram();
        for m in micros {
            latencies.record(m * 1000).unwrap();
        }
        OpTotals {
            op,
            latencies,
            errors,
            timeouts: 0,
            first_error: (errors > 0).then(|| "refused".to_string()),
        }
    }

    fn run(label: &str, read_micros: u64, count: u64) -> RunReport {
        let micros: Vec<u64> = (0..count).map(|_| read_micros).collect();
        RunReport {
            name: "2000 reads/s".to_string(),
            label: label.to_string(),
            target: format!("{label}://127.0.0.1:1"),
            mode: "open loop".to_string(),
            connections: 8,
            sockets: None,
            server_cpu_seconds: None,
            seconds: 1.0,
            ops: vec![OpReport::from_totals(
                &totals(Op::Read, &micros, 0),
                Some(Duration::from_secs(1)),
                Some(2000.0),
            )],
            notes: Vec::new(),
            plot: Some("plots/reads.svg".to_string()),
        }
    }

    #[test]
    fn percentiles_rate_and_curve_come_from_the_histogram() {
        let micros: Vec<u64> = (1..=1000).collect();
        let report = OpReport::from_totals(
            &totals(Op::Write, &micros, 3),
            Some(Duration::from_secs(2)),
            None,
        );
        assert_eq!(report.count, 1000);
        assert_eq!(report.rate, Some(500.0));
        assert_eq!(report.errors, 3);
        let near = |value: f64, expected: f64| (value - expected).abs() <= expected * 0.002;
        assert!(
            near(report.latency_us.p50, 500.0),
            "{:?}",
            report.latency_us
        );
        assert!(
            near(report.latency_us.p99, 990.0),
            "{:?}",
            report.latency_us
        );
        assert!(
            near(report.latency_us.max, 1000.0),
            "{:?}",
            report.latency_us
        );
        assert!(report
            .curve
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(report.curve.last().map(|p| p.0), Some(100.0));
    }

    #[test]
    fn latencies_print_in_milliseconds_with_three_digits() {
        assert_eq!(format_latency(412.0), "0.412 ms");
        assert_eq!(format_latency(2_105.0), "2.10 ms");
        assert_eq!(format_latency(25_250.0), "25.2 ms");
        assert_eq!(format_latency(1_234_000.0), "1234 ms");
    }

    #[test]
    fn the_table_has_a_row_per_operation_and_the_first_error() {
        let mut report = run("keel", 100, 10);
        report.ops[0].errors = 1;
        report.ops[0].first_error = Some("lease 7 has expired".to_string());
        let table = report.table();
        assert!(table.starts_with(
            "2000 reads/s against keel://127.0.0.1:1 (open loop, 8 connections, 1.0 s measured)"
        ));
        assert!(table.contains("read"));
        assert!(table.contains("2000"));
        assert!(table.contains("0.100 ms"));
        assert!(table.contains("first read error: lease 7 has expired"));
    }

    #[test]
    fn markdown_sets_two_runs_of_a_workload_side_by_side_with_ratios() {
        let text = markdown(&[run("keel", 100, 2000), run("etcd", 500, 2000)]);
        assert_eq!(text.matches("### 2000 reads/s").count(), 1);
        assert!(text.contains("| keel | read | 2000 |"));
        assert!(text.contains("| etcd | read | 2000 |"));
        assert!(
            text.contains("| **keel vs etcd** | read | **same rate** |"),
            "{text}"
        );
        // 100 us and 500 us, as the histogram keeps them (3 digits).
        assert!(text.contains("| **4.98x lower** |"), "{text}");
        assert_eq!(
            text.matches("![latency by percentile: 2000 reads/s](plots/reads.svg)")
                .count(),
            1
        );
    }

    #[test]
    fn a_third_label_is_compared_with_the_last_too() {
        let text = markdown(&[
            run("keel", 100, 2000),
            run("keel via etcd API", 250, 2000),
            run("etcd", 500, 2000),
        ]);
        assert!(text.contains("| **keel vs etcd** | read |"), "{text}");
        assert!(
            text.contains("| **keel via etcd API vs etcd** | read |"),
            "{text}"
        );
        assert!(!text.contains("| **keel vs keel via etcd API**"), "{text}");
    }

    #[test]
    fn an_open_loop_that_fell_short_or_failed_gets_a_real_rate_ratio() {
        let keel = run("keel", 100, 2000);
        let mut etcd = run("etcd", 500, 1000);
        let text = markdown(&[keel.clone(), etcd.clone()]);
        assert!(
            text.contains("| **keel vs etcd** | read | **2.00x more** |"),
            "{text}"
        );
        etcd = run("etcd", 500, 2000);
        etcd.ops[0].errors = 1;
        let text = markdown(&[keel, etcd]);
        assert!(
            text.contains("| **keel vs etcd** | read | **1.00x more** |"),
            "{text}"
        );
        let mut no_rate = run("keel", 100, 10);
        no_rate.ops[0].rate = None;
        assert!(
            no_rate.table().lines().nth(2).unwrap().contains("  -  "),
            "{}",
            no_rate.table()
        );
    }

    /// Three repeats of a run whose rates and p50s are given, unsorted,
    /// with the server's CPU per read.
    fn repeats(label: &str, figures: &[(f64, f64, f64)]) -> Vec<RunReport> {
        figures
            .iter()
            .map(|&(rate, p50, cpu)| {
                let mut report = run(label, 100, 10);
                report.ops[0].rate = Some(rate);
                report.ops[0].latency_us.p50 = p50;
                report.ops[0].server_cpu_us = Some(cpu);
                report
            })
            .collect()
    }

    #[test]
    fn the_median_is_the_middle_value_not_the_mean_or_the_middle_repeat() {
        // Sorted: 1000, 1200, 3000. The mean is 1733; the second repeat
        // given is 3000.
        let spread = Spread::of([1000.0, 3000.0, 1200.0]).unwrap();
        assert_eq!(
            spread,
            Spread {
                median: 1200.0,
                min: 1000.0,
                max: 3000.0
            }
        );
        // An even count: the mean of the two middle values.
        assert_eq!(Spread::of([4.0, 1.0, 3.0, 10.0]).unwrap().median, 3.5);
        assert_eq!(Spread::of([7.0]).unwrap().median, 7.0);
        assert_eq!(Spread::of([f64::NAN, 2.0]).unwrap().median, 2.0);
        assert!(Spread::of([]).is_none());
    }

    #[test]
    fn repeats_show_their_median_and_range_and_compare_by_medians() {
        let mut runs = repeats(
            "keel",
            &[
                (1000.0, 300.0, 9.0),
                (3000.0, 100.0, 7.0),
                (1200.0, 200.0, 8.0),
            ],
        );
        runs.extend(repeats(
            "etcd",
            &[
                (600.0, 900.0, 40.0),
                (500.0, 800.0, 32.0),
                (700.0, 1000.0, 50.0),
            ],
        ));
        runs[0].sockets = Some(24);
        runs[3].sockets = Some(8);
        let text = markdown(&runs);
        assert_eq!(text.matches("### 2000 reads/s").count(), 1);
        assert!(
            text.contains("| keel | read | 1200 (1000–3000) | 8.00 us (7.00–9.00) | 0 | 0.200 ms (0.100–0.300) |"),
            "{text}"
        );
        assert!(
            text.contains(
                "| etcd | read | 600 (500–700) | 40.0 us (32.0–50.0) | 0 | 0.900 ms (0.800–1.00) |"
            ),
            "{text}"
        );
        // 1200 against 600; 8 us against 40 us; 0.2 ms against 0.9 ms.
        assert!(
            text.contains(
                "| **keel vs etcd** | read | **2.00x more** | 5.00x lower | | 4.50x lower |"
            ),
            "{text}"
        );
        assert!(
            text.contains("open loop; keel: 8 connections, 24 sockets; etcd: 8 connections. Medians of 3 runs of each"),
            "{text}"
        );
        assert_eq!(text.matches("![latency by percentile").count(), 1);
    }

    #[test]
    fn errors_of_every_repeat_count_and_each_repeat_keeps_its_notes() {
        let mut runs = repeats("keel", &[(2000.0, 100.0, 5.0), (2000.0, 100.0, 5.0)]);
        runs[1].ops[0].errors = 2;
        runs[1].ops[0].first_error = Some("refused".to_string());
        runs[0].notes.push("all well".to_string());
        let summary = summarize(&runs.iter().collect::<Vec<_>>());
        assert_eq!(summary.len(), 1);
        assert_eq!(summary[0].errors, 2);
        let text = markdown(&runs);
        assert!(
            text.contains("| keel | read | 2000 | 5.00 us | 2 |"),
            "{text}"
        );
        assert!(text.contains("- keel, run 1: all well"), "{text}");
        assert!(
            text.contains("- keel, run 2: first read error: refused"),
            "{text}"
        );
        assert!(text.contains("Medians of 2 runs of each"), "{text}");
    }

    #[test]
    fn cpu_per_operation_prints_in_microseconds_then_milliseconds() {
        assert_eq!(format_cpu(7.456), "7.46 us");
        assert_eq!(format_cpu(42.0), "42.0 us");
        assert_eq!(format_cpu(420.0), "420 us");
        assert_eq!(format_cpu(2_600.0), "2.60 ms");
    }

    #[test]
    fn ratios_say_which_way_and_how_much() {
        assert_eq!(rate_ratio(5000.0, 1000.0), "5.00x more");
        assert_eq!(rate_ratio(1000.0, 2500.0), "2.50x fewer");
        assert_eq!(latency_ratio(100.0, 400.0), "4.00x lower");
        assert_eq!(latency_ratio(300.0, 100.0), "3.00x higher");
        assert_eq!(latency_ratio(100.0, 1500.0), "15x lower");
        assert_eq!(rate_ratio(0.0, 10.0), "-");
    }

    #[test]
    fn json_round_trips() {
        let report = run("keel", 100, 10);
        let text = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<RunReport>(&text).unwrap(), report);
    }
}
