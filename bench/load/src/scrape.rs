//! `--scrape`: fetches a metrics endpoint at a fixed interval for the
//! whole run, as Prometheus would, so that a run with scraping and one
//! without show what scraping costs the server. Each scrape is a plain
//! HTTP/1.1 GET on a new connection (Prometheus keeps one open; a new one
//! costs the server a little more, so this errs on the dear side).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where to scrape: `http://HOST:PORT/PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeUrl {
    /// The endpoint's address.
    pub address: SocketAddr,
    /// The path, `/metrics` unless the URL says another.
    pub path: String,
}

/// Parses `http://127.0.0.1:2381/metrics` (the path may be left out).
pub fn parse_scrape_url(text: &str) -> Result<ScrapeUrl, String> {
    let rest = text
        .strip_prefix("http://")
        .ok_or_else(|| format!("{text}: give http://HOST:PORT/metrics"))?;
    let (address, path) = match rest.split_once('/') {
        Some((address, path)) => (address, format!("/{path}")),
        None => (rest, "/metrics".to_string()),
    };
    let address = address
        .parse()
        .map_err(|e| format!("{text}: {e} (give an IP address and port)"))?;
    Ok(ScrapeUrl { address, path })
}

/// The scraper running beside a workload.
pub struct Scraper {
    url: ScrapeUrl,
    interval: Duration,
    totals: Arc<Totals>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Totals {
    scrapes: AtomicU64,
    failures: AtomicU64,
    bytes: AtomicU64,
    micros: AtomicU64,
}

impl Scraper {
    /// Starts scraping `url` every `interval`, the first at once.
    pub fn start(url: ScrapeUrl, interval: Duration) -> Scraper {
        let totals = Arc::new(Totals::default());
        let task = tokio::spawn(scrape_every(url.clone(), interval, totals.clone()));
        Scraper {
            url,
            interval,
            totals,
            task,
        }
    }

    /// Stops, and says what it did (a line for the report's notes).
    pub fn finish(self) -> String {
        self.task.abort();
        let totals = &self.totals;
        let scrapes = totals.scrapes.load(Ordering::Relaxed);
        let per = |total: u64| total.checked_div(scrapes).unwrap_or(0);
        format!(
            "scraped http://{}{} every {:?}: {} scrapes ({} failed), {} bytes and {} us each on average",
            self.url.address,
            self.url.path,
            self.interval,
            scrapes,
            totals.failures.load(Ordering::Relaxed),
            per(totals.bytes.load(Ordering::Relaxed)),
            per(totals.micros.load(Ordering::Relaxed)),
        )
    }
}

async fn scrape_every(url: ScrapeUrl, interval: Duration, totals: Arc<Totals>) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let started = Instant::now();
        match tokio::time::timeout(Duration::from_secs(10), scrape_once(&url)).await {
            Ok(Ok(bytes)) => {
                totals.scrapes.fetch_add(1, Ordering::Relaxed);
                totals.bytes.fetch_add(bytes, Ordering::Relaxed);
                totals
                    .micros
                    .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            }
            Ok(Err(_)) | Err(_) => {
                totals.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One GET; answers the body's length.
async fn scrape_once(url: &ScrapeUrl) -> Result<u64> {
    let mut stream = tokio::net::TcpStream::connect(url.address)
        .await
        .context("connect")?;
    let ask = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        url.path, url.address
    );
    stream.write_all(ask.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let head_end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP head"))?;
    if !answer.starts_with(b"HTTP/1.1 200") {
        return Err(anyhow!("not 200"));
    }
    Ok((answer.len() - head_end - 4) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_url_names_an_address_and_a_path() {
        let url = parse_scrape_url("http://127.0.0.1:2381/metrics").unwrap();
        assert_eq!(url.address, "127.0.0.1:2381".parse().unwrap());
        assert_eq!(url.path, "/metrics");
        assert_eq!(
            parse_scrape_url("http://127.0.0.1:2381").unwrap().path,
            "/metrics"
        );
        assert!(parse_scrape_url("127.0.0.1:2381").is_err());
        assert!(parse_scrape_url("http://localhost:2381/metrics").is_err());
    }

    #[tokio::test]
    async fn a_scraper_fetches_until_it_is_finished() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut head = [0u8; 1024];
                let _ = stream.read(&mut head).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                    .await;
            }
        });
        let url = parse_scrape_url(&format!("http://{address}/metrics")).unwrap();
        let scraper = Scraper::start(url, Duration::from_millis(20));
        tokio::time::sleep(Duration::from_millis(150)).await;
        let note = scraper.finish();
        assert!(note.contains("5 bytes"), "{note}");
        assert!(note.contains("(0 failed)"), "{note}");
    }
}
