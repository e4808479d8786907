//! Service names and how an HTTP authority maps to a service (and optionally a cluster).
//!
//! Accepted forms, with or without a port:
//! `<svc>.<ns>.svc.clusterset.local` (wherever it runs), `<svc>.<ns>.svc.<cluster>.clusterset.local`
//! (one cluster), `<svc>.<ns>.svc.cluster.local` and `<svc>.<ns>` (the same as clusterset).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The suffix of the names that resolve across the cluster-set (MCS API convention).
pub const CLUSTERSET_SUFFIX: &str = "clusterset.local";

/// A service identified by name and namespace, written `name.namespace`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// Service name, e.g. `echo`.
    pub name: String,
    /// Namespace, e.g. `demo`.
    pub namespace: String,
}

impl ServiceKey {
    /// Builds a key, checking both parts are DNS labels.
    pub fn new(name: &str, namespace: &str) -> Result<Self, NameError> {
        check_label(name)?;
        check_label(namespace)?;
        Ok(Self {
            name: name.to_string(),
            namespace: namespace.to_string(),
        })
    }

    /// The name that resolves wherever the service runs.
    pub fn clusterset_host(&self) -> String {
        format!("{}.{}.svc.{CLUSTERSET_SUFFIX}", self.name, self.namespace)
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.name, self.namespace)
    }
}

impl FromStr for ServiceKey {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('.') {
            Some((name, ns)) if !ns.contains('.') => ServiceKey::new(name, ns),
            _ => Err(NameError::Malformed(s.to_string())),
        }
    }
}

impl Serialize for ServiceKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ServiceKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a request is aimed: a service, and optionally one specific cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    /// The service.
    pub service: ServiceKey,
    /// Set when the authority named a cluster (`<svc>.<ns>.svc.<cluster>.clusterset.local`).
    pub cluster: Option<String>,
}

/// Errors in names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not one of the accepted forms.
    #[error(
        "`{0}` is not a mesh service name; use <svc>.<ns>.svc.clusterset.local, \
         <svc>.<ns>.svc.<cluster>.clusterset.local, <svc>.<ns>.svc.cluster.local or <svc>.<ns>"
    )]
    Malformed(String),
    /// A label that is not a DNS label (lowercase letters, digits, '-', at most 63).
    #[error(
        "`{0}` is not a valid DNS label (lowercase letters, digits and '-', 1 to 63 characters)"
    )]
    BadLabel(String),
}

/// Checks that `label` is an RFC 1123 DNS label.
pub fn check_label(label: &str) -> Result<(), NameError> {
    let ok = !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(NameError::BadLabel(label.to_string()))
    }
}

/// Maps an HTTP authority (host, optionally with a port) to a destination.
pub fn parse_authority(authority: &str) -> Result<Destination, NameError> {
    let host = strip_port(authority)
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let malformed = || NameError::Malformed(authority.to_string());
    let labels: Vec<&str> = host.split('.').collect();
    let (name, ns, cluster) = match labels.as_slice() {
        [name, ns] => (*name, *ns, None),
        [name, ns, "svc", "clusterset", "local"] => (*name, *ns, None),
        [name, ns, "svc", "cluster", "local"] => (*name, *ns, None),
        [name, ns, "svc", cluster, "clusterset", "local"] => {
            check_label(cluster).map_err(|_| malformed())?;
            (*name, *ns, Some(cluster.to_string()))
        }
        _ => return Err(malformed()),
    };
    let service = ServiceKey::new(name, ns).map_err(|_| malformed())?;
    Ok(Destination { service, cluster })
}

fn strip_port(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(a: &str) -> Destination {
        parse_authority(a).unwrap()
    }

    #[test]
    fn accepted_forms_map_to_the_service() {
        let echo = ServiceKey::new("echo", "demo").unwrap();
        for a in [
            "echo.demo.svc.clusterset.local",
            "echo.demo.svc.clusterset.local:80",
            "echo.demo.svc.cluster.local",
            "echo.demo",
            "ECHO.demo:8080",
            "echo.demo.svc.clusterset.local.",
        ] {
            assert_eq!(dest(a).service, echo, "{a}");
            assert_eq!(dest(a).cluster, None, "{a}");
        }
        let d = dest("echo.demo.svc.eu-central.clusterset.local");
        assert_eq!(d.service, echo);
        assert_eq!(d.cluster.as_deref(), Some("eu-central"));
    }

    #[test]
    fn other_names_are_refused_with_the_forms_listed() {
        for a in [
            "www.example.com:80",
            "echo",
            "a.b.c",
            "echo.demo.svc",
            "127.0.0.1:80",
            "",
        ] {
            let err = parse_authority(a).unwrap_err();
            assert!(err.to_string().contains("clusterset.local"), "{a}: {err}");
        }
    }

    #[test]
    fn service_key_round_trips_through_text() {
        let k: ServiceKey = "echo.demo".parse().unwrap();
        assert_eq!(k.to_string(), "echo.demo");
        assert_eq!(k.clusterset_host(), "echo.demo.svc.clusterset.local");
        assert!("echo".parse::<ServiceKey>().is_err());
        assert!("Echo_1.demo".parse::<ServiceKey>().is_err());
        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(json, "\"echo.demo\"");
    }
}
