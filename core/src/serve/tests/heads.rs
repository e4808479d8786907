//! Request heads over the limits: a 431 that names the limit, and the connection goes on.

use super::*;

/// Sends, on `stream`, an HTTP/1.1 request whose one extra header carries `value_len` bytes,
/// and gives the answer. The request is written by a separate task: the server may answer
/// (and stop reading) before the whole head is sent when it is too large.
async fn answer_for_header_of(stream: TcpStream, value_len: usize) -> (String, TcpStream) {
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(value_len)
    );
    let write = tokio::spawn(async move {
        // A write cut short by the server's close is expected for a refused head.
        let _ = writer.write_all(head.as_bytes()).await;
        writer
    });
    let answer = read_h1_answer(&mut reader).await;
    let writer = write.await.unwrap();
    (answer, reader.reunite(writer).unwrap())
}

#[tokio::test]
async fn an_http1_head_over_the_limit_is_answered_431_naming_it_and_the_connection_serves_on() {
    let (addr, server) = limited_server(ServeLimits::default()).await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (answer, stream) = answer_for_header_of(stream, 100 * 1024).await;
    assert!(
        answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large"),
        "{answer}"
    );
    assert!(
        answer.contains("x-mesh-error: header-too-large"),
        "{answer}"
    );
    assert!(answer.contains("limit of 65536 bytes"), "{answer}");
    // The same connection, and another, still serve a head within the limit.
    let (answer, _) = answer_for_header_of(stream, 32 * 1024).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    let other = TcpStream::connect(addr).await.unwrap();
    let (answer, _) = answer_for_header_of(other, 32 * 1024).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    server.abort();
}

#[tokio::test]
async fn an_http1_head_past_twice_the_limit_gets_hypers_bare_431() {
    let (addr, server) = limited_server(ServeLimits::default()).await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (answer, _) = answer_for_header_of(stream, 300 * 1024).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(!answer.contains("x-mesh-error"), "{answer}");
    server.abort();
}

#[tokio::test]
async fn too_many_header_fields_are_answered_431_naming_the_limit() {
    let limits = ServeLimits {
        max_headers: 10,
        ..ServeLimits::default()
    };
    let (addr, server) = limited_server(limits).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut head = String::from("GET / HTTP/1.1\r\nhost: x\r\n");
    for i in 0..15 {
        head.push_str(&format!("x-h{i}: v\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_h1_answer(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(
        answer.contains("x-mesh-error: too-many-headers"),
        "{answer}"
    );
    assert!(answer.contains("16 header fields"), "{answer}");
    server.abort();
}

#[tokio::test]
async fn an_http2_header_list_over_the_limit_is_answered_431_and_the_connection_serves_on() {
    let (addr, server) = limited_server(ServeLimits::default()).await;
    let (mut sender, _conn) = h2_client(addr).await;
    let request = |value_len: usize| {
        Request::builder()
            .uri("http://x/")
            .header("x-big", "a".repeat(value_len))
            .body(crate::http::empty())
            .unwrap()
    };
    let rsp = sender.send_request(request(100 * 1024)).await.unwrap();
    assert_eq!(
        rsp.status(),
        http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert_eq!(rsp.headers()["x-mesh-error"], "header-too-large");
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains("limit of 65536 bytes"),
        "{body:?}"
    );
    sender.ready().await.unwrap();
    // 32 KiB: over h2's 16 KiB default, within the 64 KiB limit.
    let rsp = sender.send_request(request(32 * 1024)).await.unwrap();
    assert_eq!(rsp.status(), http::StatusCode::OK);
    server.abort();
}
