//! The Gateway API's `HTTPRoute` (`gateway.networking.k8s.io/v1`) as a mesh route (GAMMA): the
//! fields a user writes, as serde types that refuse what they do not know, and their checks.
//! The same types read a YAML document of a local policy file and the `spec` of a Kubernetes
//! object, and travel (compiled, see `service_policy`) in sidecar snapshots.
//!
//! Supported: `parentRefs` to Services; `matches` (path Exact / PathPrefix /
//! RegularExpression, headers, query parameters, method); the filters RequestHeaderModifier,
//! ResponseHeaderModifier, RequestRedirect, URLRewrite and RequestMirror; weighted
//! `backendRefs` to Services; `timeouts`; `retry`. Refused with a reason: `hostnames` (GAMMA:
//! mesh routes bind to a Service, not to host names), per-backend filters, `sessionPersistence`
//! (consistent hashing in a `BackendPolicy` is the mesh's session affinity).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::route_match::{MatchError, PathMatch, Pattern, RouteMatch, ValueMatch};

/// The API version of routes this module reads.
pub const GATEWAY_API_VERSION: &str = "gateway.networking.k8s.io/v1";

/// An `HTTPRoute`'s `spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteSpec {
    /// The Services the route attaches to (GAMMA: `kind: Service`).
    #[serde(default)]
    pub parent_refs: Vec<ParentRef>,
    /// Refused when set: mesh routes do not match host names (GAMMA).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// The rules; the Gateway API's default is one rule that forwards to the parent.
    #[serde(default)]
    pub rules: Vec<HttpRouteRule>,
}

/// A `parentRefs[]` entry: the Service (and optionally one of its ports) a route governs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ParentRef {
    /// API group: `""` (core) for a Service.
    #[serde(default)]
    pub group: Option<String>,
    /// Kind: `Service` (the only parent of a mesh route).
    #[serde(default)]
    pub kind: Option<String>,
    /// The Service's name.
    pub name: String,
    /// Its namespace; the route's own when unset.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The Service port the route is for; every port when unset.
    #[serde(default)]
    pub port: Option<u16>,
    /// The port's name (the same choice as `port`).
    #[serde(default)]
    pub section_name: Option<String>,
}

/// A `rules[]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteRule {
    /// The rule's name (what policies target with `sectionName`).
    #[serde(default)]
    pub name: Option<String>,
    /// Alternatives (OR); none means `PathPrefix /`.
    #[serde(default)]
    pub matches: Vec<HttpRouteMatch>,
    /// Filters applied to matching requests, in order.
    #[serde(default)]
    pub filters: Vec<HttpRouteFilter>,
    /// Where matching requests go, by weight; none means the parent Service.
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
    /// Request timeouts.
    #[serde(default)]
    pub timeouts: Option<HttpRouteTimeouts>,
    /// Retries.
    #[serde(default)]
    pub retry: Option<HttpRouteRetry>,
    /// Refused when set (see the module doc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_persistence: Option<serde_json::Value>,
}

/// A `matches[]` entry as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteMatch {
    /// The path match.
    #[serde(default)]
    pub path: Option<HttpPathMatch>,
    /// Header matches.
    #[serde(default)]
    pub headers: Vec<NamedValueMatch>,
    /// Query parameter matches.
    #[serde(default)]
    pub query_params: Vec<NamedValueMatch>,
    /// The method.
    #[serde(default)]
    pub method: Option<String>,
}

/// A path match as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpPathMatch {
    /// `Exact`, `PathPrefix` (the default) or `RegularExpression`.
    #[serde(default = "default_path_type", rename = "type")]
    pub kind: String,
    /// The value; `/` by default.
    #[serde(default = "default_path_value")]
    pub value: String,
}

fn default_path_type() -> String {
    "PathPrefix".into()
}

fn default_path_value() -> String {
    "/".into()
}

/// A header or query parameter match as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamedValueMatch {
    /// `Exact` (the default) or `RegularExpression`.
    #[serde(default = "default_value_type", rename = "type")]
    pub kind: String,
    /// The header or parameter name.
    pub name: String,
    /// The value.
    pub value: String,
}

fn default_value_type() -> String {
    "Exact".into()
}

/// A `filters[]` entry: `type` names which of the other fields is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteFilter {
    /// `RequestHeaderModifier`, `ResponseHeaderModifier`, `RequestRedirect`, `URLRewrite` or
    /// `RequestMirror`.
    #[serde(rename = "type")]
    pub kind: String,
    /// For `RequestHeaderModifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HeaderModifier>,
    /// For `ResponseHeaderModifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifier>,
    /// For `RequestRedirect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<RequestRedirect>,
    /// For `URLRewrite`.
    #[serde(
        default,
        rename = "urlRewrite",
        skip_serializing_if = "Option::is_none"
    )]
    pub url_rewrite: Option<UrlRewrite>,
    /// For `RequestMirror`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<RequestMirror>,
}

/// Header changes: `set` replaces, `add` appends, `remove` deletes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeaderModifier {
    /// Headers set, replacing any value.
    #[serde(default)]
    pub set: Vec<HeaderValuePair>,
    /// Headers added beside any value.
    #[serde(default)]
    pub add: Vec<HeaderValuePair>,
    /// Header names removed.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// A header name and value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderValuePair {
    /// The name.
    pub name: String,
    /// The value.
    pub value: String,
}

/// A path change of a redirect or rewrite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PathModifier {
    /// `ReplaceFullPath` or `ReplacePrefixMatch`.
    #[serde(rename = "type")]
    pub kind: String,
    /// For `ReplaceFullPath`.
    #[serde(default)]
    pub replace_full_path: Option<String>,
    /// For `ReplacePrefixMatch` (the rule's matches must all be `PathPrefix`).
    #[serde(default)]
    pub replace_prefix_match: Option<String>,
}

/// `RequestRedirect`: answer with a redirect instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestRedirect {
    /// `http` or `https`; the request's when unset.
    #[serde(default)]
    pub scheme: Option<String>,
    /// The host; the request's when unset.
    #[serde(default)]
    pub hostname: Option<String>,
    /// The path change.
    #[serde(default)]
    pub path: Option<PathModifier>,
    /// The port.
    #[serde(default)]
    pub port: Option<u16>,
    /// 301, 302 (the default), 303, 307 or 308.
    #[serde(default = "default_redirect_status")]
    pub status_code: u16,
}

fn default_redirect_status() -> u16 {
    302
}

/// `URLRewrite`: change the host or path before forwarding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UrlRewrite {
    /// The new host (`:authority` / `Host` to the backend).
    #[serde(default)]
    pub hostname: Option<String>,
    /// The path change.
    #[serde(default)]
    pub path: Option<PathModifier>,
}

/// `RequestMirror`: a copy of a share of the requests to another Service, whose answers are
/// discarded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestMirror {
    /// The Service mirrored to.
    pub backend_ref: BackendObjectRef,
    /// Percent of requests mirrored (all when neither this nor `fraction` is set).
    #[serde(default)]
    pub percent: Option<u32>,
    /// Share of requests mirrored, as a fraction.
    #[serde(default)]
    pub fraction: Option<Fraction>,
}

/// `numerator / denominator` (denominator 100 by default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fraction {
    /// The numerator.
    pub numerator: u32,
    /// The denominator.
    #[serde(default = "default_denominator")]
    pub denominator: u32,
}

fn default_denominator() -> u32 {
    100
}

/// A Service named by a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackendObjectRef {
    /// API group: `""` for a Service.
    #[serde(default)]
    pub group: Option<String>,
    /// `Service` (the default).
    #[serde(default)]
    pub kind: Option<String>,
    /// The Service's name.
    pub name: String,
    /// Its namespace; the route's own when unset.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The Service port.
    #[serde(default)]
    pub port: Option<u16>,
}

/// A `backendRefs[]` entry: a Service and its weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackendRef {
    /// The Service.
    #[serde(flatten)]
    pub target: BackendObjectRef,
    /// Its share: weight / sum of the rule's weights (1 by default, 0 to 1,000,000).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Refused when set (see the module doc).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<serde_json::Value>,
}

fn default_weight() -> u32 {
    1
}

/// Largest backend weight the Gateway API allows.
pub const MAX_WEIGHT: u32 = 1_000_000;

/// `timeouts`, in the Gateway API's duration syntax (`1h2m3s4ms`); `0s` disables one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteTimeouts {
    /// Bounds the whole request, every try included, until the response head.
    #[serde(default)]
    pub request: Option<String>,
    /// Bounds each try until its response head; at most `request`.
    #[serde(default)]
    pub backend_request: Option<String>,
}

/// `retry` (experimental channel of the Gateway API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteRetry {
    /// Statuses retried (400-599); connection errors are always retried.
    #[serde(default)]
    pub codes: Vec<u16>,
    /// Tries after the first one.
    #[serde(default)]
    pub attempts: Option<u32>,
    /// The least wait before a retry (Gateway API duration).
    #[serde(default)]
    pub backoff: Option<String>,
}

/// Parses the Gateway API's duration syntax: one to four `<1-5 digits><h|m|s|ms>` parts.
pub fn parse_gateway_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a Gateway API duration (like 10s, 1m30s, 500ms)");
    let mut rest = text;
    let mut total = Duration::ZERO;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return Err(bad());
        };
        rest = &rest[len..];
        total += unit * n as u32;
        parts += 1;
    }
    if parts == 0 || parts > 4 {
        return Err(bad());
    }
    Ok(total)
}

impl HttpRouteMatch {
    /// The match, checked and compiled (regular expressions within their size bound).
    pub fn compile(&self) -> Result<RouteMatch, MatchError> {
        let path = match &self.path {
            None => None,
            Some(p) => Some(match p.kind.as_str() {
                "Exact" => PathMatch::exact(&p.value)?,
                "PathPrefix" => PathMatch::prefix(&p.value)?,
                "RegularExpression" => PathMatch::regex(&p.value)?,
                other => {
                    return Err(MatchError {
                        field: "path.type".into(),
                        reason: format!(
                            "{other:?} is not one of Exact, PathPrefix, RegularExpression"
                        ),
                    });
                }
            }),
        };
        let headers = self
            .headers
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let field = format!("headers[{i}]");
                let name =
                    http::HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| MatchError {
                        field: format!("{field}.name"),
                        reason: format!("{:?} is not a header name", h.name),
                    })?;
                Ok((name, value_match(h, &field)?))
            })
            .collect::<Result<_, MatchError>>()?;
        let query = self
            .query_params
            .iter()
            .enumerate()
            .map(|(i, q)| {
                Ok((
                    q.name.clone(),
                    value_match(q, &format!("queryParams[{i}]"))?,
                ))
            })
            .collect::<Result<_, MatchError>>()?;
        let method = match &self.method {
            None => None,
            Some(m) => Some(
                http::Method::from_bytes(m.as_bytes()).map_err(|_| MatchError {
                    field: "method".into(),
                    reason: format!("{m:?} is not an HTTP method"),
                })?,
            ),
        };
        let m = RouteMatch {
            path,
            headers,
            query,
            method,
        };
        m.validate()?;
        Ok(m)
    }
}

fn value_match(m: &NamedValueMatch, field: &str) -> Result<ValueMatch, MatchError> {
    match m.kind.as_str() {
        "Exact" => Ok(ValueMatch::Exact(m.value.clone())),
        "RegularExpression" => Ok(ValueMatch::Regex(Pattern::new(
            &m.value,
            &format!("{field}.value"),
        )?)),
        other => Err(MatchError {
            field: format!("{field}.type"),
            reason: format!("{other:?} is not one of Exact, RegularExpression"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_durations_parse_and_refuse() {
        assert_eq!(parse_gateway_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(
            parse_gateway_duration("1m30s500ms"),
            Ok(Duration::from_millis(90_500))
        );
        assert_eq!(parse_gateway_duration("0s"), Ok(Duration::ZERO));
        for bad in [
            "",
            "10",
            "s",
            "1.5s",
            "123456s",
            "1h1m1s1ms1s",
            "10 s",
            "-1s",
        ] {
            assert!(parse_gateway_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_route_reads_from_yaml_and_refuses_unknown_fields() {
        let spec: HttpRouteSpec = serde_saphyr::from_str(
            "parentRefs: [{kind: Service, name: echo}]\n\
             rules:\n\
             - matches: [{path: {type: Exact, value: /v2}, headers: [{name: x-canary, value: 'yes'}]}]\n\
             \x20 backendRefs: [{name: echo, weight: 90}, {name: echo-canary, weight: 10}]\n\
             \x20 timeouts: {request: 2s}\n",
        )
        .unwrap();
        assert_eq!(spec.rules[0].backend_refs[1].weight, 10);
        let m = spec.rules[0].matches[0].compile().unwrap();
        assert_eq!(m.path, Some(PathMatch::exact("/v2").unwrap()));
        let e = serde_saphyr::from_str::<HttpRouteSpec>("rules: [{matchez: []}]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("matchez"), "{e}");
    }

    #[test]
    fn bad_matches_name_their_field() {
        let m = HttpRouteMatch {
            headers: vec![NamedValueMatch {
                kind: "RegularExpression".into(),
                name: "x-a".into(),
                value: "(".into(),
            }],
            ..Default::default()
        };
        assert_eq!(m.compile().unwrap_err().field, "headers[0].value");
        let m = HttpRouteMatch {
            method: Some("GE T".into()),
            ..Default::default()
        };
        assert_eq!(m.compile().unwrap_err().field, "method");
    }
}
