//! The connection cap: past it, connections are closed at once and counted.

use super::*;

/// Sends one HTTP/1.1 request on `stream` and checks it is answered 200.
async fn served(stream: &mut TcpStream) {
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_h1_answer(stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_at_once_and_counted() {
    let mut registry = prometheus_client::registry::Registry::default();
    let cap = RefusedConnections::register(&mut registry, "mesh_test").cap("test", 2);
    let (addr, server) = server_with(ServeLimits::default(), cap.clone(), Duration::ZERO).await;
    let mut first = TcpStream::connect(addr).await.unwrap();
    let mut second = TcpStream::connect(addr).await.unwrap();
    served(&mut first).await;
    served(&mut second).await;

    let mut third = TcpStream::connect(addr).await.unwrap();
    let seen = assert_closed_within(&mut third, Duration::from_secs(1)).await;
    assert!(seen.is_empty(), "closed without an answer");
    assert_eq!(cap.refused(), 1);

    // Below the cap again, a new connection is served.
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut next = TcpStream::connect(addr).await.unwrap();
        let written = next.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
        let mut buf = vec![0; 1024];
        match (written, next.read(&mut buf).await) {
            (Ok(()), Ok(n)) if n > 0 => {
                let answer = String::from_utf8_lossy(&buf[..n]);
                assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
                break;
            }
            _ => assert!(
                tokio::time::Instant::now() < deadline,
                "a connection below the cap is still refused after 5 s"
            ),
        }
    }
    served(&mut second).await;
    server.abort();
}
