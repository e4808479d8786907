//! Minimal blocking HTTP/1.1 GETs for readiness: plain to etcd's `/health`, and HTTPS with the
//! admin client certificate to the API server's `/readyz` (which also proves that the serving
//! certificate verifies for 127.0.0.1 and that the admin identity is accepted).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

use crate::pki::Pki;

/// Bounds one probe so that a hung server costs a retry, not the whole deadline.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A status code and body, or why there is none.
pub(crate) type Response = Result<(u16, String), String>;

/// GET `path` over plain HTTP on loopback `port`.
pub(crate) fn http_get(port: u16, path: &str) -> Response {
    let mut stream = connect(port)?;
    request(&mut stream, path)
}

/// An HTTPS client that trusts only the cluster's CA and presents the admin certificate.
pub(crate) fn tls_config(pki: &Pki) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(pki.ca_der.clone()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from(pki.admin_cert_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.admin_key_der.clone())),
        )?;
    Ok(Arc::new(config))
}

/// GET `path` over HTTPS on loopback `port`, verifying the server as 127.0.0.1.
pub(crate) fn https_get(config: &Arc<rustls::ClientConfig>, port: u16, path: &str) -> Response {
    let stream = connect(port)?;
    let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
    let conn = rustls::ClientConnection::new(config.clone(), name).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, stream);
    request(&mut tls, path)
}

fn connect(port: u16) -> Result<TcpStream, String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(PROBE_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(PROBE_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

fn request(stream: &mut impl ReadWrite, path: &str) -> Response {
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAccept: */*\r\n\r\n"
    )
    .and_then(|()| stream.flush())
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    // A server that closes without a TLS close_notify still sent a complete answer.
    if let Err(e) = stream.read_to_end(&mut raw)
        && raw.is_empty()
    {
        return Err(e.to_string());
    }
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("not an HTTP response: {:?}", text.lines().next()))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_string()))
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}
