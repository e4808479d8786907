//! A sidecar's tunnel request (HTTP/2 `CONNECT`) parsed into a target, and the one place where
//! tunnel-ingress failures become HTTP answers.

use std::net::SocketAddr;

use http::{HeaderValue, Method, Request, StatusCode};
use mesh_core::api::{HEADER_MESH_ERROR, HEADER_TARGET_CLUSTER, HEADER_TARGET_SERVICE};
use mesh_core::http::{BoxBody, text};
use mesh_core::names::{ServiceKey, check_label};

/// W3C trace context header carried into the stream header.
pub(crate) const TRACEPARENT: &str = "traceparent";

/// Where a tunnel goes.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectTarget {
    /// The peer cluster.
    pub cluster: String,
    /// The service the endpoint serves.
    pub service: ServiceKey,
    /// The endpoint (sidecar inbound address) in that cluster.
    pub endpoint: SocketAddr,
    /// `traceparent`, if the sidecar sent a usable one.
    pub trace: String,
}

/// Why a tunnel was not opened, as the sidecar sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngressError {
    /// Not a `CONNECT`.
    #[error("the tunnel port only accepts CONNECT, not {0}")]
    NotConnect(String),
    /// Missing or malformed authority or headers.
    #[error("bad tunnel request: {0}")]
    BadRequest(String),
    /// The client is not a workload of this cluster.
    #[error("{0}")]
    Forbidden(String),
    /// The cluster is not linked.
    #[error("cluster {0} is not linked with this cluster")]
    UnknownCluster(String),
    /// Linked, but the QUIC link is down.
    #[error("the link to cluster {0} is down")]
    LinkDown(String),
    /// The peer gateway refused the tunnel (label from `TunnelRefusal::label`).
    #[error("{message}")]
    Refused {
        /// The refusal label.
        label: &'static str,
        /// The peer's reason.
        message: String,
    },
    /// The stream to the peer failed before an answer.
    #[error("{0}")]
    Tunnel(String),
}

impl IngressError {
    /// The HTTP status of this failure.
    pub fn status(&self) -> StatusCode {
        match self {
            IngressError::NotConnect(_) => StatusCode::METHOD_NOT_ALLOWED,
            IngressError::BadRequest(_) => StatusCode::BAD_REQUEST,
            IngressError::Forbidden(_) => StatusCode::FORBIDDEN,
            IngressError::UnknownCluster(_) | IngressError::LinkDown(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            IngressError::Refused { .. } | IngressError::Tunnel(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// The `x-mesh-error` label (also the metrics result).
    pub fn label(&self) -> &'static str {
        match self {
            IngressError::NotConnect(_) => "not_connect",
            IngressError::BadRequest(_) => "bad_request",
            IngressError::Forbidden(_) => "forbidden",
            IngressError::UnknownCluster(_) => "unknown_cluster",
            IngressError::LinkDown(_) => "link_down",
            IngressError::Refused { label, .. } => label,
            IngressError::Tunnel(_) => "tunnel_failed",
        }
    }

    /// The answer: status, `x-mesh-error: <label>`, the message as text.
    pub fn response(&self) -> http::Response<BoxBody> {
        let mut rsp = text(self.status(), self.to_string());
        rsp.headers_mut()
            .insert(HEADER_MESH_ERROR, HeaderValue::from_static(self.label()));
        rsp
    }
}

/// Parses a tunnel request: `CONNECT ip:port` with the target cluster and service headers.
#[doc(hidden)]
pub fn parse_connect<B>(req: &Request<B>) -> Result<ConnectTarget, IngressError> {
    if req.method() != Method::CONNECT {
        return Err(IngressError::NotConnect(req.method().to_string()));
    }
    let authority = req
        .uri()
        .authority()
        .ok_or_else(|| IngressError::BadRequest("CONNECT without an authority".into()))?;
    let endpoint: SocketAddr = authority.as_str().parse().map_err(|_| {
        IngressError::BadRequest(format!(
            "CONNECT authority `{authority}` is not an endpoint ip:port"
        ))
    })?;
    let header = |name: &str| -> Result<&str, IngressError> {
        req.headers()
            .get(name)
            .ok_or_else(|| IngressError::BadRequest(format!("missing header {name}")))?
            .to_str()
            .map_err(|_| IngressError::BadRequest(format!("header {name} is not text")))
    };
    let cluster = header(HEADER_TARGET_CLUSTER)?;
    check_label(cluster)
        .map_err(|e| IngressError::BadRequest(format!("header {HEADER_TARGET_CLUSTER}: {e}")))?;
    let service: ServiceKey = header(HEADER_TARGET_SERVICE)?
        .parse()
        .map_err(|e| IngressError::BadRequest(format!("header {HEADER_TARGET_SERVICE}: {e}")))?;
    // A trace context that does not fit the stream header is dropped, not an error.
    let trace = req
        .headers()
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 255)
        .unwrap_or_default()
        .to_string();
    Ok(ConnectTarget {
        cluster: cluster.to_string(),
        service,
        endpoint,
        trace,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(authority: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(Method::CONNECT).uri(authority);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    const GOOD: [(&str, &str); 2] = [
        (HEADER_TARGET_CLUSTER, "eu-central"),
        (HEADER_TARGET_SERVICE, "echo.demo"),
    ];

    #[test]
    fn a_well_formed_connect_is_parsed() {
        let mut headers = GOOD.to_vec();
        headers.push((
            TRACEPARENT,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ));
        let t = parse_connect(&connect("10.0.0.7:15006", &headers)).unwrap();
        assert_eq!(t.cluster, "eu-central");
        assert_eq!(t.service.to_string(), "echo.demo");
        assert_eq!(t.endpoint, "10.0.0.7:15006".parse().unwrap());
        assert!(t.trace.starts_with("00-0af7"));
    }

    #[test]
    fn missing_or_malformed_parts_are_400_with_a_label() {
        let cases = [
            connect("echo.demo:80", &GOOD),
            connect("10.0.0.7:15006", &GOOD[..1]),
            connect("10.0.0.7:15006", &GOOD[1..]),
            connect(
                "10.0.0.7:15006",
                &[(HEADER_TARGET_CLUSTER, "EU central"), GOOD[1]],
            ),
            connect(
                "10.0.0.7:15006",
                &[GOOD[0], (HEADER_TARGET_SERVICE, "echo")],
            ),
        ];
        for req in cases {
            let err = parse_connect(&req).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{err}");
            let rsp = err.response();
            assert_eq!(rsp.headers()[HEADER_MESH_ERROR], "bad_request");
        }
        let get = Request::builder()
            .uri("http://10.0.0.7:15006/")
            .body(())
            .unwrap();
        assert_eq!(
            parse_connect(&get).unwrap_err().status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn link_problems_are_503_and_refusals_502() {
        assert_eq!(
            IngressError::UnknownCluster("x".into()).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(IngressError::LinkDown("x".into()).label(), "link_down");
        let refused = IngressError::Refused {
            label: "not_exported",
            message: "no".into(),
        };
        assert_eq!(refused.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            refused.response().headers()[HEADER_MESH_ERROR],
            "not_exported"
        );
    }
}
