//! Logging set-up and process-level helpers shared by every component's `main`.

use std::net::SocketAddr;

/// Installs the `tracing` subscriber: human-readable lines on stderr, level from `RUST_LOG`
/// (default `info`), each line prefixed by the component and cluster so interleaved logs of a
/// cluster-set stay readable.
pub fn init_tracing(component: &str, cluster: &str) {
    use tracing_subscriber::EnvFilter;
    // kube's client logs every failed request at ERROR; the controller reports an unreachable
    // API server once, in its own words, so kube's own lines stay out unless asked for.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,kube_client=off,kube_runtime=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
    tracing::info!(component, cluster, "starting");
}

/// Error binding a listener, naming the component and the address.
#[derive(Debug, thiserror::Error)]
#[error("{component}: cannot listen on {addr} ({role}): {reason}")]
pub struct BindError {
    /// Component name.
    pub component: String,
    /// What the listener is for.
    pub role: String,
    /// The address.
    pub addr: SocketAddr,
    /// Why, in words (port in use, permission).
    pub reason: String,
}

/// Binds a TCP listener, turning "address in use" into a message naming who wanted it.
pub async fn bind_tcp(
    component: &str,
    role: &str,
    addr: SocketAddr,
) -> Result<tokio::net::TcpListener, BindError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| bind_error(component, role, addr, &e))
}

/// The [`BindError`] for an I/O error while binding.
pub fn bind_error(component: &str, role: &str, addr: SocketAddr, e: &std::io::Error) -> BindError {
    let reason = match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "the port is already in use by another process".to_string()
        }
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    };
    BindError {
        component: component.to_string(),
        role: role.to_string(),
        addr,
        reason,
    }
}

/// Resolves when the process receives SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Waits for the next connection on `listener` with `TCP_NODELAY` set. Accept errors (out of
/// file descriptors and the like) are logged with `role` and retried after a short back-off
/// instead of spinning or ending the accept loop.
pub async fn accept(
    listener: &tokio::net::TcpListener,
    role: &str,
) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return (stream, peer);
            }
            Err(e) => {
                tracing::warn!(role, error = %e, "accept failed; backing off");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
