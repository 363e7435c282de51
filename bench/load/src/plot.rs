//! SVG latency-by-percentile charts, in the style of HdrHistogram's plots:
//! the x axis stretches the tail (90%, 99%, 99.9%, ... evenly spaced), the
//! y axis is logarithmic so runs a hundred times apart share one chart.
//!
//! A chart keeps the data of its curves inside itself (a `<metadata>`
//! element), so adding a run to an existing file redraws every curve it
//! already had plus the new ones.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::report::{format_latency, RunReport};

/// One curve: a name and its (percentile, microseconds) points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// The legend's text.
    pub name: String,
    /// (percentile 0-100, latency in microseconds), rising.
    pub points: Vec<(f64, f64)>,
}

const METADATA_OPEN: &str = "<metadata id=\"keel-bench-series\">";
const METADATA_CLOSE: &str = "</metadata>";

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 540.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
/// The deepest percentile shown: 99.999% (five nines).
const MAX_NINES: f64 = 5.0;
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// The curves of `report`, one per operation that succeeded at all.
pub fn series_of(report: &RunReport) -> Vec<Series> {
    report
        .ops
        .iter()
        .filter(|op| !op.curve.is_empty())
        .map(|op| Series {
            name: format!("{} {} ({})", report.label, op.op, report.name),
            points: op.curve.clone(),
        })
        .collect()
}

/// Adds the curves of `report` to the chart at `path` (made if missing).
///
/// # Errors
/// When the file cannot be read or written, or is an SVG without this
/// tool's data.
pub fn add_to_chart(path: &Path, report: &RunReport) -> Result<()> {
    let mut series = match std::fs::read_to_string(path) {
        Ok(existing) => series_in(&existing)
            .with_context(|| format!("{} is not a chart made by bench --plot", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    series.extend(series_of(report));
    std::fs::write(path, render(&series)).with_context(|| format!("write {}", path.display()))
}

/// The curves stored in a chart.
///
/// # Errors
/// When the chart holds none of this tool's data.
pub fn series_in(svg: &str) -> Result<Vec<Series>> {
    let start = svg
        .find(METADATA_OPEN)
        .context("no series data in the chart")?
        + METADATA_OPEN.len();
    let length = svg
        .get(start..)
        .and_then(|rest| rest.find(METADATA_CLOSE))
        .context("the chart's series data is cut short")?;
    let text = svg.get(start..start + length).unwrap_or_default();
    Ok(serde_json::from_str(&unescape(text))?)
}

/// x position of a percentile: the number of nines it has, so 90% is 1,
/// 99% is 2, 99.9% is 3; 100% is drawn at the right edge.
fn nines(percentile: f64) -> f64 {
    if percentile >= 100.0 {
        return MAX_NINES;
    }
    (-(1.0 - percentile / 100.0).log10()).clamp(0.0, MAX_NINES)
}

/// The chart of `series`.
pub fn render(series: &[Series]) -> String {
    let values = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|v| *v > 0.0);
    let (low, high) = values.fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(v), h.max(v)));
    let (low_decade, high_decade) = if low <= high {
        (
            low.log10().floor(),
            high.log10().ceil().max(low.log10().floor() + 1.0),
        )
    } else {
        (1.0, 4.0)
    };
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let x_of = |percentile: f64| LEFT + nines(percentile) / MAX_NINES * plot_width;
    let y_of = |micros: f64| {
        let decade = micros.max(1e-3).log10().clamp(low_decade, high_decade);
        TOP + plot_height * (1.0 - (decade - low_decade) / (high_decade - low_decade))
    };

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        "{METADATA_OPEN}{}{METADATA_CLOSE}",
        escape(&serde_json::to_string(series).unwrap_or_default())
    );
    let _ = writeln!(
        svg,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">Latency by percentile</text>"#,
        WIDTH / 2.0
    );
    // Percentile grid lines.
    for (nine, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
    {
        let x = LEFT + nine as f64 / MAX_NINES * plot_width;
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + plot_height,
            TOP + plot_height + 18.0
        );
    }
    // Latency grid lines, one per decade.
    let mut decade = low_decade;
    while decade <= high_decade + 1e-9 {
        let micros = 10f64.powf(decade);
        let y = y_of(micros);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_width,
            LEFT - 6.0,
            y + 4.0,
            format_latency(micros)
        );
        decade += 1.0;
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + plot_width / 2.0,
        HEIGHT - 12.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">latency (log scale)</text>"#,
        TOP + plot_height / 2.0,
        TOP + plot_height / 2.0
    );
    for (i, curve) in series.iter().enumerate() {
        let colour = COLOURS.get(i % COLOURS.len()).copied().unwrap_or("black");
        let points: Vec<String> = curve
            .points
            .iter()
            .map(|(p, v)| format!("{:.1},{:.1}", x_of(*p), y_of(*v)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        let y = TOP + 16.0 + 18.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            LEFT + 12.0,
            y - 4.0,
            LEFT + 36.0,
            y - 4.0,
            LEFT + 42.0,
            y,
            escape(&curve.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, scale: f64) -> Series {
        Series {
            name: name.to_string(),
            points: vec![
                (0.0, 100.0 * scale),
                (90.0, 200.0 * scale),
                (99.9, 900.0 * scale),
                (100.0, 5000.0 * scale),
            ],
        }
    }

    #[test]
    fn percentiles_are_placed_by_their_nines() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines(100.0), MAX_NINES);
    }

    #[test]
    fn a_chart_holds_its_series_and_draws_each_with_a_legend() {
        let drawn = vec![
            series("keel read <2000/s & more>", 1.0),
            series("etcd read", 10.0),
        ];
        let svg = render(&drawn);
        assert_eq!(series_in(&svg).unwrap(), drawn);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("keel read &lt;2000/s &amp; more&gt;"));
        assert!(svg.contains("99.999%"));
        // The latency axis spans the decades of the data: 100 us to 50 ms.
        assert!(svg.contains(">0.100 ms<"));
        assert!(svg.contains(">100 ms<"));
    }

    #[test]
    fn adding_a_run_keeps_the_curves_already_there() {
        let dir = std::env::temp_dir().join(format!("keel-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("chart.svg");
        let _ = std::fs::remove_file(&path);
        let report = |label: &str| RunReport {
            name: "2000 reads/s".to_string(),
            label: label.to_string(),
            target: String::new(),
            mode: String::new(),
            connections: 1,
            sockets: None,
            server_cpu_seconds: None,
            seconds: 1.0,
            ops: vec![crate::report::OpReport {
                op: "read".to_string(),
                target_rate: None,
                count: 1,
                rate: Some(1.0),
                errors: 0,
                first_error: None,
                server_cpu_us: None,
                latency_us: crate::report::Percentiles {
                    p50: 1.0,
                    p90: 1.0,
                    p99: 1.0,
                    p999: 1.0,
                    max: 1.0,
                },
                curve: vec![(0.0, 100.0), (100.0, 300.0)],
            }],
            notes: Vec::new(),
            plot: None,
        };
        add_to_chart(&path, &report("keel")).unwrap();
        add_to_chart(&path, &report("etcd")).unwrap();
        let names: Vec<String> = series_in(&std::fs::read_to_string(&path).unwrap())
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(
            names,
            ["keel read (2000 reads/s)", "etcd read (2000 reads/s)"]
        );
        std::fs::write(&path, "<svg></svg>").unwrap();
        assert!(add_to_chart(&path, &report("keel")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
