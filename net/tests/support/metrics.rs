//! Scrapes a server's `/metrics` and reads it with a Prometheus
//! text-format parser (`prometheus-parse`), not with keel's own code.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use prometheus_parse::{Scrape, Value};

/// `GET /metrics` from `address`, parsed.
pub fn scrape(address: SocketAddr) -> Scrape {
    let mut stream = TcpStream::connect(address).expect("connect to the metrics endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the scrape");
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    Scrape::parse(body.lines().map(|line| Ok(line.to_string()))).expect("a valid scrape")
}

fn matches(sample: &prometheus_parse::Sample, name: &str, labels: &[(&str, &str)]) -> bool {
    sample.metric == name
        && labels
            .iter()
            .all(|(key, value)| sample.labels.get(key) == Some(*value))
}

/// The sum of every sample of `name` (a counter, gauge or a histogram's
/// `_count`/`_sum`) that has `labels` among its own.
pub fn total(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| matches(s, name, labels))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(_) | Value::Summary(_) => 0.0,
        })
        .sum()
}

/// Whether `name` is in the scrape at all (with `labels`).
pub fn has(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> bool {
    scrape.samples.iter().any(|s| matches(s, name, labels))
}

/// The cumulative buckets of the histogram `name` with exactly `labels`'
/// values (others may differ), as `(le, count)`.
pub fn buckets(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
    scrape
        .samples
        .iter()
        .filter(|s| matches(s, name, labels))
        .find_map(|s| match &s.value {
            Value::Histogram(counts) => {
                Some(counts.iter().map(|c| (c.less_than, c.count)).collect())
            }
            _ => None,
        })
        .unwrap_or_default()
}
