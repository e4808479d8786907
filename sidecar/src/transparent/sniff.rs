//! Telling HTTP from any other protocol by a connection's first bytes (pure), and reading just
//! enough of them, within a short bound, to decide.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// How long a captured connection may stay silent before it is taken for a protocol where
/// the server speaks first (SMTP, MySQL, ...), and carried opaque.
pub const SNIFF_TIMEOUT: Duration = Duration::from_millis(500);

/// The longest prefix that decides: `PRI * HTTP/2.0` (the HTTP/2 preface's start).
const DECIDING_BYTES: usize = 14;

/// HTTP/1.x request lines start with a method and a space; HTTP/2 with its preface.
const HTTP_STARTS: [&[u8]; 10] = [
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"TRACE ",
    b"CONNECT ",
    b"PRI * HTTP/2.0",
];

/// What the bytes so far say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// An HTTP/1.x request line or the HTTP/2 preface.
    Http,
    /// Anything else (TLS, a database protocol, raw bytes).
    Opaque,
    /// Still the start of an HTTP request: more bytes decide.
    Undecided,
}

/// Classifies a connection by its first bytes.
pub fn classify(prefix: &[u8]) -> Sniffed {
    let mut undecided = false;
    for start in HTTP_STARTS {
        if prefix.len() >= start.len() {
            if prefix.starts_with(start) {
                return Sniffed::Http;
            }
        } else if start.starts_with(prefix) {
            undecided = true;
        }
    }
    if undecided {
        Sniffed::Undecided
    } else {
        Sniffed::Opaque
    }
}

/// Reads from `stream` until its protocol is known, the client closes, or [`SNIFF_TIMEOUT`]
/// passes; returns the bytes read (to be replayed) and the verdict. Silence and an early close
/// are [`Sniffed::Opaque`].
pub async fn sniff<R: AsyncRead + Unpin>(stream: &mut R) -> std::io::Result<(Vec<u8>, Sniffed)> {
    let mut prefix = Vec::with_capacity(DECIDING_BYTES);
    let deadline = tokio::time::Instant::now() + SNIFF_TIMEOUT;
    loop {
        let verdict = classify(&prefix);
        if verdict != Sniffed::Undecided {
            return Ok((prefix, verdict));
        }
        let mut buf = [0u8; DECIDING_BYTES];
        let want = DECIDING_BYTES - prefix.len();
        match tokio::time::timeout_at(deadline, stream.read(&mut buf[..want])).await {
            Ok(Ok(0)) | Err(_) => return Ok((prefix, Sniffed::Opaque)),
            Ok(Ok(n)) => prefix.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_requests_and_the_http2_preface_are_http() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Sniffed::Http);
        assert_eq!(classify(b"OPTIONS * HTTP/1.1"), Sniffed::Http);
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n\r\nSM"), Sniffed::Http);
    }

    #[test]
    fn a_partial_method_waits_for_more_and_anything_else_is_opaque() {
        assert_eq!(classify(b""), Sniffed::Undecided);
        assert_eq!(classify(b"GE"), Sniffed::Undecided);
        assert_eq!(classify(b"PRI * HT"), Sniffed::Undecided);
        // A TLS ClientHello, lowercase methods, a method without its space.
        assert_eq!(classify(&[0x16, 0x03, 0x01]), Sniffed::Opaque);
        assert_eq!(classify(b"get / HTTP/1.1"), Sniffed::Opaque);
        assert_eq!(classify(b"GETX"), Sniffed::Opaque);
        assert_eq!(classify(b"hello\n"), Sniffed::Opaque);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn silence_is_opaque_after_the_bound() {
        let (_client, mut accepted) = tokio::io::duplex(64);
        let started = tokio::time::Instant::now();
        let (bytes, verdict) = sniff(&mut accepted).await.unwrap();
        assert_eq!((bytes.as_slice(), verdict), (&b""[..], Sniffed::Opaque));
        assert_eq!(started.elapsed(), SNIFF_TIMEOUT);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn bytes_split_across_reads_are_joined() {
        use tokio::io::AsyncWriteExt;
        let (mut client, mut accepted) = tokio::io::duplex(64);
        client.write_all(b"PO").await.unwrap();
        let sniffing = tokio::spawn(async move { sniff(&mut accepted).await.unwrap() });
        // On this one thread the sniffer runs now, reads "PO" and waits for more.
        tokio::task::yield_now().await;
        assert!(!sniffing.is_finished(), "two bytes cannot decide");
        client.write_all(b"ST /x HTTP/1.1\r\n").await.unwrap();
        let (bytes, verdict) = sniffing.await.unwrap();
        assert_eq!(verdict, Sniffed::Http);
        assert_eq!(&bytes[..5], b"POST ");
    }
}
