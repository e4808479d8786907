//! Reading and writing the fixed parts of a QUIC stream: the header that opens it and the tunnel
//! reply, each bounded in size and time.

use std::time::Duration;

use mesh_core::wire::{HeaderError, PREFIX_LEN, StreamHeader, TunnelRefusal, TunnelReply};
use quinn::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::quic_endpoint::codes;

/// How long a peer may take to send a whole header, or to answer a tunnel: both are a few
/// hundred bytes sent at once, so anything slower is a broken or hostile peer.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a stream header could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeaderReadError {
    /// Malformed, oversized, unknown version.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// Not all of it arrived in time.
    #[error("stream header did not arrive within {HEADER_TIMEOUT:?}")]
    Timeout,
    /// The stream ended or failed before the header was complete.
    #[error("stream ended before its header was complete: {0}")]
    Io(std::io::Error),
}

impl HeaderReadError {
    /// Short label for `mesh_gateway_stream_rejected_total{reason}`.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            HeaderReadError::Header(e) => e.label(),
            HeaderReadError::Timeout => "timeout",
            HeaderReadError::Io(_) => "truncated",
        }
    }
}

/// Reads and decodes the header that opens a stream: prefix first, then a body no longer than
/// the prefix allows (the bound is checked before the body is read).
pub(crate) async fn read_header<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<StreamHeader, HeaderReadError> {
    let read = async {
        let mut prefix = [0u8; PREFIX_LEN];
        r.read_exact(&mut prefix)
            .await
            .map_err(HeaderReadError::Io)?;
        let prefix = StreamHeader::decode_prefix(&prefix)?;
        let mut body = vec![0u8; prefix.body_len];
        r.read_exact(&mut body).await.map_err(HeaderReadError::Io)?;
        Ok(StreamHeader::decode_body(&body, prefix.minor)?)
    };
    tokio::time::timeout(HEADER_TIMEOUT, read)
        .await
        .map_err(|_| HeaderReadError::Timeout)?
}

/// Why no tunnel reply was read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplyReadError {
    /// Undecodable reply.
    #[error("peer gateway sent a malformed tunnel reply: {0}")]
    Malformed(#[from] HeaderError),
    /// No reply in time.
    #[error("peer gateway did not answer the tunnel within {HEADER_TIMEOUT:?}")]
    Timeout,
    /// The stream ended or failed.
    #[error("peer gateway closed the tunnel stream before answering: {0}")]
    Io(std::io::Error),
}

/// Reads the peer's answer to a tunnel header.
pub(crate) async fn read_reply<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<TunnelReply, ReplyReadError> {
    let read = async {
        let mut head = [0u8; 2];
        r.read_exact(&mut head).await.map_err(ReplyReadError::Io)?;
        let mut msg = vec![0u8; head[1] as usize];
        r.read_exact(&mut msg).await.map_err(ReplyReadError::Io)?;
        Ok(TunnelReply::decode(head[0], &msg)?)
    };
    tokio::time::timeout(HEADER_TIMEOUT, read)
        .await
        .map_err(|_| ReplyReadError::Timeout)?
}

/// Answers a stream with a refusal, then ends it: the reply is finished so it reaches the peer,
/// and the receiving side is stopped so nothing more is read from it.
pub(crate) async fn refuse(
    send: &mut SendStream,
    recv: &mut RecvStream,
    kind: TunnelRefusal,
    msg: &str,
) {
    let reply = TunnelReply::Refused(kind, msg.to_string()).encode();
    if send.write_all(&reply).await.is_ok() {
        let _ = send.finish();
    } else {
        let _ = send.reset(codes::STREAM_REFUSED);
    }
    let _ = recv.stop(codes::STREAM_REFUSED);
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::wire::MAX_HEADER_LEN;

    #[tokio::test]
    async fn a_good_header_is_read_exactly() {
        let h = StreamHeader::tunnel("eu-central", "echo.demo", "127.0.0.1:7001".parse().unwrap());
        let mut wire = h.encode().unwrap();
        wire.extend_from_slice(b"payload");
        let mut r = wire.as_slice();
        assert_eq!(read_header(&mut r).await.unwrap(), h);
        assert_eq!(r, b"payload");
    }

    #[tokio::test]
    async fn oversized_declared_length_is_refused_without_reading_the_body() {
        let mut wire = b"MSH1\x01".to_vec();
        wire.extend_from_slice(&((MAX_HEADER_LEN + 1) as u16).to_be_bytes());
        let err = read_header(&mut wire.as_slice()).await.unwrap_err();
        assert_eq!(err.label(), "too_large");
        let err = read_header(&mut &b"GET / HTTP/1.1\r\n"[..])
            .await
            .unwrap_err();
        assert_eq!(err.label(), "bad_magic");
        let err = read_header(&mut &b"MSH"[..]).await.unwrap_err();
        assert_eq!(err.label(), "truncated");
    }

    #[tokio::test(start_paused = true)]
    async fn a_header_that_never_completes_times_out() {
        let (mut client, mut server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"MSH1")
            .await
            .unwrap();
        let err = read_header(&mut server).await.unwrap_err();
        assert_eq!(err.label(), "timeout");
        drop(client);
    }

    #[tokio::test]
    async fn replies_are_read() {
        let wire = TunnelReply::Refused(TunnelRefusal::NotExported, "no".into()).encode();
        let got = read_reply(&mut wire.as_slice()).await.unwrap();
        assert_eq!(
            got,
            TunnelReply::Refused(TunnelRefusal::NotExported, "no".into())
        );
        assert!(matches!(
            read_reply(&mut &[0u8][..]).await,
            Err(ReplyReadError::Io(_))
        ));
        // A refusal code of a later release is still a refusal.
        assert_eq!(
            read_reply(&mut &[99u8, 0][..]).await.unwrap(),
            TunnelReply::Refused(TunnelRefusal::Other, String::new())
        );
        assert!(matches!(
            read_reply(&mut &[1u8, 1, 0xff][..]).await,
            Err(ReplyReadError::Malformed(_))
        ));
    }
}
