//! CPU time and resident memory of a process, read from `/proc/<pid>/stat` (utime + stime) and
//! `/proc/<pid>/status` (VmRSS), and pinning processes to cores with `taskset`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::BenchError;

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProcSample {
    /// User plus system CPU time so far, seconds.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
}

/// Reads CPU time and RSS of `pid`.
pub fn sample(pid: u32) -> Result<ProcSample, BenchError> {
    let stat_path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&stat_path).map_err(|e| BenchError::io(&stat_path, e))?;
    let cpu_seconds = parse_cpu_ticks(&stat)
        .map(|ticks| ticks as f64 / clock_ticks())
        .ok_or_else(|| BenchError::measure(&stat_path, "unexpected format"))?;
    let status_path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&status_path).map_err(|e| BenchError::io(&status_path, e))?;
    let rss_bytes = parse_rss_bytes(&status)
        .ok_or_else(|| BenchError::measure(&status_path, "no VmRSS line"))?;
    Ok(ProcSample {
        cpu_seconds,
        rss_bytes,
    })
}

/// utime + stime in clock ticks from the text of `/proc/<pid>/stat`. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its closing parenthesis.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15 (1-based, man proc).
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS in bytes from the text of `/proc/<pid>/status`.
pub fn parse_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU seconds used per second of wall time between two samples: vCPUs.
pub fn vcpus(before: &ProcSample, after: &ProcSample, wall: Duration) -> f64 {
    let secs = wall.as_secs_f64();
    if secs > 0.0 {
        (after.cpu_seconds - before.cpu_seconds).max(0.0) / secs
    } else {
        0.0
    }
}

/// Pins every thread of `pid` to the CPUs in `cpus` (e.g. `0` or `0-1`) with `taskset`.
pub fn pin(pid: u32, cpus: &str) -> Result<(), BenchError> {
    let out = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .output()
        .map_err(|e| BenchError::measure(format!("taskset {cpus} {pid}"), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(BenchError::measure(
            format!("taskset {cpus} {pid}"),
            String::from_utf8_lossy(&out.stderr).trim(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_counted_after_the_command_name() {
        let stat = "4242 (mesh (x) y) S 1 4242 4242 0 -1 4194560 2911 0 0 0 37 12 0 0 20 0 \
                    5 0 123 16347136 4567 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(49));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn rss_is_read_in_kib_and_returned_in_bytes() {
        let status = "Name:\tmesh\nVmPeak:\t  200 kB\nVmRSS:\t   10240 kB\nThreads:\t3\n";
        assert_eq!(parse_rss_bytes(status), Some(10 * 1024 * 1024));
        assert_eq!(parse_rss_bytes("Name: x\n"), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_bytes > 0);
        // Burn CPU well above the clock tick (10 ms) and see it counted.
        let busy_until = std::time::Instant::now() + Duration::from_millis(200);
        let mut spins = 0u64;
        while std::time::Instant::now() < busy_until {
            spins = std::hint::black_box(spins + 1);
        }
        let after = sample(std::process::id()).unwrap();
        assert!(
            after.cpu_seconds > s.cpu_seconds,
            "{} s then {} s of CPU",
            s.cpu_seconds,
            after.cpu_seconds
        );
        let later = ProcSample {
            cpu_seconds: s.cpu_seconds + 0.5,
            ..s
        };
        assert!((vcpus(&s, &later, Duration::from_secs(5)) - 0.1).abs() < 1e-9);
    }
}
