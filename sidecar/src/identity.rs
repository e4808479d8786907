//! The sidecar's workload identity: bootstrap from the controller, the trust store (own bundle
//! plus linked clusters' bundles from every snapshot), and the rustls configurations of both
//! directions built on it. The certificate is a [`RotatingIdentity`] that [`renewal`] renews in
//! place: the configurations are built once and every new connection presents the current one.

use std::sync::Arc;

use mesh_core::api::ALPN_H2;
use mesh_core::control_client::ControlClient;
use mesh_core::identity::{
    RotatingIdentity, SpiffeId, TlsError, TrustBundle, TrustStore, WorkloadIdentity, client_config,
    default_trust_domain, server_config,
};
use mesh_core::renewal::{ControllerIssuer, RenewalStatus, Renewer, TokenFallback};
use rustls::{ClientConfig, ServerConfig};

use crate::args::SidecarConfig;
use crate::error::SidecarError;

/// The identity a sidecar presents and the trust it verifies peers with.
#[derive(Debug, Clone)]
pub struct SidecarIdentity {
    /// Certificate and key, renewed in place.
    pub identity: RotatingIdentity,
    /// The own cluster's bundle, always kept in the trust store.
    pub own_bundle: TrustBundle,
    /// Own and linked bundles; swapped on every snapshot, consulted on every handshake.
    pub trust: TrustStore,
    /// Inbound: mandatory client certificates, ALPN h2.
    pub server: Arc<ServerConfig>,
    /// Outbound (endpoints, gateway, tunnels): presents the identity, ALPN h2.
    pub client: Arc<ClientConfig>,
}

impl SidecarIdentity {
    /// Builds the TLS configurations for a fixed `identity`, trusting `own_bundle` to begin
    /// with.
    pub fn new(identity: WorkloadIdentity, own_bundle: TrustBundle) -> Result<Self, TlsError> {
        Self::rotating(RotatingIdentity::new(identity)?, own_bundle)
    }

    /// Builds the TLS configurations presenting whatever `identity` holds at each handshake.
    pub fn rotating(identity: RotatingIdentity, own_bundle: TrustBundle) -> Result<Self, TlsError> {
        let trust = TrustStore::new(std::slice::from_ref(&own_bundle))?;
        let server = Arc::new(server_config(&identity, trust.clone(), &[ALPN_H2], false)?);
        let client = Arc::new(client_config(Some(&identity), trust.clone(), &[ALPN_H2])?);
        Ok(Self {
            identity,
            own_bundle,
            trust,
            server,
            client,
        })
    }

    /// Replaces the trusted bundles with a snapshot's; the own bundle stays even if the
    /// snapshot lacks it, so a bad snapshot cannot cut the sidecar off its own cluster.
    pub fn update_trust(&self, bundles: &[TrustBundle]) -> Result<(), TlsError> {
        let mut all: Vec<TrustBundle> = bundles.to_vec();
        if !all
            .iter()
            .any(|b| b.trust_domain == self.own_bundle.trust_domain)
        {
            all.push(self.own_bundle.clone());
        }
        self.trust.replace(&all)?;
        // A root rotation's switch: renew now if the signing root is no longer ours.
        if let Some(own) = all
            .iter()
            .find(|b| b.trust_domain == self.own_bundle.trust_domain)
        {
            mesh_core::identity::rotation::renew_if_signing_root_changed(&self.identity, own);
        }
        Ok(())
    }

    /// The SPIFFE ID this sidecar presents.
    pub fn id(&self) -> SpiffeId {
        self.identity.id()
    }
}

/// Obtains the workload certificate from the controller with the join token (the shared
/// bootstrap and its give-up rule, [`mesh_core::bootstrap`]), from any replica `--controller`
/// lists; the client returned moves among them when one cannot be reached.
pub async fn bootstrap(
    config: &SidecarConfig,
) -> Result<(Arc<ControlClient>, SidecarIdentity), SidecarError> {
    let member = &config.member;
    let credentials = member.credentials()?;
    let td = default_trust_domain(&member.cluster);
    let id = SpiffeId::workload(&td, &config.namespace, &config.service_account);
    let (client, identity, bundle) = mesh_core::bootstrap::bootstrap_any(
        member.controller.as_slice(),
        &member.cluster,
        &credentials,
        &id,
    )
    .await?;
    let client = client.with_replicas(&member.controller);
    Ok((client, SidecarIdentity::rotating(identity, bundle)?))
}

/// Renews the sidecar's certificate for its whole life through the controller `client` talks
/// to, authenticated by the current certificate (the join token after an expiry).
pub fn renewal(
    config: &SidecarConfig,
    client: Arc<ControlClient>,
    identity: &SidecarIdentity,
    status: RenewalStatus,
) -> Renewer {
    let member = &config.member;
    let fallback = TokenFallback {
        cluster: member.cluster.clone(),
        ca_file: member.ca_file.clone(),
        token_file: member.token_file.clone(),
    };
    Renewer::new(
        identity.identity.clone(),
        Arc::new(ControllerIssuer::new(client, Some(fallback))),
        config.renew_at,
        status,
    )
}
