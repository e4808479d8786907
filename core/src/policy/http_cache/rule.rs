//! What a user writes to turn the response cache on for one route, and the checks made at load.
//!
//! ```yaml
//! cache:
//!   maxEntryBytes: 1048576     # largest stored answer (body + headers + key)
//!   allowAuthorized: false     # answers to requests with Authorization
//!   heuristicFraction: 0.1     # of the time since Last-Modified, when no explicit freshness
//!   heuristicCap: 24h
//!   methods: [GET, HEAD]
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default `maxEntryBytes`, 1 MiB: the sidecar buffers a whole answer before storing it, so the
/// bound is also the memory one in-flight request may hold; API answers and small assets fit
/// far below it, and with a store of tens of MiB one large object cannot flush the whole cache.
pub const DEFAULT_MAX_ENTRY_BYTES: u64 = 1024 * 1024;
/// Largest `maxEntryBytes` accepted, 64 MiB: every entry is buffered in the sidecar's memory,
/// and a sidecar is sized in tens of MiB; larger objects belong in a CDN, not a mesh cache.
pub const MAX_ENTRY_BYTES_LIMIT: u64 = 64 * 1024 * 1024;
/// Default `heuristicFraction`, 10%: the value RFC 9111 section 4.2.2 gives as typical.
pub const DEFAULT_HEURISTIC_FRACTION: f64 = 0.1;
/// Default `heuristicCap`, 24 h: RFC 7234 made caches flag (warning 113) any heuristic
/// freshness beyond a day as doubtful; RFC 9111 dropped the warning, the bound stays sensible.
pub const DEFAULT_HEURISTIC_CAP: Duration = Duration::from_secs(24 * 3600);
/// The only methods whose answers this cache stores and serves (RFC 9110 also allows POST, but
/// only with a `Content-Location` naming a GET-able resource, which no mesh route relies on).
pub const CACHEABLE_METHODS: [&str; 2] = ["GET", "HEAD"];

/// Why a cache rule is refused; names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct CacheRuleError {
    /// The field, as the rule spells it (`maxEntryBytes`, `methods[1]`).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl CacheRuleError {
    /// The same error with `parent` in front of the field (`cache` gives `cache.methods[1]`),
    /// for a caller that embeds the rule.
    pub fn within(self, parent: &str) -> Self {
        Self {
            field: format!("{parent}.{}", self.field),
            reason: self.reason,
        }
    }
}

fn error(field: impl Into<String>, reason: impl Into<String>) -> CacheRuleError {
    CacheRuleError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The response cache of one route: present means on (opt-in), every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct CacheRule {
    /// Largest entry stored, counting body, headers and key; larger answers are forwarded and
    /// not stored (the sidecar may stop buffering a body once it passes this). Default 1 MiB.
    pub max_entry_bytes: u64,
    /// Whether answers to requests carrying `Authorization` may be cached: when true, as RFC
    /// 9111 section 3.5 allows (the answer says `public`, `s-maxage` or `must-revalidate`);
    /// when false such requests bypass the cache entirely. Default false: many services vary
    /// their answers by caller without saying `Vary: Authorization`, and a shared cache would
    /// hand one caller's data to another.
    pub allow_authorized: bool,
    /// Share of the time since `Last-Modified` an answer without explicit freshness is taken as
    /// fresh (0 turns heuristic freshness off). Default 0.1.
    pub heuristic_fraction: f64,
    /// Longest heuristic freshness. Default 24 h.
    #[serde(with = "humantime_serde")]
    pub heuristic_cap: Duration,
    /// The methods cached, among `GET` and `HEAD` (a `HEAD` is also answered from a stored
    /// `GET`). Default both.
    pub methods: Vec<String>,
}

impl Default for CacheRule {
    fn default() -> Self {
        Self {
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            allow_authorized: false,
            heuristic_fraction: DEFAULT_HEURISTIC_FRACTION,
            heuristic_cap: DEFAULT_HEURISTIC_CAP,
            methods: CACHEABLE_METHODS.iter().map(|m| m.to_string()).collect(),
        }
    }
}

impl CacheRule {
    /// Checks the entry bound, the heuristic fraction and that only `GET` and `HEAD` are named,
    /// each once.
    pub fn validate(&self) -> Result<(), CacheRuleError> {
        if self.max_entry_bytes == 0 {
            return Err(error(
                "maxEntryBytes",
                "must be at least 1 (remove the cache rule to turn caching off)",
            ));
        }
        if self.max_entry_bytes > MAX_ENTRY_BYTES_LIMIT {
            return Err(error(
                "maxEntryBytes",
                format!(
                    "must be at most {MAX_ENTRY_BYTES_LIMIT} (64 MiB): entries are buffered in \
                     the sidecar's memory"
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.heuristic_fraction) {
            return Err(error(
                "heuristicFraction",
                format!("must be between 0 and 1, not {}", self.heuristic_fraction),
            ));
        }
        if self.methods.is_empty() {
            return Err(error("methods", "must name GET, HEAD or both"));
        }
        for (i, method) in self.methods.iter().enumerate() {
            // Methods are case-sensitive (RFC 9110 section 9.1): `get` is another method.
            if !CACHEABLE_METHODS.contains(&method.as_str()) {
                return Err(error(
                    format!("methods[{i}]"),
                    format!(
                        "a cache rule on a non-cacheable method: {method:?} (only GET and HEAD \
                         answers are cached)"
                    ),
                ));
            }
            if self.methods[..i].contains(method) {
                return Err(error(
                    format!("methods[{i}]"),
                    format!("{method} is named twice"),
                ));
            }
        }
        Ok(())
    }

    /// Whether requests of `method` are cached under this rule.
    pub fn covers(&self, method: &http::Method) -> bool {
        self.methods.iter().any(|m| m == method.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<CacheRule, serde_saphyr::Error> {
        serde_saphyr::from_str(yaml)
    }

    #[test]
    fn an_empty_rule_takes_every_default() {
        let rule = parse("{}").unwrap();
        assert_eq!(rule, CacheRule::default());
        assert_eq!(rule.max_entry_bytes, 1 << 20);
        assert!(!rule.allow_authorized);
        assert_eq!(rule.heuristic_fraction, 0.1);
        assert_eq!(rule.heuristic_cap, Duration::from_secs(86_400));
        assert!(rule.covers(&http::Method::GET) && rule.covers(&http::Method::HEAD));
        assert!(!rule.covers(&http::Method::POST));
        assert_eq!(rule.validate(), Ok(()));
    }

    #[test]
    fn fields_are_camel_case_with_durations_in_humantime() {
        let rule = parse(
            "maxEntryBytes: 4096\nallowAuthorized: true\nheuristicFraction: 0.25\n\
             heuristicCap: 1h 30m\nmethods: [GET]\n",
        )
        .unwrap();
        assert_eq!(rule.max_entry_bytes, 4096);
        assert!(rule.allow_authorized);
        assert_eq!(rule.heuristic_fraction, 0.25);
        assert_eq!(rule.heuristic_cap, Duration::from_secs(5400));
        assert!(!rule.covers(&http::Method::HEAD));
        assert_eq!(rule.validate(), Ok(()));
        assert_eq!(
            parse("heuristicFraction: 0\n").unwrap().heuristic_fraction,
            0.0
        );
        let json = serde_json::to_string(&rule).unwrap();
        assert!(json.contains("\"maxEntryBytes\":4096"), "{json}");
        assert_eq!(serde_json::from_str::<CacheRule>(&json).unwrap(), rule);
    }

    #[test]
    fn unknown_fields_are_refused_at_parse() {
        let err = parse("maxEntryByte: 10\n").unwrap_err().to_string();
        assert!(err.contains("maxEntryByte"), "{err}");
    }

    #[test]
    fn a_rule_on_a_non_cacheable_method_is_refused_naming_the_field() {
        let rule = CacheRule {
            methods: vec!["GET".into(), "POST".into()],
            ..CacheRule::default()
        };
        let err = rule.validate().unwrap_err();
        assert_eq!(err.field, "methods[1]");
        assert!(
            err.reason
                .contains("a cache rule on a non-cacheable method"),
            "{err}"
        );
        assert_eq!(err.within("cache").field, "cache.methods[1]");
        let lower = CacheRule {
            methods: vec!["get".into()],
            ..CacheRule::default()
        };
        assert_eq!(lower.validate().unwrap_err().field, "methods[0]");
    }

    #[test]
    fn bad_values_are_refused_naming_the_field() {
        let cases = [
            (
                CacheRule {
                    max_entry_bytes: 0,
                    ..CacheRule::default()
                },
                "maxEntryBytes",
            ),
            (
                CacheRule {
                    max_entry_bytes: MAX_ENTRY_BYTES_LIMIT + 1,
                    ..CacheRule::default()
                },
                "maxEntryBytes",
            ),
            (
                CacheRule {
                    heuristic_fraction: 1.5,
                    ..CacheRule::default()
                },
                "heuristicFraction",
            ),
            (
                CacheRule {
                    heuristic_fraction: f64::NAN,
                    ..CacheRule::default()
                },
                "heuristicFraction",
            ),
            (
                CacheRule {
                    methods: vec![],
                    ..CacheRule::default()
                },
                "methods",
            ),
            (
                CacheRule {
                    methods: vec!["GET".into(), "GET".into()],
                    ..CacheRule::default()
                },
                "methods[1]",
            ),
        ];
        for (rule, field) in cases {
            assert_eq!(rule.validate().unwrap_err().field, field, "{rule:?}");
        }
        let off = CacheRule {
            heuristic_fraction: 0.0,
            heuristic_cap: Duration::ZERO,
            ..CacheRule::default()
        };
        assert_eq!(off.validate(), Ok(()), "0 turns heuristics off");
    }
}
