//! What a user writes for a local rate limit, in the shape of Linkerd's
//! `HTTPLocalRateLimitPolicy` (`total`, `identity`, `overrides[]`) plus a shadow mode (Envoy's
//! `filter_enabled` without `filter_enforced`), and the checks made at load.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::identity::SpiffeId;

/// Largest `requestsPerSecond`: a sidecar does not serve a million requests per second, so a
/// higher limit would never bite; the bound also keeps a token's refill time (one
/// millionth of a second or more) exact to better than 0.1% in whole nanoseconds.
pub const MAX_REQUESTS_PER_SECOND: u32 = 1_000_000;

/// Why a rate limit spec is refused; names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct RateLimitError {
    /// The field, as the spec spells it (`total.requestsPerSecond`, `overrides[1].identities[0]`).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl RateLimitError {
    /// The same error with `parent` in front of the field (`rateLimit` gives
    /// `rateLimit.total.requestsPerSecond`), for a caller that embeds the spec.
    pub fn within(self, parent: &str) -> Self {
        Self {
            field: format!("{parent}.{}", self.field),
            reason: self.reason,
        }
    }
}

fn error(field: impl Into<String>, reason: impl Into<String>) -> RateLimitError {
    RateLimitError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Whether rejections are enforced or only counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RateLimitMode {
    /// Requests over the limit are refused (429). The default: a limit is written to be applied.
    #[default]
    Enforce,
    /// Requests over the limit are counted as "would reject" and served, to size a limit on
    /// live traffic before enforcing it.
    Shadow,
}

/// A sustained rate and the burst allowed on top of it (a token bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rate {
    /// Tokens refilled per second, continuously (at least 1).
    pub requests_per_second: u32,
    /// Bucket size: requests that may arrive at once after a quiet spell (at least 1).
    /// Default `requestsPerSecond`: one second's worth, which is what "N per second" means to
    /// most users and what Linkerd's proxy allows (its `governor` quota per second has a burst
    /// equal to the rate), so a policy moved from Linkerd limits the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

impl Rate {
    /// A rate whose burst is one second's worth.
    pub fn per_second(requests_per_second: u32) -> Self {
        Self {
            requests_per_second,
            burst: None,
        }
    }

    /// The bucket size, with the default applied.
    pub fn burst_or_default(&self) -> u32 {
        self.burst.unwrap_or(self.requests_per_second)
    }

    /// Checks the bounds, naming fields under `field`.
    fn validate(&self, field: &str) -> Result<(), RateLimitError> {
        check_requests_per_second(self.requests_per_second, field)?;
        check_burst(self.burst, field)
    }
}

fn check_requests_per_second(rps: u32, field: &str) -> Result<(), RateLimitError> {
    if rps == 0 {
        return Err(error(
            format!("{field}.requestsPerSecond"),
            "must be at least 1",
        ));
    }
    if rps > MAX_REQUESTS_PER_SECOND {
        return Err(error(
            format!("{field}.requestsPerSecond"),
            format!("must be at most {MAX_REQUESTS_PER_SECOND}"),
        ));
    }
    Ok(())
}

fn check_burst(burst: Option<u32>, field: &str) -> Result<(), RateLimitError> {
    if burst == Some(0) {
        return Err(error(format!("{field}.burst"), "must be at least 1"));
    }
    Ok(())
}

/// A rate for named caller identities, replacing the per-identity rate for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimitOverride {
    /// Tokens refilled per second for each of these callers (at least 1).
    pub requests_per_second: u32,
    /// Bucket size of each of these callers; default `requestsPerSecond` (as [`Rate::burst`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// The callers, as SPIFFE IDs (`spiffe://<trust-domain>/ns/<ns>/sa/<sa>`); each caller
    /// has its own bucket at this rate, they do not share one.
    pub identities: Vec<String>,
}

impl RateLimitOverride {
    /// The rate of each named caller.
    pub fn rate(&self) -> Rate {
        Rate {
            requests_per_second: self.requests_per_second,
            burst: self.burst,
        }
    }
}

/// A local rate limit for one route or inbound server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimitSpec {
    /// One bucket for all callers together, checked first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<Rate>,
    /// One bucket per caller identity; callers without an identity share one bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Rate>,
    /// Rates for named identities, replacing `identity` for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<RateLimitOverride>,
    /// Enforce or only count; default `enforce`.
    #[serde(default)]
    pub mode: RateLimitMode,
}

impl RateLimitSpec {
    /// Checks rates (at least 1 per second, bursts at least 1), override identities (valid
    /// SPIFFE IDs, each named once) and that the spec limits something.
    pub fn validate(&self) -> Result<(), RateLimitError> {
        if self.total.is_none() && self.identity.is_none() && self.overrides.is_empty() {
            return Err(error(
                "total",
                "a rate limit needs at least one of total, identity or overrides",
            ));
        }
        if let Some(total) = &self.total {
            total.validate("total")?;
        }
        if let Some(identity) = &self.identity {
            identity.validate("identity")?;
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, o) in self.overrides.iter().enumerate() {
            let field = format!("overrides[{i}]");
            o.rate().validate(&field)?;
            if o.identities.is_empty() {
                return Err(error(
                    format!("{field}.identities"),
                    "must name at least one identity",
                ));
            }
            for (j, id) in o.identities.iter().enumerate() {
                let id_field = format!("{field}.identities[{j}]");
                let parsed: SpiffeId = id.parse().map_err(|e| error(&id_field, format!("{e}")))?;
                // Callers are matched by their URI text, so only the canonical spelling can
                // ever match.
                if parsed.uri() != *id {
                    return Err(error(&id_field, format!("{id:?} is not in canonical form")));
                }
                if let Some(first) = seen.insert(id.as_str(), i) {
                    let where_ = if first == i {
                        "earlier in this list".to_string()
                    } else {
                        format!("in overrides[{first}]")
                    };
                    return Err(error(id_field, format!("{id} is already named {where_}")));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<RateLimitSpec, String> {
        serde_saphyr::from_str::<RateLimitSpec>(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_the_user_shape_with_defaults() {
        let spec = parse(
            "total: {requestsPerSecond: 100}\n\
             identity: {requestsPerSecond: 10, burst: 20}\n\
             overrides:\n\
             - requestsPerSecond: 50\n\
             \x20 identities: [spiffe://us-east.mesh/ns/demo/sa/batch]\n",
        )
        .unwrap();
        assert_eq!(spec.mode, RateLimitMode::Enforce);
        assert_eq!(spec.total.unwrap().burst_or_default(), 100);
        assert_eq!(spec.identity.unwrap().burst_or_default(), 20);
        assert_eq!(spec.overrides[0].rate(), Rate::per_second(50));
        spec.validate().unwrap();
        let shadow = parse("total: {requestsPerSecond: 1}\nmode: shadow\n").unwrap();
        assert_eq!(shadow.mode, RateLimitMode::Shadow);
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(
            serde_json::from_str::<RateLimitSpec>(&json).unwrap(),
            spec,
            "travels in JSON snapshots"
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = parse("total: {requestsPerSecond: 1, brust: 2}\n").unwrap_err();
        assert!(err.contains("brust"), "{err}");
        assert!(parse("totl: {requestsPerSecond: 1}\n").is_err());
    }

    #[test]
    fn bad_values_are_refused_naming_the_field() {
        let field_of = |yaml: &str| parse(yaml).unwrap().validate().unwrap_err().to_string();
        assert_eq!(
            field_of("total: {requestsPerSecond: 0}\n"),
            "total.requestsPerSecond: must be at least 1"
        );
        assert_eq!(
            field_of("identity: {requestsPerSecond: 5, burst: 0}\n"),
            "identity.burst: must be at least 1"
        );
        assert!(
            field_of("total: {requestsPerSecond: 2000000}\n")
                .starts_with("total.requestsPerSecond: must be at most")
        );
        assert!(field_of("mode: shadow\n").starts_with("total: a rate limit needs"));
        assert_eq!(
            field_of("overrides: [{requestsPerSecond: 0, identities: [spiffe://a.mesh/x]}]\n"),
            "overrides[0].requestsPerSecond: must be at least 1"
        );
        assert_eq!(
            field_of("overrides: [{requestsPerSecond: 1, identities: []}]\n"),
            "overrides[0].identities: must name at least one identity"
        );
        assert!(
            field_of("overrides: [{requestsPerSecond: 1, identities: [batch]}]\n")
                .starts_with("overrides[0].identities[0]: `batch` is not a SPIFFE ID")
        );
        assert!(
            field_of("overrides: [{requestsPerSecond: 1, identities: [spiffe://a.mesh/x/]}]\n")
                .starts_with("overrides[0].identities[0]:")
        );
        assert_eq!(
            field_of(
                "overrides:\n\
                 - {requestsPerSecond: 1, identities: [spiffe://a.mesh/x]}\n\
                 - {requestsPerSecond: 2, identities: [spiffe://a.mesh/y, spiffe://a.mesh/x]}\n"
            ),
            "overrides[1].identities[1]: spiffe://a.mesh/x is already named in overrides[0]"
        );
        let nested = RateLimitSpec {
            total: Some(Rate::per_second(0)),
            identity: None,
            overrides: vec![],
            mode: RateLimitMode::Enforce,
        };
        assert_eq!(
            nested
                .validate()
                .unwrap_err()
                .within("rateLimit")
                .to_string(),
            "rateLimit.total.requestsPerSecond: must be at least 1"
        );
    }
}
