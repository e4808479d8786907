//! The TCP sink at the end of tunnels: per transfer it reads an 8-byte big-endian length, then
//! that many bytes, and answers one byte, so the sender knows every byte crossed. Transfers
//! repeat on one connection until it closes.

use std::net::SocketAddr;
use std::path::PathBuf;

use mesh_core::telemetry::{accept, bind_tcp, shutdown_signal};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::BenchError;

/// `mesh-bench tcp-sink`: counts bytes of tunnel transfers.
#[derive(Debug, Clone, clap::Args)]
pub struct SinkArgs {
    /// TCP listener.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Write a JSON ready file with the bound address (role `listen`) and the pid here.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

/// Serves until SIGINT or SIGTERM.
pub async fn run(args: SinkArgs) -> Result<(), BenchError> {
    let listener = bind_tcp("bench-sink", "listen", args.listen)
        .await
        .map_err(|e| BenchError::measure("binding the sink", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| BenchError::measure("sink address", e))?;
    super::write_ready("bench-sink", addr, args.ready_file.as_deref())?;
    let serve = async {
        loop {
            let (stream, _) = accept(&listener, "listen").await;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = transfers(stream).await;
            });
        }
    };
    tokio::select! {
        _ = serve => {}
        _ = shutdown_signal() => {}
    }
    Ok(())
}

/// Serves transfers on one stream until the peer closes it.
pub async fn transfers<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> std::io::Result<u64> {
    let mut total = 0;
    loop {
        let mut len = [0u8; 8];
        match stream.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(total),
            Err(e) => return Err(e),
        }
        let len = u64::from_be_bytes(len);
        let copied = tokio::io::copy(&mut (&mut stream).take(len), &mut tokio::io::sink()).await?;
        if copied != len {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        total += copied;
        stream.write_all(&[1]).await?;
        stream.flush().await?;
    }
}

/// The sender's side of one transfer: the length, `len` bytes, then the sink's one-byte answer.
pub async fn send_transfer<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    len: u64,
) -> std::io::Result<()> {
    static CHUNK: [u8; 64 * 1024] = [0x5a; 64 * 1024];
    stream.write_all(&len.to_be_bytes()).await?;
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK.len() as u64) as usize;
        stream.write_all(&CHUNK[..n]).await?;
        left -= n as u64;
    }
    stream.flush().await?;
    let mut ack = [0u8; 1];
    stream.read_exact(&mut ack).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_transfer_is_acknowledged_once_every_byte_arrived() {
        let (mut client, server) = tokio::io::duplex(4096);
        let sink = tokio::spawn(transfers(server));
        send_transfer(&mut client, 300_000).await.unwrap();
        send_transfer(&mut client, 0).await.unwrap();
        drop(client);
        assert_eq!(sink.await.unwrap().unwrap(), 300_000);
    }

    #[tokio::test]
    async fn a_short_transfer_is_an_error_not_an_answer() {
        let (mut client, server) = tokio::io::duplex(4096);
        let sink = tokio::spawn(transfers(server));
        client.write_all(&10u64.to_be_bytes()).await.unwrap();
        client.write_all(b"12345").await.unwrap();
        drop(client);
        assert!(sink.await.unwrap().is_err());
    }
}
