//! The cluster certificate authority and workload key material.
//!
//! `mesh ca` / `mesh up` create a self-signed root per cluster; the controller loads it and signs
//! CSRs from its sidecars and gateway. Issued certificates carry exactly one SPIFFE URI SAN, both
//! server and client EKUs (every workload is both), and a short validity. The CA never copies
//! extensions from a CSR: it only takes the public key and the requested SPIFFE ID, which must be
//! in its own trust domain.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use super::spiffe::SpiffeId;

/// File name of a CA certificate inside a cluster's state directory.
pub const CA_CERT_FILE: &str = "ca.crt";
/// File name of a CA key inside a cluster's state directory.
pub(super) const CA_KEY_FILE: &str = "ca.key";
/// How long a cluster root is valid: roots are replaced by `mesh ca rotate`, not by expiry.
const ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Clock skew tolerated between a CA and the machines that verify its certificates.
const BACKDATE: Duration = Duration::from_secs(300);

/// Errors of the CA and key material.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A certificate, key or CSR failed to parse or generate.
    #[error("{what}: {source}")]
    Crypto {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
    /// A CSR that asks for something this CA will not sign.
    #[error("certificate request refused: {0}")]
    Refused(String),
}

pub(super) fn crypto(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> CaError {
    let what = what.into();
    move |source| CaError::Crypto { what, source }
}

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A cluster's certificate authority: the root that signs, and the roots the cluster trusts
/// (the signing root alone, or two while a root rotation is in progress, see
/// [`super::rotation`]).
pub struct ClusterCa {
    trust_domain: String,
    cert_pem: String,
    key: KeyPair,
    trusted_pem: String,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// Creates a new self-signed root for `trust_domain`.
    pub fn generate(trust_domain: &str) -> Result<Self, CaError> {
        let key = KeyPair::generate().map_err(crypto("generating the CA key"))?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("mesh root {trust_domain}"));
        params
            .distinguished_name
            .push(DnType::OrganizationName, trust_domain);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.subject_alt_names = vec![SanType::URI(
            format!("spiffe://{trust_domain}")
                .try_into()
                .map_err(crypto("encoding the trust domain"))?,
        )];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + ROOT_VALIDITY;
        let cert = params
            .self_signed(&key)
            .map_err(crypto("self-signing the CA"))?;
        Ok(Self {
            trust_domain: trust_domain.to_string(),
            trusted_pem: cert.pem(),
            cert_pem: cert.pem(),
            key,
        })
    }

    /// The same signing root, trusting the roots of `trusted_pem` (which must hold it).
    pub(super) fn with_trusted(mut self, trusted_pem: String) -> Self {
        self.trusted_pem = trusted_pem;
        self
    }

    /// Writes `ca.crt` (the trusted roots) and `ca.key` (mode 0600) into `dir`, creating it.
    pub fn write_to(&self, dir: &Path) -> Result<(), CaError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let cert = dir.join(CA_CERT_FILE);
        std::fs::write(&cert, &self.trusted_pem).map_err(io(&cert))?;
        let key = dir.join(CA_KEY_FILE);
        write_private(&key, &self.key_pem())?;
        Ok(())
    }

    /// Whether `dir` already holds CA material.
    pub fn exists_in(dir: &Path) -> bool {
        dir.join(CA_CERT_FILE).exists() && dir.join(CA_KEY_FILE).exists()
    }

    /// Loads CA material written by [`write_to`](Self::write_to), or by a root rotation in
    /// progress (which it resumes when a crash interrupted one of its writes).
    pub fn load(dir: &Path, trust_domain: &str) -> Result<Self, CaError> {
        super::rotation_store::CaDirectory::new(dir, trust_domain)
            .load()
            .map(|(ca, _)| ca)
    }

    /// Loads `ca.crt` and `ca.key` as they are, without looking at a rotation.
    pub(super) fn load_files(dir: &Path, trust_domain: &str) -> Result<Self, CaError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let key_path = dir.join(CA_KEY_FILE);
        let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        Self::from_pem(
            &cert_pem,
            &key_pem,
            trust_domain,
            (
                &cert_path.display().to_string(),
                &key_path.display().to_string(),
            ),
        )
    }

    /// The CA of `cert_pem` and `key_pem`; `(cert_source, key_source)` name where they came from
    /// in errors (a file, a Secret's key). `cert_pem` may hold several roots (a rotation in
    /// progress): all are trusted, the one whose public key is `key_pem`'s signs.
    pub fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        trust_domain: &str,
        (cert_source, key_source): (&str, &str),
    ) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(key_pem)
            .map_err(crypto(format!("{key_source}: parsing the CA key")))?;
        let signing = super::rotation::signing_root_of(cert_pem, key.public_key_raw())
            .map_err(|e| CaError::Refused(format!("{cert_source}: {e}")))?
            .ok_or_else(|| {
                CaError::Refused(format!(
                    "{cert_source}: no certificate in it belongs to the key in {key_source}"
                ))
            })?;
        Issuer::from_ca_cert_pem(&signing, &key)
            .map_err(crypto(format!("{cert_source}: parsing the CA certificate")))?;
        Ok(Self {
            trust_domain: trust_domain.to_string(),
            cert_pem: signing,
            key,
            trusted_pem: cert_pem.to_string(),
        })
    }

    /// The root's private key in PEM (to store it in a Kubernetes Secret).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The trust domain this CA issues for.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The signing root certificate in PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Every root the cluster trusts, in PEM: the cluster's trust bundle (the signing root, plus
    /// the other root while a rotation is in progress).
    pub fn trusted_pem(&self) -> &str {
        &self.trusted_pem
    }

    /// The SHA-256 fingerprint of the signing root.
    pub fn signing_fingerprint(&self) -> String {
        super::rotation::bundle_fingerprints(&self.cert_pem)
            .ok()
            .and_then(|f| f.into_iter().next())
            .unwrap_or_default()
    }

    /// Signs a CSR. The CSR must request exactly one SPIFFE ID in this CA's trust domain, and
    /// `authorise` must accept it.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        validity: Duration,
        authorise: impl FnOnce(&SpiffeId) -> Result<(), String>,
    ) -> Result<(SpiffeId, String), CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(crypto("parsing the certificate request"))?;
        let ids: Vec<&str> = csr
            .params
            .subject_alt_names
            .iter()
            .filter_map(|san| match san {
                SanType::URI(uri) => Some(uri.as_str()),
                _ => None,
            })
            .collect();
        let [uri] = ids.as_slice() else {
            return Err(CaError::Refused(format!(
                "the request must carry exactly one spiffe:// URI, it carries {}",
                ids.len()
            )));
        };
        let id: SpiffeId = uri.parse().map_err(|e| CaError::Refused(format!("{e}")))?;
        if id.trust_domain != self.trust_domain {
            return Err(CaError::Refused(format!(
                "{id} is outside this CA's trust domain {}",
                self.trust_domain
            )));
        }
        authorise(&id).map_err(CaError::Refused)?;
        let params = leaf_params(&id, validity)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)
            .map_err(crypto("loading the CA as issuer"))?;
        let cert = params
            .signed_by(&csr.public_key, &issuer)
            .map_err(crypto("signing the certificate"))?;
        Ok((id, cert.pem()))
    }

    /// Issues a certificate for `id` with a freshly generated key (the controller's own serving
    /// certificate; tests).
    pub fn issue(&self, id: &SpiffeId, validity: Duration) -> Result<WorkloadIdentity, CaError> {
        let csr = WorkloadCsr::generate(id)?;
        let (_, cert_pem) = self.sign_csr(&csr.csr_pem, validity, |_| Ok(()))?;
        WorkloadIdentity::from_pem(&cert_pem, &csr.key_pem)
    }

    /// Issues a certificate for `id` that also names `dns_names` and `ips`, for a server that
    /// clients outside the mesh verify by host name (the Kubernetes API server calling the
    /// controller's admission webhook checks the URL's host against these SANs).
    pub fn issue_serving(
        &self,
        id: &SpiffeId,
        dns_names: &[String],
        ips: &[std::net::IpAddr],
        validity: Duration,
    ) -> Result<WorkloadIdentity, CaError> {
        let key = KeyPair::generate().map_err(crypto("generating a serving key"))?;
        let mut params = leaf_params(id, validity)?;
        for name in dns_names {
            params.subject_alt_names.push(SanType::DnsName(
                name.as_str()
                    .try_into()
                    .map_err(crypto(format!("encoding the DNS name {name:?}")))?,
            ));
        }
        params
            .subject_alt_names
            .extend(ips.iter().copied().map(SanType::IpAddress));
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)
            .map_err(crypto("loading the CA as issuer"))?;
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(crypto("signing the serving certificate"))?;
        WorkloadIdentity::from_pem(&cert.pem(), &key.serialize_pem())
    }
}

fn leaf_params(id: &SpiffeId, validity: Duration) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, id.to_string());
    params.subject_alt_names = vec![SanType::URI(
        id.to_string()
            .try_into()
            .map_err(crypto("encoding the SPIFFE ID"))?,
    )];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + validity;
    Ok(params)
}

pub(super) fn write_private(path: &Path, contents: &str) -> Result<(), CaError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(contents.as_bytes()).map_err(io(path))
}

/// A freshly generated key and the CSR for it.
pub struct WorkloadCsr {
    /// The PKCS#8 private key in PEM; never leaves the workload.
    pub key_pem: String,
    /// The CSR in PEM, carrying the SPIFFE ID as URI SAN.
    pub csr_pem: String,
}

impl WorkloadCsr {
    /// Generates a key and a CSR for `id`.
    pub fn generate(id: &SpiffeId) -> Result<Self, CaError> {
        let key = KeyPair::generate().map_err(crypto("generating a workload key"))?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, id.to_string());
        params.subject_alt_names = vec![SanType::URI(
            id.to_string()
                .try_into()
                .map_err(crypto("encoding the SPIFFE ID"))?,
        )];
        let csr = params
            .serialize_request(&key)
            .map_err(crypto("creating the certificate request"))?;
        Ok(Self {
            key_pem: key.serialize_pem(),
            csr_pem: csr
                .pem()
                .map_err(crypto("encoding the certificate request"))?,
        })
    }
}

/// A workload's certificate and key, ready for rustls.
#[derive(Debug, Clone)]
pub struct WorkloadIdentity {
    /// The SPIFFE ID in the certificate.
    pub id: SpiffeId,
    /// The certificate chain (leaf first).
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key (PKCS#8 DER).
    pub key_der: Vec<u8>,
}

impl WorkloadIdentity {
    /// Builds an identity from a PEM certificate chain and PEM key.
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| CaError::Refused(format!("certificate PEM is malformed: {e}")))?;
        let first = chain
            .first()
            .ok_or_else(|| CaError::Refused("certificate PEM holds no certificate".into()))?;
        let id =
            super::spiffe::spiffe_id_of_cert(first).map_err(|e| CaError::Refused(e.to_string()))?;
        let key = KeyPair::from_pem(key_pem).map_err(crypto("parsing the workload key"))?;
        Ok(Self {
            id,
            chain,
            key_der: key.serialize_der(),
        })
    }

    /// The private key for rustls.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_signs_requests_in_its_trust_domain_only() {
        let ca = ClusterCa::generate("us-east.mesh").unwrap();
        let id = SpiffeId::workload("us-east.mesh", "demo", "echo");
        let csr = WorkloadCsr::generate(&id).unwrap();
        let (signed_id, pem) = ca
            .sign_csr(&csr.csr_pem, Duration::from_secs(3600), |_| Ok(()))
            .unwrap();
        assert_eq!(signed_id, id);
        let ident = WorkloadIdentity::from_pem(&pem, &csr.key_pem).unwrap();
        assert_eq!(ident.id, id);

        let foreign =
            WorkloadCsr::generate(&SpiffeId::workload("eu-central.mesh", "demo", "echo")).unwrap();
        let err = ca
            .sign_csr(&foreign.csr_pem, Duration::from_secs(60), |_| Ok(()))
            .unwrap_err();
        assert!(
            err.to_string().contains("outside this CA's trust domain"),
            "{err}"
        );

        let err = ca
            .sign_csr(&csr.csr_pem, Duration::from_secs(60), |_| {
                Err("token does not allow it".into())
            })
            .unwrap_err();
        assert!(err.to_string().contains("token does not allow it"));
        assert!(
            ca.sign_csr("garbage", Duration::from_secs(60), |_| Ok(()))
                .is_err()
        );
    }

    #[test]
    fn ca_material_round_trips_through_files() {
        let dir = std::env::temp_dir().join(format!("mesh-ca-test-{}", std::process::id()));
        let ca = ClusterCa::generate("us-west.mesh").unwrap();
        ca.write_to(&dir).unwrap();
        assert!(ClusterCa::exists_in(&dir));
        let loaded = ClusterCa::load(&dir, "us-west.mesh").unwrap();
        assert_eq!(loaded.cert_pem(), ca.cert_pem());
        let ident = loaded
            .issue(&SpiffeId::gateway("us-west.mesh"), Duration::from_secs(60))
            .unwrap();
        assert_eq!(ident.id.path, "gateway");
        let _ = std::fs::remove_dir_all(&dir);
    }
    #[test]
    fn serving_certificates_verify_for_their_names_and_addresses_only() {
        use rustls::client::WebPkiServerVerifier;
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::{ServerName, UnixTime};

        let ca = ClusterCa::generate("us-east.mesh").unwrap();
        let ident = ca
            .issue_serving(
                &SpiffeId::controller("us-east.mesh"),
                &["mesh-controller.mesh-system.svc".to_string()],
                &["192.0.2.7".parse().unwrap()],
                Duration::from_secs(3600),
            )
            .unwrap();
        assert_eq!(ident.id, SpiffeId::controller("us-east.mesh"));
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut ca.cert_pem().as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let verifier = WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let verify = |name: &str| {
            verifier.verify_server_cert(
                &ident.chain[0],
                &[],
                &ServerName::try_from(name.to_string()).unwrap(),
                &[],
                UnixTime::now(),
            )
        };
        verify("mesh-controller.mesh-system.svc").unwrap();
        verify("192.0.2.7").unwrap();
        assert!(verify("mesh-controller.other.svc").is_err());
        assert!(verify("192.0.2.8").is_err());
    }
}
