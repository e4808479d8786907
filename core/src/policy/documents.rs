//! Policy objects as users write them: Kubernetes-shaped YAML documents (`apiVersion`, `kind`,
//! `metadata`, `spec`), several per file separated by `---`. In local mode the controller reads
//! them from the files given to it (`mesh up --policy FILE...`); every error names the file,
//! the line and the field. In Kubernetes mode the same specs come from the API server.
//!
//! Kinds: the Gateway API's `HTTPRoute` and `GRPCRoute` (`gateway.networking.k8s.io/v1`; a
//! `GRPCRoute` is held as the `HTTPRoute` it means, see `grpc_route`), and ours
//! (`mesh.dev/v1alpha1`, see `attachment`): `FaultPolicy`, `RateLimitPolicy`, `CachePolicy`,
//! `BackendPolicy`, `AuthorizationPolicy` (see `authorization`). Our kinds are also validated here (target and body), so a bad value is
//! refused at load with the line it is written on; references to other objects are resolved
//! later, by `compile`.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::attachment::{
    AttachmentError, BackendPolicy, CachePolicy, FaultPolicy, MESH_API_VERSION, PolicyTarget,
    PolicyTargetRef, RateLimitPolicy,
};
use super::authorization::AuthorizationPolicy;
use super::field_lines::field_line;
use super::grpc_route::GrpcRouteAsHttp;
use super::http_route::{GATEWAY_API_VERSION, HttpRouteSpec};

/// Where an object was read: a file and the line its document starts on, or a Kubernetes
/// object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRef {
    /// The file (or `kubernetes`).
    pub file: String,
    /// 1-based line of the document's start (0 for Kubernetes objects).
    pub line: u64,
}

impl std::fmt::Display for SourceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}: line {}", self.file, self.line)
        }
    }
}

/// An error in a policy document; names where and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct DocumentError {
    /// Where.
    pub location: SourceRef,
    /// What (with the field).
    pub message: String,
}

/// The identity of an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectMeta {
    /// The name.
    pub name: String,
    /// The namespace (`default` when unset, as `kubectl apply` does).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Labels (kept for Kubernetes parity; not used).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Annotations (kept for Kubernetes parity; not used).
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

fn default_namespace() -> String {
    "default".into()
}

/// What an object says.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicySpec {
    /// A Gateway API `HTTPRoute`.
    HttpRoute(HttpRouteSpec),
    /// Our `FaultPolicy`.
    FaultPolicy(FaultPolicy),
    /// Our `RateLimitPolicy`.
    RateLimitPolicy(RateLimitPolicy),
    /// Our `CachePolicy`.
    CachePolicy(CachePolicy),
    /// Our `BackendPolicy`.
    BackendPolicy(BackendPolicy),
    /// Our `AuthorizationPolicy`.
    AuthorizationPolicy(AuthorizationPolicy),
}

/// Reads a whole document of one kind.
type Reader = fn(&str) -> Result<(ObjectMeta, PolicySpec), serde_saphyr::Error>;

/// Every kind read: its name, its `apiVersion` and its reader, in the order error messages
/// list them.
const KINDS: [(&str, &str, Reader); 7] = [
    ("HTTPRoute", GATEWAY_API_VERSION, |d| {
        read(d, PolicySpec::HttpRoute)
    }),
    ("GRPCRoute", GATEWAY_API_VERSION, |d| {
        read(d, |g: GrpcRouteAsHttp| PolicySpec::HttpRoute(g.0))
    }),
    ("FaultPolicy", MESH_API_VERSION, |d| {
        read(d, PolicySpec::FaultPolicy)
    }),
    ("RateLimitPolicy", MESH_API_VERSION, |d| {
        read(d, PolicySpec::RateLimitPolicy)
    }),
    ("CachePolicy", MESH_API_VERSION, |d| {
        read(d, PolicySpec::CachePolicy)
    }),
    ("BackendPolicy", MESH_API_VERSION, |d| {
        read(d, PolicySpec::BackendPolicy)
    }),
    ("AuthorizationPolicy", MESH_API_VERSION, |d| {
        read(d, PolicySpec::AuthorizationPolicy)
    }),
];

impl PolicySpec {
    /// The kind, as documents spell it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::HttpRoute(_) => "HTTPRoute",
            Self::FaultPolicy(_) => "FaultPolicy",
            Self::RateLimitPolicy(_) => "RateLimitPolicy",
            Self::CachePolicy(_) => "CachePolicy",
            Self::BackendPolicy(_) => "BackendPolicy",
            Self::AuthorizationPolicy(_) => "AuthorizationPolicy",
        }
    }

    /// A policy attachment's `targetRef` (`None` for a route).
    pub fn target_ref(&self) -> Option<&PolicyTargetRef> {
        match self {
            Self::HttpRoute(_) => None,
            Self::FaultPolicy(p) => Some(&p.target_ref),
            Self::RateLimitPolicy(p) => Some(&p.target_ref),
            Self::CachePolicy(p) => Some(&p.target_ref),
            Self::BackendPolicy(p) => Some(&p.target_ref),
            Self::AuthorizationPolicy(p) => Some(&p.target_ref),
        }
    }

    /// A policy attachment's target and body, checked (`None` for a route, which `compile`
    /// checks against the services it refers to).
    pub fn validate_attachment(&self) -> Option<Result<PolicyTarget, AttachmentError>> {
        match self {
            Self::HttpRoute(_) => None,
            Self::FaultPolicy(p) => Some(p.validate()),
            Self::RateLimitPolicy(p) => Some(p.validate()),
            Self::CachePolicy(p) => Some(p.validate()),
            Self::BackendPolicy(p) => Some(p.validate()),
            Self::AuthorizationPolicy(p) => Some(p.validate()),
        }
    }
}

/// One policy object.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyObject {
    /// Where it was read.
    pub source: SourceRef,
    /// Its name and namespace.
    pub meta: ObjectMeta,
    /// When it was created (Unix seconds; for files, the order of the documents, so earlier
    /// documents win precedence ties as older objects do).
    pub created: i64,
    /// What it says.
    pub spec: PolicySpec,
}

impl PolicyObject {
    /// `<kind> <namespace>/<name>`.
    pub fn display_name(&self) -> String {
        format!(
            "{} {}/{}",
            self.spec.kind(),
            self.meta.namespace,
            self.meta.name
        )
    }
}

/// Just what picks the document's type.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    api_version: Option<String>,
    kind: Option<String>,
}

/// A whole document of one kind.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Document<S> {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: ObjectMeta,
    spec: S,
}

/// Reads every document of `text` (the file `file`); `first_created` orders them after the
/// documents of files read before.
pub fn parse_documents(
    text: &str,
    file: &str,
    first_created: i64,
) -> Result<Vec<PolicyObject>, DocumentError> {
    let mut objects = Vec::new();
    for (start, doc) in split_documents(text) {
        if doc.trim().is_empty()
            || doc
                .lines()
                .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            continue;
        }
        let at = |line: u64, message: String| DocumentError {
            location: SourceRef {
                file: file.to_string(),
                line,
            },
            message,
        };
        let syntax = |e: serde_saphyr::Error| {
            let line = e.location().map(|l| start + l.line() - 1).unwrap_or(start);
            at(line, strip_location(&e.without_snippet().to_string()))
        };
        let header: Header = serde_saphyr::from_str(doc).map_err(syntax)?;
        let (api_version, kind) = match (header.api_version, header.kind) {
            (Some(a), Some(k)) => (a, k),
            _ => {
                return Err(at(
                    start,
                    "a policy document needs apiVersion and kind".into(),
                ));
            }
        };
        let created = first_created + objects.len() as i64;
        let Some((kind, expected, reader)) = KINDS.iter().find(|(k, _, _)| *k == kind) else {
            let names: Vec<&str> = KINDS.iter().map(|(k, _, _)| *k).collect();
            return Err(at(
                start,
                format!(
                    "field `kind`: {kind:?} is not a policy kind ({})",
                    names.join(", ")
                ),
            ));
        };
        if api_version != *expected {
            return Err(at(
                start,
                format!("field `apiVersion`: {kind} is read as {expected}, not {api_version:?}"),
            ));
        }
        let (meta, spec) = reader(doc).map_err(syntax)?;
        if let Some(Err(e)) = spec.validate_attachment() {
            let field = format!("spec.{}", e.field);
            let line = field_line(doc, &field).map_or(start, |l| start + l - 1);
            return Err(at(line, format!("field `{field}`: {}", e.reason)));
        }
        crate::names::check_label(&meta.namespace)
            .map_err(|e| at(start, format!("field `metadata.namespace`: {e}")))?;
        objects.push(PolicyObject {
            source: SourceRef {
                file: file.to_string(),
                line: start,
            },
            meta,
            created,
            spec,
        });
    }
    Ok(objects)
}

/// The metadata and spec of a whole document whose spec is an `S`.
fn read<S: DeserializeOwned>(
    doc: &str,
    wrap: fn(S) -> PolicySpec,
) -> Result<(ObjectMeta, PolicySpec), serde_saphyr::Error> {
    let d: Document<S> = serde_saphyr::from_str(doc)?;
    Ok((d.metadata, wrap(d.spec)))
}

/// The documents of a YAML stream with the 1-based line each starts on (after its `---`).
fn split_documents(text: &str) -> Vec<(u64, &str)> {
    let mut docs = Vec::new();
    let mut start_byte = 0;
    let mut start_line = 1u64;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            docs.push((start_line, &text[start_byte..offset]));
            start_byte = offset + line.len();
            start_line = i as u64 + 2;
        }
        offset += line.len();
    }
    docs.push((start_line, &text[start_byte..]));
    docs
}

/// The parser's message without its trailing `at line N column M` (the caller says where).
fn strip_location(message: &str) -> String {
    let first = message
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ");
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: a, namespace: demo}
spec:
  parentRefs: [{kind: Service, name: echo}]
---
# the second
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: b}
spec:
  rules:
  - matches: [{path: {type: Exact, value: /x}}]
";

    #[test]
    fn documents_keep_their_line_and_order() {
        let objects = parse_documents(TWO, "p.yaml", 100).unwrap();
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0].source.line, 1);
        assert_eq!(objects[1].source.line, 7);
        assert_eq!(objects[1].meta.namespace, "default");
        assert_eq!(objects[1].created, 101);
        assert_eq!(objects[0].display_name(), "HTTPRoute demo/a");
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let bad = TWO.replace("type: Exact", "type: Exact, valeu: 1");
        let e = parse_documents(&bad, "p.yaml", 0).unwrap_err().to_string();
        assert!(
            e.starts_with("p.yaml: line 13:") && e.contains("valeu"),
            "{e}"
        );
        let bad = TWO.replace(
            "kind: HTTPRoute\nmetadata: {name: b}",
            "kind: TCPRoute\nmetadata: {name: b}",
        );
        let e = parse_documents(&bad, "p.yaml", 0).unwrap_err().to_string();
        assert!(e.starts_with("p.yaml: line 7: field `kind`"), "{e}");
        let e = parse_documents("kind: HTTPRoute\n", "p.yaml", 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("apiVersion and kind"), "{e}");
    }

    const OURS: &str = "\
apiVersion: mesh.dev/v1alpha1
kind: FaultPolicy
metadata: {name: f, namespace: demo}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: echo-split, sectionName: api}
  abort: {httpStatus: 503, percentage: 20}
---
apiVersion: mesh.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: r, namespace: demo}
spec:
  targetRef: {group: '', kind: Service, name: echo}
  total:
    requestsPerSecond: 100
  mode: shadow
---
apiVersion: mesh.dev/v1alpha1
kind: CachePolicy
metadata: {name: c, namespace: demo}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: echo-split}
  methods: [GET, HEAD]
---
apiVersion: mesh.dev/v1alpha1
kind: BackendPolicy
metadata: {name: b, namespace: demo}
spec:
  targetRef: {group: '', kind: Service, name: echo}
  loadBalancer: roundRobin
";

    #[test]
    fn our_kinds_are_read_with_their_target_and_body() {
        let objects = parse_documents(OURS, "p.yaml", 0).unwrap();
        let kinds: Vec<&str> = objects.iter().map(|o| o.spec.kind()).collect();
        assert_eq!(
            kinds,
            [
                "FaultPolicy",
                "RateLimitPolicy",
                "CachePolicy",
                "BackendPolicy"
            ]
        );
        let PolicySpec::FaultPolicy(fault) = &objects[0].spec else {
            panic!("{:?}", objects[0].spec)
        };
        assert_eq!(fault.target_ref.section_name.as_deref(), Some("api"));
        assert_eq!(fault.fault().abort.unwrap().http_status, 503);
        let PolicySpec::RateLimitPolicy(limit) = &objects[1].spec else {
            panic!("{:?}", objects[1].spec)
        };
        assert_eq!(limit.rate_limit().total.unwrap().requests_per_second, 100);
        assert_eq!(
            objects[3].spec.validate_attachment(),
            Some(Ok(PolicyTarget::Service {
                name: "echo".into()
            }))
        );
        assert_eq!(objects[3].display_name(), "BackendPolicy demo/b");
        assert_eq!(objects[3].source.line, 24);
    }

    #[test]
    fn our_kinds_refuse_unknown_fields_and_bad_values_at_their_line() {
        let e = |text: &str| parse_documents(text, "p.yaml", 0).unwrap_err().to_string();
        let unknown = e(&OURS.replace("mode: shadow", "mdoe: shadow"));
        assert!(
            unknown.starts_with("p.yaml: line 15:") && unknown.contains("mdoe"),
            "{unknown}"
        );
        let zero = e(&OURS.replace("requestsPerSecond: 100", "requestsPerSecond: 0"));
        assert_eq!(
            zero,
            "p.yaml: line 14: field `spec.total.requestsPerSecond`: must be at least 1"
        );
        let post = e(&OURS.replace("[GET, HEAD]", "[GET, POST]"));
        assert!(
            post.starts_with(
                "p.yaml: line 22: field `spec.methods[1]`: a cache rule on a non-cacheable method"
            ),
            "{post}"
        );
        let target = e(&OURS.replace(
            "targetRef: {group: '', kind: Service, name: echo}\n  loadBalancer",
            "targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: x}\n  loadBalancer",
        ));
        assert!(
            target.starts_with("p.yaml: line 28: field `spec.targetRef.kind`: \"HTTPRoute\""),
            "{target}"
        );
        let nothing = e(&OURS.replace("  abort: {httpStatus: 503, percentage: 20}\n", ""));
        assert!(
            nothing.starts_with("p.yaml: line 4: field `spec.delay`: a fault needs"),
            "{nothing}"
        );
        let version = e(&OURS.replace(
            "apiVersion: mesh.dev/v1alpha1\nkind: CachePolicy",
            "apiVersion: mesh.dev/v1\nkind: CachePolicy",
        ));
        assert_eq!(
            version,
            "p.yaml: line 17: field `apiVersion`: CachePolicy is read as mesh.dev/v1alpha1, not \"mesh.dev/v1\""
        );
        let missing = e(&OURS.replace(
            "  targetRef: {group: '', kind: Service, name: echo}\n  total",
            "  total",
        ));
        assert!(missing.contains("targetRef"), "{missing}");
    }

    const AUTHZ: &str = "\
apiVersion: mesh.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: frontend-only, namespace: demo}
spec:
  targetRef: {group: '', kind: Service, name: echo}
  action: DENY
  rules:
  - from:
    - source:
        principals: ['spiffe://eu-central.mesh/ns/web/sa/frontend']
    to:
    - operation: {methods: [GET], paths: ['/api/*']}
";

    #[test]
    fn authorization_policies_are_read_and_refused_at_the_field_line() {
        let objects = parse_documents(AUTHZ, "p.yaml", 0).unwrap();
        let PolicySpec::AuthorizationPolicy(p) = &objects[0].spec else {
            panic!("{:?}", objects[0].spec)
        };
        assert_eq!(
            p.action(),
            crate::policy::authorization::AuthorizationAction::Deny
        );
        assert_eq!(
            objects[0].display_name(),
            "AuthorizationPolicy demo/frontend-only"
        );
        let e = |text: &str| parse_documents(text, "p.yaml", 0).unwrap_err().to_string();
        let principal =
            e(&AUTHZ.replace("'spiffe://eu-central.mesh/ns/web/sa/frontend'", "frontend"));
        assert!(
            principal.starts_with(
                "p.yaml: line 10: field `spec.rules[0].from[0].source.principals[0]`: \"frontend\" is not a full SPIFFE ID"
            ),
            "{principal}"
        );
        let path = e(&AUTHZ.replace("'/api/*'", "'/a*b'"));
        assert!(
            path.starts_with("p.yaml: line 12: field `spec.rules[0].to[0].operation.paths[0]`"),
            "{path}"
        );
        let action = e(&AUTHZ.replace("action: DENY", "action: CUSTOM"));
        assert!(action.starts_with("p.yaml: line 6:"), "{action}");
    }
}
