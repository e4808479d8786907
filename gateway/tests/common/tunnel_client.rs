//! A sidecar-like client of a gateway's tunnel port.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_core::api::{ALPN_H2, HEADER_TARGET_CLUSTER, HEADER_TARGET_SERVICE};
use mesh_core::identity::{TrustBundle, TrustStore, WorkloadIdentity, client_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::DEADLINE;

/// A sidecar-like client of a gateway's tunnel port: mTLS with `identity`, HTTP/2.
pub(crate) struct TunnelClient {
    sender: hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
}

impl TunnelClient {
    pub(crate) async fn connect(
        tunnel_addr: SocketAddr,
        identity: &WorkloadIdentity,
        trust: &[TrustBundle],
    ) -> Result<Self> {
        let cfg = client_config(Some(identity), TrustStore::new(trust)?, &[ALPN_H2])?;
        let tcp = TcpStream::connect(tunnel_addr).await?;
        let name = rustls::pki_types::ServerName::try_from("gateway.mesh.invalid")?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await?;
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(tls))
            .await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { sender })
    }

    /// Sends a CONNECT; returns the response (and the tunnel when it is 200).
    pub(crate) async fn connect_tunnel(
        &mut self,
        endpoint: SocketAddr,
        cluster: Option<&str>,
        service: Option<&str>,
    ) -> Result<(
        StatusCode,
        Option<String>,
        String,
        Option<TokioIo<Upgraded>>,
    )> {
        let mut req = Request::builder()
            .method(Method::CONNECT)
            .uri(endpoint.to_string());
        if let Some(c) = cluster {
            req = req.header(HEADER_TARGET_CLUSTER, c);
        }
        if let Some(s) = service {
            req = req.header(HEADER_TARGET_SERVICE, s);
        }
        let rsp: Response<hyper::body::Incoming> =
            tokio::time::timeout(DEADLINE, self.sender.send_request(req.body(Empty::new())?))
                .await
                .context("CONNECT not answered in time")??;
        let status = rsp.status();
        let error = rsp
            .headers()
            .get(mesh_core::api::HEADER_MESH_ERROR)
            .map(|v| v.to_str().unwrap_or_default().to_string());
        if status == StatusCode::OK {
            let upgraded = hyper::upgrade::on(rsp).await?;
            return Ok((status, error, String::new(), Some(TokioIo::new(upgraded))));
        }
        let body = rsp.into_body().collect().await?.to_bytes();
        Ok((
            status,
            error,
            String::from_utf8_lossy(&body).to_string(),
            None,
        ))
    }
}

/// Writes `data` on a tunnel and reads the same number of bytes back, concurrently.
pub(crate) async fn round_trip(tunnel: &mut TokioIo<Upgraded>, data: &[u8]) -> Result<Vec<u8>> {
    let (mut r, mut w) = tokio::io::split(tunnel);
    let write = async {
        w.write_all(data).await?;
        w.flush().await?;
        Ok::<_, anyhow::Error>(())
    };
    let read = async {
        let mut back = vec![0u8; data.len()];
        r.read_exact(&mut back).await?;
        Ok::<_, anyhow::Error>(back)
    };
    let ((), back) = tokio::try_join!(write, read)?;
    Ok(back)
}
