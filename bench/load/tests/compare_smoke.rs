//! `bench/compare.sh --smoke`, as CI runs it: every workload of the
//! standard suite against a real keel and a real etcd, once each, a second
//! or so each, every run on a server started for it, and a RESULTS.md with
//! a table and a chart per workload. This is
//! what keeps the load generator and the comparison script working; the
//! figures of a smoke run (debug binaries, one second each) mean nothing.
//!
//! Needs etcd; compare.sh installs Debian's etcd-server when it is missing
//! (as root), as `.ci/run` does beforehand.

use std::path::{Path, PathBuf};
use std::process::Command;

use keel_load::plot::series_in;
use keel_load::report::RunReport;

/// The standard suite's workloads (compare.sh's `suite`).
const WORKLOADS: usize = 15;

/// The `keel` server binary of this build (same profile as `bench`),
/// built if need be, with `keelctl` beside it (the runs with auth set up
/// their users with it).
fn keel_binary(bench: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let release = bench
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|profile| profile == "release");
    let mut build = Command::new(cargo);
    build.args([
        "build", "-q", "-p", "keel-net", "--bin", "keel", "--bin", "keelctl",
    ]);
    if release {
        build.arg("--release");
    }
    let status = build.status().expect("run cargo build for keel");
    assert!(
        status.success(),
        "cargo build -p keel-net --bin keel failed"
    );
    bench.with_file_name("keel")
}

#[test]
fn the_smoke_comparison_runs_every_workload_against_keel_and_etcd_without_errors() {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_bench"));
    let keel = keel_binary(&bench);
    let out = tempfile::tempdir().expect("output directory");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../compare.sh");
    let output = Command::new("bash")
        .arg(&script)
        .arg("--smoke")
        .arg("--out")
        .arg(out.path())
        .env("KEEL_BIN", &keel)
        .env("KEELCTL_BIN", keel.with_file_name("keelctl"))
        .env("BENCH_BIN", &bench)
        .output()
        .expect("run compare.sh");
    assert!(
        output.status.success(),
        "compare.sh --smoke failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let mut runs = Vec::new();
    for entry in std::fs::read_dir(out.path().join("runs")).expect("runs directory") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).expect("read run");
            let run: RunReport = serde_json::from_str(&text).expect("a run's JSON");
            runs.push(run);
        }
    }
    // Workloads 04 to 07 also run keel through etcd's API; 05 and 07
    // also run keel over TLS, keel over TLS with auth, and etcd over TLS.
    let through_etcd_api = 4;
    let secure = 2 * 3;
    assert_eq!(
        runs.len(),
        2 * WORKLOADS + through_etcd_api + secure,
        "a run per workload and system"
    );
    for run in &runs {
        assert!(
            !run.ops.is_empty(),
            "{} against {} measured nothing",
            run.name,
            run.label
        );
        assert!(
            run.server_cpu_seconds.is_some_and(|cpu| cpu >= 0.0),
            "{} against {}: no server CPU time",
            run.name,
            run.label
        );
        let sockets = run.sockets.expect("every run counts its sockets");
        if run.label.starts_with("etcd") || run.label == "keel via etcd API" {
            assert_eq!(sockets, run.connections, "{}", run.name);
        } else {
            assert!(sockets > run.connections, "{}: {sockets}", run.name);
        }
        for op in &run.ops {
            assert!(
                op.count > 0,
                "{} {} against {}: nothing succeeded",
                run.name,
                op.op,
                run.label
            );
            assert_eq!(
                op.errors, 0,
                "{} {} against {}: {:?}",
                run.name, op.op, run.label, op.first_error
            );
            let request = op.op != "watch event" && op.op != "expiry";
            assert_eq!(
                op.server_cpu_us.is_some(),
                request,
                "{} {} against {}: CPU per request on requests only",
                run.name,
                op.op,
                run.label
            );
        }
    }
    for workload in ["lease churn", "lease burst", "on a stream per connection"] {
        assert!(
            runs.iter().any(|r| r.name.contains(workload)),
            "no {workload} run"
        );
    }
    for label in ["keel", "etcd"] {
        assert_eq!(runs.iter().filter(|r| r.label == label).count(), WORKLOADS);
    }
    assert_eq!(
        runs.iter()
            .filter(|r| r.label == "keel via etcd API")
            .count(),
        through_etcd_api
    );

    let results = std::fs::read_to_string(out.path().join("RESULTS.md")).expect("RESULTS.md");
    assert_eq!(results.matches("\n### ").count(), WORKLOADS, "{results}");
    assert!(
        results.matches("| **keel via etcd API vs etcd** |").count() >= through_etcd_api,
        "{results}"
    );
    assert!(
        results.matches("| **keel vs etcd** |").count() >= WORKLOADS,
        "{results}"
    );
    assert!(results.contains("etcd 3."), "the etcd version is named");
    assert!(results.contains("keel: 8 connections, "), "{results}");
    // One repeat in a smoke run: each run makes its workload's chart.
    for run in runs.iter().filter(|r| r.label == "keel") {
        let chart = run.plot.as_deref().expect("every first repeat is plotted");
        assert!(
            results.contains(&format!("]({chart})")),
            "{chart} is not linked"
        );
        let svg = std::fs::read_to_string(out.path().join(chart)).expect("chart");
        let names: Vec<String> = series_in(&svg)
            .expect("chart data")
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert!(names.iter().any(|n| n.starts_with("keel ")), "{names:?}");
        assert!(names.iter().any(|n| n.starts_with("etcd ")), "{names:?}");
    }
}
