//! Running `ip` and `iptables`: every call logged, every failure carrying the command and its
//! stderr.

use std::process::Command;

use super::NetError;

/// Runs `argv` and returns its stdout.
pub(super) fn run(argv: &[String]) -> Result<String, NetError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(NetError::Command {
            command: String::new(),
            message: "empty command".into(),
        });
    };
    tracing::debug!(command = %argv.join(" "), "net");
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| NetError::Command {
            command: argv.join(" "),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(NetError::Command {
            command: argv.join(" "),
            message: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds an argv from string slices.
pub(super) fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// Whether `program` can be found on `PATH`.
pub(super) fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
}
