//! The controller's own serving certificate: issued by its own CA at start, presented through a
//! [`RotatingIdentity`] so the control listener's configuration is built once, and re-issued
//! in-process at the same share of its lifetime as every other component renews (no CSR: the
//! controller holds the CA).

use std::sync::Arc;

use mesh_core::api::ALPN_H2;
use mesh_core::identity::{RotatingIdentity, server_config};
use mesh_core::renewal::{IssueFuture, Issuer, RenewAt, RenewalStatus, Renewer};
use tokio::sync::watch;

use crate::ca_service::CaService;
use crate::controller::Controller;
use crate::error::FederationError;

/// Issues the controller's first certificate.
pub(crate) fn issue(ca: &CaService) -> Result<RotatingIdentity, FederationError> {
    Ok(RotatingIdentity::new(ca.controller_identity()?)?)
}

/// The control listener's configuration: presents `identity` (whatever it holds at each
/// handshake); client certificates optional (the CSR endpoint's first request has none).
pub(crate) fn serving_config(
    ca: &CaService,
    identity: &RotatingIdentity,
) -> Result<rustls::ServerConfig, FederationError> {
    // Only this cluster's own sidecars and gateway talk to its controller; the store follows
    // root rotation steps.
    let trust = ca.signer().own_trust();
    Ok(server_config(identity, trust, &[ALPN_H2], true)?)
}

/// Re-issues from the controller's CA.
struct OwnCa(Arc<Controller>);

impl Issuer for OwnCa {
    fn issue<'a>(&'a self, _current: &'a RotatingIdentity) -> IssueFuture<'a> {
        Box::pin(async move {
            self.0
                .ca()
                .controller_identity()
                .map_err(|e| format!("re-issuing the controller's certificate: {e}"))
        })
    }
}

/// Renews `identity` until `shutdown` flips.
pub(crate) async fn renew(
    controller: Arc<Controller>,
    identity: RotatingIdentity,
    status: RenewalStatus,
    mut shutdown: watch::Receiver<bool>,
) {
    let renewer = Renewer::new(
        identity,
        Arc::new(OwnCa(controller)),
        RenewAt::default(),
        status,
    );
    tokio::select! {
        _ = renewer.run() => {}
        _ = shutdown.changed() => {}
    }
}
