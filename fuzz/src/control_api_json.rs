//! The controller's JSON API bodies: the first byte picks the route, the rest is the body,
//! decoded with the controller's `mesh_core::http::read_json` and then checked by the code the
//! route runs (`mesh_federation::fuzz_entry`, `ClusterCa::sign_csr` for CSRs).

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use mesh_core::api::{BreakerReport, CsrRequest, GatewayReport, LinkInfo, WorkloadRegistration};
use mesh_core::http::read_json;
use mesh_core::identity::{ClusterCa, SpiffeId};
use mesh_federation::fuzz_entry;
use serde::de::DeserializeOwned;

use super::poll::ready;

/// The cluster whose controller receives the bodies (the seeds are written for it).
const CLUSTER: &str = "us-east";
/// Its trust domain.
const TRUST_DOMAIN: &str = "us-east.mesh";
/// The caller when a body names no usable identity: a sidecar of this cluster.
const CALLER: &str = "spiffe://us-east.mesh/ns/demo/sa/echo";
/// Body size limit for decoding (the controller's own limits are of this order).
const LIMIT: usize = 256 * 1024;

/// Decodes and checks one API body; a refusal is an error message, never a panic.
pub fn control_api_json(data: &[u8]) {
    let Some((&route, body)) = data.split_first() else {
        return;
    };
    let caller: SpiffeId = CALLER.parse().expect("a valid SPIFFE ID");
    let outcome = match route % 5 {
        0 => decode::<CsrRequest>(body).map(|csr| {
            let signed = ca().sign_csr(&csr.csr_pem, Duration::from_secs(3600), |_| Ok(()));
            signed.map(|_| ()).map_err(|e| e.to_string())
        }),
        1 => decode::<WorkloadRegistration>(body).map(|reg| {
            // The route's path names the workload; the caller is the identity the body claims
            // when it is one, so validation goes past the identity check.
            let path_id = reg.id.clone();
            let caller = reg.identity.parse().unwrap_or(caller);
            fuzz_entry::register(CLUSTER, TRUST_DOMAIN, &path_id, reg, &caller).map(|_| ())
        }),
        2 => decode::<BreakerReport>(body).map(|r| fuzz_entry::put_breakers(&caller, r)),
        3 => decode::<GatewayReport>(body).map(fuzz_entry::gateway_report),
        _ => decode::<LinkInfo>(body).map(|info| fuzz_entry::add_link(CLUSTER, TRUST_DOMAIN, info)),
    };
    if let Some(Err(message)) = outcome {
        assert!(!message.is_empty(), "a refusal says why");
    }
}

/// The body as the controller decodes it, or `None` when it answers 400.
fn decode<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
    let body = Full::new(Bytes::copy_from_slice(body));
    match ready(read_json::<T, _>(body, LIMIT)) {
        Ok(value) => Some(value),
        Err(e) => {
            let _ = e.to_string();
            None
        }
    }
}

/// One CA for the whole run: generating a key per input would dominate the time.
fn ca() -> &'static ClusterCa {
    static CA: OnceLock<ClusterCa> = OnceLock::new();
    CA.get_or_init(|| ClusterCa::generate(TRUST_DOMAIN).expect("generating a test CA"))
}
