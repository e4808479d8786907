//! 64 MiB bodies stream through both sidecars in both directions without being held whole in
//! memory. Alone in its own test binary, so the process's peak RSS measures this test only.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};

const SIZE: usize = 64 * 1024 * 1024;

/// Peak resident set size of this process, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_stream_both_ways_without_being_buffered() -> anyhow::Result<()> {
    let east = Cluster::new("us-east");
    let app = TestApp::start("echo-0").await;
    let server = ServerSidecar::start(&east, app.addr).await;
    // The per-try timeout runs until the response head, which the app sends only after the
    // whole upload: generous, since this test is about memory, and a loaded machine is slow.
    let client = ClientSidecar::with_timeout(&east, Duration::from_secs(60)).await;
    client.state.apply_snapshot(snapshot(
        &east,
        vec![east.bundle.clone()],
        vec![locality("us-east", vec![server.endpoint(&east)])],
    ));
    // Warm the path so connection set-up is not in the measurement.
    assert_eq!(get(client.addr, "/").await?.status, StatusCode::OK);
    // Upload: the app hashes what arrives. The expected digest is computed chunk by chunk, so
    // the test itself never holds the payload either.
    let chunk = |i: usize| {
        let start = i * 64 * 1024;
        Bytes::from(
            (start..start + 64 * 1024)
                .map(|j| (j % 251) as u8)
                .collect::<Vec<u8>>(),
        )
    };
    let mut expected = Sha256::new();
    for i in 0..SIZE / (64 * 1024) {
        expected.update(chunk(i));
    }
    let expected = hex(&expected.finalize());
    let baseline = peak_rss();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        for i in 0..SIZE / (64 * 1024) {
            if tx.send(chunk(i)).await.is_err() {
                return;
            }
        }
    });
    let tcp = tokio::net::TcpStream::connect(client.addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(Method::POST)
        .uri("http://echo.demo.svc.clusterset.local/sha256")
        .header("content-length", SIZE.to_string())
        .body(ChannelBody(rx))?;
    let rsp = sender.send_request(req).await?;
    assert_eq!(rsp.status(), StatusCode::OK);
    let text = String::from_utf8(rsp.into_body().collect().await?.to_bytes().to_vec())?;
    assert_eq!(text.trim(), format!("{expected} {SIZE}"));

    // Download: hashed frame by frame as it arrives.
    let req = Request::builder()
        .method(Method::GET)
        .uri(format!(
            "http://echo.demo.svc.clusterset.local/generate/{SIZE}"
        ))
        .body(http_body_util::Empty::<Bytes>::new())?;
    let mut sender = {
        let tcp = tokio::net::TcpStream::connect(client.addr).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        sender
    };
    let rsp = sender.send_request(req).await?;
    assert_eq!(rsp.status(), StatusCode::OK);
    let mut body = rsp.into_body();
    let mut hasher = Sha256::new();
    let mut len = 0;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            len += data.len();
            hasher.update(data);
        }
    }
    assert_eq!(len, SIZE);
    assert_eq!(hex(&hasher.finalize()), expected, "same pattern both ways");

    let grown = peak_rss().saturating_sub(baseline);
    assert!(
        grown < 40 * 1024 * 1024,
        "peak RSS grew by {} MiB while streaming 64 MiB",
        grown / (1024 * 1024)
    );
    Ok(())
}
