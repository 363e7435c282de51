//! The live progress line on standard error: once a second, the phase and,
//! per kind of operation, the rate, the 99th percentile and the errors of
//! the last second. On a terminal the line rewrites itself.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::record::{OpInterval, Recorder};

/// Shows progress until dropped.
pub struct Progress {
    phase: Arc<Mutex<(String, Instant)>>,
    task: tokio::task::JoinHandle<()>,
    terminal: bool,
}

impl Progress {
    /// Starts showing progress of `recorder` once a second.
    pub fn start(recorder: Arc<Recorder>) -> Progress {
        let phase = Arc::new(Mutex::new(("starting".to_string(), Instant::now())));
        let terminal = std::io::stderr().is_terminal();
        let shown = phase.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(1));
            ticks.tick().await;
            let mut last = Instant::now();
            loop {
                ticks.tick().await;
                let now = Instant::now();
                let seconds = now.duration_since(last).as_secs_f64();
                last = now;
                let (name, since) = shown
                    .lock()
                    .map(|p| p.clone())
                    .unwrap_or_else(|_| (String::new(), now));
                let line = progress_line(
                    &name,
                    now.duration_since(since),
                    &recorder.take_interval(),
                    seconds,
                );
                show(&line, terminal);
            }
        });
        Progress {
            phase,
            task,
            terminal,
        }
    }

    /// Names the phase `name` once `at` comes.
    pub async fn phase_from(&self, name: &str, at: Instant) {
        tokio::time::sleep_until(at.into()).await;
        self.phase(name);
    }

    /// Names the phase the run is in (prefill, warm-up, measure, ...).
    pub fn phase(&self, name: &str) {
        if let Ok(mut phase) = self.phase.lock() {
            *phase = (name.to_string(), Instant::now());
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
        if self.terminal {
            eprintln!();
        }
    }
}

fn show(line: &str, terminal: bool) {
    let mut err = std::io::stderr().lock();
    // Progress is best effort: a closed stderr must not stop the run.
    let _ = if terminal {
        write!(err, "\r\x1b[K{line}")
    } else {
        writeln!(err, "{line}")
    };
    let _ = err.flush();
}

/// One line: `[measure 3s] read 2000/s p99 0.41ms | write 198/s p99 2.10ms errors 2`.
pub fn progress_line(
    phase: &str,
    in_phase: Duration,
    intervals: &[OpInterval],
    seconds: f64,
) -> String {
    let mut line = format!("[{phase} {}s]", in_phase.as_secs());
    for (i, interval) in intervals.iter().enumerate() {
        line.push_str(if i == 0 { " " } else { " | " });
        line.push_str(&format!(
            "{} {:.0}/s p99 {}",
            interval.op.name(),
            interval.count as f64 / seconds.max(1e-9),
            crate::report::format_latency(interval.p99.as_nanos() as f64 / 1000.0),
        ));
        if interval.errors > 0 {
            line.push_str(&format!(" errors {}", interval.errors));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Op;

    #[test]
    fn the_line_names_the_phase_and_each_operations_rate_latency_and_errors() {
        let intervals = [
            OpInterval {
                op: Op::Read,
                count: 2000,
                errors: 0,
                p99: Duration::from_micros(410),
            },
            OpInterval {
                op: Op::Write,
                count: 99,
                errors: 2,
                p99: Duration::from_micros(2100),
            },
        ];
        assert_eq!(
            progress_line("measure", Duration::from_secs(3), &intervals, 1.0),
            "[measure 3s] read 2000/s p99 0.410 ms | write 99/s p99 2.10 ms errors 2"
        );
        assert_eq!(
            progress_line("prefill", Duration::ZERO, &[], 1.0),
            "[prefill 0s]"
        );
    }
}
