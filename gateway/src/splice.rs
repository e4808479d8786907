//! Copies a tunnel's bytes between a local byte stream (a sidecar's CONNECT or an endpoint's TCP
//! connection) and a QUIC stream, both ways, counting as it goes and propagating half-close.
//!
//! The gateway never looks at these bytes: they are the inner TLS between two sidecars.

use prometheus_client::metrics::counter::Counter;
use quinn::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::metrics::{BytesLabels, Metrics};
use crate::quic_endpoint::codes;

/// Copy buffer per direction: large enough for QUIC and TLS records to move in few syscalls.
const BUFFER: usize = 64 * 1024;

/// Bytes moved by a finished splice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Spliced {
    /// From the local side into the QUIC stream.
    pub to_peer: u64,
    /// From the QUIC stream to the local side.
    pub from_peer: u64,
}

/// The byte counters of one peer.
pub(crate) struct SpliceCounters {
    to_peer: Counter,
    from_peer: Counter,
}

impl SpliceCounters {
    /// The counters of `peer`.
    pub(crate) fn new(metrics: &Metrics, peer: &str) -> Self {
        let get = |direction: &str| {
            metrics
                .tunnel_bytes
                .get_or_create(&BytesLabels {
                    peer: peer.to_string(),
                    direction: direction.to_string(),
                })
                .clone()
        };
        Self {
            to_peer: get("to_peer"),
            from_peer: get("from_peer"),
        }
    }
}

/// Splices `local` with a QUIC stream until both directions ended. EOF on one side finishes the
/// matching direction of the other (FIN on QUIC, shutdown on the local stream), so protocols
/// that half-close keep working. An error in either direction resets both.
pub(crate) async fn splice<L>(
    local: L,
    mut send: SendStream,
    mut recv: RecvStream,
    counters: &SpliceCounters,
) -> Result<Spliced, std::io::Error>
where
    L: AsyncRead + AsyncWrite + Send,
{
    let (mut local_read, mut local_write) = tokio::io::split(local);
    let result = {
        let up = async {
            let n = copy_counted(&mut local_read, &mut send, &counters.to_peer).await?;
            send.finish().map_err(std::io::Error::other)?;
            Ok::<_, std::io::Error>(n)
        };
        let down = async {
            let n = copy_counted(&mut recv, &mut local_write, &counters.from_peer).await?;
            local_write.shutdown().await?;
            Ok::<_, std::io::Error>(n)
        };
        tokio::try_join!(up, down)
    };
    match result {
        Ok((to_peer, from_peer)) => Ok(Spliced { to_peer, from_peer }),
        Err(e) => {
            let _ = send.reset(codes::STREAM_REFUSED);
            let _ = recv.stop(codes::STREAM_REFUSED);
            Err(e)
        }
    }
}

async fn copy_counted<R, W>(r: &mut R, w: &mut W, counter: &Counter) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUFFER];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            w.flush().await?;
            return Ok(total);
        }
        w.write_all(&buf[..n]).await?;
        counter.inc_by(n as u64);
        total += n as u64;
    }
}
