//! The service's backend policy in its balancer: which policy is in force, its outlier and
//! breaker overrides over the sidecar-wide settings, and the request's consistent-hash key.
//!
//! The policy travels in every snapshot, and the balance layer hands the current one in before
//! each pick ([`ServiceBalancer::set_policy`]); comparing it with the one in force is cheap, and
//! only a change does any work.
//!
//! - **Overrides recreate what they configure.** Outlier detectors and breakers take their
//!   configuration when created, so a changed `outlierDetection` recreates every locality's
//!   detector (ejections are forgotten: an endpoint ejected under the old thresholds gets a
//!   fresh start under the new ones) and a changed `circuitBreaker` every locality's breaker
//!   (closed; a breaker that was not closed reports the change, so metrics and the controller
//!   do not keep showing it open). A change of only the algorithm or the limits keeps both.
//! - **A new algorithm starts afresh** in every locality: the round-robin position and the
//!   cached rings of the old one are dropped.

use std::time::Instant;

use http::HeaderMap;
use mesh_core::breaker::{BreakerState, CircuitBreaker};
use mesh_core::outlier::OutlierDetector;
use mesh_core::policy::backend_policy::BackendPolicySpec;
use mesh_core::policy::hash_ring::hash_key;

use super::{BreakerTransition, ServiceBalancer, note_transition};
use crate::outbound::endpoint_choice::LevelChooser;

impl ServiceBalancer {
    /// Puts the service's backend policy in force (`None`: the sidecar's defaults), recreating
    /// the outlier detectors or breakers when their overrides changed.
    pub fn set_policy(&mut self, policy: Option<&BackendPolicySpec>, now: Instant) {
        // No allocation on the common path: the default spec holds no strings.
        let default = BackendPolicySpec::default();
        let policy = policy.unwrap_or(&default);
        if *policy == self.policy {
            return;
        }
        let policy = policy.clone();
        if policy.outlier_detection != self.policy.outlier_detection {
            self.config.outlier = match &policy.outlier_detection {
                Some(spec) => spec.apply(&self.base.outlier),
                None => self.base.outlier.clone(),
            };
            for level in self.levels.values_mut() {
                level.outlier = OutlierDetector::new(self.config.outlier.clone());
            }
        }
        if policy.circuit_breaker != self.policy.circuit_breaker {
            self.config.breaker = match &policy.circuit_breaker {
                Some(spec) => spec.apply(&self.base.breaker),
                None => self.base.breaker.clone(),
            };
            for (cluster, level) in &mut self.levels {
                // Report what the old breaker did so far, then its replacement's start.
                let before = level.breaker.state(now);
                note_transition(&mut self.transitions, cluster, &mut level.breaker);
                level.breaker = CircuitBreaker::new(self.config.breaker.clone());
                if before != BreakerState::Closed {
                    self.transitions.push(BreakerTransition {
                        cluster: cluster.clone(),
                        from: before,
                        to: BreakerState::Closed,
                    });
                }
            }
        }
        if policy.load_balancer != self.policy.load_balancer {
            for level in self.levels.values_mut() {
                level.chooser = LevelChooser::default();
            }
        }
        self.policy = policy;
    }

    /// The backend policy in force.
    pub fn policy(&self) -> &BackendPolicySpec {
        &self.policy
    }

    /// The consistent-hash key of a request with `headers` from the workload `source_identity`
    /// (its SPIFFE ID), under the policy in force; `None` when the service does not hash or the
    /// request has no key.
    pub fn hash_key(&self, headers: &HeaderMap, source_identity: Option<&str>) -> Option<u64> {
        let spec = self.policy.load_balancer.consistent_hash()?;
        hash_key(spec, headers, source_identity)
    }
}
