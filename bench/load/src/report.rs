//! The results of a run: the table people read, the JSON machines read,
//! and Markdown tables that set runs of the same workload side by side.

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
    /// Connections to the target.
    pub connections: usize,
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
            "{} against {} ({}, {} connections, {:.1} s measured)\n",
            self.name, self.target, self.mode, self.connections, self.seconds
        );
        let header = [
            "op", "asked/s", "done/s", "errors", "p50", "p90", "p99", "p99.9", "max",
        ];
        let mut rows = vec![header.map(str::to_string).to_vec()];
        for op in &self.ops {
            let l = op.latency_us;
            rows.push(vec![
                op.op.clone(),
                op.target_rate.map_or("-".to_string(), format_rate),
                op.rate.map_or("-".to_string(), format_rate),
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

/// Markdown: per run name (in first-seen order), one table with a row per
/// label and operation, and, when exactly two labels ran it, a row saying
/// how the first compares with the second.
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
        let _ = writeln!(out, "### {name}\n");
        if let Some(first) = group.first() {
            let _ = writeln!(out, "{}, {} connections.\n", first.mode, first.connections);
        }
        out.push_str("| run | op | done/s | errors | p50 | p90 | p99 | p99.9 | max |\n");
        out.push_str("|---|---|---|---|---|---|---|---|---|\n");
        for run in &group {
            for op in &run.ops {
                let l = op.latency_us;
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    run.label,
                    op.op,
                    op.rate.map_or("-".to_string(), format_rate),
                    op.errors,
                    format_latency(l.p50),
                    format_latency(l.p90),
                    format_latency(l.p99),
                    format_latency(l.p999),
                    format_latency(l.max),
                );
            }
        }
        if let [ours, theirs] = group.as_slice() {
            for op in &ours.ops {
                let Some(other) = theirs.ops.iter().find(|o| o.op == op.op) else {
                    continue;
                };
                let (a, b) = (op.latency_us, other.latency_us);
                let _ = writeln!(
                    out,
                    "| **{} vs {}** | {} | **{}** | | {} | {} | **{}** | {} | {} |",
                    ours.label,
                    theirs.label,
                    op.op,
                    rate_comparison(op, other),
                    latency_ratio(a.p50, b.p50),
                    latency_ratio(a.p90, b.p90),
                    latency_ratio(a.p99, b.p99),
                    latency_ratio(a.p999, b.p999),
                    latency_ratio(a.max, b.max),
                );
            }
        }
        out.push('\n');
        let mut charts: Vec<&str> = group.iter().filter_map(|run| run.plot.as_deref()).collect();
        charts.dedup();
        for chart in charts {
            let _ = writeln!(out, "![latency by percentile: {name}]({chart})\n");
        }
        for run in &group {
            for note in &run.notes {
                let _ = writeln!(out, "- {}: {note}", run.label);
            }
            for op in run.ops.iter().filter(|op| op.errors > 0) {
                if let Some(error) = &op.first_error {
                    let _ = writeln!(out, "- {}: first {} error: {error}", run.label, op.op);
                }
            }
        }
        out.push('\n');
    }
    out
}

/// The rate cell of a comparison: "same rate" when both kept up with an
/// open loop's asked rate without errors, else the ratio of the rates.
fn rate_comparison(ours: &OpReport, theirs: &OpReport) -> String {
    let (Some(a), Some(b)) = (ours.rate, theirs.rate) else {
        return "-".to_string();
    };
    let kept_up = |op: &OpReport, rate: f64| {
        op.errors == 0 && op.target_rate.is_some_and(|asked| rate >= asked * 0.99)
    };
    if kept_up(ours, a) && kept_up(theirs, b) {
        "same rate".to_string()
    } else {
        rate_ratio(a, b)
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
