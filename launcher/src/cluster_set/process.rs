//! One component process: spawned from the `mesh` binary with its log file, its ready file, and
//! signals to stop, kill, freeze and resume it.
//!
//! Children run in their own process group (so a terminal's Ctrl-C reaches only `mesh up`, which
//! then stops them in order) and get SIGTERM if their parent dies (PR_SET_PDEATHSIG), so nothing
//! is left behind even when the supervisor is killed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use mesh_core::api::ReadyFile;
use tokio::process::{Child, Command};

use super::LaunchError;
use super::component::{ComponentArgs, Wire};

/// How long a component may take from spawn to writing its ready file. Bootstrapping an identity
/// is a few milliseconds; this bound is for a machine under heavy load.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a component gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Signals sent to component processes.
#[derive(Debug, Clone, Copy)]
pub enum Signal {
    /// Ask to exit cleanly.
    Term,
    /// Kill at once.
    Kill,
    /// Freeze.
    Stop,
    /// Resume a frozen process.
    Cont,
    /// Interrupt, as Ctrl-C does.
    Int,
}

/// Sends `signal` to `pid`.
#[allow(unsafe_code)]
pub fn send_signal(pid: u32, signal: Signal) -> std::io::Result<()> {
    let sig = match signal {
        Signal::Term => libc::SIGTERM,
        Signal::Kill => libc::SIGKILL,
        Signal::Stop => libc::SIGSTOP,
        Signal::Cont => libc::SIGCONT,
        Signal::Int => libc::SIGINT,
    };
    let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
    // SAFETY: kill(2) has no memory-safety preconditions; it only takes integers.
    let rc = unsafe { libc::kill(pid, sig) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A component process and how to (re)start it.
#[derive(Debug)]
pub struct Process {
    /// Human name, e.g. `us-east/controller`.
    pub label: String,
    /// Program and arguments that run the binary (e.g. `ip netns exec <ns>`); empty = direct.
    pub exec_prefix: Vec<String>,
    /// What it runs: its typed arguments, rendered when it is spawned.
    pub args: ComponentArgs,
    /// Addresses it takes from processes started before it, filled in by the supervisor.
    pub wiring: Vec<Wire>,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    /// Where it writes its ready file.
    pub ready_path: PathBuf,
    /// The running child.
    pub child: Option<Child>,
    /// What it reported when it became ready.
    pub ready: Option<ReadyFile>,
    /// The uid it runs as when not the launcher's (its exec prefix takes it): the supervisor
    /// hands it its credentials and the ready file's directory.
    pub owner: Option<u32>,
}

impl Process {
    /// A process not started yet, run directly as the launcher's user, wired to nothing.
    pub fn new(label: String, args: ComponentArgs, log: PathBuf, ready_path: PathBuf) -> Self {
        Self {
            label,
            exec_prefix: Vec::new(),
            args,
            wiring: Vec::new(),
            log,
            ready_path,
            child: None,
            ready: None,
            owner: None,
        }
    }

    /// Spawns the process and waits for its ready file. A process started again binds the
    /// addresses it had the first time ([`ComponentArgs::pin_listeners`]), so peers find it
    /// where they expect it.
    pub async fn start(&mut self, mesh_bin: &Path) -> Result<(), LaunchError> {
        if let Some(ready) = &self.ready {
            self.args.pin_listeners(ready);
        }
        let _ = std::fs::remove_file(&self.ready_path);
        if let Some(dir) = self.log.parent() {
            std::fs::create_dir_all(dir).map_err(|e| LaunchError::io(dir, e))?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| LaunchError::io(&self.log, e))?;
        let log_err = log.try_clone().map_err(|e| LaunchError::io(&self.log, e))?;
        let mut cmd = match self.exec_prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(mesh_bin);
                c
            }
            None => Command::new(mesh_bin),
        };
        cmd.args(self.args.argv())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .process_group(0)
            .kill_on_drop(true);
        set_parent_death_signal(&mut cmd);
        let child = cmd.spawn().map_err(|e| LaunchError::Spawn {
            component: self.label.clone(),
            reason: format!("{}: {e}", mesh_bin.display()),
        })?;
        self.child = Some(child);
        self.ready = Some(self.wait_ready().await?);
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<ReadyFile, LaunchError> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(ready) = ReadyFile::read(&self.ready_path) {
                return Ok(ready);
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(LaunchError::Exited {
                    component: self.label.clone(),
                    status: status.to_string(),
                    log: self.log.clone(),
                    tail: log_tail(&self.log, 8),
                });
            }
            if tokio::time::Instant::now() > deadline {
                return Err(LaunchError::NotReady {
                    component: self.label.clone(),
                    waited: READY_TIMEOUT,
                    log: self.log.clone(),
                    tail: log_tail(&self.log, 8),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The pid of the running child.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Sends a signal to the running child.
    pub fn signal(&self, signal: Signal) -> std::io::Result<()> {
        match self.pid() {
            Some(pid) => send_signal(pid, signal),
            None => Err(std::io::Error::other(format!(
                "{} is not running",
                self.label
            ))),
        }
    }

    /// SIGKILL and reap.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// SIGTERM, wait for exit up to a grace period, then SIGKILL.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            // A frozen process cannot act on SIGTERM.
            let _ = send_signal(pid, Signal::Cont);
            let _ = send_signal(pid, Signal::Term);
        }
        if tokio::time::timeout(STOP_GRACE, child.wait())
            .await
            .is_err()
        {
            tracing::warn!(component = %self.label, "did not exit after SIGTERM; killing");
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

#[allow(unsafe_code)]
fn set_parent_death_signal(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which is
    // async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The last `n` lines of a log file, for error messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_returns_the_last_lines() {
        let path = std::env::temp_dir().join(format!("mesh-tail-{}", std::process::id()));
        std::fs::write(&path, "a\nb\nc\nd\n").unwrap();
        assert_eq!(log_tail(&path, 2), "c\nd");
        assert_eq!(log_tail(Path::new("/nonexistent/x"), 2), "");
        let _ = std::fs::remove_file(&path);
    }
}
