//! From a request to a destination and its route: the authority (absolute URI or Host), the
//! mesh name it carries, and what the last snapshot says about that service. The on-demand wait
//! for services not yet in the snapshot is `SidecarState::route`'s.

use http::request::Parts;
use mesh_core::api::{ServiceRoute, SidecarSnapshot};
use mesh_core::names::{Destination, parse_authority};

use super::errors::ProxyError;

/// The authority a request is aimed at: the absolute URI's (HTTP/1.1 proxy form, HTTP/2
/// `:authority`), else the Host header.
pub fn authority(parts: &Parts) -> Result<String, ProxyError> {
    if let Some(a) = parts.uri.authority() {
        return Ok(a.as_str().to_string());
    }
    parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .ok_or(ProxyError::MissingAuthority)
}

/// The destination named by `authority`.
pub fn destination(authority: &str) -> Result<Destination, ProxyError> {
    Ok(parse_authority(authority)?)
}

/// What a snapshot says about a destination.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// The service's route (the named cluster, if any, is among its localities).
    Route(&'a ServiceRoute),
    /// The controller says no cluster exports it.
    Unknown,
    /// The snapshot does not mention it: the sidecar has not asked for it yet.
    NotAsked,
}

/// Looks `dest` up in `snapshot`; a named cluster missing from the localities is an error.
pub fn lookup<'a>(
    snapshot: &'a SidecarSnapshot,
    dest: &Destination,
) -> Result<Lookup<'a>, ProxyError> {
    if let Some(route) = snapshot.services.get(&dest.service) {
        if let Some(cluster) = &dest.cluster
            && !route.localities.iter().any(|l| &l.entry.cluster == cluster)
        {
            let known: Vec<&str> = route
                .localities
                .iter()
                .map(|l| l.entry.cluster.as_str())
                .collect();
            return Err(ProxyError::UnknownCluster {
                service: dest.service.clone(),
                cluster: cluster.clone(),
                known: if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                },
            });
        }
        return Ok(Lookup::Route(route));
    }
    if snapshot.unknown.contains(&dest.service) {
        return Ok(Lookup::Unknown);
    }
    Ok(Lookup::NotAsked)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use http::{Request, StatusCode};
    use mesh_core::api::LocalityRoute;
    use mesh_core::locality::LocalityEntry;

    use super::*;

    fn parts(uri: &str, host: Option<&str>) -> Parts {
        let mut b = Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn snapshot() -> SidecarSnapshot {
        let route = ServiceRoute {
            localities: vec![LocalityRoute {
                entry: LocalityEntry {
                    cluster: "us-east".into(),
                    health: 1.0,
                    reason: String::new(),
                },
                endpoints: vec![],
            }],
        };
        SidecarSnapshot {
            version: 1,
            cluster: "us-east".into(),
            trust_bundles: vec![],
            gateway: None,
            services: BTreeMap::from([("echo.demo".parse().unwrap(), route)]),
            unknown: vec!["gone.demo".parse().unwrap()],
            epoch: 0,
            warming: false,
        }
    }

    #[test]
    fn authority_comes_from_the_absolute_uri_or_the_host_header() {
        assert_eq!(
            authority(&parts("http://echo.demo/x", Some("other"))).unwrap(),
            "echo.demo"
        );
        assert_eq!(
            authority(&parts("/x", Some("echo.demo:80"))).unwrap(),
            "echo.demo:80"
        );
        assert!(matches!(
            authority(&parts("/x", None)),
            Err(ProxyError::MissingAuthority)
        ));
    }

    #[test]
    fn names_that_are_not_mesh_names_are_bad_requests() {
        let err = destination("www.example.com").unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(err.to_string().contains("clusterset.local"), "{err}");
    }

    #[test]
    fn lookup_distinguishes_routes_unknown_services_and_unknown_clusters() {
        let snap = snapshot();
        let dest = destination("echo.demo.svc.clusterset.local").unwrap();
        assert!(matches!(lookup(&snap, &dest), Ok(Lookup::Route(_))));
        let dest = destination("echo.demo.svc.us-east.clusterset.local").unwrap();
        assert!(matches!(lookup(&snap, &dest), Ok(Lookup::Route(_))));
        let dest = destination("echo.demo.svc.mars.clusterset.local").unwrap();
        let err = lookup(&snap, &dest).unwrap_err();
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            err.to_string()
                .contains("cluster mars is unknown or unreachable"),
            "{err}"
        );
        assert!(err.to_string().contains("us-east"), "{err}");
        let dest = destination("gone.demo").unwrap();
        assert!(matches!(lookup(&snap, &dest), Ok(Lookup::Unknown)));
        let dest = destination("new.demo").unwrap();
        assert!(matches!(lookup(&snap, &dest), Ok(Lookup::NotAsked)));
    }
}
