//! Joining two byte streams until both directions end: passthrough, opaque tunnels and
//! permissive inbound plaintext all end here.

use tokio::io::{AsyncRead, AsyncWrite};

/// Copies both ways between `client` and `upstream` until each side has closed its direction;
/// logs the totals with `what`.
pub async fn splice<C, U>(mut client: C, mut upstream: U, what: &str)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((up, down)) => tracing::debug!(what, up, down, "stream closed"),
        Err(e) => tracing::debug!(what, error = %e, "stream broke"),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn both_directions_flow_until_both_close() {
        let (client, mut app_side) = tokio::io::duplex(64);
        let (upstream, mut server_side) = tokio::io::duplex(64);
        let task = tokio::spawn(async move { splice(client, upstream, "test").await });
        app_side.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        server_side.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        server_side.write_all(b"back").await.unwrap();
        let mut back = [0u8; 4];
        app_side.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"back");
        drop(app_side);
        drop(server_side);
        task.await.unwrap();
    }
}
