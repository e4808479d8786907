//! Finding the Go-built binaries, and building them once when they are missing.
//!
//! The build runs `tools/k8s-testenv/build.sh` under an exclusive `flock` on a file next to the
//! output folder, so parallel test binaries (and threads) wait for one build instead of racing.
//! The lock is released by the kernel if the builder dies, so a killed build never wedges later
//! runs. The output folder is up to date when its stamp equals `versions.env`.
//!
//! CoreDNS is built the same way by its own script (`tools/k8s-testenv/coredns/build.sh`, its
//! own lock and stamp: its module's `go.mod`, which pins the release, and `main.go`, which picks
//! the plugins), so a CoreDNS change never rebuilds the Kubernetes binaries.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use rustix::fs::{FlockOperation, flock};

use crate::error::{Error, log_tail};

/// The versions the binaries must be built at; `build.sh` copies this file into the output
/// folder as its stamp once every binary is built.
const VERSIONS: &str = include_str!("../../tools/k8s-testenv/versions.env");
/// The stamp file `build.sh` writes into the output folder.
const STAMP: &str = ".versions";
const BINARIES: [&str; 4] = ["kube-apiserver", "etcd", "kubectl", "helm"];
/// The CoreDNS module's `go.mod` (it pins the CoreDNS release) and `main.go` (it picks the
/// plugins): together, the CoreDNS build's stamp.
const COREDNS_SOURCES: [&str; 2] = [
    include_str!("../../tools/k8s-testenv/coredns/go.mod"),
    include_str!("../../tools/k8s-testenv/coredns/main.go"),
];
/// The stamp file `coredns/build.sh` writes beside the binary.
const COREDNS_STAMP: &str = ".coredns-stamp";

/// One thing to build with a script of `tools/k8s-testenv/` under a lock.
struct Build {
    /// What is built, for messages.
    what: &'static str,
    /// The script, relative to the workspace root.
    script: &'static str,
    /// The lock and log file names in the `k8s` folder.
    lock: &'static str,
    log: &'static str,
    /// Whether the output folder is up to date.
    up_to_date: fn(&Path) -> bool,
}

/// Paths of the built binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `kube-apiserver`.
    pub kube_apiserver: PathBuf,
    /// `etcd`.
    pub etcd: PathBuf,
    /// `kubectl`, same release as the API server.
    pub kubectl: PathBuf,
    /// `helm`.
    pub helm: PathBuf,
}

impl Binaries {
    fn in_dir(dir: &Path) -> Self {
        Self {
            kube_apiserver: dir.join("kube-apiserver"),
            etcd: dir.join("etcd"),
            kubectl: dir.join("kubectl"),
            helm: dir.join("helm"),
        }
    }
}

/// The workspace's root folder (this crate's parent).
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// `<cargo target dir>/k8s`: the binaries, the build log and lock, and the clusters' run folders.
pub(crate) fn k8s_dir() -> PathBuf {
    let root = workspace_root();
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    };
    target.join("k8s")
}

/// Returns the binaries, building them first if they are missing or were built at other
/// versions. Builds at most once per process; other processes wait on the lock.
///
/// Without a Go toolchain this fails; under `CI=true` the message says that `.ci/run` must install
/// Go, elsewhere it says what a developer should install.
pub fn ensure_binaries() -> Result<Binaries, Error> {
    static BUILT: OnceLock<Result<Binaries, String>> = OnceLock::new();
    let build = Build {
        what: "kube-apiserver, etcd, kubectl and helm (a cold build takes tens of minutes on 2 cores)",
        script: "tools/k8s-testenv/build.sh",
        lock: "build.lock",
        log: "build.log",
        up_to_date,
    };
    BUILT
        .get_or_init(|| {
            build_if_needed(&k8s_dir(), &build)
                .map(|bin_dir| Binaries::in_dir(&bin_dir))
                .map_err(|e| e.to_string())
        })
        .clone()
        // The first caller's error is reported to every later caller as text: Error is not Clone.
        .map_err(Error::Invalid)
}

/// Returns the path of `coredns` (CoreDNS with the plugins of
/// `tools/k8s-testenv/coredns/main.go`, at the release its `go.mod` pins), building it first
/// if it is missing or was built from another `go.mod`. Fails as [`ensure_binaries`] does.
pub fn ensure_coredns() -> Result<PathBuf, Error> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let build = Build {
        what: "CoreDNS (a cold build takes several minutes on 2 cores)",
        script: "tools/k8s-testenv/coredns/build.sh",
        lock: "coredns-build.lock",
        log: "coredns-build.log",
        up_to_date: coredns_up_to_date,
    };
    BUILT
        .get_or_init(|| {
            build_if_needed(&k8s_dir(), &build)
                .map(|bin_dir| bin_dir.join("coredns"))
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(Error::Invalid)
}

fn up_to_date(bin_dir: &Path) -> bool {
    std::fs::read_to_string(bin_dir.join(STAMP)).is_ok_and(|s| s == VERSIONS)
        && BINARIES.iter().all(|b| bin_dir.join(b).is_file())
}

fn coredns_up_to_date(bin_dir: &Path) -> bool {
    std::fs::read_to_string(bin_dir.join(COREDNS_STAMP))
        .is_ok_and(|s| s == COREDNS_SOURCES.concat())
        && bin_dir.join("coredns").is_file()
}

/// Runs `build`'s script under its lock unless the output is up to date; the output folder.
fn build_if_needed(k8s_dir: &Path, build: &Build) -> Result<PathBuf, Error> {
    let bin_dir = k8s_dir.join("bin");
    let up_to_date = build.up_to_date;
    if up_to_date(&bin_dir) {
        return Ok(bin_dir);
    }
    std::fs::create_dir_all(k8s_dir)
        .map_err(Error::io(format!("creating {}", k8s_dir.display())))?;
    let lock_path = k8s_dir.join(build.lock);
    let lock =
        File::create(&lock_path).map_err(Error::io(format!("opening {}", lock_path.display())))?;
    flock(&lock, FlockOperation::LockExclusive).map_err(|e| Error::Io {
        what: format!("locking {}", lock_path.display()),
        source: e.into(),
    })?;
    // Another process may have built them while this one waited for the lock.
    if up_to_date(&bin_dir) {
        return Ok(bin_dir);
    }
    let Some(go_dir) = find_go() else {
        let hint = if std::env::var("CI").is_ok_and(|v| v == "true") {
            "CI=true, so this is a broken CI image: .ci/run must install Go >= 1.26 before the tests"
        } else {
            "install Go >= 1.26 (the machine image's /usr/local/go, or Debian's golang-go if its \
             version is recent enough), then rerun the tests or run tools/k8s-testenv/build.sh"
        };
        return Err(Error::GoMissing { bin_dir, hint });
    };
    let log_path = k8s_dir.join(build.log);
    let log =
        File::create(&log_path).map_err(Error::io(format!("creating {}", log_path.display())))?;
    let log_err = log
        .try_clone()
        .map_err(Error::io(format!("duplicating {}", log_path.display())))?;
    let script = workspace_root().join(build.script);
    eprintln!(
        "mesh-k8s-testenv: building {} into {}; log: {}",
        build.what,
        bin_dir.display(),
        log_path.display()
    );
    let path = match std::env::var_os("PATH") {
        Some(p) => {
            let mut dirs = vec![go_dir];
            dirs.extend(std::env::split_paths(&p));
            std::env::join_paths(dirs).unwrap_or(p)
        }
        None => go_dir.into_os_string(),
    };
    // `nice`: the build must not starve the tests and builds that share the machine's cores.
    let status = Command::new("nice")
        .args(["-n", "10", "bash"])
        .arg(&script)
        .arg(&bin_dir)
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .status()
        .map_err(Error::io(format!("running {}", script.display())))?;
    if !status.success() || !up_to_date(&bin_dir) {
        return Err(Error::Build {
            status,
            tail: log_tail(&log_path, 30),
            log: log_path,
        });
    }
    Ok(bin_dir)
}

/// The folder holding an executable `go`: first on `PATH`, then the usual install location.
fn find_go() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/local/go/bin")])
        .find(|dir| dir.join("go").is_file())
}
