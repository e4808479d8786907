//! Policy objects as users write them: Kubernetes-shaped YAML documents (`apiVersion`, `kind`,
//! `metadata`, `spec`), several per file separated by `---`. In local mode the controller reads
//! them from the files given to it (`mesh up --policy FILE...`); every error names the file,
//! the line and the field. In Kubernetes mode the same specs come from the API server.
//!
//! Kinds: the Gateway API's `HTTPRoute` (`gateway.networking.k8s.io/v1`).

use serde::Deserialize;

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
}

impl PolicySpec {
    /// The kind, as documents spell it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::HttpRoute(_) => "HTTPRoute",
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
        let (meta, spec) = match (kind.as_str(), api_version.as_str()) {
            ("HTTPRoute", GATEWAY_API_VERSION) => {
                let d: Document<HttpRouteSpec> = serde_saphyr::from_str(doc).map_err(syntax)?;
                (d.metadata, PolicySpec::HttpRoute(d.spec))
            }
            ("HTTPRoute", other) => {
                return Err(at(
                    start,
                    format!(
                        "field `apiVersion`: HTTPRoute is read as {GATEWAY_API_VERSION}, not {other:?}"
                    ),
                ));
            }
            (other, _) => {
                return Err(at(
                    start,
                    format!("field `kind`: {other:?} is not a policy kind (HTTPRoute)"),
                ));
            }
        };
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
}
