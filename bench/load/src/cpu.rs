//! The CPU time of the server under load, when it runs on this machine
//! (`--server-pid`, one pid per member of a cluster): user plus system time
//! of all its threads (of all its processes), from
//! `/proc/PID/stat`, sampled at the start and the end of the measured
//! window, so the report can give the server's CPU per operation over the
//! same window as the rates.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _, Result};

/// Clock ticks a second on every Linux architecture bench builds for
/// (`USER_HZ`); used when `getconf CLK_TCK` cannot be run.
const DEFAULT_TICKS_PER_SECOND: f64 = 100.0;

/// Processes whose CPU time can be read (a server's members).
#[derive(Debug, Clone)]
pub struct ProcessCpu {
    stats: Vec<PathBuf>,
    ticks_per_second: f64,
}

impl ProcessCpu {
    /// The processes `pids`.
    ///
    /// # Errors
    /// When a `/proc/PID/stat` cannot be read (no such process, or not
    /// Linux).
    pub fn new(pids: &[u32]) -> Result<ProcessCpu> {
        let cpu = ProcessCpu {
            stats: pids
                .iter()
                .map(|pid| PathBuf::from(format!("/proc/{pid}/stat")))
                .collect(),
            ticks_per_second: ticks_per_second(),
        };
        cpu.seconds()
            .with_context(|| format!("the CPU time of processes {pids:?} (--server-pid)"))?;
        Ok(cpu)
    }

    /// Their CPU time so far (user and system, all threads), in seconds.
    ///
    /// # Errors
    /// When a process has gone or its stat line cannot be parsed.
    pub fn seconds(&self) -> Result<f64> {
        let mut ticks = 0;
        for stat in &self.stats {
            let line = std::fs::read_to_string(stat)
                .with_context(|| format!("read {}", stat.display()))?;
            ticks += cpu_ticks(&line).with_context(|| format!("parse {}", stat.display()))?;
        }
        Ok(ticks as f64 / self.ticks_per_second)
    }

    /// The CPU seconds it spends from `from` to `end`: sampled when each
    /// comes (now, for one already past). Runs beside the work it measures.
    ///
    /// # Errors
    /// When a sample fails.
    pub async fn between(&self, from: Instant, end: Instant) -> Result<f64> {
        tokio::time::sleep_until(from.into()).await;
        let before = self.seconds()?;
        tokio::time::sleep_until(end.into()).await;
        Ok(self.seconds()? - before)
    }
}

/// `utime + stime` (fields 14 and 15 of proc(5)) of a `/proc/PID/stat`
/// line. The command name (field 2) is in parentheses and may hold
/// spaces and parentheses itself, so fields are counted from the last `)`.
fn cpu_ticks(line: &str) -> Result<u64> {
    let (_, after_name) = line
        .rsplit_once(')')
        .ok_or_else(|| anyhow!("no command name in {line:?}"))?;
    // After the name: field 3 (state) is the first.
    let mut fields = after_name.split_whitespace().skip(14 - 3);
    let mut next = |name: &str| -> Result<u64> {
        let field = fields
            .next()
            .ok_or_else(|| anyhow!("no {name} field in {line:?}"))?;
        field
            .parse()
            .map_err(|_| anyhow!("{name} is {field:?}, not a number of ticks"))
    };
    let user = next("utime")?;
    let system = next("stime")?;
    Ok(user + system)
}

/// The kernel's clock ticks a second, from `getconf CLK_TCK`.
fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|ticks| *ticks > 0.0)
        .unwrap_or(DEFAULT_TICKS_PER_SECOND)
}

/// Refuses a pid that cannot be measured before the run starts, rather
/// than after it.
///
/// # Errors
/// As [`ProcessCpu::new`].
pub fn open(pids: &[u32]) -> Result<Option<ProcessCpu>> {
    if pids.contains(&0) {
        bail!("--server-pid 0 is not a process");
    }
    if pids.is_empty() {
        return Ok(None);
    }
    ProcessCpu::new(pids).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_system_ticks_are_read_after_the_command_name() {
        // A name with a space and a parenthesis, as a thread may have.
        let line = "4242 (etcd (x) y) S 1 4242 4242 0 -1 4194560 1719 0 0 0 \
                    250 37 0 0 20 0 9 0 123 800000 5000 18446744073709551615";
        assert_eq!(cpu_ticks(line).unwrap(), 287);
        assert!(cpu_ticks("4242 (cut short) S 1 2").is_err());
        assert!(cpu_ticks("no name at all").is_err());
    }

    #[test]
    fn several_processes_count_together() {
        let one = ProcessCpu::new(&[std::process::id()]).unwrap();
        let twice = ProcessCpu::new(&[std::process::id(), std::process::id()]).unwrap();
        let (a, b) = (one.seconds().unwrap(), twice.seconds().unwrap());
        // Read one after the other: the second may have grown a little.
        assert!(b >= 2.0 * a && b < 2.0 * a + 0.5, "{a} then {b}");
        assert!(open(&[0]).is_err());
        assert!(open(&[]).unwrap().is_none());
    }

    #[test]
    fn this_process_has_a_cpu_time_that_grows() {
        let cpu = ProcessCpu::new(&[std::process::id()]).unwrap();
        let before = cpu.seconds().unwrap();
        let mut spin = 0u64;
        let until = Instant::now() + std::time::Duration::from_millis(100);
        while Instant::now() < until {
            spin = spin.wrapping_add(1);
        }
        assert!(spin > 0);
        assert!(cpu.seconds().unwrap() > before);
    }
}
