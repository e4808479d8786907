//! What to do with a connection the capture rules sent to the sidecar (pure): which listener
//! it reached, where it was going, and the operator's policies decide.

use std::net::SocketAddr;

use crate::capture::Cidr;

/// What happens to captured connections whose destination is not a mesh service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutboundPolicy {
    /// Passed through unchanged to where the app sent them (the default).
    AllowAny,
    /// Refused: only mesh services are reachable.
    RegistryOnly,
}

/// What happens to plaintext connections from outside the mesh to the app's captured ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InboundPolicy {
    /// Passed to the app (the default: workloads without a sidecar can still call it).
    Permissive,
    /// Refused: only mTLS from the mesh reaches the app.
    Strict,
}

/// Where a connection accepted by the outbound listener goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// Not redirected: the app used the listener as its HTTP proxy.
    Proxy,
    /// Redirected, for a VIP of the mesh's range: a mesh service (or an unknown VIP).
    Vip(SocketAddr),
    /// Redirected, for somewhere outside the mesh: passed through.
    Passthrough(SocketAddr),
    /// Refused, for the reason given.
    Refused(String),
}

/// The sidecar's own ports and policies, as the decisions need them.
#[derive(Debug, Clone)]
pub struct CaptureSettings {
    /// The mesh's VIP range (`--vip-range`, the controllers' DNS range).
    pub vip_range: Cidr,
    /// For destinations outside the mesh.
    pub outbound: OutboundPolicy,
    /// For plaintext from outside the mesh.
    pub inbound: InboundPolicy,
    /// The sidecar's own listener ports (outbound, inbound, admin).
    pub own_ports: Vec<u16>,
}

impl CaptureSettings {
    /// Decides for a connection from `peer` whose pre-redirect destination was `original`
    /// (`None`: not redirected).
    pub fn outbound(&self, original: Option<SocketAddr>, peer: SocketAddr) -> Outbound {
        let Some(dest) = original else {
            return Outbound::Proxy;
        };
        // The app's own address or loopback: the sidecar's own ports are not destinations.
        let local = dest.ip().is_loopback() || dest.ip() == peer.ip();
        if local && self.own_ports.contains(&dest.port()) {
            return Outbound::Refused(format!(
                "{dest} is the sidecar's own port; the app cannot call the sidecar through capture"
            ));
        }
        if self.vip_range.contains(dest.ip()) {
            return Outbound::Vip(dest);
        }
        match self.outbound {
            OutboundPolicy::AllowAny => Outbound::Passthrough(dest),
            OutboundPolicy::RegistryOnly => Outbound::Refused(format!(
                "{dest} is not a mesh service and the outbound policy is registry-only"
            )),
        }
    }

    /// Whether a connection to the inbound listener that was redirected from the app's port
    /// (`original`) may reach the app: plaintext (or TLS that is not the mesh's) from outside
    /// the mesh. `Err` says why not.
    pub fn inbound(&self, original: SocketAddr) -> Result<SocketAddr, String> {
        match self.inbound {
            InboundPolicy::Permissive => Ok(original),
            InboundPolicy::Strict => Err(format!(
                "a connection to {original} from outside the mesh (not mTLS to the sidecar); \
                 the inbound policy is strict"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(outbound: OutboundPolicy) -> CaptureSettings {
        CaptureSettings {
            vip_range: "240.240.0.0/16".parse().unwrap(),
            outbound,
            inbound: InboundPolicy::Permissive,
            own_ports: vec![15001, 15006, 15020],
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn vips_are_mesh_traffic_and_the_rest_follows_the_policy() {
        let app = addr("10.1.0.2:40000");
        let allow = settings(OutboundPolicy::AllowAny);
        assert_eq!(allow.outbound(None, app), Outbound::Proxy);
        assert_eq!(
            allow.outbound(Some(addr("240.240.3.4:80")), app),
            Outbound::Vip(addr("240.240.3.4:80"))
        );
        assert_eq!(
            allow.outbound(Some(addr("10.9.0.1:443")), app),
            Outbound::Passthrough(addr("10.9.0.1:443"))
        );
        let only = settings(OutboundPolicy::RegistryOnly);
        assert_eq!(
            only.outbound(Some(addr("240.240.3.4:80")), app),
            Outbound::Vip(addr("240.240.3.4:80"))
        );
        let Outbound::Refused(why) = only.outbound(Some(addr("10.9.0.1:443")), app) else {
            panic!("registry-only refuses the outside");
        };
        assert!(
            why.contains("10.9.0.1:443") && why.contains("registry-only"),
            "{why}"
        );
    }

    #[test]
    fn the_sidecars_own_ports_are_refused_but_the_same_port_elsewhere_is_not() {
        let app = addr("10.1.0.2:40000");
        let allow = settings(OutboundPolicy::AllowAny);
        for own in ["10.1.0.2:15006", "127.0.0.1:15020"] {
            assert!(
                matches!(allow.outbound(Some(addr(own)), app), Outbound::Refused(_)),
                "{own}"
            );
        }
        assert_eq!(
            allow.outbound(Some(addr("10.7.0.3:15006")), app),
            Outbound::Passthrough(addr("10.7.0.3:15006"))
        );
    }

    #[test]
    fn strict_refuses_plaintext_from_outside_the_mesh() {
        let mut s = settings(OutboundPolicy::AllowAny);
        assert_eq!(s.inbound(addr("10.1.0.2:8080")), Ok(addr("10.1.0.2:8080")));
        s.inbound = InboundPolicy::Strict;
        let why = s.inbound(addr("10.1.0.2:8080")).unwrap_err();
        assert!(
            why.contains("strict") && why.contains("10.1.0.2:8080"),
            "{why}"
        );
    }
}
