//! An HTTP/2 rapid-reset flood (CVE-2023-44487): thousands of streams, each opened and reset
//! in the same write, on one connection. The flooding connection gets a GOAWAY
//! `ENHANCE_YOUR_CALM`; other clients are served in time.
//!
//! The frames are written by hand: the `h2` crate, as a client, never puts a stream's HEADERS
//! on the wire when the stream is reset before its connection task flushed them, so it cannot
//! send the attack's HEADERS + RST_STREAM pairs back to back.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use mesh_core::serve::ServeLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Setup;
use super::common::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_HEADERS: u8 = 0x4;
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame: a 9-byte header (length, type, flags, stream id) and `payload`.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// `GET http://echo.demo.svc.clusterset.local/` in HPACK without the dynamic table: indexed
/// `:method GET`, `:scheme http`, `:path /`, then `:authority` as a literal with an indexed name.
fn request_block() -> Vec<u8> {
    let authority = b"echo.demo.svc.clusterset.local";
    let mut block = vec![
        0x82,
        0x86,
        0x84,
        0x01,
        u8::try_from(authority.len()).unwrap(),
    ];
    block.extend_from_slice(authority);
    block
}

/// Opens and at once resets up to `streams` streams, 100 pairs per write, on one connection to
/// `proxy`; gives the error code of the GOAWAY the server answered, if it did.
async fn rapid_reset(proxy: SocketAddr, streams: u32) -> Option<u32> {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let (mut reader, mut writer) = tcp.into_split();
    let flood = tokio::spawn(async move {
        let mut opening = PREFACE.to_vec();
        opening.extend(frame(SETTINGS, 0, 0, &[]));
        writer.write_all(&opening).await?;
        let block = request_block();
        for batch in 0..streams / 100 {
            let mut bytes = Vec::new();
            for i in 0..100 {
                let stream = 2 * (batch * 100 + i) + 1;
                bytes.extend(frame(HEADERS, END_HEADERS, stream, &block));
                bytes.extend(frame(RST_STREAM, 0, stream, &CANCEL.to_be_bytes()));
            }
            writer.write_all(&bytes).await?;
        }
        std::io::Result::Ok(writer)
    });
    let mut received = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    let goaway = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            // Frames read whole so far: look for a GOAWAY.
            let mut at = 0;
            while received.len() >= at + 9 {
                let len = usize::from(received[at]) << 16
                    | usize::from(received[at + 1]) << 8
                    | usize::from(received[at + 2]);
                if received.len() < at + 9 + len {
                    break;
                }
                if received[at + 3] == GOAWAY {
                    let code = &received[at + 9 + 4..at + 9 + 8];
                    return Some(u32::from_be_bytes(code.try_into().unwrap()));
                }
                at += 9 + len;
            }
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the flooding connection is answered or closed within 10 s");
    flood.abort();
    goaway
}

#[tokio::test]
async fn a_rapid_reset_flood_gets_goaway_and_others_are_served() {
    let setup = Setup::start(ServeLimits::default(), 64).await;
    let flood = tokio::spawn(rapid_reset(setup.outbound, 10_000));

    // While the flood runs, a normal request on another connection is answered in time.
    let ok = tokio::time::timeout(Duration::from_secs(5), get(setup.outbound, "/"))
        .await
        .expect("answered within 5 s during the flood")
        .unwrap();
    assert_eq!(ok.status, StatusCode::OK);

    let code = flood.await.unwrap();
    assert_eq!(
        code,
        Some(ENHANCE_YOUR_CALM),
        "the flood ends with GOAWAY ENHANCE_YOUR_CALM"
    );

    let ok = tokio::time::timeout(Duration::from_secs(5), get(setup.outbound, "/"))
        .await
        .expect("answered within 5 s after the flood")
        .unwrap();
    assert_eq!(ok.status, StatusCode::OK);
}
