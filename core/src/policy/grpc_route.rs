//! The Gateway API's `GRPCRoute` (`gateway.networking.k8s.io/v1`) as a mesh route (GAMMA). A
//! gRPC call is an HTTP/2 POST to `/<package.Service>/<Method>`, so a `GRPCRoute` is read as
//! the `HTTPRoute` it means ([`GrpcRouteSpec::to_http_route`]) and from then on compiled,
//! distributed and applied as one: one model, one matcher, one precedence order.
//!
//! - `matches[].method` (`type: Exact`, the default): `service` and `method` give the path
//!   Exact `/<service>/<method>`; `service` alone the PathPrefix `/<service>` (whole segments,
//!   so `/pkg.Echo` never matches `/pkg.EchoV2/...`); `method` alone the regular expression
//!   `/[^/]+/<method>`. `type: RegularExpression`: the path regex `/<service>/<method>` of
//!   the two expressions (either absent: any name). A match without `method` matches every
//!   call, as the spec says.
//! - `matches[].headers`, `filters` (RequestHeaderModifier, ResponseHeaderModifier,
//!   RequestMirror: the ones `GRPCRoute` has), `backendRefs`, `parentRefs`: as in `HTTPRoute`.
//! - Not in `GRPCRoute` v1, so refused as unknown fields: `timeouts`, `retry` (a route of
//!   calls that need them is an `HTTPRoute` on the same paths).
//!
//! Precedence follows the `HTTPRoute` it becomes (Exact before prefix, longer prefixes first),
//! which orders method matches before service matches as `GRPCRoute` asks. Errors and
//! conditions name the object as an `HTTPRoute`. Pure.

use serde::{Deserialize, Serialize};

use super::http_route::{
    BackendRef, HttpPathMatch, HttpRouteFilter, HttpRouteMatch, HttpRouteRule, HttpRouteSpec,
    NamedValueMatch, ParentRef,
};

/// A `GRPCRoute`'s `spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrpcRouteSpec {
    /// The Services the route attaches to (GAMMA: `kind: Service`).
    #[serde(default)]
    pub parent_refs: Vec<ParentRef>,
    /// Refused when set, as for `HTTPRoute` (GAMMA).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// The rules; the default is one rule that forwards every call to the parent.
    #[serde(default)]
    pub rules: Vec<GrpcRouteRule>,
}

/// A `rules[]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrpcRouteRule {
    /// The rule's name (`sectionName` of policies that target it).
    #[serde(default)]
    pub name: Option<String>,
    /// The matches; none: every call.
    #[serde(default)]
    pub matches: Vec<GrpcRouteMatch>,
    /// The filters.
    #[serde(default)]
    pub filters: Vec<HttpRouteFilter>,
    /// The backends.
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
    /// Refused when set, as for `HTTPRoute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_persistence: Option<serde_json::Value>,
}

/// A `matches[]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrpcRouteMatch {
    /// The gRPC service and method; none: any call.
    #[serde(default)]
    pub method: Option<GrpcMethodMatch>,
    /// Header (metadata) matches.
    #[serde(default)]
    pub headers: Vec<NamedValueMatch>,
}

/// A `method` match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrpcMethodMatch {
    /// `Exact` (the default) or `RegularExpression`.
    #[serde(default = "default_method_type", rename = "type")]
    pub kind: String,
    /// The fully qualified service (`mesh.demo.Echo`); absent: any.
    #[serde(default)]
    pub service: Option<String>,
    /// The method (`Say`); absent: any.
    #[serde(default)]
    pub method: Option<String>,
}

fn default_method_type() -> String {
    "Exact".into()
}

/// A `GRPCRoute` that cannot be read as a route: the field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct GrpcRouteError {
    /// The field, as a path in the spec (`rules[0].matches[1].method.service`).
    pub field: String,
    /// Why.
    pub reason: String,
}

/// A `GRPCRoute` spec read as the `HTTPRoute` it means: what documents hold once read.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "GrpcRouteSpec")]
pub struct GrpcRouteAsHttp(pub HttpRouteSpec);

impl TryFrom<GrpcRouteSpec> for GrpcRouteAsHttp {
    type Error = GrpcRouteError;

    fn try_from(spec: GrpcRouteSpec) -> Result<Self, GrpcRouteError> {
        spec.to_http_route().map(Self)
    }
}

impl GrpcRouteSpec {
    /// The `HTTPRoute` this route means (see the module doc); the first field that cannot be
    /// mapped, with why.
    pub fn to_http_route(&self) -> Result<HttpRouteSpec, GrpcRouteError> {
        let mut rules = Vec::with_capacity(self.rules.len());
        for (r, rule) in self.rules.iter().enumerate() {
            for (f, filter) in rule.filters.iter().enumerate() {
                if !matches!(
                    filter.kind.as_str(),
                    "RequestHeaderModifier" | "ResponseHeaderModifier" | "RequestMirror"
                ) {
                    return Err(GrpcRouteError {
                        field: format!("rules[{r}].filters[{f}].type"),
                        reason: format!(
                            "{:?} is not a GRPCRoute filter (RequestHeaderModifier, \
                             ResponseHeaderModifier, RequestMirror)",
                            filter.kind
                        ),
                    });
                }
            }
            let matches = rule
                .matches
                .iter()
                .enumerate()
                .map(|(m, one)| {
                    let path = match &one.method {
                        Some(method) => Some(path_match(
                            method,
                            &format!("rules[{r}].matches[{m}].method"),
                        )?),
                        None => None,
                    };
                    Ok(HttpRouteMatch {
                        path,
                        headers: one.headers.clone(),
                        ..HttpRouteMatch::default()
                    })
                })
                .collect::<Result<Vec<_>, GrpcRouteError>>()?;
            rules.push(HttpRouteRule {
                name: rule.name.clone(),
                matches,
                filters: rule.filters.clone(),
                backend_refs: rule.backend_refs.clone(),
                timeouts: None,
                retry: None,
                session_persistence: rule.session_persistence.clone(),
            });
        }
        Ok(HttpRouteSpec {
            parent_refs: self.parent_refs.clone(),
            hostnames: self.hostnames.clone(),
            rules,
        })
    }
}

/// The path match of a `method` match at `field`.
fn path_match(method: &GrpcMethodMatch, field: &str) -> Result<HttpPathMatch, GrpcRouteError> {
    let error = |sub: &str, reason: String| GrpcRouteError {
        field: format!("{field}{sub}"),
        reason,
    };
    let service = method.service.as_deref();
    let name = method.method.as_deref();
    match method.kind.as_str() {
        "Exact" => {
            if let Some(s) = service
                && !is_service_name(s)
            {
                return Err(error(
                    ".service",
                    format!("{s:?} is not a gRPC service name (`package.Service`)"),
                ));
            }
            if let Some(m) = name
                && !is_identifier(m)
            {
                return Err(error(".method", format!("{m:?} is not a gRPC method name")));
            }
            let (kind, value) = match (service, name) {
                (Some(s), Some(m)) => ("Exact", format!("/{s}/{m}")),
                (Some(s), None) => ("PathPrefix", format!("/{s}")),
                (None, Some(m)) => ("RegularExpression", format!("/[^/]+/{}", regex::escape(m))),
                (None, None) => {
                    return Err(error(
                        "",
                        "names neither a service nor a method (leave `method` out to match \
                         every call)"
                            .into(),
                    ));
                }
            };
            Ok(HttpPathMatch {
                kind: kind.into(),
                value,
            })
        }
        "RegularExpression" => Ok(HttpPathMatch {
            kind: "RegularExpression".into(),
            value: format!(
                "/{}/{}",
                service.unwrap_or("[^/]+"),
                name.unwrap_or("[^/]+")
            ),
        }),
        other => Err(error(
            ".type",
            format!("{other:?} is not a method match type (Exact, RegularExpression)"),
        )),
    }
}

/// `package.Service`: dot-separated identifiers (protobuf's full name, as the spec checks it).
fn is_service_name(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(is_identifier)
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(yaml: &str) -> Result<HttpRouteSpec, String> {
        let spec: GrpcRouteSpec = serde_saphyr::from_str(yaml).map_err(|e| e.to_string())?;
        spec.to_http_route().map_err(|e| e.to_string())
    }

    fn paths(spec: &HttpRouteSpec) -> Vec<Option<(String, String)>> {
        spec.rules
            .iter()
            .flat_map(|r| &r.matches)
            .map(|m| m.path.as_ref().map(|p| (p.kind.clone(), p.value.clone())))
            .collect()
    }

    #[test]
    fn method_matches_become_paths() {
        let spec = route(
            "
parentRefs: [{kind: Service, name: echo}]
rules:
- matches:
  - method: {service: mesh.demo.Echo, method: Say}
  - method: {service: mesh.demo.Echo}
  - method: {method: Count}
  - method: {type: RegularExpression, service: 'mesh\\.demo\\..*'}
  - headers: [{name: x-tenant, value: a}]
  backendRefs: [{name: echo-canary}]
",
        )
        .unwrap();
        let pair = |k: &str, v: &str| Some((k.to_string(), v.to_string()));
        assert_eq!(
            paths(&spec),
            [
                pair("Exact", "/mesh.demo.Echo/Say"),
                pair("PathPrefix", "/mesh.demo.Echo"),
                pair("RegularExpression", "/[^/]+/Count"),
                pair("RegularExpression", "/mesh\\.demo\\..*/[^/]+"),
                None,
            ]
        );
        assert_eq!(spec.rules[0].matches[4].headers[0].name, "x-tenant");
        assert_eq!(spec.rules[0].backend_refs[0].target.name, "echo-canary");
        assert_eq!(spec.parent_refs[0].name, "echo");
    }

    #[test]
    fn what_grpc_routes_do_not_have_is_refused_naming_the_field() {
        let err = route("rules: [{matches: [{method: {service: 'not a name'}}]}]").unwrap_err();
        assert!(err.contains("rules[0].matches[0].method.service"), "{err}");
        let err = route("rules: [{matches: [{method: {method: Say/x}}]}]").unwrap_err();
        assert!(err.contains("rules[0].matches[0].method.method"), "{err}");
        let err = route("rules: [{matches: [{method: {}}]}]").unwrap_err();
        assert!(err.contains("neither a service nor a method"), "{err}");
        let err =
            route("rules: [{matches: [{method: {type: Prefix, service: a.B}}]}]").unwrap_err();
        assert!(err.contains("method.type"), "{err}");
        let err = route(
            "rules: [{filters: [{type: RequestRedirect, requestRedirect: {statusCode: 301}}]}]",
        )
        .unwrap_err();
        assert!(err.contains("rules[0].filters[0].type"), "{err}");
        // GRPCRoute v1 has no timeouts: an unknown field.
        let err = route("rules: [{timeouts: {request: 1s}}]").unwrap_err();
        assert!(err.contains("timeouts"), "{err}");
    }

    #[test]
    fn the_route_matches_the_calls_it_names() {
        use super::super::route_match::RequestView;
        // The paths are HTTPRoute paths: checked by the same matcher as any route.
        let spec = route(
            "rules: [{matches: [{method: {service: mesh.demo.Echo, method: Say}}, {method: {method: Count}}]}]",
        )
        .unwrap();
        let say = spec.rules[0].matches[0].compile().unwrap();
        let count = spec.rules[0].matches[1].compile().unwrap();
        let headers = http::HeaderMap::new();
        let view = |path: &'static str| RequestView {
            method: &http::Method::POST,
            path,
            query: None,
            headers: &headers,
        };
        assert!(say.matches(&view("/mesh.demo.Echo/Say")));
        assert!(!say.matches(&view("/mesh.demo.Echo/Count")));
        assert!(!say.matches(&view("/mesh.demo.Echo/SayMore")));
        assert!(count.matches(&view("/other.Svc/Count")));
        assert!(!count.matches(&view("/other.Svc/CountAll")));
        assert!(!count.matches(&view("/a/b/Count")));
    }

    #[test]
    fn documents_read_a_grpc_route_as_an_http_route_and_name_the_line_of_an_error() {
        use super::super::documents::{PolicySpec, parse_documents};
        let good = "\
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo-grpc, namespace: demo}
spec:
  parentRefs: [{kind: Service, name: echo}]
  rules:
  - matches: [{method: {service: mesh.demo.Echo, method: Count}}]
    backendRefs: [{name: echo}]
";
        let objects = parse_documents(good, "routes.yaml", 0).unwrap();
        let PolicySpec::HttpRoute(spec) = &objects[0].spec else {
            panic!("{:?}", objects[0].spec);
        };
        let path = spec.rules[0].matches[0].path.as_ref().unwrap();
        assert_eq!(
            (path.kind.as_str(), path.value.as_str()),
            ("Exact", "/mesh.demo.Echo/Count")
        );
        let bad = good.replace("method: Count", "method: 'Count/x'");
        let err = parse_documents(&bad, "routes.yaml", 0).unwrap_err();
        assert!(err.to_string().starts_with("routes.yaml: line "), "{err}");
        assert!(err.to_string().contains("method.method"), "{err}");
    }
}
