//! Network fixtures: an echo endpoint that counts connections, and a UDP relay that can be
//! partitioned.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// A TCP echo endpoint that counts the connections it accepted.
pub(crate) struct EchoEndpoint {
    pub addr: SocketAddr,
    pub accepted: Arc<Mutex<u32>>,
}

impl EchoEndpoint {
    pub(crate) async fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(Mutex::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                *count.lock().unwrap() += 1;
                tokio::spawn(async move {
                    let (mut r, mut w) = tcp.split();
                    // Echo until the client half-closes, then half-close back.
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        Ok(Self { addr, accepted })
    }

    pub(crate) fn connections(&self) -> u32 {
        *self.accepted.lock().unwrap()
    }
}

/// A UDP relay between a dialing gateway and a peer gateway that can be partitioned: while
/// partitioned it drops every datagram, the way a frozen peer or a cut network looks.
pub(crate) struct UdpRelay {
    pub addr: SocketAddr,
    partitioned: Arc<std::sync::atomic::AtomicBool>,
}

impl UdpRelay {
    pub(crate) async fn start(target: SocketAddr) -> Result<Self> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let front = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await?);
        let back = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await?);
        back.connect(target).await?;
        let addr = front.local_addr()?;
        let partitioned = Arc::new(AtomicBool::new(false));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        {
            let (front, back, cut, client) = (
                front.clone(),
                back.clone(),
                partitioned.clone(),
                client.clone(),
            );
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok((n, from)) = front.recv_from(&mut buf).await {
                    *client.lock().unwrap() = Some(from);
                    if !cut.load(Ordering::SeqCst) {
                        let _ = back.send(&buf[..n]).await;
                    }
                }
            });
        }
        {
            let cut = partitioned.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = back.recv(&mut buf).await {
                    let to = *client.lock().unwrap();
                    if let Some(to) = to.filter(|_| !cut.load(Ordering::SeqCst)) {
                        let _ = front.send_to(&buf[..n], to).await;
                    }
                }
            });
        }
        Ok(Self { addr, partitioned })
    }

    pub(crate) fn partition(&self, cut: bool) {
        self.partitioned
            .store(cut, std::sync::atomic::Ordering::SeqCst);
    }
}
