//! Opening a TCP connection from inside another network namespace, without moving the process:
//! a short-lived thread enters the namespace, connects, hands the socket back and ends. A
//! socket stays in the namespace it was made in, so the caller then uses it like any other:
//! this is how the chaos suite's load enters a cluster's namespace as an app there would, so
//! that the namespace's capture rules apply to it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Connects to `addr` from inside the named network namespace (`ip netns add <ns>`, whose handle
/// is `/run/netns/<ns>`), within `timeout`. Needs root.
pub async fn connect_in(
    ns: &str,
    addr: SocketAddr,
    timeout: Duration,
) -> std::io::Result<tokio::net::TcpStream> {
    let handle = PathBuf::from("/run/netns").join(ns);
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(connect_from(&handle, addr, timeout));
    });
    let stream = rx
        .await
        .map_err(|_| std::io::Error::other("the namespace thread ended without an answer"))??;
    stream.set_nonblocking(true)?;
    let _ = stream.set_nodelay(true);
    tokio::net::TcpStream::from_std(stream)
}

/// On a thread of its own, which ends after: enters the namespace and connects.
fn connect_from(
    handle: &std::path::Path,
    addr: SocketAddr,
    timeout: Duration,
) -> std::io::Result<std::net::TcpStream> {
    let ns = std::fs::File::open(handle)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", handle.display())))?;
    enter(&ns)?;
    std::net::TcpStream::connect_timeout(&addr, timeout)
}

#[allow(unsafe_code)]
fn enter(ns: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: setns(2) with a namespace file descriptor that `ns` keeps open for the call; it
    // changes only the network namespace of the calling thread, a thread made for this one
    // connection that ends right after it.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
