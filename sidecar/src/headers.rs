//! Header handling shared by both directions: hop-by-hop headers do not cross a proxy (RFC 9110
//! section 7.6.1), and HTTP/2 refuses connection-specific ones outright. `Upgrade` is one of
//! them: an HTTP/1.1 upgrade is not passed on as headers but recognised here
//! ([`upgrade_protocol`]) and carried across the mesh's HTTP/2 hop as an extended CONNECT (see
//! `outbound::upgrade` and `inbound::upgrade`).

use http::HeaderMap;
use http::header::{CONNECTION, HeaderName, TE, TRANSFER_ENCODING, UPGRADE};

/// Hop-by-hop headers removed in both directions, besides those `Connection` names.
const HOP_BY_HOP: [&str; 3] = ["proxy-connection", "keep-alive", "proxy-authenticate"];

/// Removes hop-by-hop headers. `te: trailers` is kept: it is end-to-end in HTTP/2 and gRPC
/// servers rely on it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [CONNECTION, TRANSFER_ENCODING, UPGRADE] {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    let te_trailers = headers.get_all(TE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    headers.remove(TE);
    if te_trailers {
        headers.insert(TE, http::HeaderValue::from_static("trailers"));
    }
}

/// The protocol an HTTP/1.1 request asks to switch to (RFC 9110 section 7.8): the first one its
/// `Upgrade` header offers, when `Connection` lists `upgrade`. `h2c` is never one: a proxy
/// serves such a request as the HTTP/1.1 request it also is (RFC 9113 removed that upgrade),
/// and only one protocol crosses the mesh's hop (`:protocol` names one), so the first offered,
/// the client's preference, is the one asked of the app.
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<String> {
    let asks = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !asks {
        return None;
    }
    let first = headers
        .get_all(UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|p| !p.is_empty())?;
    (!first.eq_ignore_ascii_case("h2c")).then(|| first.to_string())
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed_and_end_to_end_ones_kept() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("te", "trailers, deflate"),
            ("x-app", "kept"),
            ("content-type", "text/plain"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["content-type", "te", "x-app"]);
        assert_eq!(h["te"], "trailers");
        let mut only_gzip = HeaderMap::new();
        only_gzip.insert(TE, HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut only_gzip);
        assert!(only_gzip.is_empty());
    }

    #[test]
    fn an_upgrade_is_the_first_protocol_offered_with_connection_upgrade() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, HeaderValue::from_static(v));
            }
            h
        };
        let ws = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert_eq!(upgrade_protocol(&ws).as_deref(), Some("websocket"));
        let two = headers(&[("connection", "upgrade"), ("upgrade", " foo/2 , bar")]);
        assert_eq!(upgrade_protocol(&two).as_deref(), Some("foo/2"));
        // `Upgrade` without `Connection: upgrade` is not an upgrade request (RFC 9110 7.8).
        let bare = headers(&[("upgrade", "websocket")]);
        assert_eq!(upgrade_protocol(&bare), None);
        let none = headers(&[("connection", "upgrade")]);
        assert_eq!(upgrade_protocol(&none), None);
        // curl --http2 on http:// asks for h2c: served as HTTP/1.1, never carried.
        let h2c = headers(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
        ]);
        assert_eq!(upgrade_protocol(&h2c), None);
    }
}
