//! Every answer the outbound proxy makes itself, and the one place its errors map to an HTTP
//! status and an `x-mesh-error` label. Bodies are plain text naming the service, the cluster
//! and the cause, so `curl` output alone tells a person what went wrong.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode};
use mesh_core::api::HEADER_MESH_ERROR;
use mesh_core::http::{BoxBody, text};
use mesh_core::names::{NameError, ServiceKey};

use super::balancer::EndpointRef;
use super::pool::ConnectError;

/// Why the outbound proxy answered a request itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request names no authority (no absolute URI, no Host).
    #[error("the request names no host: send an absolute URI (curl -x) or a Host header")]
    MissingAuthority,
    /// The app asked for a CONNECT tunnel (e.g. an https:// URL through the proxy).
    #[error(
        "CONNECT is not supported by the mesh's outbound proxy: call http://<svc>.<ns>.svc.clusterset.local, \
         the sidecars encrypt the hop"
    )]
    ConnectMethod,
    /// The authority is not a mesh service name.
    #[error(transparent)]
    BadAuthority(#[from] NameError),
    /// The controller says no linked cluster exports the service.
    #[error("service {service} is not exported by any linked cluster (asked {asked})")]
    UnknownService {
        /// The service.
        service: ServiceKey,
        /// Who was asked (`controller at <addr>`).
        asked: String,
    },
    /// No snapshot listed the service within the on-demand wait.
    #[error("service {service} is not known yet: {asked} did not list it within {waited:?}")]
    DiscoveryTimeout {
        /// The service.
        service: ServiceKey,
        /// Who was asked.
        asked: String,
        /// How long the request waited.
        waited: Duration,
    },
    /// The authority named a cluster that is not among the service's localities.
    #[error(
        "cluster {cluster} is unknown or unreachable for service {service} (localities now: {known})"
    )]
    UnknownCluster {
        /// The service.
        service: ServiceKey,
        /// The cluster named.
        cluster: String,
        /// The localities the snapshot lists, comma-separated.
        known: String,
    },
    /// No locality has a usable endpoint (all ejected, breakers open, or none listed).
    #[error("service {service} has no healthy endpoint{} (all ejected, breakers open, or none registered)", in_cluster(.cluster))]
    NoEndpoint {
        /// The service.
        service: ServiceKey,
        /// The cluster named by the authority, if any.
        cluster: Option<String>,
    },
    /// The last try could not connect.
    #[error("service {service}: endpoint {} in {} unreachable after {tries} tries: {source}", .endpoint.addr, .endpoint.cluster)]
    Connect {
        /// The service.
        service: ServiceKey,
        /// The endpoint of the last try.
        endpoint: Box<EndpointRef>,
        /// Tries made.
        tries: usize,
        /// The last connect failure.
        #[source]
        source: Box<ConnectError>,
    },
    /// The last try got no response headers within the per-try timeout.
    #[error("service {service}: endpoint {} in {} did not answer within {after:?} ({tries} tries)", .endpoint.addr, .endpoint.cluster)]
    Timeout {
        /// The service.
        service: ServiceKey,
        /// The endpoint of the last try.
        endpoint: Box<EndpointRef>,
        /// The per-try timeout.
        after: Duration,
        /// Tries made.
        tries: usize,
    },
    /// The upstream connection or stream broke after the request was sent.
    #[error("service {service}: endpoint {} in {} broke the exchange: {source}", .endpoint.addr, .endpoint.cluster)]
    Upstream {
        /// The service.
        service: ServiceKey,
        /// The endpoint.
        endpoint: Box<EndpointRef>,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
    /// The app's request body could not be read.
    #[error("reading the request body failed: {0}")]
    RequestBody(String),
}

fn in_cluster(cluster: &Option<String>) -> String {
    cluster
        .as_ref()
        .map(|c| format!(" in cluster {c}"))
        .unwrap_or_default()
}

impl ProxyError {
    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingAuthority | Self::BadAuthority(_) | Self::RequestBody(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::ConnectMethod => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnknownService { .. }
            | Self::DiscoveryTimeout { .. }
            | Self::UnknownCluster { .. }
            | Self::NoEndpoint { .. }
            | Self::Connect { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Upstream { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// The `x-mesh-error` label (also a metrics-friendly cause).
    pub fn label(&self) -> &'static str {
        match self {
            Self::MissingAuthority => "missing-authority",
            Self::ConnectMethod => "connect-not-supported",
            Self::BadAuthority(_) => "bad-authority",
            Self::UnknownService { .. } | Self::DiscoveryTimeout { .. } => "unknown-service",
            Self::UnknownCluster { .. } => "unknown-cluster",
            Self::NoEndpoint { .. } => "no-healthy-endpoint",
            Self::Connect { .. } => "connect-failed",
            Self::Timeout { .. } => "timeout",
            Self::Upstream { .. } => "upstream-protocol-error",
            Self::RequestBody(_) => "bad-request-body",
        }
    }

    /// The plain-text answer, with `x-mesh-error`.
    pub fn response(&self) -> Response<BoxBody> {
        let mut rsp = text(self.status(), self.to_string());
        rsp.headers_mut()
            .insert(HEADER_MESH_ERROR, HeaderValue::from_static(self.label()));
        rsp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo() -> ServiceKey {
        "echo.demo".parse().unwrap()
    }

    #[test]
    fn statuses_and_labels() {
        let unknown = ProxyError::UnknownService {
            service: echo(),
            asked: "controller at 127.0.0.1:7000".into(),
        };
        assert_eq!(unknown.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            unknown.to_string(),
            "service echo.demo is not exported by any linked cluster (asked controller at 127.0.0.1:7000)"
        );
        let rsp = unknown.response();
        assert_eq!(rsp.headers()[HEADER_MESH_ERROR], "unknown-service");
        let timeout = ProxyError::Timeout {
            service: echo(),
            endpoint: Box::new(EndpointRef {
                cluster: "us-east".into(),
                addr: ([127, 0, 0, 1], 9).into(),
            }),
            after: Duration::from_secs(1),
            tries: 3,
        };
        assert_eq!(timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(timeout.to_string().contains("us-east"));
        let none = ProxyError::NoEndpoint {
            service: echo(),
            cluster: Some("eu-central".into()),
        };
        assert!(none.to_string().contains("in cluster eu-central"), "{none}");
    }
}
