//! What a client may make one connection hold, and the check of a request head against it
//! that answers a named 431.
//!
//! hyper and h2 refuse a head past their own bounds before it is parsed, with a bare 431
//! (hyper's HTTP/1 answer has an empty body and no way to add one; h2 answers the stream 431
//! and resets it). So the protocol bounds are set at twice ours ([`ServeLimits::hard_header_bytes`],
//! [`ServeLimits::hard_headers`]) and the parsed head is checked against ours first
//! ([`oversized_head`]): a head over the limit but under twice it (the 100 KiB of headers of a
//! broken client) gets a 431 that names the limit; only a grossly larger one gets the bare
//! answer, and no connection ever holds more than twice the limit of head bytes.

use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode};

use crate::api::HEADER_MESH_ERROR;
use crate::http::{BoxBody, text};

/// Default bound on a request's header bytes, HTTP/1 head and HTTP/2 header list alike: 64 KiB,
/// close to Envoy's 60 KiB default and above nginx's 4 x 8 KiB, roomy for large cookies and
/// JWTs, yet small enough that a connection cannot be made to hold hundreds of KiB (hyper's
/// own HTTP/1 default is about 400 KiB) before a service sees its request. The same value on
/// both protocols, so a head the outbound sidecar accepts over HTTP/1 also crosses its HTTP/2
/// hop to the inbound sidecar.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;

/// Default bound on the number of header fields: 100, hyper's own HTTP/1 default and far above
/// what real clients send (a browser sends about 20).
pub const DEFAULT_MAX_HEADERS: usize = 100;

/// Default time a client has to send a complete request head (HTTP/1), or its first request
/// (HTTP/2: preface, SETTINGS and a complete HEADERS block): 30 s, hyper's default, long
/// enough for a slow mobile link, short enough that a slowloris client trickling bytes holds
/// its socket for seconds, not forever.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Default time a connection may sit with no request in flight before it is closed (HTTP/2
/// with a GOAWAY): 5 minutes, above the keep-alive of common client pools (Go's 90 s, hyper's
/// 90 s) so they close first, while a client that opens connections and leaves them costs a
/// socket for minutes, not for ever.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Default streams a client may have open at once on one HTTP/2 connection: 256, above
/// hyper's 200 so a sidecar's pooled connection to a busy peer is not the bottleneck, and a
/// hard bound on the tasks one connection can make the server run.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 256;

/// Default bound on streams a client resets before the server has picked them up (HTTP/2
/// rapid reset, CVE-2023-44487): past 20, h2's default, the connection is closed with a GOAWAY
/// `ENHANCE_YOUR_CALM`.
pub const DEFAULT_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;

/// Default bound on streams the server resets because the client broke the protocol on them:
/// past 1024 (h2's default) in one connection, the connection is closed with a GOAWAY.
pub const DEFAULT_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// Default interval of HTTP/2 keep-alive pings on a connection that carries nothing: 60 s,
/// so a peer that vanished (a half-open TCP connection) is found within about a minute and a
/// half even while one of its streams (a tunnel) is open.
pub const DEFAULT_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(60);

/// Default time a keep-alive ping may go unanswered before the connection is closed: 20 s
/// (hyper's default).
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// What a client may make one connection hold before and while its requests reach the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// Largest request head in bytes (the request target, and each field's name and value
    /// plus 32, as HTTP/2 counts a header list). Over it: 431 naming the limit.
    pub max_header_bytes: usize,
    /// Most header fields in a request. Over it: 431 naming the limit.
    pub max_headers: usize,
    /// Time a client has to send a complete HTTP/1 request head, or its first HTTP/2 request;
    /// then the connection closes without an answer.
    pub header_read_timeout: Duration,
    /// Time a connection may have no request in flight (and no upgraded stream) before it is
    /// closed, gracefully (HTTP/2: GOAWAY).
    pub idle_timeout: Duration,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub max_concurrent_streams: u32,
    /// Streams a client may reset before the server picked them up (HTTP/2 rapid reset);
    /// past it: GOAWAY `ENHANCE_YOUR_CALM`.
    pub max_pending_accept_reset_streams: usize,
    /// Streams the server may reset for the client's protocol errors; past it: GOAWAY.
    pub max_local_error_reset_streams: usize,
    /// Interval of HTTP/2 keep-alive pings.
    pub keep_alive_interval: Duration,
    /// Time a keep-alive ping may go unanswered before the connection is closed.
    pub keep_alive_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            max_pending_accept_reset_streams: DEFAULT_MAX_PENDING_ACCEPT_RESET_STREAMS,
            max_local_error_reset_streams: DEFAULT_MAX_LOCAL_ERROR_RESET_STREAMS,
            keep_alive_interval: DEFAULT_KEEP_ALIVE_INTERVAL,
            keep_alive_timeout: DEFAULT_KEEP_ALIVE_TIMEOUT,
        }
    }
}

/// hyper's smallest HTTP/1 read buffer (it refuses smaller ones).
const MIN_HTTP1_BUF: usize = 8 * 1024;

/// What HTTP/2 adds to each field when it sizes a header list (RFC 9113, section 6.5.2).
const FIELD_OVERHEAD: usize = 32;

impl ServeLimits {
    /// The protocol-level bound on head bytes (hyper's HTTP/1 read buffer, at least 8 KiB; the
    /// HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`): twice [`Self::max_header_bytes`], so heads
    /// between the two are parsed and refused by [`oversized_head`] with the limit named.
    pub fn hard_header_bytes(&self) -> usize {
        self.max_header_bytes.saturating_mul(2).max(MIN_HTTP1_BUF)
    }

    /// The protocol-level bound on HTTP/1 header fields: twice [`Self::max_headers`], for the
    /// same reason.
    pub fn hard_headers(&self) -> usize {
        self.max_headers.saturating_mul(2)
    }

    /// Checks the limits make sense together; the error names the field.
    pub fn check(&self) -> Result<(), String> {
        let positive = [
            ("max_header_bytes", self.max_header_bytes == 0),
            ("max_headers", self.max_headers == 0),
            ("header_read_timeout", self.header_read_timeout.is_zero()),
            ("idle_timeout", self.idle_timeout.is_zero()),
            ("max_concurrent_streams", self.max_concurrent_streams == 0),
            ("keep_alive_interval", self.keep_alive_interval.is_zero()),
            ("keep_alive_timeout", self.keep_alive_timeout.is_zero()),
        ];
        match positive.iter().find(|(_, zero)| *zero) {
            Some((field, _)) => Err(format!("{field} must be above 0")),
            None => Ok(()),
        }
    }
}

/// The size of `req`'s head as [`ServeLimits::max_header_bytes`] counts it: the request target
/// and each field's name and value plus 32.
pub fn head_bytes<B>(req: &Request<B>) -> usize {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    req.headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + FIELD_OVERHEAD)
        .sum::<usize>()
        + target
}

/// The 431 answer for a request head over `limits`, naming the limit; `None` when it is
/// within them.
pub fn oversized_head<B>(req: &Request<B>, limits: &ServeLimits) -> Option<Response<BoxBody>> {
    let fields = req.headers().len();
    let (label, why) = if fields > limits.max_headers {
        (
            "too-many-headers",
            format!(
                "the request has {fields} header fields, over this listener's limit of {}",
                limits.max_headers
            ),
        )
    } else {
        let bytes = head_bytes(req);
        if bytes <= limits.max_header_bytes {
            return None;
        }
        (
            "header-too-large",
            format!(
                "the request head is {bytes} bytes (target, and each field's name and value \
                 plus 32), over this listener's limit of {} bytes",
                limits.max_header_bytes
            ),
        )
    };
    let mut rsp = text(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, why);
    rsp.headers_mut()
        .insert(HEADER_MESH_ERROR, HeaderValue::from_static(label));
    Some(rsp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(fields: usize, value_len: usize) -> Request<()> {
        let mut req = Request::builder().uri("http://x/path?q=1");
        for i in 0..fields {
            req = req.header(format!("x-h{i}"), "a".repeat(value_len));
        }
        req.body(()).unwrap()
    }

    #[test]
    fn a_head_is_counted_as_http2_counts_a_header_list() {
        // "/path?q=1" (9) + "x-h0" (4) + 10 + 32.
        assert_eq!(head_bytes(&request(1, 10)), 9 + 4 + 10 + 32);
    }

    #[test]
    fn heads_within_the_limits_pass() {
        let limits = ServeLimits::default();
        assert!(oversized_head(&request(100, 10), &limits).is_none());
        assert!(oversized_head(&request(1, 60 * 1024), &limits).is_none());
    }

    #[test]
    fn too_many_fields_are_refused_naming_the_limit() {
        let rsp = oversized_head(&request(101, 1), &ServeLimits::default()).unwrap();
        assert_eq!(rsp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(rsp.headers()[HEADER_MESH_ERROR], "too-many-headers");
    }

    #[test]
    fn too_many_bytes_are_refused_naming_the_limit() {
        let limits = ServeLimits {
            max_header_bytes: 1000,
            ..ServeLimits::default()
        };
        let rsp = oversized_head(&request(2, 500), &limits).unwrap();
        assert_eq!(rsp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(rsp.headers()[HEADER_MESH_ERROR], "header-too-large");
    }

    #[test]
    fn the_protocol_bounds_are_twice_ours_and_never_below_hypers_minimum() {
        let limits = ServeLimits::default();
        assert_eq!(limits.hard_header_bytes(), 128 * 1024);
        assert_eq!(limits.hard_headers(), 200);
        let tiny = ServeLimits {
            max_header_bytes: 100,
            ..limits
        };
        assert_eq!(tiny.hard_header_bytes(), MIN_HTTP1_BUF);
    }

    #[test]
    fn zero_limits_are_refused_naming_the_field() {
        let zero = ServeLimits {
            idle_timeout: Duration::ZERO,
            ..ServeLimits::default()
        };
        assert_eq!(zero.check().unwrap_err(), "idle_timeout must be above 0");
        assert!(ServeLimits::default().check().is_ok());
    }
}
