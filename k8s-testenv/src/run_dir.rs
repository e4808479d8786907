//! Per-cluster run folders under `<target>/k8s/run/`, removed even when the owning process
//! never drops its clusters (a shared fixture, which Rust never drops, or a test binary killed by
//! a signal): a reaper process removes the folder when the owner's end of its stdin pipe closes,
//! which the kernel does when the owner exits however it exits. Folders named after a process that
//! no longer exists are also swept at the next start, in case a reaper was killed too.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::Error;

const PREFIX: &str = "cluster-";

/// Creates a new, empty run folder for `cluster` owned by this process.
pub(crate) fn create(root: &Path, cluster: &str) -> Result<PathBuf, Error> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    std::fs::create_dir_all(root).map_err(Error::io(format!("creating {}", root.display())))?;
    let dir = root.join(format!(
        "{PREFIX}{}-{}-{cluster}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    if dir.exists() {
        // Left by an earlier process with the same id: its processes are gone.
        let _ = std::fs::remove_dir_all(&dir);
    }
    std::fs::create_dir(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    Ok(dir)
}

/// Starts the reaper of `dir`: `sh` waits for end of file on its stdin (held by the returned
/// child until it is dropped or this process exits), gives the cluster's processes, killed by
/// their parent-death signal at the same moment, a second to go, and removes the folder.
pub(crate) fn reaper(dir: &Path) -> Result<Child, Error> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"cat >/dev/null; [ -d "$0" ] || exit 0; sleep 1; rm -rf "$0""#)
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Its own process group: a terminal's Ctrl-C must not remove the folder before the owner
    // has stopped the processes.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.spawn().map_err(Error::io(format!(
        "starting the reaper of {}",
        dir.display()
    )))
}

/// Removes the run folders whose owning process no longer exists.
pub(crate) fn sweep_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_removes_only_folders_of_dead_processes() {
        let root = std::env::temp_dir().join(format!("k8s-testenv-sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mine = create(&root, "east").expect("creating a run folder");
        // Pid 0 is never a user process, so /proc/0 never exists.
        let dead = root.join(format!("{PREFIX}0-0-west"));
        let unrelated = root.join("something-else");
        std::fs::create_dir_all(&dead).expect("creating a stale folder");
        std::fs::create_dir_all(&unrelated).expect("creating an unrelated folder");

        sweep_stale(&root);

        assert!(mine.is_dir(), "this process's folder must stay");
        assert!(!dead.exists(), "a dead process's folder must go");
        assert!(
            unrelated.is_dir(),
            "folders not named by this crate must stay"
        );
        std::fs::remove_dir_all(&root).expect("cleaning up");
    }

    #[test]
    fn reaper_removes_the_folder_when_its_stdin_closes() {
        let root = std::env::temp_dir().join(format!("k8s-testenv-reap-{}", std::process::id()));
        let dir = create(&root, "east").expect("creating a run folder");
        std::fs::write(dir.join("etcd.log"), "x").expect("writing into it");
        let mut reaper = reaper(&dir).expect("starting the reaper");
        assert!(
            dir.is_dir(),
            "the folder must stay while its owner holds the pipe"
        );
        drop(reaper.stdin.take());
        let status = reaper.wait().expect("waiting for the reaper");
        assert!(status.success(), "reaper: {status}");
        assert!(!dir.exists(), "the reaper must remove the folder");
        let _ = std::fs::remove_dir_all(&root);
    }
}
