//! The resilience settings every service's balancer is built with. Defaults are core's, each
//! documented beside its field there with the reason for its value.

use std::time::Duration;

use mesh_core::breaker::BreakerConfig;
use mesh_core::latency_weight::LatencyWeightConfig;
use mesh_core::outlier::OutlierConfig;
use mesh_core::retry_budget::RetryBudgetConfig;
use mesh_core::spill::{DEFAULT_OVERPROVISIONING, DEFAULT_SLOW_START_WINDOW};

/// The resilience settings of every service's balancer (core defaults, documented there).
#[derive(Debug, Clone)]
pub struct ResilienceConfig {
    /// Outlier detection per endpoint.
    pub outlier: OutlierConfig,
    /// Circuit breaker per (service, cluster).
    pub breaker: BreakerConfig,
    /// Retry budget per service.
    pub retry_budget: RetryBudgetConfig,
    /// Priority spill overprovisioning factor.
    pub overprovisioning: f64,
    /// Failback ramp window.
    pub slow_start_window: Duration,
    /// Latency-aware weighting between localities.
    pub latency: LatencyWeightConfig,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        Self {
            outlier: OutlierConfig::default(),
            breaker: BreakerConfig::default(),
            retry_budget: RetryBudgetConfig::default(),
            overprovisioning: DEFAULT_OVERPROVISIONING,
            slow_start_window: DEFAULT_SLOW_START_WINDOW,
            latency: LatencyWeightConfig::default(),
        }
    }
}
