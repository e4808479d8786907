//! The load-balancing algorithm of a service, and what consistent hashing hashes.

use http::HeaderName;
use serde::{Deserialize, Serialize};

use super::BackendPolicyError;

/// How a request's endpoint is chosen among the usable endpoints of the chosen locality. The
/// locality itself is always chosen by priority spill over the failover order; the algorithm
/// only works inside it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LoadBalancerSpec {
    /// Power of two choices over a peak-EWMA latency estimate times the requests in flight
    /// (`core::balance`). The default: it steers away from an endpoint that is slow *or* busy
    /// from this sidecar's own measurements, needs no coordination between sidecars, and is
    /// what the sidecar ran before backend policies, so a service without one keeps its
    /// behaviour.
    #[default]
    P2cEwma,
    /// Fewest requests in flight between two random endpoints, as Envoy's least-request
    /// (`policy::pick::least_request`): for endpoints of equal speed with uneven request costs.
    LeastRequest,
    /// Each endpoint in turn, skipping unusable ones (`policy::pick::RoundRobin`): for equal
    /// endpoints and equal requests, where any estimate is noise.
    RoundRobin,
    /// Session affinity: a key from the request picks the endpoint on a hash ring
    /// (`policy::hash_ring`), the same one in every sidecar, and few keys move when endpoints
    /// come and go. Requests without the key fall back to `p2cEwma`.
    ConsistentHash(ConsistentHashSpec),
}

impl LoadBalancerSpec {
    /// The consistent-hash settings, when that is the algorithm.
    pub fn consistent_hash(&self) -> Option<&ConsistentHashSpec> {
        match self {
            Self::ConsistentHash(spec) => Some(spec),
            _ => None,
        }
    }

    pub(super) fn validate(&self) -> Result<(), BackendPolicyError> {
        match self {
            Self::ConsistentHash(spec) => spec.validate().map_err(|e| e.within("consistentHash")),
            Self::P2cEwma | Self::LeastRequest | Self::RoundRobin => Ok(()),
        }
    }
}

/// What consistent hashing hashes: exactly one of a header, a cookie or the caller's identity.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConsistentHashSpec {
    /// A request header's value (names compare without case; several values are hashed in
    /// order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A cookie of the `Cookie` headers, by its exact name. The sidecar never sets the cookie:
    /// the app does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// The calling workload's SPIFFE ID (`sourceIdentity: true`), as Envoy's source-IP hashing
    /// but stable across pod restarts. Every pod of a service account shares its ID, so all of
    /// one calling workload's requests go to one endpoint: affinity per caller, not a spread
    /// of a few callers' load.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub source_identity: bool,
}

/// The one key source a valid [`ConsistentHashSpec`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashSource<'a> {
    /// The named header.
    Header(&'a str),
    /// The named cookie.
    Cookie(&'a str),
    /// The caller's identity.
    SourceIdentity,
}

impl ConsistentHashSpec {
    /// The key source, when exactly one is set (always, once validated).
    pub fn source(&self) -> Option<HashSource<'_>> {
        match (&self.header, &self.cookie, self.source_identity) {
            (Some(header), None, false) => Some(HashSource::Header(header)),
            (None, Some(cookie), false) => Some(HashSource::Cookie(cookie)),
            (None, None, true) => Some(HashSource::SourceIdentity),
            _ => None,
        }
    }

    fn validate(&self) -> Result<(), BackendPolicyError> {
        let set: Vec<&str> = [
            self.header.is_some().then_some("header"),
            self.cookie.is_some().then_some("cookie"),
            self.source_identity.then_some("sourceIdentity"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if set.len() != 1 {
            let found = if set.is_empty() {
                "none is set".to_string()
            } else {
                format!("{} are set", set.join(" and "))
            };
            return Err(BackendPolicyError::new(
                "",
                format!("set exactly one of header, cookie or sourceIdentity: true ({found})"),
            ));
        }
        if let Some(header) = &self.header
            && HeaderName::from_bytes(header.as_bytes()).is_err()
        {
            return Err(BackendPolicyError::new(
                "header",
                format!("{header:?} is not a valid HTTP header name"),
            ));
        }
        if let Some(cookie) = &self.cookie
            && !is_cookie_name(cookie)
        {
            return Err(BackendPolicyError::new(
                "cookie",
                format!(
                    "{cookie:?} is not a valid cookie name (RFC 6265: a token, without spaces or \
                     any of ()<>@,;:\\\"/[]?={{}})"
                ),
            ));
        }
        Ok(())
    }
}

/// A cookie name as RFC 6265 allows it: an RFC 2616 token.
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !br#"()<>@,;:\"/[]?={}"#.contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_on(
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

    #[test]
    fn reads_every_algorithm() {
        for (json, expected) in [
            (r#""p2cEwma""#, LoadBalancerSpec::P2cEwma),
            (r#""leastRequest""#, LoadBalancerSpec::LeastRequest),
            (r#""roundRobin""#, LoadBalancerSpec::RoundRobin),
            (
                r#"{"consistentHash": {"header": "x-user"}}"#,
                LoadBalancerSpec::ConsistentHash(hash_on(Some("x-user"), None, false)),
            ),
            (
                r#"{"consistentHash": {"sourceIdentity": true}}"#,
                LoadBalancerSpec::ConsistentHash(hash_on(None, None, true)),
            ),
        ] {
            let spec: LoadBalancerSpec = serde_json::from_str(json).unwrap();
            assert_eq!(spec, expected, "{json}");
            assert_eq!(spec.validate(), Ok(()), "{json}");
        }
    }

    #[test]
    fn exactly_one_key_source() {
        assert_eq!(
            hash_on(Some("x-user"), None, false).source(),
            Some(HashSource::Header("x-user"))
        );
        assert_eq!(
            hash_on(None, Some("sid"), false).source(),
            Some(HashSource::Cookie("sid"))
        );
        assert_eq!(
            hash_on(None, None, true).source(),
            Some(HashSource::SourceIdentity)
        );
        let none = hash_on(None, None, false);
        assert_eq!(none.source(), None);
        assert_eq!(
            none.validate().unwrap_err().reason,
            "set exactly one of header, cookie or sourceIdentity: true (none is set)"
        );
        let two = hash_on(Some("x-user"), None, true);
        assert_eq!(two.source(), None);
        assert!(
            two.validate()
                .unwrap_err()
                .reason
                .ends_with("(header and sourceIdentity are set)")
        );
    }

    #[test]
    fn names_must_be_valid_on_the_wire() {
        let bad_header = hash_on(Some("x user"), None, false).validate().unwrap_err();
        assert_eq!(bad_header.field, "header");
        for bad in ["", "a b", "a=b", "a;b", "sé"] {
            let err = hash_on(None, Some(bad), false).validate().unwrap_err();
            assert_eq!(err.field, "cookie", "{bad:?}");
        }
        assert_eq!(
            hash_on(None, Some("__Host-sid.v2"), false).validate(),
            Ok(())
        );
        assert_eq!(hash_on(Some("X-User-Id"), None, false).validate(), Ok(()));
    }
}
