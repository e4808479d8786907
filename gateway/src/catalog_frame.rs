//! Framing of catalog messages on control streams: a `u32` big-endian length, then that many
//! bytes of JSON [`CatalogMessage`].

use mesh_core::catalog::CatalogMessage;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame accepted or sent: room for catalogs of tens of thousands of endpoints, while a
/// hostile or broken peer cannot make a gateway buffer more than this per stream.
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// Why a frame could not be read or written; every variant ends the control stream.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A declared or encoded length above the limit.
    #[error("catalog frame of {0} bytes exceeds the {MAX_FRAME_LEN}-byte limit")]
    TooLarge(usize),
    /// The stream ended inside a frame.
    #[error("control stream ended inside a frame ({got} of {expected} bytes)")]
    Truncated {
        /// Bytes the frame needed.
        expected: usize,
        /// Bytes that arrived.
        got: usize,
    },
    /// The body is not a catalog message.
    #[error("catalog frame is not a valid catalog message: {0}")]
    Json(#[from] serde_json::Error),
    /// The stream failed.
    #[error("control stream: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// Short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            FrameError::TooLarge(_) => "too_large",
            FrameError::Truncated { .. } => "truncated",
            FrameError::Json(_) => "bad_json",
            FrameError::Io(_) => "io",
        }
    }
}

/// Encodes one message as a frame.
pub fn encode_frame(msg: &CatalogMessage) -> Result<Vec<u8>, FrameError> {
    let body = serde_json::to_vec(msg)?;
    if body.len() > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(body.len()));
    }
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge(body.len()))?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Writes one message as a frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &CatalogMessage,
) -> Result<(), FrameError> {
    let frame = encode_frame(msg)?;
    w.write_all(&frame).await?;
    w.flush().await?;
    Ok(())
}

/// Reads the next frame; `Ok(None)` when the stream ended cleanly between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<CatalogMessage>, FrameError> {
    let mut len_buf = [0u8; 4];
    let mut got = 0;
    while got < len_buf.len() {
        let n = r.read(&mut len_buf[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(FrameError::Truncated { expected: 4, got });
        }
        got += n;
    }
    let len = u32::from_be_bytes(len_buf) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(len));
    }
    // Grows with what actually arrives instead of trusting the declared length up front.
    let mut body = Vec::with_capacity(len.min(64 * 1024));
    let read = r.take(len as u64).read_to_end(&mut body).await?;
    if read < len {
        return Err(FrameError::Truncated {
            expected: len,
            got: read,
        });
    }
    Ok(Some(serde_json::from_slice(&body)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::catalog::ExportCatalog;

    fn snapshot() -> CatalogMessage {
        let mut catalog = ExportCatalog::new("eu-central");
        catalog.version = 3;
        CatalogMessage::Snapshot { catalog }
    }

    #[tokio::test]
    async fn frames_round_trip_and_end_cleanly() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &snapshot()).await.unwrap();
        write_frame(&mut wire, &CatalogMessage::ResyncRequest)
            .await
            .unwrap();
        let mut r = wire.as_slice();
        assert_eq!(read_frame(&mut r).await.unwrap(), Some(snapshot()));
        assert_eq!(
            read_frame(&mut r).await.unwrap(),
            Some(CatalogMessage::ResyncRequest)
        );
        assert!(read_frame(&mut r).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversized_declared_length_is_refused_before_reading_the_body() {
        let mut wire = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes().to_vec();
        wire.extend_from_slice(b"{}");
        let err = read_frame(&mut wire.as_slice()).await.unwrap_err();
        assert!(
            matches!(err, FrameError::TooLarge(n) if n == MAX_FRAME_LEN + 1),
            "{err}"
        );
        assert_eq!(err.label(), "too_large");
    }

    #[tokio::test]
    async fn truncated_frames_are_errors_not_messages() {
        let full = encode_frame(&snapshot()).unwrap();
        let err = read_frame(&mut &full[..full.len() - 1]).await.unwrap_err();
        assert!(
            matches!(err, FrameError::Truncated { got, expected } if got + 1 == expected),
            "{err}"
        );
        let err = read_frame(&mut &full[..2]).await.unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::Truncated {
                    expected: 4,
                    got: 2
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn garbage_bodies_are_refused() {
        let mut wire = 5u32.to_be_bytes().to_vec();
        wire.extend_from_slice(b"hello");
        let err = read_frame(&mut wire.as_slice()).await.unwrap_err();
        assert_eq!(err.label(), "bad_json");
    }

    #[test]
    fn oversized_messages_are_not_sent() {
        let mut catalog = ExportCatalog::new("eu-central");
        let endpoints = (0..200_000u32)
            .map(|i| mesh_core::catalog::ExportedEndpoint {
                address: std::net::SocketAddr::from((
                    [10, (i >> 16) as u8, (i >> 8) as u8, i as u8],
                    15006,
                )),
                identity: "spiffe://eu-central.mesh/ns/demo/sa/a-rather-long-service-account-name"
                    .into(),
                healthy: true,
            })
            .collect();
        catalog.services.insert(
            "echo.demo".parse().unwrap(),
            mesh_core::catalog::ExportedService {
                healthy: true,
                endpoints,
                ports: Vec::new(),
                exported_since: None,
            },
        );
        let err = encode_frame(&CatalogMessage::Snapshot { catalog }).unwrap_err();
        assert!(
            matches!(err, FrameError::TooLarge(n) if n > MAX_FRAME_LEN),
            "{err}"
        );
    }
}
