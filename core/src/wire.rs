//! The versioned header that opens every QUIC stream between gateways, and the tunnel reply.
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! magic "MSH1" (4) | version u8 | body length u16 | body
//! version = major << 4 | minor
//! body: kind u8 | cluster str8 | service str8 | endpoint str8 | trace str8 | [later fields]
//! str8 = length u8 | UTF-8 bytes
//! ```
//!
//! The body is bounded by [`MAX_HEADER_LEN`]; anything malformed, oversized or of an unknown
//! major version is a typed [`HeaderError`], never a panic. The reply to a tunnel is one status
//! byte and a `str8` message.
//!
//! # Version rules
//!
//! Gateways of two consecutive releases must link (see "Compatibility" in ARCHITECTURE.md).
//! This build speaks major [`VERSION_MAJOR`] 0, minor [`VERSION_MINOR`] 1: the byte `0x01`
//! that every build has sent since the header existed.
//!
//! - **Newer minor** (same major): a minor release may only *append* fields to the body, each
//!   optional. The receiver decodes the fields it knows, which keep their place, and skips the
//!   rest of the body, whose length the prefix gives. So a minor bump never needs both sides
//!   upgraded at once.
//! - **Same minor**: bytes after the last known field are malformed (`Truncated`).
//! - **Older minor**: fields appended after that minor are absent and take their defaults (none
//!   yet: minor 1 is the first).
//! - **Other major**: refused as [`HeaderError::UnsupportedVersion`] (a tunnel is answered with
//!   [`TunnelRefusal::BadHeader`]). A major change may move or retype fields; a release may
//!   send a new major only after a release that accepts it, so two consecutive releases always
//!   share one.
//! - **Unknown stream kind**: refused as [`HeaderError::UnknownKind`], at any minor. A kind asks
//!   the receiver to do something; one that cannot must say no rather than guess, and the sender
//!   sees the refusal.
//! - **Unknown refusal code** in a tunnel reply: read as [`TunnelRefusal::Other`], so a later
//!   release may add codes; the tunnel is refused either way.

use std::net::SocketAddr;

/// Magic bytes that open every stream.
pub const MAGIC: &[u8; 4] = b"MSH1";
/// The major version this build speaks; a header of any other major is refused.
pub const VERSION_MAJOR: u8 = 0;
/// The minor version this build sends; headers of a newer minor are read, their appended
/// fields skipped.
pub const VERSION_MINOR: u8 = 1;
/// The version byte this build sends: `major << 4 | minor`.
pub const VERSION: u8 = (VERSION_MAJOR << 4) | VERSION_MINOR;
/// Largest accepted header body: far above any real header (four short strings), small enough
/// that a hostile peer cannot make a gateway buffer much per stream.
pub const MAX_HEADER_LEN: usize = 4096;
/// Length of the fixed prefix (magic, version, body length).
pub const PREFIX_LEN: usize = 7;

/// What a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// Bytes of one sidecar-to-sidecar connection, to be spliced to an endpoint.
    Tunnel = 1,
    /// Catalog sync between controllers.
    Control = 2,
}

/// What the fixed prefix says about the body that follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderPrefix {
    /// The sender's minor version: decides whether bytes after the known fields are skipped.
    pub minor: u8,
    /// Body length to read next.
    pub body_len: usize,
}

/// The header at the start of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeader {
    /// What the stream carries.
    pub kind: StreamKind,
    /// Target cluster (tunnel) or sending cluster (control).
    pub cluster: String,
    /// Target service as `name.namespace` (empty for control streams).
    pub service: String,
    /// Target endpoint (tunnel only).
    pub endpoint: Option<SocketAddr>,
    /// W3C trace context (`traceparent`), possibly empty.
    pub trace: String,
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The stream does not start with the magic bytes.
    #[error("stream does not start with the mesh header magic")]
    BadMagic,
    /// A major version this build does not speak (the whole version byte).
    #[error(
        "unsupported stream header version {}.{} (this build speaks major {VERSION_MAJOR})",
        .0 >> 4,
        .0 & 0x0f
    )]
    UnsupportedVersion(u8),
    /// Declared or actual length above the bound.
    #[error("stream header of {0} bytes exceeds the {MAX_HEADER_LEN}-byte limit")]
    TooLarge(usize),
    /// Body ended early or had trailing bytes.
    #[error("stream header is truncated or has trailing bytes")]
    Truncated,
    /// Unknown stream kind.
    #[error("unknown stream kind {0}")]
    UnknownKind(u8),
    /// A string that is not UTF-8 or a field that does not parse.
    #[error("stream header field `{0}` is malformed")]
    BadField(&'static str),
    /// A string longer than 255 bytes.
    #[error("stream header field `{0}` is longer than 255 bytes")]
    FieldTooLong(&'static str),
}

impl HeaderError {
    /// Short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            HeaderError::BadMagic => "bad_magic",
            HeaderError::UnsupportedVersion(_) => "unsupported_version",
            HeaderError::TooLarge(_) => "too_large",
            HeaderError::Truncated => "truncated",
            HeaderError::UnknownKind(_) => "unknown_kind",
            HeaderError::BadField(_) | HeaderError::FieldTooLong(_) => "bad_field",
        }
    }
}

impl StreamHeader {
    /// A tunnel header aimed at `endpoint` of `service` in `cluster`.
    pub fn tunnel(cluster: &str, service: &str, endpoint: SocketAddr) -> Self {
        Self {
            kind: StreamKind::Tunnel,
            cluster: cluster.to_string(),
            service: service.to_string(),
            endpoint: Some(endpoint),
            trace: String::new(),
        }
    }

    /// A control header sent by `cluster`.
    pub fn control(cluster: &str) -> Self {
        Self {
            kind: StreamKind::Control,
            cluster: cluster.to_string(),
            service: String::new(),
            endpoint: None,
            trace: String::new(),
        }
    }

    /// Encodes prefix and body.
    pub fn encode(&self) -> Result<Vec<u8>, HeaderError> {
        let mut body = vec![self.kind as u8];
        put_str8(&mut body, "cluster", &self.cluster)?;
        put_str8(&mut body, "service", &self.service)?;
        let endpoint = self.endpoint.map(|e| e.to_string()).unwrap_or_default();
        put_str8(&mut body, "endpoint", &endpoint)?;
        put_str8(&mut body, "trace", &self.trace)?;
        if body.len() > MAX_HEADER_LEN {
            return Err(HeaderError::TooLarge(body.len()));
        }
        let mut out = Vec::with_capacity(PREFIX_LEN + body.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Parses the fixed prefix: the body length to read next and the sender's minor version.
    pub fn decode_prefix(prefix: &[u8; PREFIX_LEN]) -> Result<HeaderPrefix, HeaderError> {
        if &prefix[..4] != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let version = prefix[4];
        if version >> 4 != VERSION_MAJOR {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        let len = u16::from_be_bytes([prefix[5], prefix[6]]) as usize;
        if len > MAX_HEADER_LEN {
            return Err(HeaderError::TooLarge(len));
        }
        Ok(HeaderPrefix {
            minor: version & 0x0f,
            body_len: len,
        })
    }

    /// Parses a body whose length and minor version came from
    /// [`decode_prefix`](Self::decode_prefix). Bytes after the known fields are skipped when
    /// the sender's minor is newer (fields it appended) and refused otherwise.
    pub fn decode_body(body: &[u8], minor: u8) -> Result<Self, HeaderError> {
        let mut cur = Cursor(body);
        let kind = match cur.u8()? {
            1 => StreamKind::Tunnel,
            2 => StreamKind::Control,
            k => return Err(HeaderError::UnknownKind(k)),
        };
        let cluster = cur.str8("cluster")?;
        let service = cur.str8("service")?;
        let endpoint = cur.str8("endpoint")?;
        let trace = cur.str8("trace")?;
        if !cur.0.is_empty() && minor <= VERSION_MINOR {
            return Err(HeaderError::Truncated);
        }
        let endpoint = if endpoint.is_empty() {
            None
        } else {
            Some(
                endpoint
                    .parse()
                    .map_err(|_| HeaderError::BadField("endpoint"))?,
            )
        };
        if kind == StreamKind::Tunnel && endpoint.is_none() {
            return Err(HeaderError::BadField("endpoint"));
        }
        Ok(Self {
            kind,
            cluster,
            service,
            endpoint,
            trace,
        })
    }

    /// Parses a whole encoded header (prefix and body) from one buffer.
    pub fn decode(buf: &[u8]) -> Result<Self, HeaderError> {
        let prefix: &[u8; PREFIX_LEN] = buf
            .get(..PREFIX_LEN)
            .and_then(|p| p.try_into().ok())
            .ok_or(HeaderError::Truncated)?;
        let prefix = Self::decode_prefix(prefix)?;
        let body = buf.get(PREFIX_LEN..).ok_or(HeaderError::Truncated)?;
        if body.len() != prefix.body_len {
            return Err(HeaderError::Truncated);
        }
        Self::decode_body(body, prefix.minor)
    }
}

/// The receiving gateway's answer to a tunnel header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelReply {
    /// Connected to the endpoint; bytes follow.
    Accepted,
    /// Refused before any connection was made, with a reason for the log.
    Refused(TunnelRefusal, String),
}

/// Why a tunnel was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelRefusal {
    /// The endpoint is not exported by this cluster.
    NotExported = 1,
    /// The header was malformed.
    BadHeader = 2,
    /// The endpoint refused or did not answer the connection.
    ConnectFailed = 3,
    /// Some other failure.
    Other = 4,
}

impl TunnelRefusal {
    /// Short label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            TunnelRefusal::NotExported => "not_exported",
            TunnelRefusal::BadHeader => "bad_header",
            TunnelRefusal::ConnectFailed => "connect_failed",
            TunnelRefusal::Other => "other",
        }
    }
}

impl TunnelReply {
    /// Encodes the reply: status byte (0 accepted, else refusal code) and a message.
    pub fn encode(&self) -> Vec<u8> {
        let (code, msg) = match self {
            TunnelReply::Accepted => (0u8, ""),
            TunnelReply::Refused(r, m) => (*r as u8, m.as_str()),
        };
        let msg = truncate_utf8(msg, 255);
        let mut out = vec![code, msg.len() as u8];
        out.extend_from_slice(msg.as_bytes());
        out
    }

    /// Decodes a reply from its code and message bytes. A refusal code this build does not
    /// know (added by a later release) is read as [`TunnelRefusal::Other`]: still a refusal.
    pub fn decode(code: u8, msg: &[u8]) -> Result<Self, HeaderError> {
        let msg = String::from_utf8(msg.to_vec()).map_err(|_| HeaderError::BadField("reply"))?;
        let refusal = match code {
            0 => return Ok(TunnelReply::Accepted),
            1 => TunnelRefusal::NotExported,
            2 => TunnelRefusal::BadHeader,
            3 => TunnelRefusal::ConnectFailed,
            _ => TunnelRefusal::Other,
        };
        Ok(TunnelReply::Refused(refusal, msg))
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn put_str8(out: &mut Vec<u8>, field: &'static str, s: &str) -> Result<(), HeaderError> {
    if s.len() > 255 {
        return Err(HeaderError::FieldTooLong(field));
    }
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn u8(&mut self) -> Result<u8, HeaderError> {
        let (&b, rest) = self.0.split_first().ok_or(HeaderError::Truncated)?;
        self.0 = rest;
        Ok(b)
    }

    fn str8(&mut self, field: &'static str) -> Result<String, HeaderError> {
        let len = self.u8()? as usize;
        if self.0.len() < len {
            return Err(HeaderError::Truncated);
        }
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8(s.to_vec()).map_err(|_| HeaderError::BadField(field))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tunnel() -> StreamHeader {
        let mut h =
            StreamHeader::tunnel("eu-central", "echo.demo", "10.1.2.3:15006".parse().unwrap());
        h.trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into();
        h
    }

    #[test]
    fn headers_round_trip() {
        for h in [tunnel(), StreamHeader::control("us-east")] {
            let bytes = h.encode().unwrap();
            assert_eq!(StreamHeader::decode(&bytes).unwrap(), h);
        }
    }

    #[test]
    fn malformed_headers_are_typed_errors() {
        let good = tunnel().encode().unwrap();
        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        assert_eq!(StreamHeader::decode(&bad_magic), Err(HeaderError::BadMagic));

        let mut bad_version = good.clone();
        bad_version[4] = 0x11;
        assert_eq!(
            StreamHeader::decode(&bad_version),
            Err(HeaderError::UnsupportedVersion(0x11))
        );

        let mut oversized = good.clone();
        oversized[5..7].copy_from_slice(&5000u16.to_be_bytes());
        assert_eq!(
            StreamHeader::decode(&oversized),
            Err(HeaderError::TooLarge(5000))
        );

        assert_eq!(
            StreamHeader::decode(&good[..good.len() - 1]),
            Err(HeaderError::Truncated)
        );
        assert_eq!(
            StreamHeader::decode(&good[..3]),
            Err(HeaderError::Truncated)
        );

        let mut trailing = good.clone();
        trailing.push(0);
        let len = (trailing.len() - PREFIX_LEN) as u16;
        trailing[5..7].copy_from_slice(&len.to_be_bytes());
        assert_eq!(StreamHeader::decode(&trailing), Err(HeaderError::Truncated));

        let mut kind = good.clone();
        kind[PREFIX_LEN] = 7;
        assert_eq!(
            StreamHeader::decode(&kind),
            Err(HeaderError::UnknownKind(7))
        );
    }

    #[test]
    fn tunnel_without_endpoint_or_with_garbage_endpoint_is_refused() {
        let mut h = tunnel();
        h.endpoint = None;
        let bytes = h.encode().unwrap();
        assert_eq!(
            StreamHeader::decode(&bytes),
            Err(HeaderError::BadField("endpoint"))
        );

        let mut body = vec![1u8];
        for s in ["c", "s", "not-an-address", ""] {
            put_str8(&mut body, "x", s).unwrap();
        }
        assert_eq!(
            StreamHeader::decode_body(&body, VERSION_MINOR),
            Err(HeaderError::BadField("endpoint"))
        );
    }

    #[test]
    fn overlong_fields_are_refused_on_encode() {
        let mut h = tunnel();
        h.trace = "x".repeat(300);
        assert_eq!(h.encode(), Err(HeaderError::FieldTooLong("trace")));
    }

    #[test]
    fn replies_round_trip() {
        for r in [
            TunnelReply::Accepted,
            TunnelReply::Refused(
                TunnelRefusal::NotExported,
                "10.0.0.1:1 is not exported".into(),
            ),
        ] {
            let bytes = r.encode();
            let len = bytes[1] as usize;
            assert_eq!(
                TunnelReply::decode(bytes[0], &bytes[2..2 + len]).unwrap(),
                r
            );
        }
        assert!(TunnelReply::decode(0, &[0xff]).is_err());
        let long = TunnelReply::Refused(TunnelRefusal::Other, "é".repeat(200)).encode();
        assert!(long[1] as usize <= 255 && std::str::from_utf8(&long[2..]).is_ok());
    }

    /// A header as the next minor release might send it: the version byte's minor bumped and a
    /// field appended to the body.
    fn next_minor(h: &StreamHeader) -> Vec<u8> {
        let mut bytes = h.encode().unwrap();
        bytes[4] = (VERSION_MAJOR << 4) | (VERSION_MINOR + 1);
        put_str8(&mut bytes, "x", "tenant=blue").unwrap();
        bytes.extend_from_slice(&[0x02, 0x00, 0x2a]);
        let len = (bytes.len() - PREFIX_LEN) as u16;
        bytes[5..7].copy_from_slice(&len.to_be_bytes());
        bytes
    }

    #[test]
    fn a_header_of_a_newer_minor_is_read_and_its_appended_fields_skipped() {
        for h in [tunnel(), StreamHeader::control("us-east")] {
            assert_eq!(StreamHeader::decode(&next_minor(&h)).unwrap(), h);
        }
        // The same bytes under this build's own minor are malformed, not skipped.
        let mut same_minor = next_minor(&tunnel());
        same_minor[4] = VERSION;
        assert_eq!(
            StreamHeader::decode(&same_minor),
            Err(HeaderError::Truncated)
        );
        // A newer minor still has to carry every field this build knows.
        let mut short = StreamHeader::control("us-east").encode().unwrap();
        short.truncate(short.len() - 1);
        short[4] = VERSION + 1;
        let len = (short.len() - PREFIX_LEN) as u16;
        short[5..7].copy_from_slice(&len.to_be_bytes());
        assert_eq!(StreamHeader::decode(&short), Err(HeaderError::Truncated));
    }

    #[test]
    fn todays_encoding_is_the_byte_every_earlier_build_sent() {
        assert_eq!(VERSION, 1);
        assert_eq!(StreamHeader::control("a").encode().unwrap()[4], 1);
        let e = HeaderError::UnsupportedVersion(0x23).to_string();
        assert!(e.contains("2.3") && e.contains("major 0"), "{e}");
    }

    #[test]
    fn a_refusal_code_of_a_later_release_is_still_a_refusal() {
        assert_eq!(
            TunnelReply::decode(9, b"rate limited").unwrap(),
            TunnelReply::Refused(TunnelRefusal::Other, "rate limited".into())
        );
    }
}
