//! The static file backend: endpoints listed in a YAML file (VMs, services whose sidecar does
//! not register). They are always considered healthy: nothing checks them.
//!
//! ```yaml
//! - service: echo.demo
//!   address: 10.0.0.5:8443
//!   identity: spiffe://us-east.mesh/ns/demo/sa/echo
//! - service: legacy.demo        # a plain HTTP/2 (h2c) server without a sidecar:
//!   address: 10.0.0.7:8080      # sidecars of this cluster reach it without TLS,
//!   plaintext: true             # and it is not exported to other clusters
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use mesh_core::identity::SpiffeId;
use mesh_core::names::ServiceKey;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{RegistryEndpoint, ServiceRegistry};

/// An invalid static services file, located by file, line and column.
#[derive(Debug, thiserror::Error)]
#[error("{path}{}: {message}", location(*line, *column))]
pub struct StaticFileError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line, when known.
    pub line: Option<u64>,
    /// 1-based column, when known.
    pub column: Option<u64>,
    /// What is wrong, naming the field.
    pub message: String,
}

fn location(line: Option<u64>, column: Option<u64>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

/// One entry of the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StaticEntry {
    // Read as text and parsed here, so every error names its field.
    service: Spanned<String>,
    address: Spanned<String>,
    /// Required unless `plaintext` (a plaintext server presents no identity).
    #[serde(default)]
    identity: Option<Spanned<String>>,
    #[serde(default)]
    plaintext: bool,
}

/// Endpoints read from a static file at start.
#[derive(Debug)]
pub(crate) struct StaticServices {
    name: String,
    endpoints: Vec<RegistryEndpoint>,
}

impl StaticServices {
    /// Reads and validates `path`; every identity must be in `trust_domain`.
    pub(crate) fn load(path: &Path, trust_domain: &str) -> Result<Self, StaticFileError> {
        let text = std::fs::read_to_string(path).map_err(|e| StaticFileError {
            path: path.to_path_buf(),
            line: None,
            column: None,
            message: e.to_string(),
        })?;
        Self::parse(path, &text, trust_domain)
    }

    /// Parses the file's text (`path` only names it in errors).
    pub(crate) fn parse(
        path: &Path,
        text: &str,
        trust_domain: &str,
    ) -> Result<Self, StaticFileError> {
        let fail = |line: Option<u64>, column: Option<u64>, message: String| StaticFileError {
            path: path.to_path_buf(),
            line,
            column,
            message,
        };
        let entries: Vec<StaticEntry> = if text.trim().is_empty() {
            Vec::new()
        } else {
            serde_saphyr::from_str(text).map_err(|e| {
                let loc = e.location();
                let message = e.without_snippet().to_string();
                let mut message = strip_location(&message);
                if message.contains("sequence") {
                    message.push_str(
                        " (the file is a list of entries with `service: <name>.<namespace>`, \
                         `address: <ip:port>` and `identity: spiffe://...` or `plaintext: true`)",
                    );
                }
                fail(loc.map(|l| l.line()), loc.map(|l| l.column()), message)
            })?
        };
        let mut endpoints = Vec::with_capacity(entries.len());
        for entry in entries {
            let at = |s: &serde_saphyr::Location| (Some(s.line()), Some(s.column()));
            let (l, c) = at(&entry.service.referenced);
            let service: ServiceKey = entry.service.value.parse().map_err(|e| {
                fail(
                    l,
                    c,
                    format!(
                        "service: `{}` must be <name>.<namespace>: {e}",
                        entry.service.value
                    ),
                )
            })?;
            let (l, c) = at(&entry.address.referenced);
            let address: SocketAddr = entry.address.value.parse().map_err(|e| {
                fail(
                    l,
                    c,
                    format!(
                        "address: `{}` is not an ip:port address ({e})",
                        entry.address.value
                    ),
                )
            })?;
            if address.ip().is_unspecified() || address.port() == 0 {
                return Err(fail(
                    l,
                    c,
                    format!("address: {address} is not reachable (wildcard IP or port 0)"),
                ));
            }
            let identity = match (&entry.identity, entry.plaintext) {
                (Some(identity), _) => {
                    let (l, c) = at(&identity.referenced);
                    let id: SpiffeId = identity
                        .value
                        .parse()
                        .map_err(|e| fail(l, c, format!("identity: {e}")))?;
                    if id.trust_domain != trust_domain {
                        return Err(fail(
                            l,
                            c,
                            format!(
                                "identity: {id} is outside this cluster's trust domain {trust_domain}"
                            ),
                        ));
                    }
                    id.to_string()
                }
                (None, true) => String::new(),
                (None, false) => {
                    let (l, c) = at(&entry.service.referenced);
                    return Err(fail(
                        l,
                        c,
                        "missing field `identity` (required unless `plaintext: true`)".into(),
                    ));
                }
            };
            endpoints.push(RegistryEndpoint {
                service,
                address,
                identity,
                healthy: true,
                plaintext: entry.plaintext,
                spec: None,
            });
        }
        Ok(Self {
            name: format!("static file {}", path.display()),
            endpoints,
        })
    }

    /// How many endpoints the file lists.
    pub(crate) fn len(&self) -> usize {
        self.endpoints.len()
    }
}

/// serde-saphyr may append "at line L column C" to its message; the error shows the location
/// once, in front.
fn strip_location(message: &str) -> String {
    let first = message.lines().next().unwrap_or_default();
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first.to_string(),
    }
}

impl ServiceRegistry for StaticServices {
    fn name(&self) -> &str {
        &self.name
    }

    fn endpoints(&self, _now: Instant) -> Vec<RegistryEndpoint> {
        self.endpoints.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<StaticServices, StaticFileError> {
        StaticServices::parse(Path::new("services.yaml"), text, "us-east.mesh")
    }

    #[test]
    fn a_valid_file_lists_healthy_endpoints() {
        let s = parse(
            "- service: echo.demo\n  address: 10.0.0.5:8443\n  identity: spiffe://us-east.mesh/ns/demo/sa/echo\n\
             - service: db.data\n  address: 10.0.0.6:5432\n  identity: spiffe://us-east.mesh/ns/data/sa/db\n",
        )
        .unwrap();
        let eps = s.endpoints(Instant::now());
        assert_eq!(eps.len(), 2);
        assert!(eps.iter().all(|e| e.healthy));
        assert_eq!(eps[1].service.to_string(), "db.data");
        assert_eq!(parse("").unwrap().len(), 0);
    }

    #[test]
    fn unknown_fields_are_located_by_line() {
        let err = parse(
            "- service: echo.demo\n  address: 10.0.0.5:8443\n  identity: spiffe://us-east.mesh/ns/demo/sa/echo\n  weight: 3\n",
        )
        .unwrap_err();
        assert_eq!(err.line, Some(4), "{err}");
        let msg = err.to_string();
        assert!(msg.starts_with("services.yaml:4:"), "{msg}");
        assert!(msg.contains("weight"), "{msg}");
    }

    /// Wire messages ignore unknown fields (a later release may add some); a file a person
    /// writes must not: a renamed or misspelt field is refused where it is.
    #[test]
    fn a_renamed_field_is_refused_with_file_line_and_field() {
        let err = parse(
            "- service: echo.demo\n  identity: spiffe://us-east.mesh/ns/demo/sa/echo\n  addr: 10.0.0.5:8443\n",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("services.yaml:3:"), "{msg}");
        assert!(msg.contains("unknown field `addr`"), "{msg}");
    }

    #[test]
    fn bad_values_are_located_by_line_and_field() {
        let err = parse(
            "- service: echo.demo\n  address: nowhere\n  identity: spiffe://us-east.mesh/gateway\n",
        )
        .unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        assert!(err.to_string().contains("address: `nowhere`"), "{err}");
        let err = parse(
            "- service: Echo\n  address: 10.0.0.1:1\n  identity: spiffe://us-east.mesh/gateway\n",
        )
        .unwrap_err();
        assert_eq!(err.line, Some(1), "{err}");
        assert!(err.to_string().contains("service: `Echo`"), "{err}");
        let err = parse(
            "- service: echo.demo\n  address: 10.0.0.1:1\n  identity: spiffe://us-east.mesh/gateway\n\
             - service: echo.demo\n  address: 10.0.0.2:1\n  identity: spiffe://eu.mesh/gateway\n",
        )
        .unwrap_err();
        assert_eq!(err.line, Some(6), "{err}");
        assert!(
            err.to_string()
                .contains("identity: spiffe://eu.mesh/gateway is outside"),
            "{err}"
        );
        let err = parse("- service: echo.demo\n  address: 0.0.0.0:80\n  identity: spiffe://us-east.mesh/gateway\n")
            .unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        assert!(err.to_string().contains("address:"), "{err}");
        let err =
            parse("- service: echo.demo\n  identity: spiffe://us-east.mesh/gateway\n").unwrap_err();
        assert!(
            err.to_string().contains("address"),
            "missing field named: {err}"
        );
        let err = parse("service: echo.demo\n").unwrap_err();
        assert!(err.to_string().contains("list of entries"), "{err}");
    }

    #[test]
    fn plaintext_entries_need_no_identity_and_others_do() {
        let s = parse(
            "- service: legacy.demo\n  address: 10.0.0.7:8080\n  plaintext: true\n\
             - service: echo.demo\n  address: 10.0.0.5:8443\n  identity: spiffe://us-east.mesh/ns/demo/sa/echo\n",
        )
        .unwrap();
        let eps = s.endpoints(Instant::now());
        assert!(eps[0].plaintext);
        assert_eq!(eps[0].identity, "");
        assert!(!eps[1].plaintext, "plaintext defaults to false");
        let err = parse("- service: echo.demo\n  address: 10.0.0.5:8443\n").unwrap_err();
        assert_eq!(err.line, Some(1), "{err}");
        assert!(
            err.to_string()
                .contains("`identity` (required unless `plaintext: true`)"),
            "{err}"
        );
    }

    #[test]
    fn unreadable_files_name_the_path() {
        let err = StaticServices::load(Path::new("/nonexistent/services.yaml"), "us-east.mesh")
            .unwrap_err();
        assert!(
            err.to_string().starts_with("/nonexistent/services.yaml: "),
            "{err}"
        );
    }
}
