//! gRPC's outcome as the mesh reads it. gRPC answers HTTP 200 and puts its own status in
//! `grpc-status`: in the trailers after the messages, or in the head of a *trailers-only*
//! response (gRPC's PROTOCOL-HTTP2.md), which a server sends when it
//! fails a call before any message (an overloaded or draining server answers UNAVAILABLE so).
//!
//! Retries, breakers and outlier detection decide on the response head, so only a trailers-only
//! status can feed them: [`effective_status`] reads it as the HTTP status gRPC's own mapping
//! gives its code (UNAVAILABLE is 503, DEADLINE_EXCEEDED 504, INTERNAL 500, ...), and those
//! layers treat the answer as they would that status. A status in the trailers arrives after
//! they have settled; the metrics layer still counts it (`mesh_sidecar_grpc_responses_total`).
//! Pure: no I/O.

use http::{HeaderMap, StatusCode};

/// The header (or trailer) that carries a gRPC call's status code.
pub const HEADER_GRPC_STATUS: &str = "grpc-status";

/// gRPC's OK.
pub const OK: u32 = 0;

/// gRPC's UNAVAILABLE: the server cannot take the call now; counts as a 503.
pub const UNAVAILABLE: u32 = 14;

/// Whether a message with these headers is gRPC over HTTP/2: `content-type` is
/// `application/grpc` or one of its `+format` / parameterised forms. gRPC-Web
/// (`application/grpc-web`) is not: it is made for HTTP/1.1 and carries its trailers in the body.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let ct = ct.trim();
    let Some(rest) = ct
        .get(..16)
        .filter(|p| p.eq_ignore_ascii_case("application/grpc"))
        .map(|_| &ct[16..])
    else {
        return false;
    };
    rest.is_empty() || rest.starts_with('+') || rest.starts_with(';')
}

/// The `grpc-status` code in `headers` (a head or trailers), if present and a number.
pub fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers
        .get(HEADER_GRPC_STATUS)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The HTTP status a gRPC code corresponds to, as gRPC's and Google's APIs map them
/// (`google.rpc.Code`); an unknown code is UNKNOWN's, 500.
pub fn http_equivalent(code: u32) -> StatusCode {
    match code {
        0 => StatusCode::OK,
        // CANCELLED: the client went away; 499 is nginx's "client closed request".
        1 => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        3 | 9 | 11 => StatusCode::BAD_REQUEST,
        4 => StatusCode::GATEWAY_TIMEOUT,
        5 => StatusCode::NOT_FOUND,
        6 | 10 => StatusCode::CONFLICT,
        7 => StatusCode::FORBIDDEN,
        8 => StatusCode::TOO_MANY_REQUESTS,
        12 => StatusCode::NOT_IMPLEMENTED,
        UNAVAILABLE => StatusCode::SERVICE_UNAVAILABLE,
        16 => StatusCode::UNAUTHORIZED,
        // UNKNOWN (2), INTERNAL (13), DATA_LOSS (15) and codes of a later gRPC.
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The status a response counts as for retries, breakers and outlier detection: its own,
/// except a trailers-only gRPC answer (HTTP 200 with `grpc-status` in its head), which counts
/// as [`http_equivalent`] of its code.
pub fn effective_status(status: StatusCode, headers: &HeaderMap) -> StatusCode {
    if status != StatusCode::OK || !is_grpc(headers) {
        return status;
    }
    grpc_status(headers).map_or(status, http_equivalent)
}

/// Whether a response head is a failure of the endpoint that sent it: a 5xx, or a trailers-only
/// gRPC answer whose code maps to one (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, ...).
pub fn is_failure(status: StatusCode, headers: &HeaderMap) -> bool {
    effective_status(status, headers).is_server_error()
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn head(content_type: &'static str, status: Option<&'static str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static(content_type));
        if let Some(s) = status {
            h.insert("grpc-status", HeaderValue::from_static(s));
        }
        h
    }

    #[test]
    fn grpc_is_recognised_by_its_content_type_only() {
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC; charset=utf-8",
        ] {
            assert!(is_grpc(&head(ct, None)), "{ct}");
        }
        for ct in [
            "application/grpc-web",
            "application/json",
            "application/grp",
        ] {
            assert!(!is_grpc(&head(ct, None)), "{ct}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn a_trailers_only_unavailable_counts_as_a_503() {
        let unavailable = head("application/grpc", Some("14"));
        assert_eq!(grpc_status(&unavailable), Some(UNAVAILABLE));
        assert_eq!(
            effective_status(StatusCode::OK, &unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert!(is_failure(StatusCode::OK, &unavailable));
        // Deadline and internal errors are failures as their HTTP equivalents are.
        for (code, http) in [("4", 504), ("13", 500), ("2", 500), ("99", 500)] {
            let h = head("application/grpc", Some(code));
            assert_eq!(
                effective_status(StatusCode::OK, &h).as_u16(),
                http,
                "{code}"
            );
            assert!(is_failure(StatusCode::OK, &h), "{code}");
        }
    }

    #[test]
    fn answers_of_the_app_are_not_failures_of_the_endpoint() {
        for (code, http) in [("0", 200), ("3", 400), ("5", 404), ("12", 501), ("8", 429)] {
            let h = head("application/grpc", Some(code));
            assert_eq!(
                effective_status(StatusCode::OK, &h).as_u16(),
                http,
                "{code}"
            );
        }
        // NOT_FOUND and the like are the app's answer, not the endpoint failing.
        assert!(!is_failure(
            StatusCode::OK,
            &head("application/grpc", Some("5"))
        ));
        // A status to come in the trailers: the head alone is a success.
        assert!(!is_failure(StatusCode::OK, &head("application/grpc", None)));
        // Not gRPC: `grpc-status` means nothing; the HTTP status decides.
        let plain = head("text/plain", Some("14"));
        assert_eq!(effective_status(StatusCode::OK, &plain), StatusCode::OK);
        assert!(is_failure(StatusCode::BAD_GATEWAY, &plain));
        // A gRPC answer with a non-200 HTTP status keeps it (a proxy's 503, say).
        let proxy = head("application/grpc", Some("0"));
        assert_eq!(
            effective_status(StatusCode::SERVICE_UNAVAILABLE, &proxy),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(grpc_status(&head("application/grpc", Some("x"))), None);
    }
}
