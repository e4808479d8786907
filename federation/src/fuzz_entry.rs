//! Entry points for the fuzz targets (`fuzz/`) and their corpus test: the controller's own
//! checks of its API bodies, callable without a running controller. Not an API: each function
//! runs the code the route handler runs on a decoded body, against a fresh piece of state.

use std::time::{Duration, Instant};

use mesh_core::api::{BreakerReport, GatewayReport, LinkInfo, WorkloadRegistration};
use mesh_core::identity::SpiffeId;

use crate::breaker_reports::BreakerReports;
use crate::links::LinkStore;
use crate::peering::Peering;
use crate::registry::Registrations;

/// `PUT /v1/workloads/{path_id}` by `caller` to the controller of `cluster` (trust domain
/// `trust_domain`): the registry's validation and insertion.
pub fn register(
    cluster: &str,
    trust_domain: &str,
    path_id: &str,
    reg: WorkloadRegistration,
    caller: &SpiffeId,
) -> Result<bool, String> {
    Registrations::new(cluster, trust_domain, Duration::from_secs(30))
        .register(path_id, reg, caller, Instant::now())
        .map_err(|e| e.to_string())
}

/// `PUT /v1/breaker-reports` by `caller`: the report store's validation and insertion.
pub fn put_breakers(caller: &SpiffeId, report: BreakerReport) -> Result<(), String> {
    BreakerReports::new(Duration::from_secs(30))
        .put(&caller.to_string(), report, Instant::now())
        .map_err(|e| e.to_string())
}

/// `PUT /v1/gateway/report`: the route's checks, then the report applied to the peering state
/// of a controller linked with every peer the report names.
pub fn gateway_report(report: GatewayReport) -> Result<(), String> {
    crate::control_api::check_gateway_report(&report).map_err(|e| e.to_string())?;
    let mut peering = Peering::new(Duration::from_secs(30));
    let linked: Vec<String> = report.peers.iter().map(|p| p.cluster.clone()).collect();
    peering.gateway_report(report, linked.iter().map(String::as_str), Instant::now());
    Ok(())
}

/// `POST /v1/links` to the controller of `cluster` (trust domain `trust_domain`), unlinked so
/// far: the link store's validation (names, trust bundle, gateway address).
pub fn add_link(cluster: &str, trust_domain: &str, info: LinkInfo) -> Result<(), String> {
    LinkStore::ephemeral(cluster, trust_domain)
        .add(info)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
