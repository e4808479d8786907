//! The reference proxies, nginx and HAProxy, as reverse proxies in front of the same upstream:
//! their configurations generated into a temporary directory, each run as one process (no
//! master, one worker or thread, so it can be pinned and measured like a sidecar) on ephemeral
//! ports, with keep-alive to the upstream. Each listens twice: HTTP/1.1, and HTTP/2 with prior
//! knowledge (h2c).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::error::BenchError;

/// How long a reference proxy may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Which reference proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// nginx.
    Nginx,
    /// HAProxy.
    Haproxy,
}

impl ProxyKind {
    /// The program and Debian package name.
    pub fn name(self) -> &'static str {
        match self {
            ProxyKind::Nginx => "nginx",
            ProxyKind::Haproxy => "haproxy",
        }
    }
}

/// A running reference proxy.
#[derive(Debug)]
pub struct ReferenceProxy {
    /// Which one.
    pub kind: ProxyKind,
    /// HTTP/1.1 listener.
    pub h1: SocketAddr,
    /// HTTP/2 prior-knowledge listener.
    pub h2: SocketAddr,
    /// Its log.
    pub log: PathBuf,
    child: Child,
}

impl ReferenceProxy {
    /// Writes the configuration into `dir` and starts the proxy in front of `upstream`.
    pub async fn start(
        kind: ProxyKind,
        dir: &Path,
        upstream: SocketAddr,
    ) -> Result<Self, BenchError> {
        let fail = |reason: String| BenchError::Reference {
            proxy: kind.name(),
            reason,
        };
        let dir = dir.join(kind.name());
        std::fs::create_dir_all(&dir).map_err(|e| BenchError::io(&dir, e))?;
        let (h1, h2) = (free_port()?, free_port()?);
        let log = dir.join(format!("{}.log", kind.name()));
        let conf = dir.join(format!("{}.conf", kind.name()));
        let (text, args): (String, Vec<String>) = match kind {
            ProxyKind::Nginx => {
                for sub in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
                    let p = dir.join(sub);
                    std::fs::create_dir_all(&p).map_err(|e| BenchError::io(&p, e))?;
                }
                (
                    nginx_config(&dir, h1, h2, upstream),
                    vec![
                        "-c".into(),
                        conf.display().to_string(),
                        "-p".into(),
                        dir.display().to_string(),
                        "-e".into(),
                        log.display().to_string(),
                    ],
                )
            }
            ProxyKind::Haproxy => (
                haproxy_config(h1, h2, upstream),
                vec!["-db".into(), "-f".into(), conf.display().to_string()],
            ),
        };
        std::fs::write(&conf, text).map_err(|e| BenchError::io(&conf, e))?;
        let out = std::fs::File::create(&log).map_err(|e| BenchError::io(&log, e))?;
        let err = out.try_clone().map_err(|e| BenchError::io(&log, e))?;
        let child = Command::new(kind.name())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                fail(format!(
                    "cannot run `{}` ({e}); install the Debian package `{}` (benches/run.sh does)",
                    kind.name(),
                    kind.name()
                ))
            })?;
        let mut proxy = Self {
            kind,
            h1,
            h2,
            log,
            child,
        };
        if let Err(reason) = proxy.wait_listening().await {
            proxy.stop().await;
            let tail = std::fs::read_to_string(&proxy.log).unwrap_or_default();
            return Err(fail(format!("{reason}; its log says: {}", tail.trim())));
        }
        Ok(proxy)
    }

    async fn wait_listening(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}"));
            }
            let h1 = tokio::net::TcpStream::connect(self.h1).await.is_ok();
            let h2 = tokio::net::TcpStream::connect(self.h2).await.is_ok();
            if h1 && h2 {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("not listening after {START_TIMEOUT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops the proxy.
    pub async fn stop(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// An ephemeral port that was free a moment ago (the reference proxies take ports in their
/// configuration, not port 0).
pub fn free_port() -> Result<SocketAddr, BenchError> {
    let l =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| BenchError::io("127.0.0.1:0", e))?;
    l.local_addr().map_err(|e| BenchError::io("127.0.0.1:0", e))
}

/// nginx as a reverse proxy: one process, one worker, no access log, keep-alive upstream pool.
pub fn nginx_config(dir: &Path, h1: SocketAddr, h2: SocketAddr, upstream: SocketAddr) -> String {
    let d = dir.display();
    format!(
        "# Generated by mesh-bench: nginx as a reverse proxy in front of the benchmark upstream.
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    upstream bench_upstream {{
        server {upstream};
        keepalive 128;
        keepalive_requests 1000000;
    }}
    server {{
        listen {h1};
        listen {h2} http2;
        location / {{
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }}
    }}
}}
"
    )
}

/// HAProxy as a reverse proxy: one process, one thread, keep-alive and connection reuse to the
/// upstream.
pub fn haproxy_config(h1: SocketAddr, h2: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        "# Generated by mesh-bench: HAProxy as a reverse proxy in front of the benchmark upstream.
global
    nbthread 1
    maxconn 4000

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    http-reuse always

frontend bench
    bind {h1}
    bind {h2} proto h2
    default_backend upstream

backend upstream
    server up {upstream}
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_name_the_ports_and_the_upstream() {
        let a: SocketAddr = "127.0.0.1:1001".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:1002".parse().unwrap();
        let up: SocketAddr = "127.0.0.1:2000".parse().unwrap();
        let n = nginx_config(Path::new("/tmp/x"), a, b, up);
        assert!(n.contains("listen 127.0.0.1:1001;"), "{n}");
        assert!(n.contains("listen 127.0.0.1:1002 http2;"), "{n}");
        assert!(n.contains("server 127.0.0.1:2000;"), "{n}");
        assert!(
            n.contains("master_process off;"),
            "one process to pin and measure"
        );
        let h = haproxy_config(a, b, up);
        assert!(h.contains("bind 127.0.0.1:1002 proto h2"), "{h}");
        assert!(h.contains("server up 127.0.0.1:2000"), "{h}");
        assert!(h.contains("nbthread 1"), "{h}");
    }
}
