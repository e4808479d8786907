use std::time::{Duration, Instant};

use super::*;

async fn echo_server() -> (SocketAddr, JoinHandle<()>) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let _ = sock.send_to(&buf[..n], from).await;
        }
    });
    (addr, task)
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    mesh_test_support::eventually(what, Duration::from_secs(5), async || f()).await;
}

#[tokio::test]
async fn datagrams_go_through_both_ways_untouched_by_default() {
    let (target, _server) = echo_server().await;
    let relay = UdpRelay::start("127.0.0.1:0".parse().unwrap(), target)
        .await
        .unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = [0u8; 64];
    for i in 0..20u8 {
        client.send_to(&[i; 10], relay.local_addr()).await.unwrap();
        let (n, from) = tokio::time::timeout(Duration::from_secs(2), client.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((n, from, buf[0]), (10, relay.local_addr(), i));
    }
    let s = relay.stats();
    assert_eq!(
        (s.forward.received, s.backward.received, s.forward.dropped),
        (20, 20, 0)
    );
}

#[tokio::test]
async fn delay_applies_in_each_direction() {
    let (target, _server) = echo_server().await;
    let relay = UdpRelay::start("127.0.0.1:0".parse().unwrap(), target)
        .await
        .unwrap();
    relay.impair(Impairment {
        delay: Duration::from_millis(40),
        ..Impairment::default()
    });
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let started = Instant::now();
    client.send_to(b"ping", relay.local_addr()).await.unwrap();
    let mut buf = [0u8; 16];
    tokio::time::timeout(Duration::from_secs(2), client.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let rtt = started.elapsed();
    assert!(
        rtt >= Duration::from_millis(80),
        "round trip {rtt:?} should carry 2 x 40 ms"
    );
    relay.clear();
    let started = Instant::now();
    client.send_to(b"ping", relay.local_addr()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), client.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(40),
        "cleared relay still delays"
    );
}

#[tokio::test]
async fn loss_and_duplication_are_counted_and_seen_by_the_receiver() {
    let sink = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let relay = UdpRelay::start("127.0.0.1:0".parse().unwrap(), sink.local_addr().unwrap())
        .await
        .unwrap();
    relay.impair(Impairment {
        loss: 0.3,
        duplicate: 0.2,
        seed: 9,
        ..Impairment::default()
    });
    let got = Arc::new(AtomicU64::new(0));
    let counter = got.clone();
    let _reader = tokio::spawn(async move {
        let mut buf = [0u8; 16];
        while sink.recv_from(&mut buf).await.is_ok() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let n = 400u64;
    for i in 0..n {
        client
            .send_to(&i.to_be_bytes(), relay.local_addr())
            .await
            .unwrap();
        // One at a time: a burst would overflow the socket buffers before the relay reads.
        wait_until("the datagram to be decided", || {
            relay.stats().forward.received == i + 1
        })
        .await;
    }
    let s = relay.stats().forward;
    let expected = n - s.dropped + s.duplicated;
    wait_until("every surviving copy to arrive", || {
        got.load(Ordering::SeqCst) == expected
    })
    .await;
    assert!(s.dropped > n / 5 && s.dropped < n * 2 / 5, "{s:?}");
    assert!(s.duplicated > 0, "{s:?}");
}
