//! What the numbers were measured on: cores, CPU model, kernel, tool versions, date.

use serde::{Deserialize, Serialize};

/// The machine and software of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// UTC date and time of the run (`YYYY-MM-DD HH:MM UTC`).
    pub date: String,
    /// Logical CPUs online.
    pub cores: usize,
    /// CPU model name from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// Memory, GiB.
    pub memory_gib: f64,
    /// Version of this harness and of the mesh it measured.
    pub mesh_version: String,
    /// Build profile of the measured `mesh` binary (`release` or `debug`).
    pub mesh_profile: String,
    /// `nginx -v`.
    pub nginx_version: Option<String>,
    /// `haproxy -v` (first line).
    pub haproxy_version: Option<String>,
}

impl Machine {
    /// Reads the machine's facts now.
    pub fn detect(mesh_profile: &str) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            date: utc_now(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            memory_gib: mem_total_gib(&meminfo).unwrap_or(0.0),
            mesh_version: env!("CARGO_PKG_VERSION").to_string(),
            mesh_profile: mesh_profile.to_string(),
            nginx_version: tool_version("nginx", &["-v"]),
            haproxy_version: tool_version("haproxy", &["-v"]),
        }
    }
}

fn utc_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute()
    )
}

/// The first `model name` of `/proc/cpuinfo`.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

fn mem_total_gib(meminfo: &str) -> Option<f64> {
    let kib: f64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((kib / 1024.0 / 1024.0 * 10.0).round() / 10.0)
}

/// The first line a tool prints for its version (nginx prints it on stderr).
pub fn tool_version(tool: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(tool).args(args).output().ok()?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_model_and_memory_are_read_from_proc_text() {
        let cpuinfo = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t: x\n";
        assert_eq!(
            cpu_model(cpuinfo).as_deref(),
            Some("Intel(R) Xeon(R) Processor")
        );
        assert_eq!(mem_total_gib("MemTotal:       25165824 kB\n"), Some(24.0));
        let m = Machine::detect("debug");
        assert!(m.cores >= 1);
        assert!(m.date.ends_with("UTC"), "{}", m.date);
    }
}
