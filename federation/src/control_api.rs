//! The control API (TLS, HTTP/2) used by the cluster's sidecars and gateway. The CSR call is
//! authenticated by the join token; every other call by the client certificate, which must be
//! of this cluster's trust domain (gateway-only calls also need the gateway's identity).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use mesh_core::api::{
    BreakerReport, CsrRequest, GatewayReport, PATH_BREAKER_REPORTS, PATH_CERTIFICATES,
    PATH_DISCOVERY, PATH_FEDERATION, PATH_GATEWAY_REPORT, PATH_GATEWAY_STREAM, PATH_VIPS,
    PATH_WORKLOADS, WorkloadRegistration,
};
use mesh_core::catalog::{CatalogError, CatalogMessage};
use mesh_core::http::{BoxBody, json, read_json, text};
use mesh_core::identity::SpiffeId;

use crate::breaker_reports::BreakerRefusal;
use crate::caller_rate::CallerRate;
use crate::controller::Controller;
use crate::discovery::{gateway_stream, parse_services_query, sidecar_stream};
use crate::dns::VipTable;
use crate::error::{ApiError, into_response};
use crate::registry::RegistrationError;
use crate::state::CatalogRefusal;
use crate::stream_holders::StreamHolders;

/// Largest CSR body.
const MAX_CSR_BODY: usize = 64 * 1024;
/// Largest registration body.
const MAX_REGISTRATION_BODY: usize = 64 * 1024;
/// Largest breaker report body (one entry per (service, cluster) a sidecar calls).
const MAX_BREAKER_BODY: usize = 4 * 1024 * 1024;
/// Largest gateway report body.
const MAX_REPORT_BODY: usize = 1024 * 1024;
/// Largest catalog message: the frame limit of the control stream between gateways.
const MAX_CATALOG_BODY: usize = 16 * 1024 * 1024;
/// Registrations per second one identity may make on average: each workload heartbeats once
/// a second, so this allows 50 replicas sharing an identity, and bounds what a flood from one
/// certificate costs the controller's lock.
const REGISTRATIONS_PER_IDENTITY: u32 = 50;
/// Registrations one identity may make at once (a burst of replicas starting together).
const REGISTRATION_BURST: u32 = 100;
/// Most identities with a registration bucket (a backstop: identities are authenticated).
const MAX_RATED_IDENTITIES: usize = 10_000;

/// The control routes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Certificates,
    Workload(String),
    BreakerReports,
    Discovery,
    GatewayStream,
    GatewayReport,
    Federation(String),
    Vip(String),
}

impl Route {
    fn parse(path: &str) -> Option<Route> {
        let segment = |prefix: &str| {
            path.strip_prefix(prefix)
                .filter(|rest| !rest.is_empty() && !rest.contains('/'))
                .map(str::to_string)
        };
        Some(match path {
            PATH_CERTIFICATES => Route::Certificates,
            PATH_BREAKER_REPORTS => Route::BreakerReports,
            PATH_DISCOVERY => Route::Discovery,
            PATH_GATEWAY_STREAM => Route::GatewayStream,
            PATH_GATEWAY_REPORT => Route::GatewayReport,
            _ => {
                if let Some(id) = segment(PATH_WORKLOADS) {
                    Route::Workload(id)
                } else if let Some(peer) = segment(PATH_FEDERATION) {
                    Route::Federation(peer)
                } else if let Some(ip) = segment(PATH_VIPS) {
                    Route::Vip(ip)
                } else {
                    return None;
                }
            }
        })
    }

    fn allowed(&self) -> &'static str {
        match self {
            Route::Certificates | Route::Federation(_) => "POST",
            Route::Workload(_) => "PUT, DELETE",
            Route::BreakerReports | Route::GatewayReport => "PUT",
            Route::Discovery | Route::GatewayStream | Route::Vip(_) => "GET",
        }
    }

    fn gateway_only(&self) -> bool {
        matches!(
            self,
            Route::GatewayStream | Route::GatewayReport | Route::Federation(_)
        )
    }
}

/// Answers control requests.
#[derive(Debug, Clone)]
pub(crate) struct ControlApi {
    controller: Arc<Controller>,
    vips: Arc<Mutex<VipTable>>,
    /// Identities with a discovery stream open: known workloads even when not registered.
    holders: StreamHolders,
    /// Registrations per identity.
    registration_rate: Arc<Mutex<CallerRate<String>>>,
}

impl ControlApi {
    /// The API over `controller`, answering VIP lookups from `vips` (the DNS server's).
    pub(crate) fn new(controller: Arc<Controller>, vips: Arc<Mutex<VipTable>>) -> Self {
        Self {
            controller,
            vips,
            holders: StreamHolders::default(),
            registration_rate: Arc::new(Mutex::new(CallerRate::new(
                REGISTRATIONS_PER_IDENTITY,
                REGISTRATION_BURST,
                MAX_RATED_IDENTITIES,
            ))),
        }
    }

    /// Answers one request from a client that presented `caller` (verified by the TLS layer).
    pub(crate) async fn handle(
        &self,
        req: Request<Incoming>,
        caller: Option<SpiffeId>,
    ) -> Response<BoxBody> {
        into_response(self.dispatch(req, caller).await)
    }

    async fn dispatch(
        &self,
        req: Request<Incoming>,
        caller: Option<SpiffeId>,
    ) -> Result<Response<BoxBody>, ApiError> {
        let path = req.uri().path().to_string();
        let Some(route) = Route::parse(&path) else {
            return Err(ApiError::NotFound(format!("no control route {path}")));
        };
        let method = req.method().clone();
        let allowed = route.allowed();
        if !allowed.split(", ").any(|m| m == method.as_str()) {
            return Err(ApiError::MethodNotAllowed {
                method,
                path,
                allowed,
            });
        }
        if route == Route::Certificates {
            return self.sign(req, caller.as_ref()).await;
        }
        let caller = self.authenticate(caller.as_ref(), &route)?;
        match route {
            Route::Workload(id) if method == Method::PUT => self.register(req, &id, caller).await,
            Route::Workload(id) => self.deregister(&id, caller),
            Route::BreakerReports => self.breaker_report(req, caller).await,
            Route::Discovery => {
                let services = parse_services_query(req.uri().query())?;
                tracing::debug!(%caller, services = services.len(), "discovery stream opened");
                // The stream's body holds the caller's place among the known workloads.
                let held = self.holders.hold(&caller.to_string());
                Ok(sidecar_stream(&self.controller, services).map(|body| {
                    body.map_frame(move |frame| {
                        let _ = &held;
                        frame
                    })
                    .boxed()
                }))
            }
            Route::GatewayStream => {
                tracing::info!(%caller, "gateway stream opened");
                Ok(gateway_stream(&self.controller))
            }
            Route::GatewayReport => self.gateway_report(req).await,
            Route::Federation(peer) => self.federation(req, &peer).await,
            Route::Vip(ip) => self.vip(&ip),
            // Answered above without a client certificate; with one it is the same call.
            Route::Certificates => self.sign(req, Some(caller)).await,
        }
    }

    fn authenticate<'a>(
        &self,
        caller: Option<&'a SpiffeId>,
        route: &Route,
    ) -> Result<&'a SpiffeId, ApiError> {
        let own = self.controller.ca().trust_domain();
        let Some(caller) = caller else {
            return Err(ApiError::Unauthorized(format!(
                "this call needs a client certificate of trust domain {own}; obtain one with \
                 POST {PATH_CERTIFICATES} and the join token"
            )));
        };
        if caller.trust_domain != own {
            return Err(ApiError::Unauthorized(format!(
                "{caller} is not of this cluster's trust domain {own}"
            )));
        }
        if route.gateway_only() && caller.path != "gateway" {
            return Err(ApiError::Forbidden(format!(
                "only the cluster's gateway (spiffe://{own}/gateway) may call this, not {caller}"
            )));
        }
        Ok(caller)
    }

    /// What the VIP `ip` (IPv4, or the IPv6 twin of one) was handed out for.
    fn vip(&self, ip: &str) -> Result<Response<BoxBody>, ApiError> {
        let addr: std::net::IpAddr = ip
            .parse()
            .map_err(|_| ApiError::BadRequest(format!("`{ip}` is not an IP address")))?;
        let vips = self.vips.lock().unwrap_or_else(|p| p.into_inner());
        let v4 = match addr {
            std::net::IpAddr::V4(v4) => Some(v4),
            std::net::IpAddr::V6(v6) => vips.v4_of(v6),
        };
        match v4.and_then(|v4| vips.target_of(v4)) {
            Some(target) => Ok(json(StatusCode::OK, &target)),
            None => Err(ApiError::NotFound(format!(
                "{addr} is not a VIP this controller handed out"
            ))),
        }
    }

    async fn sign(
        &self,
        req: Request<Incoming>,
        caller: Option<&SpiffeId>,
    ) -> Result<Response<BoxBody>, ApiError> {
        let metrics = self.controller.metrics();
        let authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let csr: CsrRequest = read_json(req.into_body(), MAX_CSR_BODY)
            .await
            .inspect_err(|_| {
                metrics.csr_refused("malformed");
            })?;
        match self
            .controller
            .ca()
            .sign(authorization.as_deref(), caller, &csr)
            .await
        {
            Ok((id, answer)) => {
                metrics.csrs_signed.inc();
                tracing::info!(identity = %id, "certificate signed");
                Ok(json(StatusCode::OK, &answer))
            }
            Err(refusal) => {
                metrics.csr_refused(refusal.reason);
                tracing::warn!(reason = refusal.reason, error = %refusal.error, "certificate request refused");
                Err(refusal.error)
            }
        }
    }

    async fn register(
        &self,
        req: Request<Incoming>,
        id: &str,
        caller: &SpiffeId,
    ) -> Result<Response<BoxBody>, ApiError> {
        self.limit_registration(caller, Instant::now())?;
        let reg: WorkloadRegistration = read_json(req.into_body(), MAX_REGISTRATION_BODY).await?;
        let service = reg.service.clone();
        let address = reg.address;
        let new = self
            .controller
            .update(|state, now| state.register(id, reg, caller, now))
            .map_err(registration_error)?;
        if new {
            tracing::info!(workload = %id, %service, %address, identity = %caller, "workload registered");
        }
        Ok(no_content())
    }

    /// Takes a registration token of `caller`, or answers 429 with when to retry.
    fn limit_registration(&self, caller: &SpiffeId, now: Instant) -> Result<(), ApiError> {
        let checked = self
            .registration_rate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check(caller.to_string(), now);
        checked.map_err(|retry_after| {
            self.controller.metrics().registrations_limited.inc();
            tracing::debug!(%caller, "registration over the identity's rate");
            ApiError::TooManyRequests {
                message: format!(
                    "registrations of {caller} are over {REGISTRATIONS_PER_IDENTITY}/s \
                     (bursts of {REGISTRATION_BURST})"
                ),
                retry_after,
            }
        })
    }

    fn deregister(&self, id: &str, caller: &SpiffeId) -> Result<Response<BoxBody>, ApiError> {
        self.controller
            .update(|state, _| state.deregister(id, caller))
            .map_err(registration_error)?;
        tracing::info!(workload = %id, "workload deregistered");
        Ok(no_content())
    }

    async fn breaker_report(
        &self,
        req: Request<Incoming>,
        caller: &SpiffeId,
    ) -> Result<Response<BoxBody>, ApiError> {
        let report: BreakerReport = read_json(req.into_body(), MAX_BREAKER_BODY).await?;
        let identity = caller.to_string();
        let metrics = self.controller.metrics();
        let streaming = self.holders.holds(&identity);
        let stored = self.controller.update(|state, now| {
            if !streaming && !state.has_workload(&identity, now) {
                return Err(None);
            }
            state.put_breakers(caller, report, now).map_err(Some)
        });
        match stored {
            Ok(()) => Ok(no_content()),
            Err(None) => {
                metrics.breaker_report_ignored("unknown_identity");
                tracing::debug!(%caller, "breaker report ignored: no workload of this identity");
                Err(ApiError::Forbidden(format!(
                    "breaker report ignored: {caller} has no registered workload and no open \
                     discovery stream here; only the cluster's workloads vote on breakers"
                )))
            }
            Err(Some(e @ BreakerRefusal::TooManyReporters { .. })) => {
                metrics.breaker_report_ignored("reporter_limit");
                tracing::debug!(%caller, "breaker report ignored: too many reporter ids");
                Err(ApiError::Forbidden(e.to_string()))
            }
            Err(Some(e @ BreakerRefusal::Invalid(_))) => Err(ApiError::BadRequest(e.to_string())),
        }
    }

    async fn gateway_report(&self, req: Request<Incoming>) -> Result<Response<BoxBody>, ApiError> {
        let report: GatewayReport = read_json(req.into_body(), MAX_REPORT_BODY).await?;
        check_gateway_report(&report)?;
        self.controller
            .update(|state, now| state.gateway_report(report, now));
        Ok(no_content())
    }

    async fn federation(
        &self,
        req: Request<Incoming>,
        peer: &str,
    ) -> Result<Response<BoxBody>, ApiError> {
        let metrics = self.controller.metrics();
        let msg: CatalogMessage = read_json(req.into_body(), MAX_CATALOG_BODY).await?;
        let kind = msg.kind_label();
        let result = self
            .controller
            .update(|state, _| state.apply_catalog(peer, &msg));
        match result {
            Ok(()) => {
                metrics.catalog_message(peer, kind, "applied");
                tracing::debug!(%peer, kind, "catalog message applied");
                Ok(no_content())
            }
            Err(CatalogRefusal::NotLinked(_)) => {
                metrics.catalog_message("unlinked", kind, "not_linked");
                let err = CatalogRefusal::NotLinked(peer.to_string());
                Err(ApiError::Forbidden(err.to_string()))
            }
            Err(CatalogRefusal::Catalog(e @ CatalogError::VersionGap { .. })) => {
                metrics.catalog_message(peer, kind, "version_gap");
                tracing::info!(%peer, error = %e, "catalog delta out of order; the gateway will ask for a snapshot");
                Err(ApiError::Conflict(e.to_string()))
            }
            Err(CatalogRefusal::Catalog(e)) => {
                metrics.catalog_message(peer, kind, "refused");
                Err(ApiError::BadRequest(e.to_string()))
            }
        }
    }
}

/// Refuses a gateway report whose measurements make no sense.
pub(crate) fn check_gateway_report(report: &GatewayReport) -> Result<(), ApiError> {
    for p in &report.peers {
        if !(0.0..=1.0).contains(&p.loss) {
            return Err(ApiError::BadRequest(format!(
                "peer {}: loss {} is not in [0, 1]",
                p.cluster, p.loss
            )));
        }
        // Finite, >= 0 and a representable duration: 1e20 s is finite but is not one, and
        // made the controller panic converting it (fuzz/corpus/control_api_json).
        if p.rtt_seconds
            .is_some_and(|r| std::time::Duration::try_from_secs_f64(r).is_err())
        {
            return Err(ApiError::BadRequest(format!(
                "peer {}: rtt_seconds must be finite, >= 0 and below 2^64",
                p.cluster
            )));
        }
    }
    Ok(())
}

fn registration_error(e: RegistrationError) -> ApiError {
    match e {
        RegistrationError::Invalid(_) => ApiError::BadRequest(e.to_string()),
        RegistrationError::NotAllowed(_) => ApiError::Forbidden(e.to_string()),
        RegistrationError::Taken(_) => ApiError::Conflict(e.to_string()),
        RegistrationError::Unknown(_) => ApiError::NotFound(e.to_string()),
    }
}

fn no_content() -> Response<BoxBody> {
    let mut rsp = text(StatusCode::NO_CONTENT, "");
    rsp.headers_mut().remove(header::CONTENT_TYPE);
    *rsp.body_mut() = mesh_core::http::empty();
    rsp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_report_with_an_rtt_beyond_any_duration_is_refused() {
        let report = |rtt: f64| GatewayReport {
            quic_addr: "127.0.0.1:4433".parse().unwrap(),
            tunnel_addr: "127.0.0.1:15008".parse().unwrap(),
            peers: vec![mesh_core::api::PeerLinkStatus {
                cluster: "eu-central".into(),
                up: true,
                rtt_seconds: Some(rtt),
                loss: 0.0,
                last_error: None,
            }],
        };
        assert!(check_gateway_report(&report(0.012)).is_ok());
        for rtt in [1e20, f64::MAX, f64::INFINITY, f64::NAN, -1.0] {
            let err = check_gateway_report(&report(rtt)).unwrap_err().to_string();
            assert!(
                err.contains("eu-central") && err.contains("rtt_seconds"),
                "{err}"
            );
        }
    }

    #[test]
    fn routes_are_recognised_with_their_segments() {
        assert_eq!(Route::parse("/v1/certificates"), Some(Route::Certificates));
        assert_eq!(
            Route::parse("/v1/workloads/echo-0"),
            Some(Route::Workload("echo-0".into()))
        );
        assert_eq!(Route::parse("/v1/workloads/"), None);
        assert_eq!(Route::parse("/v1/workloads/a/b"), None);
        assert_eq!(
            Route::parse("/v1/federation/eu"),
            Some(Route::Federation("eu".into()))
        );
        assert_eq!(
            Route::parse("/v1/vips/240.240.1.2"),
            Some(Route::Vip("240.240.1.2".into()))
        );
        assert_eq!(Route::parse("/v1/nothing"), None);
        assert!(!Route::Vip("x".into()).gateway_only());
        assert!(Route::Federation("eu".into()).gateway_only());
        assert!(!Route::Discovery.gateway_only());
    }
}
