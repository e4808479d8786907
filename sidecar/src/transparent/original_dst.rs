//! Where a captured connection was going before iptables redirected it to the sidecar
//! (`SO_ORIGINAL_DST`, read from the kernel's connection tracking).

use std::net::SocketAddr;

use tokio::net::TcpStream;

/// The destination `stream` had before a `REDIRECT`, or `None` when it was not redirected:
/// the kernel knows no NAT for it (the app used the listener's address itself, as an explicit
/// proxy), or it names the listener's own address.
pub fn redirected_from(stream: &TcpStream) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    let sock = socket2::SockRef::from(stream);
    let original = match local {
        SocketAddr::V4(_) => sock.original_dst_v4(),
        SocketAddr::V6(_) => sock.original_dst_v6(),
    }
    .ok()?
    .as_socket()?;
    (original != local).then_some(original)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_made_to_the_listener_itself_was_not_redirected() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert_eq!(redirected_from(&accepted), None);
    }
}
