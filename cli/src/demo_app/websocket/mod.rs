//! The demo app's WebSocket echo on `/ws`: the handshake of RFC 6455 section 4.2 (version 13,
//! `Sec-WebSocket-Accept` from the client's key, no subprotocol or extension), then every data
//! frame echoed as it came (opcode and FIN kept, so fragmented messages come back fragmented),
//! pings answered with pongs, and a close echoed before the connection ends. Enough to show
//! that an upgraded connection crosses the mesh byte for byte, and small enough to need no
//! WebSocket crate.

pub mod frame;
pub mod sha1;

use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION};
use http::{HeaderValue, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mesh_core::http::{BoxBody, empty, text};
use mesh_sidecar::headers::upgrade_protocol;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use frame::{CLOSE, Frame, FrameError, PING, PONG};

/// Where the echo answers.
pub const PATH_WS: &str = "/ws";
/// Largest frame payload echoed: the echo holds a frame whole before sending it back.
const MAX_PAYLOAD: u64 = 16 * 1024 * 1024;
/// Close codes (RFC 6455 section 7.4.1): a protocol error, a message too big.
const CLOSE_PROTOCOL_ERROR: u16 = 1002;
const CLOSE_TOO_BIG: u16 = 1009;

/// Whether `req` asks the echo for a WebSocket (`GET /ws` with `Upgrade: websocket`).
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.uri().path() == PATH_WS
        && upgrade_protocol(req.headers()).is_some_and(|p| p.eq_ignore_ascii_case("websocket"))
}

/// Answers the handshake: 101 with the accept key, the echo running on the connection once
/// hyper hands it over; 400 naming what is missing.
pub fn accept<B>(mut req: Request<B>) -> Response<BoxBody> {
    let version = req.headers().get(SEC_WEBSOCKET_VERSION);
    if version.is_none_or(|v| v.as_bytes() != b"13") {
        let mut rsp = text(StatusCode::BAD_REQUEST, "WebSocket version 13 only");
        rsp.headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return rsp;
    }
    let Some(key) = req
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .and_then(|k| k.to_str().ok())
    else {
        return text(StatusCode::BAD_REQUEST, "no Sec-WebSocket-Key");
    };
    let Ok(accept) = HeaderValue::from_str(&sha1::accept_key(key)) else {
        return text(StatusCode::BAD_REQUEST, "bad Sec-WebSocket-Key");
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => echo(TokioIo::new(upgraded)).await,
            Err(e) => tracing::debug!(error = %e, "the WebSocket connection did not open"),
        }
    });
    let mut rsp = Response::new(empty());
    *rsp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = rsp.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    rsp
}

/// Echoes frames on `io` until the client closes or breaks the protocol.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut io: S) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        loop {
            match Frame::decode(&buf, MAX_PAYLOAD) {
                Ok(Some((frame, used))) => {
                    buf.drain(..used);
                    let (answer, last) = match frame.opcode {
                        PING => (Some(Frame::new(PONG, frame.payload)), false),
                        PONG => (None, false),
                        CLOSE => (Some(Frame::new(CLOSE, frame.payload)), true),
                        _ => (Some(frame), false),
                    };
                    if let Some(answer) = answer
                        && io.write_all(&answer.encode(None)).await.is_err()
                    {
                        return;
                    }
                    if last {
                        let _ = io.shutdown().await;
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let code = match e {
                        FrameError::TooLarge { .. } => CLOSE_TOO_BIG,
                        FrameError::ReservedBits | FrameError::BadControl => CLOSE_PROTOCOL_ERROR,
                    };
                    let close = Frame::new(CLOSE, code.to_be_bytes().to_vec());
                    let _ = io.write_all(&close.encode(None)).await;
                    let _ = io.shutdown().await;
                    return;
                }
            }
        }
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use frame::{BINARY, TEXT};

    #[tokio::test]
    async fn frames_come_back_pings_are_answered_and_a_close_ends_it() {
        let (mut client, server) = tokio::io::duplex(1024);
        let task = tokio::spawn(echo(server));
        let mask = Some([9, 8, 7, 6]);
        let mut sent = Vec::new();
        sent.extend(Frame::new(TEXT, "hello").encode(mask));
        sent.extend(Frame::new(PING, "p").encode(mask));
        sent.extend(Frame::new(BINARY, vec![1u8; 300]).encode(mask));
        sent.extend(Frame::new(CLOSE, 1000u16.to_be_bytes().to_vec()).encode(mask));
        client.write_all(&sent).await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        task.await.unwrap();
        let mut frames = Vec::new();
        let mut at = 0;
        while let Some((f, used)) = Frame::decode(&got[at..], 1024).unwrap() {
            frames.push(f);
            at += used;
        }
        assert_eq!(
            frames,
            [
                Frame::new(TEXT, "hello"),
                Frame::new(PONG, "p"),
                Frame::new(BINARY, vec![1u8; 300]),
                Frame::new(CLOSE, 1000u16.to_be_bytes().to_vec()),
            ]
        );
    }

    #[test]
    fn the_handshake_needs_version_13_and_a_key() {
        let req = |version: Option<&'static str>, key: Option<&'static str>| {
            let mut b = Request::builder()
                .uri(PATH_WS)
                .header("connection", "Upgrade")
                .header("upgrade", "websocket");
            if let Some(v) = version {
                b = b.header("sec-websocket-version", v);
            }
            if let Some(k) = key {
                b = b.header("sec-websocket-key", k);
            }
            b.body(()).unwrap()
        };
        assert!(is_upgrade(&req(None, None)));
        assert_eq!(
            accept(req(Some("8"), None)).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            accept(req(Some("13"), None)).status(),
            StatusCode::BAD_REQUEST
        );
        let plain = Request::builder().uri(PATH_WS).body(()).unwrap();
        assert!(!is_upgrade(&plain));
    }

    #[tokio::test]
    async fn the_handshake_answers_101_with_the_accept_key() {
        let req = Request::builder()
            .uri(PATH_WS)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(())
            .unwrap();
        let rsp = accept(req);
        assert_eq!(rsp.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            rsp.headers()[SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(rsp.headers()["upgrade"], "websocket");
    }
}
