//! The key hash of a request for consistent hashing: a header's value, a cookie's value or the
//! caller's identity, hashed by a function every sidecar computes alike.

use http::HeaderMap;
use http::header::COOKIE;

use crate::policy::backend_policy::{ConsistentHashSpec, HashSource};

/// FNV-1a's 64-bit offset basis and prime (the published constants).
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A 64-bit hash of `bytes` that is the same in every process, on every machine and in every
/// release: FNV-1a, then a finaliser (MurmurHash3's fmix64) because FNV-1a alone leaves
/// similar short inputs (`user-1`, `user-2`) close together in the high bits, which would
/// put them on one arc of the ring. Not for hostile keys: a caller choosing its own key can
/// choose its endpoint anyway.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hasher = StableHasher::new();
    hasher.write(bytes);
    hasher.finish()
}

/// The key hash of a request under `spec`: the named header's values (in order; several are
/// hashed together), the first non-empty value of the named cookie in the `Cookie` headers,
/// or the caller's SPIFFE ID (`source_identity`, `None` for an unauthenticated caller).
///
/// `None` when the request has no such key (absent, or empty: empty keys would pile every
/// keyless request on one endpoint) or `spec` names no single source. The caller then falls
/// back to the default algorithm (`p2cEwma`) for this request: a request without a session
/// key has no affinity to keep, and it must not fail for it.
pub fn hash_key(
    spec: &ConsistentHashSpec,
    headers: &HeaderMap,
    source_identity: Option<&str>,
) -> Option<u64> {
    match spec.source()? {
        HashSource::Header(name) => {
            let mut values = headers
                .get_all(name)
                .iter()
                .map(|v| v.as_bytes())
                .peekable();
            values.peek()?;
            let mut hasher = StableHasher::new();
            let mut empty = true;
            for (i, value) in values.enumerate() {
                // A byte no header value may hold separates the values: ["a,b"] and
                // ["a", "b"] are different keys.
                if i > 0 {
                    hasher.write(&[0]);
                }
                empty &= value.is_empty();
                hasher.write(value);
            }
            (!empty).then(|| hasher.finish())
        }
        HashSource::Cookie(name) => cookie_value(headers, name).map(stable_hash),
        HashSource::SourceIdentity => source_identity
            .filter(|id| !id.is_empty())
            .map(|id| stable_hash(id.as_bytes())),
    }
}

/// The first non-empty value of cookie `name` in the `Cookie` headers (HTTP/2 may split them
/// into several), without the optional double quotes RFC 6265 allows around it.
fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|header| header.as_bytes().split(|b| *b == b';'))
        .filter_map(|pair| {
            let pair = pair.trim_ascii();
            let at = pair.iter().position(|b| *b == b'=')?;
            let (key, value) = (&pair[..at], &pair[at + 1..]);
            (key.trim_ascii() == name.as_bytes()).then_some(value.trim_ascii())
        })
        .map(|value| {
            value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(value)
        })
        .find(|value| !value.is_empty())
}

/// FNV-1a over every byte written, finalised by [`mix`].
struct StableHasher(u64);

impl StableHasher {
    fn new() -> Self {
        Self(FNV_OFFSET)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }

    fn finish(&self) -> u64 {
        mix(self.0)
    }
}

/// MurmurHash3's 64-bit finaliser: a bijection in which every input bit flips about half of
/// the output bits.
pub(super) fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn spec(
        header: Option<&str>,
        cookie: Option<&str>,
        source_identity: bool,
    ) -> ConsistentHashSpec {
        ConsistentHashSpec {
            header: header.map(str::to_string),
            cookie: cookie.map(str::to_string),
            source_identity,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn the_hash_is_fixed_across_processes_and_releases() {
        // FNV-1a of "" is its offset basis; the finaliser of it is pinned here so a change of
        // function (which would move every session at once) cannot pass unnoticed.
        assert_eq!(stable_hash(b""), mix(FNV_OFFSET));
        assert_eq!(stable_hash(b"user-1"), stable_hash(b"user-1"));
        assert_eq!(stable_hash(b"a"), mix(0xaf63_dc4c_8601_ec8c));
        assert_ne!(stable_hash(b"user-1"), stable_hash(b"user-2"));
        // Similar keys land far apart: their top bytes differ.
        assert_ne!(stable_hash(b"user-1") >> 56, stable_hash(b"user-2") >> 56);
    }

    #[test]
    fn hashes_the_named_header_without_case() {
        let on_header = spec(Some("X-User"), None, false);
        let key = hash_key(&on_header, &headers(&[("x-user", "alice")]), None);
        assert_eq!(key, Some(stable_hash(b"alice")));
        assert_eq!(
            hash_key(&on_header, &headers(&[("x-other", "alice")]), None),
            None
        );
        assert_eq!(
            hash_key(&on_header, &headers(&[("x-user", "")]), None),
            None
        );
        let two = hash_key(
            &on_header,
            &headers(&[("x-user", "a"), ("x-user", "b")]),
            None,
        );
        let joined = hash_key(&on_header, &headers(&[("x-user", "a,b")]), None);
        assert!(two.is_some() && joined.is_some());
        assert_ne!(two, joined);
        assert_ne!(two, Some(stable_hash(b"a")));
    }

    #[test]
    fn finds_the_named_cookie_among_several_headers() {
        let on_cookie = spec(None, Some("sid"), false);
        let key =
            |pairs: &[(&'static str, &'static str)]| hash_key(&on_cookie, &headers(pairs), None);
        let expected = Some(stable_hash(b"abc123"));
        assert_eq!(key(&[("cookie", "sid=abc123")]), expected);
        assert_eq!(
            key(&[("cookie", "theme=dark; sid=abc123; lang=en")]),
            expected
        );
        assert_eq!(
            key(&[("cookie", "theme=dark"), ("cookie", "sid=abc123")]),
            expected
        );
        assert_eq!(
            key(&[("cookie", "sid=\"abc123\"")]),
            expected,
            "quotes are not the value"
        );
        assert_eq!(
            key(&[("cookie", "sid=; sid=abc123")]),
            expected,
            "first non-empty"
        );
        assert_eq!(
            key(&[("cookie", "xsid=abc123; SID=abc123")]),
            None,
            "names are exact"
        );
        assert_eq!(key(&[("cookie", "sid")]), None);
        assert_eq!(key(&[("x-sid", "abc123")]), None);
        assert_eq!(key(&[]), None);
    }

    #[test]
    fn hashes_the_source_identity_when_known() {
        let on_identity = spec(None, None, true);
        let id = "spiffe://us-east.mesh/ns/demo/sa/web";
        let key = hash_key(&on_identity, &headers(&[("x-user", "alice")]), Some(id));
        assert_eq!(key, Some(stable_hash(id.as_bytes())));
        assert_eq!(hash_key(&on_identity, &HeaderMap::new(), None), None);
        assert_eq!(hash_key(&on_identity, &HeaderMap::new(), Some("")), None);
    }

    #[test]
    fn a_spec_without_a_single_source_gives_no_key() {
        let both = spec(Some("x-user"), Some("sid"), false);
        assert_eq!(
            hash_key(&both, &headers(&[("x-user", "alice")]), None),
            None
        );
    }
}
