//! Starting child processes so that they die with the test process, and picking free ports.
//!
//! Children get SIGKILL when their parent dies (`PR_SET_PDEATHSIG`, set by util-linux's
//! `setpriv --pdeathsig`, which keeps this crate free of `unsafe`). The kernel sends that signal
//! when the *thread* that forked the child exits, not the process; a shared fixture is started
//! from whichever test thread comes first and outlives it, so every child is forked by one
//! spawner thread that lives as long as the process.

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::sync::mpsc;

use crate::error::Error;

/// Environment variables removed from every child: the clusters are on loopback, and a proxy
/// would intercept the API server's own calls (webhooks, aggregated APIs) and the clients'.
pub(crate) const PROXY_VARS: [&str; 8] = [
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "all_proxy",
    "no_proxy",
];

const SETPRIV: &str = "/usr/bin/setpriv";

/// A command for `program` that dies with this process and sees no proxy settings.
pub(crate) fn command(program: &Path) -> Command {
    let mut cmd = if Path::new(SETPRIV).is_file() {
        let mut cmd = Command::new(SETPRIV);
        cmd.args(["--pdeathsig", "KILL", "--"]).arg(program);
        cmd
    } else {
        warn_no_setpriv();
        Command::new(program)
    };
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    cmd
}

fn warn_no_setpriv() {
    static WARNED: OnceLock<()> = OnceLock::new();
    WARNED.get_or_init(|| {
        eprintln!(
            "mesh-k8s-testenv: {SETPRIV} (util-linux) is missing: the clusters' processes will \
             outlive this process if it is killed"
        );
    });
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `cmd` from the process-long spawner thread (see the module doc).
pub(crate) fn spawn(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("k8s-testenv-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("starting the k8s-testenv spawner thread");
        tx
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .send((cmd, reply_tx))
        .map_err(|_| std::io::Error::other("the spawner thread has gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("the spawner thread has gone"))?
}

/// A loopback port that was free a moment ago. Another process may take it before the child
/// binds it: callers retry with new ports when a child reports the address in use.
pub(crate) fn free_port() -> Result<u16, Error> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(Error::io("binding an ephemeral loopback port"))?;
    let port = listener
        .local_addr()
        .map_err(Error::io("reading an ephemeral port"))?
        .port();
    Ok(port)
}
