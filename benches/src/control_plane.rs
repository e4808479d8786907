//! Control-plane propagation: the time from a registration change in `bench-a` until a sidecar
//! in `bench-b` routes by it, with `bench-a`'s catalog holding N endpoints; and the
//! controllers' memory at that size.
//!
//! Each trial registers a new service `probe-<k>.bench` through `bench-a`'s registration API
//! (the endpoint is `bench-a`'s echo sidecar, whose identity the harness bootstraps), after
//! `bench-b`'s client sidecar has asked for it and been told it is unknown. The clock runs from
//! the registration call to the first 200 through `bench-b`'s client sidecar: controller A,
//! gateway A, the QUIC control stream, gateway B, controller B, sidecar B, then one request
//! across the gateways.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use mesh_core::api::{PATH_WORKLOADS, WorkloadRegistration};
use mesh_core::control_client::ControlClient;
use mesh_core::identity::{SpiffeId, default_trust_domain};
use mesh_core::names::ServiceKey;
use serde::{Deserialize, Serialize};

use crate::error::BenchError;
use crate::load::{Conn, Protocol, Target, connect, exchange, request};
use crate::topology::{CLUSTER_A, ECHO_ACCOUNT, NAMESPACE, authority};

/// Bound on one propagation: far above the 1 s target, so a miss is measured, not hung on.
const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(20);

/// Propagation at one catalog size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PropagationRun {
    /// Endpoints in `bench-a`'s catalog (synthetic plus the benchmark's own).
    pub endpoints: usize,
    /// Each trial, milliseconds.
    pub samples_ms: Vec<f64>,
    /// Median, ms.
    pub p50_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
    /// `bench-a` controller RSS with this catalog, bytes.
    pub controller_rss_bytes: u64,
    /// `bench-b` controller RSS holding this catalog as a peer's, bytes.
    pub peer_controller_rss_bytes: u64,
}

/// The trials of one catalog size.
pub struct Propagation {
    /// Registration client of `bench-a` with the echo sidecar's identity.
    pub registrar: Arc<ControlClient>,
    /// `bench-a`'s echo sidecar inbound address (the probe endpoint).
    pub endpoint: SocketAddr,
    /// `bench-b`'s client sidecar proxy.
    pub remote_proxy: SocketAddr,
}

impl Propagation {
    /// Runs `trials` propagations; returns each duration.
    pub async fn run(&self, trials: usize) -> Result<Vec<Duration>, BenchError> {
        let identity =
            SpiffeId::workload(&default_trust_domain(CLUSTER_A), NAMESPACE, ECHO_ACCOUNT);
        let mut out = Vec::with_capacity(trials);
        let mut conn = connect(self.remote_proxy, Protocol::Http1)
            .await
            .map_err(|e| BenchError::measure("propagation", e))?;
        for k in 0..trials {
            let name = format!("probe-{k}");
            let service = ServiceKey::new(&name, NAMESPACE)
                .map_err(|e| BenchError::measure("propagation", e))?;
            let target = Target {
                addr: self.remote_proxy,
                authority: authority(&service.to_string(), None),
                path: "/".into(),
                absolute_form: true,
            };
            // Ask first: the remote sidecar learns the service is unknown (a quick 503).
            let asked = self.get(&mut conn, &target).await;
            if asked.is_ok() {
                return Err(BenchError::measure(
                    "propagation",
                    format!("{service} was routable before it was registered"),
                ));
            }
            let registration = WorkloadRegistration {
                id: name.clone(),
                service: service.clone(),
                cluster: CLUSTER_A.to_string(),
                address: self.endpoint,
                identity: identity.to_string(),
                healthy: true,
            };
            let path = format!("{PATH_WORKLOADS}{name}");
            let started = Instant::now();
            self.registrar
                .send_json(Method::PUT, &path, Some(&registration))
                .await
                .map_err(|e| BenchError::measure("registering the probe", e))?;
            loop {
                if self.get(&mut conn, &target).await.is_ok() {
                    out.push(started.elapsed());
                    break;
                }
                if started.elapsed() > PROPAGATION_TIMEOUT {
                    return Err(BenchError::measure(
                        "propagation",
                        format!(
                            "{service} not routable from bench-b after {PROPAGATION_TIMEOUT:?}"
                        ),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let _ = self
                .registrar
                .send_json::<()>(Method::DELETE, &path, None)
                .await;
        }
        Ok(out)
    }

    async fn get(&self, conn: &mut Conn, target: &Target) -> Result<(), String> {
        if conn.is_closed() {
            *conn = connect(self.remote_proxy, Protocol::Http1).await?;
        }
        exchange(conn, request(target, Protocol::Http1, bytes::Bytes::new())).await
    }
}

/// Summarises the trials of one size.
pub fn summarise(
    endpoints: usize,
    samples: &[Duration],
    controller_rss_bytes: u64,
    peer_controller_rss_bytes: u64,
) -> PropagationRun {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let p50_ms = ms.get(ms.len() / 2).copied().unwrap_or(0.0);
    let max_ms = ms.last().copied().unwrap_or(0.0);
    PropagationRun {
        endpoints,
        samples_ms: samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect(),
        p50_ms,
        max_ms,
        controller_rss_bytes,
        peer_controller_rss_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_keeps_samples_in_order_and_sorts_for_the_median() {
        let samples = [300, 100, 200].map(Duration::from_millis);
        let run = summarise(10, &samples, 1, 2);
        assert_eq!(run.samples_ms, [300.0, 100.0, 200.0]);
        assert_eq!(run.p50_ms, 200.0);
        assert_eq!(run.max_ms, 300.0);
    }
}
