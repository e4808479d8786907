//! The resolve layer: from a request to a destination and its route. The authority (absolute
//! URI or Host), the mesh name it carries, and what the last snapshot says about that service
//! (the on-demand wait for services not yet in the snapshot is `SidecarState::route`'s); then
//! the request is put in its upstream form (HTTP/2, origin-form path with the app's authority,
//! no hop-by-hop headers) and goes down with the [`Resolved`] fact.

use std::sync::Arc;

use http::request::Parts;
use http::{Method, Request, Response, Uri, Version};
use mesh_core::api::{ServiceRoute, SidecarSnapshot};
use mesh_core::http::BoxBody;
use mesh_core::names::{Destination, parse_authority};
use tower::{Service, ServiceExt};

use super::errors::ProxyError;
use crate::facts::{CapturedVip, Resolved, ServiceName};
use crate::headers::strip_hop_by_hop;
use crate::stack::{Concern, ConcernLayer};
use crate::state::SidecarState;

/// The resolve layer, against `state`'s snapshots.
pub fn layer(state: Arc<SidecarState>) -> ConcernLayer<Resolve> {
    ConcernLayer(Resolve { state })
}

/// Resolves each request's destination and route, and sends it on in upstream form.
#[derive(Debug, Clone)]
pub struct Resolve {
    state: Arc<SidecarState>,
}

impl<S, B> Concern<Request<B>, S> for Resolve
where
    S: Service<Request<B>, Response = Response<BoxBody>, Error = ProxyError> + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<BoxBody>;
    type Error = ProxyError;

    async fn handle(self, req: Request<B>, next: S) -> Result<Response<BoxBody>, ProxyError> {
        let (mut parts, body) = req.into_parts();
        let captured = parts.extensions.get::<CapturedVip>().cloned();
        // The app's CONNECT is refused (an HTTP proxy for plain requests only); an opaque
        // stream to a captured VIP is one. An extended CONNECT (`:protocol`: an upgrade, see
        // `upgrade`) is a request for a path like any other.
        let opaque = parts.method == Method::CONNECT
            && parts.extensions.get::<hyper::ext::Protocol>().is_none();
        if opaque && captured.is_none() {
            return Err(ProxyError::ConnectMethod);
        }
        let authority = authority(&parts)?;
        // A captured connection to a VIP whose requests name an address (or another host that
        // is no mesh name) goes to the VIP's service.
        let dest = match (destination(&authority), &captured) {
            (Ok(dest), _) => dest,
            (Err(_), Some(CapturedVip(target))) => target.destination(),
            (Err(e), None) => return Err(e),
        };
        let uri = if opaque {
            Uri::builder()
                .authority(authority.as_str())
                .build()
                .map_err(|_| ProxyError::MissingAuthority)?
        } else {
            upstream_uri(&parts, &authority)?
        };
        // The last snapshot, or the controller's answer once asked (on demand).
        let snapshot = self.state.route(&dest).await?;
        parts.uri = uri;
        parts.version = Version::HTTP_2;
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(http::header::HOST);
        let service = dest.service.clone();
        parts.extensions.insert(Resolved { dest, snapshot });
        let mut rsp = next.oneshot(Request::from_parts(parts, body)).await?;
        rsp.extensions_mut().insert(ServiceName(service));
        Ok(rsp)
    }
}

/// The upstream URI: origin-form path with the authority the app used, for HTTP/2's
/// `:authority`; the inbound sidecar passes it to its app as Host.
pub fn upstream_uri(parts: &Parts, authority: &str) -> Result<Uri, ProxyError> {
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|_| ProxyError::MissingAuthority)
}

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
    use tower::Layer;

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
            policies: Default::default(),
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

    /// A service that records the request it got and answers 200.
    #[allow(clippy::type_complexity)]
    fn recorder() -> (
        tower::util::BoxCloneService<Request<()>, Response<BoxBody>, ProxyError>,
        std::sync::Arc<std::sync::Mutex<Option<Parts>>>,
    ) {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
        let record = seen.clone();
        let svc = tower::service_fn(move |req: Request<()>| {
            *record.lock().unwrap() = Some(req.into_parts().0);
            async { Ok(mesh_core::http::text(StatusCode::OK, "ok")) }
        });
        (tower::util::BoxCloneService::new(svc), seen)
    }

    #[tokio::test]
    async fn sends_the_request_on_in_upstream_form_with_its_destination() {
        let state = crate::test_state::state();
        state.apply_snapshot(crate::test_state::snapshot(vec![]));
        let (inner, seen) = recorder();
        let svc = layer(state).layer(inner);
        let req = Request::builder()
            .uri("http://echo.demo.svc.clusterset.local:8080/a?b=1")
            .header("connection", "x-private")
            .header("x-private", "1")
            .header("host", "ignored")
            .body(())
            .unwrap();
        let rsp = svc.oneshot(req).await.unwrap();
        assert_eq!(
            rsp.extensions().get::<ServiceName>().unwrap().0,
            crate::test_state::echo()
        );
        let parts = seen.lock().unwrap().take().unwrap();
        assert_eq!(
            parts.uri,
            "http://echo.demo.svc.clusterset.local:8080/a?b=1"
        );
        assert_eq!(parts.version, Version::HTTP_2);
        assert!(parts.headers.get("x-private").is_none());
        assert!(parts.headers.get("host").is_none());
        let resolved = parts.extensions.get::<Resolved>().unwrap();
        assert_eq!(resolved.dest.service, crate::test_state::echo());
        assert_eq!(resolved.dest.cluster, None);
    }

    #[tokio::test]
    async fn connect_and_bad_names_are_refused_before_routing() {
        let (inner, seen) = recorder();
        let svc = layer(crate::test_state::state()).layer(inner);
        let connect = Request::builder()
            .method(Method::CONNECT)
            .uri("echo.demo:443")
            .body(())
            .unwrap();
        let err = svc.clone().oneshot(connect).await.unwrap_err();
        assert!(matches!(err, ProxyError::ConnectMethod));
        let bad = Request::builder()
            .uri("http://www.example.com/")
            .body(())
            .unwrap();
        let err = svc.oneshot(bad).await.unwrap_err();
        assert!(matches!(err, ProxyError::BadAuthority(_)), "{err}");
        assert!(seen.lock().unwrap().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_not_yet_known_waits_for_discovery_then_gives_up() {
        let state = crate::test_state::state();
        let (inner, _) = recorder();
        let svc = layer(state.clone()).layer(inner);
        let req = || {
            Request::builder()
                .uri("http://echo.demo/")
                .body(())
                .unwrap()
        };

        // Nothing arrives: the request gives up after exactly the on-demand wait.
        let started = tokio::time::Instant::now();
        let err = svc.clone().oneshot(req()).await.unwrap_err();
        assert!(matches!(err, ProxyError::DiscoveryTimeout { .. }), "{err}");
        assert_eq!(started.elapsed(), crate::state::ON_DEMAND_WAIT);
        assert!(state.interest().contains(&crate::test_state::echo()));

        // The snapshot arrives during the wait: the request goes on at once.
        let waiting = tokio::spawn(svc.oneshot(req()));
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        state.apply_snapshot(crate::test_state::snapshot(vec![]));
        let started = tokio::time::Instant::now();
        let rsp = waiting.await.unwrap().unwrap();
        assert_eq!(rsp.status(), StatusCode::OK);
        assert!(started.elapsed() < std::time::Duration::from_millis(10));
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
