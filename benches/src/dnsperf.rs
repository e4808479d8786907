//! Running `dnsperf` (DNS-OARC's, the Debian package) and reading its report: queries sent,
//! completed and lost, response codes, queries per second and latency. Parsing is pure and
//! tested on a captured output of dnsperf 2.10.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::BenchError;

/// What one dnsperf run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsperfResult {
    /// Queries sent.
    pub sent: u64,
    /// Queries answered.
    pub completed: u64,
    /// Queries never answered within dnsperf's timeout.
    pub lost: u64,
    /// Response codes and how many of each (`NOERROR`, `NXDOMAIN`, ...).
    pub rcodes: Vec<(String, u64)>,
    /// Measured time, seconds.
    pub run_time_s: f64,
    /// Answered queries per second.
    pub qps: f64,
    /// Mean latency, µs.
    pub avg_latency_us: f64,
    /// Fastest answer, µs.
    pub min_latency_us: f64,
    /// Slowest answer, µs.
    pub max_latency_us: f64,
    /// Standard deviation of the latency, µs.
    pub stddev_latency_us: f64,
}

/// Why dnsperf's output could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dnsperf output: {0}")]
pub struct ParseError(String);

/// The value after `label` on its line (`  Queries sent:         1234`).
fn field<'a>(output: &'a str, label: &str) -> Result<&'a str, ParseError> {
    output
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .map(str::trim)
        .ok_or_else(|| ParseError(format!("no line {label:?}")))
}

fn number<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, ParseError> {
    text.parse()
        .map_err(|_| ParseError(format!("{what}: {text:?} is not a number")))
}

/// The first whitespace-separated word of `text`, as a number.
fn leading<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, ParseError> {
    number(text.split_whitespace().next().unwrap_or_default(), what)
}

/// Reads the statistics dnsperf prints at the end of a run.
pub fn parse(output: &str) -> Result<DnsperfResult, ParseError> {
    let secs_to_us = |s: f64| s * 1e6;
    // `0.000123 (min 0.000010, max 0.001234)`
    let latency = field(output, "Average Latency (s):")?;
    let avg: f64 = leading(latency, "average latency")?;
    let inner = latency
        .split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .ok_or_else(|| ParseError(format!("latency without (min, max): {latency:?}")))?;
    let (mut min, mut max) = (None, None);
    for part in inner.split(',') {
        match part.split_whitespace().collect::<Vec<_>>()[..] {
            ["min", v] => min = Some(number::<f64>(v, "minimum latency")?),
            ["max", v] => max = Some(number::<f64>(v, "maximum latency")?),
            _ => {}
        }
    }
    let (Some(min), Some(max)) = (min, max) else {
        return Err(ParseError(format!(
            "latency without min and max: {latency:?}"
        )));
    };
    // `NOERROR 1000 (100.00%), NXDOMAIN 10 (1.00%)`
    let mut rcodes = Vec::new();
    for part in field(output, "Response codes:")?
        .split(',')
        .filter(|p| !p.trim().is_empty())
    {
        let mut words = part.split_whitespace();
        let (Some(code), Some(count)) = (words.next(), words.next()) else {
            return Err(ParseError(format!("response code {part:?}")));
        };
        rcodes.push((code.to_string(), number(count, "response code count")?));
    }
    Ok(DnsperfResult {
        sent: leading(field(output, "Queries sent:")?, "queries sent")?,
        completed: leading(field(output, "Queries completed:")?, "queries completed")?,
        lost: leading(field(output, "Queries lost:")?, "queries lost")?,
        rcodes,
        run_time_s: leading(field(output, "Run time (s):")?, "run time")?,
        qps: leading(field(output, "Queries per second:")?, "queries per second")?,
        avg_latency_us: secs_to_us(avg),
        min_latency_us: secs_to_us(min),
        max_latency_us: secs_to_us(max),
        stddev_latency_us: secs_to_us(leading(
            field(output, "Latency StdDev (s):")?,
            "latency standard deviation",
        )?),
    })
}

/// How to run dnsperf once.
#[derive(Debug, Clone)]
pub struct DnsperfRun<'a> {
    /// The server.
    pub server: SocketAddr,
    /// The query file (`name type` per line).
    pub queries: &'a Path,
    /// How long to send.
    pub duration: Duration,
    /// Queries in flight at most (dnsperf's `-q`).
    pub outstanding: usize,
    /// Queries per second to send at most (`-Q`); `None`: as fast as answers come.
    pub rate: Option<u64>,
    /// CPUs to pin dnsperf to (`taskset -c`), when any.
    pub cpus: Option<&'a str>,
}

/// Runs dnsperf and reads its statistics.
pub async fn run(spec: &DnsperfRun<'_>) -> Result<DnsperfResult, BenchError> {
    let mut cmd = match spec.cpus {
        Some(cpus) => {
            let mut c = tokio::process::Command::new("taskset");
            c.args(["-c", cpus, "dnsperf"]);
            c
        }
        None => tokio::process::Command::new("dnsperf"),
    };
    cmd.arg("-s")
        .arg(spec.server.ip().to_string())
        .args(["-p", &spec.server.port().to_string()])
        .arg("-d")
        .arg(spec.queries)
        .args(["-l", &format!("{:.3}", spec.duration.as_secs_f64())])
        .args(["-q", &spec.outstanding.to_string()])
        // Every query lost after 1 s counts as lost instead of holding up the run.
        .args(["-t", "1"]);
    if let Some(rate) = spec.rate {
        cmd.args(["-Q", &rate.to_string()]);
    }
    let what = format!("dnsperf against {}", spec.server);
    let out = cmd
        .output()
        .await
        .map_err(|e| BenchError::measure(&what, format!("{e} (apt-get install dnsperf)")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(BenchError::measure(
            &what,
            format!(
                "{}: {}{}",
                out.status,
                stdout,
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    }
    parse(&stdout).map_err(|e| BenchError::measure(&what, format!("{e}\n{stdout}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dnsperf 2.10.0 (Debian 12) against the mesh DNS (a debug build, 20 names), captured for
    /// this test.
    const CAPTURED: &str = include_str!("../tests/data/dnsperf-2.10.0.txt");

    #[test]
    fn reads_a_real_dnsperf_report() {
        let r = parse(CAPTURED).unwrap();
        assert_eq!((r.sent, r.completed, r.lost), (28_313, 28_313, 0));
        assert_eq!(r.rcodes, [("NOERROR".to_string(), 28_313)]);
        assert!((r.qps - 13_991.145_645).abs() < 1e-6, "{}", r.qps);
        assert!((r.run_time_s - 2.023_637).abs() < 1e-9);
        assert!((r.avg_latency_us - 6938.0).abs() < 1e-6);
        assert!((r.min_latency_us - 90.0).abs() < 1e-6);
        assert!((r.max_latency_us - 28_318.0).abs() < 1e-6);
        assert!((r.stddev_latency_us - 4387.0).abs() < 1e-6);
        assert_eq!(r.sent, r.completed + r.lost);
        assert_eq!(r.rcodes.iter().map(|(_, n)| n).sum::<u64>(), r.completed);
        assert!(r.qps > 0.0 && r.run_time_s > 0.0);
        assert!(r.min_latency_us <= r.avg_latency_us && r.avg_latency_us <= r.max_latency_us);
    }

    #[test]
    fn reads_every_field_and_refuses_what_is_not_a_report() {
        let text = "Statistics:\n\n  Queries sent:         1000\n  Queries completed:    990 (99.00%)\n  Queries lost:         10 (1.00%)\n\n  Response codes:       NOERROR 980 (98.99%), NXDOMAIN 10 (1.01%)\n  Average packet size:  request 48, response 64\n  Run time (s):         2.000100\n  Queries per second:   494.975251\n\n  Average Latency (s):  0.000250 (min 0.000020, max 0.004000)\n  Latency StdDev (s):   0.000100\n";
        let r = parse(text).unwrap();
        assert_eq!((r.sent, r.completed, r.lost), (1000, 990, 10));
        assert_eq!(
            r.rcodes,
            [("NOERROR".to_string(), 980), ("NXDOMAIN".to_string(), 10)]
        );
        assert!((r.qps - 494.975_251).abs() < 1e-9);
        assert!((r.avg_latency_us - 250.0).abs() < 1e-6);
        assert!((r.min_latency_us - 20.0).abs() < 1e-6);
        assert!((r.max_latency_us - 4000.0).abs() < 1e-6);
        assert!((r.stddev_latency_us - 100.0).abs() < 1e-6);

        let err = parse("Error: could not open query file").unwrap_err();
        assert!(err.to_string().contains("Average Latency"), "{err}");
        let broken = text.replace("(min 0.000020, max 0.004000)", "");
        assert!(parse(&broken).unwrap_err().to_string().contains("min"));
        let nonsense = text.replace("494.975251", "lots");
        assert!(
            parse(&nonsense)
                .unwrap_err()
                .to_string()
                .contains("queries per second")
        );
    }
}
