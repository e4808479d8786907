//! The outbound listener's connection cap: below it connections are served, past it they are
//! closed at once and counted in the metrics.

use std::time::Duration;

use http::StatusCode;
use mesh_core::serve::ServeLimits;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::Setup;
use super::common::*;

#[tokio::test]
async fn connections_past_the_cap_are_refused_at_once_and_counted() {
    let setup = Setup::start(ServeLimits::default(), 3).await;
    // Three connections held open, each served.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut sender = h2c(setup.outbound).await.unwrap();
        let answer = h2_send(&mut sender, http::Method::GET, super::ECHO, vec![])
            .await
            .unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        held.push(sender);
    }

    // The fourth is closed at once, without an answer.
    let mut fourth = TcpStream::connect(setup.outbound).await.unwrap();
    let mut buf = [0; 64];
    let read = tokio::time::timeout(Duration::from_secs(1), fourth.read(&mut buf))
        .await
        .expect("refused at once, not left waiting");
    assert!(matches!(read, Ok(0) | Err(_)), "closed without an answer");
    assert_eq!(setup.cap.refused(), 1);
    let metrics = setup.metrics().await;
    assert!(
        metrics.contains(r#"mesh_sidecar_connections_refused_total{listener="outbound"} 1"#),
        "{metrics}"
    );

    // One closed: below the cap again, a new connection is served.
    drop(held.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match get(setup.outbound, "/").await {
            Ok(answer) => {
                assert_eq!(answer.status, StatusCode::OK);
                break;
            }
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "still refused 5 s after a connection closed: {e}"
            ),
        }
    }
    // The held connections were never disturbed.
    let answer = h2_send(&mut held[0], http::Method::GET, super::ECHO, vec![])
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
}
