//! SPIFFE IDs (`spiffe://<trust-domain>/<path>`) and reading them out of certificates.

use std::fmt;
use std::str::FromStr;

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// The default trust domain of a cluster.
pub fn default_trust_domain(cluster: &str) -> String {
    format!("{cluster}.mesh")
}

/// A parsed SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    /// Trust domain, e.g. `us-east.mesh`.
    pub trust_domain: String,
    /// Path without the leading slash, e.g. `ns/demo/sa/echo` or `gateway`.
    pub path: String,
}

/// Errors reading SPIFFE IDs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeError {
    /// Text that is not `spiffe://domain/path`.
    #[error("`{0}` is not a SPIFFE ID (expected spiffe://<trust-domain>/<path>)")]
    Malformed(String),
    /// A certificate that cannot be parsed.
    #[error("certificate could not be parsed: {0}")]
    BadCertificate(String),
    /// A certificate without a SPIFFE URI SAN.
    #[error("certificate carries no spiffe:// URI subject alternative name")]
    Missing,
}

impl SpiffeId {
    /// A workload identity `spiffe://<td>/ns/<ns>/sa/<sa>`.
    pub fn workload(trust_domain: &str, namespace: &str, service_account: &str) -> Self {
        Self {
            trust_domain: trust_domain.to_string(),
            path: format!("ns/{namespace}/sa/{service_account}"),
        }
    }

    /// The gateway identity `spiffe://<td>/gateway`.
    pub fn gateway(trust_domain: &str) -> Self {
        Self {
            trust_domain: trust_domain.to_string(),
            path: "gateway".to_string(),
        }
    }

    /// The controller identity `spiffe://<td>/controller`.
    pub fn controller(trust_domain: &str) -> Self {
        Self {
            trust_domain: trust_domain.to_string(),
            path: "controller".to_string(),
        }
    }

    /// The URI form.
    pub fn uri(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}/{}", self.trust_domain, self.path)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || SpiffeError::Malformed(s.to_string());
        let rest = s.strip_prefix("spiffe://").ok_or_else(malformed)?;
        let (td, path) = rest.split_once('/').ok_or_else(malformed)?;
        let td_ok = !td.is_empty()
            && td
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
        if !td_ok || path.is_empty() || path.split('/').any(str::is_empty) {
            return Err(malformed());
        }
        Ok(Self {
            trust_domain: td.to_string(),
            path: path.to_string(),
        })
    }
}

/// Reads the SPIFFE ID from a certificate's URI subject alternative names.
pub fn spiffe_id_of_cert(cert: &CertificateDer<'_>) -> Result<SpiffeId, SpiffeError> {
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(cert.as_ref())
        .map_err(|e| SpiffeError::BadCertificate(e.to_string()))?;
    let san = parsed
        .subject_alternative_name()
        .map_err(|e| SpiffeError::BadCertificate(e.to_string()))?;
    let Some(san) = san else {
        return Err(SpiffeError::Missing);
    };
    san.value
        .general_names
        .iter()
        .find_map(|n| match n {
            GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(uri.parse()),
            _ => None,
        })
        .unwrap_or(Err(SpiffeError::Missing))
}

/// The SPIFFE ID of the first certificate a TLS peer presented, if any.
pub fn peer_spiffe_id(certs: Option<&[CertificateDer<'_>]>) -> Option<SpiffeId> {
    certs
        .and_then(|c| c.first())
        .and_then(|c| spiffe_id_of_cert(c).ok())
}

/// How long the first certificate of `pem` remains valid (zero when it has expired).
pub fn certificate_expiry(pem: &str) -> Result<std::time::Duration, String> {
    let der = rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .ok_or_else(|| "no certificate in the PEM".to_string())?
        .map_err(|e| format!("unreadable PEM: {e}"))?;
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(der.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let not_after = parsed.validity().not_after.timestamp();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    Ok(std::time::Duration::from_secs(
        u64::try_from(not_after - now).unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_parse_and_print() {
        let id: SpiffeId = "spiffe://us-east.mesh/ns/demo/sa/echo".parse().unwrap();
        assert_eq!(id, SpiffeId::workload("us-east.mesh", "demo", "echo"));
        assert_eq!(id.to_string(), "spiffe://us-east.mesh/ns/demo/sa/echo");
        for bad in [
            "http://x/y",
            "spiffe://",
            "spiffe://td",
            "spiffe://td/",
            "spiffe://TD/x",
            "spiffe://td//x",
        ] {
            assert!(bad.parse::<SpiffeId>().is_err(), "{bad}");
        }
    }
}
