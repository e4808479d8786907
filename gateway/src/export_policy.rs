//! Which tunnels a peer may open: only to endpoints this cluster exports. The gateway is never an
//! open relay; this check runs before any connection is made.

use std::net::SocketAddr;

use mesh_core::catalog::ExportCatalog;
use mesh_core::names::ServiceKey;
use mesh_core::wire::{StreamHeader, TunnelRefusal};

/// A tunnel refused before connecting, with the reason sent back to the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The typed reason.
    pub kind: TunnelRefusal,
    /// Words for the log of both gateways.
    pub message: String,
}

impl Refusal {
    fn new(kind: TunnelRefusal, message: String) -> Self {
        Self { kind, message }
    }
}

/// Authorises a tunnel header against this cluster's export catalog; returns the endpoint to
/// connect to. The header must name this cluster, a well-formed service, and an endpoint listed
/// under that service (health does not matter: the owner's sidecars decide what to serve).
pub fn authorise_tunnel(
    own_cluster: &str,
    exports: &ExportCatalog,
    header: &StreamHeader,
) -> Result<SocketAddr, Refusal> {
    let Some(endpoint) = header.endpoint else {
        return Err(Refusal::new(
            TunnelRefusal::BadHeader,
            "tunnel header names no endpoint".into(),
        ));
    };
    if header.cluster != own_cluster {
        return Err(Refusal::new(
            TunnelRefusal::NotExported,
            format!(
                "tunnel names cluster {} but this gateway serves {own_cluster}",
                header.cluster
            ),
        ));
    }
    let service: ServiceKey = header.service.parse().map_err(|e| {
        Refusal::new(
            TunnelRefusal::BadHeader,
            format!("tunnel header service: {e}"),
        )
    })?;
    let exported = exports
        .services
        .get(&service)
        .is_some_and(|svc| svc.endpoints.iter().any(|ep| ep.address == endpoint));
    if !exported {
        return Err(Refusal::new(
            TunnelRefusal::NotExported,
            format!("{endpoint} is not an exported endpoint of {service} in {own_cluster}"),
        ));
    }
    Ok(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::catalog::{ExportedEndpoint, ExportedService};

    fn exports() -> ExportCatalog {
        let mut c = ExportCatalog::new("eu-central");
        let endpoint = |port, healthy| ExportedEndpoint {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            identity: "spiffe://eu-central.mesh/ns/demo/sa/echo".into(),
            healthy,
        };
        c.services.insert(
            "echo.demo".parse().unwrap(),
            ExportedService {
                healthy: true,
                endpoints: vec![endpoint(7001, true), endpoint(7002, false)],
                ports: Vec::new(),
                exported_since: None,
            },
        );
        c.services.insert(
            "other.demo".parse().unwrap(),
            ExportedService {
                healthy: true,
                endpoints: vec![endpoint(7003, true)],
                ports: Vec::new(),
                exported_since: None,
            },
        );
        c
    }

    fn header(cluster: &str, service: &str, port: u16) -> StreamHeader {
        StreamHeader::tunnel(cluster, service, SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn exported_endpoints_are_allowed_whatever_their_health() {
        let c = exports();
        for port in [7001, 7002] {
            let got = authorise_tunnel("eu-central", &c, &header("eu-central", "echo.demo", port));
            assert_eq!(got, Ok(SocketAddr::from(([127, 0, 0, 1], port))));
        }
    }

    #[test]
    fn anything_else_is_refused_as_not_exported() {
        let c = exports();
        let cases = [
            header("eu-central", "echo.demo", 22), // not an endpoint at all
            header("eu-central", "echo.demo", 7003), // an endpoint of another service
            header("eu-central", "missing.demo", 7001), // a service not exported
            header("us-east", "echo.demo", 7001),  // another cluster's name
        ];
        for h in cases {
            let err = authorise_tunnel("eu-central", &c, &h).unwrap_err();
            assert_eq!(err.kind, TunnelRefusal::NotExported, "{h:?}");
            assert!(!err.message.is_empty());
        }
    }

    #[test]
    fn malformed_service_or_missing_endpoint_is_a_bad_header() {
        let c = exports();
        let err = authorise_tunnel(
            "eu-central",
            &c,
            &header("eu-central", "not a service", 7001),
        )
        .unwrap_err();
        assert_eq!(err.kind, TunnelRefusal::BadHeader);
        let mut h = header("eu-central", "echo.demo", 7001);
        h.endpoint = None;
        assert_eq!(
            authorise_tunnel("eu-central", &c, &h).unwrap_err().kind,
            TunnelRefusal::BadHeader
        );
    }
}
