//! A rule's filters, checked and ready to apply (pure): header modifiers, redirect, URL rewrite
//! and request mirror, as the Gateway API defines them.

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::http_route::{BackendObjectRef, HeaderModifier, HttpRouteFilter, PathModifier};
use crate::names::ServiceKey;

/// Why a filter cannot be applied; names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FilterError {
    /// The field (`filters[1].requestRedirect.statusCode`).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

fn error(field: impl Into<String>, reason: impl Into<String>) -> FilterError {
    FilterError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A checked filter.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteFilter {
    /// Changes to the request's headers.
    RequestHeaders(HeaderEdits),
    /// Changes to the response's headers.
    ResponseHeaders(HeaderEdits),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Change host or path before forwarding.
    Rewrite(Rewrite),
    /// Copy a share of the requests to another service.
    Mirror(Mirror),
}

/// Header changes, applied in the order remove, set, add... as the Gateway API orders them:
/// `set` replaces, `add` appends, `remove` deletes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeaderEdits {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderEdits {
    fn new(m: &HeaderModifier, field: &str) -> Result<Self, FilterError> {
        let pairs = |list: &[super::http_route::HeaderValuePair], part: &str| {
            list.iter()
                .enumerate()
                .map(|(i, p)| {
                    let at = format!("{field}.{part}[{i}]");
                    let name = HeaderName::from_bytes(p.name.as_bytes()).map_err(|_| {
                        error(
                            format!("{at}.name"),
                            format!("{:?} is not a header name", p.name),
                        )
                    })?;
                    let value = HeaderValue::from_str(&p.value)
                        .map_err(|_| error(format!("{at}.value"), "is not a valid header value"))?;
                    Ok((name, value))
                })
                .collect::<Result<Vec<_>, FilterError>>()
        };
        let remove = m
            .remove
            .iter()
            .enumerate()
            .map(|(i, n)| {
                HeaderName::from_bytes(n.as_bytes()).map_err(|_| {
                    error(
                        format!("{field}.remove[{i}]"),
                        format!("{n:?} is not a header name"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            set: pairs(&m.set, "set")?,
            add: pairs(&m.add, "add")?,
            remove,
        })
    }

    /// Applies the changes to `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// How a redirect or rewrite changes the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathChange {
    /// The whole path becomes this.
    Full(String),
    /// The matched `PathPrefix` is replaced by this.
    Prefix(String),
}

impl PathChange {
    fn new(m: &PathModifier, field: &str) -> Result<Self, FilterError> {
        match (
            m.kind.as_str(),
            &m.replace_full_path,
            &m.replace_prefix_match,
        ) {
            ("ReplaceFullPath", Some(p), None) => Ok(Self::Full(p.clone())),
            ("ReplacePrefixMatch", None, Some(p)) => Ok(Self::Prefix(p.clone())),
            ("ReplaceFullPath", _, _) => Err(error(
                format!("{field}.replaceFullPath"),
                "type ReplaceFullPath needs replaceFullPath and only it",
            )),
            ("ReplacePrefixMatch", _, _) => Err(error(
                format!("{field}.replacePrefixMatch"),
                "type ReplacePrefixMatch needs replacePrefixMatch and only it",
            )),
            (other, _, _) => Err(error(
                format!("{field}.type"),
                format!("{other:?} is not one of ReplaceFullPath, ReplacePrefixMatch"),
            )),
        }
    }

    /// The new path of `path` (with its query kept), given the prefix its match matched.
    pub fn apply(&self, path: &str, matched_prefix: Option<&str>) -> String {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let new = match self {
            Self::Full(p) => p.clone(),
            Self::Prefix(replacement) => {
                let prefix = matched_prefix.unwrap_or("/").trim_end_matches('/');
                let rest = path.get(prefix.len()..).unwrap_or("");
                let replacement = replacement.trim_end_matches('/');
                match (replacement.is_empty(), rest.is_empty()) {
                    (true, true) => "/".to_string(),
                    (true, false) => rest.to_string(),
                    (false, _) => format!("{replacement}{rest}"),
                }
            }
        };
        match query {
            Some(q) => format!("{new}?{q}"),
            None => new,
        }
    }
}

/// A redirect answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// The scheme, or the request's.
    pub scheme: Option<String>,
    /// The host, or the request's.
    pub hostname: Option<String>,
    /// The port, or the scheme's default (or the request's when neither changes).
    pub port: Option<u16>,
    /// The path change.
    pub path: Option<PathChange>,
    /// The status.
    pub status: StatusCode,
}

impl Redirect {
    /// The `Location` for a request to `host` (its authority, possibly with a port) at
    /// `path` (with query), which matched `matched_prefix`.
    pub fn location(&self, host: &str, path: &str, matched_prefix: Option<&str>) -> String {
        let scheme = self.scheme.as_deref().unwrap_or("http");
        let (req_host, req_port) = match host.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => (h, p.parse::<u16>().ok()),
            _ => (host, None),
        };
        let host = self.hostname.as_deref().unwrap_or(req_host);
        // A scheme change without a port goes to that scheme's default port; otherwise the
        // request's port is kept.
        let port = match (self.port, &self.scheme) {
            (Some(p), _) => Some(p),
            (None, Some(_)) => None,
            (None, None) => req_port,
        };
        let default_port = if scheme == "https" { 443 } else { 80 };
        let authority = match port {
            Some(p) if p != default_port => format!("{host}:{p}"),
            _ => host.to_string(),
        };
        let path = match &self.path {
            Some(change) => change.apply(path, matched_prefix),
            None => path.to_string(),
        };
        format!("{scheme}://{authority}{path}")
    }
}

/// A URL rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// The new host.
    pub hostname: Option<String>,
    /// The path change.
    pub path: Option<PathChange>,
}

/// A request mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// The service mirrored to.
    pub service: ServiceKey,
    /// Requests mirrored, per million.
    pub per_million: u32,
}

/// A service reference of a route (Services only), in the route's namespace by default.
pub fn service_ref(
    r: &BackendObjectRef,
    route_namespace: &str,
    field: &str,
) -> Result<ServiceKey, FilterError> {
    if r.group.as_deref().is_some_and(|g| !g.is_empty())
        || r.kind.as_deref().is_some_and(|k| k != "Service")
    {
        return Err(error(
            field,
            format!(
                "{}/{} is not a Service (the mesh routes to Services only)",
                r.group.as_deref().unwrap_or(""),
                r.kind.as_deref().unwrap_or("")
            ),
        ));
    }
    let namespace = r.namespace.as_deref().unwrap_or(route_namespace);
    ServiceKey::new(&r.name, namespace).map_err(|e| error(format!("{field}.name"), e.to_string()))
}

impl RouteFilter {
    /// Checks `filter` (at `field`) of a route in `namespace`.
    pub fn new(
        filter: &HttpRouteFilter,
        namespace: &str,
        field: &str,
    ) -> Result<Self, FilterError> {
        let set = [
            filter.request_header_modifier.is_some(),
            filter.response_header_modifier.is_some(),
            filter.request_redirect.is_some(),
            filter.url_rewrite.is_some(),
            filter.request_mirror.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if set != 1 {
            return Err(error(
                field,
                format!(
                    "exactly one filter must be set, the one `type: {}` names",
                    filter.kind
                ),
            ));
        }
        let missing = |name: &str| {
            error(
                format!("{field}.{name}"),
                format!("type {} needs {name}", filter.kind),
            )
        };
        match filter.kind.as_str() {
            "RequestHeaderModifier" => {
                let m = filter
                    .request_header_modifier
                    .as_ref()
                    .ok_or_else(|| missing("requestHeaderModifier"))?;
                Ok(Self::RequestHeaders(HeaderEdits::new(
                    m,
                    &format!("{field}.requestHeaderModifier"),
                )?))
            }
            "ResponseHeaderModifier" => {
                let m = filter
                    .response_header_modifier
                    .as_ref()
                    .ok_or_else(|| missing("responseHeaderModifier"))?;
                Ok(Self::ResponseHeaders(HeaderEdits::new(
                    m,
                    &format!("{field}.responseHeaderModifier"),
                )?))
            }
            "RequestRedirect" => {
                let r = filter
                    .request_redirect
                    .as_ref()
                    .ok_or_else(|| missing("requestRedirect"))?;
                let at = format!("{field}.requestRedirect");
                let status = match r.status_code {
                    301 | 302 | 303 | 307 | 308 => {
                        StatusCode::from_u16(r.status_code).expect("a redirect status")
                    }
                    other => {
                        return Err(error(
                            format!("{at}.statusCode"),
                            format!("{other} is not one of 301, 302, 303, 307, 308"),
                        ));
                    }
                };
                if let Some(s) = &r.scheme
                    && s != "http"
                    && s != "https"
                {
                    return Err(error(
                        format!("{at}.scheme"),
                        format!("{s:?} is not http or https"),
                    ));
                }
                let path = r
                    .path
                    .as_ref()
                    .map(|p| PathChange::new(p, &format!("{at}.path")))
                    .transpose()?;
                Ok(Self::Redirect(Redirect {
                    scheme: r.scheme.clone(),
                    hostname: r.hostname.clone(),
                    port: r.port,
                    path,
                    status,
                }))
            }
            "URLRewrite" => {
                let r = filter
                    .url_rewrite
                    .as_ref()
                    .ok_or_else(|| missing("urlRewrite"))?;
                let path = r
                    .path
                    .as_ref()
                    .map(|p| PathChange::new(p, &format!("{field}.urlRewrite.path")))
                    .transpose()?;
                if let Some(h) = &r.hostname
                    && HeaderValue::from_str(h).is_err()
                {
                    return Err(error(
                        format!("{field}.urlRewrite.hostname"),
                        format!("{h:?} is not a host name"),
                    ));
                }
                Ok(Self::Rewrite(Rewrite {
                    hostname: r.hostname.clone(),
                    path,
                }))
            }
            "RequestMirror" => {
                let m = filter
                    .request_mirror
                    .as_ref()
                    .ok_or_else(|| missing("requestMirror"))?;
                let at = format!("{field}.requestMirror");
                let service = service_ref(&m.backend_ref, namespace, &format!("{at}.backendRef"))?;
                let per_million = match (m.percent, &m.fraction) {
                    (Some(_), Some(_)) => {
                        return Err(error(at, "percent and fraction are exclusive"));
                    }
                    (Some(p), None) if p <= 100 => p * 10_000,
                    (Some(p), None) => {
                        return Err(error(format!("{at}.percent"), format!("{p} is above 100")));
                    }
                    (None, Some(f)) if f.denominator > 0 && f.numerator <= f.denominator => {
                        (u64::from(f.numerator) * 1_000_000 / u64::from(f.denominator)) as u32
                    }
                    (None, Some(_)) => {
                        return Err(error(
                            format!("{at}.fraction"),
                            "needs 0 <= numerator <= denominator and denominator > 0",
                        ));
                    }
                    (None, None) => 1_000_000,
                };
                Ok(Self::Mirror(Mirror {
                    service,
                    per_million,
                }))
            }
            other => Err(error(
                format!("{field}.type"),
                format!(
                    "{other:?} is not one of RequestHeaderModifier, ResponseHeaderModifier, \
                     RequestRedirect, URLRewrite, RequestMirror"
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_replacement_keeps_the_rest_and_the_query() {
        let change = PathChange::Prefix("/v2".into());
        assert_eq!(
            change.apply("/api/users?x=1", Some("/api")),
            "/v2/users?x=1"
        );
        assert_eq!(change.apply("/api", Some("/api/")), "/v2");
        let to_root = PathChange::Prefix("/".into());
        assert_eq!(to_root.apply("/api/users", Some("/api")), "/users");
        assert_eq!(to_root.apply("/api", Some("/api")), "/");
        assert_eq!(PathChange::Full("/x".into()).apply("/a/b?q", None), "/x?q");
    }

    #[test]
    fn redirect_location_follows_scheme_host_and_port_rules() {
        let r = Redirect {
            scheme: Some("https".into()),
            hostname: None,
            port: None,
            path: None,
            status: StatusCode::FOUND,
        };
        assert_eq!(
            r.location("echo.demo:8080", "/a?b", None),
            "https://echo.demo/a?b"
        );
        let r = Redirect {
            scheme: None,
            hostname: Some("other".into()),
            port: None,
            path: Some(PathChange::Full("/new".into())),
            status: StatusCode::MOVED_PERMANENTLY,
        };
        assert_eq!(
            r.location("echo.demo:8080", "/a", None),
            "http://other:8080/new"
        );
    }

    #[test]
    fn header_edits_set_add_and_remove() {
        let m = HeaderModifier {
            set: vec![super::super::http_route::HeaderValuePair {
                name: "x-a".into(),
                value: "1".into(),
            }],
            add: vec![super::super::http_route::HeaderValuePair {
                name: "x-b".into(),
                value: "2".into(),
            }],
            remove: vec!["x-c".into()],
        };
        let edits = HeaderEdits::new(&m, "f").unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("0"));
        h.insert("x-b", HeaderValue::from_static("1"));
        h.insert("x-c", HeaderValue::from_static("gone"));
        edits.apply(&mut h);
        assert_eq!(h.get_all("x-a").iter().collect::<Vec<_>>(), ["1"]);
        assert_eq!(h.get_all("x-b").iter().collect::<Vec<_>>(), ["1", "2"]);
        assert!(h.get("x-c").is_none());
    }

    #[test]
    fn filters_with_the_wrong_shape_name_their_field() {
        let f: HttpRouteFilter =
            serde_saphyr::from_str("type: RequestRedirect\nrequestRedirect: {statusCode: 305}\n")
                .unwrap();
        let e = RouteFilter::new(&f, "demo", "filters[0]").unwrap_err();
        assert_eq!(e.field, "filters[0].requestRedirect.statusCode");
        let f: HttpRouteFilter =
            serde_saphyr::from_str("type: URLRewrite\nrequestRedirect: {statusCode: 301}\n")
                .unwrap();
        let e = RouteFilter::new(&f, "demo", "filters[0]").unwrap_err();
        assert_eq!(e.field, "filters[0].urlRewrite");
        let f: HttpRouteFilter = serde_saphyr::from_str(
            "type: RequestMirror\nrequestMirror: {backendRef: {name: shadow}, percent: 10}\n",
        )
        .unwrap();
        assert_eq!(
            RouteFilter::new(&f, "demo", "f").unwrap(),
            RouteFilter::Mirror(Mirror {
                service: ServiceKey::new("shadow", "demo").unwrap(),
                per_million: 100_000
            })
        );
    }
}
