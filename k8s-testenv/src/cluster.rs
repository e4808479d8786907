//! One simulated cluster: an `etcd` and a `kube-apiserver` on loopback ports, its PKI and admin
//! kubeconfig in its own run folder, its processes killed and the folder removed on drop.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::binaries::Binaries;
use crate::error::{Error, log_tail};
use crate::pki::{ADMIN_USER, Pki};
use crate::{probe, run_dir, spawn};

/// etcd on a loaded 2-core machine is up in a second or two; this allows for a build running
/// beside it.
const ETCD_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// kube-apiserver installs its bootstrap RBAC policy, priority levels and CRD machinery before
/// `/readyz` answers 200: 5 to 15 s on an idle 2-core machine, several times that when the cores
/// are shared with builds and other clusters.
const APISERVER_READY_TIMEOUT: Duration = Duration::from_secs(300);
/// How often readiness is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Attempts with fresh ports when another process took a port between picking and binding it.
const PORT_ATTEMPTS: usize = 3;
/// Lines of a process's log included in an error.
const TAIL_LINES: usize = 40;
/// The Service IP range; it never leaves the API server (there is no kube-proxy).
const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The service-account issuer, the in-cluster default.
pub(crate) const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// A running cluster. Dropping it kills its processes and removes its folder.
#[derive(Debug)]
pub struct Cluster {
    name: String,
    dir: PathBuf,
    port: u16,
    kubeconfig: PathBuf,
    binaries: Binaries,
    pki: Pki,
    /// kube-apiserver first, so it is stopped before its storage.
    processes: Mutex<Vec<Child>>,
    /// etcd's client port, for restarting the API server.
    etcd_port: u16,
    /// The API server's pid, for stopping it alone.
    apiserver_pid: AtomicU32,
    /// Removes `dir` when this process exits without dropping the cluster.
    reaper: Child,
}

/// A started process and its log.
struct Started {
    child: Child,
    log: PathBuf,
}

impl Cluster {
    /// Starts a cluster named `name` in `dir` (which must exist and be empty) and waits until its
    /// API server is ready.
    pub(crate) fn start(name: &str, dir: PathBuf, binaries: &Binaries) -> Result<Self, Error> {
        let reaper = run_dir::reaper(&dir)?;
        let pki = Pki::generate(name, &dir)?;
        let mut cluster = Self {
            reaper,
            name: name.to_string(),
            kubeconfig: dir.join("kubeconfig"),
            dir,
            port: 0,
            binaries: binaries.clone(),
            pki,
            processes: Mutex::new(Vec::new()),
            etcd_port: 0,
            apiserver_pid: AtomicU32::new(0),
        };
        cluster.etcd_port = cluster.start_etcd()?;
        cluster.start_apiserver()?;
        cluster.write_kubeconfig()?;
        Ok(cluster)
    }

    /// The cluster's name (also its kubeconfig context and cluster entry).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The API server's URL, `https://127.0.0.1:<port>`.
    pub fn server(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The admin kubeconfig (user `admin` in `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The CA that signed the serving certificate, as a PEM file.
    pub fn ca_cert(&self) -> &Path {
        &self.pki.ca_cert
    }

    /// The run folder: PKI, kubeconfig, etcd data, and the logs `etcd.log` and
    /// `kube-apiserver.log`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `kubectl --kubeconfig <this cluster's>`, without proxy settings.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(&self.binaries.kubectl);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        remove_proxy_vars(&mut cmd);
        cmd
    }

    /// `helm --kubeconfig <this cluster's>`, with Helm's cache, config and data in the run folder
    /// so that tests never read or write the user's.
    pub fn helm(&self) -> Command {
        let mut cmd = Command::new(&self.binaries.helm);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        let home = self.dir.join("helm");
        cmd.env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"));
        remove_proxy_vars(&mut cmd);
        cmd
    }

    /// The last lines of both processes' logs, for a test's own error messages.
    pub fn log_tails(&self) -> String {
        ["etcd.log", "kube-apiserver.log"]
            .iter()
            .map(|log| {
                let path = self.dir.join(log);
                format!("--- {}:\n{}", path.display(), log_tail(&path, TAIL_LINES))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn start_etcd(&mut self) -> Result<u16, Error> {
        let data = self.dir.join("etcd");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (client, peer) = (spawn::free_port()?, spawn::free_port()?);
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let mut cmd = spawn::command(&self.binaries.etcd);
            cmd.arg("--name")
                .arg(&self.name)
                .arg("--data-dir")
                .arg(&data)
                // Test data: durability across a machine crash is not worth the fsync latency.
                .arg("--unsafe-no-fsync")
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .arg("--initial-cluster")
                .arg(format!("{}={peer_url}", self.name));
            let started = self.spawn_logged(cmd, "etcd")?;
            let ready = self.wait_ready(started, ETCD_READY_TIMEOUT, || {
                match probe::http_get(client, "/health") {
                    Ok((200, body)) if body.contains("true") => Ok(()),
                    Ok((status, body)) => Err(format!("{status} {}", body.trim())),
                    Err(e) => Err(e),
                }
            });
            match ready {
                Ok(()) => return Ok(client),
                Err(e) if attempt < PORT_ATTEMPTS && port_taken(&e) => {
                    let _ = std::fs::remove_dir_all(&data);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn start_apiserver(&mut self) -> Result<(), Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = spawn::free_port()?;
            match self.run_apiserver(port) {
                Ok(()) => {
                    self.port = port;
                    return Ok(());
                }
                Err(e) if attempt < PORT_ATTEMPTS && port_taken(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts kube-apiserver on `port` and waits until it is ready.
    fn run_apiserver(&self, port: u16) -> Result<(), Error> {
        let tls = probe::tls_config(&self.pki).map_err(|e| {
            Error::Invalid(format!("cluster {}: TLS client config: {e}", self.name))
        })?;
        let p = &self.pki;
        let mut cmd = spawn::command(&self.binaries.kube_apiserver);
        cmd.arg(format!(
            "--etcd-servers=http://127.0.0.1:{}",
            self.etcd_port
        ))
        .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
        .arg(format!("--secure-port={port}"))
        // The default reconciler would publish the loopback address as the `kubernetes`
        // Service's endpoint and fight over it; there is no network to reach it from.
        .arg("--endpoint-reconciler-type=none")
        .arg(format!("--tls-cert-file={}", p.serving_cert.display()))
        .arg(format!(
            "--tls-private-key-file={}",
            p.serving_key.display()
        ))
        .arg(format!("--client-ca-file={}", p.ca_cert.display()))
        .arg("--authorization-mode=RBAC")
        .arg(format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"))
        .arg(format!(
            "--service-account-key-file={}",
            p.sa_public_key.display()
        ))
        .arg(format!(
            "--service-account-signing-key-file={}",
            p.sa_private_key.display()
        ))
        .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
        .arg("--allow-privileged=true")
        // Without this it writes self-signed certificates to /var/run/kubernetes.
        .arg(format!("--cert-dir={}", self.dir.join("certs").display()))
        .arg("--profiling=false");
        let started = self.spawn_logged(cmd, "kube-apiserver")?;
        let pid = started.child.id();
        self.wait_ready(started, APISERVER_READY_TIMEOUT, || match probe::https_get(
            &tls, port, "/readyz",
        ) {
            Ok((200, _)) => Ok(()),
            Ok((status, body)) => Err(format!("{status} {}", last_line(&body))),
            Err(e) => Err(e),
        })?;
        self.apiserver_pid.store(pid, Ordering::SeqCst);
        Ok(())
    }

    /// Stops the API server (SIGKILL: it goes away at once, as when its machine dies); etcd
    /// keeps the cluster's data. Clients get connection refused until [`Self::restart_apiserver`].
    pub fn stop_apiserver(&self) {
        let pid = self.apiserver_pid.swap(0, Ordering::SeqCst);
        let mut processes = self.processes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = processes.iter().position(|c| c.id() == pid) {
            let mut child = processes.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the API server again on its old port (so kubeconfigs stay valid) and waits until
    /// it is ready.
    pub fn restart_apiserver(&self) -> Result<(), Error> {
        self.run_apiserver(self.port)
    }

    fn spawn_logged(&self, mut cmd: Command, program: &str) -> Result<Started, Error> {
        let log = self.dir.join(format!("{program}.log"));
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(Error::io(format!("opening {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(Error::io(format!("duplicating {}", log.display())))?;
        cmd.current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // Its own process group: a terminal's Ctrl-C reaches only the test or the example, which
        // then stops the clusters and removes their folders.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = spawn::spawn(cmd).map_err(|source| Error::Io {
            what: format!("cluster {}: starting {program}", self.name),
            source,
        })?;
        Ok(Started { child, log })
    }

    /// Polls `probe` until it succeeds, the process exits, or `timeout` passes. The process is
    /// kept on success and killed otherwise.
    fn wait_ready(
        &self,
        mut started: Started,
        timeout: Duration,
        mut probe: impl FnMut() -> Result<(), String>,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        let mut last;
        let what = loop {
            match started.child.try_wait() {
                Ok(Some(status)) => break format!("exited ({status}) before it was ready"),
                Ok(None) => {}
                Err(e) => break format!("cannot poll the process: {e}"),
            }
            match probe() {
                Ok(()) => {
                    self.processes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(0, started.child);
                    return Ok(());
                }
                Err(e) => last = e,
            }
            if Instant::now() >= deadline {
                break format!("not ready after {timeout:?} (last probe: {last})");
            }
            std::thread::sleep(POLL_INTERVAL);
        };
        let _ = started.child.kill();
        let _ = started.child.wait();
        let program = started
            .log
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Err(Error::Start {
            cluster: self.name.clone(),
            what: format!("{program} {what}"),
            tail: log_tail(&started.log, TAIL_LINES),
            log: started.log,
        })
    }

    fn write_kubeconfig(&self) -> Result<(), Error> {
        let name = &self.name;
        let user = format!("{name}-{ADMIN_USER}");
        // Files rather than inline data: no base64 needed, and a developer can read them.
        let text = format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: {name}\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n\
             users:\n\
             - name: {user}\n  user:\n    client-certificate: {cert}\n    client-key: {key}\n\
             contexts:\n\
             - name: {name}\n  context:\n    cluster: {name}\n    user: {user}\n\
             current-context: {name}\n",
            server = self.server(),
            ca = quoted(&self.pki.ca_cert),
            cert = quoted(&self.pki.admin_cert),
            key = quoted(&self.pki.admin_key),
        );
        std::fs::write(&self.kubeconfig, text)
            .map_err(Error::io(format!("writing {}", self.kubeconfig.display())))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SIGKILL: nothing in a test cluster needs a clean shutdown, and it is immediate.
        for child in self
            .processes
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .iter_mut()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        // The folder is gone, so the reaper exits at once when its stdin closes.
        drop(self.reaper.stdin.take());
        let _ = self.reaper.wait();
    }
}

fn remove_proxy_vars(cmd: &mut Command) {
    for var in spawn::PROXY_VARS {
        cmd.env_remove(var);
    }
}

/// Whether a start failed because the port was taken between picking and binding it.
fn port_taken(e: &Error) -> bool {
    matches!(e, Error::Start { tail, .. } if tail.contains("address already in use"))
}

fn last_line(body: &str) -> &str {
    body.trim().lines().last().unwrap_or("")
}

/// A path as a YAML double-quoted string.
fn quoted(path: &Path) -> String {
    let s = path.display().to_string();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
